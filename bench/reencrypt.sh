#!/usr/bin/env bash
# pg_envelope online re-encryption benchmark (issue 13, part 1): one command, one throwaway cluster.
#
#   bench/reencrypt.sh          # as root (the cluster then runs as "postgres") or as any user
#
# On a table of BENCH_N rows (id bigint pk, c envelope.encrypted_text encrypted with
# context id::text, p text of the same stored size as c, n integer), measures:
#   (a) CALL envelope.reencrypt('bench.r', 'c', context_column => 'id', batch_blocks => B)
#       after envelope.rotate_key();
#   (b) the equivalent plain batched UPDATE: per range of B heap blocks (ctid range, the
#       table's size when it starts), SET c = envelope.encrypt_field(envelope.decrypt_field(
#       c, id::text), 'bench', id::text), COMMIT after every batch (a PL/pgSQL procedure);
#   (c) the same batched UPDATE of the text column p (SET p = reverse(p)): no crypto;
#   then (a) and (b) again while a pgbench OLTP load runs on the same table (pgbench -n
#   -c BENCH_CLIENTS -M prepared: per transaction an UPDATE of n by pk and a SELECT
#   decrypting c by pk), (a) throttled with pause_ms => BENCH_PAUSE under the same load, and (a) in a
#   background worker (start_reencryption) under it. Prints rows/s, the ratios (a)/(b) and (a)/(c), and the OLTP
#   tx/s alone and while (a) or (b) runs. (b) and (c) count the rows their UPDATEs wrote:
#   a row a batch moves into a later block of the same scan is written twice; under OLTP,
#   (b) misses rows the load moved behind its scan (printed as "left on an old version"). Issue 13's goals: (a) with OLTP >= 50% of the
#   plain batched UPDATE's throughput, OLTP tx/s drop <= 20%.
#
# Environment knobs (defaults in brackets):
#   BENCH_N=1000000     rows
#   BENCH_BATCH=8       batch_blocks of (a), (b), (c)
#   BENCH_CLIENTS=2     pgbench clients of the OLTP load
#   BENCH_SECONDS=10    seconds of OLTP load alone before and after each run with load (its baseline)
#   BENCH_PAUSE=20      pause_ms of the throttled run (t_oltp: (a) with OLTP and pause_ms)
#   BENCH_KEEP=0        1: keep the temporary directory (cluster stopped)
#   PG_BIN=/usr/lib/postgresql/15/bin
#
# Method. Server settings of bench/lib.sh (shared_buffers 1GB, fsync and synchronous_commit
# off, autovacuum off, no parallel workers, jit off). All work runs as the login role
# bench_app, which owns the table and holds encrypt and decrypt on the key 'bench'.
# Before every measured run: VACUUM FULL + ANALYZE + CHECKPOINT (each run starts on a
# compact table of the same size, no free space), then for (a) and (b) a rotate_key (every
# value is on an older version). Times are wall-clock around the CALL, server-side
# (clock_timestamp()). OLTP tx/s is counted by a sequence the pgbench script bumps once per
# transaction: over BENCH_SECONDS alone (after 2 s of warm-up), over the run, over
# BENCH_SECONDS alone again; the baseline ("alone") is the two alone windows together.
# Sanity checks at the end of every run: every value decrypts to its original (bench.val),
# every value of c is on the key's current version after (a) and (b), pgbench reported no
# failed transaction. Exit status 0 when the run completed and every check passed
# (whether or not the goals are met).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
N=${BENCH_N:-1000000}
BATCH=${BENCH_BATCH:-8}
CLIENTS=${BENCH_CLIENTS:-2}
DUR=${BENCH_SECONDS:-10}
PAUSE=${BENCH_PAUSE:-20}
KEEP=${BENCH_KEEP:-0}
PORT=54331
APP=bench_app

die() { echo "reencrypt.sh: $*" >&2; exit 2; }
for v in N BATCH CLIENTS DUR PAUSE; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer"
done
[[ -x $PG_BIN/initdb && -x $PG_BIN/pg_ctl && -x $PG_BIN/psql && -x $PG_BIN/pgbench ]] ||
  die "PostgreSQL binaries (initdb, pg_ctl, psql, pgbench) not found in $PG_BIN"
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
OLTP_PIDFILE=""
stop_oltp() {  # stops the background pgbench load, if it runs (by its own pid)
  local pid
  [[ -n $OLTP_PIDFILE && -s $OLTP_PIDFILE ]] || return 0
  pid=$(cat "$OLTP_PIDFILE")
  if kill -0 "$pid" 2>/dev/null; then
    kill -INT "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$OLTP_PIDFILE"
  OLTP_PIDFILE=""
  return 0
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  stop_oltp
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
  (( rc != 0 )) && echo "reencrypt.sh: FAILED (exit $rc)" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

T_START=$(date +%s)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/pg_envelope_reencrypt_bench.XXXXXX")
chmod 700 "$TMP"
[[ $RUN_USER != "$(id -un)" ]] && chown "$RUN_USER": "$TMP"
cd "$TMP"
PGDATA=$TMP/data
SOCK=$TMP/sock
as_pg mkdir -m 700 "$SOCK" "$TMP/pgb"
as_pg sh -c "umask 077; od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > '$TMP/master.key'"

echo "pg_envelope re-encryption benchmark  (temporary cluster in $TMP, run as OS user '$RUN_USER')"
as_pg "$PG_BIN/initdb" -D "$PGDATA" -U postgres --auth=trust -E UTF8 --no-locale >"$TMP/initdb.log" 2>&1 ||
  { cat "$TMP/initdb.log" >&2; exit 1; }
{
  echo
  echo "port = $PORT"
  bench_server_settings "$SOCK" "$TMP/master.key"
} >>"$PGDATA/postgresql.conf"
as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$TMP/server.log" -w -t 60 start >/dev/null || {
  echo "server did not start; its log:" >&2; tail -20 "$TMP/server.log" >&2; exit 1; }

psql_base=("$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PORT")
as_pg "${psql_base[@]}" -U postgres -d postgres -c "CREATE DATABASE bench" >/dev/null
psql_su() { as_pg "${psql_base[@]}" -U postgres -d bench "$@"; }
psql_app() { as_pg "${psql_base[@]}" -U "$APP" -d bench "$@"; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

CPU=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || true)
GIT_REV=$(git -C "$BENCH_DIR/.." rev-parse --short HEAD 2>/dev/null || echo unknown)
GIT_DIRTY=$(git -C "$BENCH_DIR/.." status --porcelain -- src include extension Makefile 2>/dev/null | wc -l || echo 0)
echo
echo "=== Environment ==="
echo "PostgreSQL : $(psql_su -Atc 'SELECT version()')"
echo "CPU        : ${CPU:-unknown} ($(nproc) online CPUs)"
echo "pg_envelope: $PKGLIBDIR/pg_envelope.so md5 $(md5sum "$PKGLIBDIR/pg_envelope.so" | cut -d' ' -f1) (HEAD $GIT_REV$( (( GIT_DIRTY )) && echo " + $GIT_DIRTY uncommitted source files"))"
echo "Load avg   : $(loadavg) at start"
echo "Workload   : N=$N rows, encrypted_text of 74-byte values with context id, batch_blocks=$BATCH,"
echo "             OLTP: pgbench -n -c $CLIENTS -j $CLIENTS -M prepared, ${DUR} s alone before and after each loaded run"
echo "NOTE       : fsync=off, synchronous_commit=off, autovacuum=off -- a throwaway benchmark cluster."

# ---------------------------------------------------------------- setup
psql_su -v APP="$APP" <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION pg_envelope;
CREATE ROLE :"APP" LOGIN;
CREATE SCHEMA bench AUTHORIZATION :"APP";
SELECT envelope.create_key('bench') \g /dev/null
SELECT envelope.grant_key('bench', :'APP', 'encrypt') \g /dev/null
SELECT envelope.grant_key('bench', :'APP', 'decrypt') \g /dev/null
SELECT envelope.grant_key('bench', :'APP', 'admin') \g /dev/null
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA envelope TO :"APP";
GRANT EXECUTE ON PROCEDURE envelope.reencrypt(regclass, name, name, text, integer, integer) TO :"APP";
SQL
# rotate_key needs admin on the key (granted above); key_columns etc. are granted by ALL FUNCTIONS.

echo
echo "=== Setup: $N rows ==="
T0=$(date +%s)
psql_app -v N="$N" <<'SQL'
SET client_min_messages = warning;
CREATE FUNCTION bench.val(g bigint) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
$$ SELECT left(format('%s|%s.%s@example.com|+1-555-%s', lpad(g::text, 7, '0'), md5(g::text),
                      md5((g * 7)::text), lpad((g % 10000)::text, 4, '0')), 74) $$;
CREATE TABLE bench.r (id bigint PRIMARY KEY, n integer NOT NULL DEFAULT 0,
                      c envelope.encrypted_text, p text);
INSERT INTO bench.r (id, c, p)
  SELECT g, e, rpad(bench.val(g), pg_column_size(e) - 1, '#')   -- p: the same stored size as c
    FROM (SELECT g, envelope.encrypt_field(bench.val(g), 'bench', g::text) AS e
            FROM generate_series(1, :N) g) s;
CREATE SEQUENCE bench.oltp_seq;
-- (w): the same re-encryption in a background worker (envelope.start_reencryption),
-- waited for by polling its progress.
CREATE PROCEDURE bench.background(batch integer) LANGUAGE plpgsql AS $$
DECLARE
  ph text;
BEGIN
  PERFORM envelope.start_reencryption('bench.r', 'c', context_column => 'id', batch_blocks => batch);
  COMMIT;
  LOOP
    PERFORM pg_sleep(0.05);
    SELECT phase INTO ph FROM envelope.reencryption_progress
     WHERE relation = 'bench.r'::regclass AND column_name = 'c';
    COMMIT;
    EXIT WHEN ph IS DISTINCT FROM 'running';
  END LOOP;
END $$;
CREATE TABLE bench.result (label text PRIMARY KEY, rows bigint, seconds double precision,
                           oltp_alone_tps double precision, oltp_during_tps double precision,
                           oltp_before_tps double precision, oltp_after_tps double precision,
                           passes integer, left_old bigint, ok boolean);
-- (b) and (c): a plain batched UPDATE per range of heap blocks (the size when it starts),
-- committed per batch.
CREATE PROCEDURE bench.batched(kind text, batch integer, INOUT total bigint DEFAULT 0)
LANGUAGE plpgsql AS $$
DECLARE
  nb bigint := pg_relation_size('bench.r') / current_setting('block_size')::bigint;
  b bigint := 0;
  lo tid; hi tid;
  n bigint;
BEGIN
  total := 0;
  WHILE b < nb LOOP
    lo := format('(%s,0)', b)::tid;
    hi := format('(%s,0)', b + batch)::tid;
    IF kind = 'crypto' THEN
      UPDATE bench.r SET c = envelope.encrypt_field(envelope.decrypt_field(c, id::text), 'bench', id::text)
       WHERE ctid >= lo AND ctid < hi;
    ELSE
      UPDATE bench.r SET p = reverse(p) WHERE ctid >= lo AND ctid < hi;
    END IF;
    GET DIAGNOSTICS n = ROW_COUNT;
    total := total + n;
    b := b + batch;
    COMMIT;
  END LOOP;
END $$;
SQL
psql_app -At -c "SELECT format('  %s rows, table %s, avg stored c %s bytes, p %s bytes',
                 count(*), pg_size_pretty(pg_relation_size('bench.r')), round(avg(pg_column_size(c))),
                 round(avg(pg_column_size(p)))) FROM bench.r"
# The ctid range of (b)/(c) must be a TID range scan, not a sequential scan per batch.
PLAN=$(psql_app -At -c "EXPLAIN UPDATE bench.r SET p = reverse(p) WHERE ctid >= '(0,0)'::tid AND ctid < '(8,0)'::tid")
grep -q "Tid Range Scan" <<<"$PLAN" || die "batched UPDATE is not a TID range scan: $PLAN"
echo "  setup done in $(( $(date +%s) - T0 )) s"

# pgbench OLTP script: one single-row UPDATE of another column, one SELECT decrypting by pk.
as_pg sh -c "cat > '$TMP/pgb/oltp.sql'" <<EOF
\\set id random(1, $N)
\\set id2 random(1, $N)
UPDATE bench.r SET n = n + 1 WHERE id = :id;
SELECT envelope.decrypt_field(c, id::text) FROM bench.r WHERE id = :id2;
SELECT nextval('bench.oltp_seq');
EOF

start_oltp() {
  OLTP_PIDFILE=$TMP/oltp.pid
  # shellcheck disable=SC2016  # $$ and $@ belong to the inner sh: its pid is pgbench's after exec
  as_pg sh -c 'echo $$ > "$1"; shift; exec "$@"' sh "$OLTP_PIDFILE" \
    "$PG_BIN/pgbench" -n -h "$SOCK" -p "$PORT" -U "$APP" -M prepared -c "$CLIENTS" -j "$CLIENTS" \
    -T 86400 -f "$TMP/pgb/oltp.sql" bench >"$TMP/oltp.$1.log" 2>&1 &
  OLTP_BG=$!
  for _ in $(seq 1 50); do [[ -s $OLTP_PIDFILE ]] && break; sleep 0.1; done
}

prepare_run() {  # label: a compact table, every value on an older version for (a)/(b)
  psql_app -c "VACUUM FULL bench.r" -c "ANALYZE bench.r"
  psql_su -c CHECKPOINT
  if [[ $1 != c* ]]; then psql_app -c "SELECT envelope.rotate_key('bench')" >/dev/null; fi
}

# label (a | b | c, with _oltp suffix for a loaded run)
measure() {
  local label=$1 kind=${1%%_*} loaded=false
  [[ $label == *_oltp ]] && loaded=true
  prepare_run "$label"
  if $loaded; then start_oltp "$label"; fi
  local stmt
  case $kind in
    a) stmt="CALL envelope.reencrypt('bench.r', 'c', context_column => 'id', batch_blocks => $BATCH)";;
    t) stmt="CALL envelope.reencrypt('bench.r', 'c', context_column => 'id', batch_blocks => $BATCH, pause_ms => $PAUSE)";;
    w) stmt="CALL bench.background($BATCH)";;
    b) stmt="CALL bench.batched('crypto', $BATCH, NULL)";;
    c) stmt="CALL bench.batched('plain', $BATCH, NULL)";;
  esac
  local is_a=false
  [[ $kind == a || $kind == t || $kind == w ]] && is_a=true
  psql_app -v label="$label" -v loaded="$loaded" -v DUR="$DUR" -v stmt="$stmt" -v is_a="$is_a" <<'SQL'
SET client_min_messages = warning;
\if :loaded
SELECT pg_sleep(2) \g /dev/null
SELECT last_value AS w0, clock_timestamp() AS tw0 FROM bench.oltp_seq \gset
SELECT pg_sleep(:DUR) \g /dev/null
\else
SELECT 0 AS w0, clock_timestamp() AS tw0 \gset
\endif
SELECT last_value AS w1, clock_timestamp() AS t0 FROM bench.oltp_seq \gset
\if :is_a
:stmt ;
\else
:stmt \gset call_
\endif
SELECT last_value AS w2, clock_timestamp() AS t1 FROM bench.oltp_seq \gset
\if :loaded
SELECT pg_sleep(:DUR) \g /dev/null
SELECT last_value AS w3, clock_timestamp() AS t3 FROM bench.oltp_seq \gset
\else
SELECT 0 AS w3, :'t1'::timestamptz AS t3 \gset
\endif
-- OLTP alone: the windows before and after the run together.
INSERT INTO bench.result (label, seconds, oltp_alone_tps, oltp_during_tps, oltp_before_tps, oltp_after_tps)
VALUES (:'label', extract(epoch FROM :'t1'::timestamptz - :'t0'::timestamptz),
        CASE WHEN :'loaded' THEN (:w1 - :w0 + :w3 - :w2) / extract(epoch FROM :'t0'::timestamptz - :'tw0'::timestamptz
                                                                     + (:'t3'::timestamptz - :'t1'::timestamptz)) END,
        CASE WHEN :'loaded' THEN (:w2 - :w1) / extract(epoch FROM :'t1'::timestamptz - :'t0'::timestamptz) END,
        CASE WHEN :'loaded' THEN (:w1 - :w0) / extract(epoch FROM :'t0'::timestamptz - :'tw0'::timestamptz) END,
        CASE WHEN :'loaded' THEN (:w3 - :w2) / extract(epoch FROM :'t3'::timestamptz - :'t1'::timestamptz) END);
\if :{?call_total}
UPDATE bench.result SET rows = :call_total WHERE label = :'label';
\else
UPDATE bench.result r SET rows = p.rows_done, passes = p.passes
  FROM envelope.reencryption_progress p
 WHERE r.label = :'label' AND p.relation = 'bench.r'::regclass AND p.column_name = 'c' AND p.phase = 'done';
\endif
SQL
  local failed=0
  if $loaded; then
    stop_oltp
    wait "$OLTP_BG" 2>/dev/null || true
    failed=$(grep -ciE 'error|abort|fail' "$TMP/oltp.$label.log" || true)
    if (( failed > 0 )); then echo "  pgbench reported:"; head -n 10 "$TMP/oltp.$label.log" | sed 's/^/    /'; fi
  fi
  # Sanity: nothing changed, every value of c on the current version after (a)/(b).
  psql_app -v label="$label" -v failed="$failed" -v kind="$kind" <<'SQL'
SET client_min_messages = warning;
UPDATE bench.result SET left_old = CASE WHEN :'kind' <> 'c' THEN
  (SELECT count(*) FROM bench.r WHERE NOT envelope.on_current_key(c)) END WHERE label = :'label';
-- (b) is the naive baseline: under OLTP it misses rows moved behind its scan (reported,
-- not a failure); (a) must leave none.
UPDATE bench.result SET ok =
  (SELECT count(*) FILTER (WHERE envelope.decrypt_field(c, id::text) IS DISTINCT FROM bench.val(id)) = 0
      AND count(*) FILTER (WHERE left(p, 74) IS DISTINCT FROM bench.val(id)
                             AND left(reverse(p), 74) IS DISTINCT FROM bench.val(id)) = 0
     FROM bench.r) AND :failed = 0 AND rows IS NOT NULL
     AND (:'kind' NOT IN ('a', 't', 'w') OR left_old = 0) AND (:'label' <> 'b' OR left_old = 0)
 WHERE label = :'label';
SQL
  psql_app -At -v label="$label" <<'SQL'
SELECT format('  %-7s %s rows in %s s = %s rows/s%s%s%s%s', label, rows, round(seconds::numeric, 2),
              round(rows / seconds), CASE WHEN passes IS NOT NULL THEN format(' (%s passes)', passes) ELSE '' END,
              CASE WHEN left_old > 0 THEN format('; %s values left on an old version', left_old) ELSE '' END,
              CASE WHEN oltp_alone_tps IS NOT NULL
                   THEN format('; OLTP %s tx/s alone (%s before, %s after), %s tx/s during', round(oltp_alone_tps),
                               round(oltp_before_tps), round(oltp_after_tps), round(oltp_during_tps))
                   ELSE '' END,
              CASE WHEN ok THEN '' ELSE '  CHECK FAILED' END)
  FROM bench.result WHERE label = :'label';
SQL
}

echo
echo "=== Runs (each on a VACUUM FULLed table; (a), (b) after a rotate_key) ==="
T0=$(date +%s)
measure c
measure b
measure a
measure a_oltp
measure b_oltp
measure t_oltp
measure w_oltp
echo "  runs done in $(( $(date +%s) - T0 )) s; load avg $(loadavg)"

echo
echo "=== Summary (N=$N, batch_blocks=$BATCH, OLTP clients=$CLIENTS) ==="
psql_app -At -v PAUSE="$PAUSE" <<'SQL'
WITH r AS (SELECT label, rows / seconds AS rps, oltp_alone_tps, oltp_during_tps FROM bench.result)
SELECT format('(a) reencrypt           alone: %8s rows/s   with OLTP: %8s rows/s',
              round((SELECT rps FROM r WHERE label = 'a')), round((SELECT rps FROM r WHERE label = 'a_oltp')))
UNION ALL
SELECT format('(b) batched crypto UPD  alone: %8s rows/s   with OLTP: %8s rows/s',
              round((SELECT rps FROM r WHERE label = 'b')), round((SELECT rps FROM r WHERE label = 'b_oltp')))
UNION ALL
SELECT format('(c) batched plain UPD   alone: %8s rows/s',
              round((SELECT rps FROM r WHERE label = 'c')))
UNION ALL
SELECT format('ratio (a)/(b)  alone: %s   with OLTP: %s   (goal with OLTP >= 0.50)',
              round(((SELECT rps FROM r WHERE label = 'a') / (SELECT rps FROM r WHERE label = 'b'))::numeric, 2),
              round(((SELECT rps FROM r WHERE label = 'a_oltp') / (SELECT rps FROM r WHERE label = 'b_oltp'))::numeric, 2))
UNION ALL
SELECT format('ratio (a)/(c)  alone: %s',
              round(((SELECT rps FROM r WHERE label = 'a') / (SELECT rps FROM r WHERE label = 'c'))::numeric, 2))
UNION ALL
SELECT format('OLTP tx/s: alone %s, during (a) %s (%s%%); alone %s, during (b) %s (%s%%)   (goal: drop <= 20%%)',
              round(a.oltp_alone_tps), round(a.oltp_during_tps),
              round((100 * (a.oltp_during_tps / a.oltp_alone_tps - 1))::numeric, 1),
              round(b.oltp_alone_tps), round(b.oltp_during_tps),
              round((100 * (b.oltp_during_tps / b.oltp_alone_tps - 1))::numeric, 1))
  FROM r a, r b WHERE a.label = 'a_oltp' AND b.label = 'b_oltp'
UNION ALL
SELECT format('throttled (pause_ms=%s) with OLTP: %s rows/s = %s of (b) with OLTP; OLTP tx/s alone %s, during %s (%s%%)',
              :'PAUSE', round(t.rows / t.seconds), round(((t.rows / t.seconds) / (b.rows / b.seconds))::numeric, 2),
              round(t.oltp_alone_tps), round(t.oltp_during_tps),
              round((100 * (t.oltp_during_tps / t.oltp_alone_tps - 1))::numeric, 1))
  FROM bench.result t, bench.result b WHERE t.label = 't_oltp' AND b.label = 'b_oltp'
UNION ALL
SELECT format('background worker with OLTP: %s rows/s = %s of (b) with OLTP; OLTP tx/s alone %s, during %s (%s%%)',
              round(w.rows / w.seconds),
              round(((w.rows / w.seconds) / (b.rows / b.seconds))::numeric, 2),
              round(w.oltp_alone_tps), round(w.oltp_during_tps),
              round((100 * (w.oltp_during_tps / w.oltp_alone_tps - 1))::numeric, 1))
  FROM bench.result w, bench.result b WHERE w.label = 'w_oltp' AND b.label = 'b_oltp'
UNION ALL
SELECT format('sanity checks: %s of %s runs passed', count(*) FILTER (WHERE ok), count(*)) FROM bench.result;
SQL
BAD=$(psql_app -At -c "SELECT count(*) FROM bench.result WHERE ok IS NOT TRUE")
echo "total time $(( $(date +%s) - T_START )) s"
(( BAD == 0 )) || { echo "reencrypt.sh: $BAD run(s) failed their sanity checks" >&2; exit 1; }
