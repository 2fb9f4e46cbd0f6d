// Shared-memory DEK cache (see shared_dek_cache.hpp). A fixed array of entries under one
// LWLock of the "pg_envelope" tranche, indexed by a chained hash table (as
// pg_stat_statements indexes its entries with a dynahash): a hit is found in O(1) under
// the lock in shared mode; only a miss, a load's outcome and invalidation take it
// exclusively. Unused entries sit on a free list; when none is left, clock
// (second-chance) eviction picks the victim.
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

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "pg_envelope/crypto.hpp"
#include "pg_envelope/encoding.hpp"
#include "key_generation.hpp"
#include "shared_dek_cache.hpp"
#include "shmem_mask.hpp"
#include "wait_events.hpp"

namespace pg_envelope::shared_dek_cache {

namespace {

enum : std::uint32_t { kEmpty = 0, kReady = 1, kLoading = 2, kFailedState = 3 };

// How long a failed unwrap is remembered, so an outage is not hammered; also how
// long a stale DEK serves before the KMS is asked again.
constexpr long kFailureMemoryMs = 2000;

struct Entry {
  std::uint32_t state;
  std::int32_t owner_pid;     // kLoading: the claimant
  std::uint32_t failure_seq;  // kFailedState: its record in Cache::failures (see failure_of)
  Oid dbid;
  std::uint32_t key_id;  // 0: empty
  std::uint32_t version;
  std::uint8_t digest[16];  // of the wrapped DEK (see Ident)
  std::uint64_t generation;  // kLoading, kFailedState: the key generation the claimant read the rows at
  TimestampTz loaded_at;
  TimestampTz stale_loaded_at;  // kLoading over a stale DEK: when that DEK was loaded
  TimestampTz retry_after;      // a stale DEK in use: when to ask the KMS again
  std::uint32_t has_stale;      // kLoading: `masked` still holds the stale DEK
  // Set by hits under the shared lock (only ever from 0 to 1, an aligned 32-bit store),
  // cleared by the clock under the exclusive lock.
  volatile std::uint32_t referenced;
  std::uint8_t masked[kAes256KeySize];
};

// Failures are rare and large (a whole error report): a small ring of them, referred to
// by sequence number from the entries in kFailedState, keeps each entry small.
constexpr int kFailureSlots = 64;

struct Cache {
  LWLock* lock;
  int capacity;
  int hand;
  bool dump_excluded;
  ConditionVariable loaded;  // broadcast when a claimed load completes or fails
  pg_atomic_uint64 hits, misses, stores, evictions, flushes, waits;
  pg_atomic_uint64 reset_at;  // TimestampTz of the last reset_stats() (or of start-up)
  // The hash index: `buckets` heads of chains through `next` (entry indexes, -1 ends);
  // an entry is on a chain exactly when its state is not kEmpty, and on the free list
  // (also through `next`) when it is empty. Both arrays follow this header.
  std::uint32_t bucket_mask;
  std::int32_t free_head;
  std::uint32_t failure_seq;  // the last one handed out (0: none)
  Failure failures[kFailureSlots];
  std::uint32_t failure_seqs[kFailureSlots];
  // The entries follow on their own pages (see entries_offset()), so that
  // MADV_DONTDUMP covers every one of them and nothing else.
};

int capacity_guc = 1024;
int ttl_seconds = 3600;
int max_stale_seconds = 3600;
Cache* cache = nullptr;
Entry* entries = nullptr;  // cache->capacity entries, page-aligned
std::int32_t* buckets = nullptr;  // bucket_mask + 1 chain heads (in shared memory)
std::int32_t* next_of = nullptr;  // per entry: the next on its chain or on the free list

std::size_t page_size() { return static_cast<std::size_t>(sysconf(_SC_PAGESIZE)); }

std::size_t entries_bytes(int capacity) {
  std::size_t page = page_size();
  return (sizeof(Entry) * static_cast<std::size_t>(capacity) + page - 1) / page * page;
}

// A power of two at least the capacity: chains stay about one entry long.
std::uint32_t bucket_count(int capacity) {
  std::uint32_t n = 1;
  while (n < static_cast<std::uint32_t>(capacity)) n <<= 1;
  return n;
}

std::size_t index_bytes(int capacity) {
  return MAXALIGN(sizeof(std::int32_t) * bucket_count(capacity)) +
         MAXALIGN(sizeof(std::int32_t) * static_cast<std::size_t>(capacity));
}

// Key ids are unique within a database only, and may be reused there once the key
// tables are dropped and created again: entries belong to a database and carry the
// digest of the wrapped DEK they were unwrapped from.
bool same_dek(const Entry& e, const Ident& ident) {
  return e.dbid == MyDatabaseId && e.key_id == ident.id.key_id && e.version == ident.id.version &&
         std::memcmp(e.digest, ident.wrapped_digest, sizeof e.digest) == 0;
}

void mask_for(const Ident& ident, std::uint8_t out[kAes256KeySize]) {
  static constexpr char kLabel[] = "pg_envelope cache mask v1";
  std::uint8_t info[12 + sizeof ident.wrapped_digest + sizeof kLabel - 1];
  store_be32(info, MyDatabaseId);
  store_be32(info + 4, ident.id.key_id);
  store_be32(info + 8, ident.id.version);
  std::memcpy(info + 12, ident.wrapped_digest, sizeof ident.wrapped_digest);
  std::memcpy(info + 12 + sizeof ident.wrapped_digest, kLabel, sizeof kLabel - 1);
  shmem_mask::derive({info, sizeof info}, {out, kAes256KeySize});  // the postmaster's secret (shmem_mask.hpp)
}

TimestampTz ttl_us() { return static_cast<TimestampTz>(ttl_seconds) * USECS_PER_SEC; }

bool fresh(const Entry& e, TimestampTz now) {
  return e.state == kReady && e.key_id != 0 && (ttl_seconds <= 0 || now - e.loaded_at < ttl_us());
}

TimestampTz fresh_until(TimestampTz loaded_at) { return ttl_seconds <= 0 ? kForever : loaded_at + ttl_us(); }

// A DEK loaded at `loaded_at`, past its TTL, still inside envelope.cache_max_stale:
// usable while the KMS is down.
bool stale_window(TimestampTz loaded_at, TimestampTz now) {
  if (ttl_seconds <= 0 || max_stale_seconds <= 0) return false;
  return now - loaded_at < static_cast<TimestampTz>(ttl_seconds + max_stale_seconds) * USECS_PER_SEC;
}

bool stale_usable(const Entry& e, TimestampTz now) { return e.state == kReady && stale_window(e.loaded_at, now); }

// How long a backend may keep a stale DEK: until the KMS is asked again, and never
// past the max-stale window.
TimestampTz stale_until(TimestampTz loaded_at, TimestampTz retry_after) {
  TimestampTz end = loaded_at + static_cast<TimestampTz>(ttl_seconds + max_stale_seconds) * USECS_PER_SEC;
  return retry_after < end ? retry_after : end;
}

void clear(Entry& e) {
  secure_zero(&e, sizeof e);  // key bytes included, masked or not
}

// ---- the hash index (every function here is called with the lock held exclusively,
// except find(), which a shared hold suffices for) ----

std::uint32_t hash_of(Oid dbid, std::uint32_t key_id, std::uint32_t version, const std::uint8_t* digest) {
  // The digest is a SHA-256 prefix of the wrapped DEK: already uniform. Mixed with the
  // ids so that equal wrapped DEKs under two ids (never expected) still spread.
  std::uint64_t h = load_be32(digest) ^ (static_cast<std::uint64_t>(load_be32(digest + 4)) << 32);
  h ^= (static_cast<std::uint64_t>(dbid) * 0x9E3779B97F4A7C15ull) ^ (static_cast<std::uint64_t>(key_id) << 17) ^
       (static_cast<std::uint64_t>(version) * 0xC2B2AE3D27D4EB4Full);
  h ^= h >> 29;
  h *= 0xBF58476D1CE4E5B9ull;
  h ^= h >> 32;
  return static_cast<std::uint32_t>(h);
}

std::uint32_t bucket_of(const Entry& e) { return hash_of(e.dbid, e.key_id, e.version, e.digest) & cache->bucket_mask; }

int index_of(const Entry& e) { return static_cast<int>(&e - entries); }

// The entry of `ident` in this database, or -1.
int find(const Ident& ident) {
  std::uint32_t b = hash_of(MyDatabaseId, ident.id.key_id, ident.id.version, ident.wrapped_digest) & cache->bucket_mask;
  for (std::int32_t i = buckets[b]; i >= 0; i = next_of[i])
    if (same_dek(entries[i], ident)) return i;
  return -1;
}

void link(Entry& e) {
  std::uint32_t b = bucket_of(e);
  int i = index_of(e);
  next_of[i] = buckets[b];
  buckets[b] = i;
}

void unlink(Entry& e) {
  std::int32_t* at = &buckets[bucket_of(e)];
  int i = index_of(e);
  while (*at >= 0 && *at != i) at = &next_of[*at];
  if (*at == i) *at = next_of[i];
}

void push_free(Entry& e) {
  int i = index_of(e);
  next_of[i] = cache->free_head;
  cache->free_head = i;
}

// Empties an entry: off its chain, zeroed, onto the free list.
void release(Entry& e) {
  if (e.state == kEmpty) return;
  unlink(e);
  clear(e);
  push_free(e);
}

// Gives an entry a state and the identity of `ident` in this database, and puts it on
// its chain. The entry comes off the free list (slot_for) or is a victim/the entry of
// `ident` itself, unlinked and cleared here.
void assign(Entry& e, std::uint32_t state, const Ident& ident, TimestampTz loaded_at) {
  if (e.state != kEmpty) unlink(e);
  clear(e);
  e.state = state;
  e.dbid = MyDatabaseId;
  e.key_id = ident.id.key_id;
  e.version = ident.id.version;
  std::memcpy(e.digest, ident.wrapped_digest, sizeof e.digest);
  e.loaded_at = loaded_at;
  link(e);
}

// Rebuilds the index from the entries' states (at start-up and after flush()).
void rebuild_index() {
  for (std::uint32_t b = 0; b <= cache->bucket_mask; ++b) buckets[b] = -1;
  cache->free_head = -1;
  for (int i = cache->capacity - 1; i >= 0; --i) {
    if (entries[i].state == kEmpty)
      push_free(entries[i]);
    else
      link(entries[i]);
  }
}

// Records a failure in the ring; returns its sequence number (never 0).
std::uint32_t record_failure(const Failure& f) {
  std::uint32_t seq = ++cache->failure_seq;
  if (seq == 0) seq = ++cache->failure_seq;
  int slot = static_cast<int>(seq % kFailureSlots);
  cache->failures[slot] = f;
  cache->failure_seqs[slot] = seq;
  return seq;
}

// The failure an entry refers to, unless 64 later failures have overwritten it.
const Failure* failure_of(const Entry& e) {
  int slot = static_cast<int>(e.failure_seq % kFailureSlots);
  return e.failure_seq != 0 && cache->failure_seqs[slot] == e.failure_seq ? &cache->failures[slot] : nullptr;
}

void lock_exclusive() {
  pg_call([] { LWLockAcquire(cache->lock, LW_EXCLUSIVE); });
}

void lock_shared() {
  pg_call([] { LWLockAcquire(cache->lock, LW_SHARED); });
}

// A hit on `e` (the entry of the DEK asked for): its DEK is fresh, or stale but the KMS
// failed moments ago. Copies the masked key out and marks the entry for the clock (a
// store only when the bit is clear, so hits under the shared lock keep the line shared).
bool serve_hit(Entry& e, TimestampTz now, std::uint8_t masked[kAes256KeySize], std::int64_t& valid_until,
               bool& stale) {
  if (fresh(e, now)) {
    valid_until = fresh_until(e.loaded_at);
  } else if (stale_usable(e, now) && now < e.retry_after) {
    valid_until = stale_until(e.loaded_at, e.retry_after);  // the KMS failed moments ago: keep serving
    stale = true;
  } else {
    return false;
  }
  std::memcpy(masked, e.masked, kAes256KeySize);
  if (!e.referenced) e.referenced = 1;
  return true;
}

}  // namespace

Ident ident_of(DekId id, ByteView wrapped) {
  Ident ident{};
  ident.id = id;
  std::uint8_t d[32];
  sha256(wrapped, d);
  std::memcpy(ident.wrapped_digest, d, sizeof ident.wrapped_digest);
  return ident;
}

std::size_t shmem_size() {
  // The header, up to a page of alignment, then the entries on whole pages.
  return MAXALIGN(sizeof(Cache)) + index_bytes(capacity_guc) + page_size() + entries_bytes(capacity_guc);
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

void attach() {
  shmem_mask::init();  // in the postmaster, before any backend forks
  bool exists = false;
  cache = static_cast<Cache*>(ShmemInitStruct("pg_envelope DEK cache", shmem_size(), &exists));
  std::size_t page = page_size();
  char* index = reinterpret_cast<char*>(cache) + MAXALIGN(sizeof(Cache));
  auto first = (reinterpret_cast<std::uintptr_t>(index) + index_bytes(capacity_guc) + page - 1) &
               ~static_cast<std::uintptr_t>(page - 1);
  entries = reinterpret_cast<Entry*>(first);
  buckets = reinterpret_cast<std::int32_t*>(index);
  next_of = reinterpret_cast<std::int32_t*>(index + MAXALIGN(sizeof(std::int32_t) * bucket_count(capacity_guc)));
  if (!exists) {
    std::memset(cache, 0, shmem_size());
    cache->lock = &(GetNamedLWLockTranche("pg_envelope"))->lock;
    cache->capacity = capacity_guc;
    cache->bucket_mask = bucket_count(capacity_guc) - 1;
    rebuild_index();
    for (pg_atomic_uint64* c : {&cache->hits, &cache->misses, &cache->stores, &cache->evictions, &cache->flushes,
                                &cache->waits, &cache->reset_at})
      pg_atomic_init_u64(c, 0);
    pg_atomic_write_u64(&cache->reset_at, static_cast<std::uint64_t>(GetCurrentTimestamp()));
    ConditionVariableInit(&cache->loaded);
  }
  // Keep the (masked) keys out of core dumps. The entries start and end on page
  // boundaries; with huge pages the kernel may refuse a range that is not aligned
  // to them, which is logged and shown in envelope.stats.
  int err = shmem_mask::exclude_from_core_dumps(entries, entries_bytes(cache->capacity));
  int rc = err == 0 ? 0 : -1;
  if (!exists) {
    cache->dump_excluded = rc == 0;
    if (rc != 0)
      ereport(LOG, (errmsg("pg_envelope: could not exclude the shared DEK cache from core dumps: %s",
                           std::strerror(err)),
                    errhint("The cached keys are masked; with huge_pages = on or try, the range may not be "
                            "aligned to a huge page. Set huge_pages = off to exclude it.")));
  }
}

namespace {

// The entry for `ident`, or a slot to reuse: a free one, else the first the clock
// reaches that is expired, a failure no longer remembered, or not referenced since the
// clock last passed (a second chance). Never one being loaded, unless every entry is.
// Called with the lock held exclusively.
Entry& slot_for(const Ident& ident, TimestampTz now, bool& evicted) {
  if (int i = find(ident); i >= 0) return entries[i];
  if (cache->free_head >= 0) {
    Entry& e = entries[cache->free_head];
    cache->free_head = next_of[cache->free_head];
    return e;
  }
  for (int rounds = 0; rounds < 2 * cache->capacity + 1; ++rounds) {
    Entry& e = entries[cache->hand];
    cache->hand = (cache->hand + 1) % cache->capacity;
    if (e.state == kLoading) continue;  // never steal a load in flight
    if (e.state == kReady && !fresh(e, now) && !stale_usable(e, now)) return e;
    if (e.state == kFailedState && now - e.loaded_at >= kFailureMemoryMs * 1000) return e;
    if (e.referenced) {
      e.referenced = 0;
    } else {
      evicted = e.state == kReady;
      return e;
    }
  }
  evicted = true;  // every entry is loading: reuse the one under the hand
  return entries[cache->hand];
}

void store(Entry& slot, const Ident& ident, const std::uint8_t masked[kAes256KeySize], TimestampTz now) {
  assign(slot, kReady, ident, now);
  slot.referenced = 1;
  std::memcpy(slot.masked, masked, kAes256KeySize);
  pg_atomic_fetch_add_u64(&cache->stores, 1);
}

void masked_copy(const Ident& ident, const SecureBytes& dek, std::uint8_t out[kAes256KeySize]) {
  mask_for(ident, out);
  for (std::size_t i = 0; i < kAes256KeySize; ++i) out[i] ^= dek.data()[i];
}

void unmask(const Ident& ident, const std::uint8_t masked[kAes256KeySize], SecureBytes& out) {
  std::uint8_t mask[kAes256KeySize];
  mask_for(ident, mask);
  out = SecureBytes(kAes256KeySize);
  for (std::size_t i = 0; i < kAes256KeySize; ++i) out.data()[i] = masked[i] ^ mask[i];
  secure_zero(mask, sizeof mask);
}

}  // namespace

void put(const Ident& ident, const SecureBytes& dek, std::uint64_t generation) {
  if (cache == nullptr || dek.size() != kAes256KeySize) return;
  std::uint8_t masked[kAes256KeySize];
  masked_copy(ident, dek, masked);
  TimestampTz now = GetCurrentTimestamp();
  bool evicted = false;
  lock_exclusive();
  if (generation == key_generation()) store(slot_for(ident, now, evicted), ident, masked, now);
  LWLockRelease(cache->lock);
  if (evicted) pg_atomic_fetch_add_u64(&cache->evictions, 1);
  secure_zero(masked, sizeof masked);
}

Claim claim(const Ident& ident, std::uint64_t generation, long wait_ms, SecureBytes& out, Failure& failure,
            bool& stale, std::int64_t& valid_until) {
  stale = false;
  valid_until = 0;
  if (cache == nullptr) return Claim::kLoad;
  TimestampTz deadline = GetCurrentTimestamp() + static_cast<TimestampTz>(wait_ms) * 1000;
  bool waited = false;
  for (;;) {
    TimestampTz now = GetCurrentTimestamp();
    std::uint8_t masked[kAes256KeySize];
    // The common case, a hit, under the lock in shared mode.
    lock_shared();
    int found = find(ident);
    bool hit = found >= 0 && serve_hit(entries[found], now, masked, valid_until, stale);
    LWLockRelease(cache->lock);
    if (hit) {
      unmask(ident, masked, out);
      secure_zero(masked, sizeof masked);
      pg_atomic_fetch_add_u64(&cache->hits, 1);
      if (waited) pg_atomic_fetch_add_u64(&cache->waits, 1);
      return Claim::kHit;
    }
    // Otherwise again under the exclusive lock: the entry may have changed meanwhile.
    Claim result = Claim::kLoad;
    bool wait = false, evicted = false;
    lock_exclusive();
    Entry& e = slot_for(ident, now, evicted);
    bool mine = e.state != kEmpty && same_dek(e, ident);
    if (mine && serve_hit(e, now, masked, valid_until, stale)) {
      result = Claim::kHit;
    } else if (mine && e.state == kLoading && e.generation == generation && now < deadline) {
      wait = true;  // another backend is unwrapping it
    } else if (mine && e.state == kFailedState && e.generation == generation &&
               now - e.loaded_at < kFailureMemoryMs * 1000 && failure_of(e) != nullptr) {
      failure = *failure_of(e);
      result = Claim::kFailed;
    } else {
      // Nobody has it (or the claimant ran out of time): this backend loads it. A
      // stale DEK stays in the entry as the fallback should the KMS be unreachable,
      // including one a claimant that ran out of time was keeping.
      TimestampTz kept_at = 0;
      bool keep_stale = false;
      if (mine && stale_usable(e, now)) {
        keep_stale = true;
        kept_at = e.loaded_at;
      } else if (mine && e.state == kLoading && e.has_stale && stale_window(e.stale_loaded_at, now)) {
        keep_stale = true;
        kept_at = e.stale_loaded_at;
      }
      std::uint8_t kept[kAes256KeySize];
      if (keep_stale) std::memcpy(kept, e.masked, sizeof kept);
      assign(e, kLoading, ident, now);
      if (keep_stale) {
        std::memcpy(e.masked, kept, sizeof kept);
        e.has_stale = 1;
        e.stale_loaded_at = kept_at;
        secure_zero(kept, sizeof kept);
      }
      e.owner_pid = MyProcPid;
      e.generation = generation;
      result = Claim::kLoad;
    }
    LWLockRelease(cache->lock);
    if (evicted && !wait && result == Claim::kLoad) pg_atomic_fetch_add_u64(&cache->evictions, 1);
    if (!wait) {
      if (result == Claim::kHit) {
        unmask(ident, masked, out);
        secure_zero(masked, sizeof masked);
      }
      pg_atomic_fetch_add_u64(result == Claim::kHit ? &cache->hits : &cache->misses, 1);
      if (waited) pg_atomic_fetch_add_u64(&cache->waits, 1);
      return result;
    }
    // Sleep until a load completes (or 100 ms pass), interruptibly.
    waited = true;
    std::uint32_t event = dek_wait_event();
    pg_call([event] {
      ConditionVariablePrepareToSleep(&cache->loaded);
      (void)ConditionVariableTimedSleep(&cache->loaded, 100, event);
      ConditionVariableCancelSleep();
    });
  }
}

bool find_fresh(const Ident& ident, SecureBytes& out, std::int64_t& valid_until) {
  if (cache == nullptr) return false;
  TimestampTz now = GetCurrentTimestamp();
  std::uint8_t masked[kAes256KeySize];
  lock_shared();
  int found = find(ident);
  bool hit = found >= 0 && fresh(entries[found], now);
  if (hit) {
    bool stale = false;
    hit = serve_hit(entries[found], now, masked, valid_until, stale);
  }
  LWLockRelease(cache->lock);
  if (!hit) return false;
  unmask(ident, masked, out);
  secure_zero(masked, sizeof masked);
  pg_atomic_fetch_add_u64(&cache->hits, 1);
  return true;
}

std::int64_t complete(const Ident& ident, const SecureBytes& dek, std::uint64_t generation) {
  TimestampTz now = GetCurrentTimestamp();
  put(ident, dek, generation);
  if (cache != nullptr) {
    // A generation change meanwhile: put() stored nothing; release the claim anyway.
    lock_exclusive();
    if (int i = find(ident); i >= 0 && entries[i].state == kLoading && entries[i].owner_pid == MyProcPid)
      release(entries[i]);
    LWLockRelease(cache->lock);
    ConditionVariableBroadcast(&cache->loaded);
  }
  return fresh_until(now);
}

bool fall_back_to_stale(const Ident& ident, SecureBytes& out, std::int64_t& valid_until) {
  if (cache == nullptr) return false;
  std::uint8_t masked[kAes256KeySize];
  bool found = false;
  TimestampTz now = GetCurrentTimestamp();
  lock_exclusive();
  if (int i = find(ident); i >= 0) {
    Entry& e = entries[i];
    if (e.state == kLoading && e.has_stale && e.owner_pid == MyProcPid && stale_window(e.stale_loaded_at, now)) {
      e.state = kReady;
      e.has_stale = 0;
      e.loaded_at = e.stale_loaded_at;
      e.retry_after = now + kFailureMemoryMs * 1000;
      e.referenced = 1;
      valid_until = stale_until(e.loaded_at, e.retry_after);
      std::memcpy(masked, e.masked, sizeof masked);
      found = true;
    }
  }
  LWLockRelease(cache->lock);
  if (!found) return false;
  ConditionVariableBroadcast(&cache->loaded);
  unmask(ident, masked, out);
  secure_zero(masked, sizeof masked);
  return true;
}

void abandon(const Ident& ident, const Failure& failure) {
  if (cache == nullptr) return;
  lock_exclusive();
  if (int i = find(ident); i >= 0 && entries[i].state == kLoading && entries[i].owner_pid == MyProcPid) {
    Entry& e = entries[i];
    std::uint64_t generation = e.generation;
    if (failure.sqlstate[0] == '\0') {
      release(e);
    } else {
      assign(e, kFailedState, ident, GetCurrentTimestamp());  // the stale DEK goes too: it is past its
      e.generation = generation;                             // window, or the KMS refused the key
      e.failure_seq = record_failure(failure);
    }
  }
  LWLockRelease(cache->lock);
  ConditionVariableBroadcast(&cache->loaded);
}

namespace {

// Zeroes the entries of one key (or of every key) of this database; the lock is held
// exclusively. A claimant keeps its claim (its result is not stored: the generation
// has moved), but the stale DEK it was keeping goes now. Returns how many entries
// held a DEK. Nothing here throws or raises.
template <class Selected>
std::int64_t zero_entries_if(Selected selected) noexcept {
  std::int64_t n = 0;
  for (int i = 0; i < cache->capacity; ++i) {
    Entry& e = entries[i];
    if (e.state == kEmpty || e.dbid != MyDatabaseId || !selected(e.key_id)) continue;
    if (e.state == kLoading) {
      if (e.has_stale) ++n;
      secure_zero(e.masked, sizeof e.masked);
      e.has_stale = 0;
      continue;
    }
    if (e.state == kReady) ++n;
    release(e);
  }
  return n;
}

std::int64_t zero_entries(bool all_keys, std::uint32_t key_id) noexcept {
  return zero_entries_if([=](std::uint32_t id) noexcept { return all_keys || id == key_id; });
}

// From the commit callback: PostgreSQL's frames, so the lock is taken directly
// (LWLockAcquire raises no error for a lock that is not already held).
void evict_at_commit(bool all_keys, std::uint32_t key_id) noexcept {
  if (cache == nullptr) return;
  LWLockAcquire(cache->lock, LW_EXCLUSIVE);
  (void)zero_entries(all_keys, key_id);
  LWLockRelease(cache->lock);
}

}  // namespace

std::int64_t evict_key(std::uint32_t key_id) {
  if (cache == nullptr) return 0;
  lock_exclusive();
  std::int64_t n = zero_entries(false, key_id);
  LWLockRelease(cache->lock);
  return n;
}

std::int64_t evict_keys(const std::vector<std::uint32_t>& sorted_key_ids) {
  if (cache == nullptr || sorted_key_ids.empty()) return 0;
  lock_exclusive();
  std::int64_t n = zero_entries_if([&](std::uint32_t id) noexcept {
    return std::binary_search(sorted_key_ids.begin(), sorted_key_ids.end(), id);
  });
  LWLockRelease(cache->lock);
  return n;
}

bool holds_database_entries() {
  if (cache == nullptr) return false;
  pg_call([] { LWLockAcquire(cache->lock, LW_SHARED); });
  bool any = false;
  for (int i = 0; i < cache->capacity && !any; ++i)
    any = entries[i].state != kEmpty && entries[i].dbid == MyDatabaseId;
  LWLockRelease(cache->lock);
  return any;
}

std::int64_t key_entries(std::uint32_t key_id) {
  if (cache == nullptr) return 0;
  pg_call([] { LWLockAcquire(cache->lock, LW_SHARED); });
  std::int64_t n = 0;
  for (int i = 0; i < cache->capacity; ++i) {
    const Entry& e = entries[i];
    if (e.dbid != MyDatabaseId || e.key_id != key_id) continue;
    if (e.state == kReady || (e.state == kLoading && e.has_stale)) ++n;
  }
  LWLockRelease(cache->lock);
  return n;
}

void evict_key_at_commit(std::uint32_t key_id) noexcept { evict_at_commit(false, key_id); }
void evict_database_at_commit() noexcept { evict_at_commit(true, 0); }

void flush() {
  if (cache == nullptr) return;
  lock_exclusive();
  for (int i = 0; i < cache->capacity; ++i) clear(entries[i]);
  rebuild_index();
  LWLockRelease(cache->lock);
  pg_atomic_fetch_add_u64(&cache->flushes, 1);
}

void reset_stats() {
  if (cache == nullptr) return;
  for (pg_atomic_uint64* c : {&cache->hits, &cache->misses, &cache->stores, &cache->evictions, &cache->flushes,
                              &cache->waits})
    pg_atomic_write_u64(c, 0);
  pg_atomic_write_u64(&cache->reset_at, static_cast<std::uint64_t>(GetCurrentTimestamp()));
}

Stats stats() {
  Stats s{};
  if (cache == nullptr) return s;
  TimestampTz now = GetCurrentTimestamp();
  pg_call([] { LWLockAcquire(cache->lock, LW_SHARED); });
  for (int i = 0; i < cache->capacity; ++i)
    if (fresh(entries[i], now)) ++s.entries;
  LWLockRelease(cache->lock);
  auto read = [](pg_atomic_uint64& c) { return static_cast<std::int64_t>(pg_atomic_read_u64(&c)); };
  s.capacity = cache->capacity;
  s.hits = read(cache->hits);
  s.misses = read(cache->misses);
  s.stores = read(cache->stores);
  s.evictions = read(cache->evictions);
  s.flushes = read(cache->flushes);
  s.waits = read(cache->waits);
  s.reset_at = read(cache->reset_at);
  s.dump_excluded = cache->dump_excluded;
  return s;
}

}  // namespace pg_envelope::shared_dek_cache
