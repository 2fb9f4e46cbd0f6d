-- Decrypted text must be valid in the database encoding. A value encrypted in a
-- LATIN1 database and moved, with its key rows, into this UTF8 database is refused
-- with 22021 instead of returning invalid text (or quoting it in a JSON error).
CREATE EXTENSION pg_envelope;
\set VERBOSITY default
\set SHOW_CONTEXT never
-- Returns the SQLSTATE and message of the error a statement raises.
CREATE FUNCTION public.error_of(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE q;
  RETURN 'no error';
EXCEPTION WHEN others THEN
  RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
SELECT current_database() AS orig_db \gset
CREATE DATABASE regress_latin1 TEMPLATE template0 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C';
\c regress_latin1
CREATE EXTENSION pg_envelope;
SELECT envelope.create_key('k_latin1');
-- 'Zoë' in LATIN1 is 5a 6f eb: not valid UTF8.
SELECT envelope.encrypt_field('Zo' || chr(235), 'k_latin1')::text AS latin1_ct \gset
SELECT envelope.encrypt_field(('{"name": "Zo' || chr(235) || '"}')::jsonb, 'k_latin1')::text AS latin1_json_ct \gset
SELECT envelope.encrypt_field('plain ascii', 'k_latin1')::text AS ascii_ct \gset
SELECT key_id, name, kms, kek, current_version FROM envelope.key WHERE name = 'k_latin1' \gset key_
SELECT encode(wrapped, 'hex') AS wrapped_hex FROM envelope.data_key WHERE key_id = :key_key_id \gset
\c :orig_db
\set VERBOSITY default
\set SHOW_CONTEXT never
INSERT INTO envelope.key (key_id, name, kms, kek, current_version)
  VALUES (:key_key_id, :'key_name', :'key_kms', :'key_kek', :key_current_version);
INSERT INTO envelope.data_key (key_id, version, wrapped) VALUES (:key_key_id, 1, decode(:'wrapped_hex', 'hex'));
SELECT envelope.decrypt_field(:'ascii_ct'::envelope.encrypted_text) AS ascii_decrypts;
SELECT envelope.decrypt_field(:'latin1_ct'::envelope.encrypted_text);
SELECT envelope.decrypt_field(:'latin1_json_ct'::envelope.encrypted_jsonb);
\set VERBOSITY sqlstate
SELECT envelope.decrypt_field(:'latin1_ct'::envelope.encrypted_text);
\set VERBOSITY default
DELETE FROM envelope.data_key WHERE key_id = :key_key_id;
DELETE FROM envelope.key WHERE key_id = :key_key_id;
DROP DATABASE regress_latin1;

-- Every suite leaves the database as it found it, so suites run alone and in any order.
DROP FUNCTION public.error_of(text);
DROP EXTENSION pg_envelope;
