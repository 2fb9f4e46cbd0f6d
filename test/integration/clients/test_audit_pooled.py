"""The audit trail and key usage through pgbouncer in transaction pooling mode (issue 11).

Two login roles decrypt through pgbouncer, their transactions interleaved: every
envelope.audit_log row carries the role that decrypted as session and current user, the
client's application_name and pgbouncer's address. An application role that switches
role per transaction (SET LOCAL ROLE, as poolers' tenants do) on ONE server backend
(a pool of size 1): each transaction's records carry the role it switched to. The key
usage counters add up to what was decrypted.
"""
from __future__ import annotations

import time

import psycopg2
import pytest

from conftest import APP_DB, KEY

ROLES = {"pool_north": "north-secret", "pool_south": "south-secret", "pool_app": "app2-secret"}
SECRET = "MARKER-pooled-Ravensholm"
N_ROWS = 20


@pytest.fixture(scope="module")
def audited(stack):
    c = stack.cluster
    c.sql("ALTER SYSTEM SET envelope.audit = 'table'")
    c.sql("SELECT pg_reload_conf()")
    for role, password in ROLES.items():
        c.sql(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    c.sql("ALTER ROLE pool_app NOINHERIT")
    c.sql("CREATE ROLE pool_tenant_one NOLOGIN")
    c.sql("CREATE ROLE pool_tenant_two NOLOGIN")
    c.sql("GRANT pool_tenant_one, pool_tenant_two TO pool_app")
    grantees = "pool_north, pool_south, pool_app, pool_tenant_one, pool_tenant_two"
    c.sql(f"GRANT EXECUTE ON FUNCTION envelope.decrypt_field(envelope.encrypted_text, text) TO {grantees}",
          dbname=APP_DB)
    for grantee in ("pool_north", "pool_south", "pool_tenant_one", "pool_tenant_two"):
        c.sql("SELECT envelope.grant_key(%s, %s, 'decrypt')", [KEY, grantee], dbname=APP_DB)
    c.sql("CREATE TABLE pooled_audit (id int PRIMARY KEY, v envelope.encrypted_text)", dbname=APP_DB)
    c.sql("INSERT INTO pooled_audit SELECT g, envelope.encrypt_field(%s || g, %s, g::text) "
          "FROM generate_series(1, %s) g", [SECRET, KEY, N_ROWS], dbname=APP_DB)
    c.sql(f"GRANT SELECT ON pooled_audit TO {grantees}", dbname=APP_DB)
    for role, password in ROLES.items():
        stack.add_pgbouncer_user(role, password)
    stack.add_pgbouncer_database("app_one", pool_size=1)
    return stack


def bouncer(stack, user: str, app: str, dbname: str = APP_DB):
    conn = psycopg2.connect(host="127.0.0.1", port=stack.pgbouncer.port, user=user, password=ROLES[user],
                            dbname=dbname, application_name=app, connect_timeout=10)
    conn.autocommit = True
    return conn


def trail(stack, where: str, n: int, timeout: float = 15) -> list[tuple]:
    q = ("SELECT session_user_name, current_user_name, event, key_name, value_count, application_name, "
         f"client_addr, backend_pid FROM envelope.audit_log WHERE {where} ORDER BY seq")
    deadline = time.monotonic() + timeout
    while True:
        got = stack.cluster.sql(q, dbname=APP_DB)
        if len(got) >= n:
            time.sleep(0.4)
            return stack.cluster.sql(q, dbname=APP_DB)
        assert time.monotonic() < deadline, f"only {len(got)} of {n} rows where {where}: {got}"
        time.sleep(0.05)


def decrypt(conn, upto: int) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT count(envelope.decrypt_field(v, id::text)) FROM pooled_audit WHERE id <= %s", (upto,))
        return cur.fetchone()[0]


def decrypts_so_far(stack) -> int:
    return stack.cluster.scalar("SELECT coalesce(sum(decrypts), 0) FROM envelope.key_usage WHERE key_name = %s",
                                [KEY], dbname=APP_DB)


def test_two_roles_through_pgbouncer(audited):
    stack = audited
    before = decrypts_so_far(stack)
    north = bouncer(stack, "pool_north", "north-app")
    south = bouncer(stack, "pool_south", "south-app")
    # Interleaved transactions of the two clients.
    assert decrypt(north, 3) == 3
    assert decrypt(south, 5) == 5
    assert decrypt(north, 7) == 7
    assert decrypt(south, 11) == 11
    got = trail(stack, "current_user_name IN ('pool_north', 'pool_south')", 4)
    assert [r[:7] for r in got] == [
        ("pool_north", "pool_north", "decrypt", KEY, 3, "north-app", "127.0.0.1"),
        ("pool_south", "pool_south", "decrypt", KEY, 5, "south-app", "127.0.0.1"),
        ("pool_north", "pool_north", "decrypt", KEY, 7, "north-app", "127.0.0.1"),
        ("pool_south", "pool_south", "decrypt", KEY, 11, "south-app", "127.0.0.1"),
    ], got
    assert decrypts_so_far(stack) - before == 3 + 5 + 7 + 11
    north.close()
    south.close()


def test_set_local_role_per_transaction_on_one_server_backend(audited):
    stack = audited
    # Two clients of pool_app through the alias whose pool holds ONE server backend.
    c1 = bouncer(stack, "pool_app", "tenant-one-client", dbname="app_one")
    c2 = bouncer(stack, "pool_app", "tenant-two-client", dbname="app_one")
    for conn, role, upto in ((c1, "pool_tenant_one", 2), (c2, "pool_tenant_two", 4), (c1, "pool_tenant_one", 6)):
        conn.autocommit = False
        with conn.cursor() as cur:
            cur.execute(f"SET LOCAL ROLE {role}")
            cur.execute("SELECT count(envelope.decrypt_field(v, id::text)) FROM pooled_audit WHERE id <= %s",
                        (upto,))
            assert cur.fetchone()[0] == upto
        conn.commit()
    # Without SET LOCAL ROLE, pool_app (NOINHERIT) holds nothing: refused and recorded.
    c2.autocommit = True
    with c2.cursor() as cur, pytest.raises(psycopg2.Error) as e:
        cur.execute("SELECT envelope.decrypt_field(v, id::text) FROM pooled_audit WHERE id = 1")
    assert e.value.pgcode == "42501"
    got = trail(stack, "session_user_name = 'pool_app'", 4)
    assert [r[:6] for r in got] == [
        ("pool_app", "pool_tenant_one", "decrypt", KEY, 2, "tenant-one-client"),
        ("pool_app", "pool_tenant_two", "decrypt", KEY, 4, "tenant-two-client"),
        ("pool_app", "pool_tenant_one", "decrypt", KEY, 6, "tenant-one-client"),
        ("pool_app", "pool_app", "decrypt_denied", KEY, 1, "tenant-two-client"),
    ], got
    assert len({r[7] for r in got}) == 1, "expected one server backend behind the pool of size 1"
    dump = str(stack.cluster.sql("SELECT * FROM envelope.audit_log", dbname=APP_DB))
    assert SECRET not in dump
    c1.close()
    c2.close()
