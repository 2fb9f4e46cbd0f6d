// The shared-memory DEK cache: unwrapped DEKs shared by every backend, so a new
// connection decrypts without a KMS call. Entries are masked at rest with a secret
// of the postmaster's private memory, excluded from core dumps, zeroed on eviction,
// and served for envelope.cache_ttl (then, while the KMS is unreachable, for up to
// envelope.cache_max_stale more). The lock is never held across a KMS call.
//
// A key change invalidates only that key's entries (destroy_key, cache_evict); the
// shared key generation makes backends drop their first-level caches, and a DEK
// loaded from key rows read before a key change is never stored.
#pragma once

#include <cstdint>
#include <vector>

#include "pg_envelope/envelope_format.hpp"
#include "pg_envelope/secure_bytes.hpp"

namespace pg_envelope::shared_dek_cache {

// Shared memory size for the configured capacity, and set-up (called from the
// shmem hooks in shared_memory.cpp).
std::size_t shmem_size();
void request_lwlock();
void attach();
void define_gucs();  // envelope.cache_entries (postmaster), cache_ttl and cache_max_stale (reload)

// A DEK's identity: this database, key id, version, and a digest of the wrapped DEK
// read from the key table, so a key id reused with another DEK (the extension
// dropped and created again, key rows restored from another database) never meets
// the DEK cached for the old rows.
struct Ident {
  DekId id;
  std::uint8_t wrapped_digest[16];
};
Ident ident_of(DekId id, ByteView wrapped);

// Timestamps are PostgreSQL's TimestampTz (µs since 2000-01-01).
constexpr std::int64_t kForever = INT64_MAX;

// Single flight: the first backend to miss a DEK claims it and unwraps it (kLoad);
// the others wait for its result (kHit) instead of calling the KMS too. A load that
// failed moments ago is not retried by everyone (kFailed, with the failure in
// `failure`). Waits are interruptible and bounded by `wait_ms`.
enum class Claim { kHit, kLoad, kFailed };
struct Failure {  // the error the claimant raised, re-raised as it was (no secrets in it)
  char sqlstate[6];
  char message[256];
  char detail[512];
  char hint[256];
};
// On a hit, `out` is the DEK and `valid_until` how long a backend may keep using it
// without asking again; `stale` is set when it is served past its TTL because the
// KMS failed.
Claim claim(const Ident& ident, std::uint64_t generation, long wait_ms, SecureBytes& out, Failure& failure,
            bool& stale, std::int64_t& valid_until);
// A fresh hit only (no claim, no wait, no DEK past its TTL), under the lock in shared
// mode: `out` is the DEK and `valid_until` as for claim(). False otherwise (not counted
// as a miss: the caller then goes through claim()).
bool find_fresh(const Ident& ident, SecureBytes& out, std::int64_t& valid_until);
// The claimant's KMS is unreachable: if the entry still holds a DEK inside
// envelope.cache_max_stale, put it back in service and return it (valid for a short
// retry interval).
bool fall_back_to_stale(const Ident& ident, SecureBytes& out, std::int64_t& valid_until);
// The claimant's outcome: complete() stores the DEK (like put) and returns until when
// it is fresh; abandon() records the failure briefly; both wake the waiters.
std::int64_t complete(const Ident& ident, const SecureBytes& dek, std::uint64_t generation);
void abandon(const Ident& ident, const Failure& failure);

// Caches a DEK that was loaded from the key tables read at `generation`; ignored
// when the generation has moved since (the rows may have changed).
void put(const Ident& ident, const SecureBytes& dek, std::uint64_t generation);

// Zeroes the entries of one key of this database (crypto-shredding, cache_evict);
// returns how many held a DEK.
std::int64_t evict_key(std::uint32_t key_id);

// Zeroes the entries of the given keys of this database (ids sorted ascending); a
// standby uses it for the keys its replayed key changes disabled or destroyed.
std::int64_t evict_keys(const std::vector<std::uint32_t>& sorted_key_ids);

// How many entries of this database hold a DEK of the key (envelope.verify_destroyed).
std::int64_t key_entries(std::uint32_t key_id);
// Whether any entry belongs to this database.
bool holds_database_entries();

// The same from the commit callback (PostgreSQL's frames: no C++ exception may
// leave them, so these take the lock directly); the second zeroes every entry of
// this database.
void evict_key_at_commit(std::uint32_t key_id) noexcept;
void evict_database_at_commit() noexcept;

// Zeroes every entry.
void flush();

// Counters for envelope.stats; reset_stats() zeroes them (not the entries) and
// notes when. (The KMS call counters are in kms_stats.hpp.)
struct Stats {
  std::int64_t capacity, entries, hits, misses, stores, evictions, flushes, waits;
  std::int64_t reset_at;  // TimestampTz
  bool dump_excluded;     // madvise(MADV_DONTDUMP) took effect on the entries
};
Stats stats();
void reset_stats();

}  // namespace pg_envelope::shared_dek_cache
