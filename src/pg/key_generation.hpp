// The key generation: one counter in shared memory that moves whenever a key, a DEK
// version or a KMS configuration changes anywhere on this server (at the call and
// again at commit, see key_change_commit.hpp). A backend drops its first-level DEK
// cache when the generation it last saw differs, a KMS provider is rebuilt from its
// row, and a DEK unwrapped from key rows read at an older generation is never put
// into the shared cache.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pg_envelope {

// The current generation; 0 when the library was not preloaded.
std::uint64_t key_generation() noexcept;
void bump_key_generation() noexcept;

// Key changes in progress: a transaction that changes a key counts itself in before
// its first move of the generation and out after its last (at commit or abort; a
// prepared one is then counted by its slot below until it is settled). While
// key_rows_settled() is false, the key rows a backend reads may be about to change
// (or, between a commit and its generation move, have just changed): what is read
// from them is not shared with other backends (shared_key_info.hpp).
void begin_key_change() noexcept;
void end_key_change() noexcept;
bool key_rows_settled() noexcept;

// Prepared transactions (PREPARE TRANSACTION; Citus commits every worker's part of a
// distributed transaction that way). COMMIT PREPARED runs no callback of ours, so a
// prepared transaction that changed keys leaves here what its commit must do:
// remember_prepared_change() (from the PRE_PREPARE callback; false when all
// kMaxPreparedChanges slots are taken), and every backend of the database calls
// settle_prepared_changes() at the start of its statements: for a change whose
// transaction has committed since, it moves the generation and zeroes the keys'
// shared-cache entries (`evict_key` / `evict_database`, called without the slot
// lock); for one rolled back it only frees the slot. More than
// kMaxPreparedChangeKeys keys count as every key of the database. The slots live in
// shared memory: a restart of the server between PREPARE and COMMIT PREPARED loses
// them (the shared cache starts empty; see docs/cache.md).
constexpr int kMaxPreparedChanges = 32;
constexpr int kMaxPreparedChangeKeys = 64;
bool remember_prepared_change(std::uint32_t xid, bool all_keys, const std::uint32_t* keys, int n_keys) noexcept;
void settle_prepared_changes(void (*evict_key)(std::uint32_t), void (*evict_database)());

namespace key_generation_memory {
std::size_t size();
void attach();  // from the shmem startup hook, under AddinShmemInitLock
}  // namespace key_generation_memory

}  // namespace pg_envelope
