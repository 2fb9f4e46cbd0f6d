"""Decryption in parallel workers, least privilege, and no secrets in the server log.

All tests share one cluster that logs with log_error_verbosity = verbose and
log_min_error_statement = panic: PostgreSQL then logs no STATEMENT lines (which would
hold whatever the client typed), so plaintext or key material in the log could only
come from pg_envelope's own messages. (One PostgreSQL line does quote input: the
CONTEXT of a failed COPY row; the leak check skips exactly that line.)
"""

from __future__ import annotations

import base64
import hashlib
import io
import re

import psycopg2
import psycopg2.extras
import pytest

from pgcluster import Cluster, envelope_header, key_spellings, pg_error

APP_ROLE = "app_user"

LOG_SETTINGS = {
    "log_error_verbosity": "verbose",
    "log_min_error_statement": "panic",
    "log_min_messages": "info",
    "max_worker_processes": 8,
    "max_parallel_workers": 4,
}

PARALLEL_SETTINGS = [
    "max_parallel_workers_per_gather = 2",
    "parallel_setup_cost = 0",
    "parallel_tuple_cost = 0",
    "min_parallel_table_scan_size = 0",
    "force_parallel_mode = on",
    # The leader runs no part of the scan, so every row below the Gather is decrypted in
    # a worker.
    "parallel_leader_participation = off",
]

# Plaintexts that must never show up in the server log.
SECRET_SSN = "123-45-6789"
SECRET_NOTE = "Quillfeather diagnosis F32.1 confidential"
SECRET_DOC = '{"ssn": "123-45-6789", "name": "Quillfeather"}'
LEAK_NEEDLES = [SECRET_SSN, "Quillfeather", "diagnosis F32.1"]


@pytest.fixture(scope="module")
def cluster(module_cluster_factory) -> Cluster:
    cluster = module_cluster_factory.create("parallel-privs", settings=LOG_SETTINGS)
    cluster.sql(f"CREATE ROLE {APP_ROLE} LOGIN")
    return cluster


def must_fail(cluster: Cluster, query: str, params=None, *, dbname: str, user: str | None = None,
              sqlstate: str) -> dict:
    with pytest.raises(psycopg2.Error) as exc:
        cluster.sql(query, params, dbname=dbname, user=user)
    err = pg_error(exc)
    assert err["sqlstate"] == sqlstate, f"{query}: {err['text']}"
    return err


# ---- (a) parallel workers -----------------------------------------------------------

ROWS = 50_000


def plaintext(i: int) -> str:
    """Mirrors the SQL expression in PLAINTEXT_SQL."""
    return f"row-{i}-{'é' * (i % 7)}-{hashlib.md5(str(i).encode()).hexdigest()}"


PLAINTEXT_SQL = "'row-' || g || '-' || repeat('é', g % 7) || '-' || md5(g::text)"


@pytest.fixture(scope="module")
def parallel_db(cluster) -> str:
    db = "parallel"
    cluster.create_database(db)
    conn = cluster.connect(db)
    with conn.cursor() as cur:
        cur.execute("SELECT envelope.create_key('pk')")
        cur.execute("CREATE TABLE big (id int PRIMARY KEY, v envelope.encrypted_text NOT NULL)")
        insert = (f"INSERT INTO big SELECT g, envelope.encrypt_field({PLAINTEXT_SQL}, 'pk', g::text) "
                  "FROM generate_series(%s, %s) g").replace("g % 7", "g %% 7")
        cur.execute(insert, (1, ROWS // 2))
        cur.execute("SELECT envelope.rotate_key('pk')")  # workers need two DEK versions
        cur.execute(insert, (ROWS // 2 + 1, ROWS))
        cur.execute("VACUUM ANALYZE big")
    return db


def parallel_cursor(cluster: Cluster, db: str):
    cur = cluster.connect(db).cursor()
    for setting in PARALLEL_SETTINGS:
        cur.execute(f"SET {setting}")
    return cur


def plan_nodes(node: dict, under_gather: bool = False):
    """Yields (node, under_gather) for a JSON EXPLAIN plan tree."""
    yield node, under_gather
    below = under_gather or node["Node Type"] in ("Gather", "Gather Merge")
    for child in node.get("Plans", []):
        yield from plan_nodes(child, below)


def assert_decrypted_by_workers(cur, query: str, function: str = "envelope.decrypt_field") -> None:
    """EXPLAIN ANALYZE shows a Gather that launched workers, and below it a node that
    evaluates `function`, run by workers only."""
    cur.execute("EXPLAIN (ANALYZE, VERBOSE, FORMAT JSON) " + query)
    plan = cur.fetchone()[0][0]["Plan"]
    nodes = list(plan_nodes(plan))
    gathers = [n for n, _ in nodes if n["Node Type"] in ("Gather", "Gather Merge")]
    assert len(gathers) == 1, plan
    assert gathers[0]["Workers Launched"] >= 1, gathers[0]
    decrypting = [n for n, below in nodes
                  if below and any(function in o for o in n.get("Output", []))]
    assert decrypting, f"{function}() is not evaluated below the Gather: {plan}"
    workers = decrypting[0].get("Workers", [])
    assert 1 <= len(workers) <= gathers[0]["Workers Launched"], decrypting[0]
    assert sum(w["Actual Rows"] for w in workers) > 0


def test_rows_decrypt_in_parallel_workers(cluster, parallel_db):
    cur = parallel_cursor(cluster, parallel_db)
    query = "SELECT id, envelope.decrypt_field(v, id::text) FROM big"
    assert_decrypted_by_workers(cur, query)
    cur.execute(query)
    got = dict(cur.fetchall())
    assert len(got) == ROWS
    mismatched = [i for i in range(1, ROWS + 1) if got.get(i) != plaintext(i)]
    assert not mismatched, f"{len(mismatched)} rows decrypted wrongly, e.g. id {mismatched[:5]}"


def test_partial_aggregates_over_decrypted_values_in_workers(cluster, parallel_db):
    cur = parallel_cursor(cluster, parallel_db)
    query = """SELECT count(*), sum(length(p)),
                      sum(('x' || substr(md5(p), 1, 15))::bit(60)::bigint)
                 FROM (SELECT envelope.decrypt_field(v, id::text) AS p FROM big) s"""
    assert_decrypted_by_workers(cur, query)
    cur.execute(query)
    texts = [plaintext(i) for i in range(1, ROWS + 1)]
    expected = (ROWS, sum(len(t) for t in texts),
                sum(int(hashlib.md5(t.encode()).hexdigest()[:15], 16) for t in texts))
    assert cur.fetchone() == expected


def test_ordered_digest_of_values_decrypted_in_workers(cluster, parallel_db):
    cur = parallel_cursor(cluster, parallel_db)
    # OFFSET 0 keeps the subquery, so its decrypt_field() runs below the Gather.
    query = """SELECT md5(string_agg(p, ',' ORDER BY id))
                 FROM (SELECT id, envelope.decrypt_field(v, id::text) AS p FROM big OFFSET 0) s"""
    assert_decrypted_by_workers(cur, query)
    cur.execute(query)
    expected = hashlib.md5(",".join(plaintext(i) for i in range(1, ROWS + 1)).encode()).hexdigest()
    assert cur.fetchone()[0] == expected


def nonce(ciphertext: str) -> bytes:
    return envelope_header(base64.b64decode(ciphertext[len("env1:"):]))["nonce"]  # docs/format.md


def test_no_nonce_repeats_across_workers_and_backends(cluster, parallel_db):
    """Each process draws its own nonces: values encrypted in parallel workers and in
    concurrent backends never share one (a repeat under one DEK would break GCM)."""
    cur = parallel_cursor(cluster, parallel_db)
    query = "SELECT id, envelope.encrypt_field('again ' || id, 'pk', id::text)::text FROM big"
    assert_decrypted_by_workers(cur, query, function="envelope.encrypt_field")
    cur.execute(query)
    from_workers = cur.fetchall()
    backends = [cluster.connect(parallel_db).cursor() for _ in range(8)]
    for b in backends:  # all open at once: eight live backends
        b.execute("SELECT envelope.encrypt_field('backend ' || g, 'pk')::text "
                  "FROM generate_series(1, 500) g")
    from_backends = [row[0] for b in backends for row in b.fetchall()]
    nonces = [nonce(ct) for _, ct in from_workers] + [nonce(ct) for ct in from_backends]
    assert len(nonces) == ROWS + 8 * 500
    assert len(set(nonces)) == len(nonces), "a nonce was used twice"
    # What the workers encrypted decrypts.
    cur.execute("CREATE TEMP TABLE again (id int, v envelope.encrypted_text)")
    psycopg2.extras.execute_values(cur, "INSERT INTO again VALUES %s", from_workers, page_size=5000)
    cur.execute("SELECT count(*) FROM again WHERE envelope.decrypt_field(v, id::text) = 'again ' || id")
    assert cur.fetchone()[0] == ROWS


# ---- (b) least privilege ------------------------------------------------------------

KEY_RELATIONS = ["envelope.key", "envelope.data_key", "envelope.keys"]
CRYPTO_CALLS = [
    "SELECT envelope.encrypt_field('x'::text, 'pk')",
    "SELECT envelope.encrypt_field('x'::bytea, 'pk')",
    "SELECT envelope.encrypt_field('{}'::jsonb, 'pk')",
    "SELECT envelope.decrypt_field(NULL::envelope.encrypted_bytea)",
    "SELECT envelope.decrypt_field(NULL::envelope.encrypted_jsonb)",
    "SELECT envelope.create_key('intruder')",
    "SELECT envelope.rotate_key('pk')",
    "SELECT envelope.destroy_key('pk')",
]


def test_least_privilege(cluster):
    db = "privileges"
    cluster.create_database(db)
    cluster.sql("SELECT envelope.create_key('pk')", dbname=db)
    cluster.sql(f"CREATE SCHEMA app AUTHORIZATION {APP_ROLE}", dbname=db)
    ciphertext = cluster.scalar("SELECT envelope.encrypt_field(%s::text, 'pk', 'c1')::text",
                                (SECRET_NOTE,), dbname=db)
    keys_before = cluster.sql("SELECT * FROM envelope.data_key ORDER BY 1, 2", dbname=db)

    def as_app(query, params=None):
        return cluster.sql(query, params, dbname=db, user=APP_ROLE)

    def app_refused(query):
        must_fail(cluster, query, dbname=db, user=APP_ROLE, sqlstate="42501")

    assert as_app("SELECT rolsuper FROM pg_roles WHERE rolname = current_user") == [(False,)]
    for relation in KEY_RELATIONS:
        app_refused(f"SELECT * FROM {relation}")
    app_refused("SELECT envelope.decrypt_field(NULL::envelope.encrypted_text, 'c1')")
    for call in CRYPTO_CALLS:
        app_refused(call)

    # The types are for everyone: the role stores and reads ciphertext.
    as_app("""CREATE TABLE app.notes (id int PRIMARY KEY, t envelope.encrypted_text,
                                      b envelope.encrypted_bytea, j envelope.encrypted_jsonb)""")
    as_app("INSERT INTO app.notes (id, t) VALUES (1, %s)", (ciphertext,))
    assert as_app("SELECT t::text FROM app.notes WHERE id = 1") == [(ciphertext,)]
    app_refused("SELECT envelope.decrypt_field(t, 'c1') FROM app.notes")

    cluster.sql(f"GRANT EXECUTE ON FUNCTION envelope.decrypt_field(envelope.encrypted_text, text) "
                f"TO {APP_ROLE}", dbname=db)
    # EXECUTE alone: the role may call the function, but holds no key privilege.
    must_fail(cluster, "SELECT envelope.decrypt_field(t, 'c1') FROM app.notes", dbname=db, user=APP_ROLE,
              sqlstate="42501")
    cluster.sql(f"SELECT envelope.grant_key('pk', '{APP_ROLE}', 'decrypt')", dbname=db)
    assert as_app("SELECT envelope.decrypt_field(t, 'c1') FROM app.notes") == [(SECRET_NOTE,)]
    # Decrypting works, but with the wrong context it is still refused.
    must_fail(cluster, "SELECT envelope.decrypt_field(t, 'c2') FROM app.notes", dbname=db,
              user=APP_ROLE, sqlstate="22000")
    # The grant covers exactly that function: key tables and everything else stay closed.
    for relation in KEY_RELATIONS:
        app_refused(f"SELECT * FROM {relation}")
    for call in CRYPTO_CALLS:
        app_refused(call)
    assert cluster.sql("SELECT * FROM envelope.data_key ORDER BY 1, 2", dbname=db) == keys_before


def test_master_key_settings_hidden_from_non_superusers(cluster):
    for setting in ("envelope.master_key_file", "envelope.master_key_command"):
        must_fail(cluster, f"SHOW {setting}", dbname="postgres", user=APP_ROLE, sqlstate="42501")
        must_fail(cluster, "SELECT current_setting(%s)", (setting,), dbname="postgres",
                  user=APP_ROLE, sqlstate="42501")
        assert cluster.sql("SELECT name FROM pg_settings WHERE name = %s", (setting,),
                           user=APP_ROLE) == []
    # A superuser sees where the key lives, never the key.
    path = cluster.scalar("SHOW envelope.master_key_file")
    assert path.endswith("master.key")
    assert cluster.master_key_hex not in path


# ---- (c) no secrets in the server log -----------------------------------------------


def envelope_bytes(ciphertext: str) -> bytes:
    return base64.b64decode(ciphertext[len("env1:"):])


def text_form(raw: bytes) -> str:
    return "env1:" + base64.b64encode(raw).decode()


def tampered(ciphertext: str, offset: int, mask: int = 0x01) -> str:
    """The ciphertext with one bit flipped at a byte offset of the envelope."""
    raw = bytearray(envelope_bytes(ciphertext))
    raw[offset] ^= mask
    return text_form(bytes(raw))


def test_errors_never_log_plaintext_or_key(cluster):
    db = "leaks"
    cluster.create_database(db)
    log_start = cluster.log_position()
    cluster.sql("SELECT envelope.create_key('lk')", dbname=db)
    cluster.sql("CREATE TABLE t (id int, v envelope.encrypted_text, j envelope.encrypted_jsonb)",
                dbname=db)
    cluster.sql("""INSERT INTO t SELECT g, envelope.encrypt_field(%s || g, 'lk', g::text),
                                         envelope.encrypt_field(%s::jsonb, 'lk', g::text)
                     FROM generate_series(1, 2000) g""", (SECRET_NOTE, SECRET_DOC), dbname=db)
    ct = cluster.scalar("SELECT envelope.encrypt_field(%s::text, 'lk', 'ctx')::text", (SECRET_NOTE,),
                        dbname=db)
    ct_short = cluster.scalar("SELECT envelope.encrypt_field(%s::text, 'lk')::text", (SECRET_SSN,),
                              dbname=db)
    body = len(SECRET_NOTE) // 2
    hdr = envelope_header(envelope_bytes(ct))["header_len"]  # 18: format 2, DEK version 1
    failures = [
        # (query, params, SQLSTATE)
        ("SELECT envelope.decrypt_field(%s::envelope.encrypted_text, 'wrong')", (ct,), "22000"),
        ("SELECT envelope.decrypt_field(%s::envelope.encrypted_text)", (ct,), "22000"),
        ("SELECT envelope.decrypt_field(%s::envelope.encrypted_bytea, 'ctx')", (ct,), "22000"),
        ("SELECT envelope.decrypt_field(%s::envelope.encrypted_jsonb, 'ctx')", (ct,), "22000"),
        ("SELECT envelope.decrypt_field(%s::envelope.encrypted_text, 'ctx')", (tampered(ct, hdr + body),),
         "22000"),  # ciphertext body
        ("SELECT envelope.decrypt_field(%s::envelope.encrypted_text, 'ctx')", (tampered(ct, -1),),
         "22000"),  # GCM tag
        ("SELECT envelope.decrypt_field(%s::envelope.encrypted_text, 'ctx')", (tampered(ct, hdr - 6),),
         "22000"),  # nonce
        ("SELECT envelope.decrypt_field(%s::envelope.encrypted_text)", (tampered(ct_short, hdr),), "22000"),
        ("SELECT envelope.decrypt_field(%s::envelope.encrypted_text, 'ctx')", (tampered(ct, hdr - 13, 0x02),),
         "42704"),  # DEK version 3, which does not exist (the LEB128 byte before the nonce)
        ("SELECT %s::envelope.encrypted_text", (SECRET_SSN,), "22P02"),
        ("SELECT %s::envelope.encrypted_text", (SECRET_NOTE,), "22P02"),
        ("SELECT %s::envelope.encrypted_jsonb", (SECRET_DOC,), "22P02"),
        ("SELECT %s::envelope.encrypted_bytea", ("\\x" + SECRET_SSN.encode().hex(),), "22P02"),
        ("SELECT %s::envelope.encrypted_text", ("env1:" + base64.b64encode(SECRET_NOTE.encode()).decode(),),
         "22P02"),
        ("SELECT %s::envelope.encrypted_text", ("env1:" + SECRET_SSN,), "22P02"),
        ("SELECT %s::envelope.encrypted_text", (ct[:-1],), "22P02"),  # not base64
        ("SELECT %s::envelope.encrypted_text", (text_form(envelope_bytes(ct)[:30]),), "22P02"),
        ("SELECT envelope.encrypt_field(%s::text, 'no-such-key')", (SECRET_SSN,), "42704"),
        ("SELECT envelope.encrypt_field(%s::text, NULL)", (SECRET_SSN,), "22004"),
        ("SELECT envelope.encrypt_field(%s::jsonb, 'lk')", (SECRET_DOC,), None),  # succeeds
        ("SELECT envelope.create_key(%s)", (SECRET_NOTE,), "22023"),  # invalid key name
    ]
    for query, params, sqlstate in failures:
        if sqlstate is None:
            cluster.sql(query, params, dbname=db)
            continue
        err = must_fail(cluster, query, params, dbname=db, sqlstate=sqlstate)
        for part in ("message", "detail", "hint"):
            for needle in LEAK_NEEDLES:
                assert needle not in (err[part] or ""), f"{query}: {part} holds plaintext: {err[part]}"

    # An error raised in a parallel worker is logged by the worker too.
    cur = parallel_cursor(cluster, db)
    with pytest.raises(psycopg2.Error) as exc:
        cur.execute("SELECT count(envelope.decrypt_field(v, 'wrong')) FROM t")
    assert pg_error(exc)["sqlstate"] == "22000"
    with pytest.raises(psycopg2.Error) as exc:
        cur.execute("SELECT count(envelope.decrypt_field(j, id::text || 'x')) FROM t")
    assert pg_error(exc)["sqlstate"] == "22000"
    # COPY of plaintext into an encrypted column: pg_envelope's messages stay clean
    # (PostgreSQL's own CONTEXT line quotes the offending input; that line is excluded).
    conn = cluster.connect(db)
    with pytest.raises(psycopg2.Error) as exc, conn.cursor() as copy_cur:
        copy_cur.copy_expert("COPY t (id, v) FROM STDIN", io.StringIO(f"1\t{SECRET_NOTE}\n"))
    assert pg_error(exc)["sqlstate"] == "22P02"

    log = cluster.read_log(log_start)
    # Positive controls: the errors above were logged, with details, and without statements.
    # (log_line_prefix puts the SQLSTATE before the level.)
    assert len(re.findall(r" 22000 ERROR:  ", log)) >= 10
    assert len(re.findall(r" 22000 DETAIL:  ", log)) >= 10
    assert re.search(r" 22P02 ERROR:  .*envelope\.encrypted_text", log)
    assert re.search(r" 22P02 ERROR:  .*envelope\.encrypted_jsonb", log)
    assert "CONTEXT:  parallel worker" in log
    assert "STATEMENT:" not in log
    for line in log.splitlines():
        if "CONTEXT:  COPY t, line 1, column v:" in line:
            continue
        for needle in LEAK_NEEDLES:
            assert needle not in line, f"plaintext in the server log: {line}"
    cluster.assert_log_free_of(key_spellings(cluster.master_key_hex))
