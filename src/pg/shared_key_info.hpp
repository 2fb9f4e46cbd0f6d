// What a backend reads from the key rows for a DEK it is about to use, kept in shared
// memory for the other backends: for a database, key id and version, the key's name
// and the digest of the wrapped DEK (the shared DEK cache's identity of it, see
// shared_dek_cache.hpp), as read from envelope.key and envelope.data_key for a key and
// version that were usable (neither destroyed nor disabled).
//
// A record is published only when the key generation has not moved since before the
// rows were read and no key change is in progress (key_generation.hpp), and serves only
// while both still hold: exactly as long as a backend's first-level cache keeps using a
// DEK read from the same rows. So a new backend whose DEK the shared cache holds does
// not read the key tables for it (nor build their relation-cache entries). Every key
// change (the key functions, and the key tables' ENABLE ALWAYS triggers for rows
// changed by hand) moves the generation, so a destroyed, disabled or rewrapped key is
// never served from here. Not used on a standby: key changes arrive there as replayed
// relation-cache invalidations, which do not move the generation.
//
// The same for the grants (envelope.key_grant) of a database, so that a new backend of
// a role without superuser checks its privileges without reading them.
//
// A fixed table of kSlots records (direct-mapped: a collision replaces the older
// record, and a missing record only means the rows are read as before), each under its
// own spinlock; plain data only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "pg_envelope/envelope_format.hpp"

namespace pg_envelope::shared_key_info {

constexpr int kSlots = 4096;
constexpr std::size_t kDigestSize = 16;

std::size_t shmem_size();
void attach();  // from the shmem startup hook, under AddinShmemInitLock

// The record of `id` in this database if it is valid at `generation` (the current key
// generation, read by the caller before): fills `key_name` and `digest`.
bool find(DekId id, std::uint64_t generation, std::string& key_name, std::uint8_t digest[kDigestSize]);

// Records what was read from the key rows at `generation` (read before them); ignored
// when the generation has moved since, a key change is in progress, on a standby, or
// for a name longer than a key name may be.
void publish(DekId id, std::uint64_t generation, std::string_view key_name, const std::uint8_t digest[kDigestSize]);

// The grants of a database, as key_access reads them: at most kMaxSharedGrants, each
// pattern shorter than kPatternCap bytes (more or longer: not shared), in
// kGrantDatabases direct-mapped snapshots.
constexpr int kGrantDatabases = 8;
constexpr int kMaxSharedGrants = 128;
constexpr std::size_t kPatternCap = 72;
struct GrantRow {
  std::string pattern;
  std::uint32_t grantee;   // a role's OID
  std::uint8_t privilege;  // key_access::Privilege bit
};
bool find_grants(std::uint64_t generation, bool& legacy, std::vector<GrantRow>& out);
void publish_grants(std::uint64_t generation, bool legacy, const std::vector<GrantRow>& rows);

// Whether this backend took anything from here (it then may not know the key tables'
// OIDs; see dek_resolver.cpp). A plain read: safe in an invalidation callback.
bool served() noexcept;

}  // namespace pg_envelope::shared_key_info
