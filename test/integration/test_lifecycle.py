"""Key lifecycle (issue 13, part 2): background re-encryption, retirement of unreferenced
DEK versions, crypto-shredding and its verification.

- envelope.start_reencryption(tbl, col, context_column, key, batch_blocks, pause_ms): the
  run of CALL envelope.reencrypt() in a background worker (backend_type 'pg_envelope
  reencrypt') that outlives the session, as the caller's current role; the caller checks
  what it can first (42703, 42809, 0A000, 42501, 55006, 53400).
- envelope.cancel_reencryption(tbl, col): stops the column's run (owners only); the
  progress view says 'interrupted' with `error` ('cancelled' or the worker's error); a new
  start resumes.
- envelope.retire_unreferenced_versions(key): deletes the wrapped DEK of every version that
  is not current and that no value references (a strict key_columns scan as the caller),
  purges the cached copies at commit.
- envelope.destroy_key(key): one NOTICE per column holding values of the key.
- envelope.verify_destroyed(key): 'key destroyed', 'wrapped DEKs', 'old row versions',
  'table rewritten', 'shared cache'; all ok after VACUUM FULL envelope.data_key; on a
  standby too.

Most tests share one cluster (one database each); kill -9, the standby and the crash
found by these tests get their own. Tables belong to an ordinary role (OWNER) holding
`encrypt` only; the application (APP) holds encrypt + decrypt and checks the plaintexts
against a Python model.

Run as the postgres OS user:
    runuser -u postgres -- /usr/bin/python3 -m pytest -q -p no:cacheprovider test/integration/test_lifecycle.py
"""

from __future__ import annotations

import os
import random
import re
import signal
import threading
import time
from pathlib import Path
from typing import Callable

import psycopg2
import psycopg2.extras
import pytest

from pgcluster import Cluster, pg_error

OWNER = "lc_owner"      # owns the tables; encrypt on the keys, no decrypt
APP = "lc_app"          # the application: DML, encrypt + decrypt
UPDATER = "lc_upd"      # SELECT + UPDATE on the tables, no key privilege
OTHER = "lc_other"      # no privilege on the tables, no key
KEYADM = "lc_keyadm"    # admin on the retirement test's key
MEMBER = "lc_member"    # member of UPDATER (SET ROLE)
ROLES = (OWNER, APP, UPDATER, OTHER, KEYADM, MEMBER)

REENCRYPT_SIG = "regclass, name, name, text, integer, integer"
WORKER_TYPE = "pg_envelope reencrypt"
CLUSTER_SETTINGS = {"max_connections": 60, "max_worker_processes": 6, "synchronous_commit": "on"}
REPLICATION = {"wal_level": "replica", "max_wal_senders": 4, "hot_standby": "on", "max_connections": 40}


# ---- helpers ------------------------------------------------------------------------

def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(interval)


def dict_rows(conn, query: str, params=None) -> list[dict]:
    with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute(query, params)
        return [dict(r) for r in cur.fetchall()]


def one(conn, query: str, params=None):
    with conn.cursor() as cur:
        cur.execute(query, params)
        rows = cur.fetchall()
    assert len(rows) == 1 and len(rows[0]) == 1, rows
    return rows[0][0]


def run(conn, query: str, params=None) -> None:
    """A statement without a result (CHECKPOINT, VACUUM, CALL)."""
    with conn.cursor() as cur:
        cur.execute(query, params)


def expect_error(conn, sqlstate: str, query: str, params=None) -> dict:
    with conn.cursor() as cur, pytest.raises(psycopg2.Error) as exc:
        cur.execute(query, params)
    if not conn.autocommit:
        conn.rollback()
    err = pg_error(exc)
    assert err["sqlstate"] == sqlstate, (query, err)
    return err


def progress(conn, table: str, col: str) -> dict | None:
    """The column's row of envelope.reencryption_progress, with next_block (superuser)."""
    rows = dict_rows(conn, "SELECT v.*, r.next_block FROM envelope.reencryption_progress v "
                           "JOIN envelope.reencryption r ON r.tbl = v.relation AND r.col = v.column_name "
                           "WHERE v.relation = %s::regclass AND v.column_name = %s", [table, col])
    assert len(rows) <= 1, rows
    return rows[0] if rows else None


def worker_alive(_conn, pid: int) -> bool:
    """Whether the process exists (start_reencryption returns once it is forked, before
    it shows in pg_stat_activity or registers its run)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def wait_done(conn, table: str, col: str, pid: int, timeout: float = 60) -> dict | None:
    """Waits for the worker to exit; its column's progress then."""
    wait_until(lambda: not worker_alive(conn, pid), timeout, f"worker {pid} to exit", interval=0.05)
    return progress(conn, table, col)


def wait_registered(conn, table: str, col: str, pid: int, timeout: float = 30) -> dict:
    """Waits until the worker runs the column's run (its PID in the progress, running)."""
    seen: list[dict | None] = []

    def ok() -> bool:
        seen.append(progress(conn, table, col))
        return seen[-1] is not None and seen[-1]["pid"] == pid and seen[-1]["phase"] == "running"
    wait_until(ok, timeout, f"worker {pid} to run {table}.{col} (last: {seen[-1:] if seen else None})")
    return seen[-1]


def wait_phase(conn, table: str, col: str, phases: set[str], timeout: float = 60) -> dict:
    seen: list[dict | None] = []

    def reached() -> bool:
        seen.append(progress(conn, table, col))
        return seen[-1] is not None and seen[-1]["phase"] in phases
    wait_until(reached, timeout, f"{table}.{col} to reach {phases} (last: {seen[-1:] if seen else None})",
               interval=0.05)
    return seen[-1]


def start(conn, table: str, col: str, context: str | None = None, **kw) -> int:
    args = ", ".join(f"{k} => %s" for k in kw)
    sql = "SELECT envelope.start_reencryption(%s, %s, context_column => %s" + (", " + args if args else "") + ")"
    return one(conn, sql, [table, col, context, *kw.values()])


def key_columns(conn, key: str) -> dict[tuple[str, str], dict[int, int]]:
    out: dict[tuple[str, str], dict[int, int]] = {}
    for rel, col, version, count in dict_rows_tuples(conn, "SELECT relation::text, column_name::text, version, "
                                                           "value_count FROM envelope.key_columns(%s)", [key]):
        out.setdefault((rel, col), {})[version] = count
    return out


def dict_rows_tuples(conn, query: str, params=None) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchall()


def data_key_versions(conn, key: str) -> list[int]:
    """The versions of a key that envelope.data_key holds (superuser)."""
    return [r[0] for r in dict_rows_tuples(conn, "SELECT d.version FROM envelope.data_key d JOIN envelope.key k "
                                                 "USING (key_id) WHERE k.name = %s ORDER BY 1", [key])]


def verify(conn, key: str) -> dict[str, tuple[bool, str | None]]:
    return {r[0]: (r[1], r[2]) for r in dict_rows_tuples(conn, "SELECT * FROM envelope.verify_destroyed(%s)", [key])}


# ---- the data -----------------------------------------------------------------------

def plain_t(i: int) -> str | None:
    return None if i % 97 == 0 else f"t-{i}-é" + "x" * (i % 13)


def plain_p(i: int) -> str | None:
    return None if i % 79 == 0 else f"p-{i}@example.com"


T_SQL = "CASE WHEN g % 97 = 0 THEN NULL ELSE 't-' || g || '-é' || repeat('x', g % 13) END"
P_SQL = "CASE WHEN g % 79 = 0 THEN NULL ELSE 'p-' || g || '@example.com' END"

Model = dict  # {id: {"t": ..., "p": ...}}


class Db:
    """One database of a cluster, with the roles' grants."""

    def __init__(self, cluster: Cluster, name: str):
        self.pg, self.name = cluster, name

    def connect(self, user: str | None = None, **kw):
        return self.pg.connect(self.name, user=user, **kw)

    def sql(self, query: str, params=None, user: str | None = None):
        return self.pg.sql(query, params, dbname=self.name, user=user)

    def scalar(self, query: str, params=None, user: str | None = None):
        return self.pg.scalar(query, params, dbname=self.name, user=user)

    def create_key(self, key: str, *, owner_encrypt: bool = True) -> None:
        self.sql("SELECT envelope.create_key(%s)", [key])
        if owner_encrypt:
            self.sql("SELECT envelope.grant_key(%s, %s, 'encrypt')", [key, OWNER])
        for privilege in ("encrypt", "decrypt"):
            self.sql("SELECT envelope.grant_key(%s, %s, %s)", [key, APP, privilege])

    def create_data(self, table: str, key: str, rows: int, protected_key: str | None = None) -> Model:
        """A table owned by OWNER: t encrypted_text (context = id) and, with protected_key,
        p a protected text column (row context id); returns the model."""
        self.sql(f"CREATE TABLE {table} (id bigint PRIMARY KEY, t envelope.encrypted_text, p text, "
                 "note text NOT NULL DEFAULT '')", user=OWNER)
        if protected_key:
            # (blind_index => false is avoided: ANALYZE then fails, see the report)
            self.sql(f"SELECT envelope.protect_column('{table}', 'p', %s, context_column => 'id', "
                     "blind_key => %s)", [protected_key, protected_key + "blind"], user=OWNER)
        p_sql = P_SQL if protected_key else "NULL"
        self.sql(f"INSERT INTO {table} (id, t, p) SELECT g, envelope.encrypt_field({T_SQL}, '{key}', g::text), "
                 f"{p_sql} FROM generate_series(1, {rows}) g", user=OWNER)
        self.sql(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {APP}", user=OWNER)
        self.sql(f"GRANT SELECT, UPDATE ON {table} TO {UPDATER}", user=OWNER)
        self.sql(f"ANALYZE {table}", user=OWNER)
        return {i: {"t": plain_t(i), "p": plain_p(i) if protected_key else None} for i in range(1, rows + 1)}

    def read_plain(self, table: str) -> Model:
        rows = self.sql(f"SELECT id, envelope.decrypt_field(t, id::text), p FROM {table}", user=APP)
        return {r[0]: {"t": r[1], "p": r[2]} for r in rows}

    def assert_model(self, table: str, model: Model) -> None:
        got = self.read_plain(table)
        assert got.keys() == model.keys(), "rows were lost or added"
        wrong = [(i, c) for i in model for c in ("t", "p") if got[i][c] != model[i][c]]
        assert not wrong, f"{len(wrong)} values differ from the originals, e.g. (id, column) {wrong[:5]}"

    def raw(self, table: str, col: str = "t") -> dict[int, str]:
        return dict(self.sql(f"SELECT id, {col}::text FROM {table}"))

    def xmins(self, table: str) -> dict[int, str]:
        return dict(self.sql(f"SELECT id, xmin::text FROM {table}"))

    def not_current(self, table: str, col: str = "t") -> int:
        return self.scalar(f"SELECT count(*) FROM {table} WHERE {col} IS NOT NULL AND NOT envelope.on_current_key({col})")


def nonnull(model: Model, col: str) -> int:
    return sum(1 for r in model.values() if r[col] is not None)


def create_roles(cluster: Cluster) -> None:
    for role in ROLES:
        cluster.sql(f"CREATE ROLE {role} LOGIN")
    cluster.sql(f"GRANT {UPDATER} TO {MEMBER}")


def new_db(cluster: Cluster, name: str) -> Db:
    cluster.create_database(name)
    db = Db(cluster, name)
    roles = ", ".join(ROLES)
    db.sql(f"GRANT CREATE ON SCHEMA public TO {OWNER}")
    # EXECUTE is the first gate (revoked from PUBLIC); key and table privileges decide.
    db.sql(f"GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA envelope TO {roles}")
    db.sql(f"GRANT EXECUTE ON PROCEDURE envelope.reencrypt({REENCRYPT_SIG}) TO {roles}")
    return db


@pytest.fixture(scope="module")
def shared(module_cluster_factory) -> Cluster:
    pg = module_cluster_factory.create("lifecycle", settings=CLUSTER_SETTINGS)
    create_roles(pg)
    return pg


@pytest.fixture
def db(shared, request) -> Db:
    name = "lc_" + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[5:40]
    d = new_db(shared, name)
    yield d
    # No worker of this test may outlive it.
    mon = shared.connect(name)
    for (pid,) in dict_rows_tuples(mon, "SELECT pid FROM pg_stat_activity WHERE backend_type = %s AND datname = %s",
                                   [WORKER_TYPE, name]):
        dict_rows_tuples(mon, "SELECT pg_terminate_backend(%s)", [pid])
    shared.close_connections()


@pytest.fixture
def report(capsys, record_property):
    """Prints a measured figure (also without -s) and records it."""
    def emit(name: str, value) -> None:
        record_property(name, value)
        with capsys.disabled():
            print(f"\n[measure] {name}: {value}")
    return emit


# ---- 1. a background run -------------------------------------------------------------

def test_background_run_outlives_its_session(db, report):
    db.create_key("bk")
    db.create_key("bkp")
    db.create_key("bkpblind")
    model = db.create_data("data", "bk", 20_000, protected_key="bkp")
    assert db.read_plain("data") == model, "the SQL and the Python mirror of the data disagree"
    n_t, n_p = nonnull(model, "t"), nonnull(model, "p")
    assert key_columns(db.connect(), "bk") == {("data", "t"): {1: n_t}}
    assert key_columns(db.connect(), "bkp") == {("data", "p"): {1: n_p}}
    assert db.scalar("SELECT envelope.rotate_key('bk')") == 2
    assert db.scalar("SELECT envelope.rotate_key('bkp')") == 2
    before = db.raw("data")

    mon = db.connect()
    caller = db.connect(user=OWNER)  # the table's owner, encrypt only
    t0 = time.monotonic()
    pid_t = start(caller, "data", "t", "id", batch_blocks=4, pause_ms=10)
    pid_p = start(caller, "data", "p", batch_blocks=4, pause_ms=10)
    assert pid_t != pid_p and caller.get_backend_pid() not in (pid_t, pid_p)
    caller.close()  # the runs outlive the session that started them
    # While they run, the workers are listed with their backend_type.
    wait_until(lambda: one(mon, "SELECT count(*) FROM pg_stat_activity WHERE pid IN (%s, %s)", [pid_t, pid_p]) == 2,
               10, "the workers in pg_stat_activity")
    activity = dict_rows(mon, "SELECT pid, backend_type, usename::text FROM pg_stat_activity WHERE pid IN (%s, %s)",
                         [pid_t, pid_p])
    seen_running = {c: (progress(mon, "data", c) or {}).get("phase") for c in ("t", "p")}
    assert {a["pid"] for a in activity} == {pid_t, pid_p}, activity
    assert {a["backend_type"] for a in activity} == {WORKER_TYPE}, activity
    assert {a["usename"] for a in activity} == {OWNER}, activity
    assert "done" not in seen_running.values(), f"the runs were over before the session closed: {seen_running}"
    for col, n, pid in (("t", n_t, pid_t), ("p", n_p, pid_p)):
        p = wait_done(mon, "data", col, pid)
        assert p["phase"] == "done", p
        assert p["rows_done"] == p["rows_total"] == n and p["pid"] is None and p["error"] is None, p
    report("1.background_20k_two_columns_seconds", round(time.monotonic() - t0, 2))
    # Only the new version remains; every value decrypts to its original.
    assert key_columns(mon, "bk") == {("data", "t"): {2: n_t}}
    assert key_columns(mon, "bkp") == {("data", "p"): {2: n_p}}
    after = db.raw("data")
    assert all(after[i] != before[i] for i in before if before[i] is not None), "a value was not re-encrypted"
    db.assert_model("data", model)


# ---- 2. cancel and resume ------------------------------------------------------------

def test_cancel_and_resume(db, report):
    db.create_key("ck")
    model = db.create_data("data", "ck", 10_000)
    total = nonnull(model, "t")
    db.sql("SELECT envelope.rotate_key('ck')")
    mon = db.connect()
    owner = db.connect(user=OWNER)
    pid = start(owner, "data", "t", "id", pause_ms=50, batch_blocks=1)
    wait_registered(mon, "data", "t", pid)
    wait_until(lambda: (progress(mon, "data", "t") or {}).get("rows_done", 0) > 0, 30, "the first batch")
    assert progress(mon, "data", "t")["phase"] == "running"
    # Not the table's owner: refused, and the run goes on.
    err = expect_error(db.connect(user=UPDATER), "42501", "SELECT envelope.cancel_reencryption('data', 't')")
    assert "owner" in err["message"], err
    assert worker_alive(mon, pid) and progress(mon, "data", "t")["phase"] == "running"

    assert one(owner, "SELECT envelope.cancel_reencryption('data', 't')") is True
    wait_until(lambda: not worker_alive(mon, pid), 10, "the worker to exit")
    cancelled = progress(mon, "data", "t")
    report("2.cancelled", {k: cancelled[k] for k in ("phase", "rows_done", "rows_total", "next_block", "error")})
    assert cancelled["phase"] == "interrupted" and cancelled["error"] == "cancelled", cancelled
    assert 0 < cancelled["rows_done"] < cancelled["rows_total"] == total, cancelled
    assert cancelled["finished_at"] is None and cancelled["next_block"] > 0, cancelled
    assert cancelled["rows_done"] == total - db.not_current("data"), "rows_done disagrees with the table"
    time.sleep(0.3)  # it stays stopped
    assert progress(mon, "data", "t")["rows_done"] == cancelled["rows_done"]
    assert one(owner, "SELECT envelope.cancel_reencryption('data', 't')") is False
    db.assert_model("data", model)  # mid-way, old and new versions mixed

    # A new start resumes where it stopped.
    pid2 = start(owner, "data", "t", "id", pause_ms=10, batch_blocks=2)
    assert pid2 != pid
    first: list[dict] = []

    def first_batch() -> bool:
        r = dict_rows(mon, "SELECT next_block, rows_done, resumed_at, last_batch_at FROM envelope.reencryption "
                           "WHERE tbl = 'data'::regclass AND col = 't'")[0]
        if r["resumed_at"] is not None and r["last_batch_at"] is not None and r["last_batch_at"] >= r["resumed_at"]:
            first.append(r)
            return True
        return False
    wait_until(first_batch, 30, "the first batch of the resumed run", interval=0.005)
    assert first[0]["next_block"] > cancelled["next_block"], (first[0], cancelled["next_block"])
    assert first[0]["rows_done"] >= cancelled["rows_done"], (first[0], cancelled["rows_done"])
    done = wait_done(mon, "data", "t", pid2)
    assert done["phase"] == "done" and done["error"] is None, done
    assert done["started_at"] == cancelled["started_at"] and done["resumed_at"] is not None, "it started over"
    assert done["rows_done"] == done["rows_total"] == total, done  # continued, none counted twice
    assert db.not_current("data") == 0
    db.assert_model("data", model)


# ---- 3. kill -9 of the worker ----------------------------------------------------------

def wait_accepting(db: Db, timeout: float = 60) -> None:
    def ok() -> bool:
        try:
            return db.scalar("SELECT NOT pg_is_in_recovery()")
        except psycopg2.OperationalError:
            return False
    wait_until(ok, timeout, "the server to accept connections", interval=0.2)


def test_kill_9_of_the_worker(cluster_factory, report):
    pg = cluster_factory.create("killed", settings=CLUSTER_SETTINGS)  # synchronous_commit on
    create_roles(pg)
    db = new_db(pg, "lc_kill")
    db.create_key("kk")
    model = db.create_data("data", "kk", 10_000)
    total = nonnull(model, "t")
    db.sql("SELECT envelope.rotate_key('kk')")
    mon = db.connect()
    pid = start(db.connect(user=OWNER), "data", "t", "id", pause_ms=20, batch_blocks=1)
    wait_registered(mon, "data", "t", pid)
    wait_until(lambda: progress(mon, "data", "t")["rows_done"] >= total // 4, 60, "a quarter done")
    assert progress(mon, "data", "t")["phase"] == "running"
    pg.allow_crash = True
    os.kill(pid, signal.SIGKILL)
    pg.wait_for_log(rf'"{WORKER_TYPE}" \(PID {pid}\) was terminated by signal 9', timeout=10)
    pg.close_connections()
    wait_accepting(db)
    mon = db.connect()
    after = progress(mon, "data", "t")
    report("3.after_kill", {k: after[k] for k in ("phase", "rows_done", "rows_total", "next_block")})
    assert after["phase"] == "interrupted", after
    assert 0 < after["rows_done"] < total == after["rows_total"], after
    assert after["rows_done"] == total - db.not_current("data"), "committed progress and the table disagree"
    db.assert_model("data", model)
    pid2 = start(db.connect(user=OWNER), "data", "t", "id", batch_blocks=8)
    done = wait_done(mon, "data", "t", pid2)
    assert done["phase"] == "done" and done["rows_done"] == total, done
    assert done["started_at"] == after["started_at"], "the run started over instead of resuming"
    assert db.not_current("data") == 0
    db.assert_model("data", model)


# ---- 4. errors in the caller -----------------------------------------------------------

def test_errors_in_the_caller(db):
    db.create_key("ek")
    model = db.create_data("data", "ek", 3000)
    db.sql("SELECT envelope.rotate_key('ek')")
    owner = db.connect(user=OWNER)
    mon = db.connect()
    x0 = db.xmins("data")
    workers = lambda: dict_rows_tuples(mon, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = %s "  # noqa: E731
                                            "AND datname = current_database()", [WORKER_TYPE])[0][0]
    call = "SELECT envelope.start_reencryption('data', %s, context_column => %s)"
    err = expect_error(owner, "42703", call, ["nope", None])
    assert 'column "nope"' in err["message"], err
    expect_error(owner, "42703", call, ["t", "nope"])
    err = expect_error(owner, "42809", call, ["note", None])
    assert "holds no pg_envelope values" in err["message"], err
    expect_error(owner, "42809", call, ["id", None])
    expect_error(owner, "42704", "SELECT envelope.start_reencryption('data', 't', 'id', 'no_such_key')")
    expect_error(owner, "22023", "SELECT envelope.start_reencryption('data', 't', 'id', batch_blocks => 0)")
    db.sql("CREATE TABLE pt (id integer, t envelope.encrypted_text) PARTITION BY RANGE (id)", user=OWNER)
    db.sql("CREATE TABLE pt1 PARTITION OF pt FOR VALUES FROM (0) TO (100)", user=OWNER)
    err = expect_error(owner, "0A000", "SELECT envelope.start_reencryption('pt', 't', 'id')")
    assert "pg_partition_tree" in (err["hint"] or ""), err
    # No UPDATE on the table.
    err = expect_error(db.connect(user=OTHER), "42501", "SELECT envelope.start_reencryption('data', 't', 'id')")
    assert "permission denied for table" in err["message"], err
    db.sql(f"GRANT SELECT ON data TO {OTHER}", user=OWNER)
    expect_error(db.connect(user=OTHER), "42501", "SELECT envelope.start_reencryption('data', 't', 'id')")
    # EXECUTE is not PUBLIC.
    db.sql(f"REVOKE EXECUTE ON FUNCTION envelope.start_reencryption({REENCRYPT_SIG}) FROM {OTHER}")
    err = expect_error(db.connect(user=OTHER), "42501", "SELECT envelope.start_reencryption('data', 't', 'id')")
    assert "permission denied for function start_reencryption" in err["message"], err
    assert workers() == 0, "a refused call started a worker"
    assert progress(mon, "data", "t") is None
    assert db.xmins("data") == x0

    # 55006 while a session's CALL of the column runs.
    caller = db.connect(user=OWNER)
    call_error: list[BaseException] = []

    def run_call() -> None:
        try:
            with caller.cursor() as cur:
                cur.execute("CALL envelope.reencrypt('data', 't', 'id', batch_blocks => 1, pause_ms => 40)")
        except psycopg2.Error as e:
            call_error.append(e)
    th = threading.Thread(target=run_call, daemon=True)
    th.start()
    wait_phase(mon, "data", "t", {"running"}, timeout=30)
    err = expect_error(owner, "55006", "SELECT envelope.start_reencryption('data', 't', 'id')")
    assert "being re-encrypted" in err["message"], err
    assert workers() == 0
    assert one(owner, "SELECT envelope.cancel_reencryption('data', 't')") is True
    th.join(30)
    assert call_error and call_error[0].pgcode == "57014", call_error
    assert progress(mon, "data", "t")["phase"] == "interrupted"

    # 55006 while a worker of the column runs (another start, or a CALL).
    pid = start(owner, "data", "t", "id", batch_blocks=1, pause_ms=300)
    wait_registered(mon, "data", "t", pid)
    expect_error(owner, "55006", "SELECT envelope.start_reencryption('data', 't', 'id')")
    expect_error(db.connect(user=OWNER), "55006", "CALL envelope.reencrypt('data', 't', 'id')")
    assert workers() == 1

    # 53400: no free worker slot (max_worker_processes = 6, the launcher holds one). Other
    # columns' workers take the slots.
    db.sql("ALTER TABLE data " + ", ".join(f"ADD COLUMN c{k} envelope.encrypted_text" for k in range(8)), user=OWNER)
    db.sql("UPDATE data SET " + ", ".join(f"c{k} = envelope.encrypt_field('c', 'ek')" for k in range(8))
           + " WHERE id <= 50", user=APP)
    db.sql("SELECT envelope.rotate_key('ek')")
    started, refused = [], None
    for k in range(8):
        try:
            started.append(start(owner, "data", f"c{k}", batch_blocks=1, pause_ms=2000))
        except psycopg2.Error as e:
            refused = pg_error(e)
            break
        # (cancel_reencryption before the worker registered its run would miss it)
        wait_registered(mon, "data", f"c{k}", started[-1])
    assert refused is not None, f"{len(started)} workers started, none refused"
    assert refused["sqlstate"] == "53400" and "max_worker_processes" in (refused["hint"] or ""), refused
    assert started, "not even one worker could start"
    for k in range(len(started)):
        assert one(owner, f"SELECT envelope.cancel_reencryption('data', 'c{k}')") is True, k
    assert one(owner, f"SELECT envelope.cancel_reencryption('data', 'c{len(started)}')") is False
    assert one(owner, "SELECT envelope.cancel_reencryption('data', 't')") is True
    for p in [pid, *started]:
        wait_until(lambda: not worker_alive(mon, p), 15, "the workers to exit")
    wait_until(lambda: workers() == 0, 5, "pg_stat_activity to forget the workers")
    # The refused column has no run.
    assert progress(mon, "data", f"c{len(started)}") is None
    db.assert_model("data", model)


def test_second_start_right_after_the_first_is_refused(db, report):
    """Bug found by these tests: start_reencryption() returns as soon as the worker
    process exists, before it has registered its run; a second start (or CALL) of the
    same column at once passes the 55006 check, and two runs of one column proceed
    side by side (the view then ends 'done' with rows_done < rows_total)."""
    db.create_key("rk")
    model = db.create_data("data", "rk", 5000)
    db.sql("SELECT envelope.rotate_key('rk')")
    owner = db.connect(user=OWNER)
    mon = db.connect()
    pid = start(owner, "data", "t", "id", batch_blocks=1, pause_ms=20)
    second: object
    try:
        second = start(owner, "data", "t", "id", batch_blocks=1, pause_ms=20)
    except psycopg2.Error as e:
        second = e.pgcode
    done = wait_done(mon, "data", "t", pid)
    if isinstance(second, int):
        done = wait_done(mon, "data", "t", second)
    report("4b.second_start", {"second": second, "final": {k: done[k] for k in ("phase", "rows_done", "rows_total")}})
    db.assert_model("data", model)
    assert second == "55006", f"a second start of a column being re-encrypted returned {second!r} (a worker PID)"
    assert done["rows_done"] == done["rows_total"], done


# ---- 5. the worker runs as the caller ------------------------------------------------

def test_worker_runs_as_the_caller(db):
    db.create_key("wk")
    model = db.create_data("data", "wk", 3000)
    db.sql("SELECT envelope.rotate_key('wk')")
    mon = db.connect()
    raw0, x0 = db.raw("data"), db.xmins("data")
    # UPDATER may UPDATE the table but holds no privilege on the key: the checks of the
    # caller pass, the worker (as UPDATER) fails on the first value.
    pid = start(db.connect(user=UPDATER), "data", "t", "id")
    p = wait_done(mon, "data", "t", pid)
    assert p is not None and p["phase"] == "interrupted" and p["rows_done"] == 0 and p["finished_at"] is None, p
    assert p["error"] and "permission denied for key" in p["error"] and '"wk"' in p["error"], p
    assert db.raw("data") == raw0 and db.xmins("data") == x0, "the failed worker changed rows"
    # With encrypt on the key (granted by an administrator), the same role's next start
    # resumes and finishes.
    db.sql("SELECT envelope.grant_key('wk', %s, 'encrypt')", [UPDATER])
    pid = start(db.connect(user=UPDATER), "data", "t", "id")
    done = wait_done(mon, "data", "t", pid)
    assert done["phase"] == "done" and done["error"] is None and done["rows_done"] == nonnull(model, "t"), done
    db.assert_model("data", model)


def test_worker_error_reaches_the_server_log_intact(db):
    """Bug found by these tests: the worker records its error in the view, then rethrows
    an ErrorData freed by AbortCurrentTransaction(): the server log shows garbage
    ("ERROR:  pg_catalog", a DETAIL of stray bytes) instead of the error."""
    db.create_key("lk")
    db.create_data("data", "lk", 500)
    db.sql("SELECT envelope.rotate_key('lk')")
    mon = db.connect()
    since = db.pg.log_position()
    pid = start(db.connect(user=UPDATER), "data", "t", "id")
    assert "permission denied for key" in (wait_done(mon, "data", "t", pid)["error"] or "")
    db.pg.wait_for_log(rf"\(PID {pid}\) exited with exit code 1", since=since, timeout=10)
    lines = [ln for ln in db.pg.read_log(since).splitlines() if f"[{pid}]" in ln]
    errors = [ln.split("ERROR:", 1)[1].strip() for ln in lines if "ERROR:" in ln]
    assert errors, lines
    assert any('permission denied for key "lk"' in e for e in errors), f"the worker's error in the log: {errors}"


def test_set_role_caller(cluster_factory):
    """Bug found by these tests: a worker started after SET ROLE (current role differs
    from the session user) dies with SIGSEGV in SetCurrentRoleId()/superuser_arg() outside
    a transaction, and the postmaster restarts every backend. Any role that may SET ROLE
    can do it. Expected: the worker runs as the role set."""
    pg = cluster_factory.create("setrole", settings=CLUSTER_SETTINGS)
    create_roles(pg)
    db = new_db(pg, "lc_setrole")
    db.create_key("sk")
    model = db.create_data("data", "sk", 1000)
    db.sql("SELECT envelope.rotate_key('sk')")
    db.sql("SELECT envelope.grant_key('sk', %s, 'encrypt')", [UPDATER])
    mon = db.connect()
    member = db.connect(user=MEMBER)  # may not UPDATE the table itself; its role UPDATER may
    with member.cursor() as cur:
        cur.execute(f"SET ROLE {UPDATER}")
    pg.allow_crash = True  # checked below, with a message
    pid = start(member, "data", "t", "id")
    wait_until(lambda: not worker_alive(mon, pid), 30, "the worker to stop")
    time.sleep(0.2)
    crashes = [ln for ln in pg.read_log().splitlines() if re.search(r"terminated by signal|PANIC", ln)]
    assert not crashes, f"the worker crashed the server: {crashes}"
    p = progress(mon, "data", "t")
    assert p is not None and p["phase"] == "done", p
    db.assert_model("data", model)


# ---- 6. concurrent application updates -----------------------------------------------

def test_concurrent_updates_during_a_background_run(db, report):
    db.create_key("uk")
    model = db.create_data("data", "uk", 10_000)
    db.sql("SELECT envelope.rotate_key('uk')")
    mon = db.connect()
    stop = threading.Event()
    errors: list[str] = []
    counts = {"col": 0, "other": 0}
    finals: list[dict] = []

    def writer(k: int) -> None:
        conn = db.connect(user=APP, options="-c statement_timeout=20s")
        rows: dict[int, str | None] = {}
        rng = random.Random(k)
        ids = [i for i in model if i % 2 == k]
        seq = 0
        with conn.cursor() as cur:
            while not stop.is_set():
                i = rng.choice(ids)
                seq += 1
                try:
                    if rng.random() < 0.6:
                        v = f"w{k}-{seq}-ß"
                        cur.execute("UPDATE data SET t = envelope.encrypt_field(%s, 'uk', id::text) WHERE id = %s",
                                    [v, i])
                        rows[i] = v
                        counts["col"] += 1
                    else:  # another column: a new row version, maybe behind the scan
                        cur.execute("UPDATE data SET note = %s WHERE id = %s", [f"n{seq}", i])
                        counts["other"] += 1
                except psycopg2.Error as e:
                    errors.append(f"{e.pgcode} {e.pgerror}")
                time.sleep(0.0005)
        finals.append(rows)
    writers = [threading.Thread(target=writer, args=(k,), daemon=True) for k in range(2)]
    for w in writers:
        w.start()
    time.sleep(0.2)
    before_run = dict(counts)
    pid = start(db.connect(user=OWNER), "data", "t", "id", batch_blocks=2, pause_ms=5)
    try:
        done = wait_done(mon, "data", "t", pid)
        during = {k: counts[k] - before_run[k] for k in counts}
    finally:
        stop.set()
        for w in writers:
            w.join(30)
    report("6.writes_during_the_run", during)
    assert not errors, errors[:5]
    assert done["phase"] == "done", done
    assert during["col"] >= 100 and during["other"] >= 50, during
    for rows in finals:
        for i, v in rows.items():
            model[i]["t"] = v
    assert db.not_current("data") == 0
    db.assert_model("data", model)


# ---- 7. retirement -------------------------------------------------------------------

FIRST = "first version: it seeds the key's blind indexes"
CURRENT = "current version"
REFERENCED = "referenced"


def retire(conn, key: str = "rk") -> list[tuple]:
    return dict_rows_tuples(conn, "SELECT version, values_referencing, retired, kept "
                                  "FROM envelope.retire_unreferenced_versions(%s) ORDER BY 1", [key])


def test_retire_unreferenced_versions(db, report):
    """Versions 1..4, values on 1 and 3, current 4. docs/lifecycle.md (as of this test):
    retirement never deletes version 1 (it seeds blind indexes) nor the current one; so a
    key keeps at most version 1, the current one and the referenced ones."""
    db.create_key("rk")
    db.sql("SELECT envelope.grant_key('rk', %s, 'admin')", [KEYADM])
    su = db.connect()
    db.sql("CREATE TABLE data (id bigint PRIMARY KEY, t envelope.encrypted_text)", user=OWNER)
    db.sql("CREATE TABLE other (id bigint PRIMARY KEY, b envelope.encrypted_bytea)", user=OWNER)
    db.sql(f"GRANT SELECT ON data, other TO {APP}", user=OWNER)
    db.sql("INSERT INTO data SELECT g, envelope.encrypt_field('one-' || g, 'rk', g::text) FROM generate_series(1, 300) g",
           user=OWNER)                                                                          # version 1
    assert db.scalar("SELECT envelope.rotate_key('rk')") == 2                                  # nothing on 2
    assert db.scalar("SELECT envelope.rotate_key('rk')") == 3
    db.sql("INSERT INTO data SELECT g, envelope.encrypt_field('three-' || g, 'rk', g::text) "
           "FROM generate_series(301, 400) g", user=OWNER)                                    # version 3
    db.sql("INSERT INTO other SELECT g, envelope.encrypt_field(convert_to('b-' || g, 'UTF8'), 'rk') "
           "FROM generate_series(1, 40) g", user=OWNER)                                       # version 3
    # A copy of a version-3 ciphertext kept aside.
    db.sql("CREATE TABLE aside (x envelope.encrypted_text)")
    db.sql("INSERT INTO aside SELECT t FROM data WHERE id = 307")
    kept_aside = db.scalar("SELECT x::text FROM aside")
    assert db.scalar("SELECT envelope.rotate_key('rk')") == 4
    assert key_columns(su, "rk") == {("data", "t"): {1: 300, 3: 100}, ("other", "b"): {3: 40}, ("aside", "x"): {3: 1}}
    assert data_key_versions(su, "rk") == [1, 2, 3, 4]

    # Who may retire: an administrator of the key (42501 otherwise); unknown key 42704.
    err = expect_error(db.connect(user=APP), "42501", "SELECT * FROM envelope.retire_unreferenced_versions('rk')")
    assert "admin" in (err["detail"] or err["message"]), err
    expect_error(su, "42704", "SELECT * FROM envelope.retire_unreferenced_versions('no_such_key')")
    # Strict scan: a column the caller cannot read -> 42501, nothing retired.
    keyadm = db.connect(user=KEYADM)
    err = expect_error(keyadm, "42501", "SELECT * FROM envelope.retire_unreferenced_versions('rk')")
    assert "cannot be scanned" in err["message"], err
    db.sql(f"GRANT SELECT ON data, other TO {KEYADM}", user=OWNER)
    err = expect_error(keyadm, "42501", "SELECT * FROM envelope.retire_unreferenced_versions('rk')")
    assert "aside" in err["message"], err  # the superuser's table, still unreadable
    assert data_key_versions(su, "rk") == [1, 2, 3, 4], "a refused retirement deleted versions"
    db.sql(f"GRANT SELECT ON aside TO {KEYADM}")

    # Exactly version 2: not 1 and 3 (referenced), not 4 (current).
    assert retire(keyadm) == [(1, 300, False, REFERENCED), (2, 0, True, None), (3, 141, False, REFERENCED),
                              (4, 0, False, CURRENT)]
    assert data_key_versions(su, "rk") == [1, 3, 4]

    # A backend that decrypted the kept-aside copy (cached), and one in a REPEATABLE READ
    # transaction that did so before the retirement.
    cached = db.connect(user=APP)
    assert one(cached, "SELECT envelope.decrypt_field(%s::envelope.encrypted_text, '307')", [kept_aside]) == "three-307"
    snap = db.connect(user=APP, autocommit=False)
    with snap.cursor() as cur:
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        cur.execute("SELECT envelope.decrypt_field(%s::envelope.encrypted_text, '307')", [kept_aside])
        assert cur.fetchone()[0] == "three-307"

    # Re-encrypt everything: a background run for data.t, a CALL for other.b.
    pid = start(db.connect(user=OWNER), "data", "t", "id")
    run(db.connect(user=OWNER), "CALL envelope.reencrypt('other', 'b')")
    assert wait_done(su, "data", "t", pid)["phase"] == "done"
    # The copy aside still references version 3: it stays; version 1 stays as the first.
    assert retire(keyadm) == [(1, 0, False, FIRST), (3, 1, False, REFERENCED), (4, 440, False, CURRENT)]
    db.sql("DROP TABLE aside")
    assert retire(keyadm) == [(1, 0, False, FIRST), (3, 0, True, None), (4, 440, False, CURRENT)]
    assert data_key_versions(su, "rk") == [1, 4]
    # Everything decrypts.
    expected_t = {i: (f"one-{i}" if i <= 300 else f"three-{i}") for i in range(1, 401)}
    assert dict(db.sql("SELECT id, envelope.decrypt_field(t, id::text) FROM data", user=APP)) == expected_t
    got_b = dict(db.sql("SELECT id, convert_from(envelope.decrypt_field(b), 'UTF8') FROM other", user=APP))
    assert got_b == {i: f"b-{i}" for i in range(1, 41)}

    # The copy kept aside no longer decrypts: in the backend that had it cached, in the
    # old REPEATABLE READ transaction, in a new session, and put back into a table.
    for conn in (cached, snap, db.connect(user=APP)):
        err = expect_error(conn, "42704", "SELECT envelope.decrypt_field(%s::envelope.encrypted_text, '307')",
                           [kept_aside])
        assert "version 3" in err["message"], err
    db.sql("CREATE TABLE aside_again (x envelope.encrypted_text)")
    db.sql("INSERT INTO aside_again VALUES (%s::envelope.encrypted_text)", [kept_aside])
    expect_error(su, "42704", "SELECT envelope.decrypt_field(x, '307') FROM aside_again")
    db.sql("DROP TABLE aside_again")

    # Bounded: 15 cycles of rotate + re-encrypt + retire leave version 1 and the current.
    owner = db.connect(user=OWNER)
    t0 = time.monotonic()
    for cycle in range(15):
        v = db.scalar("SELECT envelope.rotate_key('rk')")
        assert v == 5 + cycle
        run(owner, "CALL envelope.reencrypt('data', 't', 'id')")
        run(owner, "CALL envelope.reencrypt('other', 'b')")
        assert retire(keyadm) == [(1, 0, False, FIRST), (v - 1, 0, True, None), (v, 440, False, CURRENT)], cycle
    report("7.fifteen_cycles_seconds", round(time.monotonic() - t0, 2))
    assert data_key_versions(su, "rk") == [1, 19]
    assert dict(db.sql("SELECT id, envelope.decrypt_field(t, id::text) FROM data", user=APP)) == expected_t

    # A destroyed key: its error.
    db.sql("SELECT envelope.create_key('rk_gone')")
    db.sql("SELECT envelope.destroy_key('rk_gone')")
    err = expect_error(su, "55000", "SELECT * FROM envelope.retire_unreferenced_versions('rk_gone')")
    assert "destroyed" in err["message"], err


# ---- 8. crypto-shredding and its verification ------------------------------------------

def file_holds(cluster: Cluster, relpath: str, needle: bytes) -> bool:
    path = cluster.data_dir / relpath
    return path.exists() and needle in path.read_bytes()


def test_destroy_reports_and_verify_destroyed(db, report):
    db.create_key("doomed")
    db.create_key("kept")
    su = db.connect()
    db.sql("CREATE TABLE a (id int, x envelope.encrypted_text, y envelope.encrypted_text, z envelope.encrypted_text)",
           user=OWNER)
    db.sql("CREATE TABLE b (id int, j envelope.encrypted_jsonb)", user=OWNER)
    db.sql(f"GRANT SELECT ON a, b TO {APP}", user=OWNER)
    db.sql("INSERT INTO a SELECT g, envelope.encrypt_field('x' || g, 'doomed'), "
           "CASE WHEN g % 3 = 0 THEN envelope.encrypt_field('y' || g, 'doomed') END, "
           "envelope.encrypt_field('z' || g, 'kept') FROM generate_series(1, 12) g", user=OWNER)
    db.sql("SELECT envelope.rotate_key('doomed')")
    db.sql("INSERT INTO b SELECT g, envelope.encrypt_field(jsonb_build_object('g', g), 'doomed') "
           "FROM generate_series(1, 5) g", user=OWNER)
    wrapped = [bytes(r[0]) for r in dict_rows_tuples(
        su, "SELECT d.wrapped FROM envelope.data_key d JOIN envelope.key k USING (key_id) WHERE k.name = 'doomed'")]
    assert len(wrapped) == 2 and all(len(w) >= 32 for w in wrapped), [len(w) for w in wrapped]
    relpath = one(su, "SELECT pg_relation_filepath('envelope.data_key')")
    run(su, "CHECKPOINT")
    assert all(file_holds(db.pg, relpath, w) for w in wrapped), "the wrapped DEKs are not found in the file"
    # Before: not destroyed.
    v = verify(su, "doomed")
    assert list(v) == ["key destroyed", "wrapped DEKs", "old row versions", "table rewritten", "shared cache"], v
    assert v["key destroyed"][0] is False and v["wrapped DEKs"][0] is False, v

    cached = db.connect(user=APP)
    assert one(cached, "SELECT envelope.decrypt_field(x) FROM a WHERE id = 1") == "x1"
    assert one(cached, "SELECT envelope.decrypt_field(j) ->> 'g' FROM b WHERE id = 2") == "2"
    assert verify(su, "doomed")["shared cache"][0] is False, "the shared cache should hold the key's DEKs now"

    destroyer = db.connect()
    with destroyer.cursor() as cur:
        cur.execute("SELECT envelope.destroy_key('doomed')")
    notices = sorted(n.strip() for n in destroyer.notices if "can no longer be decrypted" in n)
    assert notices == sorted([
        'NOTICE:  pg_envelope: 12 values of key "doomed" in column x of public.a can no longer be decrypted',
        'NOTICE:  pg_envelope: 4 values of key "doomed" in column y of public.a can no longer be decrypted',
        'NOTICE:  pg_envelope: 5 values of key "doomed" in column j of public.b can no longer be decrypted',
    ]) or notices == sorted([  # relation names without the schema are as good
        'NOTICE:  pg_envelope: 12 values of key "doomed" in column x of a can no longer be decrypted',
        'NOTICE:  pg_envelope: 4 values of key "doomed" in column y of a can no longer be decrypted',
        'NOTICE:  pg_envelope: 5 values of key "doomed" in column j of b can no longer be decrypted',
    ]), destroyer.notices

    # The backend that had the DEKs cached can no longer decrypt.
    for q in ("SELECT envelope.decrypt_field(x) FROM a WHERE id = 1",
              "SELECT envelope.decrypt_field(j) FROM b WHERE id = 2"):
        err = expect_error(cached, "55000", q)
        assert err["message"] == 'key "doomed" has been destroyed', err
    assert one(cached, "SELECT envelope.decrypt_field(z) FROM a WHERE id = 1") == "z1"  # the other key works

    v = verify(su, "doomed")
    report("8.after_destroy", v)
    assert v["key destroyed"][0] and v["wrapped DEKs"][0] and v["shared cache"][0], v
    assert not v["old row versions"][0] or not v["table rewritten"][0], v
    assert not v["table rewritten"][0] and "VACUUM FULL" in (v["table rewritten"][1] or ""), v

    # Plain VACUUM: the dead row versions go, the bytes stay in the page.
    run(su, "VACUUM envelope.data_key")
    run(su, "CHECKPOINT")
    v = verify(su, "doomed")
    report("8.after_vacuum", v)
    assert v["old row versions"][0] and not v["table rewritten"][0], v
    assert one(su, "SELECT pg_relation_filepath('envelope.data_key')") == relpath
    still = [file_holds(db.pg, relpath, w) for w in wrapped]
    report("8.wrapped_DEKs_in_the_file_after_plain_vacuum", still)
    assert any(still), "plain VACUUM removed the bytes (then 'table rewritten' would be stricter than needed)"

    # VACUUM FULL: a new file, without them; every check ok.
    run(su, "VACUUM FULL envelope.data_key")
    run(su, "CHECKPOINT")
    v = verify(su, "doomed")
    report("8.after_vacuum_full", v)
    assert all(ok for ok, _ in v.values()), v
    new_relpath = one(su, "SELECT pg_relation_filepath('envelope.data_key')")
    assert new_relpath != relpath
    assert not any(file_holds(db.pg, new_relpath, w) for w in wrapped), "the wrapped DEKs are in the new file"
    # Nowhere in the database's directory (the old file is gone after the checkpoint).
    db_dir = db.pg.data_dir / Path(relpath).parent
    holders = [p.name for p in db_dir.iterdir() if p.is_file() and any(w in p.read_bytes() for w in wrapped)]
    assert not holders, f"files of the database still hold the wrapped DEKs: {holders}"
    # The other key is untouched.
    assert [r[0] for r in db.sql("SELECT envelope.decrypt_field(z) FROM a ORDER BY id", user=APP)] == \
        [f"z{g}" for g in range(1, 13)]
    assert verify(su, "kept")["key destroyed"][0] is False


# ---- 9. on a standby -----------------------------------------------------------------

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
    wait_until(lambda: standby.scalar("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)), 30, "replay",
               interval=0.05)


def test_verify_destroyed_on_a_standby(cluster_factory, report):
    primary = cluster_factory.create("primary", settings=REPLICATION)
    primary.sql("CREATE EXTENSION pg_envelope")
    primary.sql("SELECT envelope.create_key('doomed'), envelope.create_key('kept')")
    primary.sql("CREATE TABLE t (id int PRIMARY KEY, k text, v envelope.encrypted_text)")
    primary.sql("INSERT INTO t SELECT g, k, envelope.encrypt_field('secret-' || g, k) FROM generate_series(1, 6) g, "
                "LATERAL (SELECT CASE WHEN g % 2 = 0 THEN 'doomed' ELSE 'kept' END AS k) s")
    standby = make_standby(cluster_factory, primary)
    s1 = standby.connect()
    assert one(s1, "SELECT envelope.decrypt_field(v) FROM t WHERE id = 2") == "secret-2"
    assert verify(s1, "doomed")["shared cache"][0] is False, "the standby's cache should hold the DEK"

    primary.sql("SELECT envelope.destroy_key('doomed')")
    wait_for_replay(primary, standby)
    time.sleep(0.5)
    report("9.standby_cache_entries_after_replay", standby.scalar("SELECT entries FROM envelope.stats"))
    v = verify(standby.connect(), "doomed")
    report("9.standby_after_destroy", v)
    assert v["key destroyed"][0] and v["wrapped DEKs"][0] and v["shared cache"][0], v
    assert not v["table rewritten"][0], v
    err = expect_error(s1, "55000", "SELECT envelope.decrypt_field(v) FROM t WHERE id = 2")
    assert err["message"] == 'key "doomed" has been destroyed', err
    assert one(s1, "SELECT envelope.decrypt_field(v) FROM t WHERE id = 3") == "secret-3"

    primary.sql("VACUUM FULL envelope.data_key")
    assert all(ok for ok, _ in verify(primary.connect(), "doomed").values())
    wait_for_replay(primary, standby)
    v = verify(standby.connect(), "doomed")
    report("9.standby_after_vacuum_full", v)
    assert all(ok for ok, _ in v.values()), v
