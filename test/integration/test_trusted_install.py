"""Installing without superuser (issue 11 part 3): pg_envelope is a trusted extension, so a
role that is not a superuser but owns a database (and so has CREATE on it) can run
CREATE EXTENSION pg_envelope. PostgreSQL runs the script as the bootstrap superuser:
every member object belongs to it, the extension (pg_extension.extowner) to the caller.

Tested as the roles themselves, never as superuser, on one cluster with one database
per test (roles are cluster-wide):

* `dbo`: LOGIN CREATEROLE, owner of its database. Installs, drops and re-installs,
  updates from 0.1.0; administers every key (admin) but decrypts only after granting
  itself decrypt; passes EXECUTE on to application roles; cannot read the key tables,
  see or set the master-key settings, register a KMS, or alter the extension's objects
  and event triggers.
* `outsider`: no grants, can do nothing; a role that is a member of dbo inherits admin.
* `nocreate`: without CREATE on the database, cannot install.
* `squatter`: creates schema "envelope" first; the install refuses it.
"""
from __future__ import annotations

import time

import psycopg2
import pytest

from pgcluster import Cluster, pg_error, quote_ident

DBO = "dbo"
OUTSIDER = "outsider"
APP = "app"
NOCREATE = "nocreate"
SQUATTER = "squatter"
SECRET = "Ines Okafor, 12 Harbour Row"
KEY_TABLES = ("envelope.key", "envelope.data_key", "envelope.kms", "envelope.key_grant",
              "envelope.protected_column")
MASTER_KEY_SETTINGS = ("envelope.master_key_file", "envelope.master_key_command")

# Every member object of the extension that has an owner, and its owner (event triggers included).
MEMBER_OWNERS = r"""
SELECT pg_describe_object(d.classid, d.objid, 0),
       CASE d.classid
         WHEN 'pg_proc'::regclass THEN (SELECT proowner FROM pg_proc WHERE oid = d.objid)
         WHEN 'pg_class'::regclass THEN (SELECT relowner FROM pg_class WHERE oid = d.objid)
         WHEN 'pg_type'::regclass THEN (SELECT typowner FROM pg_type WHERE oid = d.objid)
         WHEN 'pg_event_trigger'::regclass THEN (SELECT evtowner FROM pg_event_trigger WHERE oid = d.objid)
         WHEN 'pg_operator'::regclass THEN (SELECT oprowner FROM pg_operator WHERE oid = d.objid)
         WHEN 'pg_opclass'::regclass THEN (SELECT opcowner FROM pg_opclass WHERE oid = d.objid)
         WHEN 'pg_opfamily'::regclass THEN (SELECT opfowner FROM pg_opfamily WHERE oid = d.objid)
       END::regrole::text
  FROM pg_depend d JOIN pg_extension e ON d.refclassid = 'pg_extension'::regclass AND d.refobjid = e.oid
 WHERE e.extname = 'pg_envelope' AND d.deptype = 'e'
   AND d.classid NOT IN ('pg_cast'::regclass, 'pg_transform'::regclass)  -- objects without an owner
"""

# The privileges held on the extension's functions, procedures, tables and views: one
# row per (object, grantee, grantor, privilege, grantable), roles by name.
MEMBER_PRIVILEGES = r"""
WITH members AS (
  SELECT d.classid, d.objid FROM pg_depend d JOIN pg_extension e
      ON d.refclassid = 'pg_extension'::regclass AND d.refobjid = e.oid
   WHERE e.extname = 'pg_envelope' AND d.deptype = 'e'),
acls AS (
  SELECT p.oid::regprocedure::text AS object, aclexplode(p.proacl) AS a
    FROM pg_proc p JOIN members m ON m.classid = 'pg_proc'::regclass AND m.objid = p.oid
  UNION ALL
  SELECT c.oid::regclass::text, aclexplode(c.relacl)
    FROM pg_class c JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = c.oid)
SELECT object, CASE WHEN (a).grantee = 0 THEN 'PUBLIC' ELSE (a).grantee::regrole::text END,
       (a).grantor::regrole::text, (a).privilege_type, (a).is_grantable
  FROM acls
"""


def denied(conn, query, params=None, sqlstate="42501") -> dict:
    with conn.cursor() as cur, pytest.raises(psycopg2.Error) as e:
        cur.execute(query, params)
    if not conn.autocommit:
        conn.rollback()
    err = pg_error(e)
    assert err["sqlstate"] == sqlstate, (query, err)
    return err


def one(conn, query, params=None):
    with conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchone()[0]


def rows(conn, query, params=None) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchall()


@pytest.fixture(scope="module")
def pg(module_cluster_factory) -> Cluster:
    # The platform superuser's one-time steps: shared_preload_libraries and the master
    # key (the factory's defaults), the audit trail in a table.
    c = module_cluster_factory.create("trusted", settings={"envelope.audit": "table"})
    c.sql(f"CREATE ROLE {DBO} LOGIN CREATEROLE")
    for role in (OUTSIDER, APP, NOCREATE, SQUATTER):
        c.sql(f"CREATE ROLE {role} LOGIN")
    assert c.scalar("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (DBO,)) is False
    return c


@pytest.fixture
def db(pg, request) -> str:
    """A database of dbo's own (made by the platform's superuser, as a platform does)."""
    name = "d_" + request.node.name.removeprefix("test_")[:50]
    pg.sql(f"CREATE DATABASE {quote_ident(name)} OWNER {DBO}")
    return name


@pytest.fixture
def dbo(pg, db):
    """dbo's session in its database, with the extension installed by dbo."""
    conn = pg.connect(db, user=DBO)
    one(conn, "SELECT 1")
    with conn.cursor() as cur:
        cur.execute("CREATE EXTENSION pg_envelope")
    return conn


def test_install_by_database_owner(pg, db):
    # The audit writer of this database is busy while the extension is dropped below: it
    # must never stand in DROP EXTENSION's way (it only waits 200 ms for its table).
    dbo = pg.connect(db, user=DBO)
    assert one(dbo, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user") is False
    with dbo.cursor() as cur:
        cur.execute("CREATE EXTENSION pg_envelope")
    assert rows(dbo, "SELECT extowner::regrole::text, extversion FROM pg_extension "
                     "WHERE extname = 'pg_envelope'") == [(DBO, "0.2.0")]
    owners = rows(dbo, MEMBER_OWNERS)
    kinds = {desc.split(" ")[0] for desc, _ in owners}
    assert {"function", "table", "view", "type", "event"} <= kinds, kinds
    assert len(owners) > 100
    # Every member object, event triggers included, is the bootstrap superuser's.
    assert {owner for _, owner in owners} == {pg.superuser}, [o for o in owners if o[1] != pg.superuser]
    assert rows(dbo, "SELECT evtname, evtowner::regrole::text FROM pg_event_trigger ORDER BY 1") == [
        ("envelope_protected_column_dropped", pg.superuser), ("envelope_protected_ddl_guard", pg.superuser)]

    # dbo uses it, then drops it: the key tables (every wrapped DEK) and the columns of
    # the extension's types go with it, and a re-install starts without a key.
    with dbo.cursor() as cur:
        cur.execute("SELECT envelope.create_key('k')")
        cur.execute("SELECT envelope.grant_key('k', %s, 'encrypt')", (DBO,))
        cur.execute("SELECT envelope.grant_key('k', %s, 'decrypt')", (DBO,))
        cur.execute("CREATE TABLE notes (id int PRIMARY KEY, body envelope.encrypted_text)")
        cur.execute("INSERT INTO notes VALUES (1, envelope.encrypt_field(%s, 'k'))", (SECRET,))
    stored = one(dbo, "SELECT body::text FROM notes")
    assert one(dbo, "SELECT envelope.decrypt_field(body) FROM notes") == SECRET
    denied(dbo, "DROP EXTENSION pg_envelope", sqlstate="2BP01")  # notes.body depends on it
    with dbo.cursor() as cur:
        cur.execute("DROP EXTENSION pg_envelope CASCADE")
    assert rows(dbo, "SELECT attname FROM pg_attribute WHERE attrelid = 'notes'::regclass AND attnum > 0 "
                     "AND NOT attisdropped") == [("id",)]
    assert one(dbo, "SELECT count(*) FROM pg_extension WHERE extname = 'pg_envelope'") == 0
    with dbo.cursor() as cur:
        cur.execute("CREATE EXTENSION pg_envelope")
    assert one(dbo, "SELECT extowner::regrole::text FROM pg_extension WHERE extname = 'pg_envelope'") == DBO
    assert one(dbo, "SELECT count(*) FROM envelope.keys") == 0
    assert one(dbo, "SELECT count(*) FROM envelope.key_grants") == 0
    # The value written before is undecryptable now: its key is gone for good.
    with dbo.cursor() as cur, pytest.raises(psycopg2.Error) as e:
        cur.execute("SELECT envelope.decrypt_field(%s::envelope.encrypted_text)", (stored,))
    assert SECRET not in str(pg_error(e))
    # A new key of the same name is a different key.
    with dbo.cursor() as cur:
        cur.execute("SELECT envelope.create_key('k')")
        cur.execute("SELECT envelope.grant_key('k', %s, 'decrypt')", (DBO,))
        with pytest.raises(psycopg2.Error) as e:
            cur.execute("SELECT envelope.decrypt_field(%s::envelope.encrypted_text)", (stored,))
    assert SECRET not in str(pg_error(e))


def test_owner_cannot_reach_keys_settings_kms_or_objects(pg, dbo):
    for table in KEY_TABLES:
        denied(dbo, f"SELECT * FROM {table}")
    denied(dbo, "INSERT INTO envelope.key_grant (pattern, grantee, privilege, granted_by) "
                "VALUES ('*', 'dbo', 'decrypt', 'dbo')")
    denied(dbo, "DELETE FROM envelope.data_key")
    denied(dbo, "TRUNCATE envelope.key")
    # No grant of its own on them either.
    for table in KEY_TABLES:
        assert one(dbo, "SELECT has_table_privilege(%s, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE')",
                   (table,)) is False, table

    # The master-key settings: not visible, not settable, anywhere.
    for name in MASTER_KEY_SETTINGS:
        denied(dbo, f"SHOW {name}")
        denied(dbo, "SELECT current_setting(%s)", (name,))
        assert one(dbo, "SELECT count(*) FROM pg_settings WHERE name = %s", (name,)) == 0
        # PGC_POSTMASTER when preloaded: 55P02 before the privilege check.
        err = denied(dbo, f"SET {name} = '/tmp/other.key'", sqlstate="55P02")
        assert "/tmp/other.key" not in err["text"]
        denied(dbo, f"ALTER SYSTEM SET {name} = '/tmp/other.key'")
        with dbo.cursor() as cur, pytest.raises(psycopg2.Error):
            cur.execute(f"ALTER DATABASE {quote_ident(dbo.info.dbname)} SET {name} = '/tmp/other.key'")
        with dbo.cursor() as cur, pytest.raises(psycopg2.Error):
            cur.execute(f"ALTER ROLE {DBO} SET {name} = '/tmp/other.key'")
    assert pg.scalar("SELECT count(*) FROM pg_db_role_setting WHERE array_to_string(setconfig, ',') "
                     "LIKE '%%master_key%%'") == 0

    # KMS registration is superuser-only, EXECUTE or not.
    denied(dbo, "SELECT envelope.create_kms('v', 'vault-transit', '{\"address\": \"https://v.example\"}')")
    denied(dbo, "SELECT envelope.alter_kms('local', '{}')")
    denied(dbo, "SELECT envelope.drop_kms('local')")
    denied(dbo, "GRANT EXECUTE ON FUNCTION envelope.create_kms(text, text, jsonb) TO app")
    assert one(dbo, "SELECT count(*) FROM envelope.kms_configs") == pg.scalar(
        "SELECT count(*) FROM envelope.kms", dbname=dbo.info.dbname)

    # The extension's objects are not dbo's: no ALTER, no replacement, no removal.
    denied(dbo, "ALTER FUNCTION envelope.cache_flush() RENAME TO cf")
    denied(dbo, "ALTER FUNCTION envelope.grant_key(text, regrole, text) SECURITY DEFINER")
    denied(dbo, f"ALTER FUNCTION envelope.decrypt_field(envelope.encrypted_text, text) OWNER TO {DBO}")
    denied(dbo, "CREATE OR REPLACE FUNCTION envelope.decrypt_field(v envelope.encrypted_text, c text) "
                "RETURNS text LANGUAGE sql AS $$ SELECT 'replaced' $$")
    denied(dbo, "ALTER TABLE envelope.key ADD COLUMN x int")
    denied(dbo, "ALTER TABLE envelope.key_grant DISABLE TRIGGER ALL")
    denied(dbo, f"ALTER TABLE envelope.key OWNER TO {DBO}")
    denied(dbo, "ALTER VIEW envelope.keys RENAME TO k")
    denied(dbo, "ALTER TYPE envelope.encrypted_text OWNER TO dbo")
    # Taking a member out of the extension needs ownership of the member too.
    denied(dbo, "ALTER EXTENSION pg_envelope DROP FUNCTION envelope.cache_flush()")
    denied(dbo, "ALTER EXTENSION pg_envelope DROP TABLE envelope.key")
    # The install script gives schema "envelope" (which PostgreSQL creates as the caller)
    # to the bootstrap superuser: dbo can neither drop members nor add to the schema.
    assert one(dbo, "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'envelope'") != DBO
    denied(dbo, "DROP FUNCTION envelope.cache_flush()")
    denied(dbo, "DROP TABLE envelope.key")
    denied(dbo, "DROP VIEW envelope.keys")
    # Event triggers: only their owner (a superuser) can change them.
    for trig in ("envelope_protected_ddl_guard", "envelope_protected_column_dropped"):
        denied(dbo, f"ALTER EVENT TRIGGER {trig} DISABLE")
        denied(dbo, f"ALTER EVENT TRIGGER {trig} RENAME TO x")
        denied(dbo, f"ALTER EVENT TRIGGER {trig} OWNER TO {DBO}")
        denied(dbo, f"DROP EVENT TRIGGER {trig}")
    denied(dbo, "CREATE EVENT TRIGGER mine ON ddl_command_start EXECUTE FUNCTION envelope.protected_ddl_guard()")
    denied(dbo, "SET session_replication_role = replica")  # would silence triggers
    assert pg.scalar("SELECT string_agg(evtname || '=' || evtenabled::text, ',' ORDER BY evtname) FROM pg_event_trigger",
                     dbname=dbo.info.dbname) == \
        "envelope_protected_column_dropped=O,envelope_protected_ddl_guard=O"
    assert sorted(r[0] for r in rows(dbo, MEMBER_OWNERS) if r[1] != pg.superuser) == []


def test_owner_administers_keys_and_passes_rights_on(pg, db, dbo):
    # admin on every key, without any grant_key: create, rotate, destroy.
    assert one(dbo, "SELECT count(*) FROM envelope.key_grants") == 0
    assert one(dbo, "SELECT envelope.create_key('tenant_1')") == 1
    assert one(dbo, "SELECT envelope.create_key('scratch')") == 1
    assert one(dbo, "SELECT envelope.rotate_key('tenant_1')") == 2
    one(dbo, "SELECT envelope.destroy_key('scratch') IS NULL")
    assert one(dbo, "SELECT key_state FROM envelope.keys WHERE key_name = 'scratch' LIMIT 1") == "destroyed"

    # admin is not encrypt nor decrypt.
    err = denied(dbo, "SELECT envelope.encrypt_field('x', 'tenant_1')")
    assert err["message"] == 'permission denied for key "tenant_1"'
    with dbo.cursor() as cur:
        cur.execute("SELECT envelope.grant_key('tenant_1', %s, 'encrypt')", (DBO,))
        cur.execute("CREATE TABLE t (id int PRIMARY KEY, v envelope.encrypted_text)")
        cur.execute("INSERT INTO t VALUES (1, envelope.encrypt_field(%s, 'tenant_1', '1'))", (SECRET,))
    DECRYPT = "SELECT envelope.decrypt_field(v, id::text) FROM t WHERE id = 1"
    err = denied(dbo, DECRYPT)
    assert err["detail"] == 'Role "dbo" does not hold the decrypt privilege on key "tenant_1".'
    assert SECRET not in str(err)
    one(dbo, "SELECT envelope.grant_key('tenant_1', %s, 'decrypt')", (DBO,))
    assert one(dbo, DECRYPT) == SECRET

    # Grants to another role, and EXECUTE passed on with the grant option.
    app = pg.connect(db, user=APP)
    with dbo.cursor() as cur:
        cur.execute("GRANT SELECT ON t TO app")
    err = denied(app, DECRYPT)
    assert err["message"].startswith("permission denied for function decrypt_field"), err
    with dbo.cursor() as cur:
        cur.execute("GRANT EXECUTE ON FUNCTION envelope.decrypt_field(envelope.encrypted_text, text), "
                    "envelope.protect_column(regclass, name, text, name, name, boolean, integer, text) TO app")
        cur.execute("GRANT SELECT ON envelope.keys TO app")
    assert rows(pg.connect(db, user=pg.superuser),
                "SELECT grantor::regrole::text FROM pg_proc, aclexplode(proacl) "
                "WHERE oid = 'envelope.decrypt_field(envelope.encrypted_text, text)'::regprocedure "
                "AND grantee = 'app'::regrole") == [(DBO,)]
    denied(app, DECRYPT)  # EXECUTE is the first gate, the key privilege the second
    one(dbo, "SELECT envelope.grant_key('tenant_1', 'app', 'decrypt')")
    assert one(app, DECRYPT) == SECRET
    assert one(app, "SELECT count(*) FROM envelope.keys") >= 1
    denied(app, "SELECT envelope.create_key('tenant_2')")  # app got no EXECUTE on it
    one(dbo, "SELECT envelope.revoke_key('tenant_1', 'app', 'decrypt')")
    denied(app, DECRYPT)

    # protect_column on dbo's own table, and the DDL guard (an event trigger dbo does
    # not own) guards it.
    with dbo.cursor() as cur:
        cur.execute("CREATE TABLE users (id int PRIMARY KEY, email text)")
        cur.execute("INSERT INTO users VALUES (1, 'ines@example.org')")
        cur.execute("SELECT envelope.protect_column('users', 'email', 'tenant_1', context_column => 'id')")
        cur.execute("CALL envelope.seal_rows('users', 'email')")  # the row that was there before
    assert one(dbo, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                    "WHERE attrelid = 'users'::regclass AND attname = 'email'") == "envelope.protected_text"
    assert one(dbo, "SELECT email FROM users") == "ines@example.org"  # dbo holds decrypt
    assert pg.scalar("SELECT email::text FROM users", dbname=db).startswith("penv1:")  # superuser: sealed
    with dbo.cursor() as cur, pytest.raises(psycopg2.Error):
        cur.execute("ALTER TABLE users ALTER COLUMN email TYPE text")
    assert one(dbo, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                    "WHERE attrelid = 'users'::regclass AND attname = 'email'") == "envelope.protected_text"

    # The views and the audit trail are dbo's to read.
    usage = rows(dbo, "SELECT key_name, version, decrypts, denials FROM envelope.key_usage "
                      "WHERE key_name = 'tenant_1' ORDER BY version")
    assert [u[:2] for u in usage] == [("tenant_1", 1), ("tenant_1", 2)]
    assert sum(u[2] for u in usage) >= 2 and sum(u[3] for u in usage) >= 2
    deadline = time.monotonic() + 20
    while True:
        events = rows(dbo, "SELECT event, key_name, current_user_name FROM envelope.audit_log ORDER BY seq")
        if (("grant_key", "tenant_1", DBO) in events and ("decrypt", "tenant_1", APP) in events
                and ("decrypt_denied", "tenant_1", DBO) in events) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert ("grant_key", "tenant_1", DBO) in events, events  # dbo's self-grant is on record
    assert ("decrypt_denied", "tenant_1", DBO) in events, events
    assert ("decrypt", "tenant_1", APP) in events, events
    assert ("create_key", "tenant_1", DBO) in events, events
    # ...and not to rewrite (audit_verify: test_owner_runs_audit_verify).
    denied(dbo, "DELETE FROM envelope.audit_log")
    denied(dbo, "UPDATE envelope.audit_log SET current_user_name = 'nobody'")


def test_outsider_can_do_nothing_and_member_inherits_admin(pg, db, dbo):
    with dbo.cursor() as cur:
        cur.execute("SELECT envelope.create_key('k')")
        cur.execute("SELECT envelope.grant_key('k', %s, 'encrypt')", (DBO,))
        cur.execute("CREATE TABLE t (id int PRIMARY KEY, v envelope.encrypted_text)")
        cur.execute("INSERT INTO t VALUES (1, envelope.encrypt_field(%s, 'k'))", (SECRET,))
        cur.execute("GRANT SELECT ON t TO outsider")
    out = pg.connect(db, user=OUTSIDER)
    for q in ("SELECT envelope.create_key('o')", "SELECT envelope.rotate_key('k')",
              "SELECT envelope.destroy_key('k')", "SELECT envelope.grant_key('k', 'outsider', 'decrypt')",
              "SELECT envelope.revoke_key('k', 'dbo', 'encrypt')", "SELECT envelope.encrypt_field('x', 'k')",
              "SELECT envelope.decrypt_field(v) FROM t", "SELECT envelope.cache_flush()",
              "SELECT envelope.stats_reset()", "SELECT * FROM envelope.keys", "SELECT * FROM envelope.key_grants",
              "SELECT * FROM envelope.key_usage", "SELECT * FROM envelope.audit_log",
              "SELECT * FROM envelope.audit_verify()", "SELECT * FROM envelope.stats",
              "SELECT * FROM envelope.kms_configs",
              "SELECT envelope.protect_column('t', 'id', 'k')",
              "GRANT EXECUTE ON FUNCTION envelope.decrypt_field(envelope.encrypted_text, text) TO outsider",
              "DROP EXTENSION pg_envelope", "ALTER EXTENSION pg_envelope UPDATE",
              *(f"SELECT * FROM {t}" for t in KEY_TABLES)):
        denied(out, q)
    assert SECRET not in str(rows(out, "SELECT v::text FROM t"))
    assert one(dbo, "SELECT count(*) FROM envelope.keys WHERE key_name = 'o'") == 0

    # A role dbo makes and puts in itself holds what dbo holds: admin, not decrypt.
    with dbo.cursor() as cur:
        cur.execute("CREATE ROLE dbo_deputy LOGIN")
        cur.execute(f"GRANT {DBO} TO dbo_deputy")
    deputy = pg.connect(db, user="dbo_deputy")
    assert one(deputy, "SELECT envelope.create_key('deputy_key')") == 1
    assert one(deputy, "SELECT envelope.rotate_key('k')") == 2
    denied(deputy, "SELECT envelope.decrypt_field(v) FROM t")
    one(deputy, "SELECT envelope.grant_key('k', 'dbo_deputy', 'decrypt')")
    assert one(deputy, "SELECT envelope.decrypt_field(v) FROM t") == SECRET
    # Out of dbo, out of admin (and the session sees it at once).
    with dbo.cursor() as cur:
        cur.execute(f"REVOKE {DBO} FROM dbo_deputy")
    denied(deputy, "SELECT envelope.create_key('deputy_key2')")
    with dbo.cursor() as cur:
        cur.execute("SELECT envelope.revoke_key('k', 'dbo_deputy', 'decrypt')")
        cur.execute("DROP ROLE dbo_deputy")


def test_without_create_on_the_database_no_install(pg, db):
    assert pg.scalar("SELECT has_database_privilege(%s, %s, 'CREATE')", (NOCREATE, db)) is False
    conn = pg.connect(db, user=NOCREATE)
    err = denied(conn, "CREATE EXTENSION pg_envelope")
    # The trusted path's check (an untrusted extension says "permission denied to
    # create extension" and asks for a superuser).
    assert err["message"] == f"permission denied for database {db}", err
    assert pg.scalar("SELECT count(*) FROM pg_extension WHERE extname = 'pg_envelope'", dbname=db) == 0
    assert pg.scalar("SELECT count(*) FROM pg_namespace WHERE nspname = 'envelope'", dbname=db) == 0
    # Nor may it drop dbo's extension.
    dbo = pg.connect(db, user=DBO)
    with dbo.cursor() as cur:
        cur.execute("CREATE EXTENSION pg_envelope")
    denied(conn, "DROP EXTENSION pg_envelope")
    denied(conn, "DROP SCHEMA envelope CASCADE")
    denied(conn, "ALTER EXTENSION pg_envelope UPDATE")
    # CREATE on the database is the gate: granted it, the same role installs.
    with dbo.cursor() as cur:
        cur.execute("DROP EXTENSION pg_envelope")
        cur.execute(f"GRANT CREATE ON DATABASE {quote_ident(db)} TO {NOCREATE}")
    # The schema stays (it was never the extension's member), owned by the bootstrap
    # superuser, so dbo cannot drop it; a superuser's empty schema is no squat.
    denied(dbo, "DROP SCHEMA envelope")
    with conn.cursor() as cur:
        cur.execute("CREATE EXTENSION pg_envelope")
    assert one(conn, "SELECT extowner::regrole::text FROM pg_extension WHERE extname = 'pg_envelope'") == NOCREATE


def test_schema_squat_refused_for_a_trusted_install(pg, db):
    dbo = pg.connect(db, user=DBO)
    with dbo.cursor() as cur:
        cur.execute(f"GRANT CREATE ON DATABASE {quote_ident(db)} TO {SQUATTER}")
    sq = pg.connect(db, user=SQUATTER)
    with sq.cursor() as cur:
        cur.execute("CREATE SCHEMA envelope")
        cur.execute("CREATE FUNCTION envelope.encrypt_field(v varchar, k varchar) RETURNS text LANGUAGE sql "
                    "AS $$ SELECT 'captured' $$")
    err = denied(dbo, "CREATE EXTENSION pg_envelope", sqlstate="3F000")
    assert err["message"] == 'schema "envelope" is owned by role "squatter", not by the owner of extension ' \
                             '"pg_envelope"', err
    assert "plaintext" in err["detail"]
    assert one(dbo, "SELECT count(*) FROM pg_extension WHERE extname = 'pg_envelope'") == 0
    # An empty schema of somebody else's: refused as well.
    with sq.cursor() as cur:
        cur.execute("DROP SCHEMA envelope CASCADE")
        cur.execute("CREATE SCHEMA envelope")
    denied(dbo, "CREATE EXTENSION pg_envelope", sqlstate="3F000")
    with sq.cursor() as cur:
        cur.execute("DROP SCHEMA envelope")
    # dbo's own schema holding an object of its own: refused too.
    with dbo.cursor() as cur:
        cur.execute("CREATE SCHEMA envelope")
        cur.execute("CREATE FUNCTION envelope.decrypt_field(v text) RETURNS text LANGUAGE sql AS $$ SELECT v $$")
    err = denied(dbo, "CREATE EXTENSION pg_envelope", sqlstate="3F000")
    assert err["message"] == 'schema "envelope" holds 1 object(s) that do not belong to extension "pg_envelope"'
    with dbo.cursor() as cur:
        cur.execute("DROP SCHEMA envelope CASCADE")
        cur.execute("CREATE EXTENSION pg_envelope")
    assert one(dbo, "SELECT extowner::regrole::text FROM pg_extension WHERE extname = 'pg_envelope'") == DBO


def test_update_from_0_1_0_grants_what_a_fresh_install_grants(pg, db):
    fresh_db = db + "_fresh"
    pg.sql(f"CREATE DATABASE {quote_ident(fresh_db)} OWNER {DBO}")
    fresh = pg.connect(fresh_db, user=DBO)
    with fresh.cursor() as cur:
        cur.execute("CREATE EXTENSION pg_envelope")
    old = pg.connect(db, user=DBO)
    with old.cursor() as cur:
        cur.execute("CREATE EXTENSION pg_envelope VERSION '0.1.0'")
    assert one(old, "SELECT extowner::regrole::text FROM pg_extension WHERE extname = 'pg_envelope'") == DBO
    # 0.1.0 gave its (trusted) installer nothing.
    assert [r for r in rows(old, MEMBER_PRIVILEGES) if r[1] == DBO] == []
    denied(old, "SELECT * FROM envelope.keys")
    with old.cursor() as cur:
        cur.execute("ALTER EXTENSION pg_envelope UPDATE")
    assert one(old, "SELECT extversion FROM pg_extension WHERE extname = 'pg_envelope'") == "0.2.0"
    updated_privs = sorted(rows(old, MEMBER_PRIVILEGES))
    fresh_privs = sorted(rows(fresh, MEMBER_PRIVILEGES))
    dbo_privs = [r for r in fresh_privs if r[1] == DBO]
    assert len(dbo_privs) > 30 and all(r[4] for r in dbo_privs)  # all WITH GRANT OPTION
    assert {r[0] for r in dbo_privs} >= {"envelope.keys", "envelope.audit_log", "envelope.key_usage",
                                         "envelope.audit_verify()", "envelope.protect_column(regclass,name,text,"
                                         "name,name,boolean,integer,text)"}
    assert not any(r[0] in KEY_TABLES for r in dbo_privs)
    assert [r for r in updated_privs if r[1] == DBO] == dbo_privs
    assert updated_privs == fresh_privs
    assert sorted(rows(old, MEMBER_OWNERS)) == sorted(rows(fresh, MEMBER_OWNERS))
    # And it works as in a fresh install: admin, no decrypt, no key tables.
    assert one(old, "SELECT envelope.create_key('k')") == 1
    one(old, "SELECT envelope.grant_key('k', %s, 'encrypt')", (DBO,))
    denied(old, "SELECT envelope.decrypt_field(envelope.encrypt_field('x', 'k'))")
    denied(old, "SELECT * FROM envelope.data_key")
    denied(old, "SELECT envelope.create_kms('v', 'vault-transit', '{\"address\": \"https://v.example\"}')")


def test_owner_runs_audit_verify(pg, dbo):
    one(dbo, "SELECT envelope.create_key('k')")  # a lifecycle record
    deadline = time.monotonic() + 20
    while one(dbo, "SELECT count(*) FROM envelope.audit_log") == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    count = one(dbo, "SELECT count(*) FROM envelope.audit_log")
    assert count >= 1
    assert rows(dbo, "SELECT ok, rows_checked FROM envelope.audit_verify()") == [(True, count)]


def test_owner_cannot_add_objects_to_the_extension_schema(pg, dbo):
    denied(dbo, "CREATE FUNCTION envelope.encrypt_field(v varchar, k varchar) RETURNS text LANGUAGE sql "
                "AS $$ SELECT 'captured' $$")


def test_owner_cannot_rename_the_extension_schema(pg, dbo):
    denied(dbo, "ALTER SCHEMA envelope RENAME TO envelope_real")
