// DEK lookup: the backend's first-level cache, then the key tables and the shared
// cache, then a KMS unwrap. The first-level cache is dropped whenever the shared key
// generation moves (a key was created, rotated, re-wrapped, destroyed or evicted
// anywhere on this server) or a relcache invalidation of a key table arrives: the
// tables dropped or truncated, or a key change committed on the primary and
// replayed on this standby (the key tables' trigger sends one with every change).
// Each of its DEKs is used only until the shared cache's TTL for it, checked at
// the start of each statement. Key rows are read with a fresh snapshot
// (key_catalog.hpp), so a key that is destroyed or disabled is refused from the
// moment the change commits, whatever snapshot the caller runs with.
#include "guard.hpp"

extern "C" {
#include "access/xact.h"
#include "access/xlog.h"
#include "utils/inval.h"
#include "utils/guc.h"
}

#include <cstdio>

#include "extension_objects.hpp"
#include "key_access.hpp"
#include "key_catalog.hpp"
#include "key_errors.hpp"
#include "audit.hpp"
#include "dek_resolver.hpp"
#include "kms_registry.hpp"
#include "pg_envelope/kms.hpp"
#include "shared_dek_cache.hpp"
#include "shared_key_info.hpp"
#include "key_change_commit.hpp"
#include "key_generation.hpp"
#include "kms_calls.hpp"
#include "kms_settings.hpp"
#include "wait_events.hpp"

namespace pg_envelope::dek_resolver {

namespace {

int backend_cache_entries = 4096;

// Whether a relcache invalidation of a key table (DROP, TRUNCATE, a key change
// committed anywhere, replayed on a standby) or of every relation arrived since the
// first-level cache was last dropped. Set from the invalidation callback: plain
// values only.
volatile bool key_table_changed = false;

// A backend that took DEKs or grants through the shared key information
// (shared_key_info.hpp) before it learnt the key tables' OIDs treats any relation's
// invalidation as possibly theirs.
void relcache_changed(Datum, Oid relid) {
  if (relid == InvalidOid || ext::is_key_table(relid) || (shared_key_info::served() && !ext::key_tables_known())) {
    key_table_changed = true;
    ext::forget();
  }
}

// On a standby nothing moves the generation: key changes arrive as the relcache
// invalidations replayed with their commit records. They are read here once per
// statement (a backend inside a transaction block acquires no new locks that would
// read them), and the shared cache is cleared of the keys that are no longer active.
TimestampTz invalidations_read_for = 0;

void read_replayed_invalidations() {
  TimestampTz statement = GetCurrentStatementStartTimestamp();
  if (statement == invalidations_read_for) return;
  invalidations_read_for = statement;
  // Key changes of prepared transactions committed since (Citus workers, PREPARE
  // TRANSACTION): one atomic read when there are none.
  settle_prepared_key_changes();
  if (!RecoveryInProgress()) return;
  pg_call([] { AcceptInvalidationMessages(); });
}

void evict_inactive_keys_on_standby() {
  if (!RecoveryInProgress() || !shared_dek_cache::holds_database_entries()) return;
  shared_dek_cache::evict_keys(key_catalog::inactive_keys());
}

DekCache& cache() {
  static std::unique_ptr<DekCache> c = make_backend_dek_cache(static_cast<std::size_t>(backend_cache_entries));
  static int capacity = backend_cache_entries;
  if (capacity != backend_cache_entries) {
    capacity = backend_cache_entries;
    c->set_capacity(static_cast<std::size_t>(capacity));
  }
  static std::uint64_t seen_generation = 0;
  read_replayed_invalidations();
  std::uint64_t g = key_generation();
  if (g != seen_generation || key_table_changed) {
    c->clear();
    seen_generation = g;
    bool replayed = key_table_changed;
    key_table_changed = false;
    if (replayed) {
      key_access::forget_grants();
      evict_inactive_keys_on_standby();
    }
  }
  return *c;
}

// The clock the first-level cache's validity is checked against: the start of the
// current statement (free to read; a statement keeps the DEKs it started with).
std::int64_t statement_now() { return GetCurrentStatementStartTimestamp(); }

std::string version_label(const std::string& name, std::uint32_t version) {
  return "key \"" + name + "\" version " + std::to_string(version);
}

// Once per backend until the KMS answers again: serving DEKs past their TTL.
bool warned_stale = false;

void warn_stale(const DekRecord& rec) {
  if (warned_stale) return;
  warned_stale = true;
  std::string msg = "KMS \"" + rec.key.kms + "\" is unreachable; using the cached data key of " +
                    version_label(rec.key.name, rec.version) + " past its TTL";
  pg_call([&msg] {
    ereport(WARNING, (errmsg_internal("%s", msg.c_str()),
                      errdetail("The data key stays usable until envelope.cache_max_stale runs out."),
                      errhint("Restore access to the KMS.")));
  });
}

// What this backend read from the rows of a usable key, for the next new backend
// (shared_key_info.hpp); not while the extension's SQL version differs from the
// library's (ext::objects() refuses keys then, unless envelope.version_check is off).
void share_key_info(DekId id, std::uint64_t generation, const DekRecord& rec, const shared_dek_cache::Ident& ident) {
  if (ext::resolved_at_library_version()) shared_key_info::publish(id, generation, rec.key.name, ident.wrapped_digest);
}

// `generation`: the key generation read before `rec` was, so a DEK loaded from rows
// that changed meanwhile is never put into the shared cache.
CachedDek& load(DekCache& c, const DekRecord& rec, std::uint64_t generation) {
  if (rec.key.destroyed || rec.destroyed || rec.wrapped.empty()) throw_key_destroyed(rec.key.name);
  if (rec.key.disabled) throw_key_disabled(rec.key.name);
  DekId id{rec.key.key_id, rec.version};
  shared_dek_cache::Ident ident = shared_dek_cache::ident_of(id, rec.wrapped);
  SecureBytes dek;
  shared_dek_cache::Failure failure{};
  bool stale = false;
  std::int64_t valid_until = 0;
  switch (shared_dek_cache::claim(ident, generation, kms_wait_budget_ms(), dek, failure, stale, valid_until)) {
    case shared_dek_cache::Claim::kHit:
      if (stale)
        warn_stale(rec);
      else
        share_key_info(id, generation, rec, ident);
      break;
    case shared_dek_cache::Claim::kFailed:
      // Another backend's KMS call for this DEK failed moments ago: its error, again,
      // rather than one more call to a KMS that is failing.
      throw Error(failure.sqlstate[0] ? failure.sqlstate : sqlstate::kSystemError, failure.message, failure.detail, failure.hint);
    case shared_dek_cache::Claim::kLoad: {
      // This backend unwraps it; the others wait for the outcome.
      try {
        KmsProvider& kms = kms_provider(rec.key.kms);
        DekBinding binding{rec.key.name, rec.key.key_id, rec.version};
        KmsWait wait;
        dek = timed_kms_call(true, [&] { return kms.unwrap(rec.key.kek, binding, rec.wrapped); });
        if (dek.size() != kAes256KeySize)
          throw Error(sqlstate::kDataException, "the KMS returned a data key of the wrong length for " +
                                                    version_label(rec.key.name, rec.version));
      } catch (const Error& e) {
        std::string_view state = e.sqlstate();
        // Unreachable (not refused): a DEK still inside its max-stale window keeps serving.
        if ((state == sqlstate::kSystemError || state == sqlstate::kConnectionFailure) && shared_dek_cache::fall_back_to_stale(ident, dek, valid_until)) {
          warn_stale(rec);
          return c.insert(id, rec.key.name, dek, valid_until);
        }
        shared_dek_cache::Failure f{};
        // A cancel or statement_timeout is this session's business, not the KMS's.
        if (state != sqlstate::kQueryCanceled) std::snprintf(f.sqlstate, sizeof f.sqlstate, "%s", e.sqlstate());
        std::snprintf(f.message, sizeof f.message, "%s", e.what());
        std::snprintf(f.detail, sizeof f.detail, "%s", e.detail().c_str());
        std::snprintf(f.hint, sizeof f.hint, "%s", e.hint().c_str());
        shared_dek_cache::abandon(ident, f);
        throw;
      } catch (...) {
        // Not a KMS answer (out of memory, a cancel): release the claim, remember nothing.
        shared_dek_cache::Failure f{};
        shared_dek_cache::abandon(ident, f);
        throw;
      }
      warned_stale = false;
      valid_until = shared_dek_cache::complete(ident, dek, generation);
      share_key_info(id, generation, rec, ident);
      break;
    }
  }
  return c.insert(id, rec.key.name, dek, valid_until);
}

}  // namespace

namespace {

enum class Check { kRequire, kIfHeld, kNone };

// A DEK of a usable key that the shared cache holds fresh, found without reading the
// key tables: through what another backend read from the same rows at the current key
// generation (shared_key_info.hpp). nullptr: read the rows.
CachedDek* from_shared_key_info(DekCache& c, DekId id, std::uint64_t generation) {
  std::string key_name;
  shared_dek_cache::Ident ident{};
  ident.id = id;
  if (!shared_key_info::find(id, generation, key_name, ident.wrapped_digest)) return nullptr;
  SecureBytes dek;
  std::int64_t valid_until = 0;
  if (!shared_dek_cache::find_fresh(ident, dek, valid_until)) return nullptr;
  return &c.insert(id, std::move(key_name), dek, valid_until);
}

// The DEK of `id`, the current user holding `privilege` on its key (kRequire: or
// Error 42501; kIfHeld: or nullptr, and nullptr for a destroyed key; kNone: no check,
// for the extension's own use, e.g. re-binding a protected value).
CachedDek* resolve(DekId id, key_access::Privilege privilege, Check check) {
  DekCache& c = cache();
  CachedDek* d = c.find(id);
  if (d == nullptr || d->valid_until <= statement_now()) d = from_shared_key_info(c, id, key_generation());
  if (d != nullptr) {
    if (check == Check::kRequire) {
      if (!key_access::holds(*d, privilege)) {
        audit::note(id, d->key_name, audit::kDenied);
        key_access::require(*d, privilege);
      }
      audit::note(*d, audit::kDecrypt);
    } else if (check == Check::kIfHeld) {
      if (!key_access::holds(*d, privilege)) {
        audit::note(id, d->key_name, audit::kWithheld);
        return nullptr;
      }
      audit::note(*d, audit::kDecrypt);
    }
    return d;
  }
  std::uint64_t generation = key_generation();
  std::optional<DekRecord> rec = key_catalog::dek(id);
  if (!rec)
    throw Error(sqlstate::kUndefinedObject,
                "no data key with key id " + std::to_string(id.key_id) + " version " + std::to_string(id.version) +
                    " exists in this database",
                "The value was encrypted in a database whose key tables (envelope.key, envelope.data_key) were "
                "not copied here, or the key row was deleted.",
                "Restore the key tables from a dump of the database the value came from.");
  // Before any KMS call: a role without the privilege costs nobody an unwrap.
  if (check == Check::kRequire && !key_access::holds(rec->key.name, privilege)) {
    audit::note(id, rec->key.name, audit::kDenied);
    key_access::require(rec->key.name, privilege);
  }
  if (check == Check::kIfHeld) {
    if (!key_access::holds(rec->key.name, privilege)) {
      audit::note(id, rec->key.name, audit::kWithheld);
      return nullptr;
    }
    if (rec->key.destroyed || rec->destroyed) return nullptr;
  }
  CachedDek& loaded = load(c, *rec, generation);
  if (check != Check::kNone) {
    key_access::remember(loaded, privilege);
    audit::note(loaded, audit::kDecrypt);
  }
  return &loaded;
}

}  // namespace

CachedDek& for_decrypt(DekId id, key_access::Privilege privilege) {
  return *resolve(id, privilege, Check::kRequire);
}

CachedDek* if_allowed(DekId id, key_access::Privilege privilege) {
  return resolve(id, privilege, Check::kIfHeld);
}

CachedDek& internal(DekId id) { return *resolve(id, key_access::kDecrypt, Check::kNone); }

CachedDek& for_encrypt(std::string_view key_name, key_access::Privilege privilege) {
  DekCache& c = cache();
  std::int64_t now = statement_now();
  if (CachedDek* d = c.find_current(key_name); d != nullptr && d->valid_until > now) {
    if (!key_access::holds(*d, privilege)) {
      audit::note(d->id, d->key_name, audit::kEncryptDenied);
      key_access::require(*d, privilege);
    }
    audit::note(*d, audit::kEncrypt);
    return *d;
  }
  std::uint64_t generation = key_generation();
  std::optional<KeyRecord> key = key_catalog::key_by_name(key_name);
  if (!key) throw_no_such_key();
  if (!key_access::holds(key->name, privilege)) {
    audit::note(DekId{key->key_id, key->current_version}, key->name, audit::kEncryptDenied);
    key_access::require(key->name, privilege);
  }
  if (key->destroyed) throw_key_destroyed(key->name);
  if (key->disabled) throw_key_disabled(key->name);
  DekId id{key->key_id, key->current_version};
  CachedDek* d = c.find(id);
  if (d == nullptr || d->valid_until <= now) {
    std::optional<DekRecord> rec = key_catalog::dek(id);
    if (!rec)
      throw Error(sqlstate::kUndefinedObject, "the current data key of key \"" + key->name + "\" is missing",
                  "envelope.data_key has no row for " + version_label(key->name, id.version) + ".");
    d = &load(c, *rec, generation);
  }
  key_access::remember(*d, privilege);
  audit::note(*d, audit::kEncrypt);
  c.set_current(key->name, id);
  return *d;
}

void forget_all() noexcept { cache().clear(); }

void register_callbacks() {
  pg_call([] { CacheRegisterRelcacheCallback(relcache_changed, 0); });
  key_access::register_callbacks();
}

void define_gucs() {
  DefineCustomIntVariable("envelope.backend_cache_entries",
                          "DEKs each backend keeps ready to use (least recently used go first).",
                          "Each costs about 0.6 kB of the backend's memory.", &backend_cache_entries, 4096, 1, 1000000,
                          PGC_SUSET, 0, nullptr, nullptr, nullptr);
}

}  // namespace pg_envelope::dek_resolver
