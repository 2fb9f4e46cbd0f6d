// DEK resolution: finds the DEK for a value (decrypt) or for a key name (encrypt):
// the backend's first-level cache, then (on a miss) the key rows (key_catalog.hpp),
// the shared DEK cache (shared_dek_cache.hpp) and, when no backend has it, an
// unwrap by the key's KMS (kms_registry.hpp), whose result the others wait for.
#pragma once

#include <string_view>

#include "key_access.hpp"
#include "pg_envelope/dek_cache.hpp"

namespace pg_envelope::dek_resolver {

// Each checks that the current user holds `privilege` on the key (key_access.hpp),
// before any KMS call on a miss.
CachedDek& for_decrypt(DekId id, key_access::Privilege privilege);
CachedDek& for_encrypt(std::string_view key_name, key_access::Privilege privilege);

// for_decrypt() that answers nullptr instead of raising when the current user lacks
// `privilege` or the key is destroyed (a protected column then shows ciphertext).
CachedDek* if_allowed(DekId id, key_access::Privilege privilege);

// The DEK with no privilege check: for the extension's own work on the caller's
// behalf that reveals nothing to it (blind-index keys, re-binding a protected value
// that the caller may copy). Disabled and destroyed keys are refused as always.
CachedDek& internal(DekId id);

// Drops this backend's cached DEKs (other backends follow the shared generation).
void forget_all() noexcept;

// envelope.backend_cache_entries: how many DEKs each backend keeps ready (superuser;
// takes effect at the next lookup).
void define_gucs();

// Registers the relcache callback that notices changes of the key tables: dropped or
// truncated, or a key change committed (or replayed on a standby); from _PG_init.
void register_callbacks();

}  // namespace pg_envelope::dek_resolver
