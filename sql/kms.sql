-- KMS configuration: create_kms / alter_kms / drop_kms and their validation. No
-- network is needed here: the KMS-backed round trips run against the emulators in
-- test/integration.
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

SELECT name, provider, options, keys FROM envelope.kms_configs ORDER BY name;

SELECT envelope.create_kms('vault', 'vault-transit', '{"address": "http://127.0.0.1:9", "mount": "transit"}');
SELECT envelope.create_kms('aws_prod', 'aws-kms', '{"region": "us-east-1", "endpoint": "http://127.0.0.1:9"}');
SELECT envelope.create_kms('aws_default', 'aws-kms', '{"region": "eu-west-1"}');
SELECT name, provider, options, keys FROM envelope.kms_configs ORDER BY name;

-- Secrets never go into SQL.
SELECT envelope.create_kms('v2', 'vault-transit', '{"address": "https://vault:8200", "token": "s.abc"}');
SELECT error_of($q$SELECT envelope.create_kms('a2', 'aws-kms', '{"region": "us-east-1", "secret_access_key": "x"}')$q$);
SELECT error_of($q$SELECT envelope.create_kms('a2', 'aws-kms', '{"region": "us-east-1", "AccessKeyId": "x"}')$q$);
-- https only, except to loopback.
SELECT envelope.create_kms('v3', 'vault-transit', '{"address": "http://vault.internal:8200"}');
SELECT error_of($q$SELECT envelope.create_kms('v3', 'vault-transit', '{"address": "not a url"}')$q$);
-- Other bad input.
SELECT envelope.create_kms('v4', 'vault-transit', '{"adress": "https://vault:8200"}');
SELECT error_of($q$SELECT envelope.create_kms('v4', 'vault-transit', '{}')$q$);
SELECT error_of($q$SELECT envelope.create_kms('v4', 'vault-transit', '{"address": 8200}')$q$);
SELECT error_of($q$SELECT envelope.create_kms('v4', 'vault-transit', '[1, 2]')$q$);
SELECT error_of($q$SELECT envelope.create_kms('v4', 'hsm-kms', '{}')$q$);
SELECT error_of($q$SELECT envelope.create_kms('v4', 'local', '{}')$q$);
SELECT error_of($q$SELECT envelope.create_kms('local', 'vault-transit', '{"address": "https://v"}')$q$);
SELECT error_of($q$SELECT envelope.create_kms('vault', 'vault-transit', '{"address": "https://v"}')$q$);
SELECT error_of($q$SELECT envelope.create_kms('bad name!', 'vault-transit', '{"address": "https://v"}')$q$);
SELECT error_of($q$SELECT envelope.create_kms(NULL, 'vault-transit', '{}')$q$);
SELECT error_of($q$SELECT envelope.create_kms('aws_bad', 'aws-kms', '{"region": "us east 1"}')$q$);
SELECT count(*) AS nothing_half_created FROM envelope.kms WHERE name LIKE 'v_' OR name LIKE 'a_' OR name = 'aws_bad';

-- Remote KMSs need a named KEK.
SELECT envelope.create_key('k_no_kek', kms => 'vault');
SELECT error_of($q$SELECT envelope.create_key('k_bad_kek', kms => 'vault', kek => 'has space')$q$);

-- A KMS that cannot be reached: a clear error within the retry budget, nothing stored,
-- and the backend stays healthy.
-- Credentials from files, which the server writes here into its data directory with
-- mode 0600 (fake credentials: nothing listens where they are sent).
SELECT current_setting('data_directory') || '/pg_envelope_regress_vault.token' AS token_file,
       current_setting('data_directory') || '/pg_envelope_regress_aws.credentials' AS aws_file \gset
SELECT 'umask 077 && cat > ' || quote_literal(:'token_file') AS write_token,
       'umask 077 && cat > ' || quote_literal(:'aws_file') AS write_aws \gset
COPY (SELECT 'hvs.not-a-real-token') TO PROGRAM :'write_token';
COPY (VALUES ('[default]'), ('aws_access_key_id = AKIDEXAMPLE'), ('aws_secret_access_key = not-a-real-secret'))
  TO PROGRAM :'write_aws';
SELECT envelope.alter_kms('vault', jsonb_build_object('address', 'http://127.0.0.1:9', 'token_file', :'token_file'));
SELECT envelope.alter_kms('aws_prod', jsonb_build_object('region', 'us-east-1', 'endpoint', 'http://127.0.0.1:9',
                                                         'credentials_file', :'aws_file'));
SET envelope.kms_retry_budget = '300ms';
-- (The DETAIL gives the attempts and time taken, which vary; only the message is shown.)
SELECT error_of($q$SELECT envelope.create_key('k_down', kms => 'vault', kek => 'tenant-7')$q$);
SELECT error_of($q$SELECT envelope.create_key('k_down', kms => 'aws_prod', kek => 'alias/x')$q$);
SELECT count(*) AS no_key_rows FROM envelope.key WHERE name = 'k_down';
SELECT 1 AS backend_alive;
RESET envelope.kms_retry_budget;

-- alter_kms validates like create_kms and replaces the options.
SELECT envelope.alter_kms('vault', '{"address": "http://127.0.0.1:9", "mount": "transit2", "namespace": "team-a"}');
SELECT options FROM envelope.kms_configs WHERE name = 'vault';
SELECT error_of($q$SELECT envelope.create_key('k_down', kms => 'vault', kek => 'tenant-7')$q$);
SELECT error_of($q$SELECT envelope.alter_kms('vault', '{"address": "http://example.com"}')$q$);
SELECT error_of($q$SELECT envelope.alter_kms('nope', '{}')$q$);
SELECT error_of($q$SELECT envelope.alter_kms('local', '{}')$q$);

-- drop_kms: refused while a key uses the KMS (checked in test/integration), allowed otherwise.
SELECT envelope.drop_kms('aws_default');
SELECT error_of($q$SELECT envelope.drop_kms('aws_default')$q$);
SELECT error_of($q$SELECT envelope.drop_kms('local')$q$);
SELECT name FROM envelope.kms_configs ORDER BY name;

-- Configuring a KMS is for superusers only, even with EXECUTE granted: it decides
-- where the server's credentials are sent and which files are read as tokens.
CREATE ROLE regress_kms_admin;
GRANT EXECUTE ON FUNCTION envelope.create_kms(text, text, jsonb), envelope.alter_kms(text, jsonb) TO regress_kms_admin;
SET ROLE regress_kms_admin;
SELECT envelope.create_kms('exfil', 'vault-transit', '{"address": "http://127.0.0.1:9", "token_file": "/etc/passwd"}');
SELECT envelope.alter_kms('vault', '{"address": "http://127.0.0.1:9"}');
RESET ROLE;
DROP OWNED BY regress_kms_admin;
DROP ROLE regress_kms_admin;

-- Every suite leaves the database as it found it, so suites run alone and in any order.
SELECT 'rm -f ' || quote_literal(:'token_file') || ' ' || quote_literal(:'aws_file') AS rm_credentials \gset
COPY (SELECT) TO PROGRAM :'rm_credentials';
DROP FUNCTION public.error_of(text);
DROP EXTENSION pg_envelope;
