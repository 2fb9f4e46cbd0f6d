-- Protected columns: envelope.protect_column() and what an application's unchanged SQL
-- gets afterwards (docs/protect.md).
CREATE EXTENSION pg_envelope;
\set VERBOSITY default
\set SHOW_CONTEXT never
CREATE FUNCTION public.error_of(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE q;
  RETURN 'no error';
EXCEPTION WHEN others THEN
  RETURN SQLSTATE || ': ' || regexp_replace(SQLERRM, '_[0-9]+"', '_<id>"');
END $$;
-- The detail of the error a statement raises, the blind index's bytes masked.
CREATE FUNCTION public.detail_of(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE d text;
BEGIN
  EXECUTE q;
  RETURN 'no error';
EXCEPTION WHEN others THEN
  GET STACKED DIAGNOSTICS d = PG_EXCEPTION_DETAIL;
  RETURN SQLSTATE || ': ' || regexp_replace(d, 'blind:[0-9a-f]{32}', 'blind:<32 hex digits>');
END $$;
-- The table's protection objects, with the random protection id masked.
CREATE FUNCTION public.protection_of(t regclass) RETURNS TABLE (kind text, name text, definition text) LANGUAGE sql AS $$
  SELECT 'check', regexp_replace(conname, '[0-9]+$', '<id>'), regexp_replace(pg_get_constraintdef(oid), '\(?''?[0-9]{3,}''?\)?::bigint', '<id>::bigint')
    FROM pg_constraint WHERE conrelid = t AND contype = 'c'
  UNION ALL
  SELECT 'trigger ' || tgenabled::text, regexp_replace(tgname, '[0-9]+$', '<id>'), NULL FROM pg_trigger WHERE tgrelid = t AND NOT tgisinternal
  UNION ALL
  SELECT 'index', indexrelid::regclass::text, regexp_replace(pg_get_indexdef(indexrelid), '^.* USING ', '')
    FROM pg_index WHERE indrelid = t
  UNION ALL
  SELECT 'column', attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = t AND attnum > 0 AND NOT attisdropped
  ORDER BY 1, 2 $$;
-- Whether a value as the current role sees it is the ciphertext text form.
CREATE FUNCTION public.ct(v text) RETURNS boolean LANGUAGE sql AS $$ SELECT v LIKE 'penv1:%' $$;

SELECT envelope.create_key('pk_app') + envelope.create_key('pk_tenant_1') + envelope.create_key('pk_tenant_2')
       + envelope.create_key('pk_blind') + envelope.create_key('pk_other') AS keys;
CREATE ROLE regress_pc_owner;
CREATE ROLE regress_pc_reader;
CREATE ROLE regress_pc_writer;
CREATE ROLE regress_pc_nobody;
GRANT CREATE, USAGE ON SCHEMA public TO regress_pc_owner;
GRANT EXECUTE ON FUNCTION envelope.protect_column(regclass, name, text, name, name, boolean, integer, text),
  envelope.unprotect_column(regclass, name) TO regress_pc_owner;
GRANT EXECUTE ON PROCEDURE envelope.seal_rows(regclass, name, integer, integer, boolean) TO regress_pc_owner;
SELECT envelope.grant_key('pk_app', 'regress_pc_owner', 'encrypt'), envelope.grant_key('pk_app', 'regress_pc_owner', 'decrypt'),
       envelope.grant_key('pk_app', 'regress_pc_reader', 'decrypt'), envelope.grant_key('pk_app', 'regress_pc_writer', 'encrypt');

SET ROLE regress_pc_owner;
CREATE TABLE people (id bigint PRIMARY KEY, email text UNIQUE, name text);
GRANT SELECT, INSERT, UPDATE, DELETE ON people TO regress_pc_reader, regress_pc_writer, regress_pc_nobody;
SELECT envelope.protect_column('people', 'email', 'pk_app', context_column => 'id');
SELECT * FROM protection_of('people');
SELECT tbl, col, plain_type, key, context_column, blind_key, blind_bytes, state, pending_indexes FROM envelope.protected_columns;

-- The application's SQL, unchanged.
INSERT INTO people VALUES (1, 'ann@example.org', 'Ann') RETURNING id, email;
INSERT INTO people VALUES (2, 'bob@example.org', 'Bob'), (3, 'cy@example.org', 'Cy'), (4, NULL, 'Dee');
INSERT INTO people SELECT 10 + g, 'user' || g || '@example.org', 'u' || g FROM generate_series(1, 5) g;
COPY people (id, email, name) FROM STDIN;
20	copy@example.org	Copied
21	\N	Null
\.
SELECT id, email, name FROM people ORDER BY id;
SELECT id FROM people WHERE email = 'cy@example.org';
SELECT count(*) FROM people WHERE email IN ('ann@example.org', 'user3@example.org', 'nobody@example.org');
PREPARE by_email(text) AS SELECT id, email FROM people WHERE email = $1;
EXECUTE by_email('bob@example.org');
-- Updating another column leaves the sealed bytes as they are.
CREATE TEMP TABLE before AS SELECT id, email::text AS stored FROM people;
UPDATE people SET name = 'Ann B' WHERE id = 1 RETURNING email, name;
SELECT p.email::text = b.stored AS same_bytes FROM people p JOIN before b USING (id) WHERE id = 1;
UPDATE people SET email = 'ann.b@example.org' WHERE id = 1;
SELECT email FROM people WHERE id = 1;
SELECT p.email::text = b.stored AS same_bytes FROM people p JOIN before b USING (id) WHERE id = 1;
-- Upserts, EXCLUDED included: the value is re-bound to the row it lands in.
INSERT INTO people VALUES (99, 'bob@example.org', 'Bobby') ON CONFLICT (email) DO UPDATE SET name = EXCLUDED.name RETURNING id, email, name;
INSERT INTO people VALUES (2, 'robert@example.org', 'Robert') ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email RETURNING id, email;
INSERT INTO people VALUES (3, 'x@example.org', 'X') ON CONFLICT DO NOTHING;
INSERT INTO people VALUES (5, 'cy@example.org', 'Cy2') ON CONFLICT (email) DO NOTHING;
SELECT id, email, name FROM people WHERE id IN (2, 3, 5, 99) ORDER BY id;
-- A value copied to another row is re-bound to that row.
CREATE TEMP TABLE moved AS SELECT email FROM people WHERE id = 11;
UPDATE people SET email = 'user1.new@example.org' WHERE id = 11;
UPDATE people SET email = (SELECT email FROM moved) WHERE id = 12;
SELECT id, email FROM people WHERE id IN (11, 12) ORDER BY id;
-- UNIQUE still holds (through the blind index; the detail shows no plaintext).
SELECT detail_of($q$INSERT INTO people VALUES (50, 'cy@example.org', 'dup')$q$);
DELETE FROM people WHERE email = 'user5@example.org' RETURNING id;
-- The blind index is an ordinary btree index.
SET enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT id FROM people WHERE email = 'cy@example.org';
RESET enable_seqscan;
-- What the blind index's output shows instead of plaintext cannot be read back as a
-- search value (a query deparsed to text, as Citus and postgres_fdw send it, fails
-- rather than matching nothing); other text, "blind:" included, is a plaintext.
SELECT error_of($q$SELECT id FROM people WHERE email = '(unsealed)'$q$);
SELECT error_of($q$SELECT id FROM people WHERE email = 'blind:0123456789abcdef0123456789abcdef'$q$);
SELECT count(*) FROM people WHERE email = 'blind:not hex';
-- Only equality: keyed hashes have no order a plaintext would recognise.
SELECT error_of($q$SELECT id FROM people WHERE email > 'b'$q$);
SELECT error_of($q$SELECT id FROM people WHERE email OPERATOR(envelope.>) 'b'$q$);
-- Refused when planned, so also when the blind index would answer it (the btree compares
-- with its cmp function, never calling the operator), and between two stored values.
SET enable_seqscan = off;
SELECT error_of($q$SELECT id FROM people WHERE email OPERATOR(envelope.>) 'b'$q$);
SELECT error_of($q$SELECT id FROM people WHERE email OPERATOR(envelope.<=) 'b'$q$);
SELECT error_of($q$SELECT a.id FROM people a JOIN people b ON a.email OPERATOR(envelope.<) b.email$q$);
RESET enable_seqscan;
-- ORDER BY, GROUP BY and DISTINCT still run (by keyed hash, through the btree's cmp).
SELECT count(*) FROM (SELECT email FROM people ORDER BY email) s;
SELECT count(*) FROM (SELECT email FROM people GROUP BY email) s;
SELECT count(DISTINCT email) = count(email) AS distinct_ok FROM people;
RESET ROLE;

-- Stored: ciphertext only, for every non-NULL value; NULL stays NULL.
SELECT count(*) FILTER (WHERE envelope.is_sealed(email)) AS sealed, count(*) FILTER (WHERE email IS NULL) AS nulls,
       count(*) AS total FROM people;
-- The superuser holds no grant on pk_app: the column reads as ciphertext (so its pg_dump and COPY TO carry ciphertext).
SELECT id, ct(email::text) AS ciphertext FROM people WHERE id <= 3 ORDER BY id;
SELECT envelope.unseal(email) FROM people WHERE id = 1;  -- an explicit unseal is the superuser's own call
SELECT envelope.grant_key('pk_app', current_user::text::regrole, 'decrypt');
SELECT email FROM people WHERE id = 1;
SELECT envelope.revoke_key('pk_app', current_user::text::regrole, 'decrypt');
SELECT ct(email::text) FROM people WHERE id = 1;
-- A role without decrypt reads ciphertext, never an error, and may not search by plaintext.
SET ROLE regress_pc_nobody;
SELECT id, ct(email::text) FROM people WHERE id = 1;
SELECT error_of($q$SELECT id FROM people WHERE email = 'cy@example.org'$q$);
SELECT error_of($q$INSERT INTO people VALUES (60, 'n@example.org', 'n')$q$);
RESET ROLE;
-- A writer with encrypt only can insert and update, and reads ciphertext.
SET ROLE regress_pc_writer;
INSERT INTO people VALUES (61, 'w@example.org', 'w') RETURNING ct(email::text);
UPDATE people SET name = 'ww' WHERE id = 61;
RESET ROLE;
SET ROLE regress_pc_reader;
SELECT email FROM people WHERE id = 61;
RESET ROLE;
-- Sealed input is kept as it is: a dump's or COPY's ciphertext is never encrypted twice.
CREATE TEMP TABLE saved AS SELECT id, email::text AS stored FROM people WHERE id IN (1, 2);
DELETE FROM people WHERE id IN (1, 2);
INSERT INTO people SELECT id, stored, 'restored' FROM saved;
SELECT p.email::text = s.stored AS kept FROM people p JOIN saved s USING (id) ORDER BY id;
SET ROLE regress_pc_reader;
SELECT id, email FROM people WHERE id IN (1, 2) ORDER BY id;
RESET ROLE;
-- The CHECK keeps plaintext out even when the trigger does not run.
ALTER TABLE people DISABLE TRIGGER ALL;
SELECT error_of($q$INSERT INTO people VALUES (70, 'plain@example.org', 'p')$q$);
DO $$ BEGIN
  EXECUTE (SELECT format('ALTER TABLE people ENABLE ALWAYS TRIGGER %I', tgname) FROM pg_trigger
            WHERE tgrelid = 'people'::regclass AND NOT tgisinternal);
END $$;
SELECT * FROM protection_of('people') WHERE kind LIKE 'trigger%';
-- A sealed value of another column is refused by the check, then re-bound by the trigger.
CREATE TABLE other (id bigint PRIMARY KEY, email text);
SELECT envelope.protect_column('other', 'email', 'pk_app', context_column => 'id');
INSERT INTO other SELECT id, stored FROM saved;
GRANT SELECT ON other TO regress_pc_reader;
SET ROLE regress_pc_reader;
SELECT id, email FROM other ORDER BY id;
SELECT error_of($q$SELECT count(*) FROM people p JOIN other o ON o.email = p.email$q$);
RESET ROLE;
-- Tampering is detected: a flipped byte reads as an error for a reader, never as other plaintext.
UPDATE other SET email = overlay(email::text PLACING (CASE WHEN substr(email::text, length(email::text) - 4, 1) = 'A'
  THEN 'B' ELSE 'A' END) FROM length(email::text) - 4 FOR 1) WHERE id = 1;
SELECT error_of($q$UPDATE other SET email = 'penv1:AAAA' WHERE id = 2$q$);
SET ROLE regress_pc_reader;
SELECT error_of($q$SELECT email::text FROM other WHERE id = 1$q$);
SELECT email FROM other WHERE id = 2;
RESET ROLE;

-- Bad calls.
SELECT error_of($q$SELECT envelope.protect_column('people', 'email', 'pk_app')$q$);
SELECT error_of($q$SELECT envelope.protect_column('people', 'id', 'pk_app')$q$);
SELECT error_of($q$SELECT envelope.protect_column('people', 'nope', 'pk_app')$q$);
SELECT error_of($q$SELECT envelope.protect_column('people', 'name', 'no_such_key')$q$);
SELECT error_of($q$SELECT envelope.protect_column('people', 'name', 'pk_app', context_column => 'name')$q$);
SELECT error_of($q$SELECT envelope.protect_column('people', 'name', 'tenant_{}')$q$);
SELECT error_of($q$SELECT envelope.protect_column('people', 'name', 'pk_app', key_column => 'id')$q$);
SELECT error_of($q$SELECT envelope.protect_column('people', 'name', 'pk_app', blind_bytes => 4)$q$);
SELECT error_of($q$SELECT envelope.protect_column('people', 'name', 'pk_tenant_{}', key_column => 'id')$q$);
SELECT error_of($q$SELECT envelope.protect_column(NULL, 'name', 'pk_app')$q$);
CREATE VIEW people_v AS SELECT * FROM people;
SELECT error_of($q$SELECT envelope.protect_column('people_v', 'name', 'pk_app')$q$);
CREATE TABLE keyed (code text PRIMARY KEY, h text);
CREATE INDEX keyed_h_hash ON keyed USING hash (h);
SELECT error_of($q$SELECT envelope.protect_column('keyed', 'code', 'pk_app')$q$);
SELECT error_of($q$SELECT envelope.protect_column('keyed', 'h', 'pk_app')$q$);
SET ROLE regress_pc_owner;
SELECT error_of($q$SELECT envelope.protect_column('keyed', 'h', 'pk_app')$q$);
SELECT error_of($q$SELECT envelope.protect_column('people', 'name', 'pk_other')$q$);
SELECT error_of($q$SELECT envelope.unprotect_column('people', 'name')$q$);
SELECT error_of($q$CALL envelope.seal_rows('keyed', 'h')$q$);
RESET ROLE;
SELECT error_of($q$SELECT envelope.unprotect_column('keyed', 'h')$q$);
BEGIN;
SELECT error_of($q$CALL envelope.seal_rows('people', 'email')$q$);
ROLLBACK;

-- Per-row keys: the key comes from another column, the blind index from one column key.
CREATE TABLE notes (id bigint PRIMARY KEY, tenant int NOT NULL, body jsonb, blob bytea);
SELECT envelope.protect_column('notes', 'body', 'pk_tenant_{}', key_column => 'tenant', blind_key => 'pk_blind', context_column => 'id');
SELECT envelope.protect_column('notes', 'blob', 'pk_app', context_column => 'id', blind_index => false);
INSERT INTO notes VALUES (1, 1, '{"a": 1, "b": [1, 2]}', '\x0102'), (2, 2, '{"a": 2}', '\x'), (3, 1, NULL, NULL);
SELECT error_of($q$INSERT INTO notes VALUES (4, 3, '{"a": 3}', NULL)$q$);
SELECT id, ct(body::text) AS body_sealed, ct(blob::text) AS blob_sealed FROM notes ORDER BY id;
-- ANALYZE (autovacuum's too) of a column without a blind index compares no value: only
-- the null fraction and the width; with one, the blind index gives the distinct count.
ANALYZE notes;
SELECT attname, null_frac, avg_width > 0 AS has_width, n_distinct FROM pg_stats
 WHERE schemaname = 'public' AND tablename = 'notes' AND attname IN ('body', 'blob') ORDER BY attname;
GRANT SELECT, UPDATE ON notes TO regress_pc_reader;
SELECT envelope.grant_key('pk_tenant_1', 'regress_pc_reader', 'decrypt');
SET ROLE regress_pc_reader;
SELECT id, ct(body::text) AS body_sealed, CASE WHEN ct(body::text) THEN '<sealed>' ELSE body::text END AS body, blob
  FROM notes ORDER BY id;
SELECT error_of($q$SELECT id FROM notes WHERE body = '{"a": 1}'$q$);
RESET ROLE;
SELECT envelope.grant_key('pk_blind', 'regress_pc_reader', 'decrypt');
SET ROLE regress_pc_reader;
SELECT id FROM notes WHERE body = '{"b": [1, 2], "a": 1}';
RESET ROLE;
-- Moving a row to another tenant re-binds it under that tenant's key.
UPDATE notes SET tenant = 2 WHERE id = 1;
SET ROLE regress_pc_reader;
SELECT id, ct(body::text) AS body_sealed FROM notes WHERE id = 1;
RESET ROLE;
SELECT envelope.grant_key('pk_tenant_2', 'regress_pc_reader', 'decrypt');
SET ROLE regress_pc_reader;
SELECT id, body FROM notes WHERE id = 1;
RESET ROLE;

-- A populated table: protected at once, existing rows sealed by seal_rows in short transactions.
CREATE TABLE legacy (id int PRIMARY KEY, ssn varchar(20) UNIQUE);
INSERT INTO legacy SELECT g, 'ssn-' || g FROM generate_series(1, 500) g;
SELECT envelope.protect_column('legacy', 'ssn', 'pk_app');
SELECT state, rows_sealed, pending_indexes FROM envelope.protected_columns WHERE tbl = 'legacy'::regclass;
SELECT * FROM protection_of('legacy');
SELECT count(*) FILTER (WHERE envelope.is_sealed(ssn)) AS sealed, count(*) AS total FROM legacy;
INSERT INTO legacy VALUES (501, 'ssn-501');
CALL envelope.seal_rows('legacy', 'ssn', batch_blocks => 1, rebuild_indexes => true);
SELECT state, rows_sealed, rows_total, percent, pending_indexes FROM envelope.protected_columns WHERE tbl = 'legacy'::regclass;
SELECT count(*) FILTER (WHERE envelope.is_sealed(ssn)) AS sealed, count(*) AS total FROM legacy;
SELECT convalidated FROM pg_constraint WHERE conrelid = 'legacy'::regclass AND contype = 'c';
SELECT * FROM protection_of('legacy');
SELECT error_of($q$INSERT INTO legacy VALUES (502, 'ssn-7')$q$);
SELECT envelope.unseal(ssn) FROM legacy WHERE id = 7;
-- varchar(20) keeps its limit (counted in characters, as varchar does).
SELECT error_of($q$INSERT INTO legacy VALUES (503, repeat('x', 21))$q$);
INSERT INTO legacy VALUES (503, repeat('é', 20));
CALL envelope.seal_rows('legacy', 'ssn');  -- nothing left: a no-op

-- Indexes given back later: by hand (kept), or by a later call with rebuild_indexes.
CREATE TABLE legacy2 (id int PRIMARY KEY, code text UNIQUE, tag text);
CREATE INDEX legacy2_code_tag ON legacy2 (code, tag);
INSERT INTO legacy2 SELECT g, 'code-' || g, 't' FROM generate_series(1, 200) g;
SELECT envelope.protect_column('legacy2', 'code', 'pk_app');
CALL envelope.seal_rows('legacy2', 'code');
SELECT state, pending_indexes FROM envelope.protected_columns WHERE tbl = 'legacy2'::regclass;
CREATE INDEX legacy2_code_tag ON legacy2 (code, tag);
CALL envelope.seal_rows('legacy2', 'code', rebuild_indexes => true);
SELECT state, pending_indexes FROM envelope.protected_columns WHERE tbl = 'legacy2'::regclass;
SELECT * FROM protection_of('legacy2') WHERE kind = 'index';
SELECT error_of($q$INSERT INTO legacy2 VALUES (201, 'code-5')$q$);

-- Schema changes an ORM's sync could make are refused on a protected column; others pass.
SELECT error_of($q$ALTER TABLE legacy ALTER COLUMN ssn TYPE varchar(20)$q$);
SELECT error_of($q$ALTER TABLE legacy RENAME COLUMN ssn TO ssn2$q$);
ALTER TABLE legacy ADD COLUMN note text;
ALTER TABLE legacy RENAME COLUMN note TO remark;
-- An index for LIKE is dropped (it could not serve a protected column), not duplicated.
CREATE TABLE django_like (id int PRIMARY KEY, email varchar(254) UNIQUE);
CREATE INDEX django_like_email_like ON django_like (email varchar_pattern_ops);
SELECT envelope.protect_column('django_like', 'email', 'pk_app');
SELECT * FROM protection_of('django_like') WHERE kind = 'index';
-- Dropping a protected column or table takes its trigger and registry row along.
ALTER TABLE django_like DROP COLUMN email;
SELECT * FROM protection_of('django_like');
INSERT INTO django_like VALUES (1);
SELECT count(*) FROM envelope.protected_column WHERE tbl = 'django_like'::regclass;
CREATE TABLE dropped (id int, secret text);
SELECT envelope.protect_column('dropped', 'secret', 'pk_app');
SELECT count(*) FROM envelope.protected_column;
DROP TABLE dropped;
SELECT count(*) FROM envelope.protected_column;

-- The way out: plaintext again, indexes back on the plain type.
SELECT envelope.unprotect_column('legacy', 'ssn');
SELECT * FROM protection_of('legacy');
SELECT ssn FROM legacy WHERE id = 7;
SELECT count(*) FROM legacy WHERE ssn = 'ssn-501';
SELECT count(*) FROM envelope.protected_columns WHERE tbl = 'legacy'::regclass;

-- Every suite leaves the database as it found it.
DROP VIEW people_v;
DROP TABLE people, other, keyed, notes, legacy, legacy2, django_like;
DROP OWNED BY regress_pc_owner, regress_pc_reader, regress_pc_writer, regress_pc_nobody;
DROP ROLE regress_pc_owner, regress_pc_reader, regress_pc_writer, regress_pc_nobody;
DROP FUNCTION public.error_of(text), public.detail_of(text), public.ct(text), public.protection_of(regclass);
DROP EXTENSION pg_envelope;
