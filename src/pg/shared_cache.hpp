// The shared-memory DEK cache: unwrapped DEKs shared by every backend, so a new
// connection decrypts without a KMS call. Entries are masked at rest with a secret
// of the postmaster's private memory, excluded from core dumps, zeroed on eviction,
// and valid only for the key generation they were loaded in and for
// envelope.cache_ttl. The lock is never held across a KMS call.
#pragma once

#include <cstdint>

#include "pg_envelope/envelope_format.hpp"
#include "pg_envelope/secure_bytes.hpp"

namespace pg_envelope::shared_cache {

// Shared memory size for the configured capacity, and set-up (called from the
// shmem hooks in shared_state.cpp; `found` when the segment already existed).
std::size_t shmem_size();
void request_lwlock();
void attach(bool found);
void define_gucs();  // envelope.cache_entries (postmaster), envelope.cache_ttl (reload)

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
// `stale` is set on a hit that serves a DEK past its TTL because the KMS failed.
Claim claim(DekId id, std::uint64_t generation, long wait_ms, SecureBytes& out, Failure& failure, bool& stale);
// The claimant's KMS is unreachable: if the entry still holds a DEK inside
// envelope.cache_max_stale, put it back in service and return it.
bool fall_back_to_stale(DekId id, SecureBytes& out);
// The claimant's outcome: complete() stores the DEK (like put), abandon() records
// the failure briefly; both wake the waiters.
void complete(DekId id, const SecureBytes& dek, std::uint64_t generation);
void abandon(DekId id, const Failure& failure);

// Caches a DEK that was loaded from the key tables read at `generation`; ignored
// when the generation has moved since (the rows may have changed).
void put(DekId id, const SecureBytes& dek, std::uint64_t generation);

// Zeroes the entries of one key of this database (crypto-shredding).
void evict_key(std::uint32_t key_id);

// Zeroes every entry.
void flush();

// Counters for envelope.stats.
struct Stats {
  std::int64_t capacity, entries, hits, misses, stores, evictions, kms_unwraps, kms_errors, flushes, waits;
};
Stats stats();
void count_kms_unwrap(bool ok);

}  // namespace pg_envelope::shared_cache
