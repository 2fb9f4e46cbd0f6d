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
