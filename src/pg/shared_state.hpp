// Process-wide state of the extension inside PostgreSQL: whether the library was
// preloaded, and the shared-memory key generation counter every backend checks
// before using a cached DEK.
#pragma once

#include <cstdint>

namespace pg_envelope {

// True in the postmaster and its children when loaded via shared_preload_libraries.
bool loaded_at_startup() noexcept;
void set_loaded_at_startup() noexcept;

// Throws Error 55000 with a hint when the library was not preloaded.
void require_preloaded();

// Registers the shared-memory request (called from _PG_init in the postmaster).
void request_shared_state();

// The key generation: bumped whenever a key is created, rotated, re-wrapped,
// destroyed or evicted, or a KMS altered. A backend drops its first-level DEK cache
// when the generation it last saw differs, and a DEK unwrapped from key rows read at
// an older generation is not put into the shared cache. 0 when not preloaded.
std::uint64_t key_generation() noexcept;

// Bumps the generation now and again when the current transaction commits, so no
// backend can re-cache a DEK from the pre-commit row version.
void invalidate_keys_at_commit();

// invalidate_keys_at_commit(), and zeroes the key's shared-cache entries now and
// again when the transaction commits (a backend may have re-cached one from the
// pre-commit rows meanwhile).
void evict_key_now_and_at_commit(std::uint32_t key_id);

// invalidate_keys_at_commit(), and zeroes the key's (or every key's of this
// database) shared-cache entries when the transaction commits: the key tables'
// trigger, for changes made by hand or applied by logical replication.
void evict_key_at_commit(std::uint32_t key_id);
void evict_database_at_commit();

}  // namespace pg_envelope
