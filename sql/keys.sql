-- Key hierarchy: named keys, DEK versions, rotation, destruction.
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

SELECT envelope.create_key('k_alpha');
SELECT envelope.create_key('k_beta', kms => 'local', kek => 'tenant-kek/beta');
SELECT key_name, kms, kek, key_state, version, version_state, is_current
  FROM envelope.keys WHERE key_name LIKE 'k\_%' ORDER BY key_name, version;
-- Stored wrapped only: 61 bytes (format byte, nonce, wrapped DEK, tag), never 32 raw bytes.
SELECT k.name, octet_length(d.wrapped) AS wrapped_len
  FROM envelope.key k JOIN envelope.data_key d USING (key_id) WHERE k.name LIKE 'k\_%' ORDER BY 1;
-- Key ids are positive and distinct; the view shows no key material.
SELECT count(DISTINCT key_id) = count(*) AS ids_distinct, bool_and(key_id > 0) AS ids_positive FROM envelope.key;
SELECT attname FROM pg_attribute WHERE attrelid = 'envelope.keys'::regclass AND attnum > 0 ORDER BY attnum;

-- Bad input to create_key.
SELECT envelope.create_key('k_alpha');
SELECT error_of($q$SELECT envelope.create_key('')$q$);
SELECT error_of($q$SELECT envelope.create_key('has space')$q$);
SELECT error_of($q$SELECT envelope.create_key(repeat('k', 64))$q$);
SELECT error_of($q$SELECT envelope.create_key('-leading-dash')$q$);
SELECT error_of($q$SELECT envelope.create_key(NULL)$q$);
SELECT envelope.create_key('k_gamma', kms => 'aws_prod');
SELECT error_of($q$SELECT envelope.create_key('k_gamma', kms => NULL)$q$);
SELECT error_of($q$SELECT envelope.create_key('k_gamma', kek => 'bad kek!')$q$);
SELECT error_of($q$SELECT envelope.create_key('k_gamma', kek => '')$q$);
SELECT count(*) AS no_partial_keys FROM envelope.key WHERE name = 'k_gamma';
-- A failed create inside a transaction leaves nothing behind; a rolled-back create is gone.
BEGIN;
SELECT envelope.create_key('k_rolled_back');
ROLLBACK;
SELECT count(*) AS rolled_back_keys FROM envelope.key WHERE name = 'k_rolled_back';

-- Different keys use different DEKs: a ciphertext names its own key, and swapping
-- wrapped DEKs between keys in the table is detected.
CREATE TABLE kv (name text, c envelope.encrypted_text);
INSERT INTO kv VALUES ('alpha', envelope.encrypt_field('secret alpha', 'k_alpha')),
                      ('beta', envelope.encrypt_field('secret beta', 'k_beta'));
SELECT name, envelope.decrypt_field(c) FROM kv ORDER BY name;
-- (format 2: key id in bytes 1-4, the DEK version in byte 5 while it is below 128)
SELECT substr(decode(substr(a.c::text, 6), 'base64'), 2, 5) <> substr(decode(substr(b.c::text, 6), 'base64'), 2, 5)
       AS different_dek_refs
  FROM kv a, kv b WHERE a.name = 'alpha' AND b.name = 'beta';

-- Rotation: new values use the new version, old values keep decrypting.
SELECT envelope.rotate_key('k_alpha');
INSERT INTO kv VALUES ('alpha v2', envelope.encrypt_field('secret alpha 2', 'k_alpha'));
SELECT name, envelope.decrypt_field(c),
       get_byte(decode(substr(c::text, 6), 'base64'), 5) AS dek_version
  FROM kv ORDER BY name;
SELECT key_name, version, version_state, is_current FROM envelope.keys WHERE key_name = 'k_alpha' ORDER BY version;
SELECT envelope.rotate_key('no_such_key');

-- Tampered key table: a wrapped DEK moved to another key does not unwrap, because
-- each wrap is bound to its key name, key id and version. (\c: a new backend has
-- an empty per-backend DEK cache.)
CREATE TABLE saved_wrap AS
  SELECT d.key_id, d.version, d.wrapped FROM envelope.data_key d JOIN envelope.key k USING (key_id)
   WHERE k.name = 'k_alpha' AND d.version = 1;
UPDATE envelope.data_key SET wrapped = (SELECT d.wrapped FROM envelope.data_key d JOIN envelope.key k USING (key_id)
                                         WHERE k.name = 'k_beta' AND d.version = 1)
 WHERE (key_id, version) = (SELECT key_id, version FROM saved_wrap);
-- (The shared DEK cache still holds the genuine DEK: flush it so the swapped row is read.)
SELECT envelope.cache_flush();
\c
SELECT envelope.decrypt_field(c) FROM kv WHERE name = 'alpha';
UPDATE envelope.data_key d SET wrapped = s.wrapped FROM saved_wrap s WHERE (d.key_id, d.version) = (s.key_id, s.version);
-- (A failed unwrap is remembered for a moment so the KMS is not hammered: flush.)
SELECT envelope.cache_flush();
\c
\set VERBOSITY default
\set SHOW_CONTEXT never
SELECT envelope.decrypt_field(c) FROM kv WHERE name = 'alpha';

-- Crypto-shredding: after destroy_key, values encrypted with the key can never be
-- decrypted (55000), encrypting with it fails, and no wrapped DEK remains.
SELECT envelope.destroy_key('k_beta');
SELECT name, envelope.decrypt_field(c) FROM kv WHERE name = 'beta';
SELECT error_of($q$SELECT envelope.encrypt_field('x', 'k_beta')$q$);
SELECT error_of($q$SELECT envelope.rotate_key('k_beta')$q$);
SELECT key_name, key_state, version, version_state FROM envelope.keys WHERE key_name = 'k_beta';
SELECT count(*) AS wrapped_deks_left FROM envelope.data_key d JOIN envelope.key k USING (key_id)
 WHERE k.name = 'k_beta' AND d.wrapped IS NOT NULL;
-- Other keys are unaffected.
SELECT name, envelope.decrypt_field(c) FROM kv WHERE name LIKE 'alpha%' ORDER BY name;
SELECT envelope.destroy_key('no_such_key');
-- A destroy that is rolled back destroys nothing.
BEGIN;
SELECT envelope.destroy_key('k_alpha');
ROLLBACK;
SELECT name, envelope.decrypt_field(c) FROM kv WHERE name = 'alpha';

-- disable_key: reversible. Decrypting, encrypting and rotating are refused (55000) at
-- once, also with the DEK already cached in this backend; enable_key undoes it.
SELECT envelope.disable_key('k_alpha');
SELECT error_of($q$SELECT envelope.decrypt_field(c) FROM kv WHERE name = 'alpha'$q$);
SELECT error_of($q$SELECT envelope.encrypt_field('x', 'k_alpha')$q$);
SELECT error_of($q$SELECT envelope.rotate_key('k_alpha')$q$);
SELECT DISTINCT key_state FROM envelope.keys WHERE key_name = 'k_alpha';
BEGIN;
SELECT envelope.enable_key('k_alpha');
ROLLBACK;
SELECT error_of($q$SELECT envelope.decrypt_field(c) FROM kv WHERE name = 'alpha'$q$);
SELECT envelope.enable_key('k_alpha');
SELECT name, envelope.decrypt_field(c) FROM kv WHERE name LIKE 'alpha%' ORDER BY name;
SELECT envelope.disable_key('no_such_key');
SELECT envelope.disable_key(NULL) IS NULL AS null_name_does_nothing;
SELECT error_of($q$SELECT envelope.disable_key('k_beta')$q$);
SELECT error_of($q$SELECT envelope.enable_key('k_beta')$q$);

-- Destroying twice changes nothing (destroyed_at keeps the first time); the name of a
-- destroyed key is never reused.
SELECT destroyed_at AS first_destroyed_at FROM envelope.key WHERE name = 'k_beta' \gset
SELECT envelope.destroy_key('k_beta');
SELECT destroyed_at = :'first_destroyed_at' AS destroyed_at_kept FROM envelope.key WHERE name = 'k_beta';
SELECT envelope.create_key('k_beta');

-- rewrap_key: every live DEK re-wrapped under another KEK without touching rows;
-- values keep decrypting (in a new backend, so the DEKs really are unwrapped again).
SELECT envelope.create_key('k_rw');
SELECT envelope.rotate_key('k_rw');
CREATE TABLE rw AS SELECT envelope.encrypt_field('rewrapped secret', 'k_rw') AS c;
SELECT d.wrapped AS wrapped_before FROM envelope.data_key d JOIN envelope.key k USING (key_id)
 WHERE k.name = 'k_rw' AND d.version = 2 \gset
SELECT envelope.rewrap_key('k_rw', 'kek-2026');
SELECT DISTINCT kek FROM envelope.keys WHERE key_name = 'k_rw';
SELECT d.wrapped <> :'wrapped_before'::bytea AS wrapped_changed FROM envelope.data_key d JOIN envelope.key k USING (key_id)
 WHERE k.name = 'k_rw' AND d.version = 2;
\c
SELECT envelope.decrypt_field(c) FROM rw;
SELECT envelope.rewrap_key('k_rw');
SELECT envelope.rewrap_key('k_rw', 'bad kek!');
SELECT envelope.rewrap_key('k_beta');
SELECT envelope.rewrap_key('no_such_key');

-- The shared DEK cache: a new backend finds the DEKs other backends unwrapped, and
-- cache_flush() empties it.
SELECT envelope.cache_flush();
SELECT entries FROM envelope.stats;
SELECT envelope.decrypt_field(c) FROM rw;
SELECT entries, kms_unwraps > 0 AS unwrapped FROM envelope.stats;
SELECT kms_unwraps AS unwraps_before FROM envelope.stats \gset
\c
SELECT envelope.decrypt_field(c) FROM rw;
SELECT kms_unwraps - :unwraps_before AS new_unwraps, hits > 0 AS hit FROM envelope.stats;
SELECT envelope.cache_flush();
SELECT entries FROM envelope.stats;

-- Per-key eviction: cache_evict() zeroes one key's shared entries and reports how
-- many there were; the other keys' DEKs stay cached.
SELECT envelope.decrypt_field(c) FROM rw;
SELECT envelope.decrypt_field(c) FROM kv WHERE name = 'alpha';
SELECT entries FROM envelope.stats;
SELECT envelope.cache_evict('k_rw') AS evicted;
SELECT entries FROM envelope.stats;
\c
SELECT kms_unwraps AS unwraps_before FROM envelope.stats \gset
SELECT envelope.decrypt_field(c) FROM kv WHERE name = 'alpha';
SELECT kms_unwraps - :unwraps_before AS new_unwraps FROM envelope.stats;
SELECT envelope.decrypt_field(c) FROM rw;
SELECT kms_unwraps - :unwraps_before AS new_unwraps FROM envelope.stats;
SELECT envelope.cache_evict('no_such_key');
SELECT envelope.cache_evict(NULL);

-- stats_reset() zeroes the counters (not the cache); KMS calls are counted and timed.
SELECT envelope.stats_reset();
SELECT entries, hits, misses, kms_calls, kms_unwraps, kms_errors, kms_time_ms, kms_avg_ms, kms_max_ms,
       stats_reset > now() - interval '1 minute' AS reset_just_now
  FROM envelope.stats;
SELECT envelope.cache_evict('k_rw') AS evicted;
\c
SELECT envelope.decrypt_field(c) FROM rw;
SELECT kms_calls, kms_unwraps, kms_errors, misses, kms_time_ms > 0 AS timed, kms_avg_ms = kms_time_ms AS avg_of_one,
       kms_max_ms = kms_time_ms AS max_of_one
  FROM envelope.stats;

-- Every suite leaves the database as it found it, so suites run alone and in any order.
DROP TABLE kv, saved_wrap, rw;
DROP FUNCTION public.error_of(text);
DROP EXTENSION pg_envelope;
