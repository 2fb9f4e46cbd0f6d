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
