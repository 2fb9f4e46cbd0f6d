-- pg_envelope 0.1.0 -> 0.2.0.
\echo Use "ALTER EXTENSION pg_envelope UPDATE TO '0.2.0'" to load this file. \quit

-- First of all: refuse a schema "envelope" that this extension did not create (a
-- role that made it beforehand could add objects beside ours, e.g. an
-- encrypt_field(varchar, varchar) that captures plaintext). See check_own_schema in
-- src/sql/internal_functions.cpp.
CREATE FUNCTION envelope.check_own_schema() RETURNS void
  AS 'MODULE_PATHNAME', 'envelope_check_own_schema' LANGUAGE C;
SELECT envelope.check_own_schema();
DROP FUNCTION envelope.check_own_schema();
-- The schema belongs to the role running this script: the installing superuser, or, for
-- a trusted install by a non-superuser, the bootstrap superuser (PostgreSQL creates the
-- schema as the calling role, which could then add look-alike functions to it).
ALTER SCHEMA envelope OWNER TO CURRENT_USER;

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
-- ANALYZE compares only values sealed with a blind index (protect_functions.cpp).
CREATE FUNCTION envelope.protected_text_typanalyze(internal) RETURNS boolean
  AS 'MODULE_PATHNAME', 'envelope_protected_text_typanalyze' LANGUAGE C STRICT PARALLEL SAFE;
CREATE TYPE envelope.protected_text (
  INPUT = envelope.protected_text_in, OUTPUT = envelope.protected_text_out,
  RECEIVE = envelope.protected_text_recv, SEND = envelope.protected_text_send,
  ANALYZE = envelope.protected_text_typanalyze,
  INTERNALLENGTH = VARIABLE, STORAGE = extended, CATEGORY = 'U');
CREATE TYPE envelope.blind_text;
CREATE FUNCTION envelope.blind_text_in(cstring, oid, integer) RETURNS envelope.blind_text
  AS 'MODULE_PATHNAME', 'envelope_blind_text_in' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
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
-- ANALYZE compares only values sealed with a blind index (protect_functions.cpp).
CREATE FUNCTION envelope.protected_bytea_typanalyze(internal) RETURNS boolean
  AS 'MODULE_PATHNAME', 'envelope_protected_bytea_typanalyze' LANGUAGE C STRICT PARALLEL SAFE;
CREATE TYPE envelope.protected_bytea (
  INPUT = envelope.protected_bytea_in, OUTPUT = envelope.protected_bytea_out,
  RECEIVE = envelope.protected_bytea_recv, SEND = envelope.protected_bytea_send,
  ANALYZE = envelope.protected_bytea_typanalyze,
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
-- ANALYZE compares only values sealed with a blind index (protect_functions.cpp).
CREATE FUNCTION envelope.protected_jsonb_typanalyze(internal) RETURNS boolean
  AS 'MODULE_PATHNAME', 'envelope_protected_jsonb_typanalyze' LANGUAGE C STRICT PARALLEL SAFE;
CREATE TYPE envelope.protected_jsonb (
  INPUT = envelope.protected_jsonb_in, OUTPUT = envelope.protected_jsonb_out,
  RECEIVE = envelope.protected_jsonb_recv, SEND = envelope.protected_jsonb_send,
  ANALYZE = envelope.protected_jsonb_typanalyze,
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


-- Before 0.2.0, EXECUTE on a function allowed its use with every key. Roles that hold
-- EXECUTE (directly, not as PUBLIC) keep exactly that: the matching privilege on every
-- key ('*'). EXECUTE granted to PUBLIC is not carried over (0.2.0 has no PUBLIC key
-- grants): grant the roles that need it explicitly.
INSERT INTO envelope.key_grant (pattern, grantee, privilege, granted_by)
SELECT DISTINCT '*', a.grantee::pg_catalog.regrole, m.privilege, a.grantor::pg_catalog.regrole
  FROM pg_catalog.pg_proc p
  CROSS JOIN LATERAL pg_catalog.aclexplode(p.proacl) a
  JOIN (VALUES ('encrypt_field', 'encrypt'), ('decrypt_field', 'decrypt'), ('create_key', 'admin'),
               ('rotate_key', 'admin'), ('rewrap_key', 'admin'), ('disable_key', 'admin'),
               ('enable_key', 'admin'), ('destroy_key', 'admin'), ('cache_evict', 'admin')) AS m(fn, privilege)
    ON p.proname OPERATOR(pg_catalog.=) m.fn
 WHERE p.pronamespace OPERATOR(pg_catalog.=) 'envelope'::pg_catalog.regnamespace
   AND a.privilege_type OPERATOR(pg_catalog.=) 'EXECUTE'
   AND a.grantee OPERATOR(pg_catalog.<>) 0
   AND a.grantee OPERATOR(pg_catalog.<>) p.proowner
ON CONFLICT DO NOTHING;

-- The extension's owner: the role that ran CREATE EXTENSION (or ALTER EXTENSION UPDATE).
-- Installed as a trusted extension by a non-superuser database owner (docs/access.md),
-- the objects belong to the bootstrap superuser and this role holds only what follows:
-- every function and view a key administrator uses, with the right to pass them on, and
-- (in the library) the admin privilege on every key, but no encrypt or decrypt until it
-- grants them, no key table, no KMS registration and no master-key setting.
GRANT EXECUTE ON FUNCTION
  envelope.encrypt_field(text, text, text), envelope.encrypt_field(bytea, text, text),
  envelope.encrypt_field(jsonb, text, text),
  envelope.decrypt_field(envelope.encrypted_text, text), envelope.decrypt_field(envelope.encrypted_bytea, text),
  envelope.decrypt_field(envelope.encrypted_jsonb, text),
  envelope.create_key(text, text, text), envelope.rotate_key(text), envelope.destroy_key(text),
  envelope.disable_key(text), envelope.enable_key(text),
  envelope.rewrap_key(text, text), envelope.cache_flush(), envelope.cache_evict(text), envelope.cache_stats(),
  envelope.stats_reset(),
  envelope.grant_key(text, regrole, text), envelope.revoke_key(text, regrole, text),
  envelope.key_of(envelope.encrypted_text), envelope.key_of(envelope.encrypted_bytea),
  envelope.key_of(envelope.encrypted_jsonb),
  envelope.protect_column(regclass, name, text, name, name, boolean, integer, text),
  envelope.unprotect_column(regclass, name), envelope.unseal(envelope.protected_text),
  envelope.unseal(envelope.protected_bytea), envelope.unseal(envelope.protected_jsonb)
  TO @extowner@ WITH GRANT OPTION;
GRANT EXECUTE ON PROCEDURE envelope.seal_rows(regclass, name, integer, integer, boolean) TO @extowner@ WITH GRANT OPTION;
GRANT SELECT ON envelope.keys, envelope.key_grants, envelope.stats, envelope.kms_configs TO @extowner@ WITH GRANT OPTION;

-- Classification (docs/access.md): a column's label is a security label of provider
-- pg_envelope, so it follows renames, goes with DROP COLUMN and pg_dump carries it.
CREATE FUNCTION envelope.classify(tbl regclass, col name, label text) RETURNS void
  AS 'MODULE_PATHNAME', 'envelope_classify' LANGUAGE C VOLATILE PARALLEL UNSAFE;
CREATE FUNCTION envelope.unclassify(tbl regclass, col name) RETURNS void
  AS 'MODULE_PATHNAME', 'envelope_unclassify' LANGUAGE C VOLATILE PARALLEL UNSAFE;
-- Every labelled column and whether only ciphertext is at rest in it: protected
-- (protect_column), sealing (protect_column still converting rows), encrypted (an
-- encrypted_* column) or plaintext. Metadata only, as pg_seclabels and pg_attribute are.
CREATE VIEW envelope.classified_columns AS
  SELECT c.oid::pg_catalog.regclass AS tbl, a.attname AS col, l.label,
         pg_catalog.format_type(a.atttypid, a.atttypmod) AS data_type,
         CASE WHEN p.state OPERATOR(pg_catalog.=) 'protected' THEN 'protected'
              WHEN p.state IS NOT NULL THEN 'sealing'
              WHEN t.typnamespace OPERATOR(pg_catalog.=) 'envelope'::pg_catalog.regnamespace
                   AND t.typname OPERATOR(pg_catalog.~~) 'encrypted\_%' THEN 'encrypted'
              ELSE 'plaintext' END AS status
    FROM pg_catalog.pg_seclabel l
    JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) l.objoid
    JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) c.oid
                                  AND a.attnum OPERATOR(pg_catalog.=) l.objsubid AND NOT a.attisdropped
    JOIN pg_catalog.pg_type t ON t.oid OPERATOR(pg_catalog.=) a.atttypid
    LEFT JOIN envelope.protected_column p ON p.tbl OPERATOR(pg_catalog.=) c.oid
                                          AND p.col OPERATOR(pg_catalog.=) a.attname
   WHERE l.provider OPERATOR(pg_catalog.=) 'pg_envelope'
     AND l.classoid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass;
REVOKE ALL ON envelope.classified_columns FROM PUBLIC;
GRANT SELECT ON envelope.classified_columns TO PUBLIC;
-- The report: labelled sensitive (not 'public') and still plaintext at rest.
CREATE VIEW envelope.unprotected_columns AS
  SELECT tbl, col, label, data_type FROM envelope.classified_columns
   WHERE status OPERATOR(pg_catalog.=) 'plaintext' AND label OPERATOR(pg_catalog.<>) 'public';
REVOKE ALL ON envelope.unprotected_columns FROM PUBLIC;
GRANT SELECT ON envelope.unprotected_columns TO PUBLIC;
-- Luhn check of a card number (digits, spaces and dashes; 13 to 19 digits).
CREATE FUNCTION envelope.luhn_valid(card text) RETURNS boolean LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  SET search_path = pg_catalog, pg_temp AS $f$
  SELECT card OPERATOR(pg_catalog.~) '^[0-9][0-9 -]{11,}[0-9]$'
     AND d OPERATOR(pg_catalog.!~) '^0+$'
     AND pg_catalog.length(d) OPERATOR(pg_catalog.>=) 13 AND pg_catalog.length(d) OPERATOR(pg_catalog.<=) 19
     AND (SELECT (pg_catalog.sum(CASE WHEN (i OPERATOR(pg_catalog.%) 2) OPERATOR(pg_catalog.=) 0
                                     THEN ((x OPERATOR(pg_catalog.*) 2) OPERATOR(pg_catalog.%) 10)
                                          OPERATOR(pg_catalog.+) ((x OPERATOR(pg_catalog.*) 2) OPERATOR(pg_catalog./) 10)
                                     ELSE x END) OPERATOR(pg_catalog.%) 10) OPERATOR(pg_catalog.=) 0
            FROM (SELECT i, pg_catalog.substr(pg_catalog.reverse(d), i, 1)::pg_catalog.int4 AS x
                    FROM pg_catalog.generate_series(1, pg_catalog.length(d)) AS i) AS digits)
    FROM (SELECT pg_catalog.regexp_replace(card, '[^0-9]', '', 'g') AS d) AS s
$f$;
-- Suggests labels for columns nobody has labelled yet: by the column's name, and by the
-- shape of a sample of its values (text columns the caller may read). Returns counts
-- only, never a value. Runs as the caller: it reads only what the caller may read.
CREATE FUNCTION envelope.suggest_classification(tbl regclass DEFAULT NULL, sample_rows integer DEFAULT 1000)
  RETURNS TABLE (relation regclass, column_name name, suggested_label text, reason text, sampled bigint, matched bigint)
  LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
  r record;
  n pg_catalog.text;
  stats record;
  names constant pg_catalog.text[][] := ARRAY[
    ['(^|_)e_?mail(_|$)|email', 'pii', 'email'],
    ['(^|_)(phone|mobile|cell|fax|tel|telephone|msisdn)(_|$)|phone', 'pii', 'phone number'],
    ['(^|_)(ssn|sin|nino|social_security|national_id|passport|tax_id|tin|driver_?licen[cs]e)(_|$)', 'pii', 'national identifier'],
    ['(^|_)(dob|birth|birthdate|birthday|date_of_birth)(_|$)|birth', 'pii', 'date of birth'],
    ['(^|_)(first|last|full|given|family|middle|sur)_?name(_|$)', 'pii', 'person name'],
    ['(^|_)(address|street|postcode|postal_code|zip|zipcode|ip_address)(_|$)', 'pii', 'address'],
    ['(^|_)(iban|bic|swift|account_?(no|num|number)|routing_?(no|num|number)|bank_account)(_|$)', 'pii', 'bank account'],
    ['(^|_)(card|card_?(no|num|number)|cc_?(no|num|number)|pan|cvv|cvc|credit_?card)(_|$)', 'pci', 'payment card'],
    ['(^|_)(diagnosis|diagnoses|medical|icd10?|mrn|patient|prescription|medication|allerg(y|ies)|health|condition)(_|$)', 'phi', 'health data'],
    ['(^|_)(password|passwd|pwd|secret|token|api_?key|private_?key|credentials?)(_|$)', 'secret', 'credential']];
BEGIN
  IF sample_rows IS NULL OR sample_rows OPERATOR(pg_catalog.<) 0 THEN
    RAISE EXCEPTION 'sample_rows must be zero or more' USING ERRCODE = '22023';
  END IF;
  FOR r IN
    SELECT c.oid::pg_catalog.regclass AS rel, a.attname, t.typcategory
      FROM pg_catalog.pg_class c
      JOIN pg_catalog.pg_namespace s ON s.oid OPERATOR(pg_catalog.=) c.relnamespace
      JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) c.oid
      JOIN pg_catalog.pg_type t ON t.oid OPERATOR(pg_catalog.=) a.atttypid
     WHERE c.relkind OPERATOR(pg_catalog.=) ANY (ARRAY['r', 'p', 'm', 'f']::pg_catalog."char"[])
       AND (suggest_classification.tbl IS NULL OR c.oid OPERATOR(pg_catalog.=) suggest_classification.tbl)
       AND s.nspname OPERATOR(pg_catalog.<>) ALL (ARRAY['pg_catalog', 'information_schema', 'envelope', 'pg_toast'])
       AND s.nspname OPERATOR(pg_catalog.!~) '^pg_(toast_)?temp_'
       AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped
       AND t.typnamespace OPERATOR(pg_catalog.<>) 'envelope'::pg_catalog.regnamespace
       AND pg_catalog.has_schema_privilege(s.oid, 'USAGE')
       AND pg_catalog.has_column_privilege(c.oid, a.attnum, 'SELECT')
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_seclabel l
                        WHERE l.provider OPERATOR(pg_catalog.=) 'pg_envelope'
                          AND l.classoid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
                          AND l.objoid OPERATOR(pg_catalog.=) c.oid AND l.objsubid OPERATOR(pg_catalog.=) a.attnum)
     ORDER BY c.oid, a.attnum
  LOOP
    n := pg_catalog.lower(r.attname::pg_catalog.text);
    suggested_label := NULL;
    FOR i IN 1 .. pg_catalog.array_length(names, 1) LOOP
      IF n OPERATOR(pg_catalog.~) names[i][1] THEN
        suggested_label := names[i][2];
        reason := 'name looks like ' OPERATOR(pg_catalog.||) names[i][3];
        EXIT;
      END IF;
    END LOOP;
    sampled := NULL; matched := NULL;
    IF r.typcategory OPERATOR(pg_catalog.=) 'S' AND sample_rows OPERATOR(pg_catalog.>) 0 THEN
      EXECUTE pg_catalog.format(
        'SELECT pg_catalog.count(*) AS total, '
        'pg_catalog.count(*) FILTER (WHERE v OPERATOR(pg_catalog.~) %L) AS email, '
        'pg_catalog.count(*) FILTER (WHERE envelope.luhn_valid(v)) AS card, '
        'pg_catalog.count(*) FILTER (WHERE v OPERATOR(pg_catalog.~) %L) AS ssn, '
        'pg_catalog.count(*) FILTER (WHERE v OPERATOR(pg_catalog.~) %L) AS iban, '
        'pg_catalog.count(*) FILTER (WHERE v OPERATOR(pg_catalog.~) %L AND v OPERATOR(pg_catalog.!~) %L '
        '  AND pg_catalog.length(pg_catalog.regexp_replace(v, %L, %L, %L)) BETWEEN 10 AND 15) AS phone '
        'FROM (SELECT CAST(%I AS pg_catalog.text) AS v FROM %s WHERE %I IS NOT NULL LIMIT %s) AS sample',
        '^[^@[:space:]]+@[^@[:space:]]+\.[^@[:space:]]+$', '^[0-9]{3}-[0-9]{2}-[0-9]{4}$',
        '^[A-Z]{2}[0-9]{2}( ?[A-Z0-9]){11,30}$', '^\+?[0-9 ().-]{9,24}$', '^[0-9]{4}-[0-9]{2}-[0-9]{2}',
        '[^0-9]', '', 'g', r.attname, r.rel, r.attname, sample_rows) INTO stats;
      IF stats.total OPERATOR(pg_catalog.>) 0 THEN
        sampled := stats.total;
        -- Most specific shape first; a shape counts when at least half the sample has it.
        IF (2 OPERATOR(pg_catalog.*) stats.card) OPERATOR(pg_catalog.>=) stats.total THEN
          suggested_label := 'pci'; reason := 'values look like payment card numbers (Luhn-valid)'; matched := stats.card;
        ELSIF (2 OPERATOR(pg_catalog.*) stats.ssn) OPERATOR(pg_catalog.>=) stats.total THEN
          suggested_label := 'pii'; reason := 'values look like US social security numbers'; matched := stats.ssn;
        ELSIF (2 OPERATOR(pg_catalog.*) stats.email) OPERATOR(pg_catalog.>=) stats.total THEN
          suggested_label := 'pii'; reason := 'values look like email addresses'; matched := stats.email;
        ELSIF (2 OPERATOR(pg_catalog.*) stats.iban) OPERATOR(pg_catalog.>=) stats.total THEN
          suggested_label := 'pii'; reason := 'values look like IBANs'; matched := stats.iban;
        ELSIF (2 OPERATOR(pg_catalog.*) stats.phone) OPERATOR(pg_catalog.>=) stats.total THEN
          suggested_label := 'pii'; reason := 'values look like phone numbers'; matched := stats.phone;
        END IF;
      END IF;
    END IF;
    IF suggested_label IS NOT NULL THEN
      relation := r.rel; column_name := r.attname;
      RETURN NEXT;
    END IF;
  END LOOP;
END
$f$;

-- Audit trail and key usage (docs/access.md). envelope.audit (off, log, table, all)
-- chooses where records go; the table is written by the database's audit writer, a
-- background worker, in its own transactions. Only the extension's owner reads it.
CREATE TABLE envelope.audit_log (
  seq               bigint PRIMARY KEY,
  logged_at         timestamptz NOT NULL,
  statement_at      timestamptz,
  event             text NOT NULL,
  key_name          text,
  key_version       integer,
  object            text,
  value_count       bigint,
  session_user_name text,
  current_user_name text,
  application_name  text,
  client_addr       text,
  database_name     text,
  backend_pid       integer,
  query_id          bigint,
  detail            text,
  prev_hash         bytea,
  hash              bytea NOT NULL
);
CREATE INDEX audit_log_logged_at ON envelope.audit_log (logged_at);
SELECT pg_catalog.pg_extension_config_dump('envelope.audit_log', '');
REVOKE ALL ON envelope.audit_log FROM PUBLIC;
GRANT SELECT ON envelope.audit_log TO @extowner@ WITH GRANT OPTION;
-- SHA-256 over every field but the hash (length-prefixed, time in UTC microseconds),
-- including the previous row's hash: a chain.
CREATE FUNCTION envelope.audit_hash(r envelope.audit_log) RETURNS bytea LANGUAGE sql STABLE PARALLEL SAFE
  SET search_path = pg_catalog, pg_temp AS $f$
  SELECT pg_catalog.sha256(pg_catalog.convert_to(pg_catalog.string_agg(
           CASE WHEN f IS NULL THEN '-' ELSE pg_catalog.length(f)::pg_catalog.text OPERATOR(pg_catalog.||) ':'
                OPERATOR(pg_catalog.||) f END, ';' ORDER BY i), 'UTF8'))
    FROM pg_catalog.unnest(ARRAY[
      r.seq::pg_catalog.text,
      pg_catalog.to_char(r.logged_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'),
      pg_catalog.to_char(r.statement_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'),
      r.event, r.key_name, r.key_version::pg_catalog.text, r.object, r.value_count::pg_catalog.text,
      r.session_user_name, r.current_user_name, r.application_name, r.client_addr, r.database_name,
      r.backend_pid::pg_catalog.text, r.query_id::pg_catalog.text, r.detail,
      pg_catalog.encode(r.prev_hash, 'hex')]::pg_catalog.text[]) WITH ORDINALITY AS u(f, i)
$f$;
-- Checks the chain: each row's hash, each link to the row before, no gap in seq.
-- `ok` false names the first row that does not hold. Rows removed by retention are
-- from the start: the oldest remaining row's prev_hash is then taken as given.
CREATE FUNCTION envelope.audit_verify(OUT ok boolean, OUT rows_checked bigint, OUT first_bad_seq bigint,
    OUT problem text, OUT head_seq bigint, OUT head_hash text)
  LANGUAGE plpgsql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
  r envelope.audit_log;
  prev envelope.audit_log;
BEGIN
  ok := true; rows_checked := 0;
  FOR r IN SELECT * FROM envelope.audit_log ORDER BY seq LOOP
    IF r.hash IS DISTINCT FROM envelope.audit_hash(r) THEN
      problem := 'the row does not match its hash';
    ELSIF prev.seq IS NOT NULL AND r.seq OPERATOR(pg_catalog.<>) (prev.seq OPERATOR(pg_catalog.+) 1) THEN
      problem := 'rows before it are missing';
    ELSIF prev.seq IS NOT NULL AND r.prev_hash IS DISTINCT FROM prev.hash THEN
      problem := 'it does not link to the row before';
    END IF;
    IF problem IS NOT NULL THEN
      ok := false; first_bad_seq := r.seq;
      RETURN;
    END IF;
    rows_checked := rows_checked OPERATOR(pg_catalog.+) 1;
    prev := r;
  END LOOP;
  head_seq := prev.seq;
  head_hash := pg_catalog.encode(prev.hash, 'hex');
END
$f$;
REVOKE ALL ON FUNCTION envelope.audit_verify() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION envelope.audit_verify() TO @extowner@ WITH GRANT OPTION;

CREATE FUNCTION envelope.key_usage_counts(OUT key_id integer, OUT version integer, OUT encrypts bigint,
    OUT decrypts bigint, OUT denials bigint, OUT withheld bigint, OUT failures bigint, OUT last_used timestamptz)
  RETURNS SETOF record AS 'MODULE_PATHNAME', 'envelope_key_usage_counts' LANGUAGE C VOLATILE PARALLEL RESTRICTED;
CREATE FUNCTION envelope.key_usage_reset() RETURNS void
  AS 'MODULE_PATHNAME', 'envelope_key_usage_reset' LANGUAGE C VOLATILE PARALLEL UNSAFE;
-- Per key and DEK version of this database, since the server started (or
-- key_usage_reset()): values encrypted, decrypted, refused (no privilege), withheld (a
-- protected column read as ciphertext), failed authentication, and the last use.
-- How many values reference a version is counted by a scan: envelope.key_columns().
CREATE VIEW envelope.key_usage AS
  SELECT k.name AS key_name, d.version, d.state AS version_state,
         COALESCE(u.encrypts, 0) AS encrypts, COALESCE(u.decrypts, 0) AS decrypts,
         COALESCE(u.denials, 0) AS denials, COALESCE(u.withheld, 0) AS withheld,
         COALESCE(u.failures, 0) AS failures, u.last_used
    FROM envelope.data_key d
    JOIN envelope.key k ON k.key_id OPERATOR(pg_catalog.=) d.key_id
    LEFT JOIN envelope.key_usage_counts() u ON u.key_id OPERATOR(pg_catalog.=) d.key_id
                                           AND u.version OPERATOR(pg_catalog.=) d.version;
REVOKE ALL ON envelope.key_usage FROM PUBLIC;
REVOKE ALL ON FUNCTION envelope.key_usage_counts(), envelope.key_usage_reset() FROM PUBLIC;
GRANT SELECT ON envelope.key_usage TO @extowner@ WITH GRANT OPTION;
GRANT EXECUTE ON FUNCTION envelope.key_usage_counts(), envelope.key_usage_reset() TO @extowner@ WITH GRANT OPTION;

-- Key lifecycle: re-encryption onto the current DEK version, or to another key
-- (docs/lifecycle.md).
CREATE FUNCTION envelope.on_current_key(value envelope.encrypted_text, key text DEFAULT NULL) RETURNS boolean
  AS 'MODULE_PATHNAME', 'envelope_on_current_key' LANGUAGE C STABLE PARALLEL SAFE;
CREATE FUNCTION envelope.on_current_key(value envelope.encrypted_bytea, key text DEFAULT NULL) RETURNS boolean
  AS 'MODULE_PATHNAME', 'envelope_on_current_key' LANGUAGE C STABLE PARALLEL SAFE;
CREATE FUNCTION envelope.on_current_key(value envelope.encrypted_jsonb, key text DEFAULT NULL) RETURNS boolean
  AS 'MODULE_PATHNAME', 'envelope_on_current_key' LANGUAGE C STABLE PARALLEL SAFE;
CREATE FUNCTION envelope.on_current_key(value envelope.protected_text) RETURNS boolean
  AS 'MODULE_PATHNAME', 'envelope_protected_text_on_current_key' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION envelope.on_current_key(value envelope.protected_bytea) RETURNS boolean
  AS 'MODULE_PATHNAME', 'envelope_protected_bytea_on_current_key' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION envelope.on_current_key(value envelope.protected_jsonb) RETURNS boolean
  AS 'MODULE_PATHNAME', 'envelope_protected_jsonb_on_current_key' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION envelope.reencrypt_field(value envelope.encrypted_text, context text DEFAULT NULL, key text DEFAULT NULL)
  RETURNS envelope.encrypted_text AS 'MODULE_PATHNAME', 'envelope_reencrypt_text' LANGUAGE C VOLATILE PARALLEL SAFE;
CREATE FUNCTION envelope.reencrypt_field(value envelope.encrypted_bytea, context text DEFAULT NULL, key text DEFAULT NULL)
  RETURNS envelope.encrypted_bytea AS 'MODULE_PATHNAME', 'envelope_reencrypt_bytea' LANGUAGE C VOLATILE PARALLEL SAFE;
CREATE FUNCTION envelope.reencrypt_field(value envelope.encrypted_jsonb, context text DEFAULT NULL, key text DEFAULT NULL)
  RETURNS envelope.encrypted_jsonb AS 'MODULE_PATHNAME', 'envelope_reencrypt_jsonb' LANGUAGE C VOLATILE PARALLEL SAFE;
CREATE FUNCTION envelope.reseal(value envelope.protected_text) RETURNS envelope.protected_text
  AS 'MODULE_PATHNAME', 'envelope_reseal_text' LANGUAGE C VOLATILE STRICT PARALLEL SAFE;
CREATE FUNCTION envelope.reseal(value envelope.protected_bytea) RETURNS envelope.protected_bytea
  AS 'MODULE_PATHNAME', 'envelope_reseal_bytea' LANGUAGE C VOLATILE STRICT PARALLEL SAFE;
CREATE FUNCTION envelope.reseal(value envelope.protected_jsonb) RETURNS envelope.protected_jsonb
  AS 'MODULE_PATHNAME', 'envelope_reseal_jsonb' LANGUAGE C VOLATILE STRICT PARALLEL SAFE;
CREATE TABLE envelope.reencryption (
  tbl           oid NOT NULL,
  col           name NOT NULL,
  target_key    text,          -- NULL: each value's own key
  rows_total    bigint NOT NULL,
  rows_done     bigint NOT NULL,
  next_block    bigint NOT NULL,
  passes        integer NOT NULL,
  pid           integer,
  started_at    timestamptz NOT NULL,
  resumed_at    timestamptz,
  rows_at_resume bigint NOT NULL DEFAULT 0,
  last_batch_at timestamptz,
  finished_at   timestamptz,
  error         text,          -- why a background run stopped ('cancelled', or its error)
  context_column name,         -- the run's context_column (a scheduled re-encryption reuses it)
  PRIMARY KEY (tbl, col)
);
REVOKE ALL ON envelope.reencryption FROM PUBLIC;
-- Whether a column's re-encryption is running: its backend busy with a statement begun
-- before its last batch. SECURITY DEFINER because pg_stat_activity hides other roles'
-- state and query_start from the owner watching a run started by another role.
CREATE FUNCTION envelope.reencryption_running(tbl oid, col name) RETURNS boolean
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
  SELECT EXISTS (SELECT 1 FROM envelope.reencryption r
                   JOIN pg_catalog.pg_stat_activity a ON a.pid OPERATOR(pg_catalog.=) r.pid
                  WHERE r.tbl OPERATOR(pg_catalog.=) $1 AND r.col OPERATOR(pg_catalog.=) $2
                    AND r.finished_at IS NULL AND a.state OPERATOR(pg_catalog.=) 'active'
                    AND a.query_start OPERATOR(pg_catalog.<=) COALESCE(r.last_batch_at, r.resumed_at, r.started_at))
$f$;
-- In the style of pg_stat_progress_*: one row per column re-encrypted (the latest run),
-- for the table's owners.
CREATE VIEW envelope.reencryption_progress WITH (security_barrier) AS
  SELECT r.tbl::pg_catalog.regclass AS relation, r.col AS column_name, r.target_key,
         CASE WHEN r.finished_at IS NOT NULL THEN 'done'
              WHEN envelope.reencryption_running(r.tbl, r.col) THEN 'running'
              ELSE 'interrupted' END AS phase,
         r.rows_done, r.rows_total,
         CASE WHEN r.rows_total OPERATOR(pg_catalog.>) 0
              THEN pg_catalog.round(100.0 OPERATOR(pg_catalog.*) LEAST(r.rows_done, r.rows_total)
                                    OPERATOR(pg_catalog./) r.rows_total, 1) END AS percent,
         CASE WHEN r.last_batch_at OPERATOR(pg_catalog.>) COALESCE(r.resumed_at, r.started_at)
              THEN pg_catalog.round((r.rows_done OPERATOR(pg_catalog.-) r.rows_at_resume) OPERATOR(pg_catalog./)
                     pg_catalog.date_part('epoch', r.last_batch_at OPERATOR(pg_catalog.-) COALESCE(r.resumed_at, r.started_at)))
              END AS rows_per_second,
         r.passes, r.pid, r.started_at, r.resumed_at, r.last_batch_at, r.finished_at, r.error
    FROM envelope.reencryption r JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) r.tbl
   WHERE pg_catalog.pg_has_role(c.relowner, 'USAGE');
REVOKE ALL ON envelope.reencryption_progress FROM PUBLIC;
GRANT SELECT ON envelope.reencryption_progress TO PUBLIC;
CREATE PROCEDURE envelope.reencrypt(tbl regclass, col name, context_column name DEFAULT NULL, key text DEFAULT NULL,
    batch_blocks integer DEFAULT 8, pause_ms integer DEFAULT 0)
  AS 'MODULE_PATHNAME', 'envelope_reencrypt' LANGUAGE C;
REVOKE ALL ON FUNCTION
  envelope.on_current_key(envelope.encrypted_text, text), envelope.on_current_key(envelope.encrypted_bytea, text),
  envelope.on_current_key(envelope.encrypted_jsonb, text), envelope.on_current_key(envelope.protected_text),
  envelope.on_current_key(envelope.protected_bytea), envelope.on_current_key(envelope.protected_jsonb),
  envelope.reencrypt_field(envelope.encrypted_text, text, text), envelope.reencrypt_field(envelope.encrypted_bytea, text, text),
  envelope.reencrypt_field(envelope.encrypted_jsonb, text, text), envelope.reseal(envelope.protected_text),
  envelope.reseal(envelope.protected_bytea), envelope.reseal(envelope.protected_jsonb)
  FROM PUBLIC;
REVOKE ALL ON PROCEDURE envelope.reencrypt(regclass, name, name, text, integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
  envelope.on_current_key(envelope.encrypted_text, text), envelope.on_current_key(envelope.encrypted_bytea, text),
  envelope.on_current_key(envelope.encrypted_jsonb, text), envelope.on_current_key(envelope.protected_text),
  envelope.on_current_key(envelope.protected_bytea), envelope.on_current_key(envelope.protected_jsonb),
  envelope.reencrypt_field(envelope.encrypted_text, text, text), envelope.reencrypt_field(envelope.encrypted_bytea, text, text),
  envelope.reencrypt_field(envelope.encrypted_jsonb, text, text), envelope.reseal(envelope.protected_text),
  envelope.reseal(envelope.protected_bytea), envelope.reseal(envelope.protected_jsonb)
  TO @extowner@ WITH GRANT OPTION;
GRANT EXECUTE ON PROCEDURE envelope.reencrypt(regclass, name, name, text, integer, integer) TO @extowner@ WITH GRANT OPTION;
-- The same run in a background worker that outlives the session (as the current role);
-- returns the worker's PID. cancel_reencryption() stops a column's run (a worker's or a
-- session's CALL), for the table's owners.
CREATE FUNCTION envelope.start_reencryption(tbl regclass, col name, context_column name DEFAULT NULL,
    key text DEFAULT NULL, batch_blocks integer DEFAULT 8, pause_ms integer DEFAULT 0) RETURNS integer
  AS 'MODULE_PATHNAME', 'envelope_start_reencryption' LANGUAGE C VOLATILE PARALLEL UNSAFE;
CREATE FUNCTION envelope.cancel_reencryption(tbl regclass, col name) RETURNS boolean
  AS 'MODULE_PATHNAME', 'envelope_cancel_reencryption' LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
REVOKE ALL ON FUNCTION envelope.start_reencryption(regclass, name, name, text, integer, integer),
  envelope.cancel_reencryption(regclass, name) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION envelope.start_reencryption(regclass, name, name, text, integer, integer),
  envelope.cancel_reencryption(regclass, name) TO @extowner@ WITH GRANT OPTION;
-- Which DEK version of a key a value uses (NULL: another key), without decrypting.
CREATE FUNCTION envelope.key_version_of(value envelope.encrypted_text, key text) RETURNS integer
  AS 'MODULE_PATHNAME', 'envelope_key_version_of' LANGUAGE C STABLE PARALLEL SAFE;
CREATE FUNCTION envelope.key_version_of(value envelope.encrypted_bytea, key text) RETURNS integer
  AS 'MODULE_PATHNAME', 'envelope_key_version_of' LANGUAGE C STABLE PARALLEL SAFE;
CREATE FUNCTION envelope.key_version_of(value envelope.encrypted_jsonb, key text) RETURNS integer
  AS 'MODULE_PATHNAME', 'envelope_key_version_of' LANGUAGE C STABLE PARALLEL SAFE;
CREATE FUNCTION envelope.key_version_of(value envelope.protected_text, key text) RETURNS integer
  AS 'MODULE_PATHNAME', 'envelope_protected_text_key_version_of' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION envelope.key_version_of(value envelope.protected_bytea, key text) RETURNS integer
  AS 'MODULE_PATHNAME', 'envelope_protected_bytea_key_version_of' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION envelope.key_version_of(value envelope.protected_jsonb, key text) RETURNS integer
  AS 'MODULE_PATHNAME', 'envelope_protected_jsonb_key_version_of' LANGUAGE C STABLE STRICT PARALLEL SAFE;
-- Every column holding values of a key, and how many values use each DEK version: a
-- scan of every envelope.encrypted_* and protected column the caller may read (as the
-- caller). `complete` is false when some such column could not be read by the caller.
CREATE FUNCTION envelope.key_columns(key text, strict boolean DEFAULT false)
  RETURNS TABLE (relation regclass, column_name name, version integer, value_count bigint)
  LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
  r record;
  counted record;
BEGIN
  IF key IS NULL THEN
    RAISE EXCEPTION 'key must not be null' USING ERRCODE = '22004';
  END IF;
  FOR r IN
    SELECT c.oid::pg_catalog.regclass AS rel, a.attname,
           (pg_catalog.has_schema_privilege(c.relnamespace, 'USAGE')
            AND pg_catalog.has_column_privilege(c.oid, a.attnum, 'SELECT')) AS readable
      FROM pg_catalog.pg_attribute a
      JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) a.attrelid
      JOIN pg_catalog.pg_type t ON t.oid OPERATOR(pg_catalog.=) a.atttypid
     WHERE c.relkind OPERATOR(pg_catalog.=) ANY (ARRAY['r', 'p', 'm']::pg_catalog."char"[])
       AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped
       AND t.typnamespace OPERATOR(pg_catalog.=) 'envelope'::pg_catalog.regnamespace
       AND t.typname OPERATOR(pg_catalog.=) ANY (ARRAY['encrypted_text', 'encrypted_bytea', 'encrypted_jsonb',
                                                       'protected_text', 'protected_bytea', 'protected_jsonb']::pg_catalog.name[])
     ORDER BY c.oid, a.attnum
  LOOP
    IF NOT r.readable THEN
      IF strict THEN
        RAISE EXCEPTION 'pg_envelope: column % of % cannot be scanned: permission denied', r.attname, r.rel
          USING ERRCODE = '42501',
                HINT = 'Every encrypted column must be read to count the values of a key; run it as a role that may read them all.';
      END IF;
      RAISE WARNING 'pg_envelope: column % of % was not scanned: permission denied', r.attname, r.rel
        USING HINT = 'Run envelope.key_columns() as a role that may read every encrypted column.';
      CONTINUE;
    END IF;
    -- ONLY: a partition is listed (and counted) by itself. (On a Citus coordinator a
    -- distributed table's query, ONLY or not, reads its shards, which are hidden from
    -- the list above; test_citus.py checks it.)
    -- The relation and column are this node's (a query Citus pushes down would name
    -- the shard's relation on the worker).
    FOR counted IN EXECUTE pg_catalog.format(
      'SELECT v, pg_catalog.count(*) AS n '
      'FROM (SELECT envelope.key_version_of(%I, $1) AS v FROM ONLY %s) AS s WHERE v IS NOT NULL GROUP BY v ORDER BY v',
      r.attname, r.rel) USING key
    LOOP
      relation := r.rel;
      column_name := r.attname;
      version := counted.v;
      value_count := counted.n;
      RETURN NEXT;
    END LOOP;
  END LOOP;
END
$f$;
REVOKE ALL ON FUNCTION
  envelope.key_version_of(envelope.encrypted_text, text), envelope.key_version_of(envelope.encrypted_bytea, text),
  envelope.key_version_of(envelope.encrypted_jsonb, text), envelope.key_version_of(envelope.protected_text, text),
  envelope.key_version_of(envelope.protected_bytea, text), envelope.key_version_of(envelope.protected_jsonb, text),
  envelope.key_columns(text, boolean)
  FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
  envelope.key_version_of(envelope.encrypted_text, text), envelope.key_version_of(envelope.encrypted_bytea, text),
  envelope.key_version_of(envelope.encrypted_jsonb, text), envelope.key_version_of(envelope.protected_text, text),
  envelope.key_version_of(envelope.protected_bytea, text), envelope.key_version_of(envelope.protected_jsonb, text),
  envelope.key_columns(text, boolean)
  TO @extowner@ WITH GRANT OPTION;

-- Retirement of the DEK versions nothing references (by a scan: key_columns(key, true))
-- and the proof that a destroyed key is gone from this server (docs/lifecycle.md).
CREATE FUNCTION envelope.retire_unreferenced_versions(key text)
  RETURNS TABLE (version integer, values_referencing bigint, retired boolean, kept text)
  AS 'MODULE_PATHNAME', 'envelope_retire_unreferenced_versions' LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
CREATE FUNCTION envelope.verify_destroyed(key text)
  RETURNS TABLE (check_name text, ok boolean, detail text)
  AS 'MODULE_PATHNAME', 'envelope_verify_destroyed' LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
REVOKE ALL ON FUNCTION envelope.retire_unreferenced_versions(text), envelope.verify_destroyed(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION envelope.retire_unreferenced_versions(text), envelope.verify_destroyed(text)
  TO @extowner@ WITH GRANT OPTION;
-- Scheduled rotation: a per-key policy carried out by the pg_envelope scheduler, a
-- background worker in each database of envelope.scheduler_databases.
CREATE TABLE envelope.rotation_policy (
  key_id           integer PRIMARY KEY REFERENCES envelope.key (key_id) ON DELETE CASCADE,
  rotate_every     interval NOT NULL,
  reencrypt        boolean NOT NULL DEFAULT false,  -- re-encrypt the key's protected columns afterwards
  rewrap           boolean NOT NULL DEFAULT false,  -- re-wrap its DEKs when the KMS reports a new KEK version
  next_rotation_at timestamptz NOT NULL,
  last_rotated_at  timestamptz,
  last_run_at      timestamptz,
  last_error       text,
  set_by           oid NOT NULL,
  kek_checked_at   timestamptz,  -- when the scheduler last asked the KMS (rewrap)
  kek_version      text,         -- the KEK version it reported
  last_rewrapped_at timestamptz  -- when the scheduler last re-wrapped the key's DEKs
);
SELECT pg_catalog.pg_extension_config_dump('envelope.rotation_policy', '');
REVOKE ALL ON envelope.rotation_policy FROM PUBLIC;
CREATE VIEW envelope.rotation_schedule AS
  SELECT k.name AS key_name, k.current_version, p.rotate_every, p.reencrypt, p.rewrap, p.last_rotated_at,
         p.next_rotation_at, p.last_run_at, p.last_error, p.set_by::pg_catalog.regrole AS set_by,
         p.kek_version, p.kek_checked_at, p.last_rewrapped_at
    FROM envelope.rotation_policy p JOIN envelope.key k ON k.key_id OPERATOR(pg_catalog.=) p.key_id;
REVOKE ALL ON envelope.rotation_schedule FROM PUBLIC;
GRANT SELECT ON envelope.rotation_schedule TO @extowner@ WITH GRANT OPTION;
CREATE FUNCTION envelope.set_rotation_policy(key text, rotate_every interval, reencrypt boolean DEFAULT false,
    rewrap boolean DEFAULT false) RETURNS timestamptz
  AS 'MODULE_PATHNAME', 'envelope_set_rotation_policy' LANGUAGE C VOLATILE PARALLEL UNSAFE;
CREATE FUNCTION envelope.clear_rotation_policy(key text) RETURNS boolean
  AS 'MODULE_PATHNAME', 'envelope_clear_rotation_policy' LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
REVOKE ALL ON FUNCTION envelope.set_rotation_policy(text, interval, boolean, boolean),
  envelope.clear_rotation_policy(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION envelope.set_rotation_policy(text, interval, boolean, boolean),
  envelope.clear_rotation_policy(text) TO @extowner@ WITH GRANT OPTION;
ALTER TABLE envelope.key ADD COLUMN destroyed_filenode oid;  -- envelope.data_key's file when the key was destroyed

-- KEK versions: when each DEK was last wrapped, which envelope.kek_status() compares
-- with the time the KMS made its KEK's current version (AWS, GCP: their ciphertexts do
-- not name it). DEKs from before have their creation time (at worst one extra rewrap).
ALTER TABLE envelope.data_key ADD COLUMN wrapped_at timestamptz;
UPDATE envelope.data_key SET wrapped_at = created_at;
ALTER TABLE envelope.data_key ALTER COLUMN wrapped_at SET DEFAULT pg_catalog.now(),
  ALTER COLUMN wrapped_at SET NOT NULL;
CREATE FUNCTION envelope.kek_status(key text, OUT kms text, OUT kek text, OUT kek_version text,
    OUT kek_version_created timestamptz, OUT data_keys integer, OUT data_keys_behind integer,
    OUT versions_behind integer[]) RETURNS record
  AS 'MODULE_PATHNAME', 'envelope_kek_status' LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
REVOKE ALL ON FUNCTION envelope.kek_status(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION envelope.kek_status(text) TO @extowner@ WITH GRANT OPTION;

-- create_key reads the newest DEK of a KMS backward through this index (a constant-time
-- read however many keys exist; see key_catalog::newest_live_dek).
CREATE INDEX data_key_created_at ON envelope.data_key (created_at);

-- Citus: key changes made on the coordinator are applied on every worker in the same
-- transaction (see src/pg/citus_sync.hpp, docs/citus.md). apply_key_changes is what
-- the coordinator runs on the workers (superuser only); citus_sync_keys copies every
-- key to every worker (a worker added later, a repair).
CREATE FUNCTION envelope.apply_key_changes(changes pg_catalog.jsonb) RETURNS void
  AS 'MODULE_PATHNAME', 'envelope_apply_key_changes' LANGUAGE C VOLATILE PARALLEL UNSAFE;
REVOKE ALL ON FUNCTION envelope.apply_key_changes(pg_catalog.jsonb) FROM PUBLIC;
CREATE FUNCTION envelope.citus_sync_keys() RETURNS bigint
  AS 'MODULE_PATHNAME', 'envelope_citus_sync_keys' LANGUAGE C VOLATILE PARALLEL UNSAFE;
REVOKE ALL ON FUNCTION envelope.citus_sync_keys() FROM PUBLIC;

-- The server-wide credential store (issue 15 goal 5; see src/pg/shared_credentials.hpp,
-- docs/cache.md): counters only, never a credential.
CREATE FUNCTION envelope.credential_cache_stats(
    OUT capacity bigint, OUT entries bigint, OUT hits bigint, OUT fetches bigint, OUT waits bigint,
    OUT failures bigint, OUT invalidations bigint, OUT not_shared bigint, OUT core_dump_excluded boolean)
  AS 'MODULE_PATHNAME', 'envelope_credential_cache_stats' LANGUAGE C VOLATILE PARALLEL SAFE;
REVOKE ALL ON FUNCTION envelope.credential_cache_stats() FROM PUBLIC;
