"""The shared-memory DEK cache, with the Vault emulator's call counter as the oracle:
new connections decrypt without a KMS call once any backend has unwrapped the DEK;
a restart empties the cache; cache_flush() and key changes invalidate it at once."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import psycopg2
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # <repo>/test
from kms_emulators import vault  # noqa: E402
from pgcluster import pg_error  # noqa: E402


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
    pg.write_file("vault.token", "revoked-token\n")  # the KMS now answers 403 "invalid token"
    codes = []
    for _ in range(10):
        conn = pg.connect()
        try:
            conn.cursor().execute("SELECT envelope.decrypt_field(v) FROM t LIMIT 1")
        except Exception as e:
            codes.append(getattr(e, "pgcode", None))
        finally:
            conn.close()
    assert codes == ["28000"] * 10  # the same error (authentication failed) for everyone...
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


def clone_and_rotate_both(pg, tmp_path, clone):
    """Restores a dump of "postgres" into a new database `clone`, then rotates k1 in
    both: the same key id and version 2 name a different DEK in each."""
    dump = tmp_path / "db.sql"
    pg.pg_dump("postgres", "--file", dump)
    pg.sql(f"CREATE DATABASE {clone}")
    pg.psql(clone, "--file", dump)
    assert pg.scalar("SELECT envelope.rotate_key('k1')") == 2
    assert pg.scalar("SELECT envelope.rotate_key('k1')", dbname=clone) == 2


def test_databases_never_share_deks(setup, tmp_path):
    """A restored copy in the same cluster has the same key ids; once both rotate,
    version 2 is a different DEK in each. The shared cache must keep them apart:
    values written in each database decrypt there, and a new backend of one database
    never encrypts with the DEK the other database cached."""
    pg, emu = setup
    clone_and_rotate_both(pg, tmp_path, "copy")
    assert pg.scalar("SELECT key_id FROM envelope.key") == pg.scalar("SELECT key_id FROM envelope.key",
                                                                      dbname="copy")
    pg.sql("CREATE TABLE n AS SELECT envelope.encrypt_field('original', 'k1') AS v")        # caches v2 here
    pg.sql("CREATE TABLE n AS SELECT envelope.encrypt_field('copy', 'k1') AS v", dbname="copy")
    # From the shared cache, then from each database's own key tables (the copy
    # first, so it cannot find the DEK the original database put back).
    for flush in (False, True):
        if flush:
            pg.sql("SELECT envelope.cache_flush()")
        for db, want in (("copy", "copy"), ("postgres", "original")):
            conn = pg.connect(db)
            cur = conn.cursor()
            cur.execute("SELECT envelope.decrypt_field(v) FROM n")
            assert cur.fetchone() == (want,), (db, flush)
            conn.close()


def copy_rows(pg, source, table, src_db, dst_db):
    """Copies the rows of `source` (a table or a query) in one database into `table`
    of another (COPY out, COPY in)."""
    import io
    buf = io.StringIO()
    src = pg.connect(src_db)
    src.cursor().copy_expert(f"COPY {source} TO STDOUT", buf)
    src.close()
    buf.seek(0)
    dst = pg.connect(dst_db)
    dst.cursor().copy_expert(f"COPY {table} FROM STDIN", buf)
    dst.close()


def test_reused_key_id_never_meets_the_old_dek(setup, tmp_path):
    """The extension is dropped and created again, and key rows from another
    database are restored: the same key id and version now name another DEK. Neither
    a long-lived backend's own cache nor the shared cache may hand out the old DEK
    (values encrypted with it could never be decrypted again)."""
    pg, emu = setup
    clone_and_rotate_both(pg, tmp_path, "other")
    long_lived = pg.connect()
    cur = long_lived.cursor()
    cur.execute("SELECT envelope.encrypt_field('before', 'k1')")   # v2 of this database, cached twice
    pg.sql("DROP TABLE t")
    pg.sql("DROP EXTENSION pg_envelope CASCADE")
    pg.sql("CREATE EXTENSION pg_envelope")
    # (The built-in 'local' KMS row comes with the extension.)
    copy_rows(pg, "(SELECT * FROM envelope.kms WHERE name <> 'local')", "envelope.kms", "other", "postgres")
    for table in ("envelope.key", "envelope.data_key"):
        copy_rows(pg, table, table, "other", "postgres")
    pg.sql("CREATE TABLE r (who text, v envelope.encrypted_text)")
    # A new backend goes through the shared cache...
    pg.sql("INSERT INTO r SELECT 'new backend', envelope.encrypt_field('from a new backend', 'k1')")
    # ...the long-lived one through its own cache first.
    cur.execute("INSERT INTO r SELECT 'long-lived', envelope.encrypt_field('from the long-lived one', 'k1')")
    long_lived.close()
    pg.sql("SELECT envelope.cache_flush()")   # from here on, only the key rows count
    rows = dict(pg.sql("SELECT who, envelope.decrypt_field(v) FROM r"))
    assert rows == {"new backend": "from a new backend", "long-lived": "from the long-lived one"}


def test_cache_evict_reaches_other_backends_and_spares_other_keys(setup):
    pg, emu = setup
    pg.sql("SELECT envelope.create_key('k2', kms => 'vault', kek => 'pg-envelope')")
    pg.sql("CREATE TABLE t2 AS SELECT envelope.encrypt_field('two', 'k2') AS v")
    other = pg.connect()
    cur = other.cursor()

    def decrypt_both():
        cur.execute("SELECT (SELECT count(*) FROM t WHERE envelope.decrypt_field(v) = 'value ' || id), "
                    "(SELECT envelope.decrypt_field(v) FROM t2)")
        assert cur.fetchone() == (10, "two")

    decrypt_both()
    emu.reset_stats()
    assert pg.scalar("SELECT envelope.cache_evict('k1')") == 1
    decrypt_both()                             # the long-lived backend's own cache is gone too...
    assert emu.calls("decrypt") == 1           # ...for k1 only: k2 came from the cache
    assert decrypt_in_new_connection(pg) == 10
    assert emu.calls("decrypt") == 1
    with pytest.raises(Exception) as e:
        pg.sql("SELECT envelope.cache_evict('nope')")
    assert getattr(e.value, "pgcode", None) == "42704"


def test_disable_key_reaches_other_backends_and_leaves_no_dek_cached(setup):
    pg, emu = setup
    other = pg.connect()
    cur = other.cursor()
    query = "SELECT count(*) FROM t WHERE envelope.decrypt_field(v) = 'value ' || id"
    cur.execute(query)
    assert cur.fetchone()[0] == 10
    assert pg.scalar("SELECT entries FROM envelope.stats") == 1
    pg.sql("SELECT envelope.disable_key('k1')")
    assert pg.scalar("SELECT entries FROM envelope.stats") == 0   # zeroed in shared memory
    for q in (query, "SELECT envelope.encrypt_field('x', 'k1')"):
        with pytest.raises(Exception) as e:
            cur.execute(q)                     # the long-lived backend had the DEK cached
        assert getattr(e.value, "pgcode", None) == "55000"
        assert "disabled" in str(e.value)
    emu.reset_stats()
    pg.sql("SELECT envelope.enable_key('k1')")
    cur.execute(query)
    assert cur.fetchone()[0] == 10
    assert emu.calls("decrypt") == 1           # unwrapped again through the KMS
    other.close()


def test_key_changes_keep_other_keys_cached(setup):
    """Rotating, re-wrapping or destroying one key does not send every other key's
    DEKs back to the KMS."""
    pg, emu = setup
    pg.sql("SELECT envelope.create_key('k2', kms => 'vault', kek => 'pg-envelope')")
    assert decrypt_in_new_connection(pg) == 10
    emu.reset_stats()
    pg.sql("SELECT envelope.rotate_key('k2')")
    pg.sql("SELECT envelope.rewrap_key('k2')")
    pg.sql("SELECT envelope.destroy_key('k2')")
    calls_for_k2 = emu.calls("decrypt")        # rotate_key and rewrap_key check their own wraps
    assert decrypt_in_new_connection(pg) == 10
    assert emu.calls("decrypt") == calls_for_k2


def test_rewrap_keeps_the_dek_cached(setup):
    """rewrap_key() changes every wrapped form but not the DEKs: backends reading the
    new rows still find the DEK in the shared cache."""
    pg, emu = setup
    assert decrypt_in_new_connection(pg) == 10
    assert pg.scalar("SELECT envelope.rewrap_key('k1')") == 1
    emu.reset_stats()
    for _ in range(3):
        assert decrypt_in_new_connection(pg) == 10
    assert emu.calls("decrypt") == 0


def test_capacity_pressure_evicts_without_errors(cluster_factory):
    """More keys than cache entries, read concurrently in rounds: every value
    decrypts, the cache never holds more than its capacity, and the evictions are
    counted."""
    import threading

    n_keys, capacity = 40, 16
    pg, emu = cache_cluster(cluster_factory, **{"envelope.cache_entries": capacity})
    try:
        conn = pg.connect()
        cur = conn.cursor()
        for i in range(n_keys):
            cur.execute("SELECT envelope.create_key(%s, kms => 'vault', kek => 'pg-envelope')", (f"p{i}",))
        cur.execute("CREATE TABLE p AS SELECT i, envelope.encrypt_field('secret ' || i, 'p' || i) AS v "
                    "FROM generate_series(0, %s) i", (n_keys - 1,))
        conn.close()
        pg.sql("SELECT envelope.cache_flush()")
        pg.sql("SELECT envelope.stats_reset()")
        emu.reset_stats()
        errors, peak = [], []

        def worker(seed):
            try:
                for round_ in range(5):
                    c = pg.connect()
                    k = c.cursor()
                    order = "i" if (seed + round_) % 2 == 0 else "i DESC"
                    k.execute(f"SELECT i, envelope.decrypt_field(v) FROM p ORDER BY {order}")
                    rows = k.fetchall()
                    if rows != sorted(((i, f"secret {i}") for i in range(n_keys)), reverse=order != "i"):
                        errors.append(("wrong rows", seed, round_))
                    k.execute("SELECT entries FROM envelope.stats")
                    peak.append(k.fetchone()[0])
                    c.close()
            except Exception as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, errors[:3]
        assert max(peak) <= capacity
        entries, evictions, kms_errors = pg.sql("SELECT entries, evictions, kms_errors FROM envelope.stats")[0]
        assert entries <= capacity
        assert evictions >= n_keys - capacity
        assert kms_errors == 0
        assert emu.calls("decrypt") >= n_keys          # every DEK was unwrapped at least once
        pg.assert_no_crash()
    finally:
        emu.stop()


def test_every_entry_holds_a_dek_and_freed_entries_are_reused(cluster_factory):
    """The cache is fully associative: as many DEKs as entries all stay cached (each
    unwrapped once by concurrent readers, nothing evicted); entries freed by cache_evict
    take new DEKs without evicting any; one DEK more than the entries evicts exactly one."""
    import threading

    capacity = 64
    pg, emu = cache_cluster(cluster_factory, **{"envelope.cache_entries": capacity})
    try:
        pg.sql("DROP TABLE t")
        pg.sql("SELECT envelope.cache_flush()")
        conn = pg.connect()
        cur = conn.cursor()
        n_keys = capacity + 11
        for i in range(n_keys):
            cur.execute("SELECT envelope.create_key(%s, kms => 'vault', kek => 'pg-envelope')", (f"f{i}",))
        cur.execute("CREATE TABLE f AS SELECT i, envelope.encrypt_field('secret ' || i, 'f' || i) AS v "
                    "FROM generate_series(0, %s) i", (n_keys - 1,))
        conn.close()
        pg.sql("SELECT envelope.cache_flush()")
        pg.sql("SELECT envelope.stats_reset()")
        emu.reset_stats()
        errors = []

        def read(first: int, last: int, rounds: int = 3):
            def worker(seed):
                try:
                    for round_ in range(rounds):
                        c = pg.connect()
                        k = c.cursor()
                        k.execute("SELECT i, envelope.decrypt_field(v) FROM f WHERE i BETWEEN %s AND %s "
                                  "ORDER BY md5((i + %s)::text)", (first, last, seed * 7 + round_))
                        got = sorted(k.fetchall())
                        if got != [(i, f"secret {i}") for i in range(first, last + 1)]:
                            errors.append(("wrong rows", seed, round_))
                        c.close()
                except Exception as e:  # reported below
                    errors.append(e)
            threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=120)
            assert not errors, errors[:3]

        def stats():
            return pg.sql("SELECT entries, evictions, kms_errors FROM envelope.stats")[0]

        read(0, capacity - 1)                     # exactly as many DEKs as entries
        assert emu.calls("decrypt") == capacity
        assert stats() == (capacity, 0, 0)
        for i in range(10):                       # free 10 entries
            assert pg.sql("SELECT envelope.cache_evict(%s)", (f"f{i}",))[0][0] == 1
        assert stats()[0] == capacity - 10
        read(capacity, capacity + 9)              # 10 new DEKs take the freed entries
        assert emu.calls("decrypt") == capacity + 10
        assert stats() == (capacity, 0, 0)
        read(10, capacity + 9, rounds=1)          # all cached: no KMS call
        assert emu.calls("decrypt") == capacity + 10
        read(capacity + 10, capacity + 10, rounds=1)  # one more: one eviction
        assert emu.calls("decrypt") == capacity + 11
        assert stats() == (capacity, 1, 0)
        pg.assert_no_crash()
    finally:
        emu.stop()


def test_first_level_cache_follows_the_ttl(cluster_factory):
    """A long-lived backend does not keep a DEK past the shared cache's TTL: its next
    statement after the TTL asks again (one refetch), and while the KMS is down it
    serves only inside max stale, like a new backend would."""
    import time
    pg, emu = cache_cluster(cluster_factory, **{"envelope.cache_ttl": "1s", "envelope.cache_max_stale": "2s",
                                                "envelope.kms_retry_budget": "300ms"})
    try:
        conn = pg.connect()
        cur = conn.cursor()
        query = "SELECT count(*) FROM t WHERE envelope.decrypt_field(v) = 'value ' || id"
        emu.reset_stats()
        cur.execute(query)
        assert cur.fetchone()[0] == 10
        cur.execute(query)
        assert emu.calls("decrypt") == 1
        time.sleep(1.3)
        cur.execute(query)
        assert cur.fetchone()[0] == 10
        assert emu.calls("decrypt") == 2          # refetched after the TTL
        t0 = time.monotonic()
        emu.down()
        time.sleep(1.3)                            # past the TTL, inside max stale
        cur.execute(query)
        assert cur.fetchone()[0] == 10
        assert len([n for n in conn.notices if "past its TTL" in n]) == 1
        time.sleep(max(0.0, 3.4 - (time.monotonic() - t0)))   # past TTL + max stale
        with pytest.raises(Exception) as e:
            cur.execute(query)
        assert getattr(e.value, "pgcode", None) == "58000"
        conn.close()
    finally:
        emu.stop()


def test_kms_latency_statistics(setup):
    pg, emu = setup
    pg.sql("SELECT envelope.stats_reset()")
    emu.inject_latency(200, count=1, op="decrypt")
    assert decrypt_in_new_connection(pg) == 10
    calls, unwraps, errors, avg_ms, max_ms = pg.sql(
        "SELECT kms_calls, kms_unwraps, kms_errors, kms_avg_ms, kms_max_ms FROM envelope.stats")[0]
    assert (calls, unwraps, errors) == (1, 1, 0)
    assert 200 <= max_ms < 5000 and avg_ms == max_ms
    pg.sql("SELECT envelope.cache_flush()")
    emu.down()
    with pytest.raises(Exception):
        decrypt_in_new_connection(pg)
    emu.up()
    assert pg.sql("SELECT kms_calls, kms_errors FROM envelope.stats")[0] == (2, 1)
    pg.sql("SELECT envelope.stats_reset()")
    assert pg.sql("SELECT kms_calls, kms_errors, kms_time_ms, kms_avg_ms FROM envelope.stats")[0] == (0, 0, 0, None)


def test_cached_keys_excluded_from_core_dumps(cluster_factory):
    """The page-aligned entry array is marked MADV_DONTDUMP ("dd" in smaps) in every
    backend, and envelope.stats says so."""
    pg, emu = cache_cluster(cluster_factory, **{"envelope.cache_entries": 4096, "huge_pages": "off"})
    try:
        conn = pg.connect()
        cur = conn.cursor()
        cur.execute("SELECT pg_backend_pid(), core_dump_excluded FROM envelope.stats")
        pid, excluded = cur.fetchone()
        assert excluded is True
        smaps = Path(f"/proc/{pid}/smaps").read_text()
        dd_kb, size_kb = 0, None
        for line in smaps.splitlines():
            if line.startswith("Size:"):
                size_kb = int(line.split()[1])
            elif line.startswith("VmFlags:") and " dd" in (" " + line.split(":", 1)[1]):
                dd_kb += size_kb or 0
        # 4096 entries of over 100 bytes each (identity, times, the masked 32-byte key):
        # over 400 kB, all excluded ([vvar] and [vdso] are a few pages).
        assert dd_kb * 1024 >= 4096 * 100, dd_kb
        conn.close()
    finally:
        emu.stop()


def test_prepared_key_changes_take_effect_at_commit_prepared(cluster_factory):
    """PREPARE TRANSACTION (what Citus does on its workers) of a key change: nothing
    changes for other backends while it is prepared; ROLLBACK PREPARED changes nothing;
    at COMMIT PREPARED (from another session) a backend holding the DEK in both caches
    stops at its next statement, and the shared cache holds none of the key's DEKs."""
    pg = cluster_factory.create("twophase", settings={"max_prepared_transactions": 40})
    pg.sql("CREATE EXTENSION pg_envelope")
    pg.sql("SELECT envelope.create_key('k1')")
    pg.sql("CREATE TABLE t (v envelope.encrypted_text)")
    pg.sql("INSERT INTO t VALUES (envelope.encrypt_field('two-phase', 'k1'))")
    reader = pg.connect()
    read = "SELECT envelope.decrypt_field(v) FROM t"

    def reads():
        with reader.cursor() as cur:
            cur.execute(read)
            return cur.fetchone()[0]

    def fails():
        with reader.cursor() as cur, pytest.raises(psycopg2.Error) as e:
            cur.execute(read)
        return pg_error(e)

    def prepare(statement, gid):
        conn = pg.connect(autocommit=False)
        with conn.cursor() as cur:
            cur.execute(statement)
            cur.execute(f"PREPARE TRANSACTION '{gid}'")
        conn.close()

    assert reads() == "two-phase"
    prepare("SELECT envelope.disable_key('k1')", "dis")
    assert reads() == "two-phase"   # prepared, not committed: the key is still active
    pg.sql("ROLLBACK PREPARED 'dis'")
    assert reads() == "two-phase"
    prepare("SELECT envelope.disable_key('k1')", "dis2")
    assert reads() == "two-phase"
    pg.sql("COMMIT PREPARED 'dis2'")
    e = fails()
    assert e["sqlstate"] == "55000" and "disabled" in e["message"], e
    pg.sql("SELECT envelope.enable_key('k1')")
    assert reads() == "two-phase"
    prepare("SELECT envelope.destroy_key('k1')", "des")
    assert reads() == "two-phase"
    pg.sql("COMMIT PREPARED 'des'")
    e = fails()
    assert e["sqlstate"] == "55000" and "destroyed" in e["message"], e
    checks = {r[0]: r[1] for r in pg.sql("SELECT check_name, ok FROM envelope.verify_destroyed('k1')")}
    assert checks["shared cache"] is True and checks["wrapped DEKs"] is True, checks

    # At most 32 prepared key changes wait at once; the next PREPARE is refused (53400)
    # and rolled back, and the waiting ones still commit.
    for i in range(32):
        pg.sql(f"CREATE ROLE two_{i}")
        prepare(f"SELECT envelope.grant_key('k2_{i}', 'two_{i}', 'decrypt')", f"g{i}")
    conn = pg.connect(autocommit=False)
    with conn.cursor() as cur:
        cur.execute("SELECT envelope.grant_key('k2_x', 'two_0', 'decrypt')")
        with pytest.raises(psycopg2.Error) as e:
            cur.execute("PREPARE TRANSACTION 'over'")
    assert pg_error(e)["sqlstate"] == "53400", pg_error(e)
    conn.rollback()
    for i in range(32):
        pg.sql(f"COMMIT PREPARED 'g{i}'")
    assert pg.scalar("SELECT count(*) FROM pg_prepared_xacts") == 0
    assert pg.scalar("SELECT count(*) FROM envelope.key_grant WHERE pattern LIKE 'k2\\_%'") == 32
    # the next PREPAREs free the slots of the committed ones (no decrypt ran meanwhile):
    # more key changes than slots go through one by one, as on a Citus worker
    for i in range(40):
        prepare(f"SELECT envelope.revoke_key('k2_{i % 32}', 'two_{i % 32}', 'decrypt')", f"after{i}")
        pg.sql(f"COMMIT PREPARED 'after{i}'")
    assert pg.scalar("SELECT count(*) FROM envelope.key_grant WHERE pattern LIKE 'k2\\_%'") == 0


def test_concurrent_key_changes_lose_nothing(cluster_factory):
    """Writers encrypt while keys are rotated, re-wrapped, evicted, disabled and
    enabled, and the cache flushed, all at once (local KMS, small cache). Afterwards,
    with every cache emptied, each value decrypts from the key tables alone to what
    was written: no value was encrypted with a DEK that the key tables do not hold."""
    import threading
    import time

    pg = cluster_factory.create("churn", settings={"envelope.cache_entries": 16, "max_connections": 30})
    pg.sql("CREATE EXTENSION pg_envelope")
    keys = [f"c{i}" for i in range(6)]
    for k in keys:
        pg.sql("SELECT envelope.create_key(%s)", (k,))
    pg.sql("CREATE TABLE w (writer int, n int, k text, v envelope.encrypted_text)")
    stop = time.monotonic() + 6
    errors, counts = [], {}

    def writer(w):
        try:
            conn = pg.connect()
            cur = conn.cursor()
            n = 0
            while time.monotonic() < stop:
                k = keys[(w + n) % len(keys)]
                try:
                    cur.execute("INSERT INTO w SELECT %s, %s, %s, envelope.encrypt_field(%s, %s)",
                                (w, n, k, f"writer {w} value {n}", k))
                    cur.execute("SELECT envelope.decrypt_field(v) FROM w WHERE writer = %s AND n = %s", (w, n))
                    if cur.fetchone()[0] != f"writer {w} value {n}":
                        errors.append(("read back differs", w, n))
                except Exception as e:
                    if getattr(e, "pgcode", None) != "55000" or "disabled" not in str(e):
                        raise          # only "key is disabled" is expected here
                n += 1
            counts[w] = n
            conn.close()
        except Exception as e:  # reported below
            errors.append(e)

    def churner():
        try:
            conn = pg.connect()
            cur = conn.cursor()
            i = 0
            while time.monotonic() < stop:
                k = keys[i % len(keys)]
                step = i % 5
                if step == 0:
                    cur.execute("SELECT envelope.rotate_key(%s)", (k,))
                elif step == 1:
                    cur.execute("SELECT envelope.rewrap_key(%s)", (k,))
                elif step == 2:
                    cur.execute("SELECT envelope.cache_evict(%s)", (k,))
                elif step == 3:
                    cur.execute("SELECT envelope.disable_key(%s)", (k,))
                    cur.execute("SELECT envelope.enable_key(%s)", (k,))
                else:
                    cur.execute("SELECT envelope.cache_flush()")
                i += 1
            counts["churn"] = i
            conn.close()
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(6)]
    threads.append(threading.Thread(target=churner))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors[:3]
    assert counts["churn"] >= 20 and all(counts[w] >= 20 for w in range(6)), counts
    assert pg.scalar("SELECT max(version) FROM envelope.keys") >= 2
    pg.sql("SELECT envelope.cache_flush()")
    rows, good = pg.sql("SELECT count(*), count(*) FILTER (WHERE envelope.decrypt_field(v) = "
                        "'writer ' || writer || ' value ' || n) FROM w")[0]
    assert rows >= 100 and good == rows
    pg.assert_no_crash()


def test_backend_cache_entries_bounds_the_backend_cache(cluster_factory):
    """envelope.backend_cache_entries: with room for every key, a backend that cycles
    through 3 keys asks the shared cache only for its first use of each; with room for
    2, least-recently-used eviction sends every lookup of the key used longest ago back
    to the shared cache (its `hits` counter is the oracle). Superusers only."""
    pg = cluster_factory.create("lru")
    pg.sql("CREATE EXTENSION pg_envelope")
    pg.sql("SELECT envelope.create_key('a'), envelope.create_key('b'), envelope.create_key('c')")
    # 30 rows in the order a, b, c, a, b, c, ...: a scan of them cycles through the keys.
    pg.sql("CREATE TABLE t AS SELECT g AS id, envelope.encrypt_field('v' || g, (ARRAY['a','b','c'])[g % 3 + 1]) AS v "
           "FROM generate_series(0, 29) g")
    conn = pg.connect()
    conn.autocommit = True
    cur = conn.cursor()

    def shared_hits_of_scan():
        cur.execute("SELECT hits FROM envelope.stats")
        before = cur.fetchone()[0]
        cur.execute("SELECT count(*) FROM (SELECT envelope.decrypt_field(v) AS p, id FROM t ORDER BY id) s "
                    "WHERE p = 'v' || id")
        assert cur.fetchone()[0] == 30
        cur.execute("SELECT hits FROM envelope.stats")
        return cur.fetchone()[0] - before

    cur.execute("SHOW envelope.backend_cache_entries")
    assert cur.fetchone()[0] == "4096"
    shared_hits_of_scan()                  # fills this backend's cache
    assert shared_hits_of_scan() == 0      # all three stay
    cur.execute("SET envelope.backend_cache_entries = 2")
    assert shared_hits_of_scan() >= 28     # a, b, c, a, ...: each lookup evicts the next one needed
    cur.execute("RESET envelope.backend_cache_entries")
    shared_hits_of_scan()
    assert shared_hits_of_scan() == 0
    pg.sql("CREATE ROLE lru_user LOGIN")
    with pytest.raises(psycopg2.Error) as e:
        pg.sql("SET envelope.backend_cache_entries = 1", user="lru_user")
    assert pg_error(e)["sqlstate"] == "42501"
