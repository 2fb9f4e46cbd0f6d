// Shared key information for cached DEKs (see shared_key_info.hpp).
#include "guard.hpp"

extern "C" {
#include "access/xlog.h"
#include "miscadmin.h"
#include "storage/shmem.h"
#include "storage/spin.h"
}

#include <cstring>

#include "key_generation.hpp"
#include "shared_key_info.hpp"

namespace pg_envelope::shared_key_info {

namespace {

constexpr std::size_t kNameCap = 64;  // key names are 1 to 63 characters

struct Slot {
  slock_t mutex;
  Oid dbid;                 // InvalidOid: empty
  std::uint32_t key_id;
  std::uint32_t version;
  std::uint64_t generation;  // the key generation the rows were read at
  std::uint8_t digest[kDigestSize];
  std::uint8_t name_len;
  char name[kNameCap];
};

Slot* slots = nullptr;

struct SharedGrant {
  Oid grantee;
  std::uint8_t privilege;
  std::uint8_t pattern_len;
  char pattern[kPatternCap];
};

struct GrantSnapshot {
  slock_t mutex;
  Oid dbid;  // InvalidOid: empty
  std::uint64_t generation;
  bool legacy;
  int n;
  SharedGrant grants[kMaxSharedGrants];
};

GrantSnapshot* snapshots = nullptr;
bool served_here = false;

Slot& slot_of(Oid dbid, DekId id) {
  std::uint64_t h = (static_cast<std::uint64_t>(dbid) * 0x9E3779B97F4A7C15ull) ^
                    (static_cast<std::uint64_t>(id.key_id) << 20) ^
                    (static_cast<std::uint64_t>(id.version) * 0xC2B2AE3D27D4EB4Full);
  h ^= h >> 29;
  h *= 0xBF58476D1CE4E5B9ull;
  h ^= h >> 32;
  return slots[h & (kSlots - 1)];
}

// Only on a primary, while no key change is in progress.
bool usable() { return slots != nullptr && key_rows_settled() && !RecoveryInProgress(); }

}  // namespace

static_assert((kSlots & (kSlots - 1)) == 0, "kSlots is a power of two");

std::size_t slots_size() { return MAXALIGN(sizeof(Slot) * kSlots); }

std::size_t shmem_size() { return slots_size() + MAXALIGN(sizeof(GrantSnapshot) * kGrantDatabases); }

void attach() {
  bool found = false;
  slots = static_cast<Slot*>(
      pg_call([&found] { return ShmemInitStruct("pg_envelope key information", shmem_size(), &found); }));
  snapshots = reinterpret_cast<GrantSnapshot*>(reinterpret_cast<char*>(slots) + slots_size());
  if (!found) {
    std::memset(static_cast<void*>(slots), 0, shmem_size());
    for (int i = 0; i < kSlots; ++i) SpinLockInit(&slots[i].mutex);
    for (int i = 0; i < kGrantDatabases; ++i) SpinLockInit(&snapshots[i].mutex);
  }
}

bool find(DekId id, std::uint64_t generation, std::string& key_name, std::uint8_t digest[kDigestSize]) {
  if (generation == 0 || !usable()) return false;
  Slot& s = slot_of(MyDatabaseId, id);
  char name[kNameCap];
  std::size_t len = 0;
  SpinLockAcquire(&s.mutex);
  bool hit = s.dbid == MyDatabaseId && s.key_id == id.key_id && s.version == id.version &&
             s.generation == generation;
  if (hit) {
    std::memcpy(digest, s.digest, kDigestSize);
    len = s.name_len;
    std::memcpy(name, s.name, len);
  }
  SpinLockRelease(&s.mutex);
  // The generation again: a key change that began meanwhile moved it.
  if (!hit || !usable() || key_generation() != generation) return false;
  key_name.assign(name, len);
  served_here = true;
  return true;
}

void publish(DekId id, std::uint64_t generation, std::string_view key_name, const std::uint8_t digest[kDigestSize]) {
  if (generation == 0 || key_name.empty() || key_name.size() >= kNameCap || !usable() ||
      key_generation() != generation)
    return;
  Slot& s = slot_of(MyDatabaseId, id);
  SpinLockAcquire(&s.mutex);
  s.dbid = MyDatabaseId;
  s.key_id = id.key_id;
  s.version = id.version;
  s.generation = generation;
  std::memcpy(s.digest, digest, kDigestSize);
  s.name_len = static_cast<std::uint8_t>(key_name.size());
  std::memcpy(s.name, key_name.data(), key_name.size());
  SpinLockRelease(&s.mutex);
}

bool find_grants(std::uint64_t generation, bool& legacy, std::vector<GrantRow>& out) {
  if (generation == 0 || !usable()) return false;
  GrantSnapshot& s = snapshots[MyDatabaseId % kGrantDatabases];
  // Copied out under the spinlock (plain bytes only), turned into strings after.
  static SharedGrant copy[kMaxSharedGrants];
  int n = 0;
  SpinLockAcquire(&s.mutex);
  bool hit = s.dbid == MyDatabaseId && s.generation == generation;
  if (hit) {
    legacy = s.legacy;
    n = s.n;
    std::memcpy(copy, s.grants, sizeof(SharedGrant) * static_cast<std::size_t>(n));
  }
  SpinLockRelease(&s.mutex);
  if (!hit || !usable() || key_generation() != generation) return false;
  out.clear();
  out.reserve(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i)
    out.push_back(GrantRow{std::string(copy[i].pattern, copy[i].pattern_len), copy[i].grantee, copy[i].privilege});
  served_here = true;
  return true;
}

void publish_grants(std::uint64_t generation, bool legacy, const std::vector<GrantRow>& rows) {
  if (generation == 0 || rows.size() > static_cast<std::size_t>(kMaxSharedGrants) || !usable() ||
      key_generation() != generation)
    return;
  for (const GrantRow& r : rows)
    if (r.pattern.size() >= kPatternCap) return;
  GrantSnapshot& s = snapshots[MyDatabaseId % kGrantDatabases];
  SpinLockAcquire(&s.mutex);
  s.dbid = MyDatabaseId;
  s.generation = generation;
  s.legacy = legacy;
  s.n = static_cast<int>(rows.size());
  for (std::size_t i = 0; i < rows.size(); ++i) {
    s.grants[i].grantee = rows[i].grantee;
    s.grants[i].privilege = rows[i].privilege;
    s.grants[i].pattern_len = static_cast<std::uint8_t>(rows[i].pattern.size());
    std::memcpy(s.grants[i].pattern, rows[i].pattern.data(), rows[i].pattern.size());
  }
  SpinLockRelease(&s.mutex);
}

bool served() noexcept { return served_here; }

}  // namespace pg_envelope::shared_key_info
