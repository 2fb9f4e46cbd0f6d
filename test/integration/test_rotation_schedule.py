"""Scheduled rotation (issue 13, part 3): envelope.set_rotation_policy(), the view
envelope.rotation_schedule and the pg_envelope scheduler, a background worker in each
database of envelope.scheduler_databases that wakes every envelope.scheduler_naptime.

On a real server with a one-second naptime, these tests check that

1. a policy of a few seconds fires (the key's current version moves, the view shows the
   last and next rotation), keys without a policy are left alone, old values still
   decrypt, and the schedule goes on after a restart of the server;
2. `rewrap` re-wraps the key's DEKs when the KMS reports a new KEK version (a Vault
   Transit emulator whose key is rotated), without a DEK rotation, and only then; a
   failed KEK check is recorded and clears once the KMS answers again; `reencrypt`
   re-encrypts the key's protected column in the background after a rotation, so every
   value ends up on the new DEK version;
3. a rotation that fails (the KMS answers 500) is recorded in last_error and retried,
   and succeeds once the KMS is back; a disabled key is skipped;
4. the errors of set_rotation_policy/clear_rotation_policy (42501, 42704, 22023, 22004),
   the WARNING when no scheduler runs in the database, and the view's privileges.

Run as the postgres OS user:
    runuser -u postgres -- /usr/bin/python3 -m pytest -q -p no:cacheprovider test/integration/test_rotation_schedule.py
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import psycopg2
import pytest

from pgcluster import Cluster, pg_error

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kms_emulators import vault  # noqa: E402

DB = "sched"
ADMIN = "sched_admin"    # admin on the keys, no encrypt/decrypt
APP = "sched_app"        # owns the table; encrypt + decrypt
NOBODY = "sched_nobody"  # EXECUTE on the functions, no key privilege

SETTINGS = {"envelope.scheduler_databases": f"other, {DB}", "envelope.scheduler_naptime": 1,
            "envelope.kek_check_interval": 1,
            "envelope.kms_retry_budget": 300, "envelope.kms_request_timeout": 1000}


def wait_for(what: str, probe, timeout: float = 20.0, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def version(pg: Cluster, key: str) -> int:
    return pg.scalar("SELECT current_version FROM envelope.key WHERE name = %s", [key], dbname=DB)


def schedule(pg: Cluster, key: str) -> dict:
    conn = pg.connect(DB)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT * FROM envelope.rotation_schedule WHERE key_name = %s", [key])
            row = cur.fetchone()
            return dict(zip([d.name for d in cur.description], row)) if row else {}
    finally:
        conn.close()


@pytest.fixture
def pg(cluster_factory) -> Cluster:
    cluster = cluster_factory.create(settings=SETTINGS)
    cluster.create_database(DB)
    cluster.create_database("other")
    for role in (ADMIN, APP, NOBODY):
        cluster.sql(f"CREATE ROLE {role} LOGIN")
    cluster.sql(f"GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA envelope TO {ADMIN}, {APP}, {NOBODY}", dbname=DB)
    cluster.sql(f"GRANT SELECT ON envelope.rotation_schedule TO {ADMIN}", dbname=DB)
    cluster.sql("GRANT EXECUTE ON PROCEDURE envelope.reencrypt(regclass, name, name, text, integer, integer) "
                f"TO {APP}", dbname=DB)
    cluster.sql(f"GRANT CREATE ON SCHEMA public TO {APP}", dbname=DB)
    # The databases exist now: the scheduler's next start finds them at once.
    cluster.restart()
    return cluster


def test_policy_fires_and_survives_restart(pg):
    for k in ("k_fast", "k_still"):
        pg.sql("SELECT envelope.create_key(%s)", [k], dbname=DB)
        pg.sql("SELECT envelope.grant_key(%s, %s, 'encrypt'), envelope.grant_key(%s, %s, 'decrypt')",
               [k, APP, k, APP], dbname=DB)
    pg.sql("CREATE TABLE t (id int PRIMARY KEY, v envelope.encrypted_text)", dbname=DB, user=APP)
    pg.sql("INSERT INTO t SELECT g, envelope.encrypt_field('v' || g, 'k_fast', g::text) FROM generate_series(1, 50) g",
           dbname=DB, user=APP)
    pg.sql("SELECT envelope.grant_key('k_*', %s, 'admin')", [ADMIN], dbname=DB)
    nxt = pg.scalar("SELECT envelope.set_rotation_policy('k_fast', '2 seconds')", dbname=DB, user=ADMIN)
    assert nxt is not None
    row = schedule(pg, "k_fast")
    assert row["last_rotated_at"] is None and row["current_version"] == 1
    assert row["rotate_every"].total_seconds() == 2 and row["set_by"] == ADMIN

    # The worker runs in both databases of the setting, as a background worker.
    workers = pg.sql("SELECT datname FROM pg_stat_activity WHERE backend_type = 'pg_envelope scheduler' ORDER BY 1")
    assert [r[0] for r in workers] == ["other", DB]

    wait_for("the first scheduled rotation", lambda: version(pg, "k_fast") >= 2)
    row = schedule(pg, "k_fast")
    assert row["last_rotated_at"] is not None and row["last_error"] is None
    assert row["next_rotation_at"] > row["last_rotated_at"]
    wait_for("a second rotation", lambda: version(pg, "k_fast") >= 3)
    assert version(pg, "k_still") == 1, "a key without a policy was rotated"
    # Values of the first version still decrypt; new ones use the newest.
    bad = pg.scalar("SELECT count(*) FROM t WHERE envelope.decrypt_field(v, id::text) <> 'v' || id", dbname=DB, user=APP)
    assert bad == 0

    # After a restart the schedule is read from the table and carried on.
    pg.restart()
    before = version(pg, "k_fast")
    wait_for("a rotation after the restart", lambda: version(pg, "k_fast") > before)
    assert pg.scalar("SELECT count(*) FROM envelope.rotation_policy", dbname=DB) == 1

    # Cleared: no more rotations.
    assert pg.scalar("SELECT envelope.clear_rotation_policy('k_fast')", dbname=DB, user=ADMIN) is True
    assert pg.scalar("SELECT envelope.clear_rotation_policy('k_fast')", dbname=DB, user=ADMIN) is False
    settled = version(pg, "k_fast")
    time.sleep(3.5)
    assert version(pg, "k_fast") == settled
    assert schedule(pg, "k_fast") == {}


def vault_kms(pg: Cluster):
    emu = vault.start(keys=("sched-kek",))
    token_file = pg.write_file("vault.token", "emulator-root-token\n")
    pg.sql("SELECT envelope.create_kms('vault', 'vault-transit', %s::jsonb)",
           [json.dumps({"address": emu.url, "token_file": str(token_file)})], dbname=DB)
    return emu


def test_rewrap_and_reencrypt_after_rotation(pg):
    emu = vault_kms(pg)
    try:
        pg.sql("SELECT envelope.create_key('k_vault', 'vault', 'sched-kek')", dbname=DB)
        pg.sql("SELECT envelope.grant_key('k_vault', %s, 'encrypt'), envelope.grant_key('k_vault', %s, 'decrypt')",
               [APP, APP], dbname=DB)
        pg.sql("CREATE TABLE p (id int PRIMARY KEY, email text)", dbname=DB, user=APP)
        pg.sql("SELECT envelope.protect_column('p', 'email', 'k_vault', context_column => 'id')", dbname=DB, user=APP)
        pg.sql("INSERT INTO p SELECT g, 'user' || g || '@example.org' FROM generate_series(1, 300) g", dbname=DB, user=APP)
        # encrypted_text columns: e was re-encrypted once by hand (its context_column is
        # known), n never was (it is reported, not guessed).
        pg.sql("CREATE TABLE e (id int PRIMARY KEY, v envelope.encrypted_text, n envelope.encrypted_text)",
               dbname=DB, user=APP)
        pg.sql("INSERT INTO e SELECT g, envelope.encrypt_field('e' || g, 'k_vault', g::text), "
               "envelope.encrypt_field('n' || g, 'k_vault') FROM generate_series(1, 200) g", dbname=DB, user=APP)
        pg.sql("CALL envelope.reencrypt('e', 'v', context_column => 'id')", dbname=DB, user=APP)
        # The table's owner lets the extension's owner (the scheduler acts as it) update it.
        owner = pg.scalar("SELECT extowner::regrole::text FROM pg_extension WHERE extname = 'pg_envelope'", dbname=DB)
        wrapped = pg.sql("SELECT wrapped FROM envelope.data_key d JOIN envelope.key k USING (key_id) "
                         "WHERE k.name = 'k_vault'", dbname=DB)
        assert all(bytes(w[0]).startswith(b"vault:v1:") for w in wrapped)
        emu.rotate_key("sched-kek")  # the KMS rotated its KEK: version 2
        rewraps = emu.calls("rewrap")
        pg.sql("SELECT envelope.set_rotation_policy('k_vault', '2 seconds', reencrypt => true, rewrap => true)", dbname=DB)

        wait_for("the scheduled rotation", lambda: version(pg, "k_vault") >= 2)
        # The run starts after the rotation commits: its row may not be there yet.
        wait_for("the background re-encryption", lambda: pg.sql(
            "SELECT phase FROM envelope.reencryption_progress WHERE relation = 'p'::regclass", dbname=DB) == [("done",)],
            timeout=30)
        wait_for("the encrypted_text column's re-encryption", lambda: pg.sql(
            "SELECT phase, rows_done FROM envelope.reencryption_progress WHERE relation = 'e'::regclass "
            "AND column_name = 'v' AND started_at > (SELECT last_rotated_at FROM envelope.rotation_schedule "
            "WHERE key_name = 'k_vault')", dbname=DB) == [("done", 200)], timeout=30)
        err = schedule(pg, "k_vault")["last_error"]
        assert err is not None and "never re-encrypted by hand" in err and "column n of relation" in err, err
        pg.sql("SELECT envelope.clear_rotation_policy('k_vault')", dbname=DB)
        current = version(pg, "k_vault")
        # Every DEK re-wrapped under the KEK's version 2 (a rewrap call per DEK version).
        wrapped = pg.sql("SELECT version, wrapped FROM envelope.data_key d JOIN envelope.key k USING (key_id) "
                         "WHERE k.name = 'k_vault' ORDER BY version", dbname=DB)
        assert len(wrapped) == current
        assert all(bytes(w).startswith(b"vault:v2:") for _, w in wrapped), [bytes(w)[:9] for _, w in wrapped]
        assert emu.calls("rewrap") > rewraps
        # Every value on a version the run saw as current, and intact.
        off = pg.scalar("SELECT count(*) FROM p WHERE envelope.key_version_of(email, 'k_vault') < 2", dbname=DB)
        assert off == 0
        rows = dict(pg.sql("SELECT id, email FROM p", dbname=DB, user=APP))
        assert rows == {i: f"user{i}@example.org" for i in range(1, 301)}
        # e.v moved to the new version with its context; e.n stayed where it was.
        assert pg.scalar("SELECT count(*) FROM e WHERE envelope.key_version_of(v, 'k_vault') < 2", dbname=DB) == 0
        assert pg.scalar("SELECT count(*) FROM e WHERE envelope.key_version_of(n, 'k_vault') = 1", dbname=DB) == 200
        bad = pg.scalar("SELECT count(*) FROM e WHERE envelope.decrypt_field(v, id::text) <> 'e' || id "
                        "OR envelope.decrypt_field(n) <> 'n' || id", dbname=DB, user=APP)
        assert bad == 0
        assert owner  # the scheduler acted as this role (a superuser here)
        assert schedule(pg, "k_vault") == {}
    finally:
        emu.stop()


def test_failure_is_recorded_and_retried(pg):
    emu = vault_kms(pg)
    try:
        pg.sql("SELECT envelope.create_key('k_flaky', 'vault', 'sched-kek')", dbname=DB)
        pg.sql("SELECT envelope.create_key('k_off')", dbname=DB)
        emu.inject_http_error(500, count=None)  # every request fails
        pg.sql("SELECT envelope.set_rotation_policy('k_flaky', '2 seconds')", dbname=DB)
        pg.sql("SELECT envelope.set_rotation_policy('k_off', '1 second')", dbname=DB)
        pg.sql("SELECT envelope.disable_key('k_off')", dbname=DB)
        wait_for("the failure to be recorded", lambda: schedule(pg, "k_flaky").get("last_error"))
        row = schedule(pg, "k_flaky")
        assert row["last_rotated_at"] is None and row["last_run_at"] is not None
        assert version(pg, "k_flaky") == 1
        assert "emulator-root-token" not in row["last_error"]
        emu.clear_faults()
        wait_for("the retry to succeed", lambda: version(pg, "k_flaky") >= 2)
        wait_for("last_error to be cleared", lambda: schedule(pg, "k_flaky")["last_error"] is None)
        # A disabled key is not rotated while it is disabled.
        assert version(pg, "k_off") == 1
        assert schedule(pg, "k_off")["last_run_at"] is None
        pg.sql("SELECT envelope.enable_key('k_off')", dbname=DB)
        wait_for("the enabled key's rotation", lambda: version(pg, "k_off") >= 2)
        pg.assert_log_free_of(["emulator-root-token"])
    finally:
        emu.stop()


def test_policy_errors_and_privileges(pg):
    pg.sql("SELECT envelope.create_key('k_err')", dbname=DB)
    pg.sql("SELECT envelope.create_key('k_gone')", dbname=DB)
    pg.sql("SELECT envelope.destroy_key('k_gone')", dbname=DB)

    def err(query, params=(), user=None, dbname=DB):
        with pytest.raises(psycopg2.Error) as e:
            pg.sql(query, list(params), dbname=dbname, user=user)
        return pg_error(e.value)

    assert err("SELECT envelope.set_rotation_policy('k_err', '1 day')", user=NOBODY)["sqlstate"] == "42501"
    assert err("SELECT envelope.clear_rotation_policy('k_err')", user=NOBODY)["sqlstate"] == "42501"
    assert err("SELECT envelope.set_rotation_policy('nope', '1 day')")["sqlstate"] == "42704"
    assert err("SELECT envelope.set_rotation_policy('k_err', '500 milliseconds')")["sqlstate"] == "22023"
    assert err("SELECT envelope.set_rotation_policy('k_err', NULL)")["sqlstate"] == "22004"
    assert err("SELECT envelope.set_rotation_policy('k_gone', '1 day')")["sqlstate"] == "55000"
    # Not PUBLIC: the view, the table, the functions.
    assert err("SELECT * FROM envelope.rotation_schedule", user=NOBODY)["sqlstate"] == "42501"
    assert err("SELECT * FROM envelope.rotation_policy", user=NOBODY)["sqlstate"] == "42501"
    public = pg.scalar("SELECT count(*) FROM pg_proc p, aclexplode(p.proacl) a WHERE a.grantee = 0 "
                       "AND p.proname IN ('set_rotation_policy', 'clear_rotation_policy')", dbname=DB)
    assert public == 0

    # A database the scheduler does not run in: the policy is stored, with a WARNING.
    pg.create_database("unscheduled")
    pg.sql("SELECT envelope.create_key('k_u')", dbname="unscheduled")
    conn = pg.connect("unscheduled")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT envelope.set_rotation_policy('k_u', '1 day')")
        assert any("no rotation scheduler runs in this database" in n for n in conn.notices), conn.notices
    finally:
        conn.close()
    # ...and in a database it runs in, none.
    conn = pg.connect(DB)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT envelope.set_rotation_policy('k_err', '1 day')")
            cur.execute("SELECT next_rotation_at - now() FROM envelope.rotation_schedule WHERE key_name = 'k_err'")
            left = cur.fetchone()[0]
        assert not any("scheduler" in n for n in conn.notices), conn.notices
        assert 86000 < left.total_seconds() <= 86400
    finally:
        conn.close()


def test_rewrap_when_the_kms_reports_a_new_kek_version(pg):
    emu = vault_kms(pg)
    try:
        pg.sql("SELECT envelope.create_key('k_kek', 'vault', 'sched-kek')", dbname=DB)
        pg.sql("SELECT envelope.rotate_key('k_kek')", dbname=DB)
        # A long rotation period: only the KEK check acts here.
        pg.sql("SELECT envelope.set_rotation_policy('k_kek', '1 day', rewrap => true)", dbname=DB)
        wait_for("the first KEK check", lambda: schedule(pg, "k_kek").get("kek_checked_at"))
        row = schedule(pg, "k_kek")
        assert row["kek_version"] == "1" and row["last_rewrapped_at"] is None and row["last_error"] is None
        assert emu.calls("rewrap") == 0

        emu.rotate_key("sched-kek")  # the KMS's KEK is now at version 2
        wait_for("the re-wrap under KEK version 2", lambda: schedule(pg, "k_kek").get("kek_version") == "2")
        row = schedule(pg, "k_kek")
        assert row["last_rewrapped_at"] is not None and row["current_version"] == 2  # no DEK rotation
        wrapped = pg.sql("SELECT wrapped FROM envelope.data_key d JOIN envelope.key k USING (key_id) "
                         "WHERE k.name = 'k_kek'", dbname=DB)
        assert len(wrapped) == 2 and all(bytes(w[0]).startswith(b"vault:v2:") for w in wrapped)
        rewraps, reads = emu.calls("rewrap"), emu.calls("read_key")
        assert rewraps == 2  # one per DEK, once

        # Later checks find nothing behind: no more re-wraps.
        wait_for("more KEK checks", lambda: emu.calls("read_key") >= reads + 2)
        assert emu.calls("rewrap") == rewraps

        # A check the KMS refuses is recorded (and retried), then clears.
        token = pg.write_file("vault.token", "not-the-token\n")
        wait_for("the failed check", lambda: (schedule(pg, "k_kek").get("last_error") or "").startswith(
            "KEK version check: "))
        assert "not-the-token" not in pg.read_log()
        token.write_text("emulator-root-token\n")
        wait_for("the check to clear", lambda: schedule(pg, "k_kek").get("last_error") is None)

        # Turning rewrap off stops the checks.
        pg.sql("SELECT envelope.set_rotation_policy('k_kek', '1 day', rewrap => false)", dbname=DB)
        time.sleep(1.5)
        reads = emu.calls("read_key")
        time.sleep(2.5)
        assert emu.calls("read_key") == reads
    finally:
        emu.stop()


def test_missing_database_is_reported_once_and_picked_up_when_created(cluster_factory):
    """A database of envelope.scheduler_databases that does not exist: one LOG line,
    no worker failing to connect over and over; once it is created, its scheduler
    starts (the launcher looks again every naptime), and a scheduler that is
    terminated is started again."""
    pg = cluster_factory.create(settings={"envelope.scheduler_databases": "not_yet, gone",
                                          "envelope.scheduler_naptime": 1})
    time.sleep(5)  # five launcher rounds
    log = pg.read_log()
    assert 'database "not_yet" of envelope.scheduler_databases does not exist' in log
    assert log.count('database "not_yet" of envelope.scheduler_databases does not exist') == 1, log[-3000:]
    assert 'FATAL:  database "not_yet" does not exist' not in log
    launchers = pg.sql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_envelope scheduler launcher'")
    assert launchers[0][0] == 1
    pg.create_database("not_yet")
    wait_for("the scheduler of the new database", lambda: pg.sql(
        "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_envelope scheduler' AND datname = 'not_yet'"))
    pid = pg.sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_envelope scheduler'")[0][0]
    pg.sql("SELECT pg_terminate_backend(%s)", [pid])
    wait_for("the scheduler started again", lambda: pg.sql(
        "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_envelope scheduler' AND pid <> %s", [pid]),
        timeout=30)
    # A database dropped while its scheduler runs (WITH (FORCE) ends the scheduler's
    # connection): reported once, not reconnected to in a loop.
    pg.create_database("gone")
    wait_for("the scheduler of 'gone'", lambda: pg.sql(
        "SELECT 1 FROM pg_stat_activity WHERE backend_type = 'pg_envelope scheduler' AND datname = 'gone'"))
    mark = pg.log_position()
    pg.sql("DROP DATABASE gone WITH (FORCE)")
    time.sleep(13)  # past the 10-second restart delay
    log = pg.read_log(mark)
    assert log.count('database "gone" of envelope.scheduler_databases does not exist') == 1, log[-3000:]
    assert 'FATAL:  database "gone" does not exist' not in log, log[-3000:]
