"""Key changes reach every backend of every replica.

A physical hot standby (streaming replication) and a logical subscriber that receives
the key tables: a session that already decrypted with a key stops decrypting as soon
as destroy_key() or disable_key() on the primary has been replayed or applied, inside
an open transaction too, and the replica's shared cache no longer holds the key's DEKs.
Key management on a standby fails with SQLSTATE 25006 and a message that says why.
"""
from __future__ import annotations

import time

import psycopg2
import pytest

from pgcluster import Cluster, pg_error

SECRET = "ward 7, bed 3: Hollowmere"
REPLICATION = {"wal_level": "logical", "max_wal_senders": 8, "max_replication_slots": 8,
               "hot_standby": "on", "max_connections": 40}


def wait_for(predicate, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def make_standby(factory, primary: Cluster) -> Cluster:
    base = factory.base_dir / f"standby-{len(factory.clusters)}"
    base.mkdir(parents=True)
    standby = Cluster("standby", base)
    factory.clusters.append(standby)
    primary.run("pg_basebackup", "--pgdata", standby.data_dir, "--write-recovery-conf", "--checkpoint=fast",
                "--host", primary.socket_dir, "--port", str(primary.port), "--username", primary.superuser)
    key = standby.write_master_key(primary.master_key_hex)
    standby.configure(master_key_file=key, settings=REPLICATION)
    standby.start()
    return standby


def wait_for_replay(primary: Cluster, standby: Cluster) -> None:
    lsn = primary.scalar("SELECT pg_current_wal_insert_lsn()::text")
    wait_for(lambda: standby.scalar("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)), what="replay")


def expect_error(conn, query, params=None) -> dict:
    with conn.cursor() as cur, pytest.raises(psycopg2.Error) as e:
        cur.execute(query, params)
    if not conn.autocommit:
        conn.rollback()
    return pg_error(e)


def cached_entries(cluster: Cluster) -> int:
    return cluster.scalar("SELECT entries FROM envelope.stats")


@pytest.fixture
def primary(cluster_factory) -> Cluster:
    pg = cluster_factory.create("primary", settings=REPLICATION)
    pg.sql("CREATE EXTENSION pg_envelope")
    pg.sql("SELECT envelope.create_key('doomed'), envelope.create_key('paused'), envelope.create_key('kept')")
    pg.sql("CREATE TABLE t (id int PRIMARY KEY, k text, v envelope.encrypted_text)")
    pg.sql("INSERT INTO t SELECT id, k, envelope.encrypt_field(%s || id, k) FROM "
           "(VALUES (1, 'doomed'), (2, 'paused'), (3, 'kept'), (4, 'kept'), (5, 'kept')) AS rows(id, k)",
           (SECRET,))
    return pg


def test_physical_standby_follows_destroy_and_disable(cluster_factory, primary):
    standby = make_standby(cluster_factory, primary)
    since = standby.log_position()
    # Long-lived sessions on the standby, one of them inside a transaction block.
    s1 = standby.connect()
    s2 = standby.connect(autocommit=False)
    with s2.cursor() as cur:
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    for conn in (s1, s2):
        with conn.cursor() as cur:
            cur.execute("SELECT envelope.decrypt_field(v) FROM t WHERE k = 'doomed'")
            assert cur.fetchone()[0] == SECRET + "1"
            cur.execute("SELECT envelope.decrypt_field(v) FROM t WHERE k = 'paused'")
            assert cur.fetchone()[0] == SECRET + "2"
    assert cached_entries(standby) == 2

    primary.sql("SELECT envelope.destroy_key('doomed')")
    primary.sql("SELECT envelope.disable_key('paused')")
    wait_for_replay(primary, standby)
    for conn in (s1, s2):
        err = expect_error(conn, "SELECT envelope.decrypt_field(v) FROM t WHERE k = 'doomed'")
        assert err["sqlstate"] == "55000" and err["message"] == 'key "doomed" has been destroyed', err
        err = expect_error(conn, "SELECT envelope.decrypt_field(v) FROM t WHERE k = 'paused'")
        assert err["sqlstate"] == "55000" and err["message"] == 'key "paused" is disabled', err
    # The other key is untouched; the standby's shared cache dropped the two keys.
    with s1.cursor() as cur:
        cur.execute("SELECT envelope.decrypt_field(v) FROM t WHERE k = 'kept' ORDER BY id")
        assert [r[0] for r in cur.fetchall()] == [SECRET + "3", SECRET + "4", SECRET + "5"]
    assert cached_entries(standby) == 1

    # enable_key on the primary: usable again on the standby, in the same sessions.
    primary.sql("SELECT envelope.enable_key('paused')")
    wait_for_replay(primary, standby)
    with s1.cursor() as cur:
        cur.execute("SELECT envelope.decrypt_field(v) FROM t WHERE k = 'paused'")
        assert cur.fetchone()[0] == SECRET + "2"
    # A new session sees the same.
    err = expect_error(standby.connect(), "SELECT envelope.decrypt_field(v) FROM t WHERE k = 'doomed'")
    assert err["sqlstate"] == "55000"
    # Key management on the standby: refused, with a message that says why.
    for call in ("SELECT envelope.create_key('x')", "SELECT envelope.rotate_key('kept')",
                 "SELECT envelope.rewrap_key('kept')", "SELECT envelope.disable_key('kept')",
                 "SELECT envelope.enable_key('kept')", "SELECT envelope.destroy_key('kept')",
                 "SELECT envelope.create_kms('v', 'vault-transit', '{\"address\": \"https://v.example\"}')",
                 "SELECT envelope.alter_kms('v', '{}')", "SELECT envelope.drop_kms('v')"):
        err = expect_error(s1, call)
        assert err["sqlstate"] == "25006", (call, err)
        assert "on a standby server" in err["message"], (call, err)
        assert err["hint"] == "Run it on the primary server.", err
    standby.assert_log_free_of([SECRET], since=since)


def test_logical_subscriber_follows_destroy_and_disable(cluster_factory, primary):
    primary.sql("CREATE PUBLICATION keys_and_data FOR TABLE envelope.key, envelope.data_key, public.t")
    sub = cluster_factory.create("subscriber", master_key=primary.master_key_hex, settings=REPLICATION)
    sub.sql("CREATE EXTENSION pg_envelope")
    sub.sql("CREATE TABLE t (id int PRIMARY KEY, k text, v envelope.encrypted_text)")
    sub.sql(f"CREATE SUBSCRIPTION keys_sub CONNECTION 'host={primary.socket_dir} port={primary.port} "
            f"user={primary.superuser} dbname=postgres' PUBLICATION keys_and_data")
    wait_for(lambda: sub.scalar("SELECT count(*) FROM t") == 5, what="initial copy")
    wait_for(lambda: sub.scalar("SELECT count(*) FROM pg_subscription_rel WHERE srsubstate <> 'r'") == 0,
             what="tables ready")

    s1 = sub.connect()
    for key, n in (("doomed", 1), ("paused", 2)):
        with s1.cursor() as cur:
            cur.execute("SELECT envelope.decrypt_field(v) FROM t WHERE k = %s", (key,))
            assert cur.fetchone()[0] == SECRET + str(n)
    assert cached_entries(sub) == 2

    primary.sql("SELECT envelope.destroy_key('doomed')")
    primary.sql("SELECT envelope.disable_key('paused')")
    wait_for(lambda: sub.scalar("SELECT count(*) FROM envelope.key WHERE state <> 'active'") == 2,
             what="apply")
    err = expect_error(s1, "SELECT envelope.decrypt_field(v) FROM t WHERE k = 'doomed'")
    assert err["sqlstate"] == "55000" and err["message"] == 'key "doomed" has been destroyed', err
    err = expect_error(s1, "SELECT envelope.decrypt_field(v) FROM t WHERE k = 'paused'")
    assert err["sqlstate"] == "55000" and err["message"] == 'key "paused" is disabled', err
    # The applied change zeroed the subscriber's shared-cache entries of both keys.
    assert cached_entries(sub) == 0
    with s1.cursor() as cur:
        cur.execute("SELECT count(*) FROM t WHERE k = 'kept' AND envelope.decrypt_field(v) LIKE %s", (SECRET + "%",))
        assert cur.fetchone()[0] == 3
    # Rotation applied: new values from the primary decrypt on the subscriber with the
    # new version, in the same session.
    primary.sql("SELECT envelope.rotate_key('kept')")
    primary.sql("INSERT INTO t VALUES (9, 'kept', envelope.encrypt_field('after rotation', 'kept'))")
    wait_for(lambda: sub.scalar("SELECT count(*) FROM t WHERE id = 9") == 1, what="apply")
    with s1.cursor() as cur:
        cur.execute("SELECT envelope.decrypt_field(v) FROM t WHERE id = 9")
        assert cur.fetchone()[0] == "after rotation"
    sub.sql("DROP SUBSCRIPTION keys_sub")


def test_destroy_reaches_an_open_transaction_on_the_primary(primary):
    """A REPEATABLE READ transaction that started before destroy_key() (or
    disable_key()) still sees the key's old rows in its snapshot; it must not decrypt
    with the key once the change has committed: key rows are checked with a fresh
    snapshot."""
    a = primary.connect(autocommit=False)
    for key, n, change, message in (("doomed", 1, "destroy_key", 'key "doomed" has been destroyed'),
                                    ("paused", 2, "disable_key", 'key "paused" is disabled')):
        with a.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cur.execute("SELECT envelope.decrypt_field(v) FROM t WHERE k = %s", (key,))
            assert cur.fetchone()[0] == SECRET + str(n)
        primary.sql(f"SELECT envelope.{change}(%s)", (key,))
        with a.cursor() as cur:
            cur.execute("SELECT state FROM envelope.key WHERE name = %s", (key,))
            assert cur.fetchone()[0] == "active"  # what the transaction's snapshot shows
        err = expect_error(a, "SELECT envelope.decrypt_field(v) FROM t WHERE k = %s", (key,))
        assert err["sqlstate"] == "55000" and err["message"] == message, err
