#!/usr/bin/env bash
# pg_envelope large values benchmark (issue 13, item 5): one command, one throwaway cluster.
#
#   bench/large_values.sh       # as root (the cluster then runs as "postgres") or as any user
#
# For each size (BENCH_SIZES, default 1KB 64KB 1MB 16MB 64MB 256MB; 1 KB = 1024 bytes,
# 1 MB = 2^20 bytes) and one envelope.encrypted_bytea value of that size, measures:
#   time   - encrypt_field and decrypt_field of one in-memory value, and a plain copy of
#            it (p || '\x00': allocate + memcpy, the cost of touching fresh memory):
#            median of RUNS timed calls inside one PL/pgSQL function (clock_timestamp()
#            around each call; the result is not assigned, so not copied);
#   INSERT - INSERT INTO lv.enc SELECT ..., envelope.encrypt_field(p, 'lv') FROM lv.src,
#            against the plain INSERT INTO lv.plain SELECT ..., p FROM lv.src;
#   SELECT - SELECT get_byte(envelope.decrypt_field(c), size - 1) FROM lv.enc, against
#            SELECT get_byte(p, size - 1) FROM lv.plain (get_byte detoasts the whole value);
#   memory - the backend's peak RSS (VmHWM of /proc/<backend pid>/status) of every INSERT
#            and SELECT, each run in a fresh connection: the plain statement's peak, the
#            encrypted statement's peak and (encrypted - plain) / size, the extension's
#            extra memory per byte of value. Medians over the runs. Both connections first
#            encrypt and decrypt a 1-byte value (the one-time cost of a connection's first
#            use of the extension, printed separately, is then not counted as the value's).
# lv.src holds the plaintexts (a 64-byte pattern repeated; STORAGE EXTERNAL, like
# lv.plain.p, so TOAST never compresses them: the plain baseline stores as many bytes as
# the encrypted column, whose type is STORAGE external). Each timed INSERT and SELECT is
# an EXECUTE inside a procedure, timed server-side; a CHECKPOINT precedes every INSERT.
# Peak RSS includes the shared buffers the backend touched (TOAST pages read or written,
# at most shared_buffers, the same for plain and encrypted), hence BENCH_SHARED_BUFFERS.
#
# Then (BENCH_LIMIT=1) the 1 GB limit, each statement in a fresh connection, at top level:
# encrypt_field of the largest plaintext whose envelope fits in a varlena (2^30 - 43
# bytes: + 38 envelope + 4 varlena header = 2^30 - 1) and of one byte more (must be
# SQLSTATE 54000); INSERT of the largest value a one-column table row can hold and of one
# byte more (PostgreSQL's own tuple limit; the same for a plain bytea column, also probed);
# decrypt_field and the text output (env1:base64, 4/3 larger) of that stored value.
# Printed per statement: SQLSTATE, message, peak RSS, and whether the same backend answered
# afterwards (no crash). Needs about 4.5 GB of free memory and 3 GB of disk.
#
# Sanity checks: every timed round trip compares the decrypted value with the original;
# at the end every stored value decrypts to its source (sha256 in SQL). Exit status 0 when
# the run completed and every check passed.
#
# Environment knobs (defaults in brackets):
#   BENCH_SIZES="1KB 64KB 1MB 16MB 64MB 256MB"   multiples of 64 bytes, at most 512MB
#   BENCH_LIMIT=1                 0: skip the 1 GB limit probes (they take ~2 minutes here)
#   BENCH_SHARED_BUFFERS=128MB
#   BENCH_KEEP=0                  1: keep the temporary directory (cluster stopped)
#   PG_BIN=/usr/lib/postgresql/15/bin
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
. "$BENCH_DIR/lib.sh"
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
SIZES=${BENCH_SIZES:-1KB 64KB 1MB 16MB 64MB 256MB}
LIMIT=${BENCH_LIMIT:-1}
SHARED_BUFFERS=${BENCH_SHARED_BUFFERS:-128MB}
KEEP=${BENCH_KEEP:-0}
PORT=54332

die() { echo "large_values.sh: $*" >&2; exit 2; }
[[ $LIMIT == 0 || $LIMIT == 1 ]] || die "BENCH_LIMIT must be 0 or 1"
[[ $SHARED_BUFFERS =~ ^[1-9][0-9]*(kB|MB|GB)$ ]] || die "BENCH_SHARED_BUFFERS must look like 128MB"
to_bytes() {  # 1KB -> 1024, 16MB -> 16777216
  local s=$1
  [[ $s =~ ^([1-9][0-9]*)(KB|MB)$ ]] || die "size '$s': use e.g. 64KB or 16MB"
  case ${BASH_REMATCH[2]} in
    KB) echo $(( BASH_REMATCH[1] * 1024 ));;
    MB) echo $(( BASH_REMATCH[1] * 1048576 ));;
  esac
}
SIZE_BYTES=()
for s in $SIZES; do
  b=$(to_bytes "$s")
  (( b % 64 == 0 && b <= 536870912 )) || die "size '$s' must be a multiple of 64 bytes and at most 512MB"
  SIZE_BYTES+=("$b")
done
(( ${#SIZE_BYTES[@]} > 0 )) || die "BENCH_SIZES is empty"
[[ -x $PG_BIN/initdb && -x $PG_BIN/pg_ctl && -x $PG_BIN/psql ]] ||
  die "PostgreSQL binaries (initdb, pg_ctl, psql) not found in $PG_BIN"
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
  (( rc != 0 )) && echo "large_values.sh: FAILED (exit $rc)" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

T_START=$(date +%s)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/pg_envelope_large_bench.XXXXXX")
chmod 700 "$TMP"
[[ $RUN_USER != "$(id -un)" ]] && chown "$RUN_USER": "$TMP"
cd "$TMP"
PGDATA=$TMP/data
SOCK=$TMP/sock
as_pg mkdir -m 700 "$SOCK"
as_pg sh -c "umask 077; od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > '$TMP/master.key'"

echo "pg_envelope large values benchmark  (temporary cluster in $TMP, run as OS user '$RUN_USER')"
as_pg "$PG_BIN/initdb" -D "$PGDATA" -U postgres --auth=trust -E UTF8 --no-locale >"$TMP/initdb.log" 2>&1 ||
  { cat "$TMP/initdb.log" >&2; exit 1; }
{
  echo
  echo "port = $PORT"
  bench_server_settings "$SOCK" "$TMP/master.key"
  # Later lines win: bounded shared buffers keep their share of a backend's RSS small.
  echo "shared_buffers = $SHARED_BUFFERS"
  echo "lc_messages = 'C'"
} >>"$PGDATA/postgresql.conf"
as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$TMP/server.log" -w -t 60 start >/dev/null || {
  echo "server did not start; its log:" >&2; tail -20 "$TMP/server.log" >&2; exit 1; }

psql_base=("$PG_BIN/psql" -X -q -h "$SOCK" -p "$PORT" -U postgres)
as_pg "${psql_base[@]}" -v ON_ERROR_STOP=1 -d postgres -c "CREATE DATABASE bench" >/dev/null
psql_su() { as_pg "${psql_base[@]}" -v ON_ERROR_STOP=1 -d bench "$@"; }

CPU=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || true)
GIT_REV=$(git -C "$BENCH_DIR/.." rev-parse --short HEAD 2>/dev/null || echo unknown)
GIT_DIRTY=$(git -C "$BENCH_DIR/.." status --porcelain -- src include extension Makefile 2>/dev/null | wc -l || echo 0)
echo
echo "=== Environment ==="
echo "PostgreSQL : $(psql_su -Atc 'SELECT version()')"
echo "CPU        : ${CPU:-unknown} ($(nproc) online CPUs), $(awk '/^MemTotal/ {printf "%.1f GB", $2/1048576}' /proc/meminfo) RAM, $(awk '/^MemAvailable/ {printf "%.1f GB", $2/1048576}' /proc/meminfo) available"
echo "pg_envelope: $PKGLIBDIR/pg_envelope.so md5 $(md5sum "$PKGLIBDIR/pg_envelope.so" | cut -d' ' -f1) (HEAD $GIT_REV$( (( GIT_DIRTY )) && echo " + $GIT_DIRTY uncommitted source files"))"
echo "Settings   : shared_buffers=$SHARED_BUFFERS, work_mem=64MB, fsync=off, synchronous_commit=off, no parallel workers"
echo "Sizes      : $SIZES; key 'lv' of the local KMS; values: encrypted_bytea, no context"
echo "Load avg   : $(cut -d' ' -f1-3 /proc/loadavg) at start (other work on the machine skews the times)"

# ---------------------------------------------------------------- setup
psql_su <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION pg_envelope;
SELECT envelope.create_key('lv') \g /dev/null
CREATE SCHEMA lv;
-- Plaintexts, one per size; the plain and the encrypted copies (one row per run).
CREATE TABLE lv.src (sz bigint PRIMARY KEY, p bytea NOT NULL);
ALTER TABLE lv.src ALTER COLUMN p SET STORAGE EXTERNAL;
CREATE TABLE lv.plain (sz bigint, run integer, p bytea NOT NULL, PRIMARY KEY (sz, run));
ALTER TABLE lv.plain ALTER COLUMN p SET STORAGE EXTERNAL;
CREATE TABLE lv.enc (sz bigint, run integer, c envelope.encrypted_bytea NOT NULL, PRIMARY KEY (sz, run));
CREATE TABLE lv.result (sz bigint, op text, variant text, run integer, ms double precision,
                        hwm_kb bigint, base_kb bigint, conn_kb bigint);
CREATE TABLE lv.timing (sz bigint, op text, run integer, ms double precision);
CREATE TABLE lv.limits (ord integer, label text, n bigint, sqlstate text, message text,
                        ms double precision, base_kb bigint, hwm_kb bigint, same_backend boolean);
-- One field (kB) of this backend's /proc/<pid>/status.
CREATE FUNCTION lv.status_kb(field text) RETURNS bigint LANGUAGE sql VOLATILE AS
$$ SELECT (regexp_match(pg_read_file('/proc/' || pg_backend_pid() || '/status'),
                        '(?:^|\n)' || field || ':\s+(\d+) kB'))[1]::bigint $$;
-- One timed statement of the INSERT/SELECT measurements (called in a fresh connection).
-- First, in both the plain and the encrypted case, one encrypt + decrypt of a 1-byte
-- value: the connection's one-time costs (DEK load, catalog caches) are then paid before
-- the baseline is read, and the difference between the two cases is the value's own.
CREATE PROCEDURE lv.measure(p_sz bigint, p_op text, p_variant text, p_run integer, p_stmt text)
LANGUAGE plpgsql AS $$
DECLARE
  conn bigint := lv.status_kb('VmHWM');
  base bigint;
  t0 timestamptz;
  ms double precision;
BEGIN
  PERFORM pg_column_size(envelope.decrypt_field(envelope.encrypt_field('\x00'::bytea, 'lv')));
  base := lv.status_kb('VmHWM');
  t0 := clock_timestamp();
  EXECUTE p_stmt;
  ms := 1000 * extract(epoch FROM clock_timestamp() - t0);
  INSERT INTO lv.result VALUES (p_sz, p_op, p_variant, p_run, ms, lv.status_kb('VmHWM'), base, conn);
END $$;
-- encrypt_field, decrypt_field and a plain copy of one in-memory value, `runs` times each.
-- PERFORM does not assign the result, so it is not copied; p and e are passed as they are.
CREATE FUNCTION lv.time_ops(p_sz bigint, runs integer) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  p bytea := (SELECT s.p || ''::bytea FROM lv.src s WHERE s.sz = p_sz);  -- detoasted, in memory
  e envelope.encrypted_bytea := envelope.encrypt_field(p, 'lv');
  t0 timestamptz;
BEGIN
  IF octet_length(p) IS DISTINCT FROM p_sz THEN RAISE EXCEPTION 'no source value of % bytes', p_sz; END IF;
  IF envelope.decrypt_field(e) <> p THEN RAISE EXCEPTION 'round trip of % bytes differs', p_sz; END IF;
  PERFORM pg_column_size(envelope.decrypt_field(e));            -- warm-up: DEK cache, plans
  FOR i IN 1..runs LOOP
    t0 := clock_timestamp();
    PERFORM pg_column_size(p || '\x00'::bytea);
    INSERT INTO lv.timing VALUES (p_sz, 'copy', i, 1000 * extract(epoch FROM clock_timestamp() - t0));
    t0 := clock_timestamp();
    PERFORM pg_column_size(envelope.encrypt_field(p, 'lv'));
    INSERT INTO lv.timing VALUES (p_sz, 'encrypt', i, 1000 * extract(epoch FROM clock_timestamp() - t0));
    t0 := clock_timestamp();
    PERFORM pg_column_size(envelope.decrypt_field(e));
    INSERT INTO lv.timing VALUES (p_sz, 'decrypt', i, 1000 * extract(epoch FROM clock_timestamp() - t0));
  END LOOP;
  IF envelope.decrypt_field(envelope.encrypt_field(p, 'lv')) <> p THEN
    RAISE EXCEPTION 'round trip of % bytes differs', p_sz;
  END IF;
END $$;
SQL

runs_for() {  # timed in-memory calls per size; INSERT/SELECT runs are min(5, this)
  local b=$1
  if (( b <= 65536 )); then echo 51
  elif (( b <= 1048576 )); then echo 21
  elif (( b <= 16777216 )); then echo 9
  elif (( b <= 67108864 )); then echo 5
  else echo 3
  fi
}

measure() {  # size op variant run statement: one fresh connection
  psql_su -v sz="$1" -v op="$2" -v variant="$3" -v run="$4" -v stmt="$5" <<'SQL'
CALL lv.measure(:sz, :'op', :'variant', :run, :'stmt');
SQL
}

echo
echo "=== Runs ==="
T0=$(date +%s)
for b in "${SIZE_BYTES[@]}"; do
  R=$(runs_for "$b")
  RI=$(( R < 5 ? R : 5 ))
  t=$(date +%s)
  psql_su -v sz="$b" <<'SQL'
INSERT INTO lv.src
  SELECT s, convert_to(repeat('0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ+/', (s / 64)::integer), 'UTF8')
    FROM (VALUES (:sz::bigint)) v(s);
SQL
  psql_su -v sz="$b" -v runs="$R" >/dev/null <<'SQL'
SELECT lv.time_ops(:sz, :runs);
SQL
  for (( r = 1; r <= RI; r++ )); do
    psql_su -c CHECKPOINT
    measure "$b" INSERT plain "$r" "INSERT INTO lv.plain SELECT sz, $r, p FROM lv.src WHERE sz = $b"
    psql_su -c CHECKPOINT
    measure "$b" INSERT enc "$r" "INSERT INTO lv.enc SELECT sz, $r, envelope.encrypt_field(p, 'lv') FROM lv.src WHERE sz = $b"
    measure "$b" SELECT plain "$r" "SELECT get_byte(p, ($b - 1)::integer) FROM lv.plain WHERE sz = $b AND run = $r"
    measure "$b" SELECT enc "$r" "SELECT get_byte(envelope.decrypt_field(c), ($b - 1)::integer) FROM lv.enc WHERE sz = $b AND run = $r"
  done
  echo "  $b bytes: $R timed calls, $RI INSERT/SELECT runs, $(( $(date +%s) - t )) s"
done
echo "  runs done in $(( $(date +%s) - T0 )) s; load avg $(cut -d' ' -f1-3 /proc/loadavg)"

# Every stored value decrypts to its source, every plain copy equals it.
BAD=$(psql_su -At <<'SQL'
SELECT (SELECT count(*) FROM lv.enc e JOIN lv.src s USING (sz)
         WHERE sha256(envelope.decrypt_field(e.c)) IS DISTINCT FROM sha256(s.p))
     + (SELECT count(*) FROM lv.plain p JOIN lv.src s USING (sz) WHERE sha256(p.p) IS DISTINCT FROM sha256(s.p))
     + (SELECT count(*) FROM lv.src s WHERE (SELECT count(*) FROM lv.enc e WHERE e.sz = s.sz) = 0)
SQL
)

size_label="CASE WHEN sz >= 1048576 THEN (sz / 1048576) || ' MB' ELSE (sz / 1024) || ' KB' END"
echo
echo "=== Time per value (ms, median; MB/s = size / median) ==="
psql_su -At <<SQL
WITH t AS (SELECT sz, op, count(*) AS n, percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS ms
             FROM lv.timing GROUP BY sz, op),
     r AS (SELECT sz, op, variant, count(*) AS n, percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS ms
             FROM lv.result GROUP BY sz, op, variant),
     w AS (SELECT s.sz,
                  (SELECT n FROM t WHERE t.sz = s.sz AND op = 'encrypt') AS runs,
                  (SELECT ms FROM t WHERE t.sz = s.sz AND op = 'copy') AS copy_ms,
                  (SELECT ms FROM t WHERE t.sz = s.sz AND op = 'encrypt') AS enc_ms,
                  (SELECT ms FROM t WHERE t.sz = s.sz AND op = 'decrypt') AS dec_ms,
                  (SELECT n FROM r WHERE r.sz = s.sz AND op = 'INSERT' AND variant = 'enc') AS iruns,
                  (SELECT ms FROM r WHERE r.sz = s.sz AND op = 'INSERT' AND variant = 'plain') AS ins_p,
                  (SELECT ms FROM r WHERE r.sz = s.sz AND op = 'INSERT' AND variant = 'enc') AS ins_e,
                  (SELECT ms FROM r WHERE r.sz = s.sz AND op = 'SELECT' AND variant = 'plain') AS sel_p,
                  (SELECT ms FROM r WHERE r.sz = s.sz AND op = 'SELECT' AND variant = 'enc') AS sel_e
             FROM lv.src s)
SELECT format('%-7s %4s %10s %11s %11s %9s %9s  %4s %10s %10s %10s %10s', 'size', 'runs', 'copy', 'encrypt',
              'decrypt', 'enc MB/s', 'dec MB/s', 'runs', 'INSERT', 'INSERT', 'SELECT', 'SELECT')
UNION ALL
SELECT format('%-7s %4s %10s %11s %11s %9s %9s  %4s %10s %10s %10s %10s', '', '', 'in memory', '', '', '', '', '',
              'plain', 'encrypted', 'plain', 'decrypt')
UNION ALL
(SELECT format('%-7s %4s %10s %11s %11s %9s %9s  %4s %10s %10s %10s %10s', $size_label, runs,
               round(copy_ms::numeric, 3), round(enc_ms::numeric, 3), round(dec_ms::numeric, 3),
               round((sz / 1048576.0 / nullif(enc_ms, 0) * 1000)::numeric), round((sz / 1048576.0 / nullif(dec_ms, 0) * 1000)::numeric),
               iruns, round(ins_p::numeric, 2), round(ins_e::numeric, 2), round(sel_p::numeric, 2), round(sel_e::numeric, 2))
   FROM w ORDER BY sz);
SQL

echo
echo "=== Peak RSS of the backend (VmHWM, MB, median; a fresh connection per statement) ==="
psql_su -At <<SQL
WITH r AS (SELECT sz, op, variant, percentile_cont(0.5) WITHIN GROUP (ORDER BY hwm_kb) / 1024 AS mb
             FROM lv.result GROUP BY sz, op, variant),
     c AS (SELECT sz, percentile_cont(0.5) WITHIN GROUP (ORDER BY conn_kb) / 1024 AS conn,
                  percentile_cont(0.5) WITHIN GROUP (ORDER BY base_kb - conn_kb) / 1024 AS first
             FROM lv.result GROUP BY sz),
     w AS (SELECT s.sz, c.conn, c.first,
                  (SELECT mb FROM r WHERE r.sz = s.sz AND op = 'INSERT' AND variant = 'plain') AS ip,
                  (SELECT mb FROM r WHERE r.sz = s.sz AND op = 'INSERT' AND variant = 'enc') AS ie,
                  (SELECT mb FROM r WHERE r.sz = s.sz AND op = 'SELECT' AND variant = 'plain') AS sp,
                  (SELECT mb FROM r WHERE r.sz = s.sz AND op = 'SELECT' AND variant = 'enc') AS se
             FROM lv.src s JOIN c USING (sz))
SELECT format('%-7s %8s %9s | %9s %9s %12s | %9s %9s %12s', 'size', 'connect', 'first use', 'INSERT', 'INSERT',
              '(enc-plain)', 'SELECT', 'SELECT', '(enc-plain)')
UNION ALL
SELECT format('%-7s %8s %9s | %9s %9s %12s | %9s %9s %12s', '', '', '', 'plain', 'encrypted', '/ size', 'plain',
              'decrypt', '/ size')
UNION ALL
(SELECT format('%-7s %8s %9s | %9s %9s %12s | %9s %9s %12s', $size_label, round(conn::numeric, 1), '+' || round(first::numeric, 1),
               round(ip::numeric, 1), round(ie::numeric, 1), CASE WHEN sz >= 1048576 THEN round(((ie - ip) * 1048576 / sz)::numeric, 2)::text ELSE 'n/a' END,
               round(sp::numeric, 1), round(se::numeric, 1),
               CASE WHEN sz >= 1048576 THEN round(((se - sp) * 1048576 / sz)::numeric, 2)::text ELSE 'n/a' END)
   FROM w ORDER BY sz);
SQL
echo "(connect: peak when the statement's connection started; first use: what its first encrypt + decrypt of a"
echo " 1-byte value added, in both cases, before the statement; n/a: below 1 MB the difference is noise)"
echo "sanity: stored values that do not decrypt to their source: $BAD"

# ---------------------------------------------------------------- the 1 GB limit
if [[ $LIMIT == 1 ]]; then
  echo
  echo "=== The 1 GB limit (each statement at top level in a fresh connection) ==="
  psql_su <<'SQL'
SET client_min_messages = warning;
TRUNCATE lv.plain, lv.enc;
CHECKPOINT;
-- text and bytea are both varlenas: a binary-coercible cast turns a repeat() result into
-- a bytea without a copy (a 1 GB copy costs seconds and a GB of memory).
CREATE CAST (text AS bytea) WITHOUT FUNCTION;
CREATE TABLE lv.big (c envelope.encrypted_bytea);
CREATE TABLE lv.bigplain (p bytea);
ALTER TABLE lv.bigplain ALTER COLUMN p SET STORAGE EXTERNAL;
SQL
  # n bytes as a bytea, built in the query (no constant folding, no copy): repeat() of a
  # chunk whose length divides n. BYTES is the expression, from N its FROM clause.
  BYTES="repeat(repeat('x', f.d), (v.n / f.d)::integer)::bytea"
  from() {
    echo "FROM (SELECT $1::bigint AS n OFFSET 0) v,
          LATERAL (SELECT max(d)::integer AS d FROM generate_series(1, 65536) d WHERE v.n % d = 0) f"
  }
  MAXV=1073741823                       # MaxAllocSize, the largest varlena (header included)
  N_ENC=$(( MAXV - 4 - 38 ))            # largest plaintext whose envelope fits
  N_ROW=$(( MAXV - 24 - 24 - 4 - 38 ))  # largest ciphertext lv.big's row can hold: HEAPTUPLESIZE + header + varlena header
  N_ROWP=$(( MAXV - 24 - 24 - 4 ))      # the same for lv.bigplain
  probe() {  # ord label n statement
    local out rc
    set +e
    out=$(psql_su -v ON_ERROR_STOP=0 -v ord="$1" -v label="$2" -v n="$3" 2>&1 <<SQL
SELECT pg_backend_pid() AS pid0, lv.status_kb('VmHWM') AS base_kb, clock_timestamp() AS t0 \\gset
$4 \\g /dev/null
SELECT :'SQLSTATE' AS st, :'LAST_ERROR_MESSAGE' AS msg, 1000 * extract(epoch FROM clock_timestamp() - :'t0'::timestamptz) AS ms,
       lv.status_kb('VmHWM') AS hwm_kb, pg_backend_pid() = :pid0 AS same \\gset
\\if :{?st}
INSERT INTO lv.limits VALUES (:ord, :'label', :n, :'st', CASE WHEN :'st' <> '00000' THEN :'msg' END, :ms, :base_kb, :hwm_kb, :'same');
\\endif
SQL
)
    rc=$?
    set -e
    if (( rc != 0 )) || ! psql_su -At -c "SELECT 1 FROM lv.limits WHERE ord = $1" | grep -q 1; then
      echo "  $2: the session failed (psql exit $rc): $(grep -v '^ERROR' <<<"$out" | tail -n 3 | tr '\n' ' ')"
      psql_su -c "INSERT INTO lv.limits (ord, label, n, sqlstate, message, same_backend)
                  VALUES ($1, '$2', $3, 'lost', 'connection lost (backend crashed or killed?)', false)" || true
    fi
  }
  PM_START=$(psql_su -At -c "SELECT pg_postmaster_start_time()")
  probe 1 "encrypt_field, largest plaintext" "$N_ENC" \
    "SELECT pg_column_size(envelope.encrypt_field($BYTES, 'lv')) $(from "$N_ENC")"
  probe 2 "encrypt_field, 1 byte more" $(( N_ENC + 1 )) \
    "SELECT pg_column_size(envelope.encrypt_field($BYTES, 'lv')) $(from $(( N_ENC + 1 )))"
  probe 3 "INSERT encrypted, largest row" "$N_ROW" \
    "INSERT INTO lv.big SELECT envelope.encrypt_field($BYTES, 'lv') $(from "$N_ROW")"
  probe 4 "SELECT decrypt_field of it" "$N_ROW" \
    "SELECT get_byte(envelope.decrypt_field(c), $(( N_ROW - 1 ))) FROM lv.big"
  probe 5 "text output (::text) of it" "$N_ROW" "SELECT octet_length(c::text) FROM lv.big"
  probe 6 "INSERT encrypted, 1 byte more" $(( N_ROW + 1 )) \
    "INSERT INTO lv.big SELECT envelope.encrypt_field($BYTES, 'lv') $(from $(( N_ROW + 1 )))"
  probe 7 "INSERT plain bytea, largest row" "$N_ROWP" "INSERT INTO lv.bigplain SELECT $BYTES $(from "$N_ROWP")"
  probe 8 "INSERT plain bytea, 1 byte more" $(( N_ROWP + 1 )) \
    "INSERT INTO lv.bigplain SELECT $BYTES $(from $(( N_ROWP + 1 )))"
  PM_NOW=$(psql_su -At -c "SELECT pg_postmaster_start_time()")
  psql_su -At <<'SQL'
SELECT format('%-2s %-33s %11s  %-5s %9s %8s  %-4s  %s', '#', 'statement', 'plaintext', 'state', 'ms', 'peak MB', 'same', 'message')
UNION ALL
(SELECT format('%-2s %-33s %11s  %-5s %9s %8s  %-4s  %s', ord, label, n, sqlstate, round(ms::numeric), round(hwm_kb / 1024.0),
               CASE WHEN same_backend THEN 'yes' ELSE 'NO' END, coalesce(message, ''))
   FROM lv.limits ORDER BY ord);
SQL
  echo "(plaintext = bytes before encryption; peak MB = VmHWM; same = the same backend answered afterwards)"
  CRASHES=$(grep -cE 'terminated by signal|PANIC:' "$TMP/server.log" || true)
  echo "postmaster restarted: $([[ $PM_START == "$PM_NOW" ]] && echo no || echo YES); server processes killed (signal, e.g. the OOM killer) or PANIC in the server log: $CRASHES"
  LIMIT_BAD=$(psql_su -At -c "SELECT count(*) FROM lv.limits WHERE NOT coalesce(same_backend, false)
                                 OR (ord = 1 AND sqlstate <> '00000') OR (ord = 2 AND sqlstate <> '54000')")
  [[ $PM_START == "$PM_NOW" ]] || LIMIT_BAD=$(( LIMIT_BAD + 1 ))
  LIMIT_BAD=$(( LIMIT_BAD + CRASHES ))
  BAD=$(( BAD + LIMIT_BAD ))
fi

echo
echo "total time $(( $(date +%s) - T_START )) s"
(( BAD == 0 )) || { echo "large_values.sh: $BAD check(s) failed" >&2; exit 1; }
