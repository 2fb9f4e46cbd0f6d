// Key-management reads and writes of the key tables (envelope.key, envelope.data_key,
// envelope.kms), through SPI as the tables' owner with a pinned search_path (see
// owner_spi.hpp). The encrypt/decrypt path reads through key_catalog.hpp instead.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "key_records.hpp"
#include "pg_includes.hpp"
#include "pg_envelope/kms.hpp"

namespace pg_envelope::key_admin_sql {

// The key row, locked FOR UPDATE when `for_update` (key changes serialise on it).
std::optional<KeyRecord> find_key(std::string_view name, bool for_update = false);
bool key_id_in_use(std::uint32_t key_id);

// The most recently created DEK on a KMS that still has its wrapped form, if any:
// used to check that the KMS (for "local": the master key) still unwraps existing
// keys before new ones are created under it.
std::optional<DekRecord> find_any_live_dek(std::string_view kms);

void insert_key(const KeyRecord& key);
void insert_dek(std::uint32_t key_id, std::uint32_t version, ByteView wrapped);
void set_current_version(std::uint32_t key_id, std::uint32_t version);

// Every DEK of a key that still has its wrapped form, oldest first, locked.
std::vector<DekRecord> live_deks(std::uint32_t key_id);
// The same, not locked (a read).
std::vector<DekRecord> wrapped_deks(std::uint32_t key_id);
// Replaces the wrapped form of DEKs (after a rewrap) and the key's KEK reference.
void update_wrapped(std::uint32_t key_id, std::uint32_t version, ByteView wrapped);
void set_kek(std::uint32_t key_id, std::string_view kek);

// envelope.kms rows (configured KMSs).
void insert_kms(const KmsConfig& kms);
void update_kms_options(std::string_view name, std::string_view options_json);
void delete_kms(std::string_view name);
std::int64_t count_keys_using_kms(std::string_view name);

// Crypto-shredding: drops every wrapped DEK of the key and marks it destroyed.
void destroy_key(std::uint32_t key_id);

// Sets a key that is not destroyed to 'active' or 'disabled'.
void set_key_disabled(std::uint32_t key_id, bool disabled);

// envelope.key_grant rows: insert one (false when it existed), delete one (false when
// there was none).
bool insert_grant(std::string_view pattern, Oid grantee, std::string_view privilege, Oid granted_by);
bool delete_grant(std::string_view pattern, Oid grantee, std::string_view privilege);

}  // namespace pg_envelope::key_admin_sql
