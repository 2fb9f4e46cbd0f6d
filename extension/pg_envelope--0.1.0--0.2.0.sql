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
