"""Attacks on pg_envelope, as an unprivileged role and as a superuser with a hostile
search_path would make them. Each test asserts the precise SQLSTATE and that nothing
leaks.

* Name-resolution hijacks (issue: a role allowed only to decrypt made itself
  superuser through a domain named "text" in pg_temp): objects named like every type,
  table, function, aggregate, operator and collation the extension's SQL could use,
  in pg_temp and in a schema first on the caller's search_path, each recording in
  `public.pwned` who ran it and trying to make the attacker a superuser. Every
  SQL-callable function of the extension is called (on a cache miss, a cache hit and
  after a restart, with keys on the local KMS and on a remote KMS); `pwned` must stay
  empty. A test fails when the extension gains a function this module does not call.
* Schema squatting: CREATE EXTENSION (and ALTER EXTENSION UPDATE) refuse a schema
  "envelope" the extension did not create.
* No argument is echoed in any error: a marker passed in every text argument of
  every function never appears in a message, detail, hint, context or the log.
* Unprivileged roles against every function and table.
* Tampering of every header field of a stored value.
"""
from __future__ import annotations

import base64
import io
import json
import sys
import uuid
from pathlib import Path

import psycopg2
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # <repo>/test
from kms_emulators import vault  # noqa: E402

from pgcluster import Cluster, envelope_header, envelope_problem, pg_error, quote_ident  # noqa: E402

ATTACKER = "attacker"
HOSTILE_SCHEMA = "evil"
SECRET = "Marguerite 555-0199 diagnosis"
VAULT_TOKEN = "attack-suite-vault-token"
LOG_SETTINGS = {"log_min_error_statement": "panic", "log_error_verbosity": "verbose",
                "envelope.kms_request_timeout": "2s", "envelope.kms_retry_budget": "4s",
                # The audit trail's own SQL (the protected column's name, the writer) runs too.
                "envelope.audit": "all"}

# Types the extension's SQL (or PostgreSQL's own, run for it) could name.
SHADOWED_TYPES = {
    "text": "text", "int4": "int4", "int8": "int8", "int2": "int2", "bytea": "bytea",
    "jsonb": "jsonb", "json": "json", "bool": "bool", "oid": "oid", "name": "name",
    "regclass": "regclass", "regproc": "regproc", "regprocedure": "regprocedure",
    "regtype": "regtype", "regnamespace": "regnamespace", "regrole": "regrole",
    "timestamptz": "timestamptz", "timestamp": "timestamp", "varchar": "varchar",
    "bpchar": "bpchar", "numeric": "numeric", "float8": "float8", "uuid": "uuid",
    "xid": "xid", "date": "date", "interval": "interval",
    # the extension's own type names
    "encrypted_text": "text", "encrypted_bytea": "bytea", "encrypted_jsonb": "jsonb",
    "protected_text": "text", "protected_bytea": "bytea", "protected_jsonb": "jsonb",
    "blind_text": "text", "blind_bytea": "bytea", "blind_jsonb": "jsonb",
}
# Relations named like the extension's.
SHADOWED_RELATIONS = ["key", "data_key", "kms", "keys", "kms_configs", "stats", "protected_column",
                      "protected_columns", "pg_index", "pg_constraint", "pg_class", "pg_am", "pg_depend"]
# Functions (name, argument types, return type) the SQL could call unqualified.
SHADOWED_FUNCTIONS = [
    ("now", "", "timestamptz"), ("jsonb_typeof", "jsonb", "text"), ("length", "text", "int4"),
    ("octet_length", "bytea", "int4"), ("lower", "text", "text"), ("upper", "text", "text"),
    ("texteq", "text, text", "bool"), ("int4eq", "int4, int4", "bool"),
    ("set_config", "text, text, bool", "text"), ("current_setting", "text", "text"),
    ("encode", "bytea, text", "text"), ("decode", "text, text", "bytea"),
    ("jsonb_out", "jsonb", "text"), ("textin", "text", "text"),
    ("pg_extension_config_dump", "regclass, text", "void"),
    ("encrypt_field", "text, text, text", "text"), ("encrypt_field", "varchar, varchar", "text"),
    ("decrypt_field", "text, text", "text"), ("create_key", "text, text, text", "int4"),
    ("rotate_key", "text", "int4"), ("key_tables_changed", "", "int4"),
    ("pg_get_indexdef", "oid", "text"), ("pg_get_constraintdef", "oid", "text"),
    ("pg_relation_size", "regclass", "int8"), ("unnest", "text[]", "text"), ("round", "numeric", "numeric"),
    ("is_sealed", "text", "bool"), ("protected_ok", "text, int8", "bool"), ("protect_row", "", "bool"),
    ("unseal", "text", "text"),
]
OPERATORS = ["=", "<>", "<", ">", "<=", ">=", "||", "~"]
OPERATOR_TYPES = ["text", "int4", "int8", "bytea", "jsonb", "timestamptz", "oid", "bool"]
COLLATIONS = ["C", "POSIX", "ucs_basic", "default"]


def hijack_sql(schema: str) -> list[str]:
    """Statements creating the hijack objects in `schema` (pg_temp or a real schema)."""
    s = schema
    stmts = [
        f"""CREATE FUNCTION {s}.pwn() RETURNS pg_catalog.bool LANGUAGE plpgsql AS $f$
            BEGIN
              INSERT INTO public.pwned VALUES (CAST(current_user AS pg_catalog.text),
                                               CAST(session_user AS pg_catalog.text), '{s}');
              BEGIN
                EXECUTE 'ALTER ROLE {ATTACKER} SUPERUSER';
              EXCEPTION WHEN OTHERS THEN NULL;
              END;
              RETURN true;
            END $f$""",
    ]
    for name, base in SHADOWED_TYPES.items():
        stmts.append(f"CREATE DOMAIN {s}.{quote_ident(name)} AS pg_catalog.{base} CHECK ({s}.pwn())")
    for rel in SHADOWED_RELATIONS:
        stmts.append(f"CREATE VIEW {s}.{quote_ident(rel)} AS SELECT 1 AS key_id WHERE {s}.pwn()")
    for name, args, ret in SHADOWED_FUNCTIONS:
        typed = ", ".join(f"pg_catalog.{a.strip()}" for a in args.split(",")) if args else ""
        stmts.append(
            f"CREATE FUNCTION {s}.{quote_ident(name)}({typed}) RETURNS pg_catalog.{ret} LANGUAGE plpgsql "
            f"AS $f$ BEGIN PERFORM {s}.pwn(); RETURN{' NULL' if ret != 'void' else ''}; END $f$")
    # count(*) as an aggregate
    stmts.append(f"CREATE FUNCTION {s}.cnt(pg_catalog.int8) RETURNS pg_catalog.int8 LANGUAGE plpgsql "
                 f"AS $f$ BEGIN PERFORM {s}.pwn(); RETURN 0; END $f$")
    stmts.append(f"CREATE AGGREGATE {s}.count(*) (SFUNC = {s}.cnt, STYPE = pg_catalog.int8, INITCOND = '0')")
    if schema != "pg_temp":  # pg_temp is never searched for operators: PostgreSQL refuses nothing, but skip
        for t in OPERATOR_TYPES:
            ret = "bool" if t != "text" else "bool"
            stmts.append(
                f"CREATE FUNCTION {s}.op_{t}(a pg_catalog.{t}, b pg_catalog.{t}) RETURNS pg_catalog.{ret} "
                f"LANGUAGE plpgsql AS $f$ BEGIN PERFORM {s}.pwn(); RETURN true; END $f$")
            for op in OPERATORS:
                stmts.append(f"CREATE OPERATOR {s}.{op} (LEFTARG = pg_catalog.{t}, RIGHTARG = pg_catalog.{t}, "
                             f"FUNCTION = {s}.op_{t})")
        for coll in COLLATIONS:
            stmts.append(f"CREATE COLLATION IF NOT EXISTS {s}.{quote_ident(coll)} (locale = 'C')")
    return stmts


def install_hijacks(conn, schema: str) -> None:
    with conn.cursor() as cur:
        for stmt in hijack_sql(schema):
            cur.execute(stmt)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Env:
    """The cluster, the Vault emulator and what the tests set up in them."""

    def __init__(self, cluster: Cluster, emu):
        self.cluster = cluster
        self.emu = emu


@pytest.fixture(scope="module")
def env(module_cluster_factory):
    emu = vault.start(keys=("pg-envelope", "pg-envelope-2"), token=VAULT_TOKEN)
    pg = module_cluster_factory.create("attacks", settings=LOG_SETTINGS)
    token_file = pg.write_file("vault.token", VAULT_TOKEN + "\n")
    setup = [
        "CREATE EXTENSION pg_envelope",
        f"CREATE ROLE {ATTACKER} LOGIN",
        f"CREATE SCHEMA {HOSTILE_SCHEMA} AUTHORIZATION {ATTACKER}",
        "CREATE TABLE public.pwned (runner text, session_runner text, via text)",
        "GRANT INSERT, SELECT ON public.pwned TO PUBLIC",
        # The worst case: the attacker may call every function of the extension.
        f"GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA envelope TO {ATTACKER}",
        f"GRANT EXECUTE ON ALL PROCEDURES IN SCHEMA envelope TO {ATTACKER}",
        "CREATE TABLE public.rdata (id int PRIMARY KEY, t envelope.encrypted_text, "
        "b envelope.encrypted_bytea, j envelope.encrypted_jsonb)",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON public.rdata TO {ATTACKER}",
    ]
    for q in setup:
        pg.sql(q)
    opts = {"address": emu.url, "token_file": str(token_file)}
    pg.sql("SELECT envelope.create_kms('vault', 'vault-transit', %s::jsonb)", (json.dumps(opts),))
    pg.sql("SELECT envelope.create_kms('vault_spare', 'vault-transit', %s::jsonb)", (json.dumps(opts),))
    pg.sql("SELECT envelope.create_key('lk')")
    pg.sql("SELECT envelope.create_key('lk1')")  # a per-row key: 'lk{}' for tenant 1
    pg.sql("SELECT envelope.create_key('rk', kms => 'vault', kek => 'pg-envelope')")
    # ...and holds every key privilege on every key: every code path runs for it.
    for privilege in ("encrypt", "decrypt", "admin"):
        pg.sql("SELECT envelope.grant_key('*', %s, %s)", (ATTACKER, privilege))
    for i, key in ((1, "lk"), (2, "rk")):
        pg.sql("INSERT INTO public.rdata VALUES (%s, envelope.encrypt_field(%s::text, %s, %s::text), "
               "envelope.encrypt_field(%s::bytea, %s), envelope.encrypt_field(%s::jsonb, %s))",
               (i, SECRET, key, str(i), SECRET.encode(), key, json.dumps({"n": SECRET}), key))
    yield Env(pg, emu)
    emu.stop()


def pwned(pg: Cluster) -> list[tuple]:
    return pg.sql("SELECT runner, session_runner, via FROM public.pwned")


def assert_not_pwned(pg: Cluster) -> None:
    rows = pwned(pg)
    assert rows == [], f"hijack objects ran: {rows}"
    assert pg.scalar("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (ATTACKER,)) is False


# ---------------------------------------------------------------------------------
# Every SQL-callable function, called with hijacks in place.

# What each call may answer besides success: the SQLSTATEs that the scenario makes
# legitimate (the attacker may not create KMSs, for instance).
def entry_point_calls(tag: str, superuser: bool) -> list[tuple[str, str, tuple, set]]:
    """(function, SQL, params, accepted SQLSTATEs) covering every function."""
    k = f"ak_{tag}"
    su_only = set() if superuser else {"42501"}
    return [
        ("envelope.encrypted_text_in(cstring,oid,integer)",
         "SELECT CAST(CAST((SELECT t FROM public.rdata WHERE id OPERATOR(pg_catalog.=) 2) AS pg_catalog.text) AS envelope.encrypted_text)", (), set()),
        ("envelope.encrypted_bytea_in(cstring,oid,integer)",
         "SELECT CAST(CAST((SELECT b FROM public.rdata WHERE id OPERATOR(pg_catalog.=) 2) AS pg_catalog.text) AS envelope.encrypted_bytea)", (), set()),
        ("envelope.encrypted_jsonb_in(cstring,oid,integer)",
         "SELECT CAST(CAST((SELECT j FROM public.rdata WHERE id OPERATOR(pg_catalog.=) 2) AS pg_catalog.text) AS envelope.encrypted_jsonb)", (), set()),
        ("envelope.encrypted_text_out(envelope.encrypted_text)", "SELECT t FROM public.rdata", (), set()),
        ("envelope.encrypted_bytea_out(envelope.encrypted_bytea)", "SELECT b FROM public.rdata", (), set()),
        ("envelope.encrypted_jsonb_out(envelope.encrypted_jsonb)", "SELECT j FROM public.rdata", (), set()),
        ("envelope.encrypted_text_send(envelope.encrypted_text)", "COPY-OUT", (), set()),
        ("envelope.encrypted_bytea_send(envelope.encrypted_bytea)", "COPY-OUT", (), set()),
        ("envelope.encrypted_jsonb_send(envelope.encrypted_jsonb)", "COPY-OUT", (), set()),
        ("envelope.encrypted_text_recv(internal,oid,integer)", "COPY-IN", (), set()),
        ("envelope.encrypted_bytea_recv(internal,oid,integer)", "COPY-IN", (), set()),
        ("envelope.encrypted_jsonb_recv(internal,oid,integer)", "COPY-IN", (), set()),
        ("envelope.decrypt_field(envelope.encrypted_text,text)",
         "SELECT envelope.decrypt_field(t, CAST(id AS pg_catalog.text)) FROM public.rdata", (), set()),
        ("envelope.decrypt_field(envelope.encrypted_bytea,text)",
         "SELECT envelope.decrypt_field(b) FROM public.rdata", (), set()),
        ("envelope.decrypt_field(envelope.encrypted_jsonb,text)",
         "SELECT envelope.decrypt_field(j) FROM public.rdata", (), set()),
        ("envelope.encrypt_field(text,text,text)",
         "SELECT envelope.encrypt_field('v'::pg_catalog.text, 'lk'::pg_catalog.text), "
         "envelope.encrypt_field('v'::pg_catalog.text, 'rk'::pg_catalog.text, 'c'::pg_catalog.text)", (), set()),
        ("envelope.encrypt_field(bytea,text,text)",
         "SELECT envelope.encrypt_field('\\x01'::pg_catalog.bytea, 'rk'::pg_catalog.text)", (), set()),
        ("envelope.encrypt_field(jsonb,text,text)",
         "SELECT envelope.encrypt_field('{\"a\": 1}'::pg_catalog.jsonb, 'rk'::pg_catalog.text)", (), set()),
        ("envelope.create_key(text,text,text)",
         f"SELECT envelope.create_key('{k}_r'::pg_catalog.text, 'vault'::pg_catalog.text, "
         f"'pg-envelope'::pg_catalog.text), envelope.create_key('{k}_l'::pg_catalog.text)", (), set()),
        ("envelope.rotate_key(text)",
         "SELECT envelope.rotate_key('rk'::pg_catalog.text), envelope.rotate_key('lk'::pg_catalog.text)", (), set()),
        ("envelope.rewrap_key(text,text)",
         "SELECT envelope.rewrap_key('rk'::pg_catalog.text, 'pg-envelope-2'::pg_catalog.text), "
         "envelope.rewrap_key('rk'::pg_catalog.text, 'pg-envelope'::pg_catalog.text), "
         "envelope.rewrap_key('lk'::pg_catalog.text)", (), set()),
        ("envelope.kek_status(text)",
         "SELECT (envelope.kek_status(CAST('rk' AS pg_catalog.text))).kek_version, "
         "(envelope.kek_status(CAST('lk' AS pg_catalog.text))).data_keys", (), set()),
        ("envelope.disable_key(text)", f"SELECT envelope.disable_key('{k}_r'::pg_catalog.text)", (), set()),
        ("envelope.enable_key(text)", f"SELECT envelope.enable_key('{k}_r'::pg_catalog.text)", (), set()),
        ("envelope.destroy_key(text)", f"SELECT envelope.destroy_key('{k}_l'::pg_catalog.text)", (), set()),
        ("envelope.verify_destroyed(text)", f"SELECT * FROM envelope.verify_destroyed('{k}_l'::pg_catalog.text)", (), set()),
        ("envelope.cache_evict(text)", "SELECT envelope.cache_evict('rk'::pg_catalog.text)", (), set()),
        ("envelope.cache_flush()", "SELECT envelope.cache_flush()", (), set()),
        ("envelope.cache_stats()", "SELECT * FROM envelope.cache_stats()", (), set()),
        ("envelope.credential_cache_stats()", "SELECT * FROM envelope.credential_cache_stats()", (), set()),
        ("envelope.stats_reset()", "SELECT envelope.stats_reset()", (), set()),
        ("envelope.key_usage_counts()",
         "SELECT * FROM envelope.key_usage_counts(); SELECT * FROM envelope.key_usage", (), {"42501"}),
        ("envelope.key_usage_reset()", "SELECT envelope.key_usage_reset()", (), set()),
        # The audit log is the extension owner's (the attacker reads neither it nor its chain).
        ("envelope.audit_verify()", "SELECT * FROM envelope.audit_verify()", (), {"42501"}),
        ("envelope.audit_hash(envelope.audit_log)",
         "SELECT envelope.audit_hash(CAST(ROW(CAST(1 AS pg_catalog.int8), pg_catalog.now(), pg_catalog.now(), "
         "CAST('decrypt' AS pg_catalog.text), NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
         "NULL, CAST('' AS pg_catalog.bytea)) AS envelope.audit_log))", (), set()),
        ("envelope.create_kms(text,text,jsonb)",
         f"SELECT envelope.create_kms('{k}_kms'::pg_catalog.text, 'vault-transit'::pg_catalog.text, "
         f"(SELECT options FROM envelope.kms WHERE name OPERATOR(pg_catalog.=) 'vault'))"
         if superuser else
         f"SELECT envelope.create_kms('{k}_kms'::pg_catalog.text, 'vault-transit'::pg_catalog.text, "
         "'{}'::pg_catalog.jsonb)", (), su_only),
        ("envelope.alter_kms(text,jsonb)",
         "SELECT envelope.alter_kms('vault_spare'::pg_catalog.text, "
         "(SELECT options FROM envelope.kms WHERE name OPERATOR(pg_catalog.=) 'vault'))"
         if superuser else
         "SELECT envelope.alter_kms('vault_spare'::pg_catalog.text, '{}'::pg_catalog.jsonb)", (), su_only),
        ("envelope.drop_kms(text)",
         f"SELECT envelope.drop_kms('{k}_kms'::pg_catalog.text)" if superuser else
         "SELECT envelope.drop_kms('vault'::pg_catalog.text)", (), set() if superuser else {"2BP01"}),
        ("envelope.grant_key(text,regrole,text)",
         f"SELECT envelope.grant_key('{k}_*'::pg_catalog.text, 'attacker'::pg_catalog.regrole, "
         "'decrypt'::pg_catalog.text)", (), set()),
        ("envelope.revoke_key(text,regrole,text)",
         f"SELECT envelope.revoke_key('{k}_*'::pg_catalog.text, 'attacker'::pg_catalog.regrole, "
         "'decrypt'::pg_catalog.text)", (), set()),
        ("envelope.key_of(envelope.encrypted_text)",
         "SELECT (envelope.key_of(t)).key_name FROM public.rdata", (), set()),
        ("envelope.key_of(envelope.encrypted_bytea)",
         "SELECT (envelope.key_of(b)).kms FROM public.rdata", (), set()),
        ("envelope.key_of(envelope.encrypted_jsonb)",
         "SELECT * FROM public.rdata, LATERAL envelope.key_of(j)", (), set()),
        # Key lifecycle: which version a value is on, re-encryption (within each value's
        # own key here: row 2 stays on the remote KMS's key for the cache-miss test).
        ("envelope.on_current_key(envelope.encrypted_text,text)",
         "SELECT envelope.on_current_key(t), envelope.on_current_key(t, CAST('lk' AS pg_catalog.text)) "
         "FROM public.rdata", (), set()),
        ("envelope.on_current_key(envelope.encrypted_bytea,text)",
         "SELECT envelope.on_current_key(b) FROM public.rdata", (), set()),
        ("envelope.on_current_key(envelope.encrypted_jsonb,text)",
         "SELECT envelope.on_current_key(j, CAST('rk' AS pg_catalog.text)) FROM public.rdata", (), set()),
        ("envelope.key_version_of(envelope.encrypted_text,text)",
         "SELECT envelope.key_version_of(t, CAST('lk' AS pg_catalog.text)) FROM public.rdata", (), set()),
        ("envelope.key_version_of(envelope.encrypted_bytea,text)",
         "SELECT envelope.key_version_of(b, CAST('rk' AS pg_catalog.text)) FROM public.rdata", (), set()),
        ("envelope.key_version_of(envelope.encrypted_jsonb,text)",
         "SELECT envelope.key_version_of(j, CAST('lk' AS pg_catalog.text)) FROM public.rdata", (), set()),
        ("envelope.reencrypt_field(envelope.encrypted_text,text,text)",
         "SELECT envelope.rotate_key(CAST('lk' AS pg_catalog.text)); "
         "UPDATE public.rdata SET t = envelope.reencrypt_field(t, CAST(id AS pg_catalog.text)); "
         "SELECT envelope.reencrypt_field(t, CAST(id AS pg_catalog.text), CAST('lk1' AS pg_catalog.text)) "
         "FROM public.rdata", (), set()),
        ("envelope.reencrypt_field(envelope.encrypted_bytea,text,text)",
         "UPDATE public.rdata SET b = envelope.reencrypt_field(b)", (), set()),
        ("envelope.reencrypt_field(envelope.encrypted_jsonb,text,text)",
         "SELECT envelope.reencrypt_field(j, NULL, CAST('lk' AS pg_catalog.text)) FROM public.rdata", (), set()),
        ("envelope.reencrypt(regclass,name,name,text,integer,integer)",
         "SELECT envelope.rotate_key(CAST('lk' AS pg_catalog.text)); "
         "CALL envelope.reencrypt(CAST('public.rdata' AS pg_catalog.regclass), CAST('t' AS pg_catalog.name), "
         "CAST('id' AS pg_catalog.name)); "
         "CALL envelope.reencrypt(CAST('public.rdata' AS pg_catalog.regclass), CAST('j' AS pg_catalog.name), "
         "batch_blocks => 1); SELECT * FROM envelope.reencryption_progress", (), set()),
        ("envelope.reencryption_running(oid,name)",
         "SELECT envelope.reencryption_running(CAST(CAST('public.rdata' AS pg_catalog.regclass) AS pg_catalog.oid), "
         "CAST('t' AS pg_catalog.name))", (), set()),
        ("envelope.key_columns(text,boolean)", "SELECT * FROM envelope.key_columns(CAST('lk' AS pg_catalog.text))", (), set()),
        ("envelope.start_reencryption(regclass,name,name,text,integer,integer)",
         "SELECT envelope.rotate_key(CAST('rk' AS pg_catalog.text)); "
         "SELECT envelope.start_reencryption(CAST('public.rdata' AS pg_catalog.regclass), CAST('b' AS pg_catalog.name), "
         "batch_blocks => 1)", (), set()),
        ("envelope.cancel_reencryption(regclass,name)",
         "SELECT envelope.cancel_reencryption(CAST('public.rdata' AS pg_catalog.regclass), CAST('b' AS pg_catalog.name))",
         (), su_only),  # for the table's owners
        # A strict scan of every encrypted column: one the caller may not read refuses it.
        ("envelope.retire_unreferenced_versions(text)",
         "SELECT * FROM envelope.retire_unreferenced_versions(CAST('lk' AS pg_catalog.text))", (), su_only),
        ("envelope.set_rotation_policy(text,interval,boolean,boolean)",
         "SELECT envelope.set_rotation_policy(CAST('lk' AS pg_catalog.text), CAST('1 day' AS pg_catalog.interval), "
         "true, false), envelope.set_rotation_policy(CAST('rk' AS pg_catalog.text), "
         "CAST('1 day' AS pg_catalog.interval), true, true)", (), set()),
        # Citus only: on a node without Citus both refuse (0A000) after the privilege check;
        # test_citus.py runs them on a coordinator and a worker, from a hostile session too.
        ("envelope.apply_key_changes(jsonb)",
         "SELECT envelope.apply_key_changes(CAST('{}' AS pg_catalog.jsonb))", (), {"0A000"} | su_only),
        ("envelope.citus_sync_keys()", "SELECT envelope.citus_sync_keys()", (), {"0A000"} | su_only),
        ("envelope.clear_rotation_policy(text)",
         "SELECT envelope.clear_rotation_policy(CAST('lk' AS pg_catalog.text))", (), set()),
        *protected_column_calls(f"{HOSTILE_SCHEMA}.pt_{tag}"),
        # Fired by every key change above; called here through an UPDATE by hand.
        ("envelope.key_tables_changed()",
         "UPDATE envelope.key SET kek = kek WHERE name OPERATOR(pg_catalog.=) 'rk'" if superuser else
         "SELECT envelope.rotate_key('rk'::pg_catalog.text)", (), set()),
    ]


def protected_column_calls(t: str) -> list[tuple[str, str, tuple, set]]:
    """Protected columns, end to end on a table of the caller's: a populated table is
    protected (text on the remote-KMS key, jsonb and bytea on the local one), its rows
    sealed, written, read in text and binary, searched, unsealed and unprotected."""
    text, int4, jsonb, bytea = "pg_catalog.text", "pg_catalog.int4", "pg_catalog.jsonb", "pg_catalog.bytea"
    prot = "envelope.protect_column"
    eq = "OPERATOR(pg_catalog.=)"
    def pair(ty, c, op):
        return f"envelope.blind_{ty}_{op}(CAST({c} AS envelope.blind_{ty}), CAST({c} AS envelope.blind_{ty}))"
    blind_columns = (("text", "email"), ("bytea", "blob"), ("jsonb", "body"))
    pairs = ", ".join(pair(ty, c, op) for ty, c in blind_columns for op in ("eq", "ne", "cmp"))
    calls = [
        ("envelope.protect_column(regclass,name,text,name,name,boolean,integer,text)",
         f"CREATE TABLE {t} (id {int4} PRIMARY KEY, tenant {int4}, email {text} UNIQUE, body {jsonb}, blob {bytea}); "
         f"INSERT INTO {t} VALUES (1, 1, CAST('a@example.org' AS {text}), CAST('{{\"a\": 1}}' AS {jsonb}), "
         f"CAST('\\x01' AS {bytea})); "
         f"SELECT {prot}(CAST('{t}' AS pg_catalog.regclass), CAST('email' AS pg_catalog.name), CAST('rk' AS {text}), "
         f"CAST('id' AS pg_catalog.name)), "
         f"{prot}(CAST('{t}' AS pg_catalog.regclass), CAST('body' AS pg_catalog.name), CAST('lk{{}}' AS {text}), "
         f"key_column => CAST('tenant' AS pg_catalog.name), blind_key => CAST('lk' AS {text})), "
         f"{prot}(CAST('{t}' AS pg_catalog.regclass), CAST('blob' AS pg_catalog.name), CAST('lk' AS {text}), "
         f"blind_bytes => 8)", (), set()),
        ("envelope.seal_rows(regclass,name,integer,integer,boolean)",
         f"CALL envelope.seal_rows(CAST('{t}' AS pg_catalog.regclass), CAST('email' AS pg_catalog.name), 1, 0, true); "
         f"CALL envelope.seal_rows(CAST('{t}' AS pg_catalog.regclass), CAST('body' AS pg_catalog.name)); "
         f"CALL envelope.seal_rows(CAST('{t}' AS pg_catalog.regclass), CAST('blob' AS pg_catalog.name))", (), set()),
        # ANALYZE of the table calls each protected type's typanalyze.
        ("envelope.protected_text_typanalyze(internal)", f"ANALYZE {t}", (), set()),
        ("envelope.protected_bytea_typanalyze(internal)", f"ANALYZE {t} (blob)", (), set()),
        ("envelope.protected_jsonb_typanalyze(internal)", f"ANALYZE {t} (body)", (), set()),
        ("envelope.protect_row()",
         f"INSERT INTO {t} VALUES (2, 1, CAST('b@example.org' AS {text}), CAST('[2]' AS {jsonb}), CAST('\\x02' AS {bytea})) "
         f"ON CONFLICT (email) DO UPDATE SET email = EXCLUDED.email; "
         f"UPDATE {t} SET email = CAST('c@example.org' AS {text}), tenant = 1 WHERE id {eq} 2", (), set()),
        ("envelope.protected_text_out(envelope.protected_text)", f"SELECT email FROM {t}", (), set()),
        ("envelope.protected_jsonb_out(envelope.protected_jsonb)", f"SELECT body FROM {t}", (), set()),
        ("envelope.protected_bytea_out(envelope.protected_bytea)", f"SELECT blob FROM {t}", (), set()),
        ("envelope.protected_text_in(cstring,oid,integer)",
         f"SELECT CAST(CAST(email AS {text}) AS envelope.protected_text) FROM {t}", (), set()),
        ("envelope.protected_jsonb_in(cstring,oid,integer)",
         f"SELECT CAST(CAST(body AS {text}) AS envelope.protected_jsonb) FROM {t}", (), set()),
        ("envelope.protected_bytea_in(cstring,oid,integer)",
         f"SELECT CAST(CAST(blob AS {text}) AS envelope.protected_bytea) FROM {t}", (), set()),
        ("envelope.protected_text_send(envelope.protected_text)", f"COPY-OUT:{t}", (), set()),
        ("envelope.protected_jsonb_send(envelope.protected_jsonb)", f"COPY-OUT:{t}", (), set()),
        ("envelope.protected_bytea_send(envelope.protected_bytea)", f"COPY-OUT:{t}", (), set()),
        ("envelope.protected_text_recv(internal,oid,integer)", f"COPY-IN:{t}", (), set()),
        ("envelope.protected_jsonb_recv(internal,oid,integer)", f"COPY-IN:{t}", (), set()),
        ("envelope.protected_bytea_recv(internal,oid,integer)", f"COPY-IN:{t}", (), set()),
        ("envelope.blind_text_out(envelope.blind_text)",
         f"SELECT CAST(email AS envelope.blind_text), CAST(blob AS envelope.blind_bytea), "
         f"CAST(body AS envelope.blind_jsonb) FROM {t}", (), set()),
        ("envelope.blind_bytea_out(envelope.blind_bytea)", f"SELECT CAST(blob AS envelope.blind_bytea) FROM {t}", (), set()),
        ("envelope.blind_jsonb_out(envelope.blind_jsonb)", f"SELECT CAST(body AS envelope.blind_jsonb) FROM {t}", (), set()),
        ("envelope.blind_text_in(cstring,oid,integer)", "SELECT CAST('x' AS envelope.blind_text)", (), set()),
        ("envelope.blind_bytea_in(cstring,oid,integer)", "SELECT CAST('\\x01' AS envelope.blind_bytea)", (), set()),
        ("envelope.blind_jsonb_in(cstring,oid,integer)", "SELECT CAST('[1]' AS envelope.blind_jsonb)", (), set()),
        ("envelope.blind_text_send(envelope.blind_text)", f"COPY-BLIND:{t}", (), set()),
        ("envelope.blind_bytea_send(envelope.blind_bytea)", f"COPY-BLIND:{t}", (), set()),
        ("envelope.blind_jsonb_send(envelope.blind_jsonb)", f"COPY-BLIND:{t}", (), set()),
        ("envelope.blind_text_recv(internal,oid,integer)", f"COPY-BLIND:{t}", (), set()),
        ("envelope.blind_bytea_recv(internal,oid,integer)", f"COPY-BLIND:{t}", (), set()),
        ("envelope.blind_jsonb_recv(internal,oid,integer)", f"COPY-BLIND:{t}", (), set()),
        *[(f"envelope.blind_{ty}_{op}(envelope.blind_{ty},envelope.blind_{ty})", f"SELECT {pairs} FROM {t}", (), set())
          for ty in ("text", "bytea", "jsonb") for op in ("eq", "ne", "cmp")],
        # The ordering functions are refused wherever an expression names them (their
        # planner support function raises 0A000); ORDER BY reaches the btree's cmp instead.
        *[(f"envelope.blind_{ty}_{op}(envelope.blind_{ty},envelope.blind_{ty})",
           f"SELECT {pair(ty, c, op)} FROM {t}", (), {"0A000"})
          for ty, c in blind_columns for op in ("lt", "le", "gt", "ge")],
        ("envelope.blind_ordering_support(internal)",
         f"SELECT id FROM {t} WHERE email OPERATOR(envelope.<) CAST('b' AS {text})", (), {"0A000"}),
        ("envelope.is_sealed(envelope.blind_text)",
         f"SELECT envelope.is_sealed(email), envelope.is_sealed(blob), envelope.is_sealed(body) FROM {t}; "
         f"SELECT id FROM {t} WHERE email {eq} CAST('c@example.org' AS {text}) "
         f"AND body {eq} CAST('[2]' AS {jsonb}) AND blob IS NOT NULL ORDER BY email", (), set()),
        ("envelope.is_sealed(envelope.blind_bytea)", f"SELECT envelope.is_sealed(blob) FROM {t}", (), set()),
        ("envelope.is_sealed(envelope.blind_jsonb)", f"SELECT envelope.is_sealed(body) FROM {t}", (), set()),
        *[(f"envelope.protected_ok(envelope.blind_{ty},bigint)",
           f"SELECT envelope.protected_ok({c}, CAST(1 AS pg_catalog.int8)) FROM {t}", (), set())
          for ty, c in (("text", "email"), ("bytea", "blob"), ("jsonb", "body"))],
        *[(f"envelope.unseal(envelope.protected_{ty})", f"SELECT envelope.unseal({c}) FROM {t}", (), set())
          for ty, c in (("text", "email"), ("bytea", "blob"), ("jsonb", "body"))],
        ("envelope.protected_ddl_guard()",
         f"ALTER TABLE {t} ADD COLUMN extra {int4}; ALTER TABLE {t} RENAME COLUMN extra TO extra2; "
         f"ALTER TABLE {t} ALTER COLUMN extra2 TYPE pg_catalog.int8", (), set()),
        ("envelope.protected_column_dropped()",
         f"ALTER TABLE {t} DROP COLUMN extra2; CREATE TABLE {t}_gone (id {int4}, s {text}); "
         f"SELECT {prot}(CAST('{t}_gone' AS pg_catalog.regclass), CAST('s' AS pg_catalog.name), CAST('lk' AS {text})); "
         f"ALTER TABLE {t}_gone DROP COLUMN s; DROP TABLE {t}_gone", (), set()),
        # Classification (a security label of provider pg_envelope), the views, the scanner.
        ("envelope.classify(regclass,name,text)",
         f"SELECT envelope.classify(CAST('{t}' AS pg_catalog.regclass), CAST('email' AS pg_catalog.name), "
         f"CAST('pii' AS {text})), envelope.classify(CAST('{t}' AS pg_catalog.regclass), "
         f"CAST('tenant' AS pg_catalog.name), CAST('public' AS {text})); "
         f"SECURITY LABEL FOR pg_envelope ON COLUMN {t}.body IS 'phi'; "
         f"SELECT tbl, col, label, data_type, status FROM envelope.classified_columns", (), set()),
        ("envelope.unclassify(regclass,name)",
         f"SELECT envelope.unclassify(CAST('{t}' AS pg_catalog.regclass), CAST('tenant' AS pg_catalog.name)); "
         f"SELECT * FROM envelope.unprotected_columns", (), set()),
        ("envelope.luhn_valid(text)",
         f"SELECT envelope.luhn_valid(CAST('4111 1111 1111 1111' AS {text})), "
         f"envelope.luhn_valid(CAST(email AS {text})) FROM {t}", (), set()),
        ("envelope.suggest_classification(regclass,integer)",
         f"ALTER TABLE {t} ADD COLUMN contact {text} DEFAULT CAST('x@example.org' AS {text}); "
         f"ALTER TABLE {t} ADD COLUMN card_no {text} DEFAULT CAST('4111-1111-1111-1111' AS {text}); "
         f"SELECT * FROM envelope.suggest_classification(CAST('{t}' AS pg_catalog.regclass), CAST(10 AS {int4})); "
         f"SELECT * FROM envelope.suggest_classification(CAST('{t}' AS pg_catalog.regclass), CAST(0 AS {int4})); "
         f"SELECT * FROM envelope.suggest_classification()", (), set()),
        *[(f"envelope.on_current_key(envelope.protected_{ty})", f"SELECT envelope.on_current_key({c}) FROM {t}", (), set())
          for ty, c in (("text", "email"), ("bytea", "blob"), ("jsonb", "body"))],
        *[(f"envelope.key_version_of(envelope.protected_{ty},text)",
           f"SELECT envelope.key_version_of({c}, CAST('lk' AS {text})) FROM {t}", (), set())
          for ty, c in (("text", "email"), ("bytea", "blob"), ("jsonb", "body"))],
        *[(f"envelope.reseal(envelope.protected_{ty})",
           f"SELECT envelope.rotate_key(CAST('lk' AS {text})); UPDATE {t} SET {c} = envelope.reseal({c}); "
           f"CALL envelope.reencrypt(CAST('{t}' AS pg_catalog.regclass), CAST('{c}' AS pg_catalog.name))", (), set())
          for ty, c in (("text", "email"), ("bytea", "blob"), ("jsonb", "body"))],
        ("envelope.unprotect_column(regclass,name)",
         f"SELECT envelope.unprotect_column(CAST('{t}' AS pg_catalog.regclass), CAST(c AS pg_catalog.name)) "
         f"FROM (VALUES ('email'), ('body'), ('blob')) v(c); DROP TABLE {t}", (), set()),
    ]
    return calls


def run_call(conn, sql: str, params: tuple) -> None:
    with conn.cursor() as cur:
        if sql.startswith("COPY-OUT:"):
            buf = io.BytesIO()
            cur.copy_expert(f"COPY (SELECT email, body, blob FROM {sql[9:]}) TO STDOUT (FORMAT binary)", buf)
            assert len(buf.getvalue()) > 40
        elif sql.startswith("COPY-IN:"):
            t = sql[8:]
            buf = io.BytesIO()
            cur.copy_expert(f"COPY (SELECT id OPERATOR(pg_catalog.+) 1000, tenant, email, body, blob FROM {t} "
                            "WHERE id OPERATOR(pg_catalog.<) 1000) TO STDOUT (FORMAT binary)", buf)
            buf.seek(0)
            cur.execute(f"ALTER TABLE {t} DROP CONSTRAINT IF EXISTS {t.split('.')[-1]}_email_key")
            cur.copy_expert(f"COPY {t} FROM STDIN (FORMAT binary)", buf)
            cur.execute(f"DELETE FROM {t} WHERE id OPERATOR(pg_catalog.>=) 1000")
        elif sql.startswith("COPY-BLIND:"):
            t = sql[11:]
            buf = io.BytesIO()
            cur.copy_expert(f"COPY (SELECT CAST(email AS envelope.blind_text), CAST(blob AS envelope.blind_bytea), "
                            f"CAST(body AS envelope.blind_jsonb) FROM {t}) TO STDOUT (FORMAT binary)", buf)
            buf.seek(0)
            cur.execute("CREATE TEMP TABLE IF NOT EXISTS blinds (a envelope.blind_text, b envelope.blind_bytea, "
                        "c envelope.blind_jsonb)")
            cur.copy_expert("COPY blinds FROM STDIN (FORMAT binary)", buf)
        elif sql == "COPY-OUT":
            buf = io.BytesIO()
            cur.copy_expert("COPY (SELECT t, b, j FROM public.rdata) TO STDOUT (FORMAT binary)", buf)
            assert len(buf.getvalue()) > 100
        elif sql == "COPY-IN":
            buf = io.BytesIO()
            cur.copy_expert("COPY (SELECT id + 1000, t, b, j FROM public.rdata WHERE id OPERATOR(pg_catalog.<) 1000) "
                            "TO STDOUT (FORMAT binary)", buf)
            buf.seek(0)
            cur.copy_expert("COPY public.rdata FROM STDIN (FORMAT binary)", buf)
            cur.execute("DELETE FROM public.rdata WHERE id OPERATOR(pg_catalog.>=) 1000")
        else:
            # Several statements run one by one (a CALL must not be in an implicit transaction block).
            for stmt in sql.split("; ") if not params else [sql]:
                cur.execute(stmt, params)
                if cur.description is not None:
                    cur.fetchall()


def hostile_session(pg: Cluster, user: str):
    """A connection whose search_path puts the hostile schema first, with hijack
    objects in its own pg_temp too."""
    conn = pg.connect(user=user)
    install_hijacks(conn, "pg_temp")
    with conn.cursor() as cur:
        cur.execute(f"SET search_path = {HOSTILE_SCHEMA}, pg_catalog, public")
    return conn


def exercise_every_entry_point(pg: Cluster, state: str) -> set[str]:
    called = set()
    for persona in (ATTACKER, pg.superuser):
        conn = hostile_session(pg, persona)
        for fn, sql, params, accepted in entry_point_calls(f"{state}_{persona[:2]}", persona == pg.superuser):
            try:
                run_call(conn, sql, params)
            except psycopg2.Error as e:
                err = pg_error(e)
                assert err["sqlstate"] in accepted, (persona, fn, err)
            called.add(fn)
        conn.close()
        assert_not_pwned(pg)
    return called


@pytest.fixture(scope="module")
def hostile_schema(env):
    conn = env.cluster.connect(user=ATTACKER)
    install_hijacks(conn, HOSTILE_SCHEMA)
    conn.close()
    assert_not_pwned(env.cluster)
    return HOSTILE_SCHEMA


def test_hijack_on_cache_miss(env, hostile_schema):
    """The issue's exploit, generalised: the DEK of a remote-KMS key is not cached, so
    decrypt_field reads the KMS configuration, and every other function runs too."""
    pg = env.cluster
    pg.sql("SELECT envelope.cache_flush()")
    conn = pg.connect(user=ATTACKER)
    install_hijacks(conn, "pg_temp")
    with conn.cursor() as cur:
        cur.execute("SELECT envelope.decrypt_field(t, CAST(id AS pg_catalog.text)) FROM public.rdata ORDER BY id")
        assert [r[0] for r in cur.fetchall()] == [SECRET, SECRET]
    assert_not_pwned(pg)
    pg.sql("SELECT envelope.cache_flush()")
    exercise_every_entry_point(pg, "miss")


def test_hijack_on_cache_hit(env, hostile_schema):
    pg = env.cluster
    pg.sql("SELECT envelope.decrypt_field(t, id::text) FROM public.rdata")  # warm
    exercise_every_entry_point(pg, "hit")


def test_hijack_after_restart(env, hostile_schema):
    pg = env.cluster
    pg.restart()
    exercise_every_entry_point(pg, "restart")


def test_hijack_module_covers_every_function(env, hostile_schema):
    """Fails when the extension gains a function the hijack tests do not call."""
    pg = env.cluster
    functions = {r[0] for r in pg.sql(
        "SELECT p.oid::regprocedure::text FROM pg_proc p "
        "JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e' "
        "JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'pg_envelope'")}
    covered = {fn for fn, *_ in entry_point_calls("cover", True)}
    assert functions, "the extension has no functions?"
    assert functions - covered == set(), f"functions without a hijack test: {sorted(functions - covered)}"
    assert covered - functions == set(), f"hijack tests for functions that do not exist: {covered - functions}"


def test_sql_functions_pin_search_path(env):
    """Any SQL or PL/pgSQL function of the extension (and any SECURITY DEFINER one)
    runs with search_path pinned to pg_catalog, pg_temp."""
    rows = env.cluster.sql(
        "SELECT p.oid::regprocedure::text, l.lanname, p.prosecdef, p.proconfig FROM pg_proc p "
        "JOIN pg_language l ON l.oid = p.prolang "
        "JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e' "
        "JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'pg_envelope'")
    assert rows
    for fn, lang, secdef, config in rows:
        if lang in ("c", "internal") and not secdef:
            continue
        assert config is not None and "search_path=pg_catalog, pg_temp" in config, (fn, lang, config)


# ---------------------------------------------------------------------------------
# Schema squatting


def test_schema_squat_is_refused(cluster_factory):
    pg = cluster_factory.create("squat")
    pg.sql("CREATE DATABASE squatted")
    pg.sql("CREATE ROLE squatter LOGIN")
    pg.sql("GRANT CREATE ON DATABASE squatted TO squatter")
    pg.sql("CREATE SCHEMA envelope", dbname="squatted", user="squatter")
    pg.sql("CREATE FUNCTION envelope.encrypt_field(v varchar, k varchar) RETURNS text LANGUAGE sql "
           "AS $$ SELECT 'captured' $$", dbname="squatted", user="squatter")
    with pytest.raises(psycopg2.Error) as e:
        pg.sql("CREATE EXTENSION pg_envelope", dbname="squatted")
    err = pg_error(e)
    assert err["sqlstate"] == "3F000", err
    assert err["message"] == 'schema "envelope" is owned by role "squatter", not by the owner of extension ' \
                             '"pg_envelope"', err
    assert "plaintext" in err["detail"]
    assert pg.scalar("SELECT count(*) FROM pg_extension WHERE extname = 'pg_envelope'", dbname="squatted") == 0
    # An empty schema made by somebody else is refused as well.
    pg.sql("DROP SCHEMA envelope CASCADE", dbname="squatted", user="squatter")
    pg.sql("CREATE SCHEMA envelope", dbname="squatted", user="squatter")
    with pytest.raises(psycopg2.Error) as e:
        pg.sql("CREATE EXTENSION pg_envelope", dbname="squatted")
    assert pg_error(e)["sqlstate"] == "3F000"
    # The superuser's own empty schema (e.g. left behind by DROP EXTENSION) is fine,
    # but not once another role put an object in it.
    pg.sql("DROP SCHEMA envelope", dbname="squatted", user="squatter")
    pg.sql("CREATE EXTENSION pg_envelope", dbname="squatted")
    pg.sql("DROP EXTENSION pg_envelope", dbname="squatted")
    assert pg.scalar("SELECT count(*) FROM pg_namespace WHERE nspname = 'envelope'", dbname="squatted") == 1
    pg.sql("CREATE EXTENSION pg_envelope", dbname="squatted")
    pg.sql("DROP EXTENSION pg_envelope", dbname="squatted")
    pg.sql("GRANT CREATE ON SCHEMA envelope TO squatter", dbname="squatted")
    pg.sql("CREATE FUNCTION envelope.decrypt_field(v text) RETURNS text LANGUAGE sql AS $$ SELECT v $$",
           dbname="squatted", user="squatter")
    with pytest.raises(psycopg2.Error) as e:
        pg.sql("CREATE EXTENSION pg_envelope", dbname="squatted")
    err = pg_error(e)
    assert err["sqlstate"] == "3F000", err
    assert err["message"] == 'schema "envelope" holds 1 object(s) that do not belong to extension "pg_envelope"'
    assert "function decrypt_field(text)" in err["detail"], err


def test_squatted_old_install_is_not_updated(cluster_factory):
    """0.1.0 could be installed into a squatted schema; the update refuses it."""
    pg = cluster_factory.create("squat-update")
    pg.sql("CREATE ROLE squatter LOGIN")
    pg.sql("GRANT CREATE ON DATABASE postgres TO squatter")
    pg.sql("CREATE SCHEMA envelope", user="squatter")
    pg.sql("CREATE EXTENSION pg_envelope VERSION '0.1.0'")
    with pytest.raises(psycopg2.Error) as e:
        pg.sql("ALTER EXTENSION pg_envelope UPDATE")
    assert pg_error(e)["sqlstate"] == "3F000"
    assert pg.scalar("SELECT extversion FROM pg_extension WHERE extname = 'pg_envelope'") == "0.1.0"
    # Once the schema is the extension owner's, the update goes through.
    pg.sql("ALTER SCHEMA envelope OWNER TO postgres")
    pg.sql("ALTER EXTENSION pg_envelope UPDATE")
    assert pg.scalar("SELECT extversion FROM pg_extension WHERE extname = 'pg_envelope'") == "0.2.0"


# ---------------------------------------------------------------------------------
# No argument echoed in errors


def test_no_argument_is_echoed(env):
    """A marker in each text argument of each function (wrong position, nonexistent
    name) never shows in the error or the server log."""
    pg = env.cluster
    since = pg.log_position()
    marker = "Secret-" + uuid.uuid4().hex[:12]  # also a syntactically valid key name
    calls = [
        ("SELECT envelope.encrypt_field(%s::text, %s)", ("x", marker)),
        ("SELECT envelope.encrypt_field(%s::text, %s)", (marker, marker)),
        ("SELECT envelope.encrypt_field(%s::bytea, %s)", (b"x", marker)),
        ("SELECT envelope.encrypt_field(%s::jsonb, %s)", ('{"a": 1}', marker)),
        ("SELECT envelope.encrypt_field(%s::text, %s, %s)", ("x", marker, marker)),
        ("SELECT envelope.decrypt_field(t, %s) FROM public.rdata WHERE id = 1", (marker,)),
        ("SELECT envelope.decrypt_field(b, %s) FROM public.rdata WHERE id = 1", (marker,)),
        ("SELECT envelope.decrypt_field(j, %s) FROM public.rdata WHERE id = 2", (marker,)),
        ("SELECT envelope.create_key(%s, %s)", ("newkey_" + uuid.uuid4().hex[:6], marker)),
        ("SELECT envelope.create_key(%s, 'local', %s)", (marker, marker + " with spaces")),
        ("SELECT envelope.create_key(%s, 'vault', %s)", (marker, marker)),
        ("SELECT envelope.create_key(%s, %s, %s)", (marker + "!", marker, marker)),
        ("SELECT envelope.rotate_key(%s)", (marker,)),
        ("SELECT envelope.rewrap_key(%s)", (marker,)),
        ("SELECT envelope.rewrap_key('rk', %s)", (marker,)),
        ("SELECT envelope.rewrap_key('lk', %s)", (marker + " bad",)),
        ("SELECT envelope.disable_key(%s)", (marker,)),
        ("SELECT envelope.enable_key(%s)", (marker,)),
        ("SELECT envelope.destroy_key(%s)", (marker,)),
        ("SELECT envelope.cache_evict(%s)", (marker,)),
        ("SELECT envelope.alter_kms(%s, '{}')", (marker,)),
        ("SELECT envelope.drop_kms(%s)", (marker,)),
        ("SELECT envelope.create_kms(%s, %s)", (marker + "!", marker)),
        ("SELECT envelope.create_kms(%s, 'vault-transit', '{}')", (marker,)),
        ("SELECT envelope.create_kms('provider_test', %s)", (marker,)),
        ("SELECT %s::envelope.encrypted_text", (marker,)),
        ("SELECT envelope.grant_key(%s, 'attacker', 'decrypt')", (marker + "!",)),
        ("SELECT envelope.grant_key('lk', 'attacker', %s)", (marker,)),
        ("SELECT envelope.revoke_key(%s, 'attacker', 'decrypt')", (marker + " x",)),
        ("SELECT %s::envelope.encrypted_bytea", ("env1:" + marker,)),
        ("INSERT INTO public.rdata (id, t) VALUES (99, %s)", (marker,)),
    ]
    failures = 0
    for user in (pg.superuser, ATTACKER):
        conn = pg.connect(user=user)
        for sql, params in calls:
            with conn.cursor() as cur:
                try:
                    cur.execute(sql, params)
                    cur.fetchall() if cur.description else None
                    continue
                except psycopg2.Error as e:
                    failures += 1
                    diag = e.diag
                    texts = [diag.message_primary, diag.message_detail, diag.message_hint, diag.context]
                    for t in texts:
                        assert marker not in (t or ""), (sql, user, t)
        conn.close()
    assert failures >= 2 * (len(calls) - 2)  # every call is a mistake (two may succeed)
    pg.assert_log_free_of([marker], since=since)


# ---------------------------------------------------------------------------------
# Unprivileged roles


def test_unprivileged_role_is_refused_everything(env):
    pg = env.cluster
    pg.sql("DROP ROLE IF EXISTS nobody")
    pg.sql("CREATE ROLE nobody LOGIN")
    pg.sql("GRANT SELECT ON public.rdata TO nobody")
    conn = pg.connect(user="nobody")
    for fn, sql, params, _ in entry_point_calls("nobody", False):
        if sql.startswith("COPY") or "_out(" in fn or "_in(" in fn or "key_tables_changed" in fn:
            continue  # type I/O is for everyone; the trigger is not callable
        if fn == "envelope.audit_hash(envelope.audit_log)":
            continue  # a hash of the fields it is given: PUBLIC, so audit_verify works for whom it is granted
        if fn == "envelope.reencryption_running(oid,name)":
            continue  # PUBLIC: the progress view (readable by the tables' owners) calls it
        if f"{HOSTILE_SCHEMA}.pt_" in sql:
            continue  # protected columns: below, on a table nobody may read
        with conn.cursor() as cur, pytest.raises(psycopg2.Error) as e:
            cur.execute(sql, params)
        assert pg_error(e)["sqlstate"] == "42501", (fn, pg_error(e))
        assert "permission denied for" in pg_error(e)["message"], (fn, pg_error(e))
    # Protecting, sealing, unsealing and unprotecting are not PUBLIC; the blind-index
    # operators, is_sealed and protected_ok are (they are what a CHECK and an index run).
    for sql in ("SELECT envelope.protect_column('public.rdata', 'id', 'lk')",
                "CALL envelope.seal_rows('public.rdata', 'id')",
                "SELECT envelope.unprotect_column('public.rdata', 'id')",
                "SELECT envelope.unseal('x'::envelope.protected_text)",
                "SELECT envelope.unseal('\\x01'::envelope.protected_bytea)",
                "SELECT envelope.unseal('[1]'::envelope.protected_jsonb)"):
        with conn.cursor() as cur, pytest.raises(psycopg2.Error) as e:
            cur.execute(sql)
        assert pg_error(e)["sqlstate"] == "42501", (sql, pg_error(e))
        assert "permission denied for" in pg_error(e)["message"], (sql, pg_error(e))
    # Trigger functions cannot be called at all.
    with conn.cursor() as cur, pytest.raises(psycopg2.Error) as e:
        cur.execute("SELECT envelope.key_tables_changed()")
    assert pg_error(e)["sqlstate"] in ("0A000", "42501"), pg_error(e)
    tables = [r[0] for r in pg.sql(
        "SELECT c.oid::regclass::text FROM pg_class c WHERE c.relnamespace = 'envelope'::regnamespace "
        "AND c.relkind IN ('r', 'v')")]
    assert set(tables) >= {"envelope.key", "envelope.data_key", "envelope.kms", "envelope.keys",
                           "envelope.kms_configs", "envelope.stats"}
    # The one view everyone may read shows only the protected columns of one's own tables.
    tables.remove("envelope.protected_columns")
    # So is the re-encryption progress view: only runs on one's own tables (rdata is the
    # superuser's, not nobody's).
    tables.remove("envelope.reencryption_progress")
    pg.sql("CALL envelope.reencrypt('public.rdata', 'b')")
    assert pg.scalar("SELECT count(*) FROM envelope.reencryption_progress") > 0
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM envelope.reencryption_progress")
        assert cur.fetchone()[0] == 0
    # The classification views are PUBLIC on purpose (metadata, as pg_seclabels is), and
    # classify, unclassify, luhn_valid and suggest_classification are EXECUTE for PUBLIC:
    # PostgreSQL's ownership check refuses labels on others' tables, and the scanner reads
    # only what the caller may SELECT.
    tables.remove("envelope.classified_columns")
    tables.remove("envelope.unprotected_columns")
    pg.sql("SELECT envelope.classify('public.rdata', 'id', 'confidential')")
    with conn.cursor() as cur:
        cur.execute("SELECT col::text, label, status FROM envelope.classified_columns "
                    "WHERE tbl = 'public.rdata'::regclass")
        assert cur.fetchall() == [("id", "confidential", "plaintext")]
        cur.execute("SELECT col::text FROM envelope.unprotected_columns WHERE tbl = 'public.rdata'::regclass")
        assert cur.fetchall() == [("id",)]
        cur.execute("SELECT envelope.luhn_valid('4111111111111111'), envelope.luhn_valid('4111111111111112')")
        assert cur.fetchone() == (True, False)
    # The scanner: only what nobody may read (rdata's other columns are encrypted: not sampled).
    pg.sql("CREATE TABLE public.nobody_scan (contact text, hidden text)")
    pg.sql("INSERT INTO public.nobody_scan VALUES ('a@example.org', 'b@example.org')")
    pg.sql("CREATE TABLE public.nobody_unreadable (contact text)")
    pg.sql("INSERT INTO public.nobody_unreadable VALUES ('c@example.org')")
    pg.sql("GRANT SELECT (contact) ON public.nobody_scan TO nobody")
    with conn.cursor() as cur:
        cur.execute("SELECT CAST(relation AS oid) = 'public.nobody_scan'::regclass, column_name::text, matched "
                    "FROM envelope.suggest_classification()")
        assert cur.fetchall() == [(True, "contact", 1)]
    pg.sql("DROP TABLE public.nobody_scan, public.nobody_unreadable")
    for sql in ("SELECT envelope.classify('public.rdata', 't', 'pii')",
                "SELECT envelope.unclassify('public.rdata', 'id')",
                "SECURITY LABEL FOR pg_envelope ON COLUMN public.rdata.t IS 'pii'"):
        with conn.cursor() as cur, pytest.raises(psycopg2.Error) as e:
            cur.execute(sql)
        assert pg_error(e)["sqlstate"] == "42501", (sql, pg_error(e))
        assert "must be owner of" in pg_error(e)["message"], (sql, pg_error(e))
    assert pg.sql("SELECT col::text, label FROM envelope.classified_columns WHERE tbl = 'public.rdata'::regclass") \
        == [("id", "confidential")]
    pg.sql("SELECT envelope.unclassify('public.rdata', 'id')")
    pg.sql("CREATE TABLE public.nobody_probe (id int, s text)")
    pg.sql("SELECT envelope.protect_column('public.nobody_probe', 's', 'lk')")
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM envelope.protected_columns")
        assert cur.fetchone()[0] == 0
    assert pg.scalar("SELECT count(*) FROM envelope.protected_columns WHERE tbl = 'public.nobody_probe'::regclass") == 1
    pg.sql("DROP TABLE public.nobody_probe")
    for table in tables:
        stmts = [f"SELECT * FROM {table}"]
        if table in ("envelope.key", "envelope.data_key", "envelope.kms"):
            stmts += [f"DELETE FROM {table}", f"INSERT INTO {table} DEFAULT VALUES", f"TRUNCATE {table}",
                      f"UPDATE {table} SET created_at = created_at"]
        for stmt in stmts:
            with conn.cursor() as cur, pytest.raises(psycopg2.Error) as e:
                cur.execute(stmt)
            assert pg_error(e)["sqlstate"] == "42501", (stmt, pg_error(e))
    # A role allowed to decrypt only cannot manage keys or read the key tables.
    pg.sql("GRANT EXECUTE ON FUNCTION envelope.decrypt_field(envelope.encrypted_text, text) TO nobody")
    pg.sql("SELECT envelope.grant_key('lk', 'nobody', 'decrypt')")
    with conn.cursor() as cur:
        cur.execute("SELECT envelope.decrypt_field(t, id::text) FROM public.rdata WHERE id = 1")
        assert cur.fetchone()[0] == SECRET
    for sql in ("SELECT envelope.rotate_key('lk')", "SELECT envelope.destroy_key('lk')",
                "SELECT * FROM envelope.data_key", "SELECT envelope.encrypt_field('x'::text, 'lk')"):
        with conn.cursor() as cur, pytest.raises(psycopg2.Error) as e:
            cur.execute(sql)
        assert pg_error(e)["sqlstate"] == "42501", (sql, pg_error(e))
    conn.close()
    pg.sql("SELECT envelope.revoke_key('lk', 'nobody', 'decrypt')")
    pg.sql("REVOKE ALL ON FUNCTION envelope.decrypt_field(envelope.encrypted_text, text) FROM nobody")
    pg.sql("REVOKE ALL ON public.rdata FROM nobody")
    pg.sql("DROP ROLE nobody")


# ---------------------------------------------------------------------------------
# Tampering with every header field


def header_fields(raw: bytes) -> list[tuple[str, list[int], str | None, bool]]:
    """(name, offsets, SQLSTATE of decrypt_field, refused at input (22P02 text, 22P03
    binary)) of each header field, in the value's format (docs/format.md)."""
    h = envelope_header(raw)
    if h["format"] == 1:
        return [("format version", [0], None, True), ("algorithm id", [1], None, True),
                ("key id", [2, 3, 4, 5], "42704", False), ("DEK version", [6, 7, 8, 9], "42704", False),
                ("nonce", list(range(10, 22)), "22000", False)]
    end = h["header_len"] - 12  # the LEB128 DEK version ends where the nonce begins
    return [("format version", [0], None, True), ("key id", [1, 2, 3, 4], "42704", False),
            ("DEK version", list(range(5, end)), "42704", False),
            ("nonce", list(range(end, end + 12)), "22000", False)]


def test_tampering_with_every_header_field(env):
    """Every bit flip in every header field, of a value in each format (format 2, the
    default, and format 1 as pg_envelope 0.1.0 wrote it): structurally invalid values
    are refused at input (text and binary), others fail at decrypt with the field's
    SQLSTATE; no error quotes the plaintext."""
    pg = env.cluster
    since = pg.log_position()
    for key, row_id in (("lk", 1), ("rk", 2)):
        raw2 = bytes(pg.scalar("SELECT envelope.encrypted_text_send(t) FROM public.rdata WHERE id = %s", (row_id,)))
        conn = pg.connect()
        cur = conn.cursor()
        cur.execute("SET envelope.format_version = 1")
        cur.execute("SELECT envelope.encrypted_text_send(envelope.encrypt_field(%s::text, %s, %s::text))",
                    (SECRET, key, str(row_id)))
        raw1 = bytes(cur.fetchone()[0])
        cur.execute("RESET envelope.format_version")
        assert (raw2[0], raw1[0]) == (2, 1)
        cur.execute("CREATE TEMP TABLE tampered (v envelope.encrypted_text)")
        for raw in (raw2, raw1):
            h = envelope_header(raw)
            for name, offsets, on_decrypt, refused_at_input in header_fields(raw):
                for off in offsets:
                    for bit in (0, 7):
                        forged = bytearray(raw)
                        forged[off] ^= 1 << bit
                        text_form = "env1:" + b64(bytes(forged))
                        # Structurally invalid values are refused at input, text and binary.
                        if refused_at_input or envelope_problem(bytes(forged)):
                            with pytest.raises(psycopg2.Error) as e:
                                cur.execute("SELECT %s::envelope.encrypted_text", (text_form,))
                            assert pg_error(e)["sqlstate"] == "22P02", (name, off, pg_error(e))
                            buf = io.BytesIO(copy_binary_row(bytes(forged)))
                            with pytest.raises(psycopg2.Error) as e:
                                cur.copy_expert("COPY tampered FROM STDIN (FORMAT binary)", buf)
                            assert pg_error(e)["sqlstate"] == "22P03", (name, off, pg_error(e))
                            continue
                        cur.execute("TRUNCATE tampered")
                        cur.execute("INSERT INTO tampered VALUES (%s::envelope.encrypted_text)", (text_form,))
                        with pytest.raises(psycopg2.Error) as e:
                            cur.execute("SELECT envelope.decrypt_field(v, %s) FROM tampered", (str(row_id),))
                        err = pg_error(e)
                        expected = on_decrypt
                        if name == "DEK version":
                            # A version that exists (the key was rotated often by the tests
                            # above) opens another DEK: authentication fails instead.
                            forged_version = envelope_header(bytes(forged))["version"]
                            if pg.scalar("SELECT count(*) FROM envelope.keys WHERE key_name = %s AND version = %s",
                                         (key, forged_version)):
                                expected = "22000"
                        assert err["sqlstate"] == expected, (key, h["format"], name, off, bit, err)
                        for t in (err["message"], err["detail"], err["hint"]):
                            assert SECRET not in (t or "")
            # Ciphertext and tag: authentication fails.
            for off in (h["header_len"], len(raw) - 17, len(raw) - 1):
                forged = bytearray(raw)
                forged[off] ^= 0x01
                cur.execute("TRUNCATE tampered")
                cur.execute("INSERT INTO tampered VALUES (%s::envelope.encrypted_text)", ("env1:" + b64(bytes(forged)),))
                with pytest.raises(psycopg2.Error) as e:
                    cur.execute("SELECT envelope.decrypt_field(v, %s) FROM tampered", (str(row_id),))
                assert pg_error(e)["sqlstate"] == "22000" and "could not decrypt" in pg_error(e)["message"]
            # Truncated values are refused at input: shorter than the header, than the
            # shortest envelope of the format.
            for n in (0, 1, h["header_len"] - 1, (37 if h["format"] == 1 else 33)):
                with pytest.raises(psycopg2.Error) as e:
                    cur.execute("SELECT %s::envelope.encrypted_text", ("env1:" + b64(raw[:n]),))
                assert pg_error(e)["sqlstate"] == "22P02"
        conn.close()
    pg.assert_log_free_of([SECRET], since=since)


def copy_binary_row(value: bytes) -> bytes:
    """A COPY BINARY stream with one row of one column holding `value`."""
    out = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
    out += (1).to_bytes(2, "big") + len(value).to_bytes(4, "big") + value
    out += (0xFFFF).to_bytes(2, "big")
    return out


# ---------------------------------------------------------------------------------
# A forged value whose plaintext the JSON parser refuses: its errors quote the text.


def local_dek(pg: Cluster, key: str) -> tuple[int, int, bytes]:
    """(key id, version, DEK) of a local-KMS key, unwrapped here with the master key
    as docs/format.md specifies: what an attacker holding both could do."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    key_id, version, kek_name, wrapped = pg.sql(
        "SELECT k.key_id, d.version, k.kek, d.wrapped FROM envelope.key k JOIN envelope.data_key d USING (key_id) "
        "WHERE k.name = %s AND d.version = k.current_version", (key,))[0]
    wrapped = bytes(wrapped)
    kek = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"pg_envelope local KEK v1",
               info=kek_name.encode()).derive(bytes.fromhex(pg.master_key_hex))
    aad = b"pg_envelope DEK v1\x00" + key_id.to_bytes(4, "big") + version.to_bytes(4, "big") + key.encode()
    assert wrapped[0] == 1
    dek = AESGCM(kek).decrypt(wrapped[1:13], wrapped[13:], aad)
    return key_id, version, dek


def forge(key_id: int, version: int, dek: bytes, plain_type: int, plaintext: bytes) -> str:
    import os as _os
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    header = bytes([1, 1]) + key_id.to_bytes(4, "big") + version.to_bytes(4, "big") + _os.urandom(12)
    sealed = AESGCM(dek).encrypt(header[10:22], plaintext, header + bytes([plain_type, 0]))
    return "env1:" + b64(header + sealed)


def test_json_parser_errors_do_not_quote_a_decrypted_value(env):
    pg = env.cluster
    since = pg.log_position()
    key_id, version, dek = local_dek(pg, "lk")
    marker = "Secret-" + uuid.uuid4().hex[:10]
    # Authentic under the key, typed jsonb, but not JSON.
    forged = forge(key_id, version, dek, 3, f'{{"ssn": {marker}}}'.encode())
    with pytest.raises(psycopg2.Error) as e:
        pg.sql("SELECT envelope.decrypt_field(%s::envelope.encrypted_jsonb)", (forged,))
    err = pg_error(e)
    assert err["sqlstate"] == "22P02", err
    assert err["message"] == 'decrypted value of key "lk" is not valid jsonb in this database', err
    diag = e.value.diag
    for t in (diag.message_primary, diag.message_detail, diag.message_hint, diag.context):
        assert marker not in (t or ""), t
    # The forgery is good: as text it decrypts (the type is bound into the AAD, so
    # re-typing it fails authentication instead).
    with pytest.raises(psycopg2.Error) as e:
        pg.sql("SELECT envelope.decrypt_field(%s::envelope.encrypted_text)", (forged,))
    assert pg_error(e)["sqlstate"] == "22000"
    ok = forge(key_id, version, dek, 3, b'{"a": 1}')
    assert pg.scalar("SELECT envelope.decrypt_field(%s::envelope.encrypted_jsonb)", (ok,)) == {"a": 1}
    pg.assert_log_free_of([marker], since=since)


def test_hijack_drop_role_and_drop_owned(env, hostile_schema):
    """DROP ROLE and DROP OWNED read and change envelope.key_grant as its owner (the
    ProcessUtility hook): a role with CREATEROLE and hijack objects first on its
    search_path (and in pg_temp) gets the refusal and the revoke, and no hijack runs."""
    pg = env.cluster
    pg.sql(f"ALTER ROLE {ATTACKER} CREATEROLE")
    try:
        pg.sql("CREATE ROLE victim_reader NOLOGIN")
        pg.sql("SELECT envelope.grant_key('lk', 'victim_reader', 'decrypt')")
        pg.sql(f"GRANT victim_reader TO {ATTACKER}")  # DROP OWNED BY needs it
        conn = hostile_session(pg, ATTACKER)
        with conn.cursor() as cur, pytest.raises(psycopg2.Error) as e:
            cur.execute("DROP ROLE victim_reader")
        assert pg_error(e)["sqlstate"] == "2BP01", pg_error(e)
        assert_not_pwned(pg)
        with conn.cursor() as cur:
            cur.execute("DROP OWNED BY victim_reader")
            cur.execute("DROP ROLE victim_reader")
        conn.close()
        assert_not_pwned(pg)
        assert pg.scalar("SELECT count(*) FROM envelope.key_grant g WHERE NOT EXISTS "
                         "(SELECT 1 FROM pg_roles r WHERE r.oid = g.grantee::oid)") == 0
    finally:
        pg.sql(f"ALTER ROLE {ATTACKER} NOCREATEROLE")
        pg.sql("DROP ROLE IF EXISTS victim_reader")
