-- Without shared_preload_libraries: CREATE EXTENSION and the types' I/O work (so
-- dumps restore without keys); everything that needs the master key fails with
-- 55000 and a hint to preload.
\set VERBOSITY default
\set SHOW_CONTEXT never
CREATE EXTENSION pg_envelope;
SHOW shared_preload_libraries;
CREATE TABLE restored (id int, c envelope.encrypted_text);
INSERT INTO restored VALUES (1, 'env1:AQEAAAABAAAAAQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA');
SELECT c FROM restored;
SELECT '123-45-6789'::envelope.encrypted_text;
SELECT envelope.create_key('k');
SELECT envelope.encrypt_field('x', 'k');
SELECT envelope.encrypt_field('\x00'::bytea, 'k');
SELECT envelope.encrypt_field('{}'::jsonb, 'k');
SELECT envelope.decrypt_field(c) FROM restored;
SELECT envelope.rotate_key('k');
SELECT envelope.destroy_key('k');
-- NULL in, NULL out holds even here.
SELECT envelope.decrypt_field(NULL::envelope.encrypted_text) IS NULL AS null_out;
-- The SQLSTATE is 55000 (object_not_in_prerequisite_state) for each of them.
DO $$
DECLARE
  q text;
  state text;
BEGIN
  FOREACH q IN ARRAY ARRAY[
    $q$SELECT envelope.create_key('k')$q$,
    $q$SELECT envelope.encrypt_field('x', 'k')$q$,
    $q$SELECT envelope.decrypt_field(c) FROM restored$q$,
    $q$SELECT envelope.rotate_key('k')$q$,
    $q$SELECT envelope.destroy_key('k')$q$] LOOP
    BEGIN
      EXECUTE q;
      state := 'no error';
    EXCEPTION WHEN others THEN
      state := SQLSTATE;
    END;
    RAISE NOTICE '% -> %', q, state;
  END LOOP;
END $$;
