#!/usr/bin/env bash
# pg_envelope protected-columns benchmark (issue 12 item 7): one command, one throwaway cluster.
#
#   bench/protect.sh             # as root (the cluster then runs as "postgres") or as any user
#
# Prints, side by side from one run (repetitions interleaved, medians):
#   1. INSERT of the same rows into a protected column vs a plain text column:
#      INSERT ... SELECT of BENCH_N rows (timed server-side) and single-row INSERTs
#      (pgbench, 1 client); goal: <= +2 us/row. pgcrypto encrypt() and pgp_sym_encrypt()
#      INSERTs as reference lines.
#   2. SELECT by primary key returning the protected column, as a role holding decrypt on
#      the key, vs the plain table (pgbench); goal: <= 1.2x.
#   3. equality search on the protected column through its blind index vs a plain
#      indexed text lookup (pgbench); goal: <= 1.5x.
#   4. online migration: protect_column() + CALL envelope.seal_rows() on BENCH_MIGRATE_N
#      plaintext rows, rows/s without and with concurrent writers (a pgbench writer
#      load runs during seal_rows: its tx/s alone and during the sealing are printed).
#
# Environment knobs (defaults in brackets):
#   BENCH_N=1000000          rows of the INSERT ... SELECT and of the read tables
#   BENCH_RUNS=5             timed rounds (after one untimed warm-up round); in every
#                            round each measurement runs once, the order alternating
#   BENCH_SECONDS=5          pgbench -T of every timed pgbench run (warm-up: min(2, this))
#   BENCH_MIGRATE_N=1000000  plaintext rows sealed by each migration run
#   BENCH_MIGRATE_RUNS=1     migration runs per variant (without / with writers, alternating)
#   BENCH_PGP_N=10000        rows of the pgp_sym_encrypt reference INSERT (~500x slower)
#   BENCH_WRITERS=1          pgbench clients of the writer load during seal_rows
#   BENCH_WRITER_RATE=       pgbench -R (tx/s) of the writer load; empty: as fast as it can
#   BENCH_SEAL_BATCH=8       seal_rows batch_blocks
#   BENCH_CONTEXT=id         protect_column context_column ('' = bound to table+column only)
#   BENCH_PROTOCOL=prepared  pgbench -M (simple | extended | prepared)
#   BENCH_KEEP=0             1: keep the temporary directory (cluster stopped)
#   PG_BIN=/usr/lib/postgresql/15/bin
#
# Needs: PostgreSQL 15 server binaries and pgbench, pg_envelope installed (make install),
# pgcrypto (ships with Debian's postgresql-15). No network: Unix socket in a private
# directory. Exit status 0 when the run completed and every sanity check passed (whether
# or not the goals are met), non-zero otherwise.
#
# Method. Server settings as bench/run.sh (bench/lib.sh: shared_buffers 1GB, no parallel
# workers, jit off, fsync/synchronous_commit off, autovacuum off; C locale, so the plain
# text btree compares with memcmp). All application work runs as the login role
# bench_app, which owns the tables and holds encrypt and decrypt on the key 'bench'
# (envelope.grant_key): the superuser would read only the "penv1:" ciphertext form.
# The INSERT and read tables are protected while empty (the trigger seals every INSERT), with
# context_column = BENCH_CONTEXT; its UNIQUE constraint on v becomes a blind index.
# Values: 74-byte fake PII strings (bench.val(id), as in bench/bench.sql).
#   INSERT ... SELECT: a PL/pgSQL procedure runs each round's statements one after the
#     other (order reversed every other round), TRUNCATE before each, timed with
#     clock_timestamp() around EXECUTE, plus the backend's on-CPU and run-queue time
#     from /proc/self/schedstat.
#   pgbench: -n -c 1 -j 1 -M BENCH_PROTOCOL -T BENCH_SECONDS, as bench_app; us/txn =
#     10^6 / tps (without connection time); each pair (plain, protected) runs back to
#     back, the order alternating from round to round. The search scripts compute the
#     searched value server-side (WHERE v = bench.val(:id), the same few us in both).
#   "paired" figures are the median over rounds of (protected - plain) or
#     (protected / plain) of the same round: slow stretches of a shared machine then
#     mostly cancel out. Goals are judged on the medians and on the paired figures.
#   Migration: a fresh table (id bigint identity pk, n int, v text, btree index on v)
#     of BENCH_MIGRATE_N rows, VACUUM FREEZE, CHECKPOINT; protect_column() (timed; the
#     index is set aside), then CALL envelope.seal_rows() (timed client-side around the
#     CALL, plus the rate envelope.protected_columns reports), then the set-aside index
#     is rebuilt with CREATE INDEX CONCURRENTLY (timed). With writers, the pgbench
#     writer load (per transaction: UPDATE of another column, UPDATE of v, INSERT of a
#     new row, each statement autocommitted) starts after protect_column(); its tx/s is
#     counted from the identity sequence for BENCH_SECONDS alone, then during seal_rows.
#   Sanity checks: row counts of every run, plaintext equal to the source for every row
#     as bench_app, ciphertext for the superuser, every value sealed, the searches find
#     the right rows, the generic plans use the indexes, pgbench had no failed
#     transactions, the migrated table lost nothing and holds no plaintext.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
N=${BENCH_N:-1000000}
RUNS=${BENCH_RUNS:-5}
DUR=${BENCH_SECONDS:-5}
MIG_N=${BENCH_MIGRATE_N:-1000000}
MIG_RUNS=${BENCH_MIGRATE_RUNS:-1}
PGP_N=${BENCH_PGP_N:-10000}
WRITERS=${BENCH_WRITERS:-1}
WRITER_RATE=${BENCH_WRITER_RATE:-}
SEAL_BATCH=${BENCH_SEAL_BATCH:-8}
CTX=${BENCH_CONTEXT-id}
PROTOCOL=${BENCH_PROTOCOL:-prepared}
KEEP=${BENCH_KEEP:-0}
PORT=54329   # the socket lives in a private directory, so any port number is free there
APP=bench_app

die() { echo "protect.sh: $*" >&2; exit 2; }
for v in N RUNS DUR MIG_N MIG_RUNS PGP_N WRITERS SEAL_BATCH; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer"
done
(( N <= 2000000000 && MIG_N <= 2000000000 )) || die "BENCH_N and BENCH_MIGRATE_N must fit an integer"
(( PGP_N > N )) && PGP_N=$N
[[ -z $WRITER_RATE || $WRITER_RATE =~ ^[1-9][0-9]*$ ]] || die "BENCH_WRITER_RATE must be empty or a positive integer"
[[ -z $CTX || $CTX == id ]] || die "BENCH_CONTEXT must be 'id' or empty"
[[ $PROTOCOL =~ ^(simple|extended|prepared)$ ]] || die "BENCH_PROTOCOL must be simple, extended or prepared"
[[ -x $PG_BIN/initdb && -x $PG_BIN/pg_ctl && -x $PG_BIN/psql && -x $PG_BIN/pgbench ]] ||
  die "PostgreSQL binaries (initdb, pg_ctl, psql, pgbench) not found in $PG_BIN"
PKGLIBDIR=$("$PG_BIN/pg_config" --pkglibdir 2>/dev/null || echo /usr/lib/postgresql/15/lib)
SHAREDIR=$("$PG_BIN/pg_config" --sharedir 2>/dev/null || echo /usr/share/postgresql/15)
[[ -e $PKGLIBDIR/pg_envelope.so ]] || die "$PKGLIBDIR/pg_envelope.so is not installed (make && make install)"
[[ -e $SHAREDIR/extension/pgcrypto.control ]] || die "pgcrypto is not installed (Debian: postgresql-15)"

# As root, everything that touches the cluster runs as the "postgres" OS user.
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
WRITER_PIDFILE=""
stop_writers() {  # stops the background pgbench writer load, if it runs (by its own pid)
  local pid
  [[ -n $WRITER_PIDFILE && -s $WRITER_PIDFILE ]] || return 0
  pid=$(cat "$WRITER_PIDFILE")
  if kill -0 "$pid" 2>/dev/null; then
    kill -INT "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$WRITER_PIDFILE"
  WRITER_PIDFILE=""
  return 0
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  stop_writers
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
  (( rc != 0 )) && echo "protect.sh: FAILED (exit $rc); cluster stopped$([[ $KEEP == 1 ]] || echo " and temporary files removed")" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

T_START=$(date +%s)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/pg_envelope_protect_bench.XXXXXX")
chmod 700 "$TMP"
[[ $RUN_USER != "$(id -un)" ]] && chown "$RUN_USER": "$TMP"
cd "$TMP"   # the server user must be able to read its working directory
PGDATA=$TMP/data
SOCK=$TMP/sock
as_pg mkdir -m 700 "$SOCK" "$TMP/pgb"
as_pg sh -c "umask 077; od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > '$TMP/master.key'"

echo "pg_envelope protected-columns benchmark  (temporary cluster in $TMP, run as OS user '$RUN_USER')"
echo "  initdb ..."
as_pg "$PG_BIN/initdb" -D "$PGDATA" -U postgres --auth=trust -E UTF8 --no-locale >"$TMP/initdb.log" 2>&1 ||
  { cat "$TMP/initdb.log" >&2; exit 1; }
{
  echo
  echo "# ---- pg_envelope protect bench settings (throwaway cluster) ----"
  echo "port = $PORT"
  bench_server_settings "$SOCK" "$TMP/master.key"
} >>"$PGDATA/postgresql.conf"

echo "  starting server ..."
SO_SUM=$(md5sum "$PKGLIBDIR/pg_envelope.so" | cut -d' ' -f1)
as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$TMP/server.log" -w -t 60 start >/dev/null || {
  echo "server did not start; its log:" >&2; tail -20 "$TMP/server.log" >&2; exit 1; }

psql_base=("$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PORT")
as_pg "${psql_base[@]}" -U postgres -d postgres -c "CREATE DATABASE bench" >/dev/null
psql_su() { as_pg "${psql_base[@]}" -U postgres -d bench "$@"; }
psql_app() { as_pg "${psql_base[@]}" -U "$APP" -d bench "$@"; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# ---------------------------------------------------------------- environment
CPU=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || true)
GIT_REV=$(git -C "$BENCH_DIR/.." rev-parse --short HEAD 2>/dev/null || echo unknown)
GIT_DIRTY=$(git -C "$BENCH_DIR/.." status --porcelain -- src include extension Makefile 2>/dev/null | wc -l || echo 0)
echo
echo "=== Environment ==="
echo "PostgreSQL : $(psql_su -Atc 'SELECT version()')"
echo "CPU        : ${CPU:-unknown} ($(nproc) online CPUs)"
echo "Kernel     : $(uname -sr)"
echo "OpenSSL    : $(openssl version 2>/dev/null || echo unknown)"
echo "pg_envelope: $PKGLIBDIR/pg_envelope.so md5 $SO_SUM (source tree HEAD $GIT_REV$( (( GIT_DIRTY )) && echo " + $GIT_DIRTY uncommitted source files"))"
echo "Load avg   : $(loadavg) at start (other work on this machine skews wall-clock figures)"
echo "Workload   : N=$N rows of 74 bytes, $RUNS timed rounds + 1 warm-up, pgbench -T $DUR -c 1 -M $PROTOCOL;"
echo "             migration of $MIG_N rows x $MIG_RUNS per variant, seal_rows batch_blocks=$SEAL_BATCH,"
echo "             writers: $WRITERS pgbench client(s)$([[ -n $WRITER_RATE ]] && echo ", -R $WRITER_RATE tx/s" || echo ", unthrottled");"
echo "             protect_column(..., context_column => $([[ -n $CTX ]] && echo "'$CTX'" || echo NULL)), blind index 16 bytes"
echo "NOTE       : fsync=off, full_page_writes=off, synchronous_commit=off, autovacuum=off -- a throwaway"
echo "             benchmark cluster; never use these settings for data you want to keep."

# ---------------------------------------------------------------- setup
echo
echo "=== Setup ==="
T_PART=$(date +%s)
psql_su -v APP="$APP" <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION pg_envelope;
CREATE EXTENSION pgcrypto;
CREATE ROLE :"APP" LOGIN;
-- /proc/self/schedstat (the backend's own CPU time) is read with pg_read_file().
GRANT pg_read_server_files TO :"APP";
GRANT EXECUTE ON FUNCTION pg_read_file(text) TO :"APP";
CREATE SCHEMA bench AUTHORIZATION :"APP";
SELECT envelope.create_key('bench') \g /dev/null
SELECT envelope.grant_key('bench', :'APP', 'encrypt') \g /dev/null
SELECT envelope.grant_key('bench', :'APP', 'decrypt') \g /dev/null
GRANT EXECUTE ON FUNCTION envelope.protect_column(regclass, name, text, name, name, boolean, integer, text) TO :"APP";
GRANT EXECUTE ON PROCEDURE envelope.seal_rows(regclass, name, integer, integer, boolean) TO :"APP";
GRANT EXECUTE ON FUNCTION envelope.encrypt_field(text, text, text) TO :"APP";
SQL

psql_app -v N="$N" -v PGP_N="$PGP_N" -v CTX="$CTX" <<'SQL'
SET client_min_messages = warning;
-- The 74-byte fake-PII value of row g (as bench/bench.sql generates them).
CREATE FUNCTION bench.val(g integer) RETURNS text LANGUAGE sql STABLE PARALLEL SAFE AS
$$ SELECT left(format('%s|%s.%s@example.com|+1-555-%s', lpad(g::text, 7, '0'), md5(g::text),
                      md5((g * 7)::text), lpad((g % 10000)::text, 4, '0')), 74) $$;

CREATE TABLE bench.result (
  seq     serial PRIMARY KEY,
  section text NOT NULL,
  label   text NOT NULL,
  run     integer NOT NULL,           -- 0 = warm-up (not used in the figures)
  nrows   bigint NOT NULL,            -- rows inserted / pgbench transactions
  us      double precision NOT NULL,  -- wall us per row / per transaction
  ms      double precision,           -- INSERT..SELECT: wall ms of the statement
  cpu_ms  double precision,           -- backend on-CPU ms   (/proc/self/schedstat field 1)
  wait_ms double precision,           -- backend run-queue ms (/proc/self/schedstat field 2)
  tps     double precision,           -- pgbench
  answer  text                        -- row count / pgbench failed transactions (sanity)
);
CREATE TABLE bench.item (ord numeric PRIMARY KEY, section text, label text UNIQUE, what text, base text);
CREATE TABLE bench.goal (ord integer PRIMARY KEY, goal text, label text, kind text, lim numeric);
CREATE TABLE bench.checks (seq serial PRIMARY KEY, name text NOT NULL, ok boolean, detail text);
CREATE TABLE bench.mig_result (
  run integer, variant text, rows_start bigint, protect_ms float8, seal_ms float8,
  rows_sealed bigint, rows_total bigint, view_rate numeric, writes_alone bigint, alone_s float8,
  writes_during bigint, rebuild_ms float8, state text, unsealed bigint, lost bigint, wrong bigint,
  writer_alive boolean, writer_errors integer, PRIMARY KEY (run, variant));

CREATE FUNCTION bench.schedstat(OUT oncpu_ns bigint, OUT wait_ns bigint) LANGUAGE plpgsql AS $$
DECLARE
  f text[];
BEGIN
  f := regexp_split_to_array(btrim(pg_read_file('/proc/self/schedstat')), '\s+');
  oncpu_ns := f[1]::bigint;
  wait_ns := f[2]::bigint;
EXCEPTION WHEN OTHERS THEN
  oncpu_ns := NULL;
  wait_ns := NULL;
END
$$;

-- Rounds 0 (warm-up) .. p_runs; in each round every statement runs once, after its
-- setup (TRUNCATE) in a committed transaction of its own, the order reversed every
-- other round. Each timed statement is committed on its own.
CREATE PROCEDURE bench.interleave(p_section text, p_labels text[], p_sqls text[], p_setups text[],
                                  p_rows bigint[], p_runs integer)
LANGUAGE plpgsql AS $$
DECLARE
  n integer := array_length(p_labels, 1);
  j integer;
  t0 timestamptz;
  t1 timestamptz;
  s0 record;
  s1 record;
  cnt bigint;
  ms double precision;
BEGIN
  FOR i IN 0..p_runs LOOP
    FOR k IN 1..n LOOP
      j := CASE WHEN i % 2 = 0 THEN k ELSE n + 1 - k END;
      EXECUTE p_setups[j];
      COMMIT;
      s0 := bench.schedstat();
      t0 := clock_timestamp();
      EXECUTE p_sqls[j];
      GET DIAGNOSTICS cnt = ROW_COUNT;
      t1 := clock_timestamp();
      s1 := bench.schedstat();
      COMMIT;
      ms := extract(epoch FROM t1 - t0) * 1000.0;
      INSERT INTO bench.result (section, label, run, nrows, us, ms, cpu_ms, wait_ms, answer)
        VALUES (p_section, p_labels[j], i, p_rows[j], ms * 1000.0 / p_rows[j], ms,
                (s1.oncpu_ns - s0.oncpu_ns) / 1e6, (s1.wait_ns - s0.wait_ns) / 1e6, cnt::text);
      COMMIT;
    END LOOP;
  END LOOP;
END
$$;

-- Source rows.
CREATE TABLE bench.src (id integer PRIMARY KEY, v text NOT NULL);
INSERT INTO bench.src SELECT g, bench.val(g) FROM generate_series(1, :N) g;
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM bench.src WHERE octet_length(v) <> 74) THEN
    RAISE EXCEPTION 'generated values are not all 74 bytes';
  END IF;
END $$;
VACUUM (FREEZE, ANALYZE) bench.src;

-- INSERT targets. The protected ones are protected while empty: the application's
-- unchanged INSERT then goes through the column's trigger.
CREATE TABLE bench.ins_plain (id integer PRIMARY KEY, v text NOT NULL);
CREATE TABLE bench.ins_prot (id integer PRIMARY KEY, v text NOT NULL);
SELECT envelope.protect_column('bench.ins_prot', 'v', 'bench', context_column => NULLIF(:'CTX', '')) \g /dev/null
CREATE TABLE bench.ins_plain_ix (id integer PRIMARY KEY, v text NOT NULL UNIQUE);
CREATE TABLE bench.ins_prot_ix (id integer PRIMARY KEY, v text NOT NULL UNIQUE);
SELECT envelope.protect_column('bench.ins_prot_ix', 'v', 'bench', context_column => NULLIF(:'CTX', '')) \g /dev/null
CREATE TABLE bench.ins_enc (id integer PRIMARY KEY, v envelope.encrypted_text NOT NULL);
CREATE TABLE bench.ins_pgc (id integer PRIMARY KEY, v bytea NOT NULL);
CREATE TABLE bench.ins_pgp (id integer PRIMARY KEY, v bytea NOT NULL);
-- Single-row INSERT targets (pgbench).
CREATE TABLE bench.one_plain (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text NOT NULL);
CREATE TABLE bench.one_prot (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text NOT NULL);
SELECT envelope.protect_column('bench.one_prot', 'v', 'bench', context_column => NULLIF(:'CTX', '')) \g /dev/null
-- Read tables: lookup by primary key and equality search on v (UNIQUE: plain btree
-- vs blind index).
CREATE TABLE bench.rd_plain (id integer PRIMARY KEY, v text NOT NULL UNIQUE);
CREATE TABLE bench.rd_prot (id integer PRIMARY KEY, v text NOT NULL UNIQUE);
SELECT envelope.protect_column('bench.rd_prot', 'v', 'bench', context_column => NULLIF(:'CTX', '')) \g /dev/null
INSERT INTO bench.rd_plain SELECT id, v FROM bench.src;
INSERT INTO bench.rd_prot SELECT id, v FROM bench.src;
VACUUM (FREEZE, ANALYZE) bench.rd_plain;
VACUUM (FREEZE, ANALYZE) bench.rd_prot;

INSERT INTO bench.item VALUES
 ( 1, 'insert', 'ins_plain',    'plain INSERT..SELECT (id int pk, v text)', NULL),
 ( 2, 'insert', 'ins_prot',     'protected INSERT..SELECT (same SQL; trigger seals v)', 'ins_plain'),
 ( 3, 'insert', 'ins_plain_ix', 'plain INSERT..SELECT, UNIQUE btree on v', NULL),
 ( 4, 'insert', 'ins_prot_ix',  'protected INSERT..SELECT, UNIQUE on v = blind index', 'ins_plain_ix'),
 ( 5, 'insert', 'ins_enc',      '(info) encrypt_field() into encrypted_text, no trigger', 'ins_plain'),
 ( 6, 'insert', 'ins_pgc',      '(reference) pgcrypto encrypt(aes) into bytea', 'ins_plain'),
 ( 7, 'insert', 'ins_pgp',      format('(reference) pgcrypto pgp_sym_encrypt(aes256), %s rows', :PGP_N), 'ins_plain'),
 (11, 'pgbench', 'ins1_plain',  'single-row INSERT, plain', NULL),
 (12, 'pgbench', 'ins1_prot',   'single-row INSERT, protected', 'ins1_plain'),
 (21, 'pgbench', 'pk_plain',    'SELECT v WHERE id = :id, plain', NULL),
 (22, 'pgbench', 'pk_prot',     'SELECT v WHERE id = :id, protected (decrypts)', 'pk_plain'),
 (31, 'pgbench', 'srow_plain',  'SELECT id, v WHERE v = val(:id), plain btree', NULL),
 (32, 'pgbench', 'srow_prot',   'same, protected: blind index + decrypt', 'srow_plain'),
 (41, 'pgbench', 'sid_plain',   'SELECT id WHERE v = val(:id), plain btree', NULL),
 (42, 'pgbench', 'sid_prot',    'same, protected: blind index only', 'sid_plain');
INSERT INTO bench.goal VALUES
 (1, 'protected INSERT..SELECT vs plain: <= +2 us/row', 'ins_prot', 'diff', 2),
 (2, 'same, UNIQUE blind index vs UNIQUE btree: <= +2 us/row', 'ins_prot_ix', 'diff', 2),
 (3, 'single-row INSERT (pgbench) vs plain: <= +2 us/row', 'ins1_prot', 'diff', 2),
 (4, 'SELECT by pk returning v vs plain: <= 1.2x', 'pk_prot', 'ratio', 1.2),
 (5, 'equality search on v (id, v) vs plain btree: <= 1.5x', 'srow_prot', 'ratio', 1.5),
 (6, 'equality search on v (id only) vs plain btree: <= 1.5x', 'sid_prot', 'ratio', 1.5);
SQL
psql_su -c CHECKPOINT
echo "  data and tables ready in $(( $(date +%s) - T_PART )) s; load avg $(loadavg)"

check() {  # name, SQL returning one boolean (run as APP unless $3 = su), optional detail SQL
  local ok
  if [[ ${3:-} == su ]]; then ok=$(psql_su -Atc "$2"); else ok=$(psql_app -Atc "$2"); fi
  psql_app -v name="$1" -v ok="${ok:-f}" <<<"INSERT INTO bench.checks (name, ok) VALUES (:'name', :'ok'::boolean)"
}

# ---------------------------------------------------------------- 1a. INSERT ... SELECT
echo
echo "=== 1. INSERT ... SELECT of $N rows: $RUNS timed rounds + 1 warm-up, 7 statements per round ==="
T_PART=$(date +%s)
psql_app -v N="$N" -v PGP_N="$PGP_N" -v RUNS="$RUNS" <<'SQL'
SET client_min_messages = warning;
CALL bench.interleave('insert',
  ARRAY['ins_plain', 'ins_prot', 'ins_plain_ix', 'ins_prot_ix', 'ins_enc', 'ins_pgc', 'ins_pgp'],
  ARRAY[
    $q$INSERT INTO bench.ins_plain SELECT id, v FROM bench.src$q$,
    $q$INSERT INTO bench.ins_prot SELECT id, v FROM bench.src$q$,
    $q$INSERT INTO bench.ins_plain_ix SELECT id, v FROM bench.src$q$,
    $q$INSERT INTO bench.ins_prot_ix SELECT id, v FROM bench.src$q$,
    $q$INSERT INTO bench.ins_enc SELECT id, envelope.encrypt_field(v, 'bench') FROM bench.src$q$,
    $q$INSERT INTO bench.ins_pgc SELECT id, encrypt(convert_to(v, 'UTF8'),
        '\x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f'::bytea, 'aes') FROM bench.src$q$,
    format($q$INSERT INTO bench.ins_pgp SELECT id, pgp_sym_encrypt(v, 'bench-password', 'cipher-algo=aes256')
                FROM bench.src WHERE id <= %s$q$, :PGP_N)],
  ARRAY['TRUNCATE bench.ins_plain', 'TRUNCATE bench.ins_prot', 'TRUNCATE bench.ins_plain_ix',
        'TRUNCATE bench.ins_prot_ix', 'TRUNCATE bench.ins_enc', 'TRUNCATE bench.ins_pgc', 'TRUNCATE bench.ins_pgp'],
  ARRAY[:N, :N, :N, :N, :N, :N, :PGP_N]::bigint[], :RUNS);
SQL
echo "  done in $(( $(date +%s) - T_PART )) s; load avg $(loadavg)"
check "INSERT..SELECT: every run inserted all its rows" \
  "SELECT bool_and(answer::bigint = nrows) FROM bench.result WHERE section = 'insert'"
for t in ins_prot ins_prot_ix; do
  check "$t: $N rows, every value sealed, bench_app reads the source plaintext" \
    "SELECT count(*) = $N FROM bench.$t p JOIN bench.src s USING (id) WHERE envelope.is_sealed(p.v) AND p.v::text = s.v"
done
check "ins_prot: the superuser (not granted) reads the penv1: form" \
  "SELECT bool_and(v::text LIKE 'penv1:%') FROM (SELECT v FROM bench.ins_prot LIMIT 1000) s" su
psql_app -c "TRUNCATE bench.ins_plain, bench.ins_prot, bench.ins_plain_ix, bench.ins_prot_ix, bench.ins_enc, bench.ins_pgc, bench.ins_pgp"
psql_su -c CHECKPOINT

# ---------------------------------------------------------------- 1b, 2, 3. pgbench
# Read-path sanity before timing: plaintext for the granted role, ciphertext for the
# superuser, the searches find the right row, the generic plans use the indexes.
check "rd_prot: bench_app reads the plaintext of all $N rows" \
  "SELECT count(*) = $N FROM bench.rd_prot p JOIN bench.rd_plain q USING (id) WHERE p.v::text = q.v AND envelope.is_sealed(p.v)"
check "rd_prot: the superuser (not granted) reads the penv1: form" \
  "SELECT bool_and(v::text LIKE 'penv1:%') FROM (SELECT v FROM bench.rd_prot LIMIT 1000) s" su
STEP=$(( N / 1000 )); (( STEP < 1 )) && STEP=1
for t in rd_plain rd_prot; do
  check "$t: WHERE v = val(g) finds row g (every ${STEP}th id)" \
    "SELECT bool_and((SELECT id FROM bench.$t WHERE v = bench.val(g)) IS NOT DISTINCT FROM g) FROM generate_series(1, $N, $STEP) g"
done
plan_of() {  # $1 = prepared statement definition (takes one int), prints the generic plan on one line
  psql_app -At -c "SET plan_cache_mode = force_generic_plan" -c "PREPARE q(int) AS $1" \
    -c "EXPLAIN (COSTS OFF) EXECUTE q(42)" | sed 's/^ *//' | paste -sd'\t' | sed 's/\t/ :: /g'
}
echo
echo "--- generic plans (pgbench -M $PROTOCOL) ---"
P_PK_PLAIN=$(plan_of "SELECT v FROM bench.rd_plain WHERE id = \$1")
P_PK_PROT=$(plan_of "SELECT v FROM bench.rd_prot WHERE id = \$1")
P_S_PLAIN=$(plan_of "SELECT id, v FROM bench.rd_plain WHERE v = bench.val(\$1)")
P_S_PROT=$(plan_of "SELECT id, v FROM bench.rd_prot WHERE v = bench.val(\$1)")
printf '  %-10s %s\n' "pk plain:" "$P_PK_PLAIN" "pk prot:" "$P_PK_PROT" "search pl:" "$P_S_PLAIN" "search pr:" "$P_S_PROT"
ok=f; [[ $P_PK_PLAIN == *"Index Scan using rd_plain_pkey"* && $P_PK_PROT == *"Index Scan using rd_prot_pkey"* ]] && ok=t
psql_app -v ok=$ok <<<"INSERT INTO bench.checks (name, ok) VALUES ('pk lookups use the primary key (generic plan)', :'ok')"
ok=f; [[ $P_S_PLAIN == *"Index Scan using rd_plain_v_key"* && $P_S_PROT == *"Index Scan using rd_prot_v_key"* ]] && ok=t
psql_app -v ok=$ok <<<"INSERT INTO bench.checks (name, ok) VALUES ('searches on v use the UNIQUE index (generic plan; blind index on rd_prot)', :'ok')"

# pgbench scripts, readable by the user pgbench runs as.
write_script() {  # name, body
  printf '%s\n' "$2" | as_pg tee "$TMP/pgb/$1.sql" >/dev/null
}
write_script ins1_plain $'\\set id random(1, 300000000)\nINSERT INTO bench.one_plain (v) VALUES (bench.val(:id));'
write_script ins1_prot  $'\\set id random(1, 300000000)\nINSERT INTO bench.one_prot (v) VALUES (bench.val(:id));'
write_script pk_plain   $"\\set id random(1, $N)"$'\nSELECT v FROM bench.rd_plain WHERE id = :id;'
write_script pk_prot    $"\\set id random(1, $N)"$'\nSELECT v FROM bench.rd_prot WHERE id = :id;'
write_script srow_plain $"\\set id random(1, $N)"$'\nSELECT id, v FROM bench.rd_plain WHERE v = bench.val(:id);'
write_script srow_prot  $"\\set id random(1, $N)"$'\nSELECT id, v FROM bench.rd_prot WHERE v = bench.val(:id);'
write_script sid_plain  $"\\set id random(1, $N)"$'\nSELECT id FROM bench.rd_plain WHERE v = bench.val(:id);'
write_script sid_prot   $"\\set id random(1, $N)"$'\nSELECT id FROM bench.rd_prot WHERE v = bench.val(:id);'

PGBENCH=(as_pg "$PG_BIN/pgbench" -n -h "$SOCK" -p "$PORT" -U "$APP" -M "$PROTOCOL")
pgb_run() {  # label, round, seconds: one pgbench run of script <label>, recorded in bench.result
  local label=$1 round=$2 secs=$3 out rc=0 tps txns failed
  case $label in
    ins1_plain) psql_app -c "TRUNCATE bench.one_plain" ;;
    ins1_prot) psql_app -c "TRUNCATE bench.one_prot" ;;
  esac
  out=$("${PGBENCH[@]}" -c 1 -j 1 -T "$secs" -f "$TMP/pgb/$label.sql" bench 2>&1) || rc=$?
  tps=$(awk '$1 == "tps" && $2 == "=" {print $3; exit}' <<<"$out")
  txns=$(awk -F': ' '/^number of transactions actually processed/ {split($2, a, "/"); print a[1]; exit}' <<<"$out")
  failed=$(awk '/^number of failed transactions/ {print $5; exit}' <<<"$out")
  if (( rc != 0 )) || [[ -z $tps || -z $txns ]] || [[ ${failed:-0} != 0 ]]; then
    echo "pgbench $label (round $round) failed (exit $rc):" >&2
    sed 's/^/  /' <<<"$out" >&2
    exit 1
  fi
  psql_app -c "INSERT INTO bench.result (section, label, run, nrows, us, tps, answer)
               VALUES ('pgbench', '$label', $round, $txns, 1e6 / $tps, $tps, '${failed:-0}')"
  printf '%s=%s ' "$label" "$(printf '%.0f' "$tps")"
}
PAIRS=(ins1 pk srow sid)
echo
echo "=== 1b-3. pgbench, 1 client, -M $PROTOCOL, as $APP: $RUNS timed rounds of ${DUR} s per run + 1 warm-up round ==="
T_PART=$(date +%s)
for (( round = 0; round <= RUNS; round++ )); do
  secs=$DUR; (( round == 0 && DUR > 2 )) && secs=2
  printf '  round %d%s: ' "$round" "$( (( round == 0 )) && echo " (warm-up)")"
  for p in "${!PAIRS[@]}"; do
    if (( (round + p) % 2 == 0 )); then
      pgb_run "${PAIRS[$p]}_plain" "$round" "$secs"; pgb_run "${PAIRS[$p]}_prot" "$round" "$secs"
    else
      pgb_run "${PAIRS[$p]}_prot" "$round" "$secs"; pgb_run "${PAIRS[$p]}_plain" "$round" "$secs"
    fi
  done
  echo "tps"
done
echo "  done in $(( $(date +%s) - T_PART )) s; load avg $(loadavg)"
check "one_prot: every single-row INSERT sealed, bench_app reads its plaintext" \
  "SELECT count(*) > 0 AND bool_and(envelope.is_sealed(v) AND v::text ~ '^[0-9]+[|][0-9a-f]{32}[.]') FROM bench.one_prot"
psql_app -c "TRUNCATE bench.one_plain, bench.one_prot"
psql_su -c CHECKPOINT

# ---------------------------------------------------------------- 4. migration
write_script writer $"\\set id random(1, $MIG_N)
UPDATE bench.mig SET n = n + 1 WHERE id = :id;
\\set id2 random(1, $MIG_N)
UPDATE bench.mig SET v = bench.val(:id2) WHERE id = :id2;
INSERT INTO bench.mig (v) VALUES (bench.val(:id));"

migrate_run() {  # run, variant (alone | writers)
  local run=$1 variant=$2 protect_ms alive=f errors=0 wlog="$TMP/writer.$1.$2.log"
  local writers=false
  [[ $variant == writers ]] && writers=true
  printf '  run %d, %-7s: ' "$run" "$variant"
  psql_app -v M="$MIG_N" <<'SQL'
SET client_min_messages = warning;
DROP TABLE IF EXISTS bench.mig;
CREATE TABLE bench.mig (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, n integer NOT NULL DEFAULT 0, v text);
INSERT INTO bench.mig (id, v) SELECT g, bench.val(g) FROM generate_series(1, :M) g;
SELECT format('ALTER TABLE bench.mig ALTER COLUMN id RESTART WITH %s', :M + 1) \gexec
CREATE INDEX mig_v ON bench.mig (v);
VACUUM (FREEZE, ANALYZE) bench.mig;
SQL
  psql_su -c CHECKPOINT
  protect_ms=$(psql_app -At -v CTX="$CTX" <<'SQL'
SET client_min_messages = warning;
SELECT clock_timestamp() AS t0 \gset
SELECT envelope.protect_column('bench.mig', 'v', 'bench', context_column => NULLIF(:'CTX', '')) \g /dev/null
SELECT round((extract(epoch FROM clock_timestamp() - :'t0'::timestamptz) * 1000)::numeric, 1);
SQL
)
  printf 'protect_column %s ms; ' "$protect_ms"
  if $writers; then
    WRITER_PIDFILE=$TMP/writer.pid
    local rate=()
    [[ -n $WRITER_RATE ]] && rate=(-R "$WRITER_RATE")
    # shellcheck disable=SC2016  # $$ and $@ belong to the inner sh: its pid is pgbench's after exec
    as_pg sh -c 'echo $$ > "$1"; shift; exec "$@"' sh "$WRITER_PIDFILE" \
      "$PG_BIN/pgbench" -n -h "$SOCK" -p "$PORT" -U "$APP" -M "$PROTOCOL" -c "$WRITERS" -j "$WRITERS" \
      "${rate[@]}" -T 86400 -f "$TMP/pgb/writer.sql" bench >"$wlog" 2>&1 &
    WRITER_BG=$!
    for _ in $(seq 1 50); do [[ -s $WRITER_PIDFILE ]] && break; sleep 0.1; done
  fi
  psql_app -v run="$run" -v variant="$variant" -v writers="$writers" -v DUR="$DUR" -v M="$MIG_N" \
           -v BATCH="$SEAL_BATCH" <<'SQL'
SET client_min_messages = warning;
SELECT count(*) AS rows_start FROM bench.mig \gset
\if :writers
SELECT pg_sleep(1) \g /dev/null
SELECT last_value AS w0, clock_timestamp() AS tw0 FROM bench.mig_id_seq \gset
SELECT pg_sleep(:DUR) \g /dev/null
\endif
SELECT last_value AS w1, clock_timestamp() AS t0 FROM bench.mig_id_seq \gset
CALL envelope.seal_rows('bench.mig', 'v', :BATCH);
SELECT last_value AS w2, clock_timestamp() AS t1 FROM bench.mig_id_seq \gset
INSERT INTO bench.mig_result (run, variant, rows_start, seal_ms, writes_during)
  VALUES (:run, :'variant', :rows_start,
          extract(epoch FROM :'t1'::timestamptz - :'t0'::timestamptz) * 1000, :w2 - :w1);
\if :writers
UPDATE bench.mig_result SET writes_alone = :w1 - :w0,
       alone_s = extract(epoch FROM :'t0'::timestamptz - :'tw0'::timestamptz)
 WHERE run = :run AND variant = :'variant';
\else
UPDATE bench.mig_result SET writes_during = NULL WHERE run = :run AND variant = :'variant';
\endif
UPDATE bench.mig_result r SET rows_sealed = p.rows_sealed, rows_total = p.rows_total,
       view_rate = p.rows_per_second, state = p.state
  FROM envelope.protected_columns p WHERE p.tbl = 'bench.mig'::regclass AND r.run = :run AND r.variant = :'variant';
SQL
  if $writers; then
    [[ -s ${WRITER_PIDFILE:-/nonexistent} ]] && kill -0 "$(cat "$WRITER_PIDFILE")" 2>/dev/null && alive=t
    stop_writers
    wait "$WRITER_BG" 2>/dev/null || true
    errors=$(grep -ciE 'error|abort|fail' "$wlog" || true)
    if (( errors > 0 )); then echo; echo "  writer load reported:"; head -n 10 "$wlog" | sed 's/^/    /'; fi
  fi
  psql_app -v run="$run" -v variant="$variant" -v M="$MIG_N" -v alive="$alive" -v errors="$errors" <<'SQL'
SET client_min_messages = warning;
SELECT clock_timestamp() AS r0 \gset
SELECT regexp_replace(d, '^CREATE (UNIQUE )?INDEX ', 'CREATE \1INDEX CONCURRENTLY ')
  FROM envelope.protected_columns p, unnest(p.pending_indexes) d WHERE p.tbl = 'bench.mig'::regclass \gexec
UPDATE bench.mig_result SET
       rebuild_ms = extract(epoch FROM clock_timestamp() - :'r0'::timestamptz) * 1000,
       unsealed = (SELECT count(*) FROM bench.mig WHERE v IS NOT NULL AND NOT envelope.is_sealed(v)),
       lost = :M - (SELECT count(*) FROM bench.mig WHERE id <= :M),
       wrong = (SELECT count(*) FROM bench.mig WHERE id <= :M AND v::text IS DISTINCT FROM bench.val(id::integer)),
       writer_alive = CASE WHEN :'variant' = 'writers' THEN :'alive'::boolean END,
       writer_errors = :errors
 WHERE run = :run AND variant = :'variant';
SQL
  psql_app -c "UPDATE bench.mig_result SET protect_ms = $protect_ms WHERE run = $run AND variant = '$variant'"
  psql_app -At -c "SELECT format('seal_rows %s rows in %s s = %s rows/s%s; index rebuild %s s',
                                 rows_sealed, round((seal_ms / 1000)::numeric, 1), round(rows_sealed / (seal_ms / 1000)),
                                 CASE WHEN variant = 'writers' THEN format('; writers %s tx/s alone, %s tx/s during seal_rows',
                                   round(writes_alone / alone_s), round(writes_during / (seal_ms / 1000))) ELSE '' END,
                                 round((rebuild_ms / 1000)::numeric, 1))
                     FROM bench.mig_result WHERE run = $run AND variant = '$variant'"
  psql_su -c CHECKPOINT
}
echo
echo "=== 4. Online migration of $MIG_N plaintext rows: protect_column + CALL envelope.seal_rows(batch_blocks => $SEAL_BATCH) ==="
T_PART=$(date +%s)
for (( run = 1; run <= MIG_RUNS; run++ )); do
  if (( run % 2 == 1 )); then migrate_run "$run" alone; migrate_run "$run" writers
  else migrate_run "$run" writers; migrate_run "$run" alone; fi
done
echo "  done in $(( $(date +%s) - T_PART )) s; load avg $(loadavg)"
psql_app -c "INSERT INTO bench.checks (name, ok)
  SELECT 'migration run ' || run || ' ' || variant || ': state protected, every row sealed, no row lost or changed'
         || CASE WHEN variant = 'writers' THEN ', writers ran through it without errors' ELSE '' END,
         state = 'protected' AND unsealed = 0 AND lost = 0 AND wrong = 0
         AND (variant <> 'writers' OR (writer_alive AND writer_errors = 0 AND writes_during > 0))
    FROM bench.mig_result ORDER BY run, variant"

# ---------------------------------------------------------------- report
echo
echo "=================================== Report ==================================="
psql_app <<'SQL'
\set ON_ERROR_STOP 1
\pset footer off
\pset null '-'
\pset border 2
CREATE TEMP VIEW r AS SELECT * FROM bench.result WHERE run > 0;
CREATE TEMP VIEW s AS
SELECT label, count(*) AS runs,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY us) AS med_us, min(us) AS best_us, max(us) AS worst_us,
       -- schedstat advances in scheduler ticks: too coarse for runs under 50 ms.
       CASE WHEN min(ms) >= 50 THEN percentile_cont(0.5) WITHIN GROUP (ORDER BY cpu_ms * 1000.0 / nrows) END AS cpu_us,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY tps) AS med_tps,
       min(nrows) AS min_rows, sum(wait_ms) / nullif(sum(ms), 0) AS wait_share
  FROM r GROUP BY label;
-- Paired: protected vs its baseline within the same round.
CREATE TEMP VIEW pr AS
SELECT i.label, percentile_cont(0.5) WITHIN GROUP (ORDER BY a.us - b.us) AS p_diff,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY a.us / b.us) AS p_ratio
  FROM bench.item i JOIN r a ON a.label = i.label JOIN r b ON b.label = i.base AND b.run = a.run
 GROUP BY i.label;

\echo
\echo '=== 1. INSERT: the same rows into a protected and into a plain column (INSERT..SELECT timed server-side) ==='
SELECT i.what AS "measurement", s.min_rows AS "rows",
       to_char(s.med_us, 'FM9999990.000') AS "us/row",
       to_char(s.best_us, 'FM9999990.000') AS "best",
       coalesce(to_char(s.cpu_us, 'FM9999990.000'), '-') AS "cpu us/row",
       coalesce(to_char(s.med_us - b.med_us, 'FMS9999990.000'), '') AS "+us/row",
       coalesce(to_char(pr.p_diff, 'FMS9999990.000'), '') AS "+us/row paired",
       coalesce(to_char(s.med_us / b.med_us, 'FM999990.00') || 'x', '') AS "ratio",
       to_char(100 * (s.worst_us / s.best_us - 1), 'FM9990') || '%' AS "spread",
       coalesce(to_char(100 * s.wait_share, 'FM990.0') || '%', '-') AS "cpu-wait"
  FROM bench.item i JOIN s ON s.label = i.label LEFT JOIN s b ON b.label = i.base LEFT JOIN pr ON pr.label = i.label
 WHERE i.section = 'insert' ORDER BY i.ord;
\echo '  us/row: median of the timed runs (best: fastest run); +us/row and ratio vs the plain line above it'
\echo '  (medians), paired: median over rounds of the difference within a round; spread = slowest/fastest - 1;'
\echo '  cpu-wait: share of the runs the backend waited for a CPU (other processes competing).'
\pset format unaligned
\pset tuples_only on
SELECT CASE WHEN sum(wait_ms) / sum(ms) > 0.02
            THEN format('  WARNING: the INSERT backend waited for a CPU %s%% of its timed runs: other processes were',
                        to_char(100 * sum(wait_ms) / sum(ms), 'FM990.0'))
                 || chr(10) || '  competing, wall-clock figures are inflated and noisy (prefer the cpu and paired columns).'
            ELSE format('  The INSERT backend waited for a CPU %s%% of its timed runs.',
                        to_char(100 * coalesce(sum(wait_ms), 0) / sum(ms), 'FM990.0')) END
  FROM bench.result WHERE section = 'insert' AND run > 0;
\pset format aligned
\pset tuples_only off

\echo
\echo '=== 1b-3. pgbench, 1 client, as the granted role (us/txn = 1e6 / tps; includes the client round trip) ==='
SELECT i.what AS "measurement", to_char(s.med_tps, 'FM99999990') AS "tps",
       to_char(s.med_us, 'FM9999990.00') AS "us/txn",
       to_char(s.best_us, 'FM9999990.00') AS "best",
       coalesce(to_char(s.med_us - b.med_us, 'FMS9999990.00'), '') AS "+us/txn",
       coalesce(to_char(pr.p_diff, 'FMS9999990.00'), '') AS "+us paired",
       coalesce(to_char(s.med_us / b.med_us, 'FM999990.000') || 'x', '') AS "ratio",
       coalesce(to_char(pr.p_ratio, 'FM999990.000') || 'x', '') AS "ratio paired",
       to_char(100 * (s.worst_us / s.best_us - 1), 'FM9990') || '%' AS "spread"
  FROM bench.item i JOIN s ON s.label = i.label LEFT JOIN s b ON b.label = i.base LEFT JOIN pr ON pr.label = i.label
 WHERE i.section = 'pgbench' ORDER BY i.ord;
\echo '  The search scripts compute the searched value server-side (bench.val(:id): two md5() and a format(),'
\echo '  a few us in both lines), which makes their ratios slightly smaller than the bare lookups'' ratios.'

\echo
\echo '=== 4. Online migration: protect_column + CALL envelope.seal_rows on a populated table ==='
SELECT run AS "run", CASE variant WHEN 'alone' THEN 'no writers' ELSE 'with writers' END AS "variant",
       rows_start AS "rows", to_char(protect_ms, 'FM999990.0') AS "protect_column ms",
       rows_sealed AS "sealed by seal_rows", to_char(seal_ms / 1000, 'FM999990.0') AS "seal_rows s",
       to_char(rows_sealed / (seal_ms / 1000), 'FM99999990') AS "rows/s",
       to_char(rows_start / (seal_ms / 1000), 'FM99999990') AS "table rows/s",
       coalesce(to_char(view_rate, 'FM99999990'), '-') AS "view rows/s",
       coalesce(to_char(writes_alone / alone_s, 'FM99999990'), '-') AS "writers tx/s alone",
       coalesce(to_char(writes_during / (seal_ms / 1000), 'FM99999990'), '-') AS "writers tx/s during",
       coalesce(to_char(writes_during, 'FM99999990'), '-') AS "writer tx during",
       to_char(rebuild_ms / 1000, 'FM999990.0') AS "index rebuild s"
  FROM bench.mig_result ORDER BY run, variant;
SELECT count(DISTINCT run) > 1 AS multi FROM bench.mig_result \gset
\if :multi
SELECT CASE variant WHEN 'alone' THEN 'no writers' ELSE 'with writers' END AS "median over runs",
       to_char(percentile_cont(0.5) WITHIN GROUP (ORDER BY rows_sealed / (seal_ms / 1000)), 'FM99999990') AS "rows/s",
       coalesce(to_char(percentile_cont(0.5) WITHIN GROUP (ORDER BY writes_alone / alone_s), 'FM99999990'), '-')
         AS "writers tx/s alone",
       coalesce(to_char(percentile_cont(0.5) WITHIN GROUP (ORDER BY writes_during / (seal_ms / 1000)), 'FM99999990'), '-')
         AS "writers tx/s during seal_rows"
  FROM bench.mig_result GROUP BY variant ORDER BY variant;
\endif
\echo '  rows/s = rows seal_rows sealed / wall time of the CALL (incl. its first count and the final VALIDATE);'
\echo '  table rows/s = rows the table held / the same time (with writers, their UPDATEs of v seal rows too).'
\echo '  view rows/s = envelope.protected_columns.rows_per_second. A writer transaction = UPDATE of another'
\echo '  column + UPDATE of v + INSERT (each autocommitted), counted from the identity sequence. Writers alone:'
\echo '  the same load on the same protected, not yet sealed table just before the CALL. Index rebuild: the'
\echo '  btree index on v that protect_column set aside, re-created with CREATE INDEX CONCURRENTLY (blind index).'

\echo
\echo '=== Sanity checks ==='
SELECT name AS "check", CASE WHEN ok THEN 'ok' ELSE 'FAILED' END AS "result" FROM bench.checks ORDER BY seq;

\echo
\echo '=== Goals (issue 12 item 7) ==='
SELECT g.goal AS "goal",
       CASE g.kind WHEN 'diff' THEN to_char(s.med_us - b.med_us, 'FMS9990.00') || ' us'
                   ELSE to_char(s.med_us / b.med_us, 'FM9990.000') || 'x' END AS "medians",
       CASE WHEN (CASE g.kind WHEN 'diff' THEN s.med_us - b.med_us ELSE s.med_us / b.med_us END) <= g.lim
            THEN 'MET' ELSE 'NOT MET' END AS "status",
       CASE g.kind WHEN 'diff' THEN to_char(pr.p_diff, 'FMS9990.00') || ' us'
                   ELSE to_char(pr.p_ratio, 'FM9990.000') || 'x' END AS "paired",
       CASE WHEN (CASE g.kind WHEN 'diff' THEN pr.p_diff ELSE pr.p_ratio END) <= g.lim
            THEN 'MET' ELSE 'NOT MET' END AS "status (paired)"
  FROM bench.goal g JOIN bench.item i ON i.label = g.label JOIN s ON s.label = g.label
  JOIN s b ON b.label = i.base JOIN pr ON pr.label = g.label
 ORDER BY g.ord;
SQL

echo
FAILED_CHECKS=$(psql_app -Atc "SELECT count(*) FROM bench.checks WHERE ok IS NOT TRUE")
echo "load avg at end: $(loadavg); total wall time: $(( $(date +%s) - T_START )) s"
if (( FAILED_CHECKS > 0 )); then
  echo "protect.sh: $FAILED_CHECKS sanity check(s) FAILED: the figures above are not valid" >&2
  exit 1
fi
