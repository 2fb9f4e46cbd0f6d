// The keyring: finds the DEK for a value (decrypt) or for a key name (encrypt),
// from the backend's DEK cache or, on a miss, from the key tables and the key's KMS.
#pragma once

#include <string_view>

#include "pg_envelope/dek_cache.hpp"

namespace pg_envelope::keyring {

CachedDek& for_decrypt(DekId id);
CachedDek& for_encrypt(std::string_view key_name);

// Drops this backend's cached DEKs (other backends follow the shared generation).
void forget_all() noexcept;

// Registers the relcache callback that notices the key table being dropped or
// truncated (from _PG_init).
void register_callbacks();

}  // namespace pg_envelope::keyring
