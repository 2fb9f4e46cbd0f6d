// Reads of the key tables on the encrypt/decrypt path: straight through their
// indexes (no SQL, so nothing to resolve through a search_path), with a fresh
// snapshot, so they see the latest committed state of a key even inside a
// statement or a REPEATABLE READ transaction that started before the key changed:
// a destroyed or disabled key is refused from the moment its change commits (or is
// replayed on a standby), whatever snapshot the caller's query runs with.
#pragma once

extern "C" {
#include "postgres.h"
}

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "key_records.hpp"
#include "pg_envelope/kms.hpp"

namespace pg_envelope::key_catalog {

std::optional<KeyRecord> key_by_name(std::string_view name);
std::optional<KeyRecord> key_by_id(std::uint32_t key_id);
std::optional<DekRecord> dek(DekId id);
// The most recently created DEK of a key of KMS `kms` that is not destroyed, read
// backward through the index on envelope.data_key (created_at): constant time however
// many keys exist, whatever the planner would choose. std::nullopt when there is none,
// and also when the schema has no such index (before 0.2.0): `indexed` tells which.
std::optional<DekRecord> newest_live_dek(std::string_view kms, bool& indexed);
std::optional<KmsConfig> kms(std::string_view name);

// Key ids of this database's keys that are disabled or destroyed.
std::vector<std::uint32_t> inactive_keys();

// Per-value lookups, remembered by this backend until the key generation moves (any
// key change anywhere): the current DEK version of a key id (0: no such key), and the
// id of a key name (0: no such key).
std::uint32_t current_version(std::uint32_t key_id);
std::uint32_t key_id(std::string_view name);

// Every row of envelope.key_grant (empty in a schema without it).
struct Grant {
  std::string pattern;
  Oid grantee;
  std::string privilege;
};
std::vector<Grant> grants();

}  // namespace pg_envelope::key_catalog
