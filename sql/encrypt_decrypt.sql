-- encrypt_field / decrypt_field for all three types.
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
-- Flip one bit of byte `pos` of an envelope's binary form.
CREATE FUNCTION pg_temp.flip(c text, pos int) RETURNS text LANGUAGE sql AS $$
  SELECT 'env1:' || translate(encode(set_byte(b, pos, get_byte(b, pos) # 1), 'base64'), E'\n', '')
    FROM (SELECT decode(substr(c, 6), 'base64') AS b) s
$$;

SELECT envelope.create_key('tenant_42');

-- The example from the README.
CREATE TABLE patients (id bigint PRIMARY KEY, ssn envelope.encrypted_text);
INSERT INTO patients VALUES (1, envelope.encrypt_field('123-45-6789', 'tenant_42'));
SELECT envelope.decrypt_field(ssn) FROM patients;
-- At rest: the canonical ciphertext form, never the plaintext.
SELECT ssn::text LIKE 'env1:%' AS is_ciphertext, position('123-45-6789' IN ssn::text) AS plaintext_at
  FROM patients;
-- Overhead: 34 bytes per value in format 2, the default (1-byte format, 4-byte key id,
-- 1-byte DEK version below 128, 12-byte nonce, 16-byte tag); 38 in format 1 (22-byte
-- header + 16-byte tag), which envelope.format_version = 1 writes.
SELECT octet_length(ssn::text) AS text_form_len,
       octet_length(decode(substr(ssn::text, 6), 'base64')) - octet_length('123-45-6789') AS overhead
  FROM patients;
SET envelope.format_version = 1;
SELECT octet_length(decode(substr(envelope.encrypt_field('123-45-6789', 'tenant_42')::text, 6), 'base64'))
         - octet_length('123-45-6789') AS format_1_overhead;
RESET envelope.format_version;
SELECT error_of('SET envelope.format_version = 3');

-- Round trips: text (empty, ASCII, multibyte UTF-8, 1 MB), bytea (empty, all byte
-- values, 1 MB), jsonb (scalar, nested, unicode).
CREATE TABLE samples_text (id int, v text);
INSERT INTO samples_text VALUES
  (1, ''), (2, 'a'), (3, '123-45-6789'), (4, 'Zoë Ångström — 東京都 🚑 Ελλάδα'),
  (5, repeat('x', 1048576)), (6, repeat('日本', 300000)), (7, E'tab\there\nnewline \\ backslash');
SELECT id, envelope.decrypt_field(envelope.encrypt_field(v, 'tenant_42')) = v AS round_trip,
       octet_length(v) AS bytes
  FROM samples_text ORDER BY id;

CREATE TABLE samples_bytea (id int, v bytea);
INSERT INTO samples_bytea VALUES
  (1, ''::bytea), (2, '\x00'::bytea),
  (3, (SELECT string_agg(set_byte('\x00'::bytea, 0, g), ''::bytea) FROM generate_series(0, 255) g)),
  (4, convert_to(repeat('0123456789abcdef', 65536), 'UTF8'));
SELECT id, envelope.decrypt_field(envelope.encrypt_field(v, 'tenant_42')) = v AS round_trip,
       octet_length(v) AS bytes
  FROM samples_bytea ORDER BY id;

CREATE TABLE samples_jsonb (id int, v jsonb);
INSERT INTO samples_jsonb VALUES
  (1, '{}'), (2, '[]'), (3, 'null'), (4, '"just a string"'), (5, '42.5'),
  (6, '{"patient": {"name": "Zoë", "allergies": ["penicillin", {"severity": [1, 2, {"deep": true}]}]}, "n": null}'),
  (7, (SELECT jsonb_agg(jsonb_build_object('i', g, 'name', 'name ' || g)) FROM generate_series(1, 5000) g));
SELECT id, envelope.decrypt_field(envelope.encrypt_field(v, 'tenant_42')) = v AS round_trip
  FROM samples_jsonb ORDER BY id;
SELECT envelope.decrypt_field(envelope.encrypt_field(v, 'tenant_42')) FROM samples_jsonb WHERE id = 6;

-- Return types follow the input type.
SELECT pg_typeof(envelope.encrypt_field('x'::text, 'tenant_42')),
       pg_typeof(envelope.encrypt_field('\x01'::bytea, 'tenant_42')),
       pg_typeof(envelope.encrypt_field('{}'::jsonb, 'tenant_42')),
       pg_typeof(envelope.decrypt_field(envelope.encrypt_field('x'::text, 'tenant_42'))),
       pg_typeof(envelope.decrypt_field(envelope.encrypt_field('\x01'::bytea, 'tenant_42'))),
       pg_typeof(envelope.decrypt_field(envelope.encrypt_field('{}'::jsonb, 'tenant_42')));

-- NULL in, NULL out; a NULL key name is an error.
SELECT envelope.encrypt_field(NULL::text, 'tenant_42') IS NULL AS enc_null,
       envelope.encrypt_field(NULL::bytea, 'tenant_42') IS NULL AS enc_null_bytea,
       envelope.encrypt_field(NULL::jsonb, 'tenant_42') IS NULL AS enc_null_jsonb,
       envelope.decrypt_field(NULL::envelope.encrypted_text) IS NULL AS dec_null,
       envelope.decrypt_field(NULL::envelope.encrypted_jsonb, 'ctx') IS NULL AS dec_null_ctx;
SELECT envelope.encrypt_field('x', NULL);

-- Randomized: the same plaintext never gives the same ciphertext.
SELECT count(DISTINCT envelope.encrypt_field('same plaintext', 'tenant_42')::text) AS distinct_ciphertexts
  FROM generate_series(1, 1000);
SELECT count(DISTINCT substr(decode(substr(envelope.encrypt_field('same', 'tenant_42')::text, 6), 'base64'), 11, 12))
       AS distinct_nonces
  FROM generate_series(1, 1000);

-- Context binds a ciphertext to a row: the right context decrypts, any other (or
-- none) fails, never returning wrong plaintext.
CREATE TABLE bound (id int PRIMARY KEY, ssn envelope.encrypted_text);
INSERT INTO bound SELECT g, envelope.encrypt_field('ssn-' || g, 'tenant_42', g::text) FROM generate_series(1, 3) g;
SELECT id, envelope.decrypt_field(ssn, id::text) FROM bound ORDER BY id;
SELECT envelope.decrypt_field(ssn, '2') FROM bound WHERE id = 1;
SELECT error_of($q$SELECT envelope.decrypt_field(ssn) FROM bound WHERE id = 1$q$);
SELECT error_of($q$SELECT envelope.decrypt_field(ssn, '') FROM bound WHERE id = 1$q$);
-- An empty context is a context: distinct from no context at all.
SELECT error_of($q$SELECT envelope.decrypt_field(envelope.encrypt_field('v', 'tenant_42', ''))$q$);
SELECT envelope.decrypt_field(envelope.encrypt_field('v', 'tenant_42', ''), '');
-- A ciphertext copied to another row fails there.
UPDATE bound SET ssn = (SELECT ssn FROM bound WHERE id = 1) WHERE id = 3;
SELECT error_of($q$SELECT envelope.decrypt_field(ssn, id::text) FROM bound WHERE id = 3$q$);

-- The type is authenticated: a text ciphertext relabelled as bytea or jsonb fails.
SELECT error_of($q$SELECT envelope.decrypt_field(envelope.encrypt_field('x', 'tenant_42')::text::envelope.encrypted_bytea)$q$);
SELECT error_of($q$SELECT envelope.decrypt_field(envelope.encrypt_field('"x"'::jsonb, 'tenant_42')::text::envelope.encrypted_text)$q$);

-- Tampering: flipping any single bit anywhere in the envelope is detected. Format 2
-- (the default, 14 + 34 bytes): byte 0 (format) and byte 5 (the DEK version 1 becomes
-- 0) make it malformed (22P02), bytes 1..4 name a DEK that does not exist (42704), and
-- every other byte fails authentication (22000).
CREATE TABLE tamper AS SELECT envelope.encrypt_field('attack at dawn', 'tenant_42')::text AS c;
SELECT pos, split_part(error_of(format('SELECT envelope.decrypt_field(%L::envelope.encrypted_text)',
                                               pg_temp.flip(c, pos))), ':', 1) AS sqlstate
  FROM tamper, generate_series(0, 47) pos
 ORDER BY pos;
SELECT envelope.decrypt_field(pg_temp.flip(c, 30)::envelope.encrypted_text) FROM tamper;
-- Truncated by one byte: still a well-formed envelope, but the tag no longer matches.
SELECT error_of(format('SELECT envelope.decrypt_field(%L::envelope.encrypted_text)',
  'env1:' || translate(encode(substr(decode(substr(c, 6), 'base64'), 1, 47), 'base64'), E'\n', ''))) FROM tamper;
-- Format 1 (14 + 38 bytes), as written with envelope.format_version = 1: bytes 0, 1 and
-- 9 make it malformed (22P02), bytes 2..8 name a DEK that does not exist (42704), and
-- every other byte fails authentication (22000).
SET envelope.format_version = 1;
CREATE TABLE tamper1 AS SELECT envelope.encrypt_field('attack at dawn', 'tenant_42')::text AS c;
RESET envelope.format_version;
SELECT pos, split_part(error_of(format('SELECT envelope.decrypt_field(%L::envelope.encrypted_text)',
                                               pg_temp.flip(c, pos))), ':', 1) AS sqlstate
  FROM tamper1, generate_series(0, 51) pos
 ORDER BY pos;
SELECT envelope.decrypt_field(c::envelope.encrypted_text) AS format_1_decrypts FROM tamper1;

-- Unknown key names when encrypting; unknown DEK references when decrypting.
SELECT envelope.encrypt_field('x', 'no_such_key');
SELECT error_of($q$SELECT envelope.encrypt_field('x'::bytea, '')$q$);
SELECT envelope.decrypt_field('env1:AQEAAAABAAAAAQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'::envelope.encrypted_text);

-- Unique value per row at scale, and a full-table decrypt check.
CREATE TABLE many AS
  SELECT g AS id, envelope.encrypt_field('row ' || g, 'tenant_42', g::text) AS c FROM generate_series(1, 10000) g;
SELECT count(*) FILTER (WHERE envelope.decrypt_field(c, id::text) = 'row ' || id) AS ok, count(*) AS total FROM many;

-- Functions are marked truthfully.
SELECT p.oid::regprocedure AS function, p.provolatile, p.proisstrict, p.proparallel
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'envelope' AND p.proname IN ('encrypt_field', 'decrypt_field', 'create_key', 'rotate_key', 'destroy_key')
 ORDER BY p.oid::regprocedure::text;

-- Every suite leaves the database as it found it, so suites run alone and in any order.
DROP TABLE patients, samples_text, samples_bytea, samples_jsonb, bound, tamper, tamper1, many;
DROP FUNCTION public.error_of(text);
DROP EXTENSION pg_envelope;
