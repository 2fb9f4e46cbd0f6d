"""The shared-memory DEK cache, with the Vault emulator's call counter as the oracle:
new connections decrypt without a KMS call once any backend has unwrapped the DEK;
a restart empties the cache; cache_flush() and key changes invalidate it at once."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # <repo>/test
from kms_emulators import vault  # noqa: E402


@pytest.fixture
def setup(cluster_factory):
    pg, emu = cache_cluster(cluster_factory)
    yield pg, emu
    emu.stop()


def cache_cluster(cluster_factory, **settings):
    pg = cluster_factory.create("cache", settings=settings)
    emu = vault.start(keys=("pg-envelope",))
    token = pg.write_file("vault.token", "emulator-root-token\n")
    pg.sql("CREATE EXTENSION pg_envelope")
    pg.sql("SELECT envelope.create_kms('vault', 'vault-transit', %s::jsonb)",
           (json.dumps({"address": emu.url, "token_file": str(token)}),))
    pg.sql("SELECT envelope.create_key('k1', kms => 'vault', kek => 'pg-envelope')")
    pg.sql("CREATE TABLE t AS SELECT g AS id, envelope.encrypt_field('value ' || g, 'k1') AS v "
           "FROM generate_series(1, 10) g")
    pg.sql("SELECT envelope.cache_flush()")
    return pg, emu


def decrypt_in_new_connection(pg):
    conn = pg.connect()
    try:
        cur = conn.cursor()
        cur.execute("SELECT count(*) FROM t WHERE envelope.decrypt_field(v) = 'value ' || id")
        return cur.fetchone()[0]
    finally:
        conn.close()


def test_200_new_connections_one_unwrap(setup):
    pg, emu = setup
    pg.sql("SELECT envelope.cache_flush()")
    emu.reset_stats()
    for _ in range(200):
        assert decrypt_in_new_connection(pg) == 10
    assert emu.calls("decrypt") == 1
    stats = pg.sql("SELECT entries, hits >= 199, kms_unwraps >= 1 FROM envelope.stats")[0]
    assert stats == (1, True, True)


def test_restart_empties_cache(setup):
    pg, emu = setup
    assert decrypt_in_new_connection(pg) == 10
    emu.reset_stats()
    assert decrypt_in_new_connection(pg) == 10
    assert emu.calls("decrypt") == 0          # served from shared memory
    pg.restart()
    assert pg.scalar("SELECT entries FROM envelope.stats") == 0
    assert decrypt_in_new_connection(pg) == 10
    assert decrypt_in_new_connection(pg) == 10
    assert emu.calls("decrypt") == 1          # refilled once after the restart


def test_flush_and_key_changes_reach_other_backends(setup):
    pg, emu = setup
    other = pg.connect()
    cur = other.cursor()
    cur.execute("SELECT count(*) FROM t WHERE envelope.decrypt_field(v) = 'value ' || id")
    assert cur.fetchone()[0] == 10
    emu.reset_stats()
    pg.sql("SELECT envelope.cache_flush()")
    # The other, long-lived backend drops its own cache too: its next decrypt unwraps.
    cur.execute("SELECT count(*) FROM t WHERE envelope.decrypt_field(v) = 'value ' || id")
    assert cur.fetchone()[0] == 10
    assert emu.calls("decrypt") == 1
    # destroy_key reaches it before the call returns: no stale DEK keeps serving.
    pg.sql("SELECT envelope.destroy_key('k1')")
    with pytest.raises(Exception) as e:
        cur.execute("SELECT envelope.decrypt_field(v) FROM t LIMIT 1")
    assert getattr(e.value, "pgcode", None) == "55000"


def test_single_flight_50_concurrent_cold_backends(cluster_factory):
    """50 backends miss the same DEK at once while the KMS answers in 300 ms: exactly
    one of them calls the KMS, the others wait for its result."""
    import threading

    pg = cluster_factory.create("flight", settings={"max_connections": 80})
    emu = vault.start(keys=("pg-envelope",))
    try:
        token = pg.write_file("vault.token", "emulator-root-token\n")
        pg.sql("CREATE EXTENSION pg_envelope")
        pg.sql("SELECT envelope.create_kms('vault', 'vault-transit', %s::jsonb)",
               (json.dumps({"address": emu.url, "token_file": str(token)}),))
        pg.sql("SELECT envelope.create_key('k1', kms => 'vault', kek => 'pg-envelope')")
        pg.sql("CREATE TABLE t AS SELECT envelope.encrypt_field('cold', 'k1') AS v")
        pg.sql("SELECT envelope.cache_flush()")
        conns = [pg.connect() for _ in range(50)]
        emu.reset_stats()
        emu.inject_latency(300, count=None, op="decrypt")
        barrier = threading.Barrier(50)
        results, errors = [], []

        def worker(conn):
            try:
                cur = conn.cursor()
                barrier.wait(timeout=30)
                cur.execute("SELECT envelope.decrypt_field(v) FROM t")
                results.append(cur.fetchone()[0])
            except Exception as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(c,)) for c in conns]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not errors, errors[:3]
        assert results == ["cold"] * 50
        assert emu.calls("decrypt") == 1
        assert pg.scalar("SELECT single_flight_waits > 0 FROM envelope.stats")
        for c in conns:
            c.close()
    finally:
        emu.stop()


def test_failed_unwrap_not_hammered(setup):
    """While the KMS fails, concurrent misses of the same DEK do not each retry:
    a failure is remembered for a moment and reported to the others."""
    pg, emu = setup
    pg.sql("SELECT envelope.cache_flush()")
    emu.reset_stats()
    pg.write_file("vault.token", "revoked-token\n")  # the KMS now answers 403
    codes = []
    for _ in range(10):
        conn = pg.connect()
        try:
            conn.cursor().execute("SELECT envelope.decrypt_field(v) FROM t LIMIT 1")
        except Exception as e:
            codes.append(getattr(e, "pgcode", None))
        finally:
            conn.close()
    assert codes == ["42501"] * 10  # the same error for everyone...
    assert 1 <= emu.rejected("decrypt") + emu.calls("decrypt") < 10  # ...but not 10 KMS calls


def test_ttl_expiry_one_refetch(cluster_factory):
    import time
    pg, emu = cache_cluster(cluster_factory, **{"envelope.cache_ttl": "1s"})
    try:
        emu.reset_stats()
        assert decrypt_in_new_connection(pg) == 10
        assert decrypt_in_new_connection(pg) == 10
        assert emu.calls("decrypt") == 1
        time.sleep(1.3)
        for _ in range(5):
            assert decrypt_in_new_connection(pg) == 10
        assert emu.calls("decrypt") == 2   # one refetch after the TTL, shared by all
    finally:
        emu.stop()


def test_kms_down_serves_within_max_stale_then_fails(cluster_factory):
    import time
    pg, emu = cache_cluster(cluster_factory, **{"envelope.cache_ttl": "1s", "envelope.cache_max_stale": "3s",
                                                "envelope.kms_retry_budget": "300ms"})
    try:
        t0 = time.monotonic()
        assert decrypt_in_new_connection(pg) == 10    # cached at t0
        emu.down()
        time.sleep(1.3)                                # past the TTL, inside max stale
        conn = pg.connect()
        cur = conn.cursor()
        cur.execute("SELECT count(*) FROM t WHERE envelope.decrypt_field(v) = 'value ' || id")
        assert cur.fetchone()[0] == 10
        warnings = [n for n in conn.notices if "past its TTL" in n]
        assert len(warnings) == 1, conn.notices      # once, not per row
        conn.close()
        for _ in range(3):                             # other new backends keep working too
            assert decrypt_in_new_connection(pg) == 10
        time.sleep(max(0.0, 4.3 - (time.monotonic() - t0)))  # past TTL + max stale
        with pytest.raises(Exception) as e:
            decrypt_in_new_connection(pg)
        assert getattr(e.value, "pgcode", None) == "58000"
        emu.up()
        pg.sql("SELECT envelope.cache_flush()")
        assert decrypt_in_new_connection(pg) == 10
    finally:
        emu.stop()


def test_databases_never_share_deks(setup, tmp_path):
    """A restored copy in the same cluster has the same key ids; once both rotate,
    version 2 is a different DEK in each. The shared cache must keep them apart:
    values written in each database decrypt there."""
    pg, emu = setup
    dump = tmp_path / "db.sql"
    pg.pg_dump("postgres", "--file", dump)
    pg.sql("CREATE DATABASE copy")
    pg.psql("copy", "--file", dump)
    assert pg.scalar("SELECT envelope.rotate_key('k1')") == 2
    assert pg.scalar("SELECT envelope.rotate_key('k1')", dbname="copy") == 2
    pg.sql("CREATE TABLE n AS SELECT envelope.encrypt_field('original', 'k1') AS v")        # caches v2 here
    pg.sql("CREATE TABLE n AS SELECT envelope.encrypt_field('copy', 'k1') AS v", dbname="copy")
    pg.sql("SELECT envelope.cache_flush()")  # decrypt with each database's own DEK from its key tables
    for db, want in (("postgres", "original"), ("copy", "copy")):
        conn = pg.connect(db)
        cur = conn.cursor()
        cur.execute("SELECT envelope.decrypt_field(v) FROM n")
        assert cur.fetchone() == (want,)
        conn.close()


def test_prepare_refused_after_key_change(cluster_factory):
    pg = cluster_factory.create("twophase", settings={"max_prepared_transactions": 2})
    pg.sql("CREATE EXTENSION pg_envelope")
    pg.sql("SELECT envelope.create_key('k1')")
    conn = pg.connect(autocommit=False)
    cur = conn.cursor()
    cur.execute("SELECT envelope.rotate_key('k1')")
    with pytest.raises(Exception) as e:
        cur.execute("PREPARE TRANSACTION 'rot'")
    assert getattr(e.value, "pgcode", None) == "0A000"
    conn.rollback()
    assert pg.scalar("SELECT count(*) FROM pg_prepared_xacts") == 0
    assert pg.scalar("SELECT max(version) FROM envelope.keys WHERE key_name = 'k1'") == 1
