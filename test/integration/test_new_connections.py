"""A new connection whose DEK the shared cache holds decrypts without reading the key
tables (shared key information, src/pg/shared_key_info.hpp), and every key change
still reaches new connections exactly as before: while a change is in progress
(uncommitted or prepared) they read the rows, and once it has committed they refuse a
disabled or destroyed key. The oracle is pg_stat_xact_user_tables: the scans of
envelope.key and envelope.data_key made by the new connection's own transaction."""
from __future__ import annotations

import sys
from pathlib import Path

import psycopg2
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # <repo>/test
from pgcluster import pg_error  # noqa: E402

READ = "SELECT envelope.decrypt_field(v) FROM t"
KEY_TABLE_SCANS = ("SELECT coalesce(sum(coalesce(idx_scan, 0) + coalesce(seq_scan, 0)), 0) "
                   "FROM pg_stat_xact_user_tables WHERE relid IN ('envelope.key'::regclass, "
                   "'envelope.data_key'::regclass, 'envelope.key_grant'::regclass)")


@pytest.fixture
def pg(cluster_factory):
    pg = cluster_factory.create("newconn", settings={"max_prepared_transactions": 4})
    pg.sql("CREATE EXTENSION pg_envelope")
    pg.sql("SELECT envelope.create_key('k1')")
    pg.sql("CREATE TABLE t (v envelope.encrypted_text)")
    pg.sql("INSERT INTO t VALUES (envelope.encrypt_field('secret value', 'k1'))")
    return pg


def new_connection_read(pg, user=None):
    """(plaintext or the error, key-table scans) of a first decrypt in a new connection."""
    conn = pg.connect(autocommit=False, user=user)
    try:
        with conn.cursor() as cur:
            try:
                cur.execute(READ)
                value = cur.fetchone()[0]
            except psycopg2.Error as e:
                return pg_error(e), None
            cur.execute(KEY_TABLE_SCANS)
            return value, int(cur.fetchone()[0])
    finally:
        conn.close()


def test_new_connection_reads_no_key_table(pg):
    pg.sql("SELECT envelope.cache_flush()")  # moves the generation too
    value, scans = new_connection_read(pg)  # reads the rows, fills the shared cache
    assert value == "secret value" and scans >= 2, (value, scans)
    for _ in range(3):
        assert new_connection_read(pg) == ("secret value", 0)


def test_key_changes_reach_new_connections(pg):
    assert new_connection_read(pg)[0] == "secret value"
    assert new_connection_read(pg) == ("secret value", 0)

    # In progress: new connections read the rows (and see the key still active).
    changer = pg.connect(autocommit=False)
    with changer.cursor() as cur:
        cur.execute("SELECT envelope.disable_key('k1')")
    for _ in range(2):
        value, scans = new_connection_read(pg)
        assert value == "secret value" and scans >= 2, (value, scans)
    changer.commit()
    changer.close()
    e, _ = new_connection_read(pg)
    assert e["sqlstate"] == "55000" and "disabled" in e["message"], e

    pg.sql("SELECT envelope.enable_key('k1')")
    value, scans = new_connection_read(pg)
    assert value == "secret value" and scans >= 2, (value, scans)
    assert new_connection_read(pg) == ("secret value", 0)

    # A change rolled back leaves what was shared invalid, never wrong.
    changer = pg.connect(autocommit=False)
    with changer.cursor() as cur:
        cur.execute("SELECT envelope.disable_key('k1')")
    changer.rollback()
    changer.close()
    assert new_connection_read(pg)[0] == "secret value"
    assert new_connection_read(pg) == ("secret value", 0)

    pg.sql("SELECT envelope.destroy_key('k1')")
    e, _ = new_connection_read(pg)
    assert e["sqlstate"] == "55000" and "destroyed" in e["message"], e


def test_prepared_key_change_reaches_new_connections(pg):
    assert new_connection_read(pg)[0] == "secret value"
    assert new_connection_read(pg) == ("secret value", 0)
    conn = pg.connect(autocommit=False)
    with conn.cursor() as cur:
        cur.execute("SELECT envelope.disable_key('k1')")
        cur.execute("PREPARE TRANSACTION 'dis'")
    conn.close()
    value, scans = new_connection_read(pg)  # prepared: read from the rows, still active
    assert value == "secret value" and scans >= 2, (value, scans)
    pg.sql("COMMIT PREPARED 'dis'")
    e, _ = new_connection_read(pg)
    assert e["sqlstate"] == "55000" and "disabled" in e["message"], e


def test_rows_changed_by_hand_reach_new_connections(pg):
    """The key tables' trigger counts as a key change: a state set by hand is seen."""
    assert new_connection_read(pg)[0] == "secret value"
    assert new_connection_read(pg) == ("secret value", 0)
    pg.sql("UPDATE envelope.key SET state = 'disabled' WHERE name = 'k1'")
    e, _ = new_connection_read(pg)
    assert e["sqlstate"] == "55000" and "disabled" in e["message"], e


def test_drop_extension_forgets_the_keys(pg):
    """A value kept across DROP EXTENSION / CREATE EXTENSION finds no key: nothing read
    from the dropped key tables serves a new connection."""
    assert new_connection_read(pg)[0] == "secret value"
    assert new_connection_read(pg) == ("secret value", 0)
    kept = pg.scalar("SELECT v::text FROM t")
    pg.sql("DROP EXTENSION pg_envelope CASCADE")
    pg.sql("CREATE EXTENSION pg_envelope")
    pg.sql("CREATE TABLE t2 (v envelope.encrypted_text)")
    pg.sql("INSERT INTO t2 VALUES (%s::envelope.encrypted_text)", (kept,))
    conn = pg.connect()
    try:
        with conn.cursor() as cur, pytest.raises(psycopg2.Error) as e:
            cur.execute("SELECT envelope.decrypt_field(v) FROM t2")
    finally:
        conn.close()
    assert pg_error(e)["sqlstate"] == "42704", pg_error(e)


def test_grants_and_revokes_reach_new_connections(pg):
    """A role without superuser: its grants are shared too (no read of envelope.key_grant
    in a new connection), and a REVOKE, in progress or committed, is seen as before."""
    for q in ("CREATE ROLE reader LOGIN",
              "GRANT USAGE ON SCHEMA envelope TO reader",
              "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA envelope TO reader",
              "GRANT SELECT ON t TO reader",
              "SELECT envelope.grant_key('k1', 'reader', 'decrypt')"):
        pg.sql(q)
    value, scans = new_connection_read(pg, "reader")
    assert value == "secret value" and scans >= 1, (value, scans)
    assert new_connection_read(pg, "reader") == ("secret value", 0)

    changer = pg.connect(autocommit=False)
    with changer.cursor() as cur:
        cur.execute("SELECT envelope.revoke_key('k1', 'reader', 'decrypt')")
    value, scans = new_connection_read(pg, "reader")  # not committed: still granted, read
    assert value == "secret value" and scans >= 1, (value, scans)
    changer.commit()
    changer.close()
    e, _ = new_connection_read(pg, "reader")
    assert e["sqlstate"] == "42501", e
    e, _ = new_connection_read(pg, "reader")
    assert e["sqlstate"] == "42501", e

    # Another role's grant: shared again, and the revoked role stays refused.
    pg.sql("CREATE ROLE other LOGIN")
    pg.sql("GRANT USAGE ON SCHEMA envelope TO other")
    pg.sql("GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA envelope TO other")
    pg.sql("GRANT SELECT ON t TO other")
    pg.sql("SELECT envelope.grant_key('k*', 'other', 'decrypt')")
    assert new_connection_read(pg, "other")[0] == "secret value"
    assert new_connection_read(pg, "other") == ("secret value", 0)
    e, _ = new_connection_read(pg, "reader")
    assert e["sqlstate"] == "42501", e
