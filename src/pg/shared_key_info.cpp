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

std::size_t shmem_size() { return MAXALIGN(sizeof(Slot) * kSlots); }

void attach() {
  bool found = false;
  slots = static_cast<Slot*>(
      pg_call([&found] { return ShmemInitStruct("pg_envelope key information", shmem_size(), &found); }));
  if (!found) {
    std::memset(static_cast<void*>(slots), 0, shmem_size());
    for (int i = 0; i < kSlots; ++i) SpinLockInit(&slots[i].mutex);
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

}  // namespace pg_envelope::shared_key_info
