-- pg_envelope benchmark workload. Run by bench/run.sh through psql (stdin), with
--   -v N=<rows> -v PGP_N=<rows for pgp_sym_*> -v RUNS=<timed runs per measurement>
-- against a throwaway cluster. Every measurement goes through bench.measure(), which
-- runs the statement once untimed (warm-up) and then RUNS times, timing each run
-- server-side with clock_timestamp() deltas around a dynamic EXECUTE (no client
-- round trip, no \timing), and also recording the backend's own on-CPU time and
-- run-queue wait from /proc/self/schedstat (so competing load on the machine shows up).
-- Results land in bench.result; bench/report.sql prints them.
\set ON_ERROR_STOP 1
\set QUIET 1
SET client_min_messages = warning;

CREATE EXTENSION pg_envelope;
CREATE EXTENSION pgcrypto;
CREATE SCHEMA bench;

CREATE TABLE bench.result (
  seq     serial PRIMARY KEY,
  label   text NOT NULL,
  run     integer NOT NULL,        -- 0 = warm-up (not used in the figures)
  ms      double precision NOT NULL, -- wall-clock time of the statement
  cpu_ms  double precision,        -- backend on-CPU time   (/proc/self/schedstat field 1)
  wait_ms double precision,        -- backend run-queue wait (/proc/self/schedstat field 2)
  nrows   bigint NOT NULL,
  answer  text                     -- query result, or row count for DML (sanity check)
);

-- This backend's scheduler statistics in nanoseconds: time on a CPU and time spent
-- runnable but waiting for a CPU. NULLs where /proc/self/schedstat is unavailable.
CREATE FUNCTION bench.schedstat(OUT oncpu_ns bigint, OUT wait_ns bigint)
LANGUAGE plpgsql AS $$
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

-- Times p_sql: one warm-up run, then p_runs timed runs. p_setup (e.g. TRUNCATE) runs
-- before every run, untimed, in its own committed transaction; each timed run is
-- committed on its own too, so DML runs see a fresh, committed table.
CREATE PROCEDURE bench.measure(p_label text, p_sql text, p_rows bigint, p_runs integer,
                               p_setup text DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
  t0 timestamptz;
  t1 timestamptz;
  s0 record;
  s1 record;
  res text;
  n bigint;
  is_query boolean := upper(left(ltrim(p_sql), 6)) = 'SELECT';
BEGIN
  FOR i IN 0..p_runs LOOP
    IF p_setup IS NOT NULL THEN
      EXECUTE p_setup;
    END IF;
    COMMIT;
    s0 := bench.schedstat();
    t0 := clock_timestamp();
    IF is_query THEN
      EXECUTE p_sql INTO res;
    ELSE
      EXECUTE p_sql;
      GET DIAGNOSTICS n = ROW_COUNT;
      res := n::text;
    END IF;
    t1 := clock_timestamp();
    s1 := bench.schedstat();
    COMMIT;
    INSERT INTO bench.result (label, run, ms, cpu_ms, wait_ms, nrows, answer)
      VALUES (p_label, i, extract(epoch FROM t1 - t0) * 1000.0,
              (s1.oncpu_ns - s0.oncpu_ns) / 1e6, (s1.wait_ns - s0.wait_ns) / 1e6, p_rows, res);
    COMMIT;
  END LOOP;
END
$$;

------------------------------------------------------------------------------
-- Data: N deterministic fake-PII strings of exactly 74 ASCII bytes.
--   '0000042|<md5>.<md5>@example.com|+1-555-0042' cut to 74 bytes.
------------------------------------------------------------------------------
\echo '  loading' :N 'rows of 74-byte text ...'
CREATE TABLE bench.plain (id integer PRIMARY KEY, v text NOT NULL);
INSERT INTO bench.plain
SELECT g, left(format('%s|%s.%s@example.com|+1-555-%s', lpad(g::text, 7, '0'), md5(g::text),
                      md5((g * 7)::text), lpad((g % 10000)::text, 4, '0')), 74)
  FROM generate_series(1, :N) g;
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM bench.plain WHERE octet_length(v) <> 74) THEN
    RAISE EXCEPTION 'generated values are not all 74 bytes';
  END IF;
END $$;

CREATE TABLE bench.plain_copy (id integer PRIMARY KEY, v text NOT NULL);
CREATE TABLE bench.enc (id integer PRIMARY KEY, c envelope.encrypted_text NOT NULL);
CREATE TABLE bench.pgc (id integer PRIMARY KEY, c bytea NOT NULL);

-- Subset for the (much slower) OpenPGP functions.
CREATE TABLE bench.plain_small (id integer PRIMARY KEY, v text NOT NULL);
INSERT INTO bench.plain_small SELECT id, v FROM bench.plain WHERE id <= :PGP_N;
CREATE TABLE bench.pgp_small (id integer PRIMARY KEY, c bytea NOT NULL);
CREATE TABLE bench.enc_small (id integer PRIMARY KEY, c envelope.encrypted_text NOT NULL);

VACUUM (FREEZE, ANALYZE) bench.plain;
VACUUM (FREEZE, ANALYZE) bench.plain_small;

SELECT envelope.create_key('bench') AS key_id \gset
CHECKPOINT;

------------------------------------------------------------------------------
-- 1. Plaintext baseline.
------------------------------------------------------------------------------
\echo '  [1/5] plaintext scan and plaintext INSERT baseline ...'
CALL bench.measure('plain_scan',
  $q$SELECT sum(length(v)) FROM bench.plain$q$, :N, :RUNS);
-- Informational: the same scan without length()'s UTF-8 character counting.
CALL bench.measure('plain_scan_octets',
  $q$SELECT sum(octet_length(v)) FROM bench.plain$q$, :N, :RUNS);
CALL bench.measure('plain_insert',
  $q$INSERT INTO bench.plain_copy SELECT id, v FROM bench.plain$q$, :N, :RUNS,
  'TRUNCATE bench.plain_copy');
CHECKPOINT;

------------------------------------------------------------------------------
-- 2. pg_envelope encrypt: the function alone (result consumed by pg_column_size, so
--    no text/base64 output formatting is timed) and the full INSERT ... SELECT.
------------------------------------------------------------------------------
\echo '  [2/5] pg_envelope encrypt ...'
CALL bench.measure('pge_encrypt_fn',
  $q$SELECT sum(pg_column_size(envelope.encrypt_field(v, 'bench'))) FROM bench.plain$q$, :N, :RUNS);
CALL bench.measure('pge_encrypt_insert',
  $q$INSERT INTO bench.enc SELECT id, envelope.encrypt_field(v, 'bench') FROM bench.plain$q$, :N, :RUNS,
  'TRUNCATE bench.enc');
VACUUM (FREEZE, ANALYZE) bench.enc;
CHECKPOINT;

------------------------------------------------------------------------------
-- 3. pg_envelope decrypt scan, plus the bare scan of the same table.
------------------------------------------------------------------------------
\echo '  [3/5] pg_envelope decrypt scan ...'
CALL bench.measure('enc_scan_raw',
  $q$SELECT sum(pg_column_size(c)) FROM bench.enc$q$, :N, :RUNS);
CALL bench.measure('pge_decrypt',
  $q$SELECT sum(length(envelope.decrypt_field(c))) FROM bench.enc$q$, :N, :RUNS);
CALL bench.measure('pge_decrypt_octets',
  $q$SELECT sum(octet_length(envelope.decrypt_field(c))) FROM bench.enc$q$, :N, :RUNS);

------------------------------------------------------------------------------
-- 4. pgcrypto raw AES: encrypt(data, key, 'aes') with a 32-byte key = AES-256-CBC,
--    PKCS#7 padding, zero IV (pgcrypto's defaults), no authentication.
------------------------------------------------------------------------------
\echo '  [4/5] pgcrypto encrypt()/decrypt() ...'
CALL bench.measure('pgc_encrypt_fn',
  $q$SELECT sum(length(encrypt(convert_to(v, 'UTF8'),
      '\x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f'::bytea, 'aes')))
     FROM bench.plain$q$, :N, :RUNS);
CALL bench.measure('pgc_encrypt_insert',
  $q$INSERT INTO bench.pgc SELECT id, encrypt(convert_to(v, 'UTF8'),
      '\x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f'::bytea, 'aes')
     FROM bench.plain$q$, :N, :RUNS, 'TRUNCATE bench.pgc');
VACUUM (FREEZE, ANALYZE) bench.pgc;
CHECKPOINT;
CALL bench.measure('pgc_scan_raw',
  $q$SELECT sum(pg_column_size(c)) FROM bench.pgc$q$, :N, :RUNS);
CALL bench.measure('pgc_decrypt',
  $q$SELECT sum(length(convert_from(decrypt(c,
      '\x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f'::bytea, 'aes'), 'UTF8')))
     FROM bench.pgc$q$, :N, :RUNS);
CALL bench.measure('pgc_decrypt_bytea',
  $q$SELECT sum(length(decrypt(c,
      '\x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f'::bytea, 'aes')))
     FROM bench.pgc$q$, :N, :RUNS);

------------------------------------------------------------------------------
-- 5. pgcrypto OpenPGP symmetric (pgp_sym_*) on the PGP_N-row subset, AES-256,
--    default S2K (mode 3, iterated+salted SHA-1, random iteration count per value),
--    with pg_envelope on the same subset for a like-for-like ratio.
------------------------------------------------------------------------------
\echo '  [5/5] pgcrypto pgp_sym_encrypt()/pgp_sym_decrypt() on' :PGP_N 'rows ...'
CALL bench.measure('pgp_encrypt_fn',
  $q$SELECT sum(length(pgp_sym_encrypt(v, 'bench-password', 'cipher-algo=aes256')))
     FROM bench.plain_small$q$, :PGP_N, :RUNS);
INSERT INTO bench.pgp_small
  SELECT id, pgp_sym_encrypt(v, 'bench-password', 'cipher-algo=aes256') FROM bench.plain_small;
INSERT INTO bench.enc_small SELECT id, c FROM bench.enc WHERE id <= :PGP_N;
VACUUM (FREEZE, ANALYZE) bench.pgp_small;
VACUUM (FREEZE, ANALYZE) bench.enc_small;
CALL bench.measure('pgp_decrypt',
  $q$SELECT sum(length(pgp_sym_decrypt(c, 'bench-password'))) FROM bench.pgp_small$q$, :PGP_N, :RUNS);
CALL bench.measure('pge_decrypt_small',
  $q$SELECT sum(length(envelope.decrypt_field(c))) FROM bench.enc_small$q$, :PGP_N, :RUNS);
CALL bench.measure('pge_encrypt_fn_small',
  $q$SELECT sum(pg_column_size(envelope.encrypt_field(v, 'bench'))) FROM bench.plain_small$q$, :PGP_N, :RUNS);
