"""Online re-encryption (issue 13, part 1): envelope.reencrypt() and its building blocks.

CALL envelope.reencrypt(tbl, col, context_column, key, batch_blocks, pause_ms) brings
every value of an envelope.encrypted_* column or a protected column onto the current DEK
version of its key (or moves encrypted_* values to another key), one committed UPDATE
per batch of heap blocks, resumably, with its progress in
envelope.reencryption_progress; envelope.key_columns(key) finds every column holding a
key's values and counts them per DEK version (by a scan). These tests check, on a real
server, with a table of 20k rows holding

- `t` envelope.encrypted_text, context = the row's id (context_column => 'id'),
- `b` envelope.encrypted_bytea, no context,
- `j` envelope.encrypted_jsonb, context = the row's id,
- `p` a protected text column, per-row key template 'tenant_{}' (key_column tenant) and
  row context id,

and a Python model of every plaintext:

1. rotate_key then reencrypt: every value on the new version (key_columns), every value
   decrypts to its original, a second run changes no row (xmin) and reports done;
2. moving encrypted_* values to another key; the errors (0A000, 42809, 42703, 42704,
   55000, 22023) and privileges (42501: no UPDATE, no encrypt, a move without decrypt);
3. concurrent application UPDATEs of the column and of other columns during the run
   are all kept, and no value is left on the old version;
4. pg_cancel_backend, kill -9 of the backend, kill -9 of the postmaster: the view says
   interrupted, a re-run resumes where it stopped and finishes, nothing is lost;
5. the progress view (owner only, sampled while it runs);
6. no long lock: single-row application UPDATEs of rows the scan has not reached yet
   wait less than a second;
and two tests of bugs these tests found (fixed): a run cancelled by pg_cancel_backend
whose client stays connected must read `interrupted`, not `running`; a partitioned table
is refused (0A000, not a silent `done`), and its partitions are re-encrypted one by one.

The tables belong to an ordinary role (OWNER) that runs reencrypt holding `encrypt` on
the keys only; the application role (APP) holds encrypt + decrypt and checks plaintexts.

Run as the postgres OS user:
    runuser -u postgres -- /usr/bin/python3 -m pytest -q -p no:cacheprovider test/integration/test_reencrypt.py
"""

from __future__ import annotations

import os
import random
import re
import signal
import threading
import time
from collections import Counter
from decimal import Decimal
from typing import Callable

import psycopg2
import psycopg2.extras
import pytest

from pgcluster import Cluster, pg_error

DB = "rex"
OWNER = "rex_owner"    # owns the table, runs reencrypt: encrypt on the keys, no decrypt
APP = "rex_app"        # the application: DML, encrypt + decrypt on every key
OTHER = "rex_other"    # may call reencrypt, no privilege on the table, no key
UPDATER = "rex_upd"    # SELECT + UPDATE on the table, no key privilege
MOVER = "rex_mover"    # SELECT + UPDATE on the table, encrypt on K1 and K2, decrypt on neither (at first)

K1, K2 = "rk1", "rk2"
TENANTS = 4            # keys tenant_0 .. tenant_3 for the protected column
BLIND = "rex_blind"

ROWS = 20_000
REENCRYPT_SIG = "regclass, name, name, text, integer, integer"
PROTECT_SIG = "regclass, name, text, name, name, boolean, integer, text"

CONTEXT = {"t": "id", "b": None, "j": "id", "p": None}   # context_column argument per column
ENCRYPTED = ("t", "b", "j")


# ---- the data -----------------------------------------------------------------------

def plain_t(i: int) -> str | None:
    return None if i % 97 == 0 else f"t-{i}-é" + "x" * (i % 13)


def plain_b(i: int) -> bytes | None:
    return None if i % 89 == 0 else bytes([i % 256, 0, 255]) + f"b-{i}".encode()


def plain_j(i: int) -> dict | None:
    return None if i % 83 == 0 else {"i": i, "tag": "ü" * (i % 3), "even": i % 2 == 0}


def plain_p(i: int) -> str | None:
    return None if i % 79 == 0 else f"p-{i}@example.com"


def tenant_of(i: int) -> int:
    return i % TENANTS


# The same values in SQL (g is the row id); the model is checked against it once.
T_SQL = "CASE WHEN g % 97 = 0 THEN NULL ELSE 't-' || g || '-é' || repeat('x', g % 13) END"
B_SQL = ("CASE WHEN g % 89 = 0 THEN NULL ELSE set_byte('\\x0000ff'::bytea, 0, g % 256) "
         "|| convert_to('b-' || g, 'UTF8') END")
J_SQL = ("CASE WHEN g % 83 = 0 THEN NULL ELSE jsonb_build_object('i', g, 'tag', repeat('ü', g % 3), "
         "'even', g % 2 = 0) END")
P_SQL = "CASE WHEN g % 79 = 0 THEN NULL ELSE 'p-' || g || '@example.com' END"

Model = dict  # {id: {"t": ..., "b": ..., "j": ..., "p": ...}}


def initial_model(rows: int = ROWS) -> Model:
    return {i: {"t": plain_t(i), "b": plain_b(i), "j": plain_j(i), "p": plain_p(i)} for i in range(1, rows + 1)}


def nonnull(model: Model, col: str) -> int:
    return sum(1 for r in model.values() if r[col] is not None)


# ---- set-up -------------------------------------------------------------------------

def prepare(cluster: Cluster) -> None:
    """Database, roles, keys and grants."""
    cluster.create_database(DB)
    for role in (OWNER, APP, OTHER, UPDATER, MOVER):
        cluster.sql(f"CREATE ROLE {role} LOGIN")
    roles = ", ".join((OWNER, APP, OTHER, UPDATER, MOVER))
    cluster.sql(f"GRANT CREATE ON SCHEMA public TO {OWNER}", dbname=DB)
    # EXECUTE is the first gate (revoked from PUBLIC): every role may call the functions
    # and the procedure; the key privileges and the table's privileges decide.
    cluster.sql(f"GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA envelope TO {roles}", dbname=DB)
    cluster.sql(f"GRANT EXECUTE ON PROCEDURE envelope.reencrypt({REENCRYPT_SIG}) TO {roles}", dbname=DB)
    keys = [K1, K2, BLIND] + [f"tenant_{n}" for n in range(TENANTS)]
    for k in keys:
        cluster.sql("SELECT envelope.create_key(%s)", [k], dbname=DB)
    for k in keys:
        cluster.sql("SELECT envelope.grant_key(%s, %s, 'encrypt')", [k, OWNER], dbname=DB)
        for privilege in ("encrypt", "decrypt"):
            cluster.sql("SELECT envelope.grant_key(%s, %s, %s)", [k, APP, privilege], dbname=DB)
    cluster.sql("SELECT envelope.grant_key('tenant_*', %s, 'admin')", [OWNER], dbname=DB)
    for k in (K1, K2):
        cluster.sql("SELECT envelope.grant_key(%s, %s, 'encrypt')", [k, MOVER], dbname=DB)


def create_data(cluster: Cluster, rows: int = ROWS, table: str = "data") -> Model:
    """The table (owned by OWNER), its protected column, its rows; returns the model."""
    cluster.sql(f"CREATE TABLE {table} (id bigint PRIMARY KEY, tenant integer NOT NULL, "
                "t envelope.encrypted_text, b envelope.encrypted_bytea, j envelope.encrypted_jsonb, "
                "p text, note text NOT NULL DEFAULT '', n integer NOT NULL DEFAULT 0)", dbname=DB, user=OWNER)
    # Protected while empty: the trigger seals every row inserted.
    cluster.sql(f"SELECT envelope.protect_column('{table}', 'p', 'tenant_{{}}', context_column => 'id', "
                f"key_column => 'tenant', blind_key => '{BLIND}')", dbname=DB, user=OWNER)
    cluster.sql(f"INSERT INTO {table} (id, tenant, t, b, j, p) SELECT g, g % {TENANTS}, "
                f"envelope.encrypt_field({T_SQL}, '{K1}', g::text), "
                f"envelope.encrypt_field({B_SQL}, '{K1}'), "
                f"envelope.encrypt_field({J_SQL}, '{K1}', g::text), {P_SQL} "
                f"FROM generate_series(1, {rows}) g", dbname=DB, user=OWNER)
    cluster.sql(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {APP}", dbname=DB, user=OWNER)
    cluster.sql(f"GRANT SELECT, UPDATE ON {table} TO {UPDATER}, {MOVER}", dbname=DB, user=OWNER)
    cluster.sql(f"ANALYZE {table}", dbname=DB, user=OWNER)
    return initial_model(rows)


def read_plain(cluster: Cluster, table: str = "data") -> Model:
    """Every row decrypted as the application."""
    rows = cluster.sql(f"SELECT id, envelope.decrypt_field(t, id::text), envelope.decrypt_field(b), "
                       f"envelope.decrypt_field(j, id::text), p FROM {table}", dbname=DB, user=APP)
    return {r[0]: {"t": r[1], "b": None if r[2] is None else bytes(r[2]), "j": r[3], "p": r[4]} for r in rows}


def assert_model(cluster: Cluster, model: Model, cols=("t", "b", "j", "p"), table: str = "data") -> None:
    got = read_plain(cluster, table)
    assert got.keys() == model.keys(), (sorted(model.keys() - got.keys())[:10], sorted(got.keys() - model.keys())[:10])
    wrong = [(i, c, got[i][c], model[i][c]) for i in model for c in cols if got[i][c] != model[i][c]]
    assert not wrong, f"{len(wrong)} values differ from the originals, e.g. {wrong[:5]}"


def key_columns(cluster: Cluster, key: str) -> dict[tuple[str, str], dict[int, int]]:
    """envelope.key_columns(key) as the superuser: {(relation, column): {version: count}}."""
    out: dict[tuple[str, str], dict[int, int]] = {}
    for rel, col, version, count in cluster.sql("SELECT relation::text, column_name::text, version, value_count "
                                                "FROM envelope.key_columns(%s)", [key], dbname=DB):
        out.setdefault((rel, col), {})[version] = count
    return out


def tenant_versions(cluster: Cluster, table: str = "data") -> dict[int, int]:
    """Counts per DEK version of the protected column over every tenant key."""
    total: Counter[int] = Counter()
    for n in range(TENANTS):
        for version, count in key_columns(cluster, f"tenant_{n}").get((table, "p"), {}).items():
            total[version] += count
    return dict(total)


def xmins(cluster: Cluster, table: str = "data") -> dict[int, str]:
    return dict(cluster.sql(f"SELECT id, xmin::text FROM {table}", dbname=DB))


def dict_rows(conn, query: str, params=None) -> list[dict]:
    with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute(query, params)
        return [dict(r) for r in cur.fetchall()]


def progress(conn, col: str, table: str = "data") -> dict:
    """The column's row of envelope.reencryption_progress plus next_block (superuser)."""
    rows = dict_rows(conn, "SELECT v.*, r.next_block FROM envelope.reencryption_progress v "
                           "JOIN envelope.reencryption r ON r.tbl = v.relation AND r.col = v.column_name "
                           "WHERE v.relation = %s::regclass AND v.column_name = %s", [table, col])
    assert len(rows) == 1, rows
    return rows[0]


def call_reencrypt(conn, col: str, *, table: str = "data", context: str | None = "default",
                   key: str | None = None, batch_blocks: int = 8, pause_ms: int = 0) -> list[str]:
    """CALL envelope.reencrypt on `conn`; returns the notices it raised."""
    ctx = CONTEXT[col] if context == "default" else context
    before = len(conn.notices)
    with conn.cursor() as cur:
        cur.execute("CALL envelope.reencrypt(%s, %s, context_column => %s, key => %s, batch_blocks => %s, "
                    "pause_ms => %s)", [table, col, ctx, key, batch_blocks, pause_ms])
    return conn.notices[before:]


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(interval)


class Reencrypt(threading.Thread):
    """CALL envelope.reencrypt(...) on its own connection, in a thread."""

    def __init__(self, cluster: Cluster, col: str, *, user: str = OWNER, sync_commit: bool = False, **kw):
        super().__init__(daemon=True)
        # synchronous_commit on: every committed batch is on disk before it is visible,
        # so what a monitor saw survives a crash.
        if sync_commit:
            self.conn = cluster.connect(DB, user=user, options="-c synchronous_commit=on")
        else:
            self.conn = cluster.connect(DB, user=user)
        self.pid = self.conn.get_backend_pid()
        self.col, self.kw = col, kw
        self.error: psycopg2.Error | None = None
        self.notices: list[str] = []
        self.elapsed: float | None = None

    def run(self) -> None:
        t0 = time.monotonic()
        try:
            self.notices = call_reencrypt(self.conn, self.col, **self.kw)
        except psycopg2.Error as e:
            self.error = e
        finally:
            self.elapsed = time.monotonic() - t0

    def finish(self, timeout: float = 180) -> "Reencrypt":
        self.join(timeout)
        assert not self.is_alive(), "reencrypt did not finish"
        assert self.error is None, f"reencrypt failed: {self.error!r}"
        return self


@pytest.fixture
def report(capsys, record_property):
    """Prints a measured figure to the terminal (also without -s) and records it."""
    def emit(name: str, value) -> None:
        record_property(name, value)
        with capsys.disabled():
            print(f"\n[measure] {name}: {value}")
    return emit


@pytest.fixture
def pg(cluster) -> Cluster:
    prepare(cluster)
    return cluster


# ---- 1. rotate, re-encrypt, idempotent ------------------------------------------------

def test_rotate_then_reencrypt_every_column(pg, report):
    model = create_data(pg)
    assert read_plain(pg) == model, "the SQL and the Python mirror of the data disagree"
    counts = {c: nonnull(model, c) for c in ("t", "b", "j", "p")}
    # Before: every value on version 1; key_columns finds every column of each key.
    assert key_columns(pg, K1) == {("data", "t"): {1: counts["t"]}, ("data", "b"): {1: counts["b"]},
                                   ("data", "j"): {1: counts["j"]}}
    assert tenant_versions(pg) == {1: counts["p"]}
    assert key_columns(pg, K2) == {}

    assert pg.scalar("SELECT envelope.rotate_key(%s)", [K1], dbname=DB) == 2
    for n in range(TENANTS):
        assert pg.scalar("SELECT envelope.rotate_key(%s)", [f"tenant_{n}"], dbname=DB) == 2
    # Rotation alone moves nothing.
    assert key_columns(pg, K1)[("data", "t")] == {1: counts["t"]}
    assert pg.scalar("SELECT count(*) FROM data WHERE NOT envelope.on_current_key(t)", dbname=DB) == counts["t"]
    before_raw = dict(pg.sql("SELECT id, t::text FROM data WHERE t IS NOT NULL", dbname=DB))

    owner = pg.connect(DB, user=OWNER)  # the table's owner, encrypt only: no decrypt needed
    timings = {}
    for col in ("t", "b", "j", "p"):
        t0 = time.monotonic()
        notices = call_reencrypt(owner, col)
        timings[col] = round(time.monotonic() - t0, 2)
        assert not notices, notices
        p = progress(pg.connect(DB), col)
        assert p["phase"] == "done" and p["finished_at"] is not None, p
        assert p["rows_total"] == p["rows_done"] == counts[col], (col, p)
        assert p["percent"] == Decimal("100.0") and p["passes"] == 1 and p["target_key"] is None, p
    report("1.reencrypt_seconds_per_column_20k", timings)

    # Every value on the new version, none left on version 1.
    assert key_columns(pg, K1) == {("data", "t"): {2: counts["t"]}, ("data", "b"): {2: counts["b"]},
                                   ("data", "j"): {2: counts["j"]}}
    assert tenant_versions(pg) == {2: counts["p"]}
    for col in ("t", "b", "j", "p"):
        assert pg.scalar(f"SELECT count(*) FILTER (WHERE NOT envelope.on_current_key({col})) FROM data",
                         dbname=DB) == 0, col
    # The ciphertexts really are new, and decrypt to the originals (same context).
    after_raw = dict(pg.sql("SELECT id, t::text FROM data WHERE t IS NOT NULL", dbname=DB))
    assert after_raw.keys() == before_raw.keys()
    assert all(after_raw[i] != before_raw[i] for i in after_raw)
    assert_model(pg, model)
    # NULLs stay NULL.
    assert pg.scalar("SELECT count(*) FROM data WHERE t IS NULL", dbname=DB) == ROWS - counts["t"]

    # Idempotent: a second run touches no row and reports done.
    x0 = xmins(pg)
    for col in ("t", "b", "j", "p"):
        assert not call_reencrypt(owner, col)
        p = progress(pg.connect(DB), col)
        assert p["phase"] == "done" and p["rows_done"] == 0 and p["rows_total"] == 0, p
    assert xmins(pg) == x0, "a re-run on current values rewrote rows"
    assert_model(pg, model)


def test_reencrypt_field_building_blocks(pg):
    """reencrypt_field/reseal/on_current_key/key_version_of on single values."""
    create_data(pg, rows=50)
    app = pg.connect(DB, user=APP)
    pg.sql("SELECT envelope.rotate_key(%s)", [K1], dbname=DB)
    with app.cursor() as cur:
        cur.execute("SELECT envelope.key_version_of(t, %s), envelope.on_current_key(t), "
                    "envelope.key_version_of(envelope.reencrypt_field(t, id::text), %s), "
                    "envelope.on_current_key(envelope.reencrypt_field(t, id::text)), "
                    "envelope.decrypt_field(envelope.reencrypt_field(t, id::text), id::text), "
                    "envelope.key_version_of(envelope.reencrypt_field(t, id::text, %s), %s), "
                    "envelope.key_version_of(t, %s) "
                    "FROM data WHERE id = 1", [K1, K1, K2, K2, K2])
        assert cur.fetchone() == (1, False, 2, True, plain_t(1), 1, None)
        # A value on the current version comes back as it is.
        cur.execute("SELECT envelope.reencrypt_field(x, '1')::text = x::text FROM "
                    "(SELECT envelope.encrypt_field('v', %s, '1') AS x) s", [K1])
        assert cur.fetchone() == (True,)
        # The wrong context fails authentication (22000), never returns a wrong value.
        with pytest.raises(psycopg2.Error) as exc:
            cur.execute("SELECT envelope.reencrypt_field(t, 'wrong') FROM data WHERE id = 1")
        assert pg_error(exc)["sqlstate"] == "22000"
    pg.sql("SELECT envelope.rotate_key('tenant_1')", dbname=DB)
    with app.cursor() as cur:
        cur.execute("SELECT envelope.on_current_key(p), envelope.key_version_of(p, 'tenant_1'), "
                    "envelope.on_current_key(envelope.reseal(p)), "
                    "envelope.key_version_of(envelope.reseal(p), 'tenant_1') FROM data WHERE id = 1")
        assert cur.fetchone() == (False, 1, True, 2)


# ---- 2. moves, errors, privileges ---------------------------------------------------

def test_move_to_another_key(pg, report):
    model = create_data(pg)
    counts = {c: nonnull(model, c) for c in ENCRYPTED}
    owner = pg.connect(DB, user=OWNER)  # encrypt on K1 and K2 but decrypt on neither
    # A move decrypts: the owner, without decrypt on K1, is refused.
    with pytest.raises(psycopg2.Error) as exc:
        call_reencrypt(owner, "t", key=K2)
    err = pg_error(exc)
    assert err["sqlstate"] == "42501" and K1 in err["message"], err
    assert key_columns(pg, K2) == {}
    # The application role (decrypt on K1, encrypt on K2) moves them.
    app = pg.connect(DB, user=APP)
    for col in ENCRYPTED:
        assert not call_reencrypt(app, col, key=K2)
        p = progress(pg.connect(DB), col)
        assert p["phase"] == "done" and p["target_key"] == K2 and p["rows_done"] == p["rows_total"] == counts[col], p
    assert key_columns(pg, K1) == {}
    assert key_columns(pg, K2) == {("data", c): {1: counts[c]} for c in ENCRYPTED}
    assert_model(pg, model)
    key_names = {r[0] for r in pg.sql("SELECT (envelope.key_of(t)).key_name FROM data WHERE t IS NOT NULL",
                                      dbname=DB)}
    assert key_names == {K2}
    # A second move to the same key changes nothing.
    x0 = xmins(pg)
    assert not call_reencrypt(app, "t", key=K2)
    assert xmins(pg) == x0
    # Then K2 rotates and a run without `key` re-encrypts within K2 (owner: encrypt only).
    pg.sql("SELECT envelope.rotate_key(%s)", [K2], dbname=DB)
    call_reencrypt(owner, "b")
    assert key_columns(pg, K2)[("data", "b")] == {2: counts["b"]}
    assert_model(pg, model)
    report("2.moved", key_columns(pg, K2))


def expect_error(conn, sqlstate: str, query: str, params=None) -> dict:
    with conn.cursor() as cur, pytest.raises(psycopg2.Error) as exc:
        cur.execute(query, params)
    if not conn.autocommit:
        conn.rollback()
    err = pg_error(exc)
    assert err["sqlstate"] == sqlstate, (query, err)
    return err


def test_errors_and_privileges(pg):
    model = create_data(pg, rows=3000)
    pg.sql("SELECT envelope.rotate_key(%s)", [K1], dbname=DB)
    owner = pg.connect(DB, user=OWNER)
    x0 = xmins(pg)
    call = "CALL envelope.reencrypt('data', %s, context_column => %s, key => %s)"
    # A protected column brings its own key and context.
    err = expect_error(owner, "0A000", call, ["p", None, K2])
    assert "protected column" in err["message"], err
    expect_error(owner, "0A000", call, ["p", "id", None])
    # Not a pg_envelope column / no such column / no such context column / no such key.
    err = expect_error(owner, "42809", call, ["note", None, None])
    assert "holds no pg_envelope values" in err["message"], err
    expect_error(owner, "42809", call, ["n", None, None])
    err = expect_error(owner, "42703", call, ["nope", None, None])
    assert 'column "nope"' in err["message"], err
    expect_error(owner, "42703", call, ["t", "nope", None])
    expect_error(owner, "42704", call, ["t", "id", "no_such_key"])
    # batch_blocks and pause_ms.
    for bb, pause in ((0, 0), (-1, 0), (8, -1)):
        expect_error(owner, "22023", "CALL envelope.reencrypt('data', 't', 'id', NULL, %s, %s)", [bb, pause])
    # Inside a transaction block; as a function.
    tx = pg.connect(DB, user=OWNER, autocommit=False)
    err = expect_error(tx, "55000", "CALL envelope.reencrypt('data', 't', 'id')")
    assert "outside a transaction block" in err["message"], err
    expect_error(owner, "42809", "SELECT envelope.reencrypt('data', 't', 'id')")
    # EXECUTE is not PUBLIC.
    pg.sql("CREATE ROLE rex_nobody LOGIN")
    err = expect_error(pg.connect(DB, user="rex_nobody"), "42501", "CALL envelope.reencrypt('data', 't', 'id')")
    assert "permission denied for procedure reencrypt" in err["message"], err

    # Privileges, as the roles themselves.
    # No UPDATE (nor SELECT) on the table.
    err = expect_error(pg.connect(DB, user=OTHER), "42501", "CALL envelope.reencrypt('data', 't', 'id')")
    assert "permission denied for table data" in err["message"], err
    # UPDATE on the table, but not encrypt on the key.
    err = expect_error(pg.connect(DB, user=UPDATER), "42501", "CALL envelope.reencrypt('data', 't', 'id')")
    assert K1 in err["message"], err
    # A move needs decrypt on the source key (MOVER holds encrypt on K1 and K2).
    mover = pg.connect(DB, user=MOVER)
    err = expect_error(mover, "42501", "CALL envelope.reencrypt('data', 't', 'id', %s)", [K2])
    assert f'key "{K1}"' in err["message"], err
    assert xmins(pg) == x0, "a refused call changed rows"
    # ... and encrypt on the target key.
    pg.sql("SELECT envelope.grant_key(%s, %s, 'decrypt')", [K1, MOVER], dbname=DB)
    pg.sql("SELECT envelope.revoke_key(%s, %s, 'encrypt')", [K2, MOVER], dbname=DB)
    err = expect_error(mover, "42501", "CALL envelope.reencrypt('data', 't', 'id', %s)", [K2])
    assert f'key "{K2}"' in err["message"], err
    assert xmins(pg) == x0, "a refused call changed rows"
    # Within K1, encrypt suffices (MOVER still has encrypt on K1).
    call_reencrypt(mover, "t")
    assert key_columns(pg, K1)[("data", "t")] == {2: nonnull(model, "t")}
    # With encrypt on K2 again, the move works.
    pg.sql("SELECT envelope.grant_key(%s, %s, 'encrypt')", [K2, MOVER], dbname=DB)
    call_reencrypt(mover, "t", key=K2)
    assert key_columns(pg, K2) == {("data", "t"): {1: nonnull(model, "t")}}
    assert_model(pg, model)


# ---- 3. concurrent application writers ----------------------------------------------

class Writer(threading.Thread):
    """An application connection updating its share of the rows (id % writers == k):
    new plaintexts in the column being re-encrypted, and other columns (which moves rows
    to other blocks, maybe behind the scan). Autocommitted single-row statements; the
    model holds each row's last committed value."""

    def __init__(self, cluster: Cluster, col: str, k: int, writers: int, model: Model,
                 stop: threading.Event, running: Callable[[], bool]):
        super().__init__(daemon=True)
        self.conn = cluster.connect(DB, user=APP, options="-c statement_timeout=20s")
        self.col, self.k, self.stop, self.running = col, k, stop, running
        self.rows = {i: dict(r) for i, r in model.items() if i % writers == k}
        self.ids = list(self.rows)
        self.rng = random.Random(77 + k)
        self.seq = 0
        self.ops: Counter[str] = Counter()
        self.ops_while_running = 0
        self.errors: list[str] = []

    def step(self, cur) -> str:
        i = self.rng.choice(self.ids)
        self.seq += 1
        r = self.rng.random()
        if r < 0.45:
            if self.col == "t":
                v = f"w{self.k}-{self.seq}-ß"
                cur.execute(f"UPDATE data SET t = envelope.encrypt_field(%s, '{K1}', id::text), n = n + 1 "
                            "WHERE id = %s", [v, i])
            elif self.col == "p":
                v = f"w{self.k}-{self.seq}@example.org"
                cur.execute("UPDATE data SET p = %s WHERE id = %s", [v, i])
            else:
                raise AssertionError(self.col)
            assert cur.rowcount == 1
            self.rows[i][self.col] = v
            return "update_col"
        if r < 0.9:
            cur.execute("UPDATE data SET note = %s, n = n + 1 WHERE id = %s", [f"note-{self.k}-{self.seq}", i])
            assert cur.rowcount == 1
            return "update_other"
        if r < 0.95:
            cur.execute(f"UPDATE data SET {self.col} = NULL WHERE id = %s", [i])
            self.rows[i][self.col] = None
            return "update_null"
        # read back: what the application reads is what it wrote
        cur.execute("SELECT envelope.decrypt_field(t, id::text), p FROM data WHERE id = %s", [i])
        got = dict(zip(("t", "p"), cur.fetchone()))
        if got[self.col] != self.rows[i][self.col]:
            self.errors.append(f"row {i} reads {got[self.col]!r}, expected {self.rows[i][self.col]!r}")
        return "read"

    def run(self) -> None:
        with self.conn.cursor() as cur:
            while not self.stop.is_set():
                during = self.running()
                try:
                    op = self.step(cur)
                except (psycopg2.Error, AssertionError) as e:
                    self.errors.append(repr(e))
                    continue
                self.ops[op] += 1
                if during:
                    self.ops_while_running += 1
                time.sleep(0.0005)


@pytest.mark.parametrize("col", ["t", "p"])
def test_concurrent_writers_are_kept(pg, col, report):
    model = create_data(pg)
    if col == "t":
        pg.sql("SELECT envelope.rotate_key(%s)", [K1], dbname=DB)
    else:
        for n in range(TENANTS):
            pg.sql("SELECT envelope.rotate_key(%s)", [f"tenant_{n}"], dbname=DB)
    run = Reencrypt(pg, col, batch_blocks=2, pause_ms=5)
    stop = threading.Event()
    writers = [Writer(pg, col, k, 3, model, stop, run.is_alive) for k in range(3)]
    for w in writers:
        w.start()
    time.sleep(0.2)  # the writers run before re-encryption starts
    run.start()
    try:
        run.finish()
        time.sleep(0.2)
    finally:
        stop.set()
        for w in writers:
            w.join(30)
    errors = [e for w in writers for e in w.errors]
    assert not errors, f"{len(errors)} writer errors, e.g. {errors[:5]}"
    ops = sum((w.ops for w in writers), Counter())
    during = sum(w.ops_while_running for w in writers)
    report(f"3.{col}.writer_ops", dict(ops))
    report(f"3.{col}.writer_ops_while_reencrypting", during)
    report(f"3.{col}.reencrypt_seconds", round(run.elapsed, 2))
    report(f"3.{col}.notices", run.notices)
    assert during >= 300, f"only {during} writes overlapped the re-encryption"
    assert ops["update_col"] > 100 and ops["update_other"] > 100, ops
    p = progress(pg.connect(DB), col)
    report(f"3.{col}.progress", {k: p[k] for k in ("phase", "rows_done", "rows_total", "passes")})
    if any("still being written" in n for n in run.notices):
        # Allowed by the description: a NOTICE, and a re-run finishes it.
        assert not call_reencrypt(pg.connect(DB, user=OWNER), col)
    assert progress(pg.connect(DB), col)["phase"] == "done"
    # Every value on the current version, none on the old one.
    if col == "t":
        assert set(key_columns(pg, K1)[("data", "t")]) == {2}
    else:
        assert set(tenant_versions(pg)) == {2}
    assert pg.scalar(f"SELECT count(*) FROM data WHERE NOT envelope.on_current_key({col})", dbname=DB) == 0
    # Nothing lost: every row decrypts to its writer's last committed value.
    final: Model = {}
    for w in writers:
        final.update(w.rows)
    assert_model(pg, final)


# ---- 4. cancel, crash, kill -9 ------------------------------------------------------

def _proc_ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2:].split()[1])


def _proc_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def kill_server_hard(cluster: Cluster) -> None:
    """kill -9 of the postmaster, then of every process it had started."""
    postmaster = int((cluster.data_dir / "postmaster.pid").read_text().split()[0])
    children = [int(p) for p in os.listdir("/proc") if p.isdigit() and _proc_ppid(int(p)) == postmaster]
    assert children, "the postmaster has no children"
    os.kill(postmaster, signal.SIGKILL)
    for pid in children:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_until(lambda: not any(_proc_alive(p) for p in [postmaster, *children]), 30, "the server to die")
    cluster.running = False
    wait_until(lambda: not os.path.exists(f"/proc/{postmaster}"), 60, "the old postmaster to be reaped", 0.1)


def wait_accepting(cluster: Cluster, timeout: float = 60) -> None:
    def ok() -> bool:
        try:
            return cluster.scalar("SELECT NOT pg_is_in_recovery()", dbname=DB)
        except psycopg2.OperationalError:
            return False
    wait_until(ok, timeout, "the server to accept connections", interval=0.2)


def count_current(cluster: Cluster, col: str = "t") -> int:
    return cluster.scalar(f"SELECT count(*) FROM data WHERE {col} IS NOT NULL AND envelope.on_current_key({col})",
                          dbname=DB)


@pytest.mark.parametrize("interrupt", ["cancel", "kill_backend", "kill_postmaster"])
def test_resumes_after_interruption(pg, interrupt, report):
    model = create_data(pg)
    total = nonnull(model, "t")
    pg.sql("SELECT envelope.rotate_key(%s)", [K1], dbname=DB)
    monitor = pg.connect(DB)
    run = Reencrypt(pg, "t", batch_blocks=1, pause_ms=20, sync_commit=True)
    run.start()
    seen: list[dict] = []

    def far_enough() -> bool:
        rows = dict_rows(monitor, "SELECT * FROM envelope.reencryption_progress WHERE column_name = 't'")
        if rows:
            seen.append(rows[0])
        return bool(rows) and rows[0]["rows_done"] >= total // 4
    wait_until(far_enough, 60, "a quarter of the rows re-encrypted")
    assert run.is_alive(), "reencrypt finished before it could be interrupted"
    assert seen[-1]["phase"] == "running", seen[-1]
    last_seen = seen[-1]

    if interrupt == "cancel":
        assert pg.scalar("SELECT pg_cancel_backend(%s)", [run.pid], dbname=DB) is True
        run.join(30)
        assert run.error is not None and run.error.pgcode == "57014", run.error
        # The session goes away (see test_cancelled_run_reads_interrupted_while_connected
        # for the view while the cancelled session stays connected).
        run.conn.close()
        wait_until(lambda: not pg.scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [run.pid],
                                         dbname=DB), 10, "the cancelled session to end")
    elif interrupt == "kill_backend":
        pg.allow_crash = True
        os.kill(run.pid, signal.SIGKILL)
        run.join(30)
        assert isinstance(run.error, psycopg2.OperationalError), run.error
        wait_accepting(pg)
        assert re.search(rf"server process \(PID {run.pid}\) was terminated by signal 9", pg.read_log())
    else:
        pg.allow_crash = True
        kill_server_hard(pg)
        run.join(30)
        assert isinstance(run.error, psycopg2.OperationalError), run.error
        since = pg.log_position()
        pg.start()
        wait_accepting(pg)
        assert "automatic recovery in progress" in pg.read_log(since)
    assert not run.is_alive()

    monitor = pg.connect(DB)
    after = progress(monitor, "t")
    report(f"4.{interrupt}.after", {k: after[k] for k in ("phase", "rows_done", "rows_total", "next_block")})
    assert after["phase"] == "interrupted", after
    assert after["finished_at"] is None and after["rows_total"] == total, after
    assert last_seen["rows_done"] <= after["rows_done"] < total, (last_seen, after)
    assert after["next_block"] > 0, after
    # The progress of every committed batch survived and matches the table.
    assert after["rows_done"] == count_current(pg), "rows_done disagrees with the table"
    # Mid-way, every value still decrypts (old and new versions mixed).
    assert_model(pg, model, cols=("t",))

    # Resume: it carries on from next_block, not from block 0.
    resumed = Reencrypt(pg, "t", batch_blocks=1, pause_ms=5)
    resumed.start()
    first_blocks: list[int] = []
    while resumed.is_alive():
        r = dict_rows(monitor, "SELECT next_block, passes, resumed_at, last_batch_at FROM envelope.reencryption "
                               "WHERE col = 't'")[0]
        if r["resumed_at"] is not None and r["last_batch_at"] is not None and r["last_batch_at"] >= r["resumed_at"] \
                and r["passes"] == 1:
            first_blocks.append(r["next_block"])
        time.sleep(0.003)
    resumed.finish()
    assert first_blocks, "no batch of the resumed run was sampled"
    assert min(first_blocks) > after["next_block"], (min(first_blocks), after["next_block"])
    done = progress(monitor, "t")
    report(f"4.{interrupt}.done", {k: done[k] for k in ("phase", "rows_done", "rows_total", "passes")})
    assert done["phase"] == "done", done
    assert done["started_at"] == after["started_at"] and done["resumed_at"] is not None, "the re-run started over"
    assert done["rows_done"] == done["rows_total"] == total, done  # rows_done continued, none counted twice
    assert key_columns(pg, K1) == {("data", "t"): {2: total}, ("data", "b"): {1: nonnull(model, "b")},
                                   ("data", "j"): {1: nonnull(model, "j")}}
    assert_model(pg, model)


def test_cancelled_run_reads_interrupted_while_connected(pg):
    """docs/lifecycle.md: phase `interrupted` (cancelled, crashed, killed). A run cancelled
    with pg_cancel_backend whose client stays connected is not running any more."""
    model = create_data(pg, rows=10_000)
    pg.sql("SELECT envelope.rotate_key(%s)", [K1], dbname=DB)
    monitor = pg.connect(DB)
    run = Reencrypt(pg, "t", batch_blocks=1, pause_ms=20)
    run.start()
    wait_until(lambda: bool(dict_rows(monitor, "SELECT 1 FROM envelope.reencryption_progress "
                                               "WHERE rows_done > 0")), 30, "the first batch")
    assert pg.scalar("SELECT pg_cancel_backend(%s)", [run.pid], dbname=DB) is True
    run.join(30)
    assert run.error is not None and run.error.pgcode == "57014", run.error
    # The session is still connected and idle.
    assert pg.scalar("SELECT state FROM pg_stat_activity WHERE pid = %s", [run.pid], dbname=DB) == "idle"
    p = progress(monitor, "t")
    assert p["phase"] == "interrupted", p
    # The same session can resume it.
    call_reencrypt(run.conn, "t")
    assert progress(monitor, "t")["phase"] == "done"
    assert_model(pg, model, cols=("t",))


# ---- 5. progress view ---------------------------------------------------------------

def test_progress_view(pg, report):
    model = create_data(pg)
    total = nonnull(model, "t")
    pg.sql("SELECT envelope.rotate_key(%s)", [K1], dbname=DB)
    owner = pg.connect(DB, user=OWNER)
    others = [pg.connect(DB, user=r) for r in (APP, OTHER)]  # APP may UPDATE the table, not own it
    run = Reencrypt(pg, "t", user=APP, batch_blocks=4, pause_ms=10)  # run by APP, watched by the owner
    samples: list[dict] = []
    hidden: list[int] = []
    run.start()
    while run.is_alive():
        rows = dict_rows(owner, "SELECT * FROM envelope.reencryption_progress")
        if rows:
            samples.append(rows[0])
        hidden.extend(len(dict_rows(o, "SELECT * FROM envelope.reencryption_progress")) for o in others)
        time.sleep(0.02)
    run.finish()
    assert hidden and set(hidden) == {0}, "the progress is shown to roles that do not own the table"
    running = [s for s in samples if s["phase"] == "running"]
    report("5.samples", len(samples))
    assert len({s["rows_done"] for s in running}) >= 5, [s["rows_done"] for s in running]
    done_counts = [s["rows_done"] for s in running]
    assert done_counts == sorted(done_counts), "rows_done went backwards"
    for s in running:
        assert s["relation"] == "data" and s["column_name"] == "t" and s["target_key"] is None, s
        assert s["rows_total"] == total and s["pid"] == run.pid and s["finished_at"] is None, s
        assert abs(float(s["percent"]) - 100 * s["rows_done"] / total) <= 0.051, s
        if s["last_batch_at"] is not None and s["last_batch_at"] > s["started_at"] and s["rows_done"] > 0:
            assert s["rows_per_second"] is not None and s["rows_per_second"] > 0, s
    mid = [s for s in running if 0 < s["rows_done"] < total]
    assert mid, "no sample caught the run half-way"
    report("5.mid_sample", {k: mid[len(mid) // 2][k] for k in ("phase", "rows_done", "rows_total", "percent",
                                                                "rows_per_second", "passes")})
    final = dict_rows(owner, "SELECT * FROM envelope.reencryption_progress")[0]
    assert final["phase"] == "done" and final["percent"] == Decimal("100.0") and final["pid"] is None, final
    assert final["rows_done"] == total and final["rows_per_second"] > 0, final
    assert final["finished_at"] >= final["last_batch_at"] >= final["started_at"], final
    report("5.final", {k: final[k] for k in ("rows_done", "rows_total", "rows_per_second", "passes")})
    # The superuser sees it too; the underlying table is not readable by others.
    assert len(dict_rows(pg.connect(DB), "SELECT * FROM envelope.reencryption_progress")) == 1
    expect_error(others[1], "42501", "SELECT * FROM envelope.reencryption")


# ---- 6. no long lock ----------------------------------------------------------------

@pytest.mark.parametrize("batch_blocks", [8, 64])
def test_no_long_lock_for_application_updates(pg, batch_blocks, report):
    """Default batch size and a large one (longer row locks per batch), no pause."""
    model = create_data(pg)
    pg.sql("SELECT envelope.rotate_key(%s)", [K1], dbname=DB)
    run = Reencrypt(pg, "t", batch_blocks=batch_blocks)
    opts = "-c lock_timeout=1s -c statement_timeout=5s"
    app = pg.connect(DB, user=APP, options=opts)
    monitor = pg.connect(DB)
    latencies: list[float] = []
    lock_modes: Counter[str] = Counter()
    xact_ages: list[float] = []
    errors: list[str] = []
    rng = random.Random(5)
    seq = 0
    run.start()
    wait_until(lambda: bool(dict_rows(monitor, "SELECT 1 FROM envelope.reencryption_progress "
                                               "WHERE rows_done > 0")), 30, "the first batch", interval=0.001)
    with app.cursor() as cur, monitor.cursor() as mc:
        while run.is_alive():
            mc.execute("SELECT rows_done, rows_total FROM envelope.reencryption_progress")
            r = mc.fetchone()
            front = int(ROWS * r[0] / max(r[1], 1))
            # a row of a later batch, just ahead of the scan
            i = min(ROWS, front + rng.randint(1, 20 * batch_blocks * 2))
            seq += 1
            v = f"lat-{seq}"
            t0 = time.monotonic()
            try:
                cur.execute(f"UPDATE data SET t = envelope.encrypt_field(%s, '{K1}', id::text), n = n + 1 "
                            "WHERE id = %s", [v, i])
            except psycopg2.Error as e:
                errors.append(f"{e.pgcode} {e.pgerror}")
                continue
            latencies.append(time.monotonic() - t0)
            model[i]["t"] = v
            mc.execute("SELECT l.mode FROM pg_locks l WHERE l.pid = %s AND l.locktype = 'relation' "
                       "AND l.relation = 'data'::regclass AND l.granted", [run.pid])
            lock_modes.update(m[0] for m in mc.fetchall())
            mc.execute("SELECT extract(epoch FROM clock_timestamp() - xact_start) FROM pg_stat_activity "
                       "WHERE pid = %s AND state = 'active'", [run.pid])
            xact_ages.extend(float(a[0]) for a in mc.fetchall() if a[0] is not None)
    run.finish()
    assert not errors, errors[:5]
    assert len(latencies) >= 20, len(latencies)
    tag = f"6.batch_blocks_{batch_blocks}"
    report(f"{tag}.updates", len(latencies))
    report(f"{tag}.max_update_latency_seconds", round(max(latencies), 4))
    report(f"{tag}.median_update_latency_seconds", round(sorted(latencies)[len(latencies) // 2], 4))
    report(f"{tag}.reencrypt_lock_modes_seen", dict(lock_modes))
    report(f"{tag}.max_reencrypt_transaction_age_seconds", round(max(xact_ages), 3) if xact_ages else None)
    report(f"{tag}.reencrypt_seconds", round(run.elapsed, 2))
    assert max(latencies) < 1.0, max(latencies)
    assert set(lock_modes) <= {"AccessShareLock", "RowExclusiveLock"}, lock_modes
    assert xact_ages and max(xact_ages) < 1.0, max(xact_ages, default=None)
    assert set(key_columns(pg, K1)[("data", "t")]) == {2}
    assert_model(pg, model)


# ---- beyond the list: a partitioned table -------------------------------------------

def test_partitioned_table_is_not_silently_skipped(pg):
    """reencrypt() promises every value of the column: on a partitioned table it must
    either re-encrypt the partitions' rows or refuse; it must not report done while
    every value is still on the old version."""
    owner = pg.connect(DB, user=OWNER)
    with owner.cursor() as cur:
        cur.execute("CREATE TABLE pt (id integer, t envelope.encrypted_text) PARTITION BY RANGE (id)")
        cur.execute("CREATE TABLE pt1 PARTITION OF pt FOR VALUES FROM (0) TO (1000)")
        cur.execute(f"INSERT INTO pt SELECT g, envelope.encrypt_field('v' || g, '{K1}', g::text) "
                    "FROM generate_series(1, 999) g")
    pg.sql("SELECT envelope.rotate_key(%s)", [K1], dbname=DB)
    with pytest.raises(psycopg2.Error) as e:
        call_reencrypt(owner, "t", table="pt")
    assert e.value.pgcode == "0A000", pg_error(e)
    assert "pg_partition_tree" in (pg_error(e)["hint"] or ""), pg_error(e)
    # Partition by partition, as the hint says.
    call_reencrypt(owner, "t", table="pt1")
    left = pg.scalar("SELECT count(*) FROM pt WHERE NOT envelope.on_current_key(t)", dbname=DB)
    assert left == 0, f"{left} of 999 values are still on the old version"
    assert pg.scalar("SELECT count(*) FROM pt WHERE envelope.decrypt_field(t, id::text) = 'v' || id",
                     dbname=DB) == 999
