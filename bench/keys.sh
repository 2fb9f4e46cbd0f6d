#!/usr/bin/env bash
# pg_envelope many-keys and new-connection benchmark (issue 14): one command, one throwaway cluster.
#
#   bench/keys.sh          # as root (the cluster then runs as "postgres") or as any user
#
# Measures, all in one run (everything as the superuser "postgres", local KMS):
#   1. per-row decrypt cost with many keys: tables t_K of BENCH_ROWS rows, row i's value
#      (74 bytes) = envelope.encrypt_field(val(i), 'k_<i % K>'), inserted ORDER BY random()
#      (rows in random key order), for K in BENCH_KEYS. Per K, in one session: one
#      warm-up run, then BENCH_RUNS rounds of [plaintext scan, decrypt scan]:
#        decrypt:  SELECT count(*) FROM t_K WHERE envelope.decrypt_field(v) IS NOT NULL
#        plain:    SELECT count(*) FROM t_plain WHERE length(v) IS NOT NULL
#      (t_plain: the same shape, id int pk + a text column of the same stored size).
#      Median µs/row, the backend's median on-CPU µs/row (/proc/<pid>/schedstat), the
#      ratio vs K=1 of the decrypt scan and of its net cost (decrypt - plain). Twice:
#      (A) default settings; (B) envelope.cache_entries = BENCH_CACHE_ENTRIES (postmaster,
#      in the config before the restart) and, when the build has it,
#      SET envelope.backend_cache_entries = 2*K in the session (detected with
#      current_setting('envelope.backend_cache_entries', true)).
#      Goals: K=10,000 <= 2x the per-row cost of K=1, K=100,000 <= 3x.
#   2. LWLock waits: pgbench -M prepared, BENCH_LW_CLIENTS clients, BENCH_LW_SECONDS s, each
#      transaction SELECT envelope.decrypt_field(v) FROM t_<BENCH_LW_KEYS> WHERE id = random;
#      another session samples pg_stat_activity every 10 ms (the pgbench backends'
#      wait_event_type / wait_event, first and last second skipped). Prints the share of
#      samples waiting on the LWLock "pg_envelope" and the top waits. In (A) and (B)
#      (in (B) the pgbench sessions get backend_cache_entries = 2*K through PGOPTIONS).
#      Goal: <= 2% LWLock.
#   3. create_key cost as the key count grows: the max(BENCH_KEYS) keys are created in
#      batches of 1,000 (one autocommit statement per batch, client-side time); ms/key of
#      the batches ending at 1k, 10k, 50k, 100k keys and the last (goal: flat).
#   4. first decrypt in a new connection (after one connection decrypted: warm shared
#      cache): BENCH_CONNS rounds (after 3 untimed), each one new connection (psycopg2,
#      Unix socket, autocommit) running SELECT envelope.decrypt_field(v) FROM t_1 WHERE id=1
#      and one running SELECT v FROM t_plain WHERE id=1, order alternating; client-side
#      connect + query + fetch. Median ms each and the median of the paired differences
#      (goal <= 0.5 ms).
#   5. pgbench -M prepared decrypt-by-pk (t_1) vs plaintext-by-pk (t_plain) TPS at
#      BENCH_TPS_CLIENTS clients, BENCH_TPS_SECONDS s each (in (A)); ratio (goal >= 0.9).
#
# Environment knobs (defaults in brackets):
#   BENCH_ROWS=200000            rows per table
#   BENCH_KEYS="1 1000 10000 100000"   key counts K (must contain 1)
#   BENCH_RUNS=5                 timed rounds per scan (after one warm-up)
#   BENCH_CACHE_ENTRIES=262144   envelope.cache_entries of configuration (B)
#   BENCH_LW_KEYS=10000          K of the table of part 2 (must be in BENCH_KEYS)
#   BENCH_LW_CLIENTS=8           pgbench clients of part 2
#   BENCH_LW_SECONDS=20          duration of part 2 (per configuration)
#   BENCH_CONNS=50               timed new connections per kind in part 4
#   BENCH_TPS_CLIENTS="1 2 4 8"  client counts of part 5
#   BENCH_TPS_SECONDS=10         seconds per pgbench run of part 5
#   BENCH_KEEP=0                 1: keep the temporary directory (cluster stopped)
#   PG_BIN=/usr/lib/postgresql/15/bin
# Runtime: about 4 min on 2 cores with the default BENCH_KEYS (measured 222 s on
# 2026-12-03; creating the 100,000 keys takes about 25 s: create_key is flat, part 3).
#
# Method. Server settings of bench/lib.sh (shared_buffers 1GB, fsync off, autovacuum off,
# no parallel workers, jit off); every table is VACUUM (FREEZE, ANALYZE)d and CHECKPOINTed
# after loading and fits in shared buffers. Configuration (B) is the same data directory
# restarted with the larger shared cache. Sanity checks (the script fails otherwise):
# every scan counts BENCH_ROWS rows; in (B) every decrypted value of every t_K equals its
# plaintext; every t_K uses exactly min(K, rows) distinct keys and its rows are not in id
# (key) order (|correlation| of id < 0.1); all keys exist; in (B) the two settings are in
# effect; pgbench reports no failed transaction; part 2 saw the pgbench backends in its
# samples; part 4 returned the right plaintext on every connection. Exit status 0 when
# the run completed and every check passed, whether or not the goals are met.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
ROWS=${BENCH_ROWS:-200000}
KEYS=${BENCH_KEYS:-1 1000 10000 100000}
RUNS=${BENCH_RUNS:-5}
CACHE_ENTRIES=${BENCH_CACHE_ENTRIES:-262144}
LW_KEYS=${BENCH_LW_KEYS:-10000}
LW_CLIENTS=${BENCH_LW_CLIENTS:-8}
LW_SECONDS=${BENCH_LW_SECONDS:-20}
CONNS=${BENCH_CONNS:-50}
TPS_CLIENTS=${BENCH_TPS_CLIENTS:-1 2 4 8}
TPS_SECONDS=${BENCH_TPS_SECONDS:-10}
KEEP=${BENCH_KEEP:-0}
PY=/usr/bin/python3
PORT=54332

die() { echo "keys.sh: $*" >&2; exit 2; }
for v in ROWS RUNS CACHE_ENTRIES LW_KEYS LW_CLIENTS LW_SECONDS CONNS TPS_SECONDS; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer"
done
for k in $KEYS $TPS_CLIENTS; do [[ $k =~ ^[1-9][0-9]*$ ]] || die "BENCH_KEYS / BENCH_TPS_CLIENTS: '$k' is not a positive integer"; done
[[ " $KEYS " == *" 1 "* ]] || die "BENCH_KEYS must contain 1 (the reference)"
[[ " $KEYS " == *" $LW_KEYS "* ]] || die "BENCH_LW_KEYS=$LW_KEYS must be one of BENCH_KEYS"
(( LW_SECONDS >= 3 )) || die "BENCH_LW_SECONDS must be >= 3"
[[ -x $PG_BIN/initdb && -x $PG_BIN/pg_ctl && -x $PG_BIN/psql && -x $PG_BIN/pgbench ]] ||
  die "PostgreSQL binaries (initdb, pg_ctl, psql, pgbench) not found in $PG_BIN"
[[ -x $PY ]] && "$PY" -c 'import psycopg2' 2>/dev/null || die "$PY with python3-psycopg2 is needed"
PKGLIBDIR=$("$PG_BIN/pg_config" --pkglibdir 2>/dev/null || echo /usr/lib/postgresql/15/lib)
[[ -e $PKGLIBDIR/pg_envelope.so ]] || die "$PKGLIBDIR/pg_envelope.so is not installed (make && make install)"

if [[ $(id -u) -eq 0 ]]; then
  RUN_USER=postgres
  id "$RUN_USER" >/dev/null 2>&1 || die "running as root needs a 'postgres' OS user"
  as_pg() { runuser -u "$RUN_USER" -- "$@"; }
else
  RUN_USER=$(id -un)
  as_pg() { "$@"; }
fi

TMP=""
PGDATA=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  if [[ -n $PGDATA && -f $PGDATA/postmaster.pid ]]; then
    if (( rc != 0 )) && [[ -f $TMP/server.log ]]; then
      echo "--- last lines of the server log ---" >&2
      tail -n 30 "$TMP/server.log" >&2
    fi
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m immediate -w stop >/dev/null 2>&1
  fi
  if [[ -n $TMP && -d $TMP ]]; then
    if [[ $KEEP == 1 ]]; then echo "kept $TMP" >&2; else rm -rf -- "$TMP"; fi
  fi
  (( rc != 0 )) && echo "keys.sh: FAILED (exit $rc)" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

T_START=$(date +%s)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/pg_envelope_keys_bench.XXXXXX")
chmod 700 "$TMP"
[[ $RUN_USER != "$(id -un)" ]] && chown "$RUN_USER": "$TMP"
cd "$TMP"
PGDATA=$TMP/data
SOCK=$TMP/sock
as_pg mkdir -m 700 "$SOCK"
as_pg sh -c "umask 077; od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > '$TMP/master.key'"

echo "pg_envelope many-keys benchmark  (temporary cluster in $TMP, run as OS user '$RUN_USER')"
as_pg "$PG_BIN/initdb" -D "$PGDATA" -U postgres --auth=trust -E UTF8 --no-locale >"$TMP/initdb.log" 2>&1 ||
  { cat "$TMP/initdb.log" >&2; exit 1; }
{
  echo
  echo "port = $PORT"
  echo "max_connections = 100"
  bench_server_settings "$SOCK" "$TMP/master.key"
} >>"$PGDATA/postgresql.conf"

start_pg() {
  as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$TMP/server.log" -w -t 60 start >/dev/null || {
    echo "server did not start; its log:" >&2; tail -20 "$TMP/server.log" >&2; exit 1; }
}
stop_pg() { as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null; }
start_pg

psql_su() { as_pg "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PORT" -U postgres "$@"; }
psql_su -d postgres -c "CREATE DATABASE bench" >/dev/null
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# The measurements (Python + psycopg2, run as the cluster's OS user).
as_pg sh -c "cat > '$TMP/keys_bench.py'" <<'PY'
import json, os, re, statistics, subprocess, sys, threading, time
import psycopg2

A = dict(arg.split("=", 1) for arg in sys.argv[2:])
PHASE = sys.argv[1]
SOCK, PORT, TMP, PG_BIN = A["sock"], A["port"], A["tmp"], A["pg_bin"]
ROWS, RUNS = int(A["rows"]), int(A["runs"])
KEYS = [int(k) for k in A["keys"].split()]
MAXK = max(KEYS)
VAL = ("left(format('%s|%s.%s@example.com|+1-555-%s', lpad(g::text, 7, '0'), md5(g::text), "
       "md5((g * 7)::text), lpad((g % 10000)::text, 4, '0')), 74)")


def log(msg):
    print(msg, flush=True)


def fail(msg):
    log("CHECK FAILED: " + msg)
    sys.exit(1)


def connect(options=None):
    c = psycopg2.connect(host=SOCK, port=PORT, dbname="bench", user="postgres", options=options or "")
    c.autocommit = True
    return c


def one(cur, sql, args=None):
    cur.execute(sql, args)
    return cur.fetchone()


def oncpu_ns(pid):
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def stats(cur):
    cur.execute("SELECT hits, misses, kms_unwraps, evictions, single_flight_waits FROM envelope.stats")
    return dict(zip(("hits", "misses", "kms_unwraps", "evictions", "waits"), cur.fetchone()))


def delta(s0, s1):
    return {k: s1[k] - s0[k] for k in s0}


def load_results():
    p = f"{TMP}/results.json"
    return json.load(open(p)) if os.path.exists(p) else {}


def save_results(r):
    with open(f"{TMP}/results.json", "w") as f:
        json.dump(r, f, indent=1)


def pgbench(script, clients, seconds, env_extra=None, appname="keys_bench"):
    env = dict(os.environ, PGAPPNAME=appname, **(env_extra or {}))
    out = subprocess.run([f"{PG_BIN}/pgbench", "-n", "-h", SOCK, "-p", PORT, "-U", "postgres", "-M", "prepared",
                          "-c", str(clients), "-j", str(min(clients, os.cpu_count() or 2)), "-T", str(seconds),
                          "-f", script, "bench"], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        log(out.stdout + out.stderr)
        fail(f"pgbench {script} exited {out.returncode}")
    m = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out.stdout)
    tx = re.search(r"number of transactions actually processed: (\d+)", out.stdout)
    failed = re.search(r"number of failed transactions: (\d+)", out.stdout)
    if not m or not tx:
        log(out.stdout + out.stderr)
        fail("cannot parse pgbench output")
    if failed and int(failed.group(1)) != 0:
        fail(f"pgbench {script}: {failed.group(1)} failed transactions")
    if int(tx.group(1)) == 0:
        fail(f"pgbench {script}: no transaction")
    return float(m.group(1)), int(tx.group(1))


def write_script(name, text):
    p = f"{TMP}/{name}.sql"
    with open(p, "w") as f:
        f.write(text)
    return p


# ------------------------------------------------------------------ setup (part 3 + tables)
def setup():
    c = connect()
    cur = c.cursor()
    cur.execute("SET client_min_messages = warning")
    cur.execute("CREATE EXTENSION pg_envelope")
    cur.execute(f"CREATE FUNCTION val(g bigint) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT {VAL} $$")
    log(f"creating {MAXK} keys in batches of 1000 ...")
    batches = []  # (keys after the batch, seconds, keys in the batch)
    made = 0
    t_all = time.perf_counter()
    while made < MAXK:
        n = min(1000, MAXK - made)
        t0 = time.perf_counter()
        cur.execute("SELECT count(envelope.create_key('k_' || g)) FROM generate_series(%s, %s) g",
                    (made, made + n - 1))
        cur.fetchone()
        batches.append((made + n, time.perf_counter() - t0, n))
        made += n
        if made % 10000 == 0:
            log(f"  {made} keys: {1000 * batches[-1][1] / n:.3f} ms/key in the last batch")
    t_all = time.perf_counter() - t_all
    nkeys = one(cur, "SELECT count(*) FROM envelope.key WHERE name LIKE 'k\\_%'")[0]
    if nkeys != MAXK:
        fail(f"{nkeys} keys k_* exist, expected {MAXK}")
    log(f"  {MAXK} keys in {t_all:.1f} s")
    size = one(cur, "SELECT pg_column_size(envelope.encrypt_field(val(1), 'k_0'))")[0]
    log(f"loading t_plain and t_K for K in {KEYS}, {ROWS} rows each ...")
    t0 = time.perf_counter()
    cur.execute("CREATE TABLE t_plain (id int, v text)")
    cur.execute("INSERT INTO t_plain SELECT g, rpad(val(g), %s - 1, '#') FROM generate_series(1, %s) g "
                "ORDER BY random()", (size, ROWS))
    cur.execute("ALTER TABLE t_plain ADD PRIMARY KEY (id)")
    checks = {}
    for k in KEYS:
        cur.execute(f"CREATE TABLE t_{k} (id int, v envelope.encrypted_text)")
        cur.execute(f"INSERT INTO t_{k} SELECT g, envelope.encrypt_field(val(g), 'k_' || (g %% {k})) "
                    f"FROM generate_series(1, %s) g ORDER BY random()", (ROWS,))
        cur.execute(f"ALTER TABLE t_{k} ADD PRIMARY KEY (id)")
    for t in ["t_plain"] + [f"t_{k}" for k in KEYS]:
        cur.execute(f"VACUUM (FREEZE, ANALYZE) {t}")
    cur.execute("CHECKPOINT")
    for k in KEYS:
        nk = one(cur, f"SELECT count(DISTINCT (envelope.key_of(v)).key_name) FROM t_{k}")[0]
        corr = one(cur, "SELECT correlation FROM pg_stats WHERE tablename = %s AND attname = 'id'", (f"t_{k}",))[0]
        if nk != min(k, ROWS):
            fail(f"t_{k} uses {nk} distinct keys, expected {min(k, ROWS)}")
        if corr is None or abs(corr) >= 0.1:
            fail(f"t_{k} rows are not in random order (correlation of id {corr})")
        checks[k] = {"distinct_keys": nk, "id_correlation": corr}
    sz = {t: one(cur, "SELECT pg_size_pretty(pg_relation_size(%s::regclass))", (t,))[0]
          for t in ["t_plain", f"t_{KEYS[0]}"]}
    log(f"  loaded in {time.perf_counter() - t0:.1f} s; stored value {size} bytes; table size {sz['t_plain']} "
        f"(plain), {sz[f't_{KEYS[0]}']} (encrypted); key order random: "
        + ", ".join(f"K={k}: {v['distinct_keys']} keys, corr(id) {v['id_correlation']:+.3f}" for k, v in checks.items()))
    r = load_results()
    r["create_key"] = {"batches": batches, "total_s": t_all}
    r["value_size"] = size
    save_results(r)


# ------------------------------------------------------------------ part 1
def scans():
    cfg = A["cfg"]
    big = cfg == "B"
    r = load_results()
    out = {}
    for k in KEYS:
        c = connect()
        cur = c.cursor()
        pid = one(cur, "SELECT pg_backend_pid()")[0]
        bce = one(cur, "SELECT current_setting('envelope.backend_cache_entries', true)")[0]
        if big:
            ce = int(one(cur, "SELECT current_setting('envelope.cache_entries')")[0])
            if ce != int(A["cache_entries"]):
                fail(f"envelope.cache_entries is {ce}, expected {A['cache_entries']}")
            if bce is not None:
                cur.execute("SELECT set_config('envelope.backend_cache_entries', %s, false)", (str(2 * k),))
                bce = one(cur, "SELECT current_setting('envelope.backend_cache_entries', true)")[0]
                if int(bce) != 2 * k:
                    fail(f"backend_cache_entries is {bce}, expected {2 * k}")
        ce = one(cur, "SELECT current_setting('envelope.cache_entries')")[0]
        dec = f"SELECT count(*) FROM t_{k} WHERE envelope.decrypt_field(v) IS NOT NULL"
        pln = "SELECT count(*) FROM t_plain WHERE length(v) IS NOT NULL"
        res = {"dec": [], "pln": [], "dec_cpu": [], "pln_cpu": []}

        def run(sql, kind):
            c0, t0 = oncpu_ns(pid), time.perf_counter()
            n = one(cur, sql)[0]
            t1, c1 = time.perf_counter(), oncpu_ns(pid)
            if n != ROWS:
                fail(f"{sql} counted {n} rows, expected {ROWS}")
            if kind:
                res[kind].append((t1 - t0) * 1e6 / ROWS)
                res[kind + "_cpu"].append((c1 - c0) / 1e3 / ROWS)

        tw = time.perf_counter()
        run(dec, None)
        warm = (time.perf_counter() - tw) * 1e6 / ROWS
        run(pln, None)
        s0 = stats(cur)
        for _ in range(RUNS):
            run(pln, "pln")
            run(dec, "dec")
        d = delta(s0, stats(cur))
        if big:  # full correctness check of every value (cheap with the large caches)
            bad = one(cur, f"SELECT count(*) FROM t_{k} WHERE envelope.decrypt_field(v) IS DISTINCT FROM val(id)")[0]
            if bad:
                fail(f"t_{k}: {bad} values do not decrypt to their plaintext")
        med = {x: statistics.median(v) for x, v in res.items()}
        med["spread"] = max(res["dec"]) / min(res["dec"]) - 1
        med.update(warm=warm, backend_cache_entries=bce, cache_entries=ce,
                   per_run={x: v / RUNS for x, v in d.items()})
        out[str(k)] = med
        log(f"  [{cfg}] K={k:>6}: decrypt {med['dec']:7.2f} µs/row (cpu {med['dec_cpu']:6.2f}, warm-up "
            f"{warm:7.2f}), plain {med['pln']:5.2f}; per timed run: misses {d['misses'] / RUNS:.0f}, "
            f"kms_unwraps {d['kms_unwraps'] / RUNS:.0f}; backend_cache_entries={bce}, cache_entries={ce}")
        c.close()
    r.setdefault("scans", {})[cfg] = out
    save_results(r)


# ------------------------------------------------------------------ part 2
def lwlock():
    cfg, k, clients, secs = A["cfg"], int(A["lw_keys"]), int(A["lw_clients"]), int(A["lw_seconds"])
    script = write_script(f"lw_{k}", f"\\set id random(1, {ROWS})\n"
                          f"SELECT envelope.decrypt_field(v) FROM t_{k} WHERE id = :id;\n")
    env = {}
    c = connect()
    cur = c.cursor()
    has_bce = one(cur, "SELECT current_setting('envelope.backend_cache_entries', true)")[0] is not None
    if cfg == "B" and has_bce:
        env["PGOPTIONS"] = f"-c envelope.backend_cache_entries={2 * k}"
    s0 = stats(cur)
    result = {}
    th = threading.Thread(target=lambda: result.update(zip(("tps", "tx"), pgbench(script, clients, secs, env))))
    th.start()
    waits, nsamples, seen, active = {}, 0, [], 0
    t_start = time.perf_counter()
    time.sleep(1.0)
    while time.perf_counter() - t_start < secs - 1.0 and th.is_alive():
        cur.execute("SELECT wait_event_type, wait_event, state FROM pg_stat_activity "
                    "WHERE application_name = 'keys_bench' AND backend_type = 'client backend'")
        rows = cur.fetchall()
        nsamples += 1
        seen.append(len(rows))
        for wt, we, st in rows:
            active += st == "active"
            key = f"{wt}:{we}" if wt else ("CPU (no wait event)" if st == "active" else f"({st})")
            waits[key] = waits.get(key, 0) + 1
        time.sleep(0.01)
    th.join()
    d = delta(s0, stats(cur))
    total = sum(waits.values())
    if nsamples < 10 or total == 0 or statistics.median(seen) < clients:
        fail(f"LWLock sampler saw {total} backend samples in {nsamples} samples (median {statistics.median(seen) if seen else 0} backends)")
    if "tps" not in result:
        fail("pgbench of part 2 did not finish")
    lw = waits.get("LWLock:pg_envelope", 0)
    top = sorted(waits.items(), key=lambda kv: -kv[1])[:6]
    r = load_results()
    r.setdefault("lwlock", {})[cfg] = {"k": k, "clients": clients, "seconds": secs, "samples": nsamples,
                                       "backend_samples": total, "lwlock_pg_envelope": lw, "active": active,
                                       "lwlock_any": sum(v for x, v in waits.items() if x.startswith("LWLock:")),
                                       "top": top, "tps": result["tps"], "stats": d, "bce": env.get("PGOPTIONS", "")}
    save_results(r)
    log(f"  [{cfg}] {clients} clients, t_{k}: {result['tps']:.0f} tps; {nsamples} samples, {total} backend samples, "
        f"LWLock:pg_envelope {100 * lw / total:.2f}%; kms_unwraps {d['kms_unwraps']}, misses {d['misses']}, "
        f"single-flight waits {d['waits']}")
    log("      top waits: " + ", ".join(f"{x} {100 * v / total:.1f}%" for x, v in top))


# ------------------------------------------------------------------ part 4
def conns():
    n = int(A["conns"])
    c = connect()
    cur = c.cursor()
    expect = one(cur, "SELECT val(1)")[0]
    expect_p = one(cur, "SELECT v FROM t_plain WHERE id = 1")[0]
    q = {"dec": ("SELECT envelope.decrypt_field(v) FROM t_1 WHERE id = 1", expect),
         "pln": ("SELECT v FROM t_plain WHERE id = 1", expect_p)}

    def once(kind):
        sql, want = q[kind]
        t0 = time.perf_counter()
        cc = psycopg2.connect(host=SOCK, port=PORT, dbname="bench", user="postgres")
        cc.autocommit = True
        k = cc.cursor()
        k.execute(sql)
        got = k.fetchone()[0]
        dt = time.perf_counter() - t0
        cc.close()
        if got != want:
            fail(f"new connection ({kind}) returned a wrong value")
        return dt * 1000

    once("dec")  # fills the shared cache
    for _ in range(3):
        once("dec"), once("pln")
    s0 = stats(cur)
    res = {"dec": [], "pln": [], "diff": []}
    for i in range(n):
        order = ("dec", "pln") if i % 2 == 0 else ("pln", "dec")
        got = {kind: once(kind) for kind in order}
        res["dec"].append(got["dec"])
        res["pln"].append(got["pln"])
        res["diff"].append(got["dec"] - got["pln"])
    d = delta(s0, stats(cur))
    med = {x: statistics.median(v) for x, v in res.items()}
    med["stats"] = d
    med["n"] = n
    r = load_results()
    r["conns"] = med
    save_results(r)
    log(f"  {n} rounds: decrypt {med['dec']:.3f} ms, plain {med['pln']:.3f} ms, paired diff {med['diff']:+.3f} ms; "
        f"shared-cache hits {d['hits']}, misses {d['misses']}, kms_unwraps {d['kms_unwraps']}")


# ------------------------------------------------------------------ part 5
def tps():
    secs = int(A["tps_seconds"])
    sd = write_script("pk_dec", f"\\set id random(1, {ROWS})\nSELECT envelope.decrypt_field(v) FROM t_1 WHERE id = :id;\n")
    sp = write_script("pk_pln", f"\\set id random(1, {ROWS})\nSELECT v FROM t_plain WHERE id = :id;\n")
    out = {}
    for i, cl in enumerate(int(x) for x in A["tps_clients"].split()):
        got = {}
        for kind in (("pln", "dec") if i % 2 == 0 else ("dec", "pln")):
            got[kind] = pgbench(sp if kind == "pln" else sd, cl, secs)[0]
        out[str(cl)] = got
        log(f"  {cl} clients: decrypt {got['dec']:.0f} tps, plain {got['pln']:.0f} tps, ratio {got['dec'] / got['pln']:.3f}")
    r = load_results()
    r["tps"] = out
    save_results(r)


# ------------------------------------------------------------------ summary
def summary():
    r = load_results()
    L = []
    w = L.append
    w(f"Part 1: decrypt scan µs/row, {ROWS} rows in random key order, median of {RUNS} (after 1 warm-up)")
    w(f"  {'cfg':3} {'K':>6} {'decrypt':>8} {'cpu':>7} {'plain':>6} {'net':>7} {'ratio':>6} {'net ratio':>9} "
      f"{'spread':>6} {'unwraps/run':>11} {'warm-up':>8}  goal")
    for cfg in ("A", "B"):
        s = r["scans"][cfg]
        b = s["1"]
        for k in KEYS:
            x = s[str(k)]
            net, bnet = x["dec"] - x["pln"], b["dec"] - b["pln"]
            ratio = x["dec"] / b["dec"]
            goal = {10000: 2.0, 100000: 3.0}.get(k)
            g = f"<= {goal:.0f}x {'met' if ratio <= goal else 'MISSED'}" if goal else ""
            w(f"  {cfg:3} {k:>6} {x['dec']:8.2f} {x['dec_cpu']:7.2f} {x['pln']:6.2f} {net:7.2f} {ratio:6.2f} "
              f"{net / bnet:9.2f} {100 * x['spread']:5.0f}% {x['per_run']['kms_unwraps']:11.0f} {x['warm']:8.2f}  {g}")
    a, bb = r["scans"]["A"]["1"], r["scans"]["B"]["1"]
    w("  decrypt: median wall µs/row; cpu: backend on-CPU µs/row; net = decrypt - plain; ratio, net ratio: vs K=1;")
    w("  spread: slowest/fastest timed decrypt run - 1; unwraps/run: KMS unwraps per timed run; warm-up: µs/row of")
    w("  the untimed first decrypt scan of the session (fills the caches)")
    w(f"  (A) defaults: cache_entries={a['cache_entries']}, backend_cache_entries={a['backend_cache_entries']}; "
      f"(B) cache_entries={bb['cache_entries']}, backend_cache_entries="
      + ("2*K" if bb["backend_cache_entries"] is not None else "n/a (not in this build)"))
    w("Part 2: LWLock waits of the pgbench backends (pg_stat_activity every 10 ms)")
    for cfg in ("A", "B"):
        x = r["lwlock"][cfg]
        t = x["backend_samples"]
        pct = 100 * x["lwlock_pg_envelope"] / t
        w(f"  ({cfg}) {x['clients']} clients, t_{x['k']}, {x['seconds']} s: {x['tps']:.0f} tps, LWLock:pg_envelope "
          f"{pct:.2f}% of {t} backend samples ({100 * x['lwlock_pg_envelope'] / max(x['active'], 1):.2f}% of the "
          f"{x['active']} active ones), any LWLock {100 * x['lwlock_any'] / t:.2f}%  "
          f"(goal <= 2%: {'met' if pct <= 2 else 'MISSED'}); kms_unwraps {x['stats']['kms_unwraps']}")
        w("      top: " + ", ".join(f"{n} {100 * v / t:.1f}%" for n, v in x["top"]))
    ck = r["create_key"]
    bt = ck["batches"]
    pick = [b for b in bt if b[0] in (1000, 10000, 50000, 100000)]
    if bt[-1] not in pick:
        pick.append(bt[-1])
    w(f"Part 3: create_key ms/key per batch of 1000 ({len(bt)} batches, {ck['total_s']:.1f} s in total)")
    w("  " + ", ".join(f"keys {b[0] - b[2] + 1}-{b[0]}: {1000 * b[1] / b[2]:.3f}" for b in pick)
      + f"; last/first {bt[-1][1] / bt[-1][2] / (bt[0][1] / bt[0][2]):.2f} (goal: flat)")
    c = r["conns"]
    w(f"Part 4: new connection + first query, median of {c['n']} (warm shared cache)")
    w(f"  decrypt t_1 {c['dec']:.3f} ms, plaintext {c['pln']:.3f} ms, difference {c['dec'] - c['pln']:+.3f} ms "
      f"(paired median {c['diff']:+.3f} ms; goal <= 0.5 ms: {'met' if c['diff'] <= 0.5 else 'MISSED'}); "
      f"kms_unwraps {c['stats']['kms_unwraps']}")
    w(f"Part 5: pgbench -M prepared by-pk TPS, t_1 decrypt vs plaintext, {A['tps_seconds']} s each (goal ratio >= 0.9)")
    for cl, x in r["tps"].items():
        ratio = x["dec"] / x["pln"]
        w(f"  {int(cl):>2} clients: decrypt {x['dec']:8.0f}  plain {x['pln']:8.0f}  ratio {ratio:.3f} "
          f"{'met' if ratio >= 0.9 else 'MISSED'}")
    print("\n".join(L))


{"setup": setup, "scans": scans, "lwlock": lwlock, "conns": conns, "tps": tps, "summary": summary}[PHASE]()
PY

py() {
  as_pg "$PY" "$TMP/keys_bench.py" "$1" sock="$SOCK" port="$PORT" tmp="$TMP" pg_bin="$PG_BIN" rows="$ROWS" \
    runs="$RUNS" keys="$KEYS" cache_entries="$CACHE_ENTRIES" lw_keys="$LW_KEYS" lw_clients="$LW_CLIENTS" \
    lw_seconds="$LW_SECONDS" conns="$CONNS" tps_clients="$TPS_CLIENTS" tps_seconds="$TPS_SECONDS" "${@:2}"
}

CPU=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || true)
GIT_REV=$(git -C "$BENCH_DIR/.." rev-parse --short HEAD 2>/dev/null || echo unknown)
GIT_DIRTY=$(git -C "$BENCH_DIR/.." status --porcelain -- src include extension Makefile 2>/dev/null | wc -l || echo 0)
CMD="BENCH_ROWS=$ROWS BENCH_KEYS=\"$KEYS\" BENCH_RUNS=$RUNS BENCH_CACHE_ENTRIES=$CACHE_ENTRIES BENCH_LW_KEYS=$LW_KEYS BENCH_LW_CLIENTS=$LW_CLIENTS BENCH_LW_SECONDS=$LW_SECONDS BENCH_CONNS=$CONNS BENCH_TPS_CLIENTS=\"$TPS_CLIENTS\" BENCH_TPS_SECONDS=$TPS_SECONDS bench/keys.sh"
echo
echo "=== Environment ==="
echo "PostgreSQL : $(psql_su -d bench -Atc 'SELECT version()')"
echo "CPU        : ${CPU:-unknown} ($(nproc) online CPUs)"
echo "pg_envelope: $PKGLIBDIR/pg_envelope.so md5 $(md5sum "$PKGLIBDIR/pg_envelope.so" | cut -d' ' -f1) (HEAD $GIT_REV$( (( GIT_DIRTY )) && echo " + $GIT_DIRTY uncommitted source files"))"
echo "Load avg   : $(loadavg) at start"
echo "Workload   : $ROWS rows per table, 74-byte values, K in {$KEYS} keys (local KMS), superuser sessions"
echo "NOTE       : fsync=off, synchronous_commit=off, autovacuum=off -- a throwaway benchmark cluster."

echo
echo "=== Setup (part 3: create_key batches) ==="
py setup

echo
echo "=== (A) default settings ==="
echo "Part 1: decrypt scans"
py scans cfg=A
echo "Part 2: LWLock waits"
py lwlock cfg=A
echo "Part 4: new connections"
py conns
echo "Part 5: pgbench by pk"
py tps

echo
echo "=== (B) envelope.cache_entries = $CACHE_ENTRIES, backend_cache_entries = 2*K (restart) ==="
stop_pg
echo "envelope.cache_entries = $CACHE_ENTRIES" >>"$PGDATA/postgresql.conf"
start_pg
echo "Part 1: decrypt scans (+ every value checked against its plaintext)"
py scans cfg=B
echo "Part 2: LWLock waits"
py lwlock cfg=B

echo
echo "=== Summary ==="
echo "command: $CMD"
py summary
echo "load avg $(loadavg) at end; total time $(( $(date +%s) - T_START )) s"
