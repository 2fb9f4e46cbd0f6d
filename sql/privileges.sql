-- Least privilege: PUBLIC can use the types but cannot read key tables, encrypt,
-- decrypt or manage keys until granted.
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
CREATE ROLE regress_envelope_app;
CREATE ROLE regress_envelope_reader;
CREATE ROLE regress_envelope_nobody;
GRANT CREATE ON SCHEMA public TO regress_envelope_app, regress_envelope_reader, regress_envelope_nobody;

-- What PUBLIC may execute in schema envelope: only the type I/O functions.
SELECT p.oid::regprocedure AS function
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'envelope' AND has_function_privilege('regress_envelope_nobody', p.oid, 'EXECUTE')
 ORDER BY p.oid::regprocedure::text;
SELECT c.relname, has_table_privilege('regress_envelope_nobody', c.oid, 'SELECT') AS can_select
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'envelope' AND c.relkind IN ('r', 'v') ORDER BY 1;
-- The SECURITY DEFINER functions, each with search_path pinned (test_attacks.py attacks them).
SELECT p.oid::regprocedure AS security_definer_function, p.proconfig
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'envelope' AND p.prosecdef ORDER BY 1::text;

SELECT envelope.create_key('k_priv');
CREATE TABLE priv_data (id int, c envelope.encrypted_text);
INSERT INTO priv_data VALUES (1, envelope.encrypt_field('private value', 'k_priv'));
GRANT SELECT ON priv_data TO regress_envelope_nobody, regress_envelope_reader;

-- A role with no grants: can hold and read ciphertext, nothing more.
SET ROLE regress_envelope_nobody;
CREATE TABLE nobody_table (c envelope.encrypted_text);
INSERT INTO nobody_table SELECT c FROM priv_data;
SELECT c::text LIKE 'env1:%' AS sees_ciphertext FROM nobody_table;
SELECT envelope.decrypt_field(c) FROM priv_data;
SELECT envelope.encrypt_field('x', 'k_priv');
SELECT envelope.create_key('k_nobody');
SELECT * FROM envelope.key;
SELECT * FROM envelope.data_key;
SELECT * FROM envelope.keys;
SHOW envelope.master_key_file;
RESET ROLE;

-- Grants: an application role may encrypt; a reader may decrypt text only. Neither
-- can read the key tables, although the functions read them on their behalf. Two
-- layers: EXECUTE on the function, and the key privilege (grant_key) on the key.
GRANT EXECUTE ON FUNCTION envelope.encrypt_field(text, text, text) TO regress_envelope_app;
GRANT EXECUTE ON FUNCTION envelope.decrypt_field(envelope.encrypted_text, text) TO regress_envelope_reader;
-- EXECUTE alone is not enough:
SET ROLE regress_envelope_reader;
SELECT envelope.decrypt_field(c) FROM priv_data;
RESET ROLE;
SELECT envelope.grant_key('k_priv', 'regress_envelope_app', 'encrypt');
SELECT envelope.grant_key('k_*', 'regress_envelope_reader', 'decrypt');
SELECT pattern, grantee, privilege, granted_by = current_user::regrole AS granted_by_me FROM envelope.key_grants ORDER BY 1, 2, 3;
SET ROLE regress_envelope_app;
CREATE TABLE app_table (c envelope.encrypted_text);
INSERT INTO app_table VALUES (envelope.encrypt_field('from the app', 'k_priv'));
SELECT envelope.decrypt_field(c) FROM app_table;
SELECT envelope.encrypt_field('\x00'::bytea, 'k_priv');
SELECT count(*) FROM envelope.data_key;
RESET ROLE;
GRANT SELECT ON app_table TO regress_envelope_reader;
SET ROLE regress_envelope_reader;
SELECT envelope.decrypt_field(c) FROM priv_data;
SELECT envelope.decrypt_field(c) FROM app_table;
SELECT envelope.encrypt_field('x', 'k_priv');
SELECT count(*) FROM envelope.key;
-- A hostile search_path cannot redirect the internal key lookups: they name
-- envelope.* tables and OPERATOR(pg_catalog.=) explicitly. Here the reader shadows
-- "=" for integers and text with operators that match everything, ahead of pg_catalog.
RESET ROLE;
CREATE SCHEMA regress_evil AUTHORIZATION regress_envelope_reader;
SET ROLE regress_envelope_reader;
CREATE FUNCTION regress_evil.always(integer, integer) RETURNS boolean LANGUAGE sql AS 'SELECT true';
CREATE FUNCTION regress_evil.always(text, text) RETURNS boolean LANGUAGE sql AS 'SELECT true';
CREATE OPERATOR regress_evil.= (LEFTARG = integer, RIGHTARG = integer, FUNCTION = regress_evil.always);
CREATE OPERATOR regress_evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = regress_evil.always);
CREATE TABLE regress_evil.key (key_id int, name text, kms text, kek text, state text, current_version int);
SET search_path = regress_evil, pg_catalog, public;
SELECT 1 = 2 AS evil_operator_active;
\c -
SET ROLE regress_envelope_reader;
SET search_path = regress_evil, pg_catalog, public;
SELECT envelope.decrypt_field(c) FROM public.priv_data;
RESET search_path;
RESET ROLE;

DROP SCHEMA regress_evil CASCADE;
DROP TABLE nobody_table, app_table;
DROP OWNED BY regress_envelope_app, regress_envelope_reader, regress_envelope_nobody;
DROP ROLE regress_envelope_app, regress_envelope_reader, regress_envelope_nobody;

-- Every suite leaves the database as it found it, so suites run alone and in any order.
DROP TABLE priv_data;
DROP FUNCTION public.error_of(text);
DROP EXTENSION pg_envelope;
