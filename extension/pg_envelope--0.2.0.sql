-- pg_envelope 0.2.0 install script. Everything lives in schema "envelope".
\echo Use "CREATE EXTENSION pg_envelope" to load this file. \quit

-- First of all: refuse a schema "envelope" that this extension did not create (a
-- role that made it beforehand could add objects beside ours, e.g. an
-- encrypt_field(varchar, varchar) that captures plaintext). See check_own_schema in
-- src/sql/internal_functions.cpp.
CREATE FUNCTION envelope.check_own_schema() RETURNS void
  AS 'MODULE_PATHNAME', 'envelope_check_own_schema' LANGUAGE C;
SELECT envelope.check_own_schema();
DROP FUNCTION envelope.check_own_schema();

-- Types are usable by everyone; keys and plaintext are not.
GRANT USAGE ON SCHEMA envelope TO PUBLIC;

------------------------------------------------------------------------------
-- Encrypted column types. One shared set of C I/O functions; the SQL types differ so
-- that each decrypts to its own plain type (the type is also bound into the AAD).
------------------------------------------------------------------------------
CREATE TYPE envelope.encrypted_text;
CREATE TYPE envelope.encrypted_bytea;
CREATE TYPE envelope.encrypted_jsonb;

CREATE FUNCTION envelope.encrypted_text_in(cstring, oid, integer) RETURNS envelope.encrypted_text
  AS 'MODULE_PATHNAME', 'envelope_encrypted_in' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION envelope.encrypted_text_out(envelope.encrypted_text) RETURNS cstring
  AS 'MODULE_PATHNAME', 'envelope_encrypted_out' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION envelope.encrypted_text_recv(internal, oid, integer) RETURNS envelope.encrypted_text
  AS 'MODULE_PATHNAME', 'envelope_encrypted_recv' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION envelope.encrypted_text_send(envelope.encrypted_text) RETURNS bytea
  AS 'MODULE_PATHNAME', 'envelope_encrypted_send' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION envelope.encrypted_bytea_in(cstring, oid, integer) RETURNS envelope.encrypted_bytea
  AS 'MODULE_PATHNAME', 'envelope_encrypted_in' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION envelope.encrypted_bytea_out(envelope.encrypted_bytea) RETURNS cstring
  AS 'MODULE_PATHNAME', 'envelope_encrypted_out' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION envelope.encrypted_bytea_recv(internal, oid, integer) RETURNS envelope.encrypted_bytea
  AS 'MODULE_PATHNAME', 'envelope_encrypted_recv' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION envelope.encrypted_bytea_send(envelope.encrypted_bytea) RETURNS bytea
  AS 'MODULE_PATHNAME', 'envelope_encrypted_send' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION envelope.encrypted_jsonb_in(cstring, oid, integer) RETURNS envelope.encrypted_jsonb
  AS 'MODULE_PATHNAME', 'envelope_encrypted_in' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION envelope.encrypted_jsonb_out(envelope.encrypted_jsonb) RETURNS cstring
  AS 'MODULE_PATHNAME', 'envelope_encrypted_out' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION envelope.encrypted_jsonb_recv(internal, oid, integer) RETURNS envelope.encrypted_jsonb
  AS 'MODULE_PATHNAME', 'envelope_encrypted_recv' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION envelope.encrypted_jsonb_send(envelope.encrypted_jsonb) RETURNS bytea
  AS 'MODULE_PATHNAME', 'envelope_encrypted_send' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- STORAGE = external: ciphertext does not compress, so never try; large values go
-- out of line at once.
CREATE TYPE envelope.encrypted_text (
  INPUT = envelope.encrypted_text_in, OUTPUT = envelope.encrypted_text_out,
  RECEIVE = envelope.encrypted_text_recv, SEND = envelope.encrypted_text_send,
  INTERNALLENGTH = VARIABLE, STORAGE = external, CATEGORY = 'U');
CREATE TYPE envelope.encrypted_bytea (
  INPUT = envelope.encrypted_bytea_in, OUTPUT = envelope.encrypted_bytea_out,
  RECEIVE = envelope.encrypted_bytea_recv, SEND = envelope.encrypted_bytea_send,
  INTERNALLENGTH = VARIABLE, STORAGE = external, CATEGORY = 'U');
CREATE TYPE envelope.encrypted_jsonb (
  INPUT = envelope.encrypted_jsonb_in, OUTPUT = envelope.encrypted_jsonb_out,
  RECEIVE = envelope.encrypted_jsonb_recv, SEND = envelope.encrypted_jsonb_send,
  INTERNALLENGTH = VARIABLE, STORAGE = external, CATEGORY = 'U');

------------------------------------------------------------------------------
-- Key tables. Extension configuration tables: pg_dump dumps their rows, so a restore
-- into a new database keeps every DEK reference (key_id, version) valid.
-- Wrapped DEKs only; nothing here decrypts anything without the KEK.
------------------------------------------------------------------------------
-- Configured KMSs. "local" is built in (the server's master key); the others are
-- reached over HTTPS. Options never hold secrets (create_kms refuses secret-looking
-- options): credentials come from the server's environment or files.
CREATE TABLE envelope.kms (
  name       text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_.-]{1,63}$'),
  provider   text NOT NULL CHECK (provider IN ('local', 'vault-transit', 'aws-kms', 'gcp-kms', 'azure-keyvault')),
  options    jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(options) = 'object'),
  created_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
INSERT INTO envelope.kms (name, provider) VALUES ('local', 'local');

CREATE TABLE envelope.key (
  key_id          integer PRIMARY KEY CHECK (key_id > 0),
  name            text NOT NULL UNIQUE
                  CHECK (name ~ '^[A-Za-z0-9_][A-Za-z0-9_.:@/-]{0,62}$'),
  kms             text NOT NULL DEFAULT 'local' REFERENCES envelope.kms (name),
  kek             text NOT NULL,
  state           text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'disabled', 'destroyed')),
  current_version integer NOT NULL CHECK (current_version >= 1),
  created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
  destroyed_at    timestamptz
);

CREATE TABLE envelope.data_key (
  key_id       integer NOT NULL REFERENCES envelope.key (key_id),
  version      integer NOT NULL CHECK (version >= 1),
  wrapped      bytea,
  state        text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'retired', 'destroyed')),
  created_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
  destroyed_at timestamptz,
  PRIMARY KEY (key_id, version),
  CHECK ((state = 'destroyed') = (wrapped IS NULL))
);

SELECT pg_catalog.pg_extension_config_dump('envelope.kms', $$WHERE name <> 'local'$$);
SELECT pg_catalog.pg_extension_config_dump('envelope.key', '');
SELECT pg_catalog.pg_extension_config_dump('envelope.data_key', '');

REVOKE ALL ON envelope.kms, envelope.key, envelope.data_key FROM PUBLIC;

------------------------------------------------------------------------------
-- Every change of the key tables (by the key functions, by hand, by pg_restore, or
-- applied by logical replication: the triggers are enabled ALWAYS) reaches every
-- backend at commit, and every physical standby when the commit is replayed: see
-- key_tables_changed in src/sql/internal_functions.cpp.
------------------------------------------------------------------------------
CREATE FUNCTION envelope.key_tables_changed() RETURNS trigger
  AS 'MODULE_PATHNAME', 'envelope_key_tables_changed' LANGUAGE C;
REVOKE ALL ON FUNCTION envelope.key_tables_changed() FROM PUBLIC;
CREATE TRIGGER key_changed AFTER INSERT OR UPDATE OR DELETE ON envelope.key
  FOR EACH ROW EXECUTE FUNCTION envelope.key_tables_changed();
CREATE TRIGGER key_truncated AFTER TRUNCATE ON envelope.key
  FOR EACH STATEMENT EXECUTE FUNCTION envelope.key_tables_changed();
CREATE TRIGGER data_key_changed AFTER INSERT OR UPDATE OR DELETE ON envelope.data_key
  FOR EACH ROW EXECUTE FUNCTION envelope.key_tables_changed();
CREATE TRIGGER data_key_truncated AFTER TRUNCATE ON envelope.data_key
  FOR EACH STATEMENT EXECUTE FUNCTION envelope.key_tables_changed();
CREATE TRIGGER kms_changed AFTER INSERT OR UPDATE OR DELETE ON envelope.kms
  FOR EACH ROW EXECUTE FUNCTION envelope.key_tables_changed();
CREATE TRIGGER kms_truncated AFTER TRUNCATE ON envelope.kms
  FOR EACH STATEMENT EXECUTE FUNCTION envelope.key_tables_changed();
ALTER TABLE envelope.key ENABLE ALWAYS TRIGGER key_changed, ENABLE ALWAYS TRIGGER key_truncated;
ALTER TABLE envelope.data_key ENABLE ALWAYS TRIGGER data_key_changed, ENABLE ALWAYS TRIGGER data_key_truncated;
ALTER TABLE envelope.kms ENABLE ALWAYS TRIGGER kms_changed, ENABLE ALWAYS TRIGGER kms_truncated;

-- Configured KMSs and how many keys each wraps (the options hold no secrets).
CREATE VIEW envelope.kms_configs AS
  SELECT m.name, m.provider, m.options, m.created_at,
         (SELECT pg_catalog.count(*) FROM envelope.key k WHERE k.kms = m.name) AS keys
    FROM envelope.kms m;
REVOKE ALL ON envelope.kms_configs FROM PUBLIC;

-- Keys and their DEK versions, without key material.
CREATE VIEW envelope.keys AS
  SELECT k.name AS key_name, k.kms, k.kek, k.state AS key_state, d.version,
         d.state AS version_state, d.version = k.current_version AS is_current,
         d.created_at, d.destroyed_at
    FROM envelope.key k JOIN envelope.data_key d USING (key_id);
REVOKE ALL ON envelope.keys FROM PUBLIC;

------------------------------------------------------------------------------
-- Field encryption. Not STRICT: a NULL context means "no context", while a NULL
-- value gives NULL. VOLATILE for encrypt (random nonce), STABLE for decrypt (the key
-- tables can change between statements). PARALLEL SAFE: workers decrypt too.
------------------------------------------------------------------------------
CREATE FUNCTION envelope.encrypt_field(value text, key_name text, context text DEFAULT NULL)
  RETURNS envelope.encrypted_text
  AS 'MODULE_PATHNAME', 'envelope_encrypt_text' LANGUAGE C VOLATILE PARALLEL SAFE;
CREATE FUNCTION envelope.encrypt_field(value bytea, key_name text, context text DEFAULT NULL)
  RETURNS envelope.encrypted_bytea
  AS 'MODULE_PATHNAME', 'envelope_encrypt_bytea' LANGUAGE C VOLATILE PARALLEL SAFE;
CREATE FUNCTION envelope.encrypt_field(value jsonb, key_name text, context text DEFAULT NULL)
  RETURNS envelope.encrypted_jsonb
  AS 'MODULE_PATHNAME', 'envelope_encrypt_jsonb' LANGUAGE C VOLATILE PARALLEL SAFE;

CREATE FUNCTION envelope.decrypt_field(value envelope.encrypted_text, context text DEFAULT NULL)
  RETURNS text
  AS 'MODULE_PATHNAME', 'envelope_decrypt_text' LANGUAGE C STABLE PARALLEL SAFE;
CREATE FUNCTION envelope.decrypt_field(value envelope.encrypted_bytea, context text DEFAULT NULL)
  RETURNS bytea
  AS 'MODULE_PATHNAME', 'envelope_decrypt_bytea' LANGUAGE C STABLE PARALLEL SAFE;
CREATE FUNCTION envelope.decrypt_field(value envelope.encrypted_jsonb, context text DEFAULT NULL)
  RETURNS jsonb
  AS 'MODULE_PATHNAME', 'envelope_decrypt_jsonb' LANGUAGE C STABLE PARALLEL SAFE;

------------------------------------------------------------------------------
-- Key management.
------------------------------------------------------------------------------
CREATE FUNCTION envelope.create_key(name text, kms text DEFAULT 'local', kek text DEFAULT NULL)
  RETURNS integer
  AS 'MODULE_PATHNAME', 'envelope_create_key' LANGUAGE C VOLATILE PARALLEL UNSAFE;
CREATE FUNCTION envelope.rotate_key(name text) RETURNS integer
  AS 'MODULE_PATHNAME', 'envelope_rotate_key' LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
CREATE FUNCTION envelope.rewrap_key(name text, kek text DEFAULT NULL) RETURNS integer
  AS 'MODULE_PATHNAME', 'envelope_rewrap_key' LANGUAGE C VOLATILE PARALLEL UNSAFE;
CREATE FUNCTION envelope.disable_key(name text) RETURNS void
  AS 'MODULE_PATHNAME', 'envelope_disable_key' LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
CREATE FUNCTION envelope.enable_key(name text) RETURNS void
  AS 'MODULE_PATHNAME', 'envelope_enable_key' LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
CREATE FUNCTION envelope.destroy_key(name text) RETURNS void
  AS 'MODULE_PATHNAME', 'envelope_destroy_key' LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;

CREATE FUNCTION envelope.create_kms(name text, provider text, options jsonb DEFAULT '{}')
  RETURNS void
  AS 'MODULE_PATHNAME', 'envelope_create_kms' LANGUAGE C VOLATILE PARALLEL UNSAFE;
CREATE FUNCTION envelope.alter_kms(name text, options jsonb) RETURNS void
  AS 'MODULE_PATHNAME', 'envelope_alter_kms' LANGUAGE C VOLATILE PARALLEL UNSAFE;
CREATE FUNCTION envelope.drop_kms(name text) RETURNS void
  AS 'MODULE_PATHNAME', 'envelope_drop_kms' LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;

------------------------------------------------------------------------------
-- The shared-memory DEK cache.
------------------------------------------------------------------------------
CREATE FUNCTION envelope.cache_flush() RETURNS void
  AS 'MODULE_PATHNAME', 'envelope_cache_flush' LANGUAGE C VOLATILE PARALLEL UNSAFE;
CREATE FUNCTION envelope.cache_evict(key_name text) RETURNS bigint
  AS 'MODULE_PATHNAME', 'envelope_cache_evict' LANGUAGE C VOLATILE PARALLEL UNSAFE;
CREATE FUNCTION envelope.cache_stats(
    OUT capacity bigint, OUT entries bigint, OUT hits bigint, OUT misses bigint, OUT stores bigint,
    OUT evictions bigint, OUT kms_calls bigint, OUT kms_unwraps bigint, OUT kms_errors bigint,
    OUT kms_time_ms double precision, OUT kms_avg_ms double precision, OUT kms_max_ms double precision,
    OUT flushes bigint, OUT single_flight_waits bigint, OUT core_dump_excluded boolean,
    OUT stats_reset timestamptz)
  AS 'MODULE_PATHNAME', 'envelope_cache_stats' LANGUAGE C VOLATILE PARALLEL SAFE;
CREATE FUNCTION envelope.stats_reset() RETURNS void
  AS 'MODULE_PATHNAME', 'envelope_stats_reset' LANGUAGE C VOLATILE PARALLEL UNSAFE;
CREATE VIEW envelope.stats AS SELECT * FROM envelope.cache_stats();
REVOKE ALL ON envelope.stats FROM PUBLIC;

-- Least privilege: nobody but the owner may encrypt, decrypt or manage keys until
-- granted, e.g.  GRANT EXECUTE ON FUNCTION envelope.decrypt_field(envelope.encrypted_text, text) TO app;
REVOKE ALL ON FUNCTION
  envelope.encrypt_field(text, text, text), envelope.encrypt_field(bytea, text, text),
  envelope.encrypt_field(jsonb, text, text),
  envelope.decrypt_field(envelope.encrypted_text, text), envelope.decrypt_field(envelope.encrypted_bytea, text),
  envelope.decrypt_field(envelope.encrypted_jsonb, text),
  envelope.create_key(text, text, text), envelope.rotate_key(text), envelope.destroy_key(text),
  envelope.disable_key(text), envelope.enable_key(text),
  envelope.rewrap_key(text, text), envelope.cache_flush(), envelope.cache_evict(text), envelope.cache_stats(),
  envelope.stats_reset(),
  envelope.create_kms(text, text, jsonb), envelope.alter_kms(text, jsonb), envelope.drop_kms(text)
  FROM PUBLIC;

------------------------------------------------------------------------------
-- Per-key privileges (0.2.0). EXECUTE on a function lets a role call it; a key
-- privilege lets it use that function with that key:
--   encrypt  encrypt_field with the key;
--   decrypt  decrypt_field of values under the key;
--   admin    create (a name the pattern covers), rotate, rewrap, disable, enable,
--            destroy, evict from the caches, grant and revoke.
-- `pattern` is a key name, a prefix followed by '*' ('tenant_*'), or '*' for every
-- key. A role holds what it is granted and what the roles it has the privileges of
-- hold (SET ROLE, membership, SECURITY DEFINER: the current user counts).
-- Superusers hold every privilege. admin does not imply encrypt or decrypt.
------------------------------------------------------------------------------
CREATE TABLE envelope.key_grant (
  pattern    text NOT NULL CHECK (pattern ~ '^(\*|[A-Za-z0-9_][A-Za-z0-9_.:@/-]{0,62}\*?)$'),
  grantee    regrole NOT NULL,
  privilege  text NOT NULL CHECK (privilege IN ('encrypt', 'decrypt', 'admin')),
  granted_by regrole NOT NULL,
  granted_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
  PRIMARY KEY (pattern, grantee, privilege)
);
SELECT pg_catalog.pg_extension_config_dump('envelope.key_grant', '');
REVOKE ALL ON envelope.key_grant FROM PUBLIC;
CREATE TRIGGER key_grant_changed AFTER INSERT OR UPDATE OR DELETE ON envelope.key_grant
  FOR EACH ROW EXECUTE FUNCTION envelope.key_tables_changed();
CREATE TRIGGER key_grant_truncated AFTER TRUNCATE ON envelope.key_grant
  FOR EACH STATEMENT EXECUTE FUNCTION envelope.key_tables_changed();
ALTER TABLE envelope.key_grant ENABLE ALWAYS TRIGGER key_grant_changed, ENABLE ALWAYS TRIGGER key_grant_truncated;

CREATE VIEW envelope.key_grants AS
  SELECT g.pattern, g.grantee, g.privilege, g.granted_by, g.granted_at FROM envelope.key_grant g;
REVOKE ALL ON envelope.key_grants FROM PUBLIC;

CREATE FUNCTION envelope.grant_key(key text, role regrole, privilege text) RETURNS void
  AS 'MODULE_PATHNAME', 'envelope_grant_key' LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
CREATE FUNCTION envelope.revoke_key(key text, role regrole, privilege text) RETURNS void
  AS 'MODULE_PATHNAME', 'envelope_revoke_key' LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;

-- Which key, DEK version and KMS a value was encrypted with, without decrypting it.
CREATE FUNCTION envelope.key_of(value envelope.encrypted_text, OUT key_name text, OUT version integer, OUT kms text)
  RETURNS record AS 'MODULE_PATHNAME', 'envelope_key_of' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION envelope.key_of(value envelope.encrypted_bytea, OUT key_name text, OUT version integer, OUT kms text)
  RETURNS record AS 'MODULE_PATHNAME', 'envelope_key_of' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION envelope.key_of(value envelope.encrypted_jsonb, OUT key_name text, OUT version integer, OUT kms text)
  RETURNS record AS 'MODULE_PATHNAME', 'envelope_key_of' LANGUAGE C STABLE STRICT PARALLEL SAFE;

REVOKE ALL ON FUNCTION envelope.grant_key(text, regrole, text), envelope.revoke_key(text, regrole, text),
  envelope.key_of(envelope.encrypted_text), envelope.key_of(envelope.encrypted_bytea),
  envelope.key_of(envelope.encrypted_jsonb)
  FROM PUBLIC;
