// KMS configuration: envelope.create_kms(), alter_kms(), drop_kms(). Not executable
// by PUBLIC. Options are validated by building the provider, and never hold secrets.
#include "pg/guard.hpp"

#include "pg/key_store.hpp"
#include "pg/kms_registry.hpp"
#include "pg/shared_state.hpp"

using namespace pg_envelope;

namespace {

std::string text_arg(FunctionCallInfo fcinfo, int n, const char* what) {
  if (PG_ARGISNULL(n)) throw Error(sqlstate::kNullValueNotAllowed, std::string(what) + " must not be null");
  Datum d = PG_GETARG_DATUM(n);
  char* s = pg_call([d] { return TextDatumGetCString(d); });
  std::string out(s);
  pfree(s);
  return out;
}

// jsonb argument as text (the options are stored as jsonb; the providers read JSON).
std::string jsonb_arg(FunctionCallInfo fcinfo, int n) {
  if (PG_ARGISNULL(n)) return "{}";
  Datum d = PG_GETARG_DATUM(n);
  char* s = DatumGetCString(pg_call([d] { return DirectFunctionCall1(jsonb_out, d); }));
  std::string out(s);
  pfree(s);
  return out;
}

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
    throw Error("42501", std::string("permission denied to ") + what,
                "A KMS configuration decides where the server's KMS credentials are sent and which server files "
                "are read as credentials, so only superusers may create or alter one.");
}

KmsConfig existing(const std::string& name) {
  if (name == "local")
    throw Error(sqlstate::kInvalidParameterValue, "the built-in KMS \"local\" cannot be altered or dropped");
  std::optional<KmsConfig> cfg = key_store::find_kms(name);
  if (!cfg)
    throw Error(sqlstate::kUndefinedObject, "KMS \"" + name + "\" does not exist", "",
                "envelope.kms_configs lists the configured KMSs.");
  return std::move(*cfg);
}

}  // namespace

// create_kms(name text, provider text, options jsonb DEFAULT '{}') RETURNS void
PGENV_FUNCTION(envelope_create_kms) {
  require_preloaded();
  require_superuser("create a KMS");
  KmsConfig cfg{text_arg(fcinfo, 0, "KMS name"), text_arg(fcinfo, 1, "provider"), jsonb_arg(fcinfo, 2)};
  validate_kms_name(cfg.name);
  build_kms_provider(cfg);  // validates provider and options
  if (cfg.name == "local" || key_store::find_kms(cfg.name))
    throw Error(sqlstate::kDuplicateObject, "KMS \"" + cfg.name + "\" already exists", "",
                "Change its options with envelope.alter_kms().");
  key_store::insert_kms(cfg);
  PG_RETURN_VOID();
}

// alter_kms(name text, options jsonb) RETURNS void: replaces the options.
PGENV_FUNCTION(envelope_alter_kms) {
  require_preloaded();
  require_superuser("alter a KMS");
  KmsConfig cfg = existing(text_arg(fcinfo, 0, "KMS name"));
  if (PG_ARGISNULL(1)) throw Error(sqlstate::kNullValueNotAllowed, "options must not be null");
  cfg.options_json = jsonb_arg(fcinfo, 1);
  build_kms_provider(cfg);
  key_store::update_kms_options(cfg.name, cfg.options_json);
  invalidate_keys_at_commit();
  PG_RETURN_VOID();
}

// drop_kms(name text) RETURNS void: refused while keys use it.
PGENV_FUNCTION(envelope_drop_kms) {
  require_preloaded();
  KmsConfig cfg = existing(text_arg(fcinfo, 0, "KMS name"));
  if (std::int64_t n = key_store::count_keys_using_kms(cfg.name); n > 0)
    throw Error("2BP01", "cannot drop KMS \"" + cfg.name + "\" because keys use it",
                std::to_string(n) + " key(s) in envelope.key refer to it, destroyed keys included.",
                "A KMS can be dropped only when no key, not even a destroyed one, refers to it.");
  key_store::delete_kms(cfg.name);
  invalidate_keys_at_commit();
  PG_RETURN_VOID();
}
