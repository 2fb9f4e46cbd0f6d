#!/usr/bin/env bash
# pg_envelope shared DEK cache benchmark: one command, throwaway clusters.
#
#   bench/cache.sh               # as root (clusters run as "postgres"); see bench/README.md
#
# Measures and prints:
#   1. new-connection latency (connect + first decrypt, and the first decrypt alone) with
#      a cold and a warm shared cache, KMS latency injected in the Vault Transit emulator;
#   2. KMS decrypt calls per 1,000 new connections with a warm shared cache (the
#      emulator's counter is the oracle), and per connection with a cold one;
#   3. the hot decrypt path in us/row with the build of BENCH_BEFORE_REF (before the
#      shared cache) and with the current tree, plus the plaintext scan for context; the
#      two builds run in two clusters side by side and their scans are interleaved.
#
# Environment knobs (defaults in brackets):
#   BENCH_KMS_LATENCY_MS=50      latency injected into every Vault decrypt (DEK unwrap)
#   BENCH_CONNS=50               timed new connections per kind (cold, warm, no-decrypt)
#   BENCH_CALL_CONNS=1000        new connections for the KMS-calls count (warm cache)
#   BENCH_N=1000000              rows for the hot-path scans
#   BENCH_RUNS=7                 timed runs per scan (after one untimed warm-up run)
#   BENCH_BEFORE=1               0: skip the before/after build comparison (the current
#                                installed build is still measured; no install, no lock)
#   BENCH_BEFORE_REF=27d05ea     git ref of the "before" build (last commit before the cache)
#   BENCH_LOCK_TIMEOUT=1800      seconds to wait for /tmp/pgenv-install.lock (0: forever)
#   BENCH_KEEP=0                 1: keep the temporary directory for inspection
#   BENCH_PARTS="1 3"            which parts to run ("1" runs parts 1 and 2)
#   BENCH_ROLE=""                part 3 scans as this new login role (EXECUTE on
#                                decrypt_field, and the key's decrypt privilege where the
#                                build has per-key privileges) instead of the superuser:
#                                BENCH_ROLE=bench_reader BENCH_BEFORE_REF=76f0831
#                                BENCH_PARTS=3 measures what the per-key check costs
#   PG_BIN=/usr/lib/postgresql/15/bin
#
# The before/after part installs the old build system-wide (make install) for a moment:
# the whole install-old -> load -> reinstall-current -> measure window holds
# flock /tmp/pgenv-install.lock, and the current tree is reinstalled on every exit path.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"
REPO=$(cd "$BENCH_DIR/.." && pwd)
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
LATENCY=${BENCH_KMS_LATENCY_MS:-50}
CONNS=${BENCH_CONNS:-50}
CALL_CONNS=${BENCH_CALL_CONNS:-1000}
N=${BENCH_N:-1000000}
RUNS=${BENCH_RUNS:-7}
BEFORE=${BENCH_BEFORE:-1}
BEFORE_REF=${BENCH_BEFORE_REF:-27d05ea}
LOCK_TIMEOUT=${BENCH_LOCK_TIMEOUT:-1800}
KEEP=${BENCH_KEEP:-0}
PARTS=${BENCH_PARTS:-1 3}
ROLE=${BENCH_ROLE:-}
LOCK_FILE=/tmp/pgenv-install.lock
PY=/usr/bin/python3
PORT=54329         # the sockets live in a private directory, so any port number is free there
PORT_BEFORE=54330  # the "before" cluster, which runs next to the "after" one

die() { echo "cache.sh: $*" >&2; exit 2; }
for v in CONNS CALL_CONNS N RUNS; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer"
done
{ [[ $LATENCY =~ ^[0-9]+$ ]] && (( LATENCY <= 120000 )); } || die "BENCH_KMS_LATENCY_MS must be 0..120000"
[[ $LOCK_TIMEOUT =~ ^[0-9]+$ ]] || die "BENCH_LOCK_TIMEOUT must be a number of seconds"
[[ $BEFORE == 0 || $BEFORE == 1 ]] || die "BENCH_BEFORE must be 0 or 1"
[[ -z $ROLE || $ROLE =~ ^[a-z_][a-z0-9_]*$ ]] || die "BENCH_ROLE must be a plain lower-case role name"
ROLE_ARGS=()
[[ -n $ROLE ]] && ROLE_ARGS=(--role "$ROLE")
[[ -r $BENCH_DIR/cache_bench.py ]] || die "missing $BENCH_DIR/cache_bench.py"
[[ -x $PG_BIN/initdb && -x $PG_BIN/pg_ctl && -x $PG_BIN/pg_config ]] || die "PostgreSQL binaries not found in $PG_BIN"
[[ -x $PY ]] || die "$PY not found"
"$PY" -c 'import psycopg2, cryptography' 2>/dev/null ||
  die "$PY needs python3-psycopg2 and python3-cryptography (apt-get install python3-psycopg2 python3-cryptography)"
PKGLIBDIR=$("$PG_BIN/pg_config" --pkglibdir)
EXTDIR=$("$PG_BIN/pg_config" --sharedir)/extension
INSTALLED=("$PKGLIBDIR/pg_envelope.so" "$EXTDIR/pg_envelope.control" "$EXTDIR"/pg_envelope--*.sql)
[[ -e $PKGLIBDIR/pg_envelope.so ]] || die "$PKGLIBDIR/pg_envelope.so is not installed (make && make install)"
if [[ $BEFORE == 1 ]]; then
  git -C "$REPO" rev-parse --verify -q "$BEFORE_REF^{commit}" >/dev/null || die "unknown git ref $BEFORE_REF"
  [[ -w $PKGLIBDIR && -w $EXTDIR ]] || die "BENCH_BEFORE=1 installs builds into $PKGLIBDIR: run as root (or BENCH_BEFORE=0)"
  command -v make >/dev/null || die "make not found"
fi

# As root, everything that touches a cluster runs as the "postgres" OS user.
if [[ $(id -u) -eq 0 ]]; then
  RUN_USER=postgres
  id "$RUN_USER" >/dev/null 2>&1 || die "running as root needs a 'postgres' OS user"
  as_pg() { runuser -u "$RUN_USER" -- "$@"; }
else
  RUN_USER=$(id -un)
  as_pg() { "$@"; }
fi

TMP=""
RUNNING=()        # data directories of the clusters started and not yet stopped
LOCK_FD=""
OLD_INSTALLED=0     # 1 from just before the old build is installed until the current one is back
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  local d
  for d in "${RUNNING[@]}"; do
    [[ -f $d/postmaster.pid ]] || continue
    if (( rc != 0 )) && [[ -f $d.log ]]; then
      echo "--- last lines of the server log of $(basename "$d") ---" >&2
      tail -n 30 "$d.log" >&2
    fi
    as_pg "$PG_BIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1
  done
  if (( OLD_INSTALLED )); then
    echo "cache.sh: reinstalling the current tree (make -j2 install in $REPO) ..." >&2
    if ! (cd "$REPO" && make -j2 install) >"$TMP/reinstall.log" 2>&1; then
      echo "cache.sh: make install of the current tree FAILED (log: $TMP/reinstall.log, kept);" >&2
      echo "          restoring the files that were installed before this run instead" >&2
      tail -n 20 "$TMP/reinstall.log" >&2
      install -m 755 "$TMP/installed/pg_envelope.so" "$PKGLIBDIR/pg_envelope.so" &&
        install -m 644 "$TMP/installed/pg_envelope.control" "$TMP"/installed/pg_envelope--*.sql "$EXTDIR/" ||
        echo "cache.sh: RESTORE FAILED TOO: $PKGLIBDIR holds the $BEFORE_REF build; run make install" >&2
      KEEP=1
    fi
    OLD_INSTALLED=0
  fi
  [[ -n $LOCK_FD ]] && exec {LOCK_FD}>&-
  if [[ -n $TMP && -d $TMP ]]; then
    if [[ $KEEP == 1 ]]; then echo "kept $TMP" >&2; else rm -rf -- "$TMP"; fi
  fi
  (( rc != 0 )) && echo "cache.sh: FAILED (exit $rc); clusters stopped$([[ -d $TMP/installed ]] && echo ", current build reinstalled")$([[ $KEEP == 1 ]] || echo ", temporary files removed")" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

T_START=$(date +%s)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/pg_envelope_cache_bench.XXXXXX")
chmod 700 "$TMP"
[[ $RUN_USER != "$(id -un)" ]] && chown "$RUN_USER": "$TMP"
cd "$TMP"   # the server user must be able to read its working directory
SOCK=$TMP/sock
as_pg mkdir -m 700 "$SOCK" "$TMP/results"
as_pg sh -c "umask 077; od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > '$TMP/master.key'"
as_pg sh -c "umask 077; echo emulator-root-token > '$TMP/vault.token'"

echo "pg_envelope shared DEK cache benchmark  (temporary clusters in $TMP, run as OS user '$RUN_USER')"
echo "  initdb ..."
as_pg "$PG_BIN/initdb" -D "$TMP/template" -U postgres --auth=trust -E UTF8 --no-locale >"$TMP/initdb.log" 2>&1 ||
  { cat "$TMP/initdb.log" >&2; exit 1; }
{
  echo
  echo "# ---- pg_envelope cache bench settings (throwaway cluster) ----"
  bench_server_settings "$SOCK" "$TMP/master.key"
} >>"$TMP/template/postgresql.conf"

# Starts a fresh cluster (a copy of the template) in $TMP/NAME on port PORT; sets
# SO_SUM / SO_INODE to the md5 and inode of the pg_envelope.so it preloads.
start_cluster() {  # $1 = name, $2 = port
  local d=$TMP/$1
  as_pg cp -a "$TMP/template" "$d"
  echo "port = $2" | as_pg tee -a "$d/postgresql.conf" >/dev/null
  SO_SUM=$(md5sum "$PKGLIBDIR/pg_envelope.so" | cut -d' ' -f1)
  SO_INODE=$(stat -c %i "$PKGLIBDIR/pg_envelope.so")
  RUNNING+=("$d")
  # The server must not inherit the install lock's descriptor (it would hold the lock).
  if [[ -n $LOCK_FD ]]; then
    as_pg "$PG_BIN/pg_ctl" -D "$d" -l "$d.log" -w -t 60 start >/dev/null {LOCK_FD}>&-
  else
    as_pg "$PG_BIN/pg_ctl" -D "$d" -l "$d.log" -w -t 60 start >/dev/null
  fi || { echo "server did not start; its log:" >&2; tail -20 "$d.log" >&2; exit 1; }
  echo "  cluster $1 started (port $2): pg_envelope.so md5 $SO_SUM inode $SO_INODE; load avg $(cut -d' ' -f1-3 /proc/loadavg)"
}
stop_cluster() {  # $1 = name
  local d=$TMP/$1 i
  as_pg "$PG_BIN/pg_ctl" -D "$d" -m fast -w stop >/dev/null
  for i in "${!RUNNING[@]}"; do [[ ${RUNNING[$i]} == "$d" ]] && unset "RUNNING[$i]"; done
  as_pg rm -rf "$d"
}
helper() { as_pg env PYTHONDONTWRITEBYTECODE=1 "$PY" -B "$BENCH_DIR/cache_bench.py" "$@"; }

tree_desc() {  # [short]
  local rev dirty
  rev=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
  dirty=$(git -C "$REPO" status --porcelain -- src include extension Makefile pg_envelope.control 2>/dev/null | wc -l)
  if [[ ${1:-} == short ]]; then
    if (( dirty )); then echo "tree $rev+$dirty modified"; else echo "tree $rev"; fi
  elif (( dirty )); then echo "working tree at $rev + $dirty uncommitted source file(s)"
  else echo "working tree at $rev"; fi
}

CPU=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || true)
echo
echo "=== Environment ==="
echo "PostgreSQL : $("$PG_BIN/postgres" --version)"
echo "CPU        : ${CPU:-unknown} ($(nproc) online CPUs)"
echo "Kernel     : $(uname -sr)"
echo "OpenSSL    : $(openssl version 2>/dev/null || echo unknown)"
echo "Installed  : $PKGLIBDIR/pg_envelope.so md5 $(md5sum "$PKGLIBDIR/pg_envelope.so" | cut -d' ' -f1); $(tree_desc)"
echo "Load avg   : $(cut -d' ' -f1-3 /proc/loadavg) at start (other work on this machine skews wall-clock figures)"
echo "Settings   : shared_buffers=1GB, max_parallel_workers_per_gather=0, jit=off, fsync=off, autovacuum=off;"
echo "             Unix socket only, trust auth; envelope.cache_* at their defaults"

# ---------------------------------------------------------------- parts 1 and 2
echo
echo "=== Parts 1-2: new connections, Vault Transit emulator (loopback HTTP), installed build ==="
T_PART=$(date +%s)
if [[ " $PARTS " == *" 1 "* ]]; then
  start_cluster conn "$PORT"
  helper conn --host "$SOCK" --port "$PORT" --token-file "$TMP/vault.token" --latency-ms "$LATENCY" \
    --conns "$CONNS" --call-conns "$CALL_CONNS" --so-md5 "$SO_SUM" --out "$TMP/results/conn.json"
  stop_cluster conn
  echo "  parts 1-2 done in $(( $(date +%s) - T_PART )) s"
else
  echo "  skipped (BENCH_PARTS=\"$PARTS\")"
fi

# ---------------------------------------------------------------- part 3
echo
echo "=== Part 3: hot decrypt path, local KMS$([[ -n $ROLE ]] && echo ", scanning as role $ROLE") ==="
T_PART=$(date +%s)
if [[ " $PARTS " != *" 3 "* ]]; then
  echo "  skipped (BENCH_PARTS=\"$PARTS\")"
elif [[ $BEFORE == 1 ]]; then
  # The "before" cluster preloads the old library and keeps it mapped after the current
  # build is installed over it (PostgreSQL never loads a preloaded library again), so
  # both clusters run side by side and their scans are interleaved run by run.
  BEFORE_SHA=$(git -C "$REPO" rev-parse --short "$BEFORE_REF^{commit}")
  echo "  building $BEFORE_REF ($BEFORE_SHA: $(git -C "$REPO" log -1 --format=%s "$BEFORE_REF" | cut -c1-60)...) ..."
  mkdir "$TMP/old-src"
  git -C "$REPO" archive "$BEFORE_REF" | tar -x -C "$TMP/old-src"
  (cd "$TMP/old-src" && make -j2) >"$TMP/old-build.log" 2>&1 ||
    { tail -n 30 "$TMP/old-build.log" >&2; echo "cache.sh: build of $BEFORE_REF failed" >&2; exit 1; }
  echo "  waiting for $LOCK_FILE ..."
  T_WAIT=$(date +%s)
  exec {LOCK_FD}>>"$LOCK_FILE"
  if (( LOCK_TIMEOUT > 0 )); then
    flock -w "$LOCK_TIMEOUT" "$LOCK_FD" || { echo "cache.sh: could not get $LOCK_FILE in $LOCK_TIMEOUT s" >&2; exit 1; }
  else
    flock "$LOCK_FD"
  fi
  T_LOCK=$(date +%s)
  echo "  holding $LOCK_FILE (waited $(( T_LOCK - T_WAIT )) s); saving the installed files, installing the $BEFORE_REF build ..."
  mkdir "$TMP/installed"
  cp -p "${INSTALLED[@]}" "$TMP/installed/"
  OLD_INSTALLED=1
  (cd "$TMP/old-src" && make install) >"$TMP/old-install.log" 2>&1 ||
    { tail -n 30 "$TMP/old-install.log" >&2; exit 1; }
  start_cluster before "$PORT_BEFORE"
  BEFORE_TARGET="before: $BEFORE_SHA|$PORT_BEFORE|$SO_INODE|$SO_SUM"
  helper hot-load --host "$SOCK" --port "$PORT_BEFORE" --rows "$N" --label before "${ROLE_ARGS[@]}"
  echo "  reinstalling the current tree (make -j2 install in $REPO) ..."
  AFTER_DESC=$(tree_desc)
  (cd "$REPO" && make -j2 install) >"$TMP/reinstall.log" 2>&1 ||
    { tail -n 30 "$TMP/reinstall.log" >&2; echo "cache.sh: make install of the current tree failed" >&2; exit 1; }
  OLD_INSTALLED=0
  echo "  current build installed ($AFTER_DESC)"
  start_cluster after "$PORT"
  AFTER_TARGET="after: $(tree_desc short)|$PORT|$SO_INODE|$SO_SUM"
  helper hot-load --host "$SOCK" --port "$PORT" --rows "$N" --label after "${ROLE_ARGS[@]}"
  helper hot-measure --host "$SOCK" --rows "$N" --runs "$RUNS" --out "$TMP/results/hot.json" "${ROLE_ARGS[@]}" \
    --target "$BEFORE_TARGET" --target "$AFTER_TARGET"
  stop_cluster before
  stop_cluster after
  exec {LOCK_FD}>&-
  LOCK_FD=""
  echo "  released $LOCK_FILE after $(( $(date +%s) - T_LOCK )) s"
else
  echo "  installed build only (BENCH_BEFORE=0: no before/after comparison)"
  start_cluster current "$PORT"
  TARGET="current (installed)|$PORT|$SO_INODE|$SO_SUM"
  helper hot-load --host "$SOCK" --port "$PORT" --rows "$N" --label current "${ROLE_ARGS[@]}"
  helper hot-measure --host "$SOCK" --rows "$N" --runs "$RUNS" --out "$TMP/results/hot.json" "${ROLE_ARGS[@]}" \
    --target "$TARGET"
  stop_cluster current
fi
echo "  part 3 done in $(( $(date +%s) - T_PART )) s"

# ---------------------------------------------------------------- report
echo
echo "=================================== Report ==================================="
REPORT_ARGS=()
[[ -f $TMP/results/conn.json ]] && REPORT_ARGS+=(--conn "$TMP/results/conn.json")
[[ -f $TMP/results/hot.json ]] && REPORT_ARGS+=(--hot "$TMP/results/hot.json")
helper report "${REPORT_ARGS[@]}"
echo
echo "load avg at end: $(cut -d' ' -f1-3 /proc/loadavg); total wall time: $(( $(date +%s) - T_START )) s"
