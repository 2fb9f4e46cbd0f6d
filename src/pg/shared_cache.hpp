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

// The DEK if it is cached, fresh and of the current generation.
bool get(DekId id, SecureBytes& out);

// Caches a DEK that was loaded from the key tables read at `generation`; ignored
// when the generation has moved since (the rows may have changed).
void put(DekId id, const SecureBytes& dek, std::uint64_t generation);

// Zeroes every entry.
void flush();

// Counters for envelope.stats.
struct Stats {
  std::int64_t capacity, entries, hits, misses, stores, evictions, kms_unwraps, kms_errors, flushes;
};
Stats stats();
void count_kms_unwrap(bool ok);

}  // namespace pg_envelope::shared_cache
