-- Prints the results gathered by bench/bench.sql. Run by bench/run.sh through psql.
-- Figures use the MEDIAN of the timed runs (the warm-up run 0 is excluded); the
-- fastest run is shown alongside.
\set ON_ERROR_STOP 1
\pset footer off
\pset null '-'
\pset border 2

CREATE TEMP VIEW s AS
SELECT label, nrows,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS med_ms,
       min(ms) AS min_ms, max(ms) AS max_ms, count(*) AS runs,
       -- /proc/self/schedstat advances in scheduler ticks (a few ms): too coarse below 50 ms.
       CASE WHEN percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) >= 50
            THEN percentile_cont(0.5) WITHIN GROUP (ORDER BY cpu_ms) END AS med_cpu_ms,
       sum(wait_ms) AS wait_ms, sum(ms) AS sum_ms,
       min(answer) = max(answer) AS stable, min(answer) AS answer
  FROM bench.result WHERE run > 0 GROUP BY label, nrows;

-- us = wall-clock us/row (median run), cus = backend on-CPU us/row (median run)
CREATE TEMP VIEW us AS
SELECT label, med_ms * 1000.0 / nrows AS us, med_cpu_ms * 1000.0 / nrows AS cus FROM s;

CREATE TEMP TABLE m (ord numeric, label text, what text);
INSERT INTO m VALUES
 ( 1, 'plain_scan',          'plaintext scan: sum(length(v))'),
 ( 1.5, 'plain_scan_octets', '  (info) plaintext scan with octet_length(v)'),
 ( 2, 'plain_insert',        'plaintext INSERT..SELECT (baseline for encrypt INSERT)'),
 ( 3, 'pge_encrypt_fn',      'pg_envelope encrypt_field(), function only'),
 ( 4, 'pge_encrypt_insert',  'pg_envelope INSERT..SELECT encrypt_field()'),
 ( 5, 'enc_scan_raw',        'scan of pg_envelope table, no decrypt'),
 ( 6, 'pge_decrypt',         'pg_envelope decrypt scan: sum(length(decrypt_field(c)))'),
 ( 6.5, 'pge_decrypt_octets','  (info) same, with octet_length()'),
 ( 7, 'pgc_encrypt_fn',      'pgcrypto encrypt(aes), function only'),
 ( 8, 'pgc_encrypt_insert',  'pgcrypto INSERT..SELECT encrypt(aes)'),
 ( 9, 'pgc_scan_raw',        'scan of pgcrypto table, no decrypt'),
 (10, 'pgc_decrypt',         'pgcrypto decrypt scan: convert_from(decrypt(c,k,''aes''))'),
 (11, 'pgc_decrypt_bytea',   'pgcrypto decrypt scan, bytea only (no convert_from)'),
 (12, 'pgp_encrypt_fn',      'pgcrypto pgp_sym_encrypt(aes256), function only'),
 (13, 'pgp_decrypt',         'pgcrypto pgp_sym_decrypt scan'),
 (14, 'pge_encrypt_fn_small','pg_envelope encrypt_field(), same subset'),
 (15, 'pge_decrypt_small',   'pg_envelope decrypt scan, same subset');

\echo
\echo '=== Measurements: median of the timed runs after 1 warm-up (wall = clock_timestamp() delta; cpu = backend on-CPU time) ==='
SELECT row_number() OVER (ORDER BY m.ord) AS "#", m.what AS "measurement", s.nrows AS "rows",
       to_char(s.med_ms, 'FM999999990.0') AS "wall ms",
       to_char(s.min_ms, 'FM999999990.0') AS "min wall ms",
       coalesce(to_char(s.med_cpu_ms, 'FM999999990.0'), '-') AS "cpu ms",
       to_char(s.med_ms * 1000.0 / s.nrows, 'FM99999990.000') AS "us/row",
       coalesce(to_char(s.med_cpu_ms * 1000.0 / s.nrows, 'FM99999990.000'), '-') AS "cpu us/row",
       to_char((s.med_ms / s.nrows) / (p.med_ms / p.nrows), 'FM9999990.00') || 'x' AS "vs plain scan",
       to_char(100.0 * s.wait_ms / s.sum_ms, 'FM990.0') || '%' AS "cpu-wait"
  FROM m JOIN s USING (label)
  CROSS JOIN (SELECT med_ms, nrows FROM s WHERE label = 'plain_scan') p
 ORDER BY m.ord;
\echo '  us/row = median wall ms * 1000 / rows.  cpu-wait = share of the timed runs the backend spent runnable'
\echo '  but waiting for a CPU (other processes competing); near 0% means the wall figures are clean.'
\echo '  cpu columns are "-" when a run is under 50 ms (schedstat advances in scheduler ticks).'

\echo
\echo '=== Derived per-value costs (us/row, medians; "net" = minus the scan of the table it reads) ==='
SELECT what AS "figure", to_char(v, 'FM9999990.000') AS "wall us/row", coalesce(to_char(c, 'FM9999990.000'), '-') AS "cpu us/row"
  FROM (
   SELECT 1 AS o, 'pg_envelope decrypt, net of scanning its table (pge_decrypt - enc_scan_raw)' AS what,
          (SELECT us FROM us WHERE label = 'pge_decrypt') - (SELECT us FROM us WHERE label = 'enc_scan_raw') AS v,
          (SELECT cus FROM us WHERE label = 'pge_decrypt') - (SELECT cus FROM us WHERE label = 'enc_scan_raw') AS c
   UNION ALL
   SELECT 2, 'pgcrypto decrypt(aes)+convert_from, net (pgc_decrypt - pgc_scan_raw)',
          (SELECT us FROM us WHERE label = 'pgc_decrypt') - (SELECT us FROM us WHERE label = 'pgc_scan_raw'),
          (SELECT cus FROM us WHERE label = 'pgc_decrypt') - (SELECT cus FROM us WHERE label = 'pgc_scan_raw')
   UNION ALL
   SELECT 3, 'pg_envelope encrypt, net of the plaintext scan (pge_encrypt_fn - plain_scan)',
          (SELECT us FROM us WHERE label = 'pge_encrypt_fn') - (SELECT us FROM us WHERE label = 'plain_scan'),
          (SELECT cus FROM us WHERE label = 'pge_encrypt_fn') - (SELECT cus FROM us WHERE label = 'plain_scan')
   UNION ALL
   SELECT 4, 'pgcrypto encrypt(aes), net of the plaintext scan (pgc_encrypt_fn - plain_scan)',
          (SELECT us FROM us WHERE label = 'pgc_encrypt_fn') - (SELECT us FROM us WHERE label = 'plain_scan'),
          (SELECT cus FROM us WHERE label = 'pgc_encrypt_fn') - (SELECT cus FROM us WHERE label = 'plain_scan')
   UNION ALL
   SELECT 5, 'extra INSERT cost of pg_envelope vs plaintext (pge_encrypt_insert - plain_insert)',
          (SELECT us FROM us WHERE label = 'pge_encrypt_insert') - (SELECT us FROM us WHERE label = 'plain_insert'),
          (SELECT cus FROM us WHERE label = 'pge_encrypt_insert') - (SELECT cus FROM us WHERE label = 'plain_insert')
   UNION ALL
   SELECT 6, 'extra INSERT cost of pgcrypto vs plaintext (pgc_encrypt_insert - plain_insert)',
          (SELECT us FROM us WHERE label = 'pgc_encrypt_insert') - (SELECT us FROM us WHERE label = 'plain_insert'),
          (SELECT cus FROM us WHERE label = 'pgc_encrypt_insert') - (SELECT cus FROM us WHERE label = 'plain_insert')
  ) d ORDER BY o;

\echo
\echo '=== Ratios (medians; wall and backend on-CPU time) ==='
SELECT what AS "ratio", to_char(v, 'FM9999990.00') || 'x' AS "wall",
       coalesce(to_char(c, 'FM9999990.00') || 'x', '-') AS "cpu"
  FROM (
   SELECT 1 AS o, 'pg_envelope decrypt scan / plaintext scan' AS what,
          (SELECT us FROM us WHERE label = 'pge_decrypt') / (SELECT us FROM us WHERE label = 'plain_scan') AS v,
          (SELECT cus FROM us WHERE label = 'pge_decrypt') / (SELECT cus FROM us WHERE label = 'plain_scan') AS c
   UNION ALL
   SELECT 1.5, '  (info) same, both with octet_length() instead of length()',
          (SELECT us FROM us WHERE label = 'pge_decrypt_octets') / (SELECT us FROM us WHERE label = 'plain_scan_octets'),
          (SELECT cus FROM us WHERE label = 'pge_decrypt_octets') / (SELECT cus FROM us WHERE label = 'plain_scan_octets')
   UNION ALL
   SELECT 2, 'pg_envelope decrypt scan / pgcrypto decrypt(aes) scan',
          (SELECT us FROM us WHERE label = 'pge_decrypt') / (SELECT us FROM us WHERE label = 'pgc_decrypt'),
          (SELECT cus FROM us WHERE label = 'pge_decrypt') / (SELECT cus FROM us WHERE label = 'pgc_decrypt')
   UNION ALL
   SELECT 3, 'pg_envelope encrypt fn / pgcrypto encrypt(aes) fn',
          (SELECT us FROM us WHERE label = 'pge_encrypt_fn') / (SELECT us FROM us WHERE label = 'pgc_encrypt_fn'),
          (SELECT cus FROM us WHERE label = 'pge_encrypt_fn') / (SELECT cus FROM us WHERE label = 'pgc_encrypt_fn')
   UNION ALL
   SELECT 4, 'pg_envelope INSERT / plaintext INSERT',
          (SELECT us FROM us WHERE label = 'pge_encrypt_insert') / (SELECT us FROM us WHERE label = 'plain_insert'),
          (SELECT cus FROM us WHERE label = 'pge_encrypt_insert') / (SELECT cus FROM us WHERE label = 'plain_insert')
   UNION ALL
   SELECT 5, 'pgp_sym_decrypt scan / pg_envelope decrypt scan (same subset; >1 = pgp slower)',
          (SELECT us FROM us WHERE label = 'pgp_decrypt') / (SELECT us FROM us WHERE label = 'pge_decrypt_small'),
          (SELECT cus FROM us WHERE label = 'pgp_decrypt') / (SELECT cus FROM us WHERE label = 'pge_decrypt_small')
   UNION ALL
   SELECT 6, 'pgp_sym_encrypt fn / pg_envelope encrypt fn (same subset; >1 = pgp slower)',
          (SELECT us FROM us WHERE label = 'pgp_encrypt_fn') / (SELECT us FROM us WHERE label = 'pge_encrypt_fn_small'),
          (SELECT cus FROM us WHERE label = 'pgp_encrypt_fn') / (SELECT cus FROM us WHERE label = 'pge_encrypt_fn_small')
  ) d ORDER BY o;

\echo
\echo '=== On-disk size (after VACUUM FREEZE; total = heap + TOAST + primary-key index) ==='
SELECT t.what AS "table", n.n AS "rows",
       to_char(avg_col, 'FM9990.0') AS "avg value bytes (pg_column_size)",
       to_char(pg_relation_size(t.rel)::numeric / n.n, 'FM9990.0') AS "heap bytes/row",
       to_char(pg_total_relation_size(t.rel)::numeric / n.n, 'FM9990.0') AS "total bytes/row",
       to_char(pg_total_relation_size(t.rel)::numeric / pg_total_relation_size('bench.plain'::regclass)
                 * (SELECT count(*) FROM bench.plain) / n.n, 'FM990.00') || 'x' AS "vs plain"
  FROM (VALUES (1, 'plain (text)', 'bench.plain'::regclass, (SELECT avg(pg_column_size(v)) FROM bench.plain)),
               (2, 'pg_envelope (encrypted_text)', 'bench.enc'::regclass, (SELECT avg(pg_column_size(c)) FROM bench.enc)),
               (3, 'pgcrypto encrypt(aes) (bytea)', 'bench.pgc'::regclass, (SELECT avg(pg_column_size(c)) FROM bench.pgc)),
               (4, 'pgcrypto pgp_sym_encrypt (bytea)', 'bench.pgp_small'::regclass,
                   (SELECT avg(pg_column_size(c)) FROM bench.pgp_small))) t(o, what, rel, avg_col)
  CROSS JOIN LATERAL (SELECT CASE WHEN t.rel = 'bench.pgp_small'::regclass
                                  THEN (SELECT count(*) FROM bench.pgp_small)
                                  ELSE (SELECT count(*) FROM bench.plain) END AS n) n
 ORDER BY t.o;

\echo
\echo '=== Sanity checks ==='
SELECT check_name AS "check", CASE WHEN ok THEN 'ok' ELSE 'FAILED' END AS "result"
  FROM (
   SELECT 1 AS o, 'every measurement gave the same answer in every run' AS check_name,
          bool_and(stable) AS ok FROM s
   UNION ALL
   SELECT 2, 'decrypted lengths equal plaintext lengths (pg_envelope, pgcrypto)',
          (SELECT answer FROM s WHERE label = 'plain_scan') = (SELECT answer FROM s WHERE label = 'pge_decrypt')
      AND (SELECT answer FROM s WHERE label = 'plain_scan') = (SELECT answer FROM s WHERE label = 'pgc_decrypt')
   UNION ALL
   SELECT 3, 'pg_envelope and pgp_sym decrypt agree on the subset',
          (SELECT answer FROM s WHERE label = 'pge_decrypt_small') = (SELECT answer FROM s WHERE label = 'pgp_decrypt')
   UNION ALL
   SELECT 4, 'decrypted text equals plaintext for every row (pg_envelope)',
          NOT EXISTS (SELECT 1 FROM bench.enc e JOIN bench.plain p USING (id)
                       WHERE envelope.decrypt_field(e.c) IS DISTINCT FROM p.v)
      AND (SELECT count(*) FROM bench.enc) = (SELECT count(*) FROM bench.plain)
  ) c ORDER BY o;

\echo
\echo '=== Goals (medians) ==='
SELECT goal AS "goal",
       to_char(v, 'FM9999990.00') || 'x' AS "wall",
       CASE WHEN v <= lim THEN 'MET' ELSE 'NOT MET' END AS "status (wall)",
       coalesce(to_char(c, 'FM9999990.00') || 'x', '-') AS "cpu",
       CASE WHEN c IS NULL THEN '-' WHEN c <= lim THEN 'MET' ELSE 'NOT MET' END AS "status (cpu)"
  FROM (
   SELECT 1 AS o, 'pg_envelope decrypt scan <= 3x plaintext scan' AS goal, 3.0 AS lim,
          (SELECT us FROM us WHERE label = 'pge_decrypt') / (SELECT us FROM us WHERE label = 'plain_scan') AS v,
          (SELECT cus FROM us WHERE label = 'pge_decrypt') / (SELECT cus FROM us WHERE label = 'plain_scan') AS c
   UNION ALL
   SELECT 2, 'pg_envelope decrypt no slower than pgcrypto decrypt() (ratio <= 1)', 1.0,
          (SELECT us FROM us WHERE label = 'pge_decrypt') / (SELECT us FROM us WHERE label = 'pgc_decrypt'),
          (SELECT cus FROM us WHERE label = 'pge_decrypt') / (SELECT cus FROM us WHERE label = 'pgc_decrypt')
  ) g ORDER BY o;

\echo
\pset format unaligned
\pset tuples_only on
SELECT CASE WHEN sum(wait_ms) / sum(ms) > 0.02
            THEN format('WARNING: the benchmark backend spent %s%% of its timed runs waiting for a CPU: other processes',
                        to_char(100 * sum(wait_ms) / sum(ms), 'FM990.0'))
                 || chr(10) || 'were competing, so wall-clock figures are inflated and noisy. Prefer the cpu columns, or'
                 || chr(10) || 'rerun on an idle machine.'
            ELSE format('Machine was quiet: the backend waited for a CPU %s%% of its timed runs.',
                        to_char(100 * coalesce(sum(wait_ms), 0) / sum(ms), 'FM990.0')) END AS "contention"
  FROM bench.result WHERE run > 0;
