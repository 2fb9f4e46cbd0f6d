// Shared-memory DEK cache (see shared_cache.hpp). A fixed array of entries under one
// LWLock of the "pg_envelope" tranche; clock (second-chance) eviction.
#include "guard.hpp"

extern "C" {
#include "miscadmin.h"
#include "pgstat.h"
#include "port/atomics.h"
#include "storage/condition_variable.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/guc.h"
#include "utils/timestamp.h"
}

#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

#include "pg_envelope/crypto.hpp"
#include "shared_cache.hpp"
#include "shared_state.hpp"

namespace pg_envelope::shared_cache {

namespace {

enum : std::uint32_t { kEmpty = 0, kReady = 1, kLoading = 2, kFailedState = 3 };

// How long a failed unwrap is remembered, so an outage is not hammered.
constexpr long kFailureMemoryMs = 2000;

struct Entry {
  std::uint32_t state;
  std::int32_t owner_pid;  // kLoading: the claimant
  Failure failure;  // kFailedState
  Oid dbid;
  std::uint32_t key_id;  // 0: empty
  std::uint32_t version;
  std::uint64_t generation;
  TimestampTz loaded_at;
  TimestampTz stale_loaded_at;  // kLoading over a stale DEK: when that DEK was loaded
  TimestampTz retry_after;      // a stale DEK in use: when to ask the KMS again
  std::uint32_t has_stale;      // kLoading: `masked` still holds the stale DEK
  std::uint32_t referenced;
  std::uint8_t masked[kAes256KeySize];
};

struct Cache {
  LWLock* lock;
  int capacity;
  int hand;
  ConditionVariable loaded;  // broadcast when a claimed load completes or fails
  pg_atomic_uint64 hits, misses, stores, evictions, kms_unwraps, kms_errors, flushes, waits;
  Entry entries[FLEXIBLE_ARRAY_MEMBER];
};

int capacity_guc = 1024;
int ttl_seconds = 3600;
int max_stale_seconds = 3600;
Cache* cache = nullptr;

// The masking secret: drawn once in the postmaster, inherited by every backend,
// never in shared memory.
std::uint8_t mask_secret[32];
bool mask_ready = false;

// Key ids are unique within a database only (a restored copy in the same cluster has
// the same ids, with different DEKs once rotated), so entries belong to a database.
bool same_dek(const Entry& e, DekId id) {
  return e.dbid == MyDatabaseId && e.key_id == id.key_id && e.version == id.version;
}

void mask_for(DekId id, std::uint8_t out[kAes256KeySize]) {
  static constexpr char kLabel[] = "pg_envelope cache mask v1";
  std::uint8_t info[12 + sizeof kLabel - 1];
  store_be32(info, MyDatabaseId);
  store_be32(info + 4, id.key_id);
  store_be32(info + 8, id.version);
  std::memcpy(info + 12, kLabel, sizeof kLabel - 1);
  hkdf_sha256({mask_secret, sizeof mask_secret}, {}, {info, sizeof info}, {out, kAes256KeySize});
}

bool fresh(const Entry& e, std::uint64_t generation, TimestampTz now) {
  return e.state == kReady && e.key_id != 0 && e.generation == generation &&
         (ttl_seconds <= 0 || now - e.loaded_at < static_cast<TimestampTz>(ttl_seconds) * USECS_PER_SEC);
}

// Past its TTL but inside envelope.cache_max_stale: usable while the KMS is down.
bool stale_usable(const Entry& e, std::uint64_t generation, TimestampTz now) {
  if (e.state != kReady || e.generation != generation || ttl_seconds <= 0 || max_stale_seconds <= 0) return false;
  return now - e.loaded_at < static_cast<TimestampTz>(ttl_seconds + max_stale_seconds) * USECS_PER_SEC;
}

void clear(Entry& e) {
  secure_zero(&e, sizeof e);  // key bytes included, masked or not
}

}  // namespace

std::size_t shmem_size() {
  return MAXALIGN(offsetof(Cache, entries) + sizeof(Entry) * static_cast<std::size_t>(capacity_guc));
}

void request_lwlock() { RequestNamedLWLockTranche("pg_envelope", 1); }

void define_gucs() {
  DefineCustomIntVariable("envelope.cache_entries", "Number of DEKs the shared-memory cache holds.", nullptr,
                          &capacity_guc, 1024, 16, 1 << 20, PGC_POSTMASTER, 0, nullptr, nullptr, nullptr);
  DefineCustomIntVariable("envelope.cache_ttl", "How long a DEK stays in the shared cache (0: no limit).", nullptr,
                          &ttl_seconds, 3600, 0, 365 * 86400, PGC_SIGHUP, GUC_UNIT_S, nullptr, nullptr, nullptr);
  DefineCustomIntVariable("envelope.cache_max_stale",
                          "How long past its TTL a cached DEK keeps serving while the KMS is unreachable.", nullptr,
                          &max_stale_seconds, 3600, 0, 365 * 86400, PGC_SIGHUP, GUC_UNIT_S, nullptr, nullptr,
                          nullptr);
}

void attach(bool found) {
  if (!mask_ready) {  // in the postmaster, before any backend forks
    random_bytes({mask_secret, sizeof mask_secret});
    mask_ready = true;
  }
  (void)found;
  bool exists = false;
  cache = static_cast<Cache*>(ShmemInitStruct("pg_envelope DEK cache", shmem_size(), &exists));
  if (!exists) {
    std::memset(cache, 0, shmem_size());
    cache->lock = &(GetNamedLWLockTranche("pg_envelope"))->lock;
    cache->capacity = capacity_guc;
    for (pg_atomic_uint64* c : {&cache->hits, &cache->misses, &cache->stores, &cache->evictions, &cache->kms_unwraps,
                                &cache->kms_errors, &cache->flushes, &cache->waits})
      pg_atomic_init_u64(c, 0);
    ConditionVariableInit(&cache->loaded);
  }
  // Keep the (masked) keys out of core dumps: the pages wholly inside the entries.
  long page = sysconf(_SC_PAGESIZE);
  auto begin = reinterpret_cast<std::uintptr_t>(cache->entries);
  auto end = begin + sizeof(Entry) * static_cast<std::size_t>(cache->capacity);
  std::uintptr_t first = (begin + page - 1) & ~static_cast<std::uintptr_t>(page - 1);
  std::uintptr_t last = end & ~static_cast<std::uintptr_t>(page - 1);
  if (last > first) (void)madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTDUMP);
}

namespace {

// The entry for `id`, or a slot to reuse (empty, stale, or evicted by the clock).
// Called with the lock held exclusively.
Entry& slot_for(DekId id, std::uint64_t generation, TimestampTz now, bool& evicted) {
  for (int i = 0; i < cache->capacity; ++i) {
    Entry& e = cache->entries[i];
    if (e.state != kEmpty && same_dek(e, id)) return e;
  }
  for (int i = 0; i < cache->capacity; ++i) {
    Entry& e = cache->entries[i];
    if (e.state == kEmpty || (e.state == kReady && !fresh(e, generation, now))) return e;
  }
  for (int rounds = 0; rounds < 2 * cache->capacity + 1; ++rounds) {  // clock: a second chance
    Entry& e = cache->entries[cache->hand];
    cache->hand = (cache->hand + 1) % cache->capacity;
    if (e.state == kLoading) continue;  // never steal a load in flight
    if (e.referenced) {
      e.referenced = 0;
    } else {
      evicted = true;
      return e;
    }
  }
  evicted = true;  // every entry is loading: reuse the one under the hand
  return cache->entries[cache->hand];
}

void store(Entry& slot, DekId id, const std::uint8_t masked[kAes256KeySize], std::uint64_t generation,
           TimestampTz now) {
  clear(slot);
  slot.state = kReady;
  slot.dbid = MyDatabaseId;
  slot.key_id = id.key_id;
  slot.version = id.version;
  slot.generation = generation;
  slot.loaded_at = now;
  slot.referenced = 1;
  std::memcpy(slot.masked, masked, kAes256KeySize);
  pg_atomic_fetch_add_u64(&cache->stores, 1);
}

void masked_copy(DekId id, const SecureBytes& dek, std::uint8_t out[kAes256KeySize]) {
  mask_for(id, out);
  for (std::size_t i = 0; i < kAes256KeySize; ++i) out[i] ^= dek.data()[i];
}

void unmask(DekId id, const std::uint8_t masked[kAes256KeySize], SecureBytes& out) {
  std::uint8_t mask[kAes256KeySize];
  mask_for(id, mask);
  out = SecureBytes(kAes256KeySize);
  for (std::size_t i = 0; i < kAes256KeySize; ++i) out.data()[i] = masked[i] ^ mask[i];
  secure_zero(mask, sizeof mask);
}

}  // namespace

void put(DekId id, const SecureBytes& dek, std::uint64_t generation) {
  if (cache == nullptr || dek.size() != kAes256KeySize) return;
  std::uint8_t masked[kAes256KeySize];
  masked_copy(id, dek, masked);
  TimestampTz now = GetCurrentTimestamp();
  bool evicted = false;
  pg_call([] { LWLockAcquire(cache->lock, LW_EXCLUSIVE); });
  if (generation == key_generation()) store(slot_for(id, generation, now, evicted), id, masked, generation, now);
  LWLockRelease(cache->lock);
  if (evicted) pg_atomic_fetch_add_u64(&cache->evictions, 1);
  secure_zero(masked, sizeof masked);
}

Claim claim(DekId id, std::uint64_t generation, long wait_ms, SecureBytes& out, Failure& failure, bool& stale) {
  stale = false;
  if (cache == nullptr) return Claim::kLoad;
  TimestampTz deadline = GetCurrentTimestamp() + static_cast<TimestampTz>(wait_ms) * 1000;
  bool waited = false;
  for (;;) {
    TimestampTz now = GetCurrentTimestamp();
    std::uint8_t masked[kAes256KeySize];
    Claim result = Claim::kLoad;
    bool wait = false, evicted = false;
    pg_call([] { LWLockAcquire(cache->lock, LW_EXCLUSIVE); });
    Entry& e = slot_for(id, generation, now, evicted);
    bool mine = e.state != kEmpty && same_dek(e, id);
    if (mine && fresh(e, generation, now)) {
      std::memcpy(masked, e.masked, sizeof masked);
      e.referenced = 1;
      result = Claim::kHit;
    } else if (mine && stale_usable(e, generation, now) && now < e.retry_after) {
      std::memcpy(masked, e.masked, sizeof masked);  // the KMS failed moments ago: keep serving
      result = Claim::kHit;
      stale = true;
    } else if (mine && e.state == kLoading && e.generation == generation && now < deadline) {
      wait = true;  // another backend is unwrapping it
    } else if (mine && e.state == kFailedState && e.generation == generation &&
               now - e.loaded_at < kFailureMemoryMs * 1000) {
      failure = e.failure;
      result = Claim::kFailed;
    } else {
      // Nobody has it (or the claimant ran out of time): this backend loads it. A
      // stale DEK stays in the entry as the fallback should the KMS be unreachable.
      bool keep_stale = mine && stale_usable(e, generation, now);
      std::uint8_t kept[kAes256KeySize];
      TimestampTz kept_at = e.loaded_at;
      if (keep_stale) std::memcpy(kept, e.masked, sizeof kept);
      clear(e);
      if (keep_stale) {
        std::memcpy(e.masked, kept, sizeof kept);
        e.has_stale = 1;
        e.stale_loaded_at = kept_at;
        secure_zero(kept, sizeof kept);
      }
      e.state = kLoading;
      e.owner_pid = MyProcPid;
      e.dbid = MyDatabaseId;
      e.key_id = id.key_id;
      e.version = id.version;
      e.generation = generation;
      e.loaded_at = now;
      result = Claim::kLoad;
    }
    LWLockRelease(cache->lock);
    if (evicted && !wait && result == Claim::kLoad) pg_atomic_fetch_add_u64(&cache->evictions, 1);
    if (!wait) {
      if (result == Claim::kHit) {
        unmask(id, masked, out);
        secure_zero(masked, sizeof masked);
      }
      pg_atomic_fetch_add_u64(result == Claim::kHit ? &cache->hits : &cache->misses, 1);
      if (waited) pg_atomic_fetch_add_u64(&cache->waits, 1);
      return result;
    }
    // Sleep until a load completes (or 100 ms pass), interruptibly.
    waited = true;
    pg_call([] {
      ConditionVariablePrepareToSleep(&cache->loaded);
      (void)ConditionVariableTimedSleep(&cache->loaded, 100, PG_WAIT_EXTENSION);
      ConditionVariableCancelSleep();
    });
  }
}

void complete(DekId id, const SecureBytes& dek, std::uint64_t generation) {
  put(id, dek, generation);
  if (cache != nullptr) {
    // A generation change meanwhile: put() stored nothing; release the claim anyway.
    pg_call([] { LWLockAcquire(cache->lock, LW_EXCLUSIVE); });
    for (int i = 0; i < cache->capacity; ++i) {
      Entry& e = cache->entries[i];
      if (e.state == kLoading && same_dek(e, id) && e.owner_pid == MyProcPid)
        clear(e);
    }
    LWLockRelease(cache->lock);
    ConditionVariableBroadcast(&cache->loaded);
  }
}

bool fall_back_to_stale(DekId id, SecureBytes& out) {
  if (cache == nullptr) return false;
  std::uint8_t masked[kAes256KeySize];
  bool found = false;
  pg_call([] { LWLockAcquire(cache->lock, LW_EXCLUSIVE); });
  for (int i = 0; i < cache->capacity && !found; ++i) {
    Entry& e = cache->entries[i];
    if (e.state == kLoading && e.has_stale && same_dek(e, id) &&
        e.owner_pid == MyProcPid) {
      TimestampTz now = GetCurrentTimestamp();
      e.state = kReady;
      e.has_stale = 0;
      e.loaded_at = e.stale_loaded_at;
      e.retry_after = now + kFailureMemoryMs * 1000;
      std::memcpy(masked, e.masked, sizeof masked);
      found = true;
    }
  }
  LWLockRelease(cache->lock);
  if (!found) return false;
  ConditionVariableBroadcast(&cache->loaded);
  unmask(id, masked, out);
  secure_zero(masked, sizeof masked);
  return true;
}

void abandon(DekId id, const Failure& failure) {
  if (cache == nullptr) return;
  pg_call([] { LWLockAcquire(cache->lock, LW_EXCLUSIVE); });
  for (int i = 0; i < cache->capacity; ++i) {
    Entry& e = cache->entries[i];
    if (e.state == kLoading && same_dek(e, id) && e.owner_pid == MyProcPid) {
      if (failure.sqlstate[0] == '\0') {
        clear(e);
        continue;
      }
      e.state = kFailedState;
      e.loaded_at = GetCurrentTimestamp();
      e.failure = failure;
    }
  }
  LWLockRelease(cache->lock);
  ConditionVariableBroadcast(&cache->loaded);
}

void evict_key(std::uint32_t key_id) {
  if (cache == nullptr) return;
  pg_call([] { LWLockAcquire(cache->lock, LW_EXCLUSIVE); });
  for (int i = 0; i < cache->capacity; ++i) {
    Entry& e = cache->entries[i];
    if (e.state != kLoading && e.dbid == MyDatabaseId && e.key_id == key_id) clear(e);
  }
  LWLockRelease(cache->lock);
}

void flush() {
  if (cache == nullptr) return;
  pg_call([] { LWLockAcquire(cache->lock, LW_EXCLUSIVE); });
  for (int i = 0; i < cache->capacity; ++i) clear(cache->entries[i]);
  LWLockRelease(cache->lock);
  pg_atomic_fetch_add_u64(&cache->flushes, 1);
}

void count_kms_unwrap(bool ok) {
  if (cache != nullptr) pg_atomic_fetch_add_u64(ok ? &cache->kms_unwraps : &cache->kms_errors, 1);
}

Stats stats() {
  Stats s{};
  if (cache == nullptr) return s;
  std::uint64_t generation = key_generation();
  TimestampTz now = GetCurrentTimestamp();
  pg_call([] { LWLockAcquire(cache->lock, LW_SHARED); });
  for (int i = 0; i < cache->capacity; ++i)
    if (fresh(cache->entries[i], generation, now)) ++s.entries;
  LWLockRelease(cache->lock);
  s.capacity = cache->capacity;
  s.hits = static_cast<std::int64_t>(pg_atomic_read_u64(&cache->hits));
  s.misses = static_cast<std::int64_t>(pg_atomic_read_u64(&cache->misses));
  s.stores = static_cast<std::int64_t>(pg_atomic_read_u64(&cache->stores));
  s.evictions = static_cast<std::int64_t>(pg_atomic_read_u64(&cache->evictions));
  s.kms_unwraps = static_cast<std::int64_t>(pg_atomic_read_u64(&cache->kms_unwraps));
  s.kms_errors = static_cast<std::int64_t>(pg_atomic_read_u64(&cache->kms_errors));
  s.flushes = static_cast<std::int64_t>(pg_atomic_read_u64(&cache->flushes));
  s.waits = static_cast<std::int64_t>(pg_atomic_read_u64(&cache->waits));
  return s;
}

}  // namespace pg_envelope::shared_cache
