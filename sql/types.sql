-- Type input/output: the canonical text form round-trips exactly and needs no key;
-- anything that is not a well-formed envelope is rejected with 22P02 without
-- echoing the value.
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


-- Plaintext by mistake: rejected, and the message does not contain the value.
SELECT '123-45-6789'::envelope.encrypted_text;
SELECT error_of($q$SELECT '123-45-6789'::envelope.encrypted_bytea$q$);
SELECT error_of($q$SELECT '{"ssn": "123-45-6789"}'::envelope.encrypted_jsonb$q$);
SELECT error_of($q$SELECT ''::envelope.encrypted_text$q$);
-- The prefix alone, invalid base64, whitespace, non-canonical padding bits.
SELECT error_of($q$SELECT 'env1:'::envelope.encrypted_text$q$);
SELECT error_of($q$SELECT 'env1:not base64!'::envelope.encrypted_text$q$);
SELECT error_of($q$SELECT 'env1:QUJD RA=='::envelope.encrypted_text$q$);
SELECT error_of($q$SELECT 'env1:QR=='::envelope.encrypted_text$q$);
-- Well-formed base64 but too short to be an envelope (format 1: 37 bytes; format 2:
-- 33 bytes, and 34 bytes whose 2-byte DEK version leaves no room for the tag).
SELECT error_of(format('SELECT %L::envelope.encrypted_text',
  'env1:' || encode('\x01010000000100000001000000000000000000000000000000000000000000000000000000'::bytea, 'base64')));
SELECT error_of(format('SELECT %L::envelope.encrypted_text',
  'env1:' || encode('\x020000000101000000000000000000000000000000000000000000000000000000'::bytea, 'base64')));
SELECT error_of(format('SELECT %L::envelope.encrypted_text',
  'env1:' || encode('\x02000000018101000000000000000000000000000000000000000000000000000000'::bytea, 'base64')));
-- Format 2 DEK versions: zero, a longer encoding than needed (0x81 0x00 for 1), more
-- than five bytes, and above 2^32 - 1 are malformed.
SELECT error_of(format('SELECT %L::envelope.encrypted_text',
  'env1:' || encode('\x0200000001000000000000000000000000000000000000000000000000000000000000'::bytea, 'base64')));
SELECT error_of(format('SELECT %L::envelope.encrypted_text',
  'env1:' || encode('\x020000000181000000000000000000000000000000000000000000000000000000000000'::bytea, 'base64')));
SELECT error_of(format('SELECT %L::envelope.encrypted_text',
  'env1:' || encode('\x02000000018181818181010000000000000000000000000000000000000000000000000000000000'::bytea, 'base64')));
SELECT error_of(format('SELECT %L::envelope.encrypted_text',
  'env1:' || encode('\x0200000001ffffffff1f0000000000000000000000000000000000000000000000000000000000'::bytea, 'base64')));
-- Right length, unknown format version / algorithm / zero key id.
SELECT error_of(format('SELECT %L::envelope.encrypted_text',
  'env1:' || encode('\x030100000001000000010000000000000000000000000000000000000000000000000000000000'::bytea, 'base64')));
SELECT error_of(format('SELECT %L::envelope.encrypted_text',
  'env1:' || encode('\x010900000001000000010000000000000000000000000000000000000000000000000000000000'::bytea, 'base64')));
SELECT error_of(format('SELECT %L::envelope.encrypted_text',
  'env1:' || encode('\x010100000000000000010000000000000000000000000000000000000000000000000000000000'::bytea, 'base64')));

-- A structurally valid envelope (format 1, 38 bytes: empty ciphertext) is accepted without any
-- key and prints back byte for byte; the same holds for the other two types.
SELECT 'env1:AQEAAAABAAAAAQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'::envelope.encrypted_text;
SELECT 'env1:AQEAAAABAAAAAQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'::envelope.encrypted_bytea::text
     = 'env1:AQEAAAABAAAAAQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' AS bytea_round_trip;
SELECT 'env1:AQEAAAABAAAAAQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'::envelope.encrypted_jsonb::text
     = 'env1:AQEAAAABAAAAAQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' AS jsonb_round_trip;
-- The same in format 2 (34 bytes: key id 1, version 1, empty ciphertext; its text form
-- keeps the "env1:" prefix, which names the text encoding), and with the largest DEK
-- version (5 bytes of LEB128, 38 bytes).
SELECT encode('\x02000000010100000000000000000000000000000000000000000000000000000000'::bytea, 'base64') AS v2_base64 \gset
SELECT ('env1:' || :'v2_base64')::envelope.encrypted_text::text = 'env1:' || :'v2_base64' AS v2_round_trip,
       octet_length(decode(substr(('env1:' || :'v2_base64')::envelope.encrypted_text::text, 6), 'base64')) AS v2_bytes;
SELECT encode('\x0200000001ffffffff0f0000000000000000000000000000000000000000000000000000000000'::bytea, 'base64') AS v2max \gset
SELECT ('env1:' || :'v2max')::envelope.encrypted_bytea::text = 'env1:' || :'v2max' AS v2_max_version_round_trip;

-- Binary send/receive through COPY (FORMAT binary) round-trips every value exactly.
SELECT envelope.create_key('types_key');
CREATE TABLE typed (id int, t envelope.encrypted_text, b envelope.encrypted_bytea, j envelope.encrypted_jsonb);
INSERT INTO typed
  SELECT g, envelope.encrypt_field('value ' || g, 'types_key'),
            envelope.encrypt_field(convert_to('bytes ' || g, 'UTF8'), 'types_key'),
            envelope.encrypt_field(jsonb_build_object('n', g), 'types_key')
    FROM generate_series(1, 20) g;
-- (\copy: through the client, so it works against any server, local or not.)
\getenv abs_builddir PG_ABS_BUILDDIR
\set copy_file :abs_builddir '/results/typed.bin'
\copy typed TO :'copy_file' (FORMAT binary)
CREATE TABLE typed_copy (LIKE typed);
\copy typed_copy FROM :'copy_file' (FORMAT binary)
SELECT count(*) AS rows_identical
  FROM typed a JOIN typed_copy b USING (id)
 WHERE a.t::text = b.t::text AND a.b::text = b.b::text AND a.j::text = b.j::text;
SELECT count(*) AS decrypt_after_binary_copy
  FROM typed_copy
 WHERE envelope.decrypt_field(t) = 'value ' || id
   AND envelope.decrypt_field(b) = convert_to('bytes ' || id, 'UTF8')
   AND envelope.decrypt_field(j) = jsonb_build_object('n', id);
-- Text COPY as well.
\set copy_text :abs_builddir '/results/typed.txt'
COPY typed TO :'copy_text';
TRUNCATE typed_copy;
COPY typed_copy FROM :'copy_text';
SELECT count(*) AS text_copy_identical
  FROM typed a JOIN typed_copy b USING (id)
 WHERE a.t::text = b.t::text AND a.b::text = b.b::text AND a.j::text = b.j::text;

-- Storage: ciphertext is never compressed (STORAGE external).
SELECT typname, typstorage FROM pg_type WHERE typname LIKE 'encrypted_%' ORDER BY typname;

-- Every suite leaves the database as it found it, so suites run alone and in any order.
DROP TABLE typed, typed_copy;
DROP FUNCTION public.error_of(text);
DROP EXTENSION pg_envelope;
