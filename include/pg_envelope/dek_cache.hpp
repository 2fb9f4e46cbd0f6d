// The cache of unwrapped DEKs a backend decrypts with. Behind an interface so the
// shared-memory cache can replace or back the per-backend one without touching the
// SQL functions. Pure C++: no PostgreSQL headers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "pg_envelope/crypto.hpp"
#include "pg_envelope/envelope_format.hpp"

namespace pg_envelope {

// An unwrapped DEK, ready to use. The fields a decrypt reads come first, in the
// entry's first two CPU cache lines (the entry is cache-line aligned): with thousands
// of DEKs used in random order, each use of an entry not used lately costs a read from
// main memory per line.
struct alignas(64) CachedDek {
  CachedDek(DekId id_, std::string key_name_, ByteView key);
  DekId id;
  // Until when (the caller's clock) the DEK may be used without asking the shared
  // cache again; the shared cache's TTL or max-stale retry interval.
  std::int64_t valid_until = INT64_MAX;
  // The backend cache's use order: its move count when this entry last went to the
  // front (backend_dek_cache.cpp).
  std::uint64_t moved_at = 0;
  // The per-key privileges of one user already checked for this DEK's key (bits of
  // the privileges asked, and of those held), while `access_epoch` is current; the
  // PostgreSQL layer (key_access) fills and reads them.
  std::uint64_t access_epoch = 0;
  std::uint32_t access_user = 0;
  std::uint8_t access_checked = 0;
  std::uint8_t access_held = 0;
  // The audit counter (PostgreSQL layer, audit::note) this DEK was last counted in,
  // while `audit_epoch` is the counters' current one.
  std::uint8_t audit_event = 0;
  std::uint64_t audit_epoch = 0;
  std::uint32_t audit_index = 0;
  std::uint32_t audit_protection = 0;
  std::uint32_t audit_user = 0;
  // The DEK itself, its OpenSSL contexts borrowed from a per-process pool (crypto.hpp):
  // an entry is about 200 bytes where two contexts of its own took about 2 kB.
  PooledAesGcm aead;
  std::string key_name;
  // HKDF-SHA256(DEK, "pg_envelope blind index seed v1"): the root of the blind-index
  // keys of protected columns whose blind key this DEK is (never the DEK itself).
  SecureBytes blind_seed;
};

class DekCache {
 public:
  virtual ~DekCache() = default;

  // The DEK, or nullptr when it is not cached.
  virtual CachedDek* find(DekId id) noexcept = 0;

  // Caches an unwrapped DEK (its bytes are copied into the key schedule and not
  // kept), replacing any entry for `id`.
  virtual CachedDek& insert(DekId id, std::string key_name, const SecureBytes& dek,
                            std::int64_t valid_until = INT64_MAX) = 0;

  // Which DEK encrypts new values for a key name (its current version), or nullptr.
  virtual CachedDek* find_current(std::string_view key_name) noexcept = 0;
  virtual void set_current(std::string_view key_name, DekId id) = 0;

  // Changes the bound; the least recently used entries go when it shrinks.
  virtual void set_capacity(std::size_t capacity) = 0;

  // Drops every entry (key schedules are wiped by OpenSSL on free).
  virtual void clear() noexcept = 0;
  virtual std::size_t size() const noexcept = 0;
};

// A per-process cache holding at most `capacity` DEKs; when full, the least recently
// used (found or inserted) one goes: exactly among the older half of the capacity (a
// use within the most recent half does not reorder; see backend_dek_cache.cpp).
std::unique_ptr<DekCache> make_backend_dek_cache(std::size_t capacity);

}  // namespace pg_envelope
