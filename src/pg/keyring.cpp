// DEK lookup: backend cache first, then key tables + KMS unwrap. The cache is dropped
// whenever the shared key generation moves (a key was rotated or destroyed anywhere).
#include "guard.hpp"

#include "keyring.hpp"
#include "key_store.hpp"
#include "kms_registry.hpp"
#include "pg_envelope/kms.hpp"
#include "shared_cache.hpp"
#include "shared_state.hpp"

namespace pg_envelope::keyring {

namespace {

constexpr std::size_t kBackendCacheCapacity = 4096;

DekCache& cache() {
  static std::unique_ptr<DekCache> c = make_backend_dek_cache(kBackendCacheCapacity);
  static std::uint64_t seen_generation = 0;
  std::uint64_t g = key_generation();
  if (g != seen_generation) {
    c->clear();
    seen_generation = g;
  }
  return *c;
}

std::string version_label(const std::string& name, std::uint32_t version) {
  return "key \"" + name + "\" version " + std::to_string(version);
}

[[noreturn]] void throw_destroyed(const std::string& name) {
  throw Error(sqlstate::kObjectNotInPrerequisiteState, "key \"" + name + "\" has been destroyed",
              "Its data keys were erased by envelope.destroy_key(); values encrypted with it can never be "
              "decrypted again.");
}

// `generation`: the key generation read before `rec` was, so a DEK loaded from rows
// that changed meanwhile is never put into the shared cache.
CachedDek& load(DekCache& c, const DekRecord& rec, std::uint64_t generation) {
  if (rec.key.destroyed || rec.destroyed || rec.wrapped.empty()) throw_destroyed(rec.key.name);
  DekId id{rec.key.key_id, rec.version};
  SecureBytes dek;
  if (!shared_cache::get(id, dek)) {
    KmsProvider& kms = kms_provider(rec.key.kms);
    DekBinding binding{rec.key.name, rec.key.key_id, rec.version};
    try {
      KmsWait wait;
      dek = kms.unwrap(rec.key.kek, binding, rec.wrapped);
    } catch (...) {
      shared_cache::count_kms_unwrap(false);
      throw;
    }
    shared_cache::count_kms_unwrap(true);
    if (dek.size() != kAes256KeySize)
      throw Error(sqlstate::kDataException, "the KMS returned a data key of the wrong length for " +
                                                version_label(rec.key.name, rec.version));
    shared_cache::put(id, dek, generation);
  }
  return c.insert(id, rec.key.name, dek);
}

}  // namespace

CachedDek& for_decrypt(DekId id) {
  DekCache& c = cache();
  if (CachedDek* d = c.find(id)) return *d;
  std::uint64_t generation = key_generation();
  std::optional<DekRecord> rec = key_store::find_dek(id);
  if (!rec)
    throw Error(sqlstate::kUndefinedObject,
                "no data key with key id " + std::to_string(id.key_id) + " version " + std::to_string(id.version) +
                    " exists in this database",
                "The value was encrypted in a database whose key tables (envelope.key, envelope.data_key) were "
                "not copied here, or the key row was deleted.",
                "Restore the key tables from a dump of the database the value came from.");
  return load(c, *rec, generation);
}

CachedDek& for_encrypt(std::string_view key_name) {
  DekCache& c = cache();
  if (CachedDek* d = c.find_current(key_name)) return *d;
  std::uint64_t generation = key_generation();
  std::optional<KeyRecord> key = key_store::find_key(key_name);
  if (!key)
    throw Error(sqlstate::kUndefinedObject, "key \"" + std::string(key_name) + "\" does not exist", "",
                "Create it with envelope.create_key().");
  if (key->destroyed) throw_destroyed(key->name);
  DekId id{key->key_id, key->current_version};
  CachedDek* d = c.find(id);
  if (d == nullptr) {
    std::optional<DekRecord> rec = key_store::find_dek(id);
    if (!rec)
      throw Error(sqlstate::kUndefinedObject, "the current data key of key \"" + key->name + "\" is missing",
                  "envelope.data_key has no row for " + version_label(key->name, id.version) + ".");
    d = &load(c, *rec, generation);
  }
  c.set_current(key->name, id);
  return *d;
}

void forget_all() noexcept { cache().clear(); }

}  // namespace pg_envelope::keyring
