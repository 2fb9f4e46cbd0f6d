// The shared memory of pg_envelope, in the pattern of contrib/pg_stat_statements: a
// chained shmem_request_hook (PostgreSQL 15+; RequestAddinShmemSpace from _PG_init
// before that) reserves, and a chained shmem_startup_hook creates under
// AddinShmemInitLock, three structures, each owned by its module:
//   the key generation (key_generation.hpp), the KMS call statistics
//   (kms_stats.hpp), the shared DEK cache with its LWLock (shared_dek_cache.hpp), the
//   audit state (audit.hpp) and the shared credential store with its LWLock
//   (shared_credentials.hpp).
#pragma once

namespace pg_envelope {

// From _PG_init when the library is preloaded: marks it so and installs the hooks.
void request_shared_memory();

// Throws Error 55000 with a hint unless the library was preloaded (and so has its
// shared memory and, for the local KMS, the master key).
void require_preloaded();

}  // namespace pg_envelope
