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

------------------------------------------------------------------------------
-- Protected columns (0.2.0; docs/protect.md). envelope.protect_column() turns a text,
-- bytea or jsonb column into envelope.protected_text/_bytea/_jsonb: the application's
-- SQL keeps working on the same table and column names, the column's trigger seals
-- every value (AES-256-GCM under the row's key, bound to the column and the row), a
-- CHECK keeps plaintext out of the table, and a role holding decrypt on the key reads
-- plaintext while every other role (superusers unless granted explicitly: so pg_dump,
-- COPY TO and logical replication carry ciphertext) reads the "penv1:" text form.
-- envelope.blind_* are the blind-index views an ordinary btree index holds:
-- equality search and UNIQUE by HMAC of the plaintext, never decrypting.
------------------------------------------------------------------------------
CREATE TYPE envelope.protected_text;
CREATE FUNCTION envelope.protected_text_in(cstring, oid, integer) RETURNS envelope.protected_text
  AS 'MODULE_PATHNAME', 'envelope_protected_text_in' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION envelope.protected_text_out(envelope.protected_text) RETURNS cstring
  AS 'MODULE_PATHNAME', 'envelope_protected_text_out' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION envelope.protected_text_recv(internal, oid, integer) RETURNS envelope.protected_text
  AS 'MODULE_PATHNAME', 'envelope_protected_text_recv' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION envelope.protected_text_send(envelope.protected_text) RETURNS bytea
  AS 'MODULE_PATHNAME', 'envelope_protected_text_send' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE TYPE envelope.protected_text (
  INPUT = envelope.protected_text_in, OUTPUT = envelope.protected_text_out,
  RECEIVE = envelope.protected_text_recv, SEND = envelope.protected_text_send,
  INTERNALLENGTH = VARIABLE, STORAGE = extended, CATEGORY = 'U');
CREATE TYPE envelope.blind_text;
CREATE FUNCTION envelope.blind_text_in(cstring, oid, integer) RETURNS envelope.blind_text
  AS 'MODULE_PATHNAME', 'envelope_protected_text_in' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION envelope.blind_text_out(envelope.blind_text) RETURNS cstring
  AS 'MODULE_PATHNAME', 'envelope_blind_text_out' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION envelope.blind_text_recv(internal, oid, integer) RETURNS envelope.blind_text
  AS 'MODULE_PATHNAME', 'envelope_protected_text_recv' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION envelope.blind_text_send(envelope.blind_text) RETURNS bytea
  AS 'MODULE_PATHNAME', 'envelope_protected_text_send' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE TYPE envelope.blind_text (
  INPUT = envelope.blind_text_in, OUTPUT = envelope.blind_text_out,
  RECEIVE = envelope.blind_text_recv, SEND = envelope.blind_text_send,
  INTERNALLENGTH = VARIABLE, STORAGE = extended, CATEGORY = 'U');
-- A protected value is its own blind view (the same bytes), so an index on a
-- protected column uses the blind view's default btree operator class. The blind
-- views' = and <> live in pg_catalog, so that an application's unchanged
-- "WHERE email = $1" finds them whatever its search_path; their ordering operators
-- (which the btree needs) live in envelope, so that "email > 'x'" fails instead of
-- comparing keyed hashes, which have no order a plaintext would recognise.
CREATE CAST (envelope.protected_text AS envelope.blind_text) WITHOUT FUNCTION AS IMPLICIT;
CREATE CAST (text AS envelope.protected_text) WITHOUT FUNCTION AS ASSIGNMENT;  -- unsealed text is the text itself
CREATE CAST (envelope.protected_text AS text) WITH INOUT;
CREATE CAST (text AS envelope.blind_text) WITHOUT FUNCTION AS IMPLICIT;
CREATE CAST (varchar AS envelope.protected_text) WITHOUT FUNCTION AS ASSIGNMENT;
CREATE CAST (varchar AS envelope.blind_text) WITHOUT FUNCTION AS IMPLICIT;
-- Planner support of the ordering operators of the blind types: refuses them in any
-- expression (they exist for ORDER BY, GROUP BY and UNIQUE, which use the btree).
CREATE FUNCTION envelope.blind_ordering_support(internal) RETURNS internal
  AS 'MODULE_PATHNAME', 'envelope_blind_ordering_support' LANGUAGE C STRICT;
CREATE FUNCTION envelope.blind_text_lt(envelope.blind_text, envelope.blind_text) RETURNS boolean
  AS 'MODULE_PATHNAME', 'envelope_blind_text_lt' LANGUAGE C STABLE STRICT PARALLEL SAFE SUPPORT envelope.blind_ordering_support;
CREATE FUNCTION envelope.blind_text_le(envelope.blind_text, envelope.blind_text) RETURNS boolean
  AS 'MODULE_PATHNAME', 'envelope_blind_text_le' LANGUAGE C STABLE STRICT PARALLEL SAFE SUPPORT envelope.blind_ordering_support;
CREATE FUNCTION envelope.blind_text_eq(envelope.blind_text, envelope.blind_text) RETURNS boolean
  AS 'MODULE_PATHNAME', 'envelope_blind_text_eq' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION envelope.blind_text_ge(envelope.blind_text, envelope.blind_text) RETURNS boolean
  AS 'MODULE_PATHNAME', 'envelope_blind_text_ge' LANGUAGE C STABLE STRICT PARALLEL SAFE SUPPORT envelope.blind_ordering_support;
CREATE FUNCTION envelope.blind_text_gt(envelope.blind_text, envelope.blind_text) RETURNS boolean
  AS 'MODULE_PATHNAME', 'envelope_blind_text_gt' LANGUAGE C STABLE STRICT PARALLEL SAFE SUPPORT envelope.blind_ordering_support;
CREATE FUNCTION envelope.blind_text_ne(envelope.blind_text, envelope.blind_text) RETURNS boolean
  AS 'MODULE_PATHNAME', 'envelope_blind_text_ne' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION envelope.blind_text_cmp(envelope.blind_text, envelope.blind_text) RETURNS integer
  AS 'MODULE_PATHNAME', 'envelope_blind_text_cmp' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE OPERATOR envelope.< (LEFTARG = envelope.blind_text, RIGHTARG = envelope.blind_text, FUNCTION = envelope.blind_text_lt,
  COMMUTATOR = OPERATOR(envelope.>), NEGATOR = OPERATOR(envelope.>=), RESTRICT = scalarltsel, JOIN = scalarltjoinsel);
CREATE OPERATOR envelope.<= (LEFTARG = envelope.blind_text, RIGHTARG = envelope.blind_text, FUNCTION = envelope.blind_text_le,
  COMMUTATOR = OPERATOR(envelope.>=), NEGATOR = OPERATOR(envelope.>), RESTRICT = scalarlesel, JOIN = scalarlejoinsel);
CREATE OPERATOR pg_catalog.= (LEFTARG = envelope.blind_text, RIGHTARG = envelope.blind_text, FUNCTION = envelope.blind_text_eq,
  COMMUTATOR = OPERATOR(pg_catalog.=), NEGATOR = OPERATOR(pg_catalog.<>), RESTRICT = eqsel, JOIN = eqjoinsel, MERGES);
CREATE OPERATOR envelope.>= (LEFTARG = envelope.blind_text, RIGHTARG = envelope.blind_text, FUNCTION = envelope.blind_text_ge,
  COMMUTATOR = OPERATOR(envelope.<=), NEGATOR = OPERATOR(envelope.<), RESTRICT = scalargesel, JOIN = scalargejoinsel);
CREATE OPERATOR envelope.> (LEFTARG = envelope.blind_text, RIGHTARG = envelope.blind_text, FUNCTION = envelope.blind_text_gt,
  COMMUTATOR = OPERATOR(envelope.<), NEGATOR = OPERATOR(envelope.<=), RESTRICT = scalargtsel, JOIN = scalargtjoinsel);
CREATE OPERATOR pg_catalog.<> (LEFTARG = envelope.blind_text, RIGHTARG = envelope.blind_text, FUNCTION = envelope.blind_text_ne,
  COMMUTATOR = OPERATOR(pg_catalog.<>), NEGATOR = OPERATOR(pg_catalog.=), RESTRICT = neqsel, JOIN = neqjoinsel);
CREATE OPERATOR CLASS envelope.blind_text_ops DEFAULT FOR TYPE envelope.blind_text USING btree AS
  OPERATOR 1 envelope.<, OPERATOR 2 envelope.<=, OPERATOR 3 pg_catalog.=, OPERATOR 4 envelope.>=,
  OPERATOR 5 envelope.>, FUNCTION 1 envelope.blind_text_cmp(envelope.blind_text, envelope.blind_text);
CREATE FUNCTION envelope.protected_ok(value envelope.blind_text, protection_id bigint) RETURNS boolean
  AS 'MODULE_PATHNAME', 'envelope_blind_text_protected_ok' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION envelope.is_sealed(value envelope.blind_text) RETURNS boolean
  AS 'MODULE_PATHNAME', 'envelope_is_sealed' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE TYPE envelope.protected_bytea;
CREATE FUNCTION envelope.protected_bytea_in(cstring, oid, integer) RETURNS envelope.protected_bytea
  AS 'MODULE_PATHNAME', 'envelope_protected_bytea_in' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION envelope.protected_bytea_out(envelope.protected_bytea) RETURNS cstring
  AS 'MODULE_PATHNAME', 'envelope_protected_bytea_out' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION envelope.protected_bytea_recv(internal, oid, integer) RETURNS envelope.protected_bytea
  AS 'MODULE_PATHNAME', 'envelope_protected_bytea_recv' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION envelope.protected_bytea_send(envelope.protected_bytea) RETURNS bytea
  AS 'MODULE_PATHNAME', 'envelope_protected_bytea_send' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE TYPE envelope.protected_bytea (
  INPUT = envelope.protected_bytea_in, OUTPUT = envelope.protected_bytea_out,
  RECEIVE = envelope.protected_bytea_recv, SEND = envelope.protected_bytea_send,
  INTERNALLENGTH = VARIABLE, STORAGE = extended, CATEGORY = 'U');
CREATE TYPE envelope.blind_bytea;
CREATE FUNCTION envelope.blind_bytea_in(cstring, oid, integer) RETURNS envelope.blind_bytea
  AS 'MODULE_PATHNAME', 'envelope_protected_bytea_in' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION envelope.blind_bytea_out(envelope.blind_bytea) RETURNS cstring
  AS 'MODULE_PATHNAME', 'envelope_blind_bytea_out' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION envelope.blind_bytea_recv(internal, oid, integer) RETURNS envelope.blind_bytea
  AS 'MODULE_PATHNAME', 'envelope_protected_bytea_recv' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION envelope.blind_bytea_send(envelope.blind_bytea) RETURNS bytea
  AS 'MODULE_PATHNAME', 'envelope_protected_bytea_send' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE TYPE envelope.blind_bytea (
  INPUT = envelope.blind_bytea_in, OUTPUT = envelope.blind_bytea_out,
  RECEIVE = envelope.blind_bytea_recv, SEND = envelope.blind_bytea_send,
  INTERNALLENGTH = VARIABLE, STORAGE = extended, CATEGORY = 'U');
-- A protected value is its own blind view (the same bytes), so an index on a
-- protected column uses the blind view's default btree operator class. The blind
-- views' = and <> live in pg_catalog, so that an application's unchanged
-- "WHERE email = $1" finds them whatever its search_path; their ordering operators
-- (which the btree needs) live in envelope, so that "email > 'x'" fails instead of
-- comparing keyed hashes, which have no order a plaintext would recognise.
CREATE CAST (envelope.protected_bytea AS envelope.blind_bytea) WITHOUT FUNCTION AS IMPLICIT;
CREATE CAST (bytea AS envelope.protected_bytea) WITH INOUT AS ASSIGNMENT;
CREATE CAST (envelope.protected_bytea AS bytea) WITH INOUT;
CREATE CAST (bytea AS envelope.blind_bytea) WITH INOUT AS IMPLICIT;
CREATE FUNCTION envelope.blind_bytea_lt(envelope.blind_bytea, envelope.blind_bytea) RETURNS boolean
  AS 'MODULE_PATHNAME', 'envelope_blind_bytea_lt' LANGUAGE C STABLE STRICT PARALLEL SAFE SUPPORT envelope.blind_ordering_support;
CREATE FUNCTION envelope.blind_bytea_le(envelope.blind_bytea, envelope.blind_bytea) RETURNS boolean
  AS 'MODULE_PATHNAME', 'envelope_blind_bytea_le' LANGUAGE C STABLE STRICT PARALLEL SAFE SUPPORT envelope.blind_ordering_support;
CREATE FUNCTION envelope.blind_bytea_eq(envelope.blind_bytea, envelope.blind_bytea) RETURNS boolean
  AS 'MODULE_PATHNAME', 'envelope_blind_bytea_eq' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION envelope.blind_bytea_ge(envelope.blind_bytea, envelope.blind_bytea) RETURNS boolean
  AS 'MODULE_PATHNAME', 'envelope_blind_bytea_ge' LANGUAGE C STABLE STRICT PARALLEL SAFE SUPPORT envelope.blind_ordering_support;
CREATE FUNCTION envelope.blind_bytea_gt(envelope.blind_bytea, envelope.blind_bytea) RETURNS boolean
  AS 'MODULE_PATHNAME', 'envelope_blind_bytea_gt' LANGUAGE C STABLE STRICT PARALLEL SAFE SUPPORT envelope.blind_ordering_support;
CREATE FUNCTION envelope.blind_bytea_ne(envelope.blind_bytea, envelope.blind_bytea) RETURNS boolean
  AS 'MODULE_PATHNAME', 'envelope_blind_bytea_ne' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION envelope.blind_bytea_cmp(envelope.blind_bytea, envelope.blind_bytea) RETURNS integer
  AS 'MODULE_PATHNAME', 'envelope_blind_bytea_cmp' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE OPERATOR envelope.< (LEFTARG = envelope.blind_bytea, RIGHTARG = envelope.blind_bytea, FUNCTION = envelope.blind_bytea_lt,
  COMMUTATOR = OPERATOR(envelope.>), NEGATOR = OPERATOR(envelope.>=), RESTRICT = scalarltsel, JOIN = scalarltjoinsel);
CREATE OPERATOR envelope.<= (LEFTARG = envelope.blind_bytea, RIGHTARG = envelope.blind_bytea, FUNCTION = envelope.blind_bytea_le,
  COMMUTATOR = OPERATOR(envelope.>=), NEGATOR = OPERATOR(envelope.>), RESTRICT = scalarlesel, JOIN = scalarlejoinsel);
CREATE OPERATOR pg_catalog.= (LEFTARG = envelope.blind_bytea, RIGHTARG = envelope.blind_bytea, FUNCTION = envelope.blind_bytea_eq,
  COMMUTATOR = OPERATOR(pg_catalog.=), NEGATOR = OPERATOR(pg_catalog.<>), RESTRICT = eqsel, JOIN = eqjoinsel, MERGES);
CREATE OPERATOR envelope.>= (LEFTARG = envelope.blind_bytea, RIGHTARG = envelope.blind_bytea, FUNCTION = envelope.blind_bytea_ge,
  COMMUTATOR = OPERATOR(envelope.<=), NEGATOR = OPERATOR(envelope.<), RESTRICT = scalargesel, JOIN = scalargejoinsel);
CREATE OPERATOR envelope.> (LEFTARG = envelope.blind_bytea, RIGHTARG = envelope.blind_bytea, FUNCTION = envelope.blind_bytea_gt,
  COMMUTATOR = OPERATOR(envelope.<), NEGATOR = OPERATOR(envelope.<=), RESTRICT = scalargtsel, JOIN = scalargtjoinsel);
CREATE OPERATOR pg_catalog.<> (LEFTARG = envelope.blind_bytea, RIGHTARG = envelope.blind_bytea, FUNCTION = envelope.blind_bytea_ne,
  COMMUTATOR = OPERATOR(pg_catalog.<>), NEGATOR = OPERATOR(pg_catalog.=), RESTRICT = neqsel, JOIN = neqjoinsel);
CREATE OPERATOR CLASS envelope.blind_bytea_ops DEFAULT FOR TYPE envelope.blind_bytea USING btree AS
  OPERATOR 1 envelope.<, OPERATOR 2 envelope.<=, OPERATOR 3 pg_catalog.=, OPERATOR 4 envelope.>=,
  OPERATOR 5 envelope.>, FUNCTION 1 envelope.blind_bytea_cmp(envelope.blind_bytea, envelope.blind_bytea);
CREATE FUNCTION envelope.protected_ok(value envelope.blind_bytea, protection_id bigint) RETURNS boolean
  AS 'MODULE_PATHNAME', 'envelope_blind_bytea_protected_ok' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION envelope.is_sealed(value envelope.blind_bytea) RETURNS boolean
  AS 'MODULE_PATHNAME', 'envelope_is_sealed' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE TYPE envelope.protected_jsonb;
CREATE FUNCTION envelope.protected_jsonb_in(cstring, oid, integer) RETURNS envelope.protected_jsonb
  AS 'MODULE_PATHNAME', 'envelope_protected_jsonb_in' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION envelope.protected_jsonb_out(envelope.protected_jsonb) RETURNS cstring
  AS 'MODULE_PATHNAME', 'envelope_protected_jsonb_out' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION envelope.protected_jsonb_recv(internal, oid, integer) RETURNS envelope.protected_jsonb
  AS 'MODULE_PATHNAME', 'envelope_protected_jsonb_recv' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION envelope.protected_jsonb_send(envelope.protected_jsonb) RETURNS bytea
  AS 'MODULE_PATHNAME', 'envelope_protected_jsonb_send' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE TYPE envelope.protected_jsonb (
  INPUT = envelope.protected_jsonb_in, OUTPUT = envelope.protected_jsonb_out,
  RECEIVE = envelope.protected_jsonb_recv, SEND = envelope.protected_jsonb_send,
  INTERNALLENGTH = VARIABLE, STORAGE = extended, CATEGORY = 'U');
CREATE TYPE envelope.blind_jsonb;
CREATE FUNCTION envelope.blind_jsonb_in(cstring, oid, integer) RETURNS envelope.blind_jsonb
  AS 'MODULE_PATHNAME', 'envelope_protected_jsonb_in' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION envelope.blind_jsonb_out(envelope.blind_jsonb) RETURNS cstring
  AS 'MODULE_PATHNAME', 'envelope_blind_jsonb_out' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION envelope.blind_jsonb_recv(internal, oid, integer) RETURNS envelope.blind_jsonb
  AS 'MODULE_PATHNAME', 'envelope_protected_jsonb_recv' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION envelope.blind_jsonb_send(envelope.blind_jsonb) RETURNS bytea
  AS 'MODULE_PATHNAME', 'envelope_protected_jsonb_send' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE TYPE envelope.blind_jsonb (
  INPUT = envelope.blind_jsonb_in, OUTPUT = envelope.blind_jsonb_out,
  RECEIVE = envelope.blind_jsonb_recv, SEND = envelope.blind_jsonb_send,
  INTERNALLENGTH = VARIABLE, STORAGE = extended, CATEGORY = 'U');
-- A protected value is its own blind view (the same bytes), so an index on a
-- protected column uses the blind view's default btree operator class. The blind
-- views' = and <> live in pg_catalog, so that an application's unchanged
-- "WHERE email = $1" finds them whatever its search_path; their ordering operators
-- (which the btree needs) live in envelope, so that "email > 'x'" fails instead of
-- comparing keyed hashes, which have no order a plaintext would recognise.
CREATE CAST (envelope.protected_jsonb AS envelope.blind_jsonb) WITHOUT FUNCTION AS IMPLICIT;
CREATE CAST (jsonb AS envelope.protected_jsonb) WITH INOUT AS ASSIGNMENT;
CREATE CAST (envelope.protected_jsonb AS jsonb) WITH INOUT;
CREATE CAST (jsonb AS envelope.blind_jsonb) WITH INOUT AS IMPLICIT;
CREATE FUNCTION envelope.blind_jsonb_lt(envelope.blind_jsonb, envelope.blind_jsonb) RETURNS boolean
  AS 'MODULE_PATHNAME', 'envelope_blind_jsonb_lt' LANGUAGE C STABLE STRICT PARALLEL SAFE SUPPORT envelope.blind_ordering_support;
CREATE FUNCTION envelope.blind_jsonb_le(envelope.blind_jsonb, envelope.blind_jsonb) RETURNS boolean
  AS 'MODULE_PATHNAME', 'envelope_blind_jsonb_le' LANGUAGE C STABLE STRICT PARALLEL SAFE SUPPORT envelope.blind_ordering_support;
CREATE FUNCTION envelope.blind_jsonb_eq(envelope.blind_jsonb, envelope.blind_jsonb) RETURNS boolean
  AS 'MODULE_PATHNAME', 'envelope_blind_jsonb_eq' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION envelope.blind_jsonb_ge(envelope.blind_jsonb, envelope.blind_jsonb) RETURNS boolean
  AS 'MODULE_PATHNAME', 'envelope_blind_jsonb_ge' LANGUAGE C STABLE STRICT PARALLEL SAFE SUPPORT envelope.blind_ordering_support;
CREATE FUNCTION envelope.blind_jsonb_gt(envelope.blind_jsonb, envelope.blind_jsonb) RETURNS boolean
  AS 'MODULE_PATHNAME', 'envelope_blind_jsonb_gt' LANGUAGE C STABLE STRICT PARALLEL SAFE SUPPORT envelope.blind_ordering_support;
CREATE FUNCTION envelope.blind_jsonb_ne(envelope.blind_jsonb, envelope.blind_jsonb) RETURNS boolean
  AS 'MODULE_PATHNAME', 'envelope_blind_jsonb_ne' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION envelope.blind_jsonb_cmp(envelope.blind_jsonb, envelope.blind_jsonb) RETURNS integer
  AS 'MODULE_PATHNAME', 'envelope_blind_jsonb_cmp' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE OPERATOR envelope.< (LEFTARG = envelope.blind_jsonb, RIGHTARG = envelope.blind_jsonb, FUNCTION = envelope.blind_jsonb_lt,
  COMMUTATOR = OPERATOR(envelope.>), NEGATOR = OPERATOR(envelope.>=), RESTRICT = scalarltsel, JOIN = scalarltjoinsel);
CREATE OPERATOR envelope.<= (LEFTARG = envelope.blind_jsonb, RIGHTARG = envelope.blind_jsonb, FUNCTION = envelope.blind_jsonb_le,
  COMMUTATOR = OPERATOR(envelope.>=), NEGATOR = OPERATOR(envelope.>), RESTRICT = scalarlesel, JOIN = scalarlejoinsel);
CREATE OPERATOR pg_catalog.= (LEFTARG = envelope.blind_jsonb, RIGHTARG = envelope.blind_jsonb, FUNCTION = envelope.blind_jsonb_eq,
  COMMUTATOR = OPERATOR(pg_catalog.=), NEGATOR = OPERATOR(pg_catalog.<>), RESTRICT = eqsel, JOIN = eqjoinsel, MERGES);
CREATE OPERATOR envelope.>= (LEFTARG = envelope.blind_jsonb, RIGHTARG = envelope.blind_jsonb, FUNCTION = envelope.blind_jsonb_ge,
  COMMUTATOR = OPERATOR(envelope.<=), NEGATOR = OPERATOR(envelope.<), RESTRICT = scalargesel, JOIN = scalargejoinsel);
CREATE OPERATOR envelope.> (LEFTARG = envelope.blind_jsonb, RIGHTARG = envelope.blind_jsonb, FUNCTION = envelope.blind_jsonb_gt,
  COMMUTATOR = OPERATOR(envelope.<), NEGATOR = OPERATOR(envelope.<=), RESTRICT = scalargtsel, JOIN = scalargtjoinsel);
CREATE OPERATOR pg_catalog.<> (LEFTARG = envelope.blind_jsonb, RIGHTARG = envelope.blind_jsonb, FUNCTION = envelope.blind_jsonb_ne,
  COMMUTATOR = OPERATOR(pg_catalog.<>), NEGATOR = OPERATOR(pg_catalog.=), RESTRICT = neqsel, JOIN = neqjoinsel);
CREATE OPERATOR CLASS envelope.blind_jsonb_ops DEFAULT FOR TYPE envelope.blind_jsonb USING btree AS
  OPERATOR 1 envelope.<, OPERATOR 2 envelope.<=, OPERATOR 3 pg_catalog.=, OPERATOR 4 envelope.>=,
  OPERATOR 5 envelope.>, FUNCTION 1 envelope.blind_jsonb_cmp(envelope.blind_jsonb, envelope.blind_jsonb);
CREATE FUNCTION envelope.protected_ok(value envelope.blind_jsonb, protection_id bigint) RETURNS boolean
  AS 'MODULE_PATHNAME', 'envelope_blind_jsonb_protected_ok' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION envelope.is_sealed(value envelope.blind_jsonb) RETURNS boolean
  AS 'MODULE_PATHNAME', 'envelope_is_sealed' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
-- The trigger every protected column gets (BEFORE INSERT OR UPDATE, ENABLE ALWAYS).
CREATE FUNCTION envelope.protect_row() RETURNS trigger
  AS 'MODULE_PATHNAME', 'envelope_protect_row' LANGUAGE C;
-- (EXECUTE stays with PUBLIC: protect_column creates the trigger as the table's owner.)

-- Which columns are protected, how, and how far the sealing of existing rows got.
CREATE TABLE envelope.protected_column (
  protection_id      bigint PRIMARY KEY CHECK (protection_id > 0 AND protection_id <= 4294967295),
  tbl                regclass NOT NULL,
  col                name NOT NULL,
  plain_type         text NOT NULL CHECK (plain_type IN ('text', 'bytea', 'jsonb')),
  original_type      text,  -- the column's type before, e.g. character varying(254), given back by unprotect_column
  key                text NOT NULL,
  key_column         name,
  context_column     name,
  blind_key          text,
  blind_bytes        integer NOT NULL DEFAULT 0,
  state              text NOT NULL DEFAULT 'protected' CHECK (state IN ('sealing', 'protected')),
  rows_total         bigint,
  rows_sealed        bigint NOT NULL DEFAULT 0,
  next_block         bigint NOT NULL DEFAULT 0,
  pending_indexes    text[] NOT NULL DEFAULT '{}',
  protected_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
  sealing_started_at timestamptz,
  last_batch_at      timestamptz,
  sealed_at          timestamptz,
  UNIQUE (tbl, col)
);
SELECT pg_catalog.pg_extension_config_dump('envelope.protected_column', '');
REVOKE ALL ON envelope.protected_column FROM PUBLIC;

-- Everyone sees the protected columns of the tables they own (as ALTER TABLE would
-- allow them to protect), with the progress of sealing; the extension's owner sees all.
CREATE VIEW envelope.protected_columns WITH (security_barrier) AS
  SELECT p.tbl, p.col, p.plain_type, p.key, p.key_column, p.context_column, p.blind_key, p.blind_bytes, p.state,
         p.rows_sealed, p.rows_total,
         CASE WHEN p.rows_total > 0 THEN pg_catalog.round(100.0 * p.rows_sealed / p.rows_total, 1) END AS percent,
         CASE WHEN p.last_batch_at > p.sealing_started_at
              THEN pg_catalog.round(p.rows_sealed / pg_catalog.date_part('epoch', p.last_batch_at - p.sealing_started_at)) END
           AS rows_per_second,
         p.sealing_started_at, p.last_batch_at, p.sealed_at, p.pending_indexes
    FROM envelope.protected_column p JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) p.tbl
   WHERE pg_catalog.pg_has_role(c.relowner, 'USAGE');
REVOKE ALL ON envelope.protected_columns FROM PUBLIC;
GRANT SELECT ON envelope.protected_columns TO PUBLIC;

CREATE FUNCTION envelope.protect_column(tbl regclass, col name, key text, context_column name DEFAULT NULL,
    key_column name DEFAULT NULL, blind_index boolean DEFAULT true, blind_bytes integer DEFAULT 16,
    blind_key text DEFAULT NULL) RETURNS void
  AS 'MODULE_PATHNAME', 'envelope_protect_column' LANGUAGE C VOLATILE PARALLEL UNSAFE;
CREATE FUNCTION envelope.unprotect_column(tbl regclass, col name) RETURNS void
  AS 'MODULE_PATHNAME', 'envelope_unprotect_column' LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
CREATE PROCEDURE envelope.seal_rows(tbl regclass, col name, batch_blocks integer DEFAULT 8,
    pause_ms integer DEFAULT 0, rebuild_indexes boolean DEFAULT false)
  AS 'MODULE_PATHNAME', 'envelope_seal_rows' LANGUAGE C;
CREATE FUNCTION envelope.unseal(value envelope.protected_text) RETURNS text
  AS 'MODULE_PATHNAME', 'envelope_unseal_text' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION envelope.unseal(value envelope.protected_bytea) RETURNS bytea
  AS 'MODULE_PATHNAME', 'envelope_unseal_bytea' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION envelope.unseal(value envelope.protected_jsonb) RETURNS jsonb
  AS 'MODULE_PATHNAME', 'envelope_unseal_jsonb' LANGUAGE C STABLE STRICT PARALLEL SAFE;
REVOKE ALL ON FUNCTION envelope.protect_column(regclass, name, text, name, name, boolean, integer, text),
  envelope.unprotect_column(regclass, name), envelope.unseal(envelope.protected_text), envelope.unseal(envelope.protected_bytea),
  envelope.unseal(envelope.protected_jsonb)
  FROM PUBLIC;
REVOKE ALL ON PROCEDURE envelope.seal_rows(regclass, name, integer, integer, boolean) FROM PUBLIC;

-- Guards of protected columns: an ALTER TABLE that would change a protected column's
-- type or name is refused with a clear error (an ORM's schema sync would otherwise
-- turn it back into varchar under its trigger); a dropped protected column or table
-- leaves the registry, and a dropped column takes its trigger along.
CREATE FUNCTION envelope.protected_ddl_guard() RETURNS event_trigger
  AS 'MODULE_PATHNAME', 'envelope_protected_ddl_guard' LANGUAGE C;
CREATE EVENT TRIGGER envelope_protected_ddl_guard ON ddl_command_start WHEN TAG IN ('ALTER TABLE')
  EXECUTE FUNCTION envelope.protected_ddl_guard();
CREATE FUNCTION envelope.protected_column_dropped() RETURNS event_trigger LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
  gone record;
BEGIN
  FOR gone IN
    DELETE FROM envelope.protected_column p
     USING pg_catalog.pg_event_trigger_dropped_objects() d
     WHERE d.classid OPERATOR(pg_catalog.=) CAST('pg_catalog.pg_class' AS pg_catalog.regclass)
       AND d.objid OPERATOR(pg_catalog.=) CAST(p.tbl AS pg_catalog.oid)
       AND (d.objsubid OPERATOR(pg_catalog.=) 0 OR d.address_names[3] OPERATOR(pg_catalog.=) CAST(p.col AS pg_catalog.text))
    RETURNING p.tbl, p.protection_id, d.objsubid
  LOOP
    IF gone.objsubid OPERATOR(pg_catalog.<>) 0 THEN
      EXECUTE pg_catalog.format('DROP TRIGGER IF EXISTS %I ON %s',
                                CAST('zz_envelope_protect_' AS pg_catalog.text) OPERATOR(pg_catalog.||)
                                  CAST(gone.protection_id AS pg_catalog.text),
                                CAST(gone.tbl AS pg_catalog.text));
    END IF;
  END LOOP;
END $f$;
REVOKE ALL ON FUNCTION envelope.protected_column_dropped() FROM PUBLIC;
CREATE EVENT TRIGGER envelope_protected_column_dropped ON sql_drop
  WHEN TAG IN ('DROP TABLE', 'ALTER TABLE', 'DROP SCHEMA', 'DROP OWNED')
  EXECUTE FUNCTION envelope.protected_column_dropped();

