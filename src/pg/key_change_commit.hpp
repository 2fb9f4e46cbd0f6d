// Key changes at commit. Whatever changes a key (the key functions, the key tables'
// trigger for changes made by hand or applied by logical replication) registers
// here what every backend must stop using; when the transaction commits, the key
// generation moves (every backend drops its first-level DEK cache at its next
// statement) and the registered keys' shared-cache entries are zeroed again (a
// backend may have re-cached one from the pre-commit rows meanwhile). A transaction
// that registered a change and is prepared (PREPARE TRANSACTION, as Citus does on its
// workers) leaves the same work in shared memory for COMMIT PREPARED, which runs no
// callback of ours: settle_prepared_key_changes() does it in every backend at the
// start of a statement (key_generation.hpp).
#pragma once

#include <cstdint>

namespace pg_envelope {

// Moves the key generation now and again when the current transaction commits.
void invalidate_keys_at_commit();

// invalidate_keys_at_commit(), and zeroes the key's shared-cache entries now and
// again at commit (destroy_key, disable_key).
void evict_key_now_and_at_commit(std::uint32_t key_id);

// invalidate_keys_at_commit(), and zeroes the key's (or every key's of this
// database) shared-cache entries at commit (the key tables' trigger).
void evict_key_at_commit(std::uint32_t key_id);
void evict_database_at_commit();

// Applies the key changes of prepared transactions committed since (see above).
void settle_prepared_key_changes();

// Registers the transaction callback (from _PG_init, when preloaded).
void register_commit_callback();

}  // namespace pg_envelope
