// Key management functions: envelope.create_key(), rotate_key(), rewrap_key(),
// kek_status(), disable_key(), enable_key(), destroy_key() and cache_evict(). They are not
// executable by PUBLIC; the install script grants nothing.
//
// Errors follow the rule in key_errors.hpp: a name given as an argument is repeated
// only once it names an existing key (or KMS); a KEK given for the first time, or
// the name of a key still being created, is scrubbed from KMS errors.
#include "pg/guard.hpp"

extern "C" {
#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/timestamp.h"
}
#include "pg/audit.hpp"

#include "pg/key_access.hpp"
#include "pg/key_catalog.hpp"
#include "pg/key_errors.hpp"
#include "pg/key_admin_sql.hpp"
#include "pg/dek_resolver.hpp"
#include "pg/kms_registry.hpp"
#include "pg/shared_dek_cache.hpp"
#include "pg/sql_args.hpp"
#include "pg_envelope/crypto.hpp"
#include "pg_envelope/encoding.hpp"
#include "pg_envelope/kms.hpp"
#include "pg/key_change_commit.hpp"
#include "pg/key_generation.hpp"
#include "pg/kms_calls.hpp"
#include "pg/owner_spi.hpp"
#include "pg/shared_memory.hpp"
#include "pg/wait_events.hpp"

using namespace pg_envelope;

namespace {

constexpr const char* kManagementHint = "envelope.keys lists the keys of this database.";

// ASCII only, whatever the server's locale (so not std::isalnum).
bool is_ascii_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); }

void validate_key_name(const std::string& name) {
  bool ok = !name.empty() && name.size() <= 63 && (is_ascii_alnum(name[0]) || name[0] == '_');
  for (char c : name)
    ok = ok && (is_ascii_alnum(c) || c == '_' || c == '-' || c == '.' || c == ':' || c == '@' || c == '/');
  if (!ok)
    throw Error(sqlstate::kInvalidParameterValue, "invalid key name",
                "A key name is 1 to 63 characters from A-Z, a-z, 0-9 and \"_-.:@/\", starting with a letter, "
                "digit or underscore.");
}

std::uint32_t fresh_key_id() {
  for (int attempt = 0; attempt < 16; ++attempt) {
    std::uint8_t b[4];
    random_bytes(b);
    std::uint32_t id = load_be32(b) & 0x7FFFFFFFu;  // positive int4
    if (id != 0 && !key_admin_sql::key_id_in_use(id)) return id;
  }
  throw Error(sqlstate::kInternalError, "could not allocate a key id");
}

// The key named by argument 0, which the current user administers; locked for a
// change (or not, for cache_evict).
KeyRecord existing_key(FunctionCallInfo fcinfo, bool for_update = true) {
  std::string name = text_arg(fcinfo, 0, "key name");
  std::optional<KeyRecord> key = for_update ? key_admin_sql::find_key(name, true) : key_catalog::key_by_name(name);
  if (!key) throw_no_such_key(kManagementHint);
  key_access::require(key->name, key_access::kAdmin);
  return std::move(*key);
}

// Before anything is wrapped under a KMS, prove it still unwraps what it wrapped
// before. For the local KMS this catches a server started with the wrong master key,
// which would otherwise create new keys that no correct server could open.
void check_kms_unwraps_existing(KmsProvider& kms, const std::optional<DekRecord>& probe) {
  if (!probe) return;
  try {
    timed_kms_call(true, [&] {
      return kms.unwrap(probe->key.kek, DekBinding{probe->key.name, probe->key.key_id, probe->version},
                        probe->wrapped);
    });
  } catch (const Error& e) {
    if (std::string_view(e.sqlstate()) != sqlstate::kDataException) throw;  // timeouts, auth...: as they are
    throw Error(e.sqlstate(),
                "KMS \"" + kms.kms_name() + "\" cannot unwrap existing key \"" + probe->key.name + "\" version " +
                    std::to_string(probe->version) + ", so no new data key is created with it",
                std::string(e.what()) + ". " + e.detail(), e.hint());
  }
}

void store_new_dek(const KeyRecord& key, std::uint32_t version) {
  KmsProvider& kms = kms_provider(key.kms);
  std::optional<DekRecord> probe = key_admin_sql::find_any_live_dek(kms.kms_name());
  GeneratedDek dek;
  {
    KmsWait wait;  // only around the KMS calls, not the SPI ones
    check_kms_unwraps_existing(kms, probe);
    DekBinding binding{key.name, key.key_id, version};
    dek = timed_kms_call(false, [&] { return kms.generate_data_key(key.kek, binding); });
    // Prove the wrapped form opens before anything depends on it.
    SecureBytes check = timed_kms_call(true, [&] { return kms.unwrap(key.kek, binding, dek.wrapped); });
    if (!constant_time_equal(check.view(), dek.plaintext.view()))
      throw Error(sqlstate::kInternalError,
                  "KMS \"" + key.kms + "\" returned a wrapped data key that does not unwrap to the same key");
  }
  key_admin_sql::insert_dek(key.key_id, version, dek.wrapped);
}

}  // namespace

// create_key(name text, kms text DEFAULT 'local', kek text DEFAULT NULL) RETURNS integer
PGENV_FUNCTION(envelope_create_key) {
  require_preloaded();
  require_writable("create a key");
  KeyRecord key;
  key.name = text_arg(fcinfo, 0, "key name");
  validate_key_name(key.name);
  key_access::require_admin_over(key.name);
  key.kms = text_arg(fcinfo, 1, "KMS name");
  bool kek_given = !PG_ARGISNULL(2);
  try {
    KmsProvider& kms = kms_provider(key.kms);
    key.kek = kek_given ? text_arg(fcinfo, 2, "KEK") : kms.default_kek();
    kms.validate_kek(key.kek);
    if (std::optional<KeyRecord> existing = key_admin_sql::find_key(key.name))
      throw Error(sqlstate::kDuplicateObject, "key \"" + key.name + "\" already exists",
                  existing->destroyed ? "The key was destroyed; the names of destroyed keys are never reused." : "",
                  existing->destroyed ? "Choose another name."
                                      : "Use envelope.rotate_key() to add a new data key version to it.");
    key.key_id = fresh_key_id();
    key.current_version = 1;
    key_admin_sql::insert_key(key);
    store_new_dek(key, 1);
  } catch (const Error& e) {
    if (std::string_view(e.sqlstate()) == sqlstate::kDuplicateObject) throw;  // names an existing key
    // Neither the new key's name nor a KEK given here names anything yet.
    Error scrubbed = without(e, "key", key.name, "the new key");
    throw kek_given ? without(scrubbed, "KEK", key.kek, "the KEK given") : scrubbed;
  }
  // Backends drop their first-level caches: one may still know a key of the same id
  // from key tables that were dropped since.
  invalidate_keys_at_commit();
  audit::lifecycle("create_key", key.name, 1, "kms " + key.kms);
  PG_RETURN_INT32(1);
}

// rotate_key(name text) RETURNS integer: a new current DEK version; older versions
// keep decrypting what they encrypted.
PGENV_FUNCTION(envelope_rotate_key) {
  require_preloaded();
  require_writable("rotate a key");
  KeyRecord key = existing_key(fcinfo);
  if (key.destroyed) throw_key_destroyed(key.name, "Create a new key with envelope.create_key().");
  if (key.disabled) throw_key_disabled(key.name, "Enable it with envelope.enable_key() first.");
  std::uint32_t version = key.current_version + 1;
  store_new_dek(key, version);
  key_admin_sql::set_current_version(key.key_id, version);
  invalidate_keys_at_commit();
  audit::lifecycle("rotate_key", key.name, static_cast<std::int32_t>(version), "");
  PG_RETURN_INT32(static_cast<int32>(version));
}

namespace {

// NOTICEs naming every column that holds values of the key and how many, by a scan as
// the caller (envelope.key_columns; a column the caller may not read is skipped with
// its WARNING); without EXECUTE on key_columns, a NOTICE that they were not counted.
void report_references(const std::string& key_name) {
  OwnerSpi scan(/*as_owner=*/false);
  // (In a schema older than this library's, envelope.version_check off, it may not exist.)
  scan.exec("SELECT CASE WHEN pg_catalog.to_regprocedure('envelope.key_columns(pg_catalog.text, pg_catalog.bool)') IS NULL "
            "THEN false ELSE pg_catalog.has_function_privilege('envelope.key_columns(pg_catalog.text, pg_catalog.bool)', "
            "'EXECUTE') END::pg_catalog.text", {}, SPI_OK_SELECT);
  std::vector<std::string> lines;
  bool counted = scan.text_at(0, 1) == "true";
  if (counted) {
    scan.exec("SELECT relation::pg_catalog.text, column_name::pg_catalog.text, pg_catalog.sum(value_count)::pg_catalog.int8 "
              "FROM envelope.key_columns($1) GROUP BY 1, 2 ORDER BY 1, 2",
              {text_param(key_name)}, SPI_OK_SELECT);
    for (std::uint64_t i = 0; i < SPI_processed; ++i)
      lines.push_back("pg_envelope: " + std::to_string(scan.int8_at(i, 3)) + " values of key \"" + key_name +
                      "\" in column " + scan.text_at(i, 2) + " of " + scan.text_at(i, 1) + " can no longer be decrypted");
  }
  scan.finish();
  if (!counted)
    pg_call([] {
      ereport(NOTICE, (errmsg("pg_envelope: the values of the key were not counted"),
                       errhint("EXECUTE on envelope.key_columns(text, boolean) lets destroy_key() report them.")));
    });
  for (const std::string& msg : lines) pg_call([&msg] { ereport(NOTICE, (errmsg("%s", msg.c_str()))); });
}

}  // namespace

// destroy_key(name text) RETURNS void: crypto-shredding. Irreversible once committed
// and once no backup holds the old key rows.
PGENV_FUNCTION(envelope_destroy_key) {
  require_preloaded();
  require_writable("destroy a key");
  KeyRecord key = existing_key(fcinfo);
  // What still references it, by a scan as the caller (a column it may not read is
  // skipped with a WARNING from key_columns): those values become undecryptable.
  if (!key.destroyed) report_references(key.name);
  key_admin_sql::destroy_key(key.key_id);
  // No copy of its DEKs stays in shared memory, nor in any backend's cache.
  evict_key_now_and_at_commit(key.key_id);
  dek_resolver::forget_all();
  audit::lifecycle("destroy_key", key.name, 0, "");
  PG_RETURN_VOID();
}

namespace {

// The key named by argument 0, which must not be destroyed (for disable/enable).
KeyRecord live_key_arg(FunctionCallInfo fcinfo) {
  KeyRecord key = existing_key(fcinfo);
  if (key.destroyed) throw_key_destroyed(key.name, "A destroyed key can be neither disabled nor enabled.");
  return key;
}

}  // namespace

// disable_key(name text) RETURNS void: the key's values can be neither decrypted nor
// encrypted until enable_key(); reversible, unlike destroy_key. No backend uses one
// of its DEKs after this returns, and none is left in shared memory.
PGENV_FUNCTION(envelope_disable_key) {
  require_preloaded();
  require_writable("disable a key");
  KeyRecord key = live_key_arg(fcinfo);
  key_admin_sql::set_key_disabled(key.key_id, true);
  evict_key_now_and_at_commit(key.key_id);
  dek_resolver::forget_all();
  audit::lifecycle("disable_key", key.name, 0, "");
  PG_RETURN_VOID();
}

// enable_key(name text) RETURNS void: undoes disable_key (its DEKs are unwrapped again
// through the KMS on next use).
PGENV_FUNCTION(envelope_enable_key) {
  require_preloaded();
  require_writable("enable a key");
  KeyRecord key = live_key_arg(fcinfo);
  key_admin_sql::set_key_disabled(key.key_id, false);
  invalidate_keys_at_commit();
  audit::lifecycle("enable_key", key.name, 0, "");
  PG_RETURN_VOID();
}

// cache_evict(key_name text) RETURNS bigint: one key of this database leaves the DEK
// caches: its DEKs leave the shared cache (zeroed) and every backend's own cache
// before this returns; the next use unwraps them again through the KMS. Returns how
// many shared entries held one of its DEKs. Works on a standby too.
PGENV_FUNCTION(envelope_cache_evict) {
  require_preloaded();
  KeyRecord key = existing_key(fcinfo, /*for_update=*/false);
  invalidate_keys_at_commit();
  std::int64_t n = shared_dek_cache::evict_key(key.key_id);
  dek_resolver::forget_all();
  PG_RETURN_INT64(n);
}

// rewrap_key(name text, kek text DEFAULT NULL) RETURNS integer: re-wraps every live DEK
// of the key under `kek` (NULL: the same KEK, e.g. its newest version in the KMS),
// without touching any encrypted row. Returns how many DEKs were re-wrapped.
PGENV_FUNCTION(envelope_rewrap_key) {
  require_preloaded();
  require_writable("re-wrap a key");
  KeyRecord key = existing_key(fcinfo);
  if (key.destroyed) throw_key_destroyed(key.name);
  KmsProvider& kms = kms_provider(key.kms);
  std::string new_kek = PG_ARGISNULL(1) ? key.kek : text_arg(fcinfo, 1, "KEK");
  std::vector<DekRecord> deks;
  std::vector<Bytes> rewrapped;
  std::vector<SecureBytes> unwrapped;
  try {
    kms.validate_kek(new_kek);
    deks = key_admin_sql::live_deks(key.key_id);
    KmsWait wait;
    for (const DekRecord& d : deks) {
      DekBinding binding{key.name, key.key_id, d.version};
      Bytes w = timed_kms_call(false, [&] { return kms.rewrap(key.kek, new_kek, binding, d.wrapped); });
      // Never store a wrapped DEK that does not open to the same key.
      SecureBytes before = timed_kms_call(true, [&] { return kms.unwrap(key.kek, binding, d.wrapped); });
      SecureBytes after = timed_kms_call(true, [&] { return kms.unwrap(new_kek, binding, w); });
      if (!constant_time_equal(before.view(), after.view()))
        throw Error(sqlstate::kInternalError, "KMS \"" + key.kms + "\" re-wrapped a data key of key \"" + key.name +
                                                  "\" into a different key");
      rewrapped.push_back(std::move(w));
      unwrapped.push_back(std::move(after));
    }
  } catch (const Error& e) {
    // A new KEK names nothing stored yet; the key's own KEK may be shown.
    if (new_kek == key.kek) throw;
    throw without(e, "KEK", new_kek, "the KEK given");
  }
  for (std::size_t i = 0; i < deks.size(); ++i) key_admin_sql::update_wrapped(key.key_id, deks[i].version, rewrapped[i]);
  if (new_kek != key.kek) key_admin_sql::set_kek(key.key_id, new_kek);
  // The shared cache knows a DEK by its wrapped form: cache the new forms now (the
  // same DEKs), so that no backend needs the KMS once this commits. Should it roll
  // back, no key row has these forms and the entries age out unused. (Not for a
  // disabled key: none of its DEKs is cached.)
  for (std::size_t i = 0; i < deks.size() && !key.disabled; ++i)
    shared_dek_cache::put(shared_dek_cache::ident_of(DekId{key.key_id, deks[i].version}, rewrapped[i]), unwrapped[i],
                      key_generation());
  invalidate_keys_at_commit();
  audit::lifecycle("rewrap_key", key.name, 0,
                   std::to_string(deks.size()) + " data key(s)" + (new_kek != key.kek ? ", under a new KEK" : ""));
  PG_RETURN_INT32(static_cast<int32>(deks.size()));
}

// kek_status(key text, OUT kms, OUT kek, OUT kek_version, OUT kek_version_created,
// OUT data_keys, OUT data_keys_behind, OUT versions_behind) RETURNS record: asks the
// key's KMS for its KEK's current version and says which DEKs are wrapped under an
// older one (rewrap_key brings them onto it). Where the wrapped form names its KEK
// version (Vault, Azure) they are compared; else (AWS, GCP) a DEK is behind when it
// was wrapped before the current version was created. The local KMS has no KEK
// versions: kek_version, data_keys_behind and versions_behind are NULL.
PGENV_FUNCTION(envelope_kek_status) {
  require_preloaded();
  KeyRecord key = existing_key(fcinfo, /*for_update=*/false);
  if (key.destroyed) throw_key_destroyed(key.name);
  KmsProvider& kms = kms_provider(key.kms);
  std::optional<KekVersion> current;
  {
    KmsWait wait;
    current = timed_kms_call(false, [&] { return kms.current_kek_version(key.kek); });
  }
  std::vector<DekRecord> deks = key_admin_sql::wrapped_deks(key.key_id);
  std::vector<Datum> behind;
  if (current)
    for (const DekRecord& d : deks)
      if (dek_behind_kek(*current, kms.wrapped_kek_version(key.kek, d.wrapped), d.wrapped_at_us))
        behind.push_back(Int32GetDatum(static_cast<int32>(d.version)));
  TupleDesc desc;
  if (pg_call([&] { return get_call_result_type(fcinfo, nullptr, &desc); }) != TYPEFUNC_COMPOSITE)
    throw Error(sqlstate::kInternalError, "kek_status must return a record");
  desc = pg_call([desc] { return BlessTupleDesc(desc); });
  constexpr int kColumns = 7;
  if (desc->natts != kColumns) throw Error(sqlstate::kInternalError, "kek_status returns the wrong columns");
  Datum values[kColumns] = {};
  bool nulls[kColumns] = {};
  values[0] = pg_call([&] { return CStringGetTextDatum(key.kms.c_str()); });
  values[1] = pg_call([&] { return CStringGetTextDatum(key.kek.c_str()); });
  nulls[2] = !current;
  if (current) values[2] = pg_call([&] { return CStringGetTextDatum(current->version.c_str()); });
  nulls[3] = !current || current->since_us == 0;
  // Unix microseconds to PostgreSQL's epoch (2000-01-01).
  if (!nulls[3])
    values[3] = TimestampTzGetDatum(current->since_us -
                                    (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * static_cast<std::int64_t>(USECS_PER_DAY));
  values[4] = Int32GetDatum(static_cast<int32>(deks.size()));
  nulls[5] = nulls[6] = !current;
  if (current) {
    values[5] = Int32GetDatum(static_cast<int32>(behind.size()));
    values[6] = PointerGetDatum(pg_call([&] {
      return construct_array(behind.data(), static_cast<int>(behind.size()), INT4OID, 4, true, TYPALIGN_INT);
    }));
  }
  HeapTuple tuple = pg_call([&] { return heap_form_tuple(desc, values, nulls); });
  return HeapTupleGetDatum(tuple);
}
