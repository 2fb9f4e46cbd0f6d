#!/usr/bin/env bash
# pg_envelope audit-trail and per-key-check benchmark (issue 11 parts 4 and 5): one command,
# one throwaway cluster.
#
#   bench/audit.sh             # as root (the cluster then runs as "postgres") or as any user
#
# Prints, from one run (rounds interleaved, medians):
#   1. the decrypt scan  SELECT count(envelope.decrypt_field(c, ctx)) FROM bench.t  over
#      BENCH_N rows encrypted under one key, as the superuser, with envelope.audit = off,
#      log, table and all, next to a plaintext scan of the same rows (SELECT count(p)) and
#      pgcrypto pgp_sym_decrypt of the same plaintexts (BENCH_PGP_N rows, s2k as pgcrypto's
#      default); goal: audit on costs <= 5% more than audit off;
#   2. the same decrypt scan (audit off) by a role that holds decrypt only through a
#      pattern grant ('tenant_*' granted to the role tenant_readers, of which it is a
#      member) vs by the superuser: the cost of the per-key privilege check.
#
# Environment knobs (defaults in brackets):
#   BENCH_N=200000       rows of the scanned table
#   BENCH_RUNS=15        timed rounds (after one untimed warm-up round); in every round each
#                        measurement runs once, the order rotating from round to round
#   BENCH_REPS=3         back-to-back repetitions of each decrypt/plain scan within a round; the
#                        round's figure is the fastest of them (pgp: 1 repetition)
#   BENCH_PGP_N=5000     rows of the pgp_sym_decrypt reference scan (it is ~100x slower)
#   BENCH_KEEP=0         1: keep the temporary directory (cluster stopped)
#   PG_BIN=/usr/lib/postgresql/15/bin
#
# Method. Server settings as bench/run.sh (bench/lib.sh: shared_buffers 1GB, no parallel
# workers, jit off, fsync off, autovacuum off). One key 'tenant_1' (local KMS); values are
# the 74-byte fake PII strings of bench/bench.sql, encrypted with context = id::text; the
# table is VACUUM FREEZE'd and read once before timing (all in shared buffers).
# Every timed statement runs in its own autocommitted transaction in one psql session per
# round (\timing, client-side wall time; the audit flush at commit is inside it); the
# session sets envelope.audit (a superuser setting) before each statement, and the
# pattern-grant variant runs after SET ROLE bench_reader (session user stays the
# superuser; privileges are checked for the current role). us/row = ms * 1000 / rows, from
# the wall clock and from the backend's on-CPU time (/proc/self/schedstat read with
# pg_read_file around the statement): the CPU figure is what to compare on a busy machine.
# Within a round each scan runs BENCH_REPS times back to back and the fastest counts (other
# work on a shared machine only ever slows a run down).
# "paired" = median over rounds of (variant / audit off) within the same round.
# Sanity checks: every scan counts all its rows; audit=log wrote one AUDIT line per scan
# with value count BENCH_N; audit=table rows reach envelope.audit_log with value_count
# BENCH_N and audit_verify() is ok.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
N=${BENCH_N:-200000}
RUNS=${BENCH_RUNS:-15}
PGP_N=${BENCH_PGP_N:-5000}
REPS=${BENCH_REPS:-3}
KEEP=${BENCH_KEEP:-0}
PORT=54331

die() { echo "audit.sh: $*" >&2; exit 2; }
for v in N RUNS PGP_N REPS; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer"
done
(( PGP_N > N )) && PGP_N=$N
[[ -x $PG_BIN/initdb && -x $PG_BIN/pg_ctl && -x $PG_BIN/psql ]] || die "PostgreSQL binaries not found in $PG_BIN"
PKGLIBDIR=$("$PG_BIN/pg_config" --pkglibdir 2>/dev/null || echo /usr/lib/postgresql/15/lib)
SHAREDIR=$("$PG_BIN/pg_config" --sharedir 2>/dev/null || echo /usr/share/postgresql/15)
[[ -e $PKGLIBDIR/pg_envelope.so ]] || die "$PKGLIBDIR/pg_envelope.so is not installed (make && make install)"
[[ -e $SHAREDIR/extension/pgcrypto.control ]] || die "pgcrypto is not installed (Debian: postgresql-15)"

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
  (( rc != 0 )) && echo "audit.sh: FAILED (exit $rc)" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

TMP=$(mktemp -d "${TMPDIR:-/tmp}/pg_envelope_audit_bench.XXXXXX")
chmod 700 "$TMP"
[[ $RUN_USER != "$(id -un)" ]] && chown "$RUN_USER": "$TMP"
cd "$TMP"
PGDATA=$TMP/data
SOCK=$TMP/sock
as_pg mkdir -m 700 "$SOCK"
as_pg sh -c "umask 077; od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > '$TMP/master.key'"

echo "pg_envelope audit benchmark  (temporary cluster in $TMP, run as OS user '$RUN_USER')"
as_pg "$PG_BIN/initdb" -D "$PGDATA" -U postgres --auth=trust -E UTF8 --no-locale >"$TMP/initdb.log" 2>&1 ||
  { cat "$TMP/initdb.log" >&2; exit 1; }
{
  echo
  echo "# ---- pg_envelope audit bench settings (throwaway cluster) ----"
  echo "port = $PORT"
  bench_server_settings "$SOCK" "$TMP/master.key"
  echo "log_line_prefix = '%m [%p] '"
} >>"$PGDATA/postgresql.conf"
as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$TMP/server.log" -w -t 60 start >/dev/null || {
  echo "server did not start; its log:" >&2; tail -20 "$TMP/server.log" >&2; exit 1; }

psql_base=("$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PORT")
as_pg "${psql_base[@]}" -U postgres -d postgres -c "CREATE DATABASE bench" >/dev/null
psql_su() { as_pg "${psql_base[@]}" -U postgres -d bench "$@"; }

CPU=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || true)
GIT_REV=$(git -C "$BENCH_DIR/.." rev-parse --short HEAD 2>/dev/null || echo unknown)
echo
echo "=== Environment ==="
echo "PostgreSQL : $(psql_su -Atc 'SELECT version()')"
echo "CPU        : ${CPU:-unknown} ($(nproc) online CPUs)"
echo "pg_envelope: $PKGLIBDIR/pg_envelope.so md5 $(md5sum "$PKGLIBDIR/pg_envelope.so" | cut -d' ' -f1) (tree HEAD $GIT_REV)"
echo "Load avg   : $(cut -d' ' -f1-3 /proc/loadavg) at start"
echo "Workload   : N=$N rows, $RUNS timed rounds + 1 warm-up; pgp_sym_decrypt over $PGP_N rows"

echo
echo "=== Setup ==="
T0=$(date +%s)
psql_su -v N="$N" -v PGP_N="$PGP_N" <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION pg_envelope;
CREATE EXTENSION pgcrypto;
CREATE ROLE tenant_readers NOLOGIN;
CREATE ROLE bench_reader LOGIN IN ROLE tenant_readers;
CREATE SCHEMA bench;
GRANT USAGE ON SCHEMA bench TO bench_reader;
SELECT envelope.create_key('tenant_1') \g /dev/null
SELECT envelope.grant_key('tenant_*', 'tenant_readers', 'decrypt') \g /dev/null
GRANT EXECUTE ON FUNCTION envelope.decrypt_field(envelope.encrypted_text, text) TO bench_reader;
CREATE FUNCTION bench.val(g integer) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
$$ SELECT left(format('%s|%s.%s@example.com|+1-555-%s', lpad(g::text, 7, '0'), md5(g::text),
                      md5((g * 7)::text), lpad((g % 10000)::text, 4, '0')), 74) $$;
CREATE TABLE bench.t (id integer PRIMARY KEY, ctx text NOT NULL, p text NOT NULL,
                      c envelope.encrypted_text NOT NULL);
INSERT INTO bench.t SELECT g, g::text, bench.val(g), envelope.encrypt_field(bench.val(g), 'tenant_1', g::text)
  FROM generate_series(1, :N) g;
-- pgcrypto: the same plaintexts, pgp_sym_encrypt with its defaults (AES128, iterated s2k).
CREATE TABLE bench.pgp (id integer PRIMARY KEY, g bytea NOT NULL);
INSERT INTO bench.pgp SELECT id, pgp_sym_encrypt(p, 'bench-passphrase') FROM bench.t WHERE id <= :PGP_N;
GRANT SELECT ON bench.t TO bench_reader;
VACUUM (FREEZE, ANALYZE) bench.t, bench.pgp;
SELECT count(*) FROM bench.t \g /dev/null
SQL
echo "  $N rows encrypted under 'tenant_1' (+ $PGP_N pgp_sym_encrypt rows) in $(( $(date +%s) - T0 )) s"

# ---------------------------------------------------------------- timed rounds
SCAN="SELECT count(envelope.decrypt_field(c, ctx)) FROM bench.t"
LABELS=(plain off log table all role_pattern pgp)
declare -A SQLS=(
  [plain]="SET envelope.audit = off; SELECT count(p) FROM bench.t"
  [off]="SET envelope.audit = off; $SCAN"
  [log]="SET envelope.audit = log; $SCAN"
  [table]="SET envelope.audit = 'table'; $SCAN"
  [all]="SET envelope.audit = 'all'; $SCAN"
  [role_pattern]="SET envelope.audit = off; SET ROLE bench_reader; $SCAN"
  [pgp]="SET envelope.audit = off; SELECT count(pgp_sym_decrypt(g, 'bench-passphrase')) FROM bench.pgp"
)
declare -A ROWS=([plain]=$N [off]=$N [log]=$N [table]=$N [all]=$N [role_pattern]=$N [pgp]=$PGP_N)
RESULTS=$TMP/results.tsv
: >"$RESULTS"
LOG_START=$(stat -c %s "$TMP/server.log")
nl=${#LABELS[@]}
echo
echo "=== Timed rounds (round 0 = warm-up) ==="
for (( r = 0; r <= RUNS; r++ )); do
  script=$TMP/round.sql
  {
    echo '\timing on'
    for (( k = 0; k < nl; k++ )); do
      lab=${LABELS[$(( (k + r) % nl ))]}
      reps=$REPS
      [[ $lab == pgp ]] && reps=1
      for (( rep = 0; rep < reps; rep++ )); do
      echo "\\timing off"
      echo "SET envelope.audit = off; RESET ROLE;"
      echo "\\echo @@ $lab"
      # The backend's on-CPU time (/proc/self/schedstat, ns) around the statement.
      echo "SELECT split_part(pg_read_file('/proc/self/schedstat'), ' ', 1) AS c0 \\gset"
      # Only the scan is timed: \timing prints one "Time:" per statement; the last one is the scan.
      echo "\\timing on"
      echo "${SQLS[$lab]};"
      echo "\\timing off"
      echo "RESET ROLE;"
      echo "SELECT 'CPU ' || (split_part(pg_read_file('/proc/self/schedstat'), ' ', 1)::bigint - :c0);"
      done
    done
  } >"$script"
  as_pg chmod a+r "$script" 2>/dev/null || true
  out=$(psql_su -At -f "$script")
  # Keep, per label, the last "Time:" line after its "@@ label" marker and the count printed before it.
  echo "$out" | awk -v run="$r" '
    function emit() { if (lab != "" && ms != "" && cnt != "" && cpu != "") print run "\t" lab "\t" cnt "\t" ms "\t" cpu }
    /^@@ / { emit(); lab = $2; cnt = ""; ms = ""; cpu = ""; next }
    /^CPU / { cpu = $2; next }
    /^Time: / { ms = $2; next }
    /^[0-9]+$/ { cnt = $1; next }
    END { emit() }
  ' >>"$RESULTS"
  printf '  round %d done (load %s)\n' "$r" "$(cut -d' ' -f1 /proc/loadavg)"
done

# ---------------------------------------------------------------- sanity checks
FAIL=0
check() { if [[ $2 == ok ]]; then echo "  ok   $1"; else echo "  FAIL $1: $2"; FAIL=1; fi; }
echo
echo "=== Sanity checks ==="
rounds=$(( RUNS + 1 ))
for lab in "${LABELS[@]}"; do
  reps=$REPS; [[ $lab == pgp ]] && reps=1
  want_runs=$(( rounds * reps ))
  got=$(awk -F'\t' -v l="$lab" '$2 == l' "$RESULTS" | wc -l)
  bad=$(awk -F'\t' -v l="$lab" -v n="${ROWS[$lab]}" '$2 == l && $3 != n' "$RESULTS" | wc -l)
  [[ $got == "$want_runs" && $bad == 0 ]] && check "$lab: $want_runs runs, each counted ${ROWS[$lab]} rows" ok ||
    check "$lab runs" "$got of $want_runs timed, $bad with a wrong count"
done
# audit=log and audit=all: one AUDIT line per scan, value count N.
log_lines=$(tail -c +$(( LOG_START + 1 )) "$TMP/server.log" | grep -c "AUDIT: ENVELOPE,decrypt,tenant_1,1,,$N," || true)
want=$(( 2 * rounds * REPS ))
[[ $log_lines == "$want" ]] && check "log + all: $want AUDIT lines 'decrypt,tenant_1,1,,$N'" ok ||
  check "AUDIT lines" "$log_lines, expected $want"
# audit=table and all: rows in audit_log (the writer is asynchronous: wait up to 30 s).
for _ in $(seq 1 300); do
  rows=$(psql_su -Atc "SELECT count(*) FROM envelope.audit_log WHERE event = 'decrypt' AND value_count = $N")
  [[ $rows == "$want" ]] && break
  sleep 0.1
done
[[ $rows == "$want" ]] && check "table + all: $want audit_log rows with value_count $N" ok ||
  check "audit_log rows" "$rows, expected $want"
v=$(psql_su -Atc "SELECT ok FROM envelope.audit_verify()")
[[ $v == t ]] && check "audit_verify() ok" ok || check "audit_verify()" "$v"
role_rows=$(psql_su -Atc "SELECT decrypts FROM envelope.key_usage WHERE key_name = 'tenant_1'")
echo "  info key_usage decrypts for tenant_1: $role_rows"

# ---------------------------------------------------------------- report
echo
report() {
  awk -F'\t' -v N="$N" -v PGP="$PGP_N" -v col="$1" '
  function median(a, n,   i, j, t) {
    for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  $1 > 0 {
    rows = ($2 == "pgp") ? PGP : N
    x = (col == 4 ? $4 * 1000.0 : $5 / 1000.0) / rows
    if (!(($1, $2) in per) || x < per[$1, $2]) per[$1, $2] = x
    if (!($1 in seen)) { seen[$1] = 1; runs[++nr] = $1 }
  }
  END {
    split("plain off log table all role_pattern pgp", L0, " ")
    for (k = 1; k <= 7; k++) for (i = 1; i <= nr; i++) if ((runs[i], L0[k]) in per) us[L0[k], ++cnt[L0[k]]] = per[runs[i], L0[k]]
    split("plain off log table all role_pattern pgp", L, " ")
    desc["plain"] = "plaintext scan: count(p)"
    desc["off"] = "decrypt scan, superuser, audit=off"
    desc["log"] = "decrypt scan, superuser, audit=log"
    desc["table"] = "decrypt scan, superuser, audit=table"
    desc["all"] = "decrypt scan, superuser, audit=all"
    desc["role_pattern"] = "decrypt scan, role via tenant_* grant"
    desc["pgp"] = "pgcrypto pgp_sym_decrypt scan"
    for (k = 1; k <= 7; k++) {
      l = L[k]; n = cnt[l]
      for (i = 1; i <= n; i++) { a[i] = us[l, i] } ; mn = a[1]; mx = a[1]
      for (i = 1; i <= n; i++) { if (a[i] < mn) mn = a[i]; if (a[i] > mx) mx = a[i] }
      med[l] = median(a, n); lo[l] = mn
      printf "  %-40s %9.3f us/row  (%.3f..%.3f)\n", desc[l], med[l], mn, mx
    }
    print ""
    print "  ratios (medians; paired = median over rounds of the ratio within a round; best = fastest / fastest):"
    split("log/off table/off all/off role_pattern/off off/plain pgp/off", R, " ")
    for (k = 1; k <= 6; k++) {
      split(R[k], p, "/")
      np = 0
      for (i = 1; i <= nr; i++) if (((runs[i], p[1]) in per) && ((runs[i], p[2]) in per)) b[++np] = per[runs[i], p[1]] / per[runs[i], p[2]]
      printf "  %-20s %7.3fx  (paired %7.3fx, best %7.3fx)\n", R[k], med[p[1]] / med[p[2]], median(b, np), lo[p[1]] / lo[p[2]]
    }
    printf "\n  audit goal (<= 5%% more than off): log %+.1f%%, table %+.1f%%, all %+.1f%%\n",
      100 * (med["log"] / med["off"] - 1), 100 * (med["table"] / med["off"] - 1), 100 * (med["all"] / med["off"] - 1)
    printf "  per-key check (pattern grant via membership vs superuser): %+.3f us/row\n", med["role_pattern"] - med["off"]
  }' "$RESULTS"
}

echo "=== Wall clock (client-side \\timing): us/row, median over $RUNS rounds of each round's fastest of $REPS (min..max) ==="
report 4
echo
echo "=== Backend on-CPU time (/proc/self/schedstat; excludes waiting for a CPU, and the audit writer's own work): us/row ==="
report 5
echo
echo "Load avg at end: $(cut -d' ' -f1-3 /proc/loadavg)"
exit $FAIL
