// KMS configuration: envelope.create_kms(), alter_kms(), drop_kms(). Not executable
// by PUBLIC. Options are validated by building the provider, and never hold secrets.
#include "pg/guard.hpp"
#include "pg/audit.hpp"

#include "pg/key_catalog.hpp"
#include "pg/key_errors.hpp"
#include "pg/key_admin_sql.hpp"
#include "pg/kms_registry.hpp"
#include "pg/sql_args.hpp"
#include "pg/key_change_commit.hpp"
#include "pg/shared_memory.hpp"

using namespace pg_envelope;

namespace {

void validate_kms_name(const std::string& name) {
  bool ok = !name.empty() && name.size() <= 63;
  for (char c : name)
    ok = ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                c == '-' || c == '.');
  if (!ok)
    throw Error(sqlstate::kInvalidParameterValue, "invalid KMS name",
                "A KMS name is 1 to 63 characters from A-Z, a-z, 0-9 and \"_-.\".");
}

// A KMS configuration decides where the server sends its KMS credentials (tokens
// from its environment or files, signed AWS requests) and which server files it
// reads as tokens: only superusers may create or change one.
void require_superuser(const char* what) {
  if (!superuser())
    throw Error(sqlstate::kInsufficientPrivilege, std::string("permission denied to ") + what,
                "A KMS configuration decides where the server's KMS credentials are sent and which server files "
                "are read as credentials, so only superusers may create or alter one.");
}

KmsConfig existing(const std::string& name) {
  if (name == "local")
    throw Error(sqlstate::kInvalidParameterValue, "the built-in KMS \"local\" cannot be altered or dropped");
  std::optional<KmsConfig> cfg = key_catalog::kms(name);
  if (!cfg) throw_no_such_kms();
  return std::move(*cfg);
}

}  // namespace

// create_kms(name text, provider text, options jsonb DEFAULT '{}') RETURNS void
PGENV_FUNCTION(envelope_create_kms) {
  require_preloaded();
  require_superuser("create a KMS");
  require_writable("create a KMS");
  KmsConfig cfg{text_arg(fcinfo, 0, "KMS name"), text_arg(fcinfo, 1, "provider"), jsonb_arg(fcinfo, 2)};
  validate_kms_name(cfg.name);
  if (cfg.name == "local" || key_catalog::kms(cfg.name))
    throw Error(sqlstate::kDuplicateObject, "KMS \"" + cfg.name + "\" already exists", "",
                "Change its options with envelope.alter_kms().");
  try {
    build_kms_provider(cfg);  // validates provider and options
  } catch (const Error& e) {
    // The new KMS's name names nothing yet.
    throw without(e, "KMS", cfg.name, "the new KMS");
  }
  key_admin_sql::insert_kms(cfg);
  audit::lifecycle("create_kms", "", 0, "kms " + cfg.name + " (" + cfg.provider + ")");
  PG_RETURN_VOID();
}

// alter_kms(name text, options jsonb) RETURNS void: replaces the options.
PGENV_FUNCTION(envelope_alter_kms) {
  require_preloaded();
  require_superuser("alter a KMS");
  require_writable("alter a KMS");
  KmsConfig cfg = existing(text_arg(fcinfo, 0, "KMS name"));
  if (PG_ARGISNULL(1)) throw Error(sqlstate::kNullValueNotAllowed, "options must not be null");
  cfg.options_json = jsonb_arg(fcinfo, 1);
  build_kms_provider(cfg);
  key_admin_sql::update_kms_options(cfg.name, cfg.options_json);
  invalidate_keys_at_commit();
  audit::lifecycle("alter_kms", "", 0, "kms " + cfg.name);
  PG_RETURN_VOID();
}

// drop_kms(name text) RETURNS void: refused while keys use it.
PGENV_FUNCTION(envelope_drop_kms) {
  require_preloaded();
  require_writable("drop a KMS");
  KmsConfig cfg = existing(text_arg(fcinfo, 0, "KMS name"));
  if (std::int64_t n = key_admin_sql::count_keys_using_kms(cfg.name); n > 0)
    throw Error(sqlstate::kDependentObjectsStillExist, "cannot drop KMS \"" + cfg.name + "\" because keys use it",
                std::to_string(n) + " key(s) in envelope.key refer to it, destroyed keys included.",
                "A KMS can be dropped only when no key, not even a destroyed one, refers to it.");
  key_admin_sql::delete_kms(cfg.name);
  invalidate_keys_at_commit();
  audit::lifecycle("drop_kms", "", 0, "kms " + cfg.name);
  PG_RETURN_VOID();
}
