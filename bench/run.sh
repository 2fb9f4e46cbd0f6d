#!/usr/bin/env bash
# pg_envelope performance benchmark: one command, one throwaway cluster.
#
#   bench/run.sh                 # as root (cluster runs as "postgres") or as any user
#
# Environment knobs (defaults in brackets):
#   BENCH_N=1000000      rows for the main measurements
#   BENCH_PGP_N=10000    rows for pgp_sym_encrypt/pgp_sym_decrypt
#   BENCH_RUNS=3         timed runs per measurement (after one untimed warm-up run)
#   BENCH_PERF=auto      profile the backend during extra pg_envelope decrypt scans with
#                        perf (auto: if perf works here; 1: require it; 0: skip)
#   PG_BIN=/usr/lib/postgresql/15/bin
#   BENCH_KEEP=0         1: keep the temporary directory (cluster stopped) for inspection
#
# Needs: PostgreSQL 15 server binaries, pg_envelope installed (make install), pgcrypto
# (ships with Debian's postgresql-15). No network. See bench/README.md.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
N=${BENCH_N:-1000000}
PGP_N=${BENCH_PGP_N:-10000}
RUNS=${BENCH_RUNS:-3}
PERF_MODE=${BENCH_PERF:-auto}
KEEP=${BENCH_KEEP:-0}
PORT=54329   # the socket lives in a private directory, so any port number is free there

for v in N PGP_N RUNS; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: $v must be a positive integer" >&2; exit 2; }
done
(( PGP_N <= N )) || { echo "run.sh: BENCH_PGP_N must not exceed BENCH_N" >&2; exit 2; }
for f in bench.sql report.sql; do
  [[ -r $BENCH_DIR/$f ]] || { echo "run.sh: missing $BENCH_DIR/$f" >&2; exit 2; }
done
[[ -x $PG_BIN/initdb && -x $PG_BIN/pg_ctl && -x $PG_BIN/psql ]] ||
  { echo "run.sh: PostgreSQL binaries not found in $PG_BIN" >&2; exit 2; }
PKGLIBDIR=$("$PG_BIN/pg_config" --pkglibdir 2>/dev/null || echo /usr/lib/postgresql/15/lib)
[[ -e $PKGLIBDIR/pg_envelope.so ]] ||
  { echo "run.sh: $PKGLIBDIR/pg_envelope.so is not installed (make && make install)" >&2; exit 2; }

# As root, everything that touches the cluster runs as the "postgres" OS user.
if [[ $(id -u) -eq 0 ]]; then
  RUN_USER=postgres
  id "$RUN_USER" >/dev/null 2>&1 || { echo "run.sh: running as root needs a 'postgres' OS user" >&2; exit 2; }
  as_pg() { runuser -u "$RUN_USER" -- "$@"; }
else
  RUN_USER=$(id -un)
  as_pg() { "$@"; }
fi

TMP=""
PERF_PID=""
PGDATA=""
perf=()
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  if [[ -n $PERF_PID ]] && kill -0 "$PERF_PID" 2>/dev/null; then
    kill -INT "$PERF_PID" 2>/dev/null; wait "$PERF_PID" 2>/dev/null
  fi
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
  (( rc != 0 )) && echo "run.sh: FAILED (exit $rc); cluster stopped and temporary files removed" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- perf profile
# If pg_envelope.so is reinstalled while the server runs, the backend keeps mapping the
# old, now deleted file and perf can neither symbolise nor unwind through it. run.sh
# keeps a copy of the library the server loaded and, when needed, gives perf a symfs
# where every mapped file is a symlink to itself and the deleted library is that copy.
perf_symfs() {  # $1 = perf.data; prints --symfs=DIR when a (deleted) DSO needs it
  local data=$1 sf="$TMP/perf-symfs" p found=0
  while IFS= read -r p; do
    [[ $p == /* && $p != //* ]] || continue
    if [[ $p == *" (deleted)" ]]; then
      [[ ${p% (deleted)} == "$PKGLIBDIR/pg_envelope.so" && -f $TMP/pg_envelope.so.snapshot ]] || continue
      mkdir -p "$sf$(dirname "$p")" && cp "$TMP/pg_envelope.so.snapshot" "$sf$p" && found=1
    else
      mkdir -p "$sf$(dirname "$p")" && ln -sf "$p" "$sf$p"
    fi
  done < <("${perf[@]}" script -i "$data" -F pid --show-mmap-events 2>/dev/null | grep PERF_RECORD_MMAP |
           sed -E 's/.*\]: [rwxps-]{4} //' | sort -u)
  (( found )) && echo "--symfs=$sf"
  return 0
}

perf_profile() {
  local perf_bin pid i data="$TMP/perf.data" cpu_us sf
  local symfs=()
  perf_bin=$(command -v perf || true)
  if [[ -z $perf_bin ]]; then echo "perf not installed (apt-get install linux-perf); profile skipped"; return 1; fi
  mkdir -p "$TMP/perf-buildids"
  perf=("$perf_bin" --buildid-dir "$TMP/perf-buildids")
  # The profiled session: waits so perf can attach, then runs the decrypt scan 3 times.
  as_pg env PGAPPNAME=bench_perf "${psql_base[@]}" -d bench -c "SELECT pg_sleep(2)" \
      -c "SELECT sum(length(envelope.decrypt_field(c))) FROM bench.enc" \
      -c "SELECT sum(length(envelope.decrypt_field(c))) FROM bench.enc" \
      -c "SELECT sum(length(envelope.decrypt_field(c))) FROM bench.enc" >/dev/null &
  local psql_pid=$!
  pid=""
  for i in $(seq 1 40); do
    pid=$(psql_bench -Atc "SELECT pid FROM pg_stat_activity WHERE application_name = 'bench_perf'" || true)
    [[ -n $pid ]] && break
    sleep 0.05
  done
  if [[ -z $pid ]]; then wait "$psql_pid" || true; echo "could not find the profiled backend"; return 1; fi
  # DWARF call graphs: libcrypto has no frame pointers. Root can write into $TMP even
  # though the server user owns it.
  "${perf[@]}" record -F 499 --call-graph dwarf,16384 -p "$pid" -o "$data" >"$TMP/perf.log" 2>&1 &
  PERF_PID=$!
  if ! wait "$psql_pid"; then echo "profiled session failed"; return 1; fi
  kill -INT "$PERF_PID" 2>/dev/null || true
  wait "$PERF_PID" 2>/dev/null || true
  PERF_PID=""
  if [[ ! -s $data ]]; then echo "perf record failed:"; sed 's/^/  /' "$TMP/perf.log"; return 1; fi
  sf=$(perf_symfs "$data")
  if [[ -n $sf ]]; then
    symfs=("$sf")
    echo "(pg_envelope.so was reinstalled during the run; symbolising with the copy the server loaded)"
  fi
  cpu_us=$(psql_bench -Atc "SELECT round((percentile_cont(0.5) WITHIN GROUP (ORDER BY cpu_ms) * 1000 / min(nrows))::numeric, 4)
                              FROM bench.result WHERE label = 'pge_decrypt' AND run > 0
                             HAVING percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) >= 50" || true)
  echo
  echo "=== perf: backend $pid running 3x the pg_envelope decrypt scan of $N rows (perf record -F 499 --call-graph dwarf) ==="
  echo "--- self time by shared object ---"
  "${perf[@]}" report -i "$data" "${symfs[@]}" --stdio --no-children --sort dso -g none 2>/dev/null |
    grep -v '^#' | grep -v '^$' | sed -E 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//' | head -n 8
  echo "--- top symbols by self time (libcrypto and postgres are stripped: hex = static function) ---"
  "${perf[@]}" report -i "$data" "${symfs[@]}" --stdio --no-children --sort dso,symbol -g none --percent-limit 0.8 2>/dev/null |
    grep -v '^#' | grep -v '^$' | sed -E 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//' | head -n 30
  if [[ -x /usr/bin/python3 ]]; then
    echo "--- where the time goes (call-graph attribution; us/row = share x measured decrypt-scan cpu us/row ${cpu_us:-?}) ---"
    "${perf[@]}" script -i "$data" "${symfs[@]}" -F ip,sym,dso 2>/dev/null | /usr/bin/python3 "$BENCH_DIR/perf_breakdown.py" "$cpu_us"
  fi
  return 0
}

T_START=$(date +%s)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/pg_envelope_bench.XXXXXX")
chmod 700 "$TMP"
[[ $RUN_USER != "$(id -un)" ]] && chown "$RUN_USER": "$TMP"
cd "$TMP"   # the server user must be able to read its working directory
PGDATA=$TMP/data
SOCK=$TMP/sock
as_pg mkdir -m 700 "$SOCK"

# Throwaway 256-bit master key, mode 0600, owned by the server user.
as_pg sh -c "umask 077; od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > '$TMP/master.key'"

echo "pg_envelope benchmark  (temporary cluster in $TMP, run as OS user '$RUN_USER')"
echo "  initdb ..."
as_pg "$PG_BIN/initdb" -D "$PGDATA" -U postgres --auth=trust -E UTF8 --no-locale >"$TMP/initdb.log" 2>&1 ||
  { cat "$TMP/initdb.log" >&2; exit 1; }

{
  echo
  echo "# ---- pg_envelope bench settings ----"
  echo "port = $PORT"
  bench_server_settings "$SOCK" "$TMP/master.key"
} >>"$PGDATA/postgresql.conf"

echo "  starting server ..."
cp "$PKGLIBDIR/pg_envelope.so" "$TMP/pg_envelope.so.snapshot"   # what the server is about to load
SO_SUM=$(md5sum "$TMP/pg_envelope.so.snapshot" | cut -d' ' -f1)
as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$TMP/server.log" -w -t 60 start >/dev/null || {
  echo "server did not start; its log:" >&2; tail -20 "$TMP/server.log" >&2; exit 1; }

psql_base=("$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PORT" -U postgres)
as_pg "${psql_base[@]}" -d postgres -c "CREATE DATABASE bench" >/dev/null
psql_bench() { as_pg "${psql_base[@]}" -d bench "$@"; }

# ---------------------------------------------------------------- environment
CPU=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || true)
echo
echo "=== Environment ==="
echo "PostgreSQL : $(psql_bench -Atc 'SELECT version()')"
echo "CPU        : ${CPU:-unknown} ($(nproc) online CPUs; the bench uses one backend, no parallel workers)"
echo "CPU flags  : $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -xE 'aes|pclmulqdq|avx2|vaes|vpclmulqdq|sha_ni' | tr '\n' ' ')"
echo "Kernel     : $(uname -sr)"
echo "OpenSSL    : $(openssl version 2>/dev/null || echo unknown)"
GIT_REV=$(git -C "$BENCH_DIR/.." rev-parse --short HEAD 2>/dev/null || echo unknown)
echo "pg_envelope: $PKGLIBDIR/pg_envelope.so (md5 $SO_SUM; source tree HEAD $GIT_REV)"
echo "Load avg   : $(cut -d' ' -f1-3 /proc/loadavg) at start (other work on this machine skews wall-clock figures)"
echo "Workload   : N=$N values of exactly 74 bytes; pgp_sym_* on $PGP_N rows; $RUNS timed runs + 1 warm-up each"
echo "NOTE       : fsync=off, full_page_writes=off, synchronous_commit=off, autovacuum=off -- a throwaway"
echo "             benchmark cluster; never use these settings for data you want to keep."
echo
echo "=== Server settings ==="
psql_bench -P footer=off -P border=2 -c "
  SELECT name, setting, unit FROM pg_settings
   WHERE name IN ('shared_buffers','work_mem','maintenance_work_mem','max_parallel_workers_per_gather','jit',
                  'fsync','synchronous_commit','full_page_writes','autovacuum','max_wal_size',
                  'checkpoint_timeout','wal_level','shared_preload_libraries','listen_addresses',
                  'huge_pages','server_encoding','lc_collate')
   ORDER BY name"

# ---------------------------------------------------------------- workload
echo "=== Running (timings: clock_timestamp() deltas around EXECUTE inside a PL/pgSQL procedure) ==="
T_WORK=$(date +%s)
psql_bench -v N="$N" -v PGP_N="$PGP_N" -v RUNS="$RUNS" <"$BENCH_DIR/bench.sql"
echo "  workload done in $(( $(date +%s) - T_WORK )) s; load avg now $(cut -d' ' -f1-3 /proc/loadavg)"

psql_bench <"$BENCH_DIR/report.sql"

case $PERF_MODE in
  0|no|off) ;;
  1|yes|on) perf_profile ;;
  *) perf_profile || echo "(perf profile skipped; set BENCH_PERF=0 to silence)" ;;
esac

echo
echo "total wall time: $(( $(date +%s) - T_START )) s"
