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
    pg = cluster_factory.create("cache")
    emu = vault.start(keys=("pg-envelope",))
    token = pg.write_file("vault.token", "emulator-root-token\n")
    pg.sql("CREATE EXTENSION pg_envelope")
    pg.sql("SELECT envelope.create_kms('vault', 'vault-transit', %s::jsonb)",
           (json.dumps({"address": emu.url, "token_file": str(token)}),))
    pg.sql("SELECT envelope.create_key('k1', kms => 'vault', kek => 'pg-envelope')")
    pg.sql("CREATE TABLE t AS SELECT g AS id, envelope.encrypt_field('value ' || g, 'k1') AS v "
           "FROM generate_series(1, 10) g")
    yield pg, emu
    emu.stop()


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
