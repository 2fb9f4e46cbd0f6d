"""pg_envelope on Citus (issue 14, scale-out): what works today on a coordinator and two workers.

Three clusters started here listen on 127.0.0.1 (Citus nodes reach each other over libpq,
trust auth on loopback), each with shared_preload_libraries = 'citus,pg_envelope' and
the SAME local master key. What these tests establish:

1. CREATE EXTENSION pg_envelope on the coordinator reaches every worker, one added later
   too, in the same version, and so does ALTER EXTENSION pg_envelope UPDATE;
2. keys are the same on every node: a key created, rotated, re-wrapped, disabled, enabled or
   destroyed on the coordinator, a grant or a revoke, a KMS configuration, is applied on
   every worker inside the coordinator's transaction (two-phase commit: on every node or
   none), and a worker's backends stop using a disabled or destroyed key at their next
   statement; a key change made on a worker is refused; envelope.citus_sync_keys() makes
   every worker's key tables equal to the coordinator's (a worker added later, a repair);
3. a distributed table with envelope.encrypted_* columns: INSERT ... encrypt_field() is
   evaluated on the coordinator (VOLATILE), so only ciphertext reaches the workers (their
   statement log and the shard query show no plaintext); decrypt_field() (STABLE) is
   pushed down and runs on the workers; INSERT ... SELECT across shards (repartition,
   encrypt_field then runs on the workers), COPY in text and binary form, UPDATE through
   a MATERIALIZED CTE, rotation;
4. reference tables with encrypted columns: one ciphertext on every placement, joins
   with a distributed table decrypt on the workers;
5. protected columns (envelope.protect_column) on a distributed table, with
   citus.enable_unsafe_triggers on while protecting or distributing: the trigger and the
   CHECK reach every shard, every shard stores sealed values only, a role with decrypt
   reads plaintext through the coordinator, a superuser the sealed form, UPDATE and
   INSERT ... SELECT re-seal per row; seal_rows seals a populated distributed column on
   every shard (one distributed UPDATE) and validates the CHECK there;
6. no master key in any node's log;
7. key_columns (and so retire_unreferenced_versions) counts the shards' values;
   reencrypt refuses a distributed table; each worker unwraps a DEK once.

Skipped as a whole when Citus is not installed into the PostgreSQL these tests use
(scripts/citus.sh builds it from $PG_ENVELOPE_CITUS_TARBALL or
../shared/citus/citus-13.2.2.tar.gz; a plain clone has neither).

Run as the postgres OS user:
    runuser -u postgres -- /usr/bin/python3 -m pytest -q -p no:cacheprovider test/integration/test_citus.py
"""

from __future__ import annotations

import io
import json
import re
import socket
import subprocess
from pathlib import Path

import psycopg2
import pytest

from pgcluster import PG_BINDIR, Cluster, key_spellings, new_master_key, pg_error


def _citus_missing() -> str | None:
    """Why Citus cannot be used here, or None."""
    try:
        out = subprocess.run([str(PG_BINDIR / "pg_config"), "--pkglibdir", "--sharedir"], check=True,
                             capture_output=True, text=True).stdout.split()
    except (OSError, subprocess.CalledProcessError) as e:
        return f"pg_config of {PG_BINDIR} failed: {e}"
    pkglibdir, sharedir = Path(out[0]), Path(out[1])
    for f in (pkglibdir / "citus.so", sharedir / "extension" / "citus.control"):
        if not f.exists():
            return (f"Citus is not installed ({f} is missing): scripts/citus.sh (run by scripts/setup.sh) builds "
                    "it from $PG_ENVELOPE_CITUS_TARBALL or ../shared/citus/citus-13.2.2.tar.gz when that exists")
    return None


_why = _citus_missing()
if _why:
    pytest.skip(_why, allow_module_level=True)

DB = "postgres"        # Citus' metadata lives in the database that ran CREATE EXTENSION citus
APP = "citus_app"      # the application role: encrypt + decrypt on the keys
K1, K2, KR = "ck1", "ck2", "ckref"
FUNCTIONS = [f"envelope.{f}({t}, text)" for f, t in (
    ("encrypt_field", "text, text"), ("encrypt_field", "bytea, text"), ("encrypt_field", "jsonb, text"),
    ("decrypt_field", "envelope.encrypted_text"), ("decrypt_field", "envelope.encrypted_bytea"),
    ("decrypt_field", "envelope.encrypted_jsonb"))] + ["envelope.unseal(envelope.protected_text)"]
SHARDS = 4

# ---- the cluster ------------------------------------------------------------------------


def _free_ports(n: int, lo: int = 56100, hi: int = 56200) -> list[int]:
    """n ports in [lo, hi) that nobody listens on now (TCP on 127.0.0.1)."""
    ports = []
    for p in range(lo, hi):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                continue
        ports.append(p)
        if len(ports) == n:
            return ports
    raise RuntimeError(f"fewer than {n} free ports in {lo}..{hi - 1}")


class Citus:
    def __init__(self, coordinator: Cluster, workers: list[Cluster]):
        self.coordinator = coordinator
        self.workers = workers

    @property
    def nodes(self) -> list[Cluster]:
        return [self.coordinator, *self.workers]

    def sql(self, query, params=None, user=None):
        return self.coordinator.sql(query, params, dbname=DB, user=user)

    def scalar(self, query, params=None, user=None):
        return self.coordinator.scalar(query, params, dbname=DB, user=user)

    def on_workers(self, command: str) -> list[str]:
        """run_command_on_workers: every worker must succeed; their results by port."""
        rows = self.sql("SELECT nodeport, success, result FROM run_command_on_workers(%s) ORDER BY nodeport",
                        (command,))
        assert len(rows) == len(self.workers), rows
        failed = [r for r in rows if not r[1]]
        assert not failed, failed
        return [r[2] for r in rows]

    def on_placements(self, table: str, command: str) -> list[tuple[int, int, str]]:
        """run_command_on_placements (%s is the shard's name): (port, shard, result)."""
        rows = self.sql("SELECT nodeport, shardid, success, result FROM run_command_on_placements(%s, %s) "
                        "ORDER BY shardid, nodeport", (table, command))
        failed = [r for r in rows if not r[2]]
        assert rows and not failed, failed
        return [(r[0], r[1], r[3]) for r in rows]

    def key_tables(self, node: Cluster) -> dict:
        """A node's key tables, row by row (destroyed_filenode names each node's own file;
        the 'local' KMS row is made on each node by CREATE EXTENSION, at its own time)."""
        q = {"kms": "SELECT to_jsonb(r) - 'created_at' FROM envelope.kms r ORDER BY name",
             "key": "SELECT to_jsonb(r) - 'destroyed_filenode' FROM envelope.key r ORDER BY key_id",
             "data_key": "SELECT to_jsonb(r) FROM envelope.data_key r ORDER BY key_id, version",
             "key_grant": "SELECT to_jsonb(r) FROM envelope.key_grant r ORDER BY pattern, grantee::text, privilege"}
        return {t: [r[0] for r in node.sql(sql, dbname=DB)] for t, sql in q.items()}

    def assert_keys_everywhere(self) -> dict:
        want = self.key_tables(self.coordinator)
        for w in self.workers:
            assert self.key_tables(w) == want, f"worker {w.port} differs from the coordinator"
        return want


def _node_settings() -> dict:
    return {"listen_addresses": "127.0.0.1",
            "shared_preload_libraries": "citus,pg_envelope",
            "max_connections": 80,
            "max_prepared_transactions": 40,   # multi-shard writes commit with 2PC
            "citus.shard_count": SHARDS}


@pytest.fixture(scope="module")
def citus(module_cluster_factory) -> Citus:
    key = new_master_key()
    ports = _free_ports(3)
    coordinator = module_cluster_factory.create("coord", master_key=key, settings=_node_settings(), port=ports[0])
    workers = [module_cluster_factory.create(f"worker{i + 1}", master_key=key, settings=_node_settings(),
                                             port=ports[i + 1]) for i in range(2)]
    for node in (coordinator, *workers):
        node.sql("CREATE EXTENSION citus", dbname=DB)
    c = Citus(coordinator, workers)
    c.sql("SELECT citus_set_coordinator_host('127.0.0.1', %s)", (coordinator.port,))
    # the second worker joins after CREATE EXTENSION pg_envelope (test_extension_reaches_workers)
    c.sql("SELECT citus_add_node('127.0.0.1', %s)", (workers[0].port,))
    c.sql("CREATE EXTENSION pg_envelope")
    c.sql("SELECT citus_add_node('127.0.0.1', %s)", (workers[1].port,))
    c.sql(f"CREATE ROLE {APP} LOGIN")           # roles are propagated by Citus
    c.sql(f"GRANT ALL ON SCHEMA public TO {APP}")
    # GRANTs on the extension's functions are not: decrypt_field runs on the workers
    grant = (f"GRANT EXECUTE ON FUNCTION {', '.join(FUNCTIONS)} TO {APP}")
    c.sql(grant)
    c.on_workers(grant)
    for k in (K1, K2, KR):
        c.sql("SELECT envelope.create_key(%s)", (k,))
        c.sql("SELECT envelope.grant_key(%s, %s, 'encrypt'), envelope.grant_key(%s, %s, 'decrypt')", (k, APP, k, APP))
    return c


def fails(conn, query, params=None) -> dict:
    with conn.cursor() as cur, pytest.raises(psycopg2.Error) as e:
        cur.execute(query, params)
    return pg_error(e)


def explain(c: Citus, query: str, params=None) -> str:
    return "\n".join(r[0] for r in c.sql("EXPLAIN (VERBOSE, COSTS OFF) " + query, params))


# ---- 1. the extension ------------------------------------------------------------------


def test_extension_reaches_workers(citus):
    version = citus.scalar("SELECT extversion FROM pg_extension WHERE extname = 'pg_envelope'")
    # worker 2 was added after CREATE EXTENSION: Citus created it there when the node joined
    assert citus.on_workers("SELECT extversion FROM pg_extension WHERE extname = 'pg_envelope'") == [version] * 2
    assert citus.scalar("SELECT count(*) FROM pg_dist_object WHERE classid = 'pg_extension'::regclass "
                        "AND objid = (SELECT oid FROM pg_extension WHERE extname = 'pg_envelope')") == 1
    # the same types on every node (shard DDL names them)
    assert citus.on_workers("SELECT count(*) FROM pg_type WHERE typnamespace = 'envelope'::regnamespace "
                            "AND typname LIKE 'encrypted\\_%'") == ["3", "3"]


def test_extension_update_reaches_workers(citus):
    """ALTER EXTENSION pg_envelope UPDATE on the coordinator updates every worker (in a
    database of its own, with its own Citus metadata)."""
    db = "citus_upd"
    for node in citus.nodes:
        node.sql(f"CREATE DATABASE {db}")  # Citus does not propagate it (a NOTICE says so)
        node.sql("CREATE EXTENSION citus", dbname=db)
    co = citus.coordinator
    co.sql("SELECT citus_set_coordinator_host('127.0.0.1', %s)", (co.port,), dbname=db)
    for w in citus.workers:
        co.sql("SELECT citus_add_node('127.0.0.1', %s)", (w.port,), dbname=db)
    co.sql("CREATE EXTENSION pg_envelope VERSION '0.1.0'", dbname=db)
    ver = "SELECT extversion FROM pg_extension WHERE extname = 'pg_envelope'"
    assert [w.scalar(ver, dbname=db) for w in citus.workers] == ["0.1.0", "0.1.0"]
    co.sql("ALTER EXTENSION pg_envelope UPDATE", dbname=db)
    default = co.scalar("SELECT default_version FROM pg_available_extensions WHERE name = 'pg_envelope'", dbname=db)
    assert default != "0.1.0" and co.scalar(ver, dbname=db) == default
    assert [w.scalar(ver, dbname=db) for w in citus.workers] == [default, default]


def test_volatility_decides_where_functions_run(citus):
    vol = dict(citus.sql("SELECT DISTINCT proname, provolatile FROM pg_proc WHERE pronamespace = 'envelope'::regnamespace "
                         "AND proname IN ('encrypt_field', 'decrypt_field')"))
    assert vol == {"encrypt_field": "v", "decrypt_field": "s"}


def test_keys_are_identical_on_every_node(citus):
    """Keys and grants made on the coordinator (in the fixture) are on every worker, row
    for row, without any copying by hand."""
    want = citus.assert_keys_everywhere()
    assert {k["name"] for k in want["key"]} >= {K1, K2, KR}
    assert len(want["key_grant"]) >= 6
    for w in citus.workers:
        # a worker decrypts a coordinator's ciphertext by itself (same master key)
        ct = citus.scalar("SELECT envelope.encrypt_field('on the coordinator', %s, 'ctx')::text", (K1,))
        assert w.scalar("SELECT envelope.decrypt_field(%s::envelope.encrypted_text, 'ctx')", (ct,),
                        dbname=DB) == "on the coordinator"


def test_key_lifecycle_reaches_worker_backends_at_once(citus):
    """Each step of a key's life on the coordinator is on every worker when the
    coordinator's statement returns, and a worker backend that holds the key's DEK in its
    caches stops (or starts again) at its very next statement."""
    k = "life"
    citus.sql("SELECT envelope.create_key(%s)", (k,))
    citus.assert_keys_everywhere()
    ct = citus.scalar("SELECT envelope.encrypt_field('alive', %s)::text", (k,))
    conns = [w.connect(DB) for w in citus.workers]  # one backend on each worker, kept open

    def on_each_worker(expect_code=None):
        out = []
        for conn in conns:
            if expect_code:
                out.append(fails(conn, "SELECT envelope.decrypt_field(%s::envelope.encrypted_text)", (ct,)))
            else:
                with conn.cursor() as cur:
                    cur.execute("SELECT envelope.decrypt_field(%s::envelope.encrypted_text)", (ct,))
                    out.append(cur.fetchone()[0])
        return out

    assert on_each_worker() == ["alive", "alive"]  # now cached in each worker's backend and shared cache
    v2 = citus.scalar("SELECT envelope.rotate_key(%s)", (k,))
    citus.assert_keys_everywhere()
    for conn in conns:
        with conn.cursor() as cur:
            cur.execute("SELECT (envelope.key_of(envelope.encrypt_field('x', %s))).version", (k,))
            assert cur.fetchone()[0] == v2  # the worker's backend encrypts with the new version at once
    citus.sql("SELECT envelope.rewrap_key(%s)", (k,))
    citus.assert_keys_everywhere()
    assert on_each_worker() == ["alive", "alive"]
    citus.sql("SELECT envelope.disable_key(%s)", (k,))
    citus.assert_keys_everywhere()
    errs = on_each_worker(expect_code=True)
    assert {e["sqlstate"] for e in errs} == {"55000"} and all("disabled" in e["message"] for e in errs), errs
    citus.sql("SELECT envelope.enable_key(%s)", (k,))
    assert on_each_worker() == ["alive", "alive"]
    citus.sql("SELECT envelope.destroy_key(%s)", (k,))
    citus.assert_keys_everywhere()
    errs = on_each_worker(expect_code=True)
    assert all(e["sqlstate"] == "55000" and "destroyed" in e["message"] for e in errs), errs
    for w in citus.workers:
        # the worker's own proof: no wrapped DEK, no shared cache entry; the old row
        # versions go with the documented VACUUM FULL, run on the worker
        v = dict((r[0], r[1]) for r in w.sql("SELECT check_name, ok FROM envelope.verify_destroyed(%s)", (k,),
                                               dbname=DB))
        assert v["key destroyed"] and v["wrapped DEKs"] and v["shared cache"], v
        w.sql("VACUUM FULL envelope.data_key", dbname=DB)
        v = dict((r[0], r[1]) for r in w.sql("SELECT check_name, ok FROM envelope.verify_destroyed(%s)", (k,),
                                               dbname=DB))
        assert all(v.values()), v
    for conn in conns:
        conn.close()


def test_aborted_key_change_reaches_no_worker(citus):
    before = citus.assert_keys_everywhere()
    conn = citus.coordinator.connect(DB)
    conn.autocommit = False
    with conn.cursor() as cur:
        cur.execute("SELECT envelope.create_key('never')")
        cur.execute("SELECT envelope.rotate_key(%s)", (K2,))
    conn.rollback()
    conn.close()
    assert citus.assert_keys_everywhere() == before


def test_more_key_changes_than_prepared_slots(citus):
    """Each key change is a prepared transaction on every worker; a worker keeps at most
    32 waiting at once and frees those committed at its next PREPARE, so 40 keys made one
    after the other, with no decrypt on the workers in between, all arrive."""
    for i in range(40):
        citus.sql("SELECT envelope.create_key(%s)", (f"many_{i}",))
    names = {k["name"] for k in citus.assert_keys_everywhere()["key"]}
    assert {f"many_{i}" for i in range(40)} <= names
    ct = citus.scalar("SELECT envelope.encrypt_field('many', 'many_39')::text")
    for w in citus.workers:
        assert w.scalar("SELECT envelope.decrypt_field(%s::envelope.encrypted_text)", (ct,), dbname=DB) == "many"


def test_key_change_fails_everywhere_when_a_worker_is_down(citus):
    """Two-phase commit: with a worker stopped, a key change fails on the coordinator and
    leaves no trace on the other worker; once the worker is back, it works."""
    before = citus.assert_keys_everywhere()
    down = citus.workers[1]
    down.stop()
    try:
        e = fails(citus.coordinator.connect(DB), "SELECT envelope.create_key('while_down')")
        assert e["sqlstate"].startswith("08") or e["sqlstate"] in ("XX000", "58000"), e
    finally:
        down.start()
    assert citus.assert_keys_everywhere() == before
    citus.sql("SELECT envelope.create_key('while_down')")
    assert "while_down" in {k["name"] for k in citus.assert_keys_everywhere()["key"]}


def test_key_changes_refused_on_workers(citus):
    w = citus.workers[0]
    for q, args in (("SELECT envelope.create_key('on_worker')", None),
                    ("SELECT envelope.rotate_key(%s)", (K1,)),
                    ("SELECT envelope.grant_key(%s, %s, 'decrypt')", (K2, "postgres")),
                    ("UPDATE envelope.key SET state = 'disabled' WHERE name = %s", (K1,))):
        e = fails(w.connect(DB), q, args)
        assert e["sqlstate"] == "0A000" and "Citus worker" in e["message"], e
    citus.assert_keys_everywhere()
    # what the coordinator runs on the workers is not for anyone else
    e = fails(w.connect(DB, user=APP), "SELECT envelope.apply_key_changes('{}')")
    assert e["sqlstate"] == "42501", e
    e = fails(citus.coordinator.connect(DB), "SELECT envelope.apply_key_changes('{}')")
    assert e["sqlstate"] == "0A000", e
    e = fails(w.connect(DB), "SELECT envelope.apply_key_changes('{\"pg_class\": {}}')")
    assert e["sqlstate"] == "22023", e
    e = fails(w.connect(DB), "SELECT envelope.citus_sync_keys()")
    assert e["sqlstate"] == "0A000", e


def test_grants_reach_workers(citus, dist):
    q = "SELECT envelope.decrypt_field(t, id::text) FROM dist WHERE id = 7"  # runs on a worker
    assert citus.scalar(q, user=APP) == plain(7)[0]
    citus.sql("SELECT envelope.revoke_key(%s, %s, 'decrypt')", (K1, APP))
    try:
        citus.assert_keys_everywhere()
        e = fails(citus.coordinator.connect(DB, user=APP), q)
        assert e["sqlstate"] == "42501", e
    finally:
        citus.sql("SELECT envelope.grant_key(%s, %s, 'decrypt')", (K1, APP))
    assert citus.scalar(q, user=APP) == plain(7)[0]


def test_citus_sync_keys_repairs_a_worker(citus):
    """A worker whose key tables drifted (here: changed by a superuser through the apply
    function itself) is made equal to the coordinator again."""
    want = citus.assert_keys_everywhere()
    w = citus.workers[0]
    # from a session whose search_path holds look-alikes of what the function's
    # statements call (made on the coordinator: Citus creates them on the workers, which
    # refuse such DDL themselves; Citus does not propagate operators): the statements
    # resolve only to pg_catalog
    citus.sql("CREATE SCHEMA IF NOT EXISTS hostile")
    citus.sql("CREATE OR REPLACE FUNCTION hostile.jsonb_populate_recordset(anyelement, jsonb) RETURNS SETOF anyelement "
              "LANGUAGE plpgsql AS $$BEGIN RAISE EXCEPTION 'hijacked'; END$$")
    citus.sql("CREATE OR REPLACE FUNCTION hostile.to_jsonb(anyelement) RETURNS jsonb "
              "LANGUAGE plpgsql AS $$BEGIN RAISE EXCEPTION 'hijacked'; END$$")
    assert w.scalar("SELECT count(*) FROM pg_proc WHERE pronamespace = 'hostile'::regnamespace", dbname=DB) == 2
    hostile = w.connect(DB)
    with hostile.cursor() as cur:
        cur.execute("SET search_path = hostile, public, pg_catalog")
        cur.execute("""SELECT envelope.apply_key_changes(pg_catalog.jsonb_build_object(
               'key_grant', jsonb_build_object('delete', (SELECT jsonb_agg(g) FROM envelope.key_grant g)),
               'kms', jsonb_build_object('upsert', jsonb_build_array(jsonb_build_object(
                   'name', 'stray', 'provider', 'local', 'options', '{}'::jsonb, 'created_at', now())))))""")
    hostile.close()
    assert citus.key_tables(w) != want
    assert w.scalar("SELECT count(*) FROM envelope.key_grant", dbname=DB) == 0
    assert citus.scalar("SELECT envelope.citus_sync_keys()") == len(citus.workers)
    assert citus.assert_keys_everywhere() == want
    # idempotent: nothing to change the second time
    assert citus.scalar("SELECT envelope.citus_sync_keys()") == len(citus.workers)
    assert citus.assert_keys_everywhere() == want


# ---- 2. distributed tables -------------------------------------------------------------

N = 60


def plain(i: int) -> tuple[str, bytes, dict]:
    return f"secret #{i} of the dist table", bytes([i % 256, 0, 255, i % 7]), {"n": i, "tag": f"r{i}"}


@pytest.fixture(scope="module")
def dist(citus) -> str:
    citus.sql("CREATE TABLE dist (id bigint PRIMARY KEY, t envelope.encrypted_text, b envelope.encrypted_bytea, "
              "j envelope.encrypted_jsonb)")
    citus.sql("SELECT create_distributed_table('dist', 'id')")
    citus.sql(f"GRANT ALL ON dist TO {APP}")
    conn = citus.coordinator.connect(DB, user=APP)
    with conn.cursor() as cur:
        for i in range(1, N + 1):
            t, b, j = plain(i)
            cur.execute("INSERT INTO dist VALUES (%s, envelope.encrypt_field(%s, %s, %s::text), "
                        "envelope.encrypt_field(%s::bytea, %s), envelope.encrypt_field(%s::jsonb, %s, %s::text))",
                        (i, t, K1, i, psycopg2.Binary(b), K2, json.dumps(j), K1, i))
    return "dist"


def decrypted_dist(citus, table="dist", user=APP) -> dict[int, tuple]:
    rows = citus.sql(f"SELECT id, envelope.decrypt_field(t, id::text), envelope.decrypt_field(b), "
                     f"envelope.decrypt_field(j, id::text) FROM {table}", user=user)
    return {r[0]: (r[1], bytes(r[2]), r[3]) for r in rows}


def test_distributed_roundtrip_all_shards(citus, dist):
    # every shard holds rows, on both workers
    per_shard = citus.on_placements(dist, "SELECT count(*) FROM %s")
    assert len(per_shard) == SHARDS and all(int(r[2]) > 0 for r in per_shard)
    assert {r[0] for r in per_shard} == {w.port for w in citus.workers}
    assert sum(int(r[2]) for r in per_shard) == N
    assert decrypted_dist(citus) == {i: plain(i) for i in range(1, N + 1)}
    # the wrong context fails on the worker that holds the row, with the extension's error
    conn = citus.coordinator.connect(DB, user=APP)
    e = fails(conn, "SELECT envelope.decrypt_field(t, 'not the id') FROM dist WHERE id = 7")
    assert e["sqlstate"] == "22000" and "could not decrypt" in e["message"]
    assert plain(7)[0] not in e["text"]


def test_decrypt_is_pushed_down_encrypt_is_not(citus, dist):
    plan = explain(citus, "SELECT id, envelope.decrypt_field(t, id::text) FROM dist WHERE id = 3")
    task = re.search(r"Query: (.*)", plan).group(1)
    assert "envelope.decrypt_field(t, (id)::text)" in task and re.search(r"FROM public\.dist_\d+ ", task)  # a shard
    assert re.search(r"Node: host=127\.0\.0\.1 port=(\d+)", plan).group(1) in {str(w.port) for w in citus.workers}
    # multi-shard: the function runs in every task, the coordinator only concatenates
    plan = explain(citus, "SELECT envelope.decrypt_field(t, id::text) FROM dist")
    assert f"Task Count: {SHARDS}" in plan and "envelope.decrypt_field" in re.search(r"Query: (.*)", plan).group(1)
    # INSERT ... VALUES: the coordinator evaluates the VOLATILE encrypt_field, the shard
    # query carries the ciphertext and not the plaintext
    secret = "plaintext that must stay on the coordinator"
    plan = explain(citus, "INSERT INTO dist (id, t) VALUES (1000, envelope.encrypt_field(%s, %s, '1000'))", (secret, K1))
    task = re.search(r"Query: (.*)", plan).group(1)
    assert secret not in plan and "encrypt_field" not in task
    assert re.search(r"'env1:[A-Za-z0-9+/=]+'::envelope\.encrypted_text", task)


def test_insert_values_sends_only_ciphertext_to_workers(citus, dist):
    """The workers' statement log (log_statement = all for this test) shows the shard
    INSERT with a ciphertext, never the plaintext."""
    secret = "only the coordinator sees this 4c1f"
    for w in citus.workers:
        w.sql("ALTER SYSTEM SET log_statement = 'all'", dbname=DB)
        w.sql("SELECT pg_reload_conf()", dbname=DB)
    since = {w.name: w.log_position() for w in citus.workers}
    try:
        conn = citus.coordinator.connect(DB, user=APP)
        with conn.cursor() as cur:
            cur.execute("INSERT INTO dist (id, t) VALUES (2001, envelope.encrypt_field(%s, %s, '2001')), "
                        "(2002, envelope.encrypt_field(%s, %s, '2002'))", (secret, K1, secret, K1))
        assert citus.sql("SELECT envelope.decrypt_field(t, id::text) FROM dist WHERE id IN (2001, 2002)") == \
            [(secret,), (secret,)]
    finally:
        for w in citus.workers:
            w.sql("ALTER SYSTEM RESET log_statement", dbname=DB)
            w.sql("SELECT pg_reload_conf()", dbname=DB)
        citus.sql("DELETE FROM dist WHERE id IN (2001, 2002)")
    logs = {w.name: w.read_log(since[w.name]) for w in citus.workers}
    inserts = [line for log in logs.values() for line in log.splitlines() if re.search(r"INSERT INTO public\.dist_\d+", line)]
    assert inserts and all("'env1:" in line for line in inserts), inserts
    for w in citus.workers:
        w.assert_log_free_of([secret], since[w.name])


def test_insert_select_across_shards(citus, dist):
    citus.sql("CREATE TABLE dist_moved (id bigint PRIMARY KEY, orig bigint, t envelope.encrypted_text, "
              "t2 envelope.encrypted_text)")
    citus.sql("SELECT create_distributed_table('dist_moved', 'id')")
    # rows move to other shards (new distribution key): the ciphertext is copied as is,
    # and re-encrypted by the workers (encrypt_field in the pushed-down SELECT)
    q = ("INSERT INTO dist_moved SELECT id + 100000, id, t, envelope.encrypt_field(envelope.decrypt_field(t, id::text) "
         "|| ' (re-encrypted)', %s, (id + 100000)::text) FROM dist WHERE id <= %s")
    plan = explain(citus, q, (K2, N))
    assert "INSERT/SELECT method: repartition" in plan and "envelope.encrypt_field" in re.search(r"Query: (.*)", plan).group(1)
    citus.sql(q, (K2, N))
    rows = citus.sql("SELECT orig, envelope.decrypt_field(t, orig::text), envelope.decrypt_field(t2, id::text), "
                     "(envelope.key_of(t2)).key_name FROM dist_moved")
    assert sorted(rows) == [(i, plain(i)[0], plain(i)[0] + " (re-encrypted)", K2) for i in range(1, N + 1)]
    # rows really changed shards
    moved = citus.scalar("""
        SELECT count(*) FROM dist_moved m
        WHERE get_shard_id_for_distribution_column('dist', m.orig)
              - (SELECT min(shardid) FROM pg_dist_shard WHERE logicalrelid = 'dist'::regclass)
           <> get_shard_id_for_distribution_column('dist_moved', m.id)
              - (SELECT min(shardid) FROM pg_dist_shard WHERE logicalrelid = 'dist_moved'::regclass)""")
    assert moved > 0


def test_copy_text_and_binary(citus, dist):
    citus.sql("CREATE TABLE dist_copy (id bigint PRIMARY KEY, t envelope.encrypted_text, b envelope.encrypted_bytea, "
              "j envelope.encrypted_jsonb)")
    citus.sql("SELECT create_distributed_table('dist_copy', 'id')")
    citus.sql(f"GRANT ALL ON dist_copy TO {APP}")
    conn = citus.coordinator.connect(DB)
    with conn.cursor() as cur:
        out = io.StringIO()
        cur.copy_expert("COPY (SELECT id, t, b, j FROM dist WHERE id <= 30 ORDER BY id) TO STDOUT", out)
        text_dump = out.getvalue()
        assert text_dump.count("env1:") == 90
        for i in range(1, 31):
            assert plain(i)[0] not in text_dump
        cur.copy_expert("COPY dist_copy FROM STDIN", io.StringIO(text_dump))
        binary = io.BytesIO()
        cur.copy_expert("COPY (SELECT id, t, b, j FROM dist WHERE id > 30 ORDER BY id) TO STDOUT (FORMAT binary)", binary)
        binary.seek(0)
        cur.copy_expert("COPY dist_copy FROM STDIN (FORMAT binary)", binary)
    assert decrypted_dist(citus, "dist_copy") == decrypted_dist(citus, "dist")
    assert len(citus.on_placements("dist_copy", "SELECT count(*) FROM %s")) == SHARDS
    # malformed input is refused (22P02) on the coordinator, the input not echoed by the
    # extension's message (PostgreSQL's own CONTEXT line of a failed COPY row quotes the
    # field, as without Citus: see test_parallel_and_privileges.py)
    bad = "not a ciphertext: card 4111 1111 1111 1111"
    with conn.cursor() as cur, pytest.raises(psycopg2.Error) as e:
        cur.copy_expert("COPY dist_copy (id, t) FROM STDIN", io.StringIO(f"99999\t{bad}\n"))
    err = pg_error(e)
    assert err["sqlstate"] == "22P02" and "encrypted_text" in err["message"]
    assert "4111" not in f"{err['message']} {err['detail']} {err['hint']}"
    assert citus.scalar("SELECT count(*) FROM dist_copy WHERE id = 99999") == 0


def test_update_through_a_materialized_cte(citus, dist):
    """UPDATE ... SET col = encrypt_field(...) is refused by Citus (0A000, VOLATILE);
    the same change through a MATERIALIZED CTE works, also multi-shard."""
    citus.sql("""WITH n AS MATERIALIZED (
                   SELECT id, envelope.encrypt_field(envelope.decrypt_field(t, id::text) || ' v2', %s, id::text) AS c
                   FROM dist WHERE id <= %s)
                 UPDATE dist SET t = n.c FROM n WHERE dist.id = n.id""", (K1, N))
    got = decrypted_dist(citus)
    assert {i: got[i][0] for i in range(1, N + 1)} == {i: plain(i)[0] + " v2" for i in range(1, N + 1)}
    # single row, constant arguments, through a scalar subquery
    citus.sql("UPDATE dist SET t = (SELECT envelope.encrypt_field(%s, %s, '5')) WHERE id = 5", (plain(5)[0], K1))
    citus.sql("""WITH n AS MATERIALIZED (SELECT id, envelope.encrypt_field(
                   left(envelope.decrypt_field(t, id::text), -3), %s, id::text) AS c FROM dist WHERE id <= %s AND id <> 5)
                 UPDATE dist SET t = n.c FROM n WHERE dist.id = n.id""", (K1, N))
    assert decrypted_dist(citus) == {i: plain(i) for i in range(1, N + 1)}


def test_rotation_reaches_workers(citus, dist):
    v = citus.scalar("SELECT envelope.rotate_key(%s)", (K1,))
    citus.sql("INSERT INTO dist (id, t) VALUES (3000, envelope.encrypt_field('after rotation', %s, '3000'))", (K1,))
    try:
        assert citus.scalar("SELECT (envelope.key_of(t)).version FROM dist WHERE id = 3000") == v
        rows = citus.sql("SELECT id, envelope.decrypt_field(t, id::text) FROM dist WHERE id IN (1, 3000) ORDER BY id")
        assert rows == [(1, plain(1)[0]), (3000, "after rotation")]
    finally:
        citus.sql("DELETE FROM dist WHERE id = 3000")


# ---- 3. reference tables ---------------------------------------------------------------


def test_reference_table_with_encrypted_columns(citus, dist):
    citus.sql("CREATE TABLE ref (code text PRIMARY KEY, label envelope.encrypted_text, data envelope.encrypted_jsonb)")
    citus.sql("SELECT create_reference_table('ref')")
    citus.sql(f"GRANT ALL ON ref TO {APP}")
    conn = citus.coordinator.connect(DB, user=APP)
    with conn.cursor() as cur:
        cur.execute("INSERT INTO ref VALUES ('a', envelope.encrypt_field('label a', %s, 'a'), "
                    "envelope.encrypt_field('{\"k\": 1}'::jsonb, %s))", (KR, KR))
        # INSERT ... SELECT from a distributed table: encrypted on the workers, pulled to
        # the coordinator, then the same bytes written to every placement
        cur.execute("INSERT INTO ref SELECT 'd' || id, envelope.encrypt_field('label ' || id, %s, 'd' || id), NULL "
                    "FROM dist WHERE id <= 10", (KR,))
    placements = citus.on_placements(
        "ref", "SELECT md5(string_agg(code || label::text || coalesce(data::text, ''), ',' ORDER BY code)) FROM %s")
    assert {p[0] for p in placements} == {n.port for n in citus.nodes}
    assert len({p[2] for p in placements}) == 1  # one ciphertext everywhere
    rows = citus.sql("SELECT code, envelope.decrypt_field(label, code), envelope.decrypt_field(data) FROM ref ORDER BY code",
                     user=APP)
    assert rows == [("a", "label a", {"k": 1}), *sorted((f"d{i}", f"label {i}", None) for i in range(1, 11))]
    # a join with the distributed table: decrypted on the workers, from their placement
    q = ("SELECT d.id, envelope.decrypt_field(r.label, r.code), envelope.decrypt_field(d.t, d.id::text) "
         "FROM dist d JOIN ref r ON r.code = 'd' || d.id")
    task = re.search(r"Query: (.*)", explain(citus, q)).group(1)
    assert "envelope.decrypt_field(r.label, r.code)" in task
    assert sorted(citus.sql(q, user=APP)) == [(i, f"label {i}", plain(i)[0]) for i in range(1, 11)]
    # each worker reads its own placement by itself
    for w in citus.workers:
        shard = w.scalar("SELECT 'ref_' || shardid FROM pg_dist_shard WHERE logicalrelid = 'ref'::regclass", dbname=DB)
        assert w.scalar(f"SELECT envelope.decrypt_field(label, code) FROM {shard} WHERE code = 'd4'", dbname=DB) == "label 4"


# ---- 4. protected columns ----------------------------------------------------------------

USERS = {1: "alice@example.com", 2: "bob@example.org", 3: "carol@example.net", 4: "alice@example.com"}


def sealed_per_shard(citus, table: str, col: str) -> list[tuple[int, int]]:
    """(sealed, all) per shard, read on the workers as the superuser (no decrypt)."""
    res = citus.on_placements(table, f"SELECT count(*) FILTER (WHERE {col}::text LIKE 'penv1:%%') || '/' || count(*) FROM %s")
    return [tuple(map(int, r[2].split("/"))) for r in res]


@pytest.mark.parametrize("order", ["distribute_then_protect", "protect_then_distribute"])
def test_protected_column_on_distributed_table(citus, order):
    table = f"users_{order[:4]}"
    citus.sql(f"CREATE TABLE {table} (id bigint PRIMARY KEY, email text)")
    citus.sql(f"GRANT ALL ON {table} TO {APP}")
    # Citus refuses tables with triggers unless citus.enable_unsafe_triggers is on (here
    # only for the DDL; the DML below runs without it)
    conn = citus.coordinator.connect(DB)
    with conn.cursor() as cur:
        cur.execute("SET citus.enable_unsafe_triggers = on")
        if order == "distribute_then_protect":
            cur.execute("SELECT create_distributed_table(%s, 'id')", (table,))
            cur.execute("SELECT envelope.protect_column(%s, 'email', %s, context_column => 'id', blind_index => false)",
                        (table, K1))
        else:
            cur.execute("SELECT envelope.protect_column(%s, 'email', %s, context_column => 'id', blind_index => false)",
                        (table, K1))
            cur.execute("SELECT create_distributed_table(%s, 'id')", (table,))
    pid = citus.scalar("SELECT protection_id FROM envelope.protected_column WHERE tbl = %s::regclass", (table,))
    # the trigger (ENABLE ALWAYS) and the CHECK reach every shard
    for _, _, r in citus.on_placements(table, "SELECT string_agg(tgname || ':' || tgenabled::text, ',') FROM pg_trigger "
                                              "WHERE tgrelid = '%s'::regclass AND NOT tgisinternal"):
        assert re.fullmatch(rf"zz_envelope_protect_{pid}_\d+:A", r), r
    for _, _, r in citus.on_placements(table, "SELECT string_agg(conname, ',') FROM pg_constraint "
                                              "WHERE conrelid = '%s'::regclass AND contype = 'c'"):
        assert re.fullmatch(rf"envelope_protected_{pid}(_\d+)?", r), r  # the shard suffix: only if added after

    app = citus.coordinator.connect(DB, user=APP)
    with app.cursor() as cur:
        for i, email in USERS.items():
            cur.execute(f"INSERT INTO {table} VALUES (%s, %s) RETURNING email", (i, email))
            assert cur.fetchone()[0] == email
        cur.execute(f"SELECT id, email, envelope.unseal(email) FROM {table} ORDER BY id")
        assert cur.fetchall() == [(i, e, e) for i, e in USERS.items()]
    shards = sealed_per_shard(citus, table, "email")
    assert sum(n for _, n in shards) == len(USERS) and all(s == n for s, n in shards)
    # the superuser (no decrypt grant) reads the sealed form through the coordinator
    su = dict(citus.sql(f"SELECT id, email::text FROM {table}"))
    assert all(v.startswith("penv1:") for v in su.values()) and not set(su.values()) & set(USERS.values())

    with app.cursor() as cur:
        # UPDATE on a worker's shard re-seals through the trigger
        cur.execute(f"UPDATE {table} SET email = 'dave@example.com' WHERE id = 2")
        # INSERT ... SELECT to other rows (other shards): opened and re-bound to each new row
        cur.execute(f"INSERT INTO {table} SELECT id + 100, email FROM {table}")
        cur.execute(f"SELECT id, email FROM {table} ORDER BY id")
        want = {**USERS, 2: "dave@example.com"}
        assert cur.fetchall() == sorted([*want.items(), *((i + 100, e) for i, e in want.items())])
    su = dict(citus.sql(f"SELECT id, email::text FROM {table}"))
    assert su[1] != su[101]  # bound to its row: a different sealed value
    shards = sealed_per_shard(citus, table, "email")
    assert sum(n for _, n in shards) == 2 * len(USERS) and all(s == n for s, n in shards)


def test_blind_index_search_on_distributed_table(citus):
    """Citus sends a worker the query as text: a search value of a protected column is
    printed by blind_text's output function, which never shows plaintext. That text is
    refused when read back (22P02) instead of being compared as the plaintext
    "(unsealed)" (which matched nothing, silently); a subquery or unseal() finds the rows."""
    citus.sql("CREATE TABLE users_bi (id bigint PRIMARY KEY, email text)")
    citus.sql(f"GRANT ALL ON users_bi TO {APP}")
    conn = citus.coordinator.connect(DB)
    with conn.cursor() as cur:
        cur.execute("SET citus.enable_unsafe_triggers = on")
        cur.execute("SELECT create_distributed_table('users_bi', 'id')")
        cur.execute("SELECT envelope.protect_column('users_bi', 'email', %s, context_column => 'id')", (K1,))
    app = citus.coordinator.connect(DB, user=APP)
    with app.cursor() as cur:
        for i, email in USERS.items():
            cur.execute("INSERT INTO users_bi VALUES (%s, %s)", (i, email))
    e = fails(citus.coordinator.connect(DB, user=APP), "SELECT id FROM users_bi WHERE email = 'alice@example.com'")
    assert e["sqlstate"] == "22P02" and "blind_text" in e["message"], e
    found = citus.sql("SELECT id FROM users_bi WHERE email = (SELECT 'alice@example.com') ORDER BY id", user=APP)
    assert found == [(1,), (4,)]
    found = citus.sql("SELECT id FROM users_bi WHERE envelope.unseal(email) = 'alice@example.com' ORDER BY id", user=APP)
    assert found == [(1,), (4,)]


def test_protect_populated_distributed_column(citus):
    """seal_rows() on a distributed table seals the rows of every shard (one distributed
    UPDATE: each shard's trigger seals its rows), validates the CHECK on every shard and
    marks the column protected."""
    citus.sql("CREATE TABLE users_old (id bigint PRIMARY KEY, email text)")
    citus.sql("SELECT create_distributed_table('users_old', 'id')")
    citus.sql(f"GRANT ALL ON users_old TO {APP}")
    citus.sql("INSERT INTO users_old SELECT g, 'user' || g || '@example.com' FROM generate_series(1, 40) g")
    conn = citus.coordinator.connect(DB)
    with conn.cursor() as cur:
        cur.execute("SET citus.enable_unsafe_triggers = on")
        cur.execute("SELECT envelope.protect_column('users_old', 'email', %s, context_column => 'id', "
                    "blind_index => false)", (K1,))
    assert sum(s for s, _ in sealed_per_shard(citus, "users_old", "email")) == 0
    citus.sql("CALL envelope.seal_rows('users_old', 'email')")
    per_shard = sealed_per_shard(citus, "users_old", "email")
    assert len(per_shard) >= 2 and all(s == n for s, n in per_shard) and sum(n for _, n in per_shard) == 40, per_shard
    assert citus.scalar("SELECT rows_sealed FROM envelope.protected_columns WHERE tbl = 'users_old'::regclass") == 40
    assert citus.scalar("SELECT state FROM envelope.protected_columns WHERE tbl = 'users_old'::regclass") == "protected"
    for _, _, r in citus.on_placements("users_old", "SELECT bool_and(convalidated)::text FROM pg_constraint "
                                                    "WHERE conrelid = '%s'::regclass AND contype = 'c'"):
        assert r == "true"
    assert citus.sql("SELECT id, envelope.unseal(email) FROM users_old WHERE id IN (7, 33) ORDER BY id", user=APP) == \
        [(7, "user7@example.com"), (33, "user33@example.com")]


# ---- 5. logs -------------------------------------------------------------------------------


def test_no_master_key_in_any_log(citus, dist):
    for node in citus.nodes:
        node.assert_log_free_of(key_spellings(node.master_key_hex))
        assert node.master_key_hex == citus.coordinator.master_key_hex


def test_key_columns_and_retirement_count_the_shards(citus, dist):
    """key_columns on the coordinator counts the values in the shards of a distributed
    table (not its empty shell), so retire_unreferenced_versions keeps every version a
    shard still holds, on every node."""
    counts = citus.sql("SELECT relation::text, column_name::text, version, value_count FROM envelope.key_columns(%s) "
                       "WHERE relation = 'dist'::regclass ORDER BY 2, 3", (K1,))
    in_shards = citus.sql("SELECT (envelope.key_of(t)).version, count(*) FROM dist WHERE t IS NOT NULL "
                          "AND (envelope.key_of(t)).key_name = %s GROUP BY 1 ORDER BY 1", (K1,))
    assert in_shards and [(r[2], r[3]) for r in counts if r[1] == "t"] == [tuple(r) for r in in_shards], (counts, in_shards)
    citus.sql("SELECT envelope.rotate_key(%s)", (K1,))
    retired = citus.sql("SELECT version, values_referencing, retired FROM envelope.retire_unreferenced_versions(%s)",
                        (K1,))
    used = {r[0] for r in in_shards}
    assert all(not r[2] for r in retired if r[0] in used), retired
    citus.assert_keys_everywhere()
    assert decrypted_dist(citus) == {i: plain(i) for i in range(1, N + 1)}


def test_reencrypt_refuses_a_distributed_table(citus, dist):
    """envelope.reencrypt() walks the local heap's blocks; on a distributed table that
    would re-encrypt nothing, so it refuses instead of reporting a finished run."""
    for sql in ("CALL envelope.reencrypt('dist', 't', context_column => 'id')",
                "SELECT envelope.start_reencryption('dist', 't')"):
        e = fails(citus.coordinator.connect(DB), sql)
        assert e["sqlstate"] == "0A000" and "Citus" in e["message"], e
    assert citus.scalar("SELECT count(*) FROM envelope.reencryption WHERE tbl = 'dist'::regclass") == 0


def test_each_node_unwraps_a_dek_once(citus, dist):
    """Each node has its own shared DEK cache: however many worker backends decrypt (Citus
    opens several per worker, and every coordinator connection brings its own), a worker
    calls its KMS at most once per DEK within the TTL."""
    versions = citus.scalar("SELECT count(*) FROM (SELECT DISTINCT (envelope.key_of(t)).key_name, "
                            "(envelope.key_of(t)).version FROM dist WHERE t IS NOT NULL) s")
    assert versions >= 1
    for node in citus.nodes:
        node.sql("SELECT envelope.cache_flush(), envelope.stats_reset()", dbname=DB)
    q = "SELECT count(envelope.decrypt_field(t, id::text)) FROM dist"
    conns = [citus.coordinator.connect(DB, user=APP) for _ in range(6)]
    for _ in range(3):
        for conn in conns:
            with conn.cursor() as cur:
                cur.execute("SET citus.max_adaptive_executor_pool_size = 4")
                cur.execute(q)
                assert cur.fetchone()[0] == citus.scalar("SELECT count(t) FROM dist")
    for conn in conns:
        conn.close()
    for w in citus.workers:
        unwraps, hits = w.sql("SELECT kms_unwraps, hits FROM envelope.stats", dbname=DB)[0]
        assert 1 <= unwraps <= versions, (w.port, unwraps, versions)
        assert hits >= 1, (w.port, hits)  # other backends of the worker found the DEK there
    assert citus.scalar("SELECT kms_unwraps FROM envelope.stats") == 0  # nothing decrypted on the coordinator
