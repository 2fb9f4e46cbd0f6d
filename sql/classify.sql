-- Data classification: envelope.classify()/unclassify() (a security label of provider
-- pg_envelope on the column), the views classified_columns and unprotected_columns,
-- luhn_valid() and the scanner suggest_classification() (docs/access.md).
CREATE EXTENSION pg_envelope;
\set VERBOSITY default
\set SHOW_CONTEXT never
CREATE FUNCTION public.error_of(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE q;
  RETURN 'no error';
EXCEPTION WHEN others THEN
  RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
-- This suite's labels as the catalog holds them (schema cls only).
CREATE FUNCTION public.cls_labels() RETURNS TABLE (objname text, provider text, label text) LANGUAGE sql AS $$
  SELECT objname, provider, label FROM pg_seclabels
   WHERE objtype = 'column' AND objname LIKE 'cls.%' ORDER BY objname COLLATE "C" $$;
-- The views, this suite's rows only, in a stable order.
CREATE FUNCTION public.classified() RETURNS TABLE (tbl regclass, col name, label text, data_type text, status text) LANGUAGE sql AS $$
  SELECT tbl, col, label, data_type, status FROM envelope.classified_columns
   WHERE tbl::text LIKE 'cls.%' ORDER BY tbl::text COLLATE "C", col::text COLLATE "C" $$;
CREATE FUNCTION public.unprotected() RETURNS TABLE (tbl regclass, col name, label text, data_type text) LANGUAGE sql AS $$
  SELECT tbl, col, label, data_type FROM envelope.unprotected_columns
   WHERE tbl::text LIKE 'cls.%' ORDER BY tbl::text COLLATE "C", col::text COLLATE "C" $$;

CREATE ROLE regress_envelope_cls_owner;
CREATE ROLE regress_envelope_cls_other;
CREATE ROLE regress_envelope_cls_partial;
CREATE SCHEMA cls AUTHORIZATION regress_envelope_cls_owner;
GRANT USAGE ON SCHEMA cls TO regress_envelope_cls_other, regress_envelope_cls_partial;
SELECT envelope.create_key('ck_app') AS version;
SELECT envelope.grant_key('ck_app', 'regress_envelope_cls_owner', 'encrypt');
GRANT EXECUTE ON FUNCTION envelope.protect_column(regclass, name, text, name, name, boolean, integer, text),
  envelope.unprotect_column(regclass, name) TO regress_envelope_cls_owner;
GRANT EXECUTE ON PROCEDURE envelope.seal_rows(regclass, name, integer, integer, boolean) TO regress_envelope_cls_owner;

-- Labels: set, replace, remove; as the table's owner (no grant needed: PUBLIC may call).
SET ROLE regress_envelope_cls_owner;
CREATE TABLE cls.customers (id bigint PRIMARY KEY, email text, phone text, notes text, card text, created date);
SELECT envelope.classify('cls.customers', 'email', 'pii');
SELECT envelope.classify('cls.customers', 'card', 'pci');
SELECT envelope.classify('cls.customers', 'notes', 'public');
SELECT envelope.classify('cls.customers', 'created', 'confidential');
SELECT * FROM cls_labels();
SELECT * FROM classified();
SELECT * FROM unprotected();
-- Replacing a label keeps one label per column.
SELECT envelope.classify('cls.customers', 'email', 'phi');
SELECT envelope.classify('cls.customers', 'email', 'secret');
SELECT * FROM cls_labels();
-- Removing: the label is gone; removing a label that is not there is not an error.
SELECT envelope.unclassify('cls.customers', 'created');
SELECT envelope.unclassify('cls.customers', 'created');
SELECT envelope.unclassify('cls.customers', 'phone');
SELECT * FROM classified();

-- Refused: labels outside the list (case counts), null, unknown and system columns.
SELECT error_of($q$SELECT envelope.classify('cls.customers', 'phone', 'restricted')$q$);
SELECT error_of($q$SELECT envelope.classify('cls.customers', 'phone', 'PII')$q$);
SELECT error_of($q$SELECT envelope.classify('cls.customers', 'phone', '')$q$);
SELECT error_of($q$SELECT envelope.classify('cls.customers', 'phone', NULL)$q$);
SELECT error_of($q$SELECT envelope.classify('cls.customers', 'no_such_col', 'pii')$q$);
SELECT error_of($q$SELECT envelope.unclassify('cls.customers', 'no_such_col')$q$);
SELECT error_of($q$SELECT envelope.classify('cls.customers', 'ctid', 'pii')$q$);
SELECT error_of($q$SELECT envelope.classify('cls.no_such_table', 'email', 'pii')$q$);
SELECT error_of($q$SELECT envelope.classify(NULL, 'email', 'pii')$q$);
-- Nothing of the refused calls was stored.
SELECT * FROM cls_labels();

-- SECURITY LABEL by hand goes through the same check: the label list, columns only.
SECURITY LABEL FOR pg_envelope ON COLUMN cls.customers.phone IS 'pii';
SELECT error_of($q$SECURITY LABEL FOR pg_envelope ON COLUMN cls.customers.phone IS 'restricted'$q$);
SELECT error_of($q$SECURITY LABEL FOR pg_envelope ON TABLE cls.customers IS 'pii'$q$);
SELECT error_of($q$SECURITY LABEL FOR pg_envelope ON SCHEMA cls IS 'pii'$q$);
SELECT error_of($q$SECURITY LABEL FOR pg_envelope ON TABLE cls.customers IS NULL$q$);
SELECT * FROM classified();
SECURITY LABEL FOR pg_envelope ON COLUMN cls.customers.phone IS NULL;
SELECT * FROM cls_labels();
RESET ROLE;

-- Another role, even one that may read and write the table, may not label it (42501),
-- neither through the functions nor by hand; it may read the views (metadata only).
GRANT SELECT, INSERT, UPDATE ON cls.customers TO regress_envelope_cls_other;
SET ROLE regress_envelope_cls_other;
SELECT error_of($q$SELECT envelope.classify('cls.customers', 'phone', 'pii')$q$);
SELECT error_of($q$SELECT envelope.classify('cls.customers', 'email', 'public')$q$);
SELECT error_of($q$SELECT envelope.unclassify('cls.customers', 'email')$q$);
SELECT error_of($q$SECURITY LABEL FOR pg_envelope ON COLUMN cls.customers.email IS NULL$q$);
SELECT error_of($q$SECURITY LABEL FOR pg_envelope ON COLUMN cls.customers.phone IS 'pii'$q$);
SELECT * FROM classified();
SELECT * FROM unprotected();
RESET ROLE;
SELECT * FROM cls_labels();

-- The views before and after protect_column: sealing (rows still plaintext), protected
-- once seal_rows is done, plaintext again after unprotect_column; the label stays.
SET ROLE regress_envelope_cls_owner;
CREATE TABLE cls.accounts (id bigint PRIMARY KEY, email text, iban text, nickname text);
INSERT INTO cls.accounts VALUES (1, 'ann@example.org', 'GB82WEST12345698765432', 'annie'),
                                (2, 'bob@example.org', 'DE89370400440532013000', 'bobby');
SELECT envelope.classify('cls.accounts', 'email', 'pii');
SELECT envelope.classify('cls.accounts', 'iban', 'pii');
SELECT envelope.classify('cls.accounts', 'nickname', 'public');
SELECT * FROM classified() WHERE tbl = 'cls.accounts'::regclass;
SELECT * FROM unprotected() WHERE tbl = 'cls.accounts'::regclass;
SELECT envelope.protect_column('cls.accounts', 'email', 'ck_app', context_column => 'id');
SELECT * FROM classified() WHERE tbl = 'cls.accounts'::regclass;
SELECT * FROM unprotected() WHERE tbl = 'cls.accounts'::regclass;
CALL envelope.seal_rows('cls.accounts', 'email');
SELECT * FROM classified() WHERE tbl = 'cls.accounts'::regclass;
SELECT * FROM unprotected() WHERE tbl = 'cls.accounts'::regclass;
-- A column protected on an empty table is protected at once.
CREATE TABLE cls.fresh (id bigint PRIMARY KEY, ssn text);
SELECT envelope.classify('cls.fresh', 'ssn', 'pii');
SELECT * FROM unprotected() WHERE tbl = 'cls.fresh'::regclass;
SELECT envelope.protect_column('cls.fresh', 'ssn', 'ck_app', context_column => 'id');
SELECT * FROM classified() WHERE tbl = 'cls.fresh'::regclass;
SELECT * FROM unprotected() WHERE tbl = 'cls.fresh'::regclass;
-- (unprotect_column as the superuser, as protect.sql does: it reads the plaintext back.)
RESET ROLE;
SELECT envelope.unprotect_column('cls.accounts', 'email');
SET ROLE regress_envelope_cls_owner;
SELECT * FROM classified() WHERE tbl = 'cls.accounts'::regclass;
SELECT * FROM unprotected() WHERE tbl = 'cls.accounts'::regclass;

-- An encrypted_* column is 'encrypted' (only ciphertext at rest), not in the report.
CREATE TABLE cls.vault (id int, token envelope.encrypted_text, blob envelope.encrypted_bytea, plain_token text);
SELECT envelope.classify('cls.vault', 'token', 'secret');
SELECT envelope.classify('cls.vault', 'blob', 'confidential');
SELECT envelope.classify('cls.vault', 'plain_token', 'secret');
SELECT * FROM classified() WHERE tbl = 'cls.vault'::regclass;
SELECT * FROM unprotected() WHERE tbl = 'cls.vault'::regclass;

-- The label follows the column: renames of the column and of the table keep it, and
-- DROP COLUMN / DROP TABLE remove it from the catalog.
SELECT envelope.classify('cls.customers', 'phone', 'pii');
ALTER TABLE cls.customers RENAME COLUMN phone TO mobile;
ALTER TABLE cls.customers RENAME TO clients;
SELECT * FROM classified() WHERE tbl = 'cls.clients'::regclass;
SELECT count(*) AS phone_labels FROM pg_seclabel
 WHERE provider = 'pg_envelope' AND objoid = 'cls.clients'::regclass
   AND objsubid = (SELECT attnum FROM pg_attribute WHERE attrelid = 'cls.clients'::regclass AND attname = 'mobile');
CREATE TEMP TABLE card_attnum AS
  SELECT attnum FROM pg_attribute WHERE attrelid = 'cls.clients'::regclass AND attname = 'card';
ALTER TABLE cls.clients DROP COLUMN card;
SELECT count(*) AS dropped_column_labels FROM pg_seclabel
 WHERE provider = 'pg_envelope' AND objoid = 'cls.clients'::regclass AND objsubid = (SELECT attnum FROM card_attnum);
SELECT * FROM classified() WHERE tbl = 'cls.clients'::regclass;
-- A new column of the same name starts unlabelled.
ALTER TABLE cls.clients ADD COLUMN card text;
SELECT * FROM classified() WHERE tbl = 'cls.clients'::regclass;
DROP TABLE card_attnum;
CREATE TABLE cls.doomed (id int, secret_answer text);
SELECT envelope.classify('cls.doomed', 'secret_answer', 'secret');
CREATE TEMP TABLE doomed_oid AS SELECT 'cls.doomed'::regclass::oid AS oid;
DROP TABLE cls.doomed;
SELECT count(*) AS dropped_table_labels FROM pg_seclabel WHERE objoid = (SELECT oid FROM doomed_oid);
DROP TABLE doomed_oid;
RESET ROLE;

-- luhn_valid: digits, spaces and dashes; 13 to 19 digits; the Luhn checksum.
SELECT v, envelope.luhn_valid(v) FROM (VALUES
  ('4111111111111111'),        -- Visa test number
  ('4111 1111 1111 1111'),
  ('4111-1111-1111-1111'),
  ('5555555555554444'),        -- Mastercard test number
  ('5105105105105100'),
  ('378282246310005'),         -- American Express, 15 digits
  ('6011111111111117'),        -- Discover
  ('4222222222222'),           -- 13 digits
  ('4111111111111111110'),     -- 19 digits
  ('4111111111111112'),        -- last digit off
  ('1234567812345678'),
  ('401288888888188'),
  ('79927398713'),             -- Luhn-valid, 11 digits: too short
  ('400000000002'),            -- Luhn-valid, 12 digits: too short
  ('40000000000000000002'),    -- Luhn-valid, 20 digits: too long
  ('4111x111111111111'),
  ('card 4111111111111111'),
  (' 4111111111111111'),
  ('4111111111111111 '),
  ('abcdefghijklmnop'),
  ('')) AS t(v);
SELECT envelope.luhn_valid(NULL) IS NULL AS null_is_null;

-- The scanner: unlabelled columns that look sensitive by name or by sampled content.
SET ROLE regress_envelope_cls_owner;
CREATE TABLE cls.people (
  id bigint,
  email_address text,        -- name and content: email
  contact text,              -- content: email
  mobile text,               -- name: phone (content is not phone-shaped)
  reference text,            -- content: phone numbers
  tax text,                  -- content: SSN shape
  payment text,              -- content: Luhn-valid card numbers
  acct text,                 -- content: IBANs
  birthdate date,            -- name: date of birth (not sampled: not text)
  ssn varchar(11),           -- name: national identifier
  pan text,                  -- name: payment card
  diagnosis text,            -- name: health data
  password_hash text,        -- name: credential
  surname text,              -- name: person name
  halfmail text,             -- content: exactly half the sample is emails
  fewmail text,              -- content: a quarter only
  sparse text,               -- content: emails and NULLs (NULLs are not sampled)
  "Weird ""Col"" Name" text, -- content: emails (quoted identifier)
  created_on text,           -- dates in text: not phone numbers
  remarks text,              -- free text
  qty text,                  -- short numbers
  pancake text,              -- must not hit
  setting text,              -- must not hit
  amount numeric             -- nothing
);
INSERT INTO cls.people VALUES
 (1, 'a1@example.org', 'c1@example.com', 'call me', '+44 20 7946 0958', '123-45-6789', '4111111111111111',
  'GB82WEST12345698765432', '1980-01-01', '078-05-1120', 'x', 'flu', 'h1', 'Smith',
  'h1@example.org', 'f1@example.org', 's1@example.org', 'w1@example.org',
  '2024-01-15', 'Delivered on time, thanks!', '42', 'maple syrup', 'dark mode', 10.5),
 (2, 'a2@example.org', 'c2@example.com', 'evenings', '(555) 123-4567', '219-09-9999', '5555 5555 5555 4444',
  'DE89 3704 0044 0532 0130 00', '1990-02-02', '219-09-9999', 'y', 'cold', 'h2', 'Jones',
  'h2@example.org', 'no', 's2@example.org', 'w2@example.org',
  '2024-02-29', 'Left at the door', '7', 'blueberry', 'light mode', 3),
 (3, 'a3@example.org', 'c3@example.com', 'never', '555-123-4568', '457-55-5462', '378282246310005',
  'FR1420041010050500013M02606', '2000-03-03', '457-55-5462', 'z', 'none', 'h3', 'Brown',
  'no', 'no', NULL, 'w3@example.org',
  '2023-12-31', 'Call before 5pm', '1234', 'plain', 'compact', 0),
 (4, 'a4@example.org', 'c4@example.com', 'weekends', '+1 202 555 0143', '001-01-0001', '6011-1111-1111-1117',
  'NL91ABNA0417164300', '2010-04-04', '001-01-0001', 'w', 'asthma', 'h4', 'Green',
  'no', 'no', NULL, 'w4@example.org',
  '2022-06-30', 'n/a', '99999', 'chocolate', 'wide', 1);
SELECT column_name, suggested_label, reason, sampled, matched
  FROM envelope.suggest_classification('cls.people') ORDER BY relation::text, column_name::text COLLATE "C";
-- The same table, names only: nothing is read (sampled and matched are NULL).
SELECT column_name, suggested_label, reason, sampled, matched
  FROM envelope.suggest_classification('cls.people', 0) ORDER BY relation::text, column_name::text COLLATE "C";
-- A smaller sample reads at most sample_rows non-null values.
SELECT column_name, suggested_label, sampled, matched
  FROM envelope.suggest_classification('cls.people', sample_rows => 2)
 WHERE column_name IN ('contact', 'payment') ORDER BY column_name::text COLLATE "C";
SELECT error_of($q$SELECT * FROM envelope.suggest_classification('cls.people', -1)$q$);
SELECT error_of($q$SELECT * FROM envelope.suggest_classification('cls.people', NULL)$q$);
-- Labelled columns are not suggested again (a 'public' label counts as reviewed).
SELECT envelope.classify('cls.people', 'email_address', 'pii');
SELECT envelope.classify('cls.people', 'contact', 'public');
SELECT count(*) AS still_suggested FROM envelope.suggest_classification('cls.people')
 WHERE column_name IN ('email_address', 'contact');
-- Protected columns (an envelope type) are not sampled or suggested.
SELECT count(*) AS fresh_suggestions FROM envelope.suggest_classification('cls.fresh');
-- Every table of the database the caller may read, default arguments.
SELECT relation, count(*) AS columns FROM envelope.suggest_classification()
 WHERE relation::text LIKE 'cls.%' GROUP BY relation ORDER BY relation::text COLLATE "C";
RESET ROLE;

-- Runs as the caller: a role that may SELECT some columns gets suggestions for those only,
-- from names and from the sample it may read; a role that may read nothing gets nothing.
GRANT SELECT (id, tax, payment, surname, pancake) ON cls.people TO regress_envelope_cls_partial;
SET ROLE regress_envelope_cls_partial;
SELECT error_of($q$SELECT email_address FROM cls.people$q$);
SELECT relation, column_name, suggested_label, reason, sampled, matched
  FROM envelope.suggest_classification() ORDER BY relation::text, column_name::text COLLATE "C";
SELECT relation, column_name, suggested_label, reason, sampled, matched
  FROM envelope.suggest_classification('cls.people') ORDER BY column_name::text COLLATE "C";
RESET ROLE;
SET ROLE regress_envelope_cls_other;
SELECT count(*) AS suggestions FROM envelope.suggest_classification('cls.people');
-- ... and it cannot label the columns the scanner shows to others either.
SELECT error_of($q$SELECT envelope.classify('cls.people', 'tax', 'pii')$q$);
RESET ROLE;

-- Every suite leaves the database as it found it.
DROP TABLE cls.clients, cls.accounts, cls.fresh, cls.vault, cls.people;
DROP SCHEMA cls;
SELECT count(*) AS labels_left FROM pg_seclabel WHERE provider = 'pg_envelope';
SELECT envelope.revoke_key('ck_app', 'regress_envelope_cls_owner', 'encrypt');
DROP OWNED BY regress_envelope_cls_owner, regress_envelope_cls_other, regress_envelope_cls_partial;
DROP ROLE regress_envelope_cls_owner, regress_envelope_cls_other, regress_envelope_cls_partial;
DROP FUNCTION public.error_of(text), public.cls_labels(), public.classified(), public.unprotected();
DROP EXTENSION pg_envelope;
