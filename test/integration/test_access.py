"""Per-key privileges: envelope.grant_key / revoke_key (encrypt, decrypt, admin on a key,
a 'prefix*' pattern or '*'), checked on every call for the current user with the
privileges of the roles it belongs to: membership, SET ROLE, SET LOCAL ROLE inside a
transaction (as poolers do), SECURITY DEFINER callers. Tested as the roles
themselves, with long-lived sessions that must see grants, revokes and membership
changes at once, on the primary and on a hot standby. Key administration needs no
superuser. envelope.key_of() names a value's key without decrypting it.
"""
from __future__ import annotations

import psycopg2
import pytest

from pgcluster import Cluster, pg_error

from test_replicas import REPLICATION, make_standby, wait_for_replay

SECRET_A = "tenant A: Ellsworth, 3 Quarry Lane"
SECRET_B = "tenant B: Marchetti, 19 Dock Road"


def denied(conn, query, params=None) -> dict:
    with conn.cursor() as cur, pytest.raises(psycopg2.Error) as e:
        cur.execute(query, params)
    if not conn.autocommit:
        conn.rollback()
    err = pg_error(e)
    assert err["sqlstate"] == "42501", err
    return err


def one(conn, query, params=None):
    with conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchone()[0]


SETUP = [
    "CREATE EXTENSION pg_envelope",
    "CREATE ROLE tenant_a_readers NOLOGIN",
    "CREATE ROLE tenant_b_readers NOLOGIN",
    "CREATE ROLE alice LOGIN IN ROLE tenant_a_readers",
    "CREATE ROLE bob LOGIN",
    "CREATE ROLE app LOGIN NOINHERIT",  # may SET ROLE to the reader roles, inherits nothing
    "GRANT tenant_a_readers, tenant_b_readers TO app",
    "CREATE ROLE key_admin LOGIN",
    # EXECUTE on the functions is the first gate: every role here may call them.
    "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA envelope TO alice, bob, app, key_admin, tenant_a_readers, "
    "tenant_b_readers",
    "REVOKE EXECUTE ON FUNCTION envelope.create_kms(text, text, jsonb), envelope.alter_kms(text, jsonb) "
    "FROM alice, bob, app, key_admin, tenant_a_readers, tenant_b_readers",
    "SELECT envelope.create_key('tenant_a'), envelope.create_key('tenant_b'), envelope.create_key('other')",
    "CREATE TABLE t (id int PRIMARY KEY, k text, v envelope.encrypted_text)",
    "GRANT SELECT, INSERT ON t TO PUBLIC",
]


@pytest.fixture
def pg(cluster_factory) -> Cluster:
    c = cluster_factory.create("access", settings=REPLICATION)
    for q in SETUP:
        c.sql(q)
    c.sql("INSERT INTO t VALUES (1, 'tenant_a', envelope.encrypt_field(%s, 'tenant_a', '1')), "
          "(2, 'tenant_b', envelope.encrypt_field(%s, 'tenant_b', '2')), "
          "(3, 'other', envelope.encrypt_field('other', 'other', '3'))", (SECRET_A, SECRET_B))
    c.sql("SELECT envelope.grant_key('tenant_a', 'tenant_a_readers', 'decrypt')")
    c.sql("SELECT envelope.grant_key('tenant_b', 'tenant_b_readers', 'decrypt')")
    return c


DECRYPT = "SELECT envelope.decrypt_field(v, id::text) FROM t WHERE id = %s"


def test_decrypt_only_the_keys_granted(pg):
    alice = pg.connect(user="alice")
    assert one(alice, DECRYPT, (1,)) == SECRET_A  # through membership of tenant_a_readers
    err = denied(alice, DECRYPT, (2,))
    assert err["message"] == 'permission denied for key "tenant_b"'
    assert err["detail"] == 'Role "alice" does not hold the decrypt privilege on key "tenant_b".'
    assert SECRET_B not in str(err)
    bob = pg.connect(user="bob")
    for i in (1, 2, 3):
        denied(bob, DECRYPT, (i,))
    # Even with RLS or grants misconfigured (bob may read every row), bob gets nothing
    # in plaintext; an encrypt privilege is separate.
    denied(bob, "SELECT envelope.encrypt_field('x', 'tenant_a')")
    pg.sql("SELECT envelope.grant_key('tenant_a', 'bob', 'encrypt')")
    one(bob, "SELECT envelope.encrypt_field('x', 'tenant_a')")  # the same session, at once
    denied(bob, DECRYPT, (1,))


def test_grant_and_revoke_reach_long_lived_sessions_at_once(pg):
    bob = pg.connect(user="bob")
    denied(bob, DECRYPT, (1,))
    pg.sql("SELECT envelope.grant_key('tenant_a', 'bob', 'decrypt')")
    assert one(bob, DECRYPT, (1,)) == SECRET_A
    for _ in range(3):  # the answer is remembered on the cached DEK...
        assert one(bob, DECRYPT, (1,)) == SECRET_A
    pg.sql("SELECT envelope.revoke_key('tenant_a', 'bob', 'decrypt')")
    denied(bob, DECRYPT, (1,))  # ...and forgotten on revoke
    # Membership changes reach it too.
    pg.sql("GRANT tenant_b_readers TO bob")
    assert one(bob, DECRYPT, (2,)) == SECRET_B
    pg.sql("REVOKE tenant_b_readers FROM bob")
    denied(bob, DECRYPT, (2,))
    # A superuser holds every privilege; taking superuser away takes it.
    pg.sql("ALTER ROLE bob SUPERUSER")
    assert one(bob, DECRYPT, (3,)) == "other"
    pg.sql("ALTER ROLE bob NOSUPERUSER")
    denied(bob, DECRYPT, (3,))


def test_set_role_and_set_local_role_as_poolers_do(pg):
    app = pg.connect(user="app", autocommit=False)  # NOINHERIT: its own rights only
    denied(app, DECRYPT, (1,))
    with app.cursor() as cur:
        cur.execute("SET LOCAL ROLE tenant_a_readers")
        cur.execute(DECRYPT, (1,))
        assert cur.fetchone()[0] == SECRET_A
    app.rollback()
    # The next transaction of the same session runs as app again.
    denied(app, DECRYPT, (1,))
    with app.cursor() as cur:
        cur.execute("SET LOCAL ROLE tenant_b_readers")
        cur.execute(DECRYPT, (2,))
        assert cur.fetchone()[0] == SECRET_B
    denied(app, DECRYPT, (1,))  # still inside the tenant_b transaction: rolled back
    app.autocommit = True
    with app.cursor() as cur:
        cur.execute("SET ROLE tenant_a_readers")
        cur.execute(DECRYPT, (1,))
        assert cur.fetchone()[0] == SECRET_A
        cur.execute("RESET ROLE")
    denied(app, DECRYPT, (1,))


def test_security_definer_callers(pg):
    # A function owned by a role that holds decrypt on tenant_a, callable by bob.
    pg.sql("GRANT CREATE ON SCHEMA public TO tenant_a_readers")
    conn = pg.connect(user="alice")
    with conn.cursor() as cur:
        cur.execute("SET ROLE tenant_a_readers")
        cur.execute("CREATE FUNCTION public.read_a(i int) RETURNS text LANGUAGE sql SECURITY DEFINER "
                    "SET search_path = pg_catalog, pg_temp "
                    "AS $$ SELECT envelope.decrypt_field(v, id::text) FROM public.t WHERE id = i $$")
    pg.sql("GRANT EXECUTE ON FUNCTION public.read_a(int) TO bob")
    bob = pg.connect(user="bob")
    assert one(bob, "SELECT public.read_a(1)") == SECRET_A
    err = denied(bob, "SELECT public.read_a(2)")  # the definer holds nothing on tenant_b
    assert 'Role "tenant_a_readers"' in err["detail"]
    # The reverse: a definer without the privilege does not lend the caller's.
    pg.sql("CREATE FUNCTION public.read_as_owner(i int) RETURNS text LANGUAGE sql SECURITY DEFINER "
           "SET search_path = pg_catalog, pg_temp "
           "AS $$ SELECT envelope.decrypt_field(v, id::text) FROM public.t WHERE id = i $$")
    pg.sql("ALTER FUNCTION public.read_as_owner(int) OWNER TO bob")
    pg.sql("GRANT EXECUTE ON FUNCTION public.read_as_owner(int) TO alice")
    alice = pg.connect(user="alice")
    denied(alice, "SELECT public.read_as_owner(1)")


def test_key_administration_without_superuser(pg):
    pg.sql("SELECT envelope.grant_key('tenant_*', 'key_admin', 'admin')")
    adm = pg.connect(user="key_admin")
    with adm.cursor() as cur:
        cur.execute("SELECT envelope.create_key('tenant_c')")
        cur.execute("SELECT envelope.rotate_key('tenant_a')")
        assert cur.fetchone()[0] == 2
        cur.execute("SELECT envelope.rewrap_key('tenant_b')")
        cur.execute("SELECT envelope.disable_key('tenant_c')")
        cur.execute("SELECT envelope.enable_key('tenant_c')")
        cur.execute("SELECT envelope.cache_evict('tenant_a')")
        cur.execute("SELECT envelope.grant_key('tenant_c', 'bob', 'encrypt')")
        cur.execute("SELECT envelope.grant_key('tenant_c*', 'bob', 'decrypt')")
        cur.execute("SELECT envelope.revoke_key('tenant_c*', 'bob', 'decrypt')")
    # admin is not decrypt: separation of duties.
    denied(adm, DECRYPT, (1,))
    denied(adm, "SELECT envelope.encrypt_field('x', 'tenant_a')")
    # Outside its patterns: refused, and a name that names nothing is not repeated.
    err = denied(adm, "SELECT envelope.create_key('other_new')")
    assert err["message"] == "permission denied to administer the keys given" and "other_new" not in str(err)
    for q in ("SELECT envelope.rotate_key('other')", "SELECT envelope.destroy_key('other')",
              "SELECT envelope.grant_key('*', 'key_admin', 'decrypt')",
              "SELECT envelope.grant_key('other', 'bob', 'decrypt')",
              "SELECT envelope.grant_key('tenant*', 'bob', 'decrypt')",
              "SELECT envelope.grant_key('tenant_a', 'key_admin', 'decrypt')"):
        if "tenant_a'" in q:
            continue  # covered by tenant_*: allowed (an admin may grant itself decrypt)
        denied(adm, q)
    # The grants work for their grantee: bob encrypts with tenant_c.
    bob = pg.connect(user="bob")
    one(bob, "SELECT envelope.encrypt_field('x', 'tenant_c')")
    # KMS configuration stays superuser-only.
    with adm.cursor() as cur, pytest.raises(psycopg2.Error) as e:
        cur.execute("SELECT envelope.create_kms('v', 'vault-transit', '{\"address\": \"https://v.example\"}')")
    assert pg_error(e)["sqlstate"] == "42501"
    # destroy, last.
    one(adm, "SELECT envelope.destroy_key('tenant_c') IS NULL")
    assert pg.scalar("SELECT key_state FROM envelope.keys WHERE key_name = 'tenant_c' LIMIT 1") == "destroyed"


def test_pattern_grants_cover_keys_created_later(pg):
    pg.sql("SELECT envelope.grant_key('tenant_*', 'bob', 'decrypt')")
    pg.sql("SELECT envelope.grant_key('tenant_*', 'bob', 'encrypt')")
    bob = pg.connect(user="bob")
    assert one(bob, DECRYPT, (1,)) == SECRET_A
    pg.sql("SELECT envelope.create_key('tenant_z')")
    assert one(bob, "SELECT envelope.decrypt_field(envelope.encrypt_field('zz', 'tenant_z'))") == "zz"
    denied(bob, DECRYPT, (3,))  # 'other' is not tenant_*


def test_invalid_grants(pg):
    for q, state in (("SELECT envelope.grant_key('a b', 'bob', 'decrypt')", "22023"),
                     ("SELECT envelope.grant_key('*x', 'bob', 'decrypt')", "22023"),
                     ("SELECT envelope.grant_key('tenant_a', 'bob', 'read')", "22023"),
                     ("SELECT envelope.grant_key('tenant_a', 'no_such_role', 'decrypt')", "42704")):
        with pytest.raises(psycopg2.Error) as e:
            pg.sql(q)
        assert pg_error(e)["sqlstate"] == state, (q, pg_error(e))
    # Granting twice, revoking what was never granted: no error, nothing changes.
    pg.sql("SELECT envelope.grant_key('tenant_a', 'bob', 'decrypt')")
    pg.sql("SELECT envelope.grant_key('tenant_a', 'bob', 'decrypt')")
    pg.sql("SELECT envelope.revoke_key('other', 'bob', 'decrypt')")
    assert pg.scalar("SELECT count(*) FROM envelope.key_grants WHERE grantee = 'bob'::regrole") == 1


def test_key_of_names_the_key_without_decrypting(pg):
    bob = pg.connect(user="bob")  # holds no key privilege
    with bob.cursor() as cur:
        cur.execute("SELECT id, (envelope.key_of(v)).* FROM t ORDER BY id")
        assert cur.fetchall() == [(1, "tenant_a", 1, "local"), (2, "tenant_b", 1, "local"), (3, "other", 1, "local")]
    pg.sql("SELECT envelope.rotate_key('tenant_a')")
    pg.sql("INSERT INTO t VALUES (4, 'tenant_a', envelope.encrypt_field('v2', 'tenant_a'))")
    assert pg.scalar("SELECT (envelope.key_of(v)).version FROM t WHERE id = 4") == 2


def test_revoke_reaches_a_standby(cluster_factory, pg):
    pg.sql("SELECT envelope.grant_key('tenant_b', 'bob', 'decrypt')")
    standby = make_standby(cluster_factory, pg)
    bob = standby.connect(user="bob")
    assert one(bob, DECRYPT, (2,)) == SECRET_B
    pg.sql("SELECT envelope.revoke_key('tenant_b', 'bob', 'decrypt')")
    wait_for_replay(pg, standby)
    denied(bob, DECRYPT, (2,))
    pg.sql("SELECT envelope.grant_key('tenant_*', 'bob', 'decrypt')")
    wait_for_replay(pg, standby)
    assert one(bob, DECRYPT, (2,)) == SECRET_B
    # Grants cannot be changed on a standby.
    with bob.cursor() as cur, pytest.raises(psycopg2.Error) as e:
        cur.execute("SELECT envelope.grant_key('tenant_a', 'bob', 'decrypt')")
    assert pg_error(e)["sqlstate"] in ("25006", "42501")


def test_drop_role_and_drop_owned_see_key_grants(pg):
    """A role's key grants are privileges like its GRANTs: DROP ROLE refuses while it
    holds some (2BP01), DROP OWNED BY revokes them (at once for its open sessions), and
    no grant is left naming a role that no longer exists."""
    pg.sql("CREATE ROLE carol LOGIN")
    pg.sql("GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA envelope TO carol")
    pg.sql("SELECT envelope.grant_key('tenant_a', 'carol', 'decrypt')")
    pg.sql("SELECT envelope.grant_key('tenant_*', 'carol', 'admin')")
    carol = pg.connect(user="carol")
    assert one(carol, DECRYPT, (1,)) == SECRET_A
    # A grant carol made: it outlives her.
    one(carol, "SELECT envelope.grant_key('tenant_b', 'bob', 'decrypt')::text")
    # PostgreSQL's own privileges are revoked first (as DROP ROLE would demand them to be).
    pg.sql("REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA envelope FROM carol")
    with pytest.raises(psycopg2.Error) as e:
        pg.sql("DROP ROLE carol")
    err = pg_error(e)
    assert err["sqlstate"] == "2BP01", err
    assert 'role "carol" cannot be dropped because it holds pg_envelope key grants' in err["message"]
    assert err["detail"].startswith("2 grants in envelope.key_grant"), err
    assert pg.scalar("SELECT count(*) FROM pg_roles WHERE rolname = 'carol'") == 1
    assert pg.scalar("SELECT count(*) FROM envelope.key_grants WHERE grantee = 'carol'::regrole") == 2
    # DROP ROLE IF EXISTS of a role that is not there, and of several roles where one
    # holds grants: PostgreSQL's notice, and the refusal for the whole statement.
    pg.sql("DROP ROLE IF EXISTS nobody_at_all")
    pg.sql("CREATE ROLE dave")
    with pytest.raises(psycopg2.Error) as e:
        pg.sql("DROP ROLE dave, carol")
    assert pg_error(e)["sqlstate"] == "2BP01"
    assert pg.scalar("SELECT count(*) FROM pg_roles WHERE rolname = 'dave'") == 1
    # DROP OWNED BY revokes them; the open session loses decrypt at its next statement.
    conn = pg.connect(autocommit=False)
    with conn.cursor() as cur:
        cur.execute("DROP OWNED BY carol")
        cur.execute("DROP ROLE carol")
    conn.commit()
    assert pg.scalar("SELECT count(*) FROM pg_roles WHERE rolname = 'carol'") == 0
    assert pg.scalar("SELECT count(*) FROM envelope.key_grant g WHERE NOT EXISTS "
                     "(SELECT 1 FROM pg_roles r WHERE r.oid = g.grantee::oid)") == 0
    # The grant carol made to bob stays, and works.
    bob = pg.connect(user="bob")
    assert one(bob, DECRYPT, (2,)) == SECRET_B
    # DROP OWNED revokes in a transaction that can still roll back.
    pg.sql("CREATE ROLE erin LOGIN")
    pg.sql("SELECT envelope.grant_key('tenant_a', 'erin', 'decrypt')")
    conn = pg.connect(autocommit=False)
    with conn.cursor() as cur:
        cur.execute("DROP OWNED BY erin")
        cur.execute("SELECT count(*) FROM envelope.key_grants WHERE grantee = 'erin'::regrole")
        assert cur.fetchone()[0] == 0
    conn.rollback()
    assert pg.scalar("SELECT count(*) FROM envelope.key_grants WHERE grantee = 'erin'::regrole") == 1


def test_drop_role_in_a_database_without_the_extension_is_not_affected(pg):
    pg.sql("CREATE DATABASE plain_db")
    pg.sql("CREATE ROLE frank")
    other = pg.connect(dbname="plain_db")
    with other.cursor() as cur:
        cur.execute("DROP ROLE frank")
    assert pg.scalar("SELECT count(*) FROM pg_roles WHERE rolname = 'frank'") == 0
