// The server-wide credential store (see shared_credentials.hpp).
#include "guard.hpp"

extern "C" {
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/condition_variable.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/guc.h"
}

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <optional>
#include <string>

#include "pg_envelope/crypto.hpp"
#include "pg_envelope/encoding.hpp"
#include "kms_settings.hpp"
#include "shared_credentials.hpp"
#include "shmem_mask.hpp"
#include "wait_events.hpp"

namespace pg_envelope::shared_credentials {

namespace {

// How long a failed fetch is remembered: meanwhile nobody fetches again, callers with
// no usable value get its error.
constexpr std::int64_t kFailureMemoryUs = 2'000'000;

struct Failure {  // an Error as it was raised (never a secret in it)
  char sqlstate[6];
  char message[256];
  char detail[512];
  char hint[256];
};

struct Slot {
  std::uint32_t used;     // holds an identity (a value, a claim or a failure)
  std::uint32_t loading;  // a backend is fetching
  std::int32_t loader_pid;
  std::uint32_t length;   // of the value; 0: none
  std::uint8_t ident[32];
  std::uint64_t seq;  // of the value (a new mask for each value published)
  std::int64_t refresh_at, expires_at;  // Unix µs; expires_at 0: never
  std::int64_t loading_since;
  std::int64_t failed_at;  // 0: no failure remembered
  std::int64_t last_used;
  Failure failure;
  std::uint8_t masked[kMaxValue];
};

struct Store {
  LWLock* lock;
  int capacity;
  bool dump_excluded;
  pg_atomic_uint64 next_seq;  // of the values published
  ConditionVariable published;  // broadcast when a fetch is published or abandoned
  pg_atomic_uint64 hits, fetches, waits, failures, invalidations, not_shared;
  pg_atomic_uint32 oversize_logged;
  // The slots follow on their own pages (see slots_offset()).
};

int capacity_guc = 64;
Store* store_hdr = nullptr;
Slot* slots = nullptr;

std::size_t page_size() { return static_cast<std::size_t>(sysconf(_SC_PAGESIZE)); }

std::size_t slots_bytes(int capacity) {
  std::size_t page = page_size();
  return (sizeof(Slot) * static_cast<std::size_t>(capacity) + page - 1) / page * page;
}

std::int64_t unix_now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool valid_at(const Slot& s, std::int64_t now) { return s.length > 0 && (s.expires_at == 0 || now < s.expires_at); }
bool fresh_at(const Slot& s, std::int64_t now) { return valid_at(s, now) && (s.refresh_at == 0 || now < s.refresh_at); }

// The mask of a value: the slot's identity and the value's sequence number.
std::uint8_t* mask_info(const std::uint8_t ident[32], std::uint64_t seq, std::uint8_t out[52]) {
  static constexpr char kLabel[] = "pg_envelope cred";  // 16 bytes
  std::memcpy(out, ident, 32);
  store_be32(out + 32, static_cast<std::uint32_t>(seq >> 32));
  store_be32(out + 36, static_cast<std::uint32_t>(seq));
  std::memcpy(out + 40, kLabel, 12);
  return out;
}

SecureBytes unmask(const std::uint8_t ident[32], std::uint64_t seq, const std::uint8_t* masked, std::size_t n) {
  SecureBytes out(masked, n);
  std::uint8_t info[52];
  shmem_mask::apply({mask_info(ident, seq, info), sizeof info}, out.span());
  return out;
}

// Whether the backend of a claim is gone (a claim is also taken over once it has run
// past the KMS retry budget: a pid reused, a backend stuck).
bool loader_gone(const Slot& s, std::int64_t now, std::int64_t budget_us) {
  if (now - s.loading_since > budget_us) return true;
  return s.loader_pid != MyProcPid && kill(s.loader_pid, 0) != 0 && errno == ESRCH;
}

void lock() {
  pg_call([] { LWLockAcquire(store_hdr->lock, LW_EXCLUSIVE); });
}
void unlock() noexcept { LWLockRelease(store_hdr->lock); }

void count(pg_atomic_uint64& c) { pg_atomic_fetch_add_u64(&c, 1); }

void copy_text(char* dst, std::size_t n, const std::string& s) {
  std::size_t k = std::min(n - 1, s.size());
  std::memcpy(dst, s.data(), k);
  dst[k] = '\0';
}

[[noreturn]] void raise(const Failure& f) { throw Error(f.sqlstate, f.message, f.detail, f.hint); }

class SharedStore final : public CredentialStore {
 public:
  StoredCredential get(std::string_view identity, const Fetch& fetch) override;
  bool invalidate(std::string_view identity, ByteView value) override;
};

void digest_of(std::string_view identity, std::uint8_t out[32]) {
  std::string id = std::to_string(MyDatabaseId) + "\n" + std::string(identity);
  sha256(as_bytes(id), out);
}

int find(const std::uint8_t ident[32]) {
  for (int i = 0; i < store_hdr->capacity; ++i)
    if (slots[i].used && std::memcmp(slots[i].ident, ident, 32) == 0) return i;
  return -1;
}

// A slot for a new identity: an unused one, else the least recently used one that is
// neither being fetched nor holding a valid value, else the least recently used one
// not being fetched. -1 when every slot is being fetched.
int victim(std::int64_t now) {
  int best = -1, best_valid = -1;
  for (int i = 0; i < store_hdr->capacity; ++i) {
    const Slot& s = slots[i];
    if (!s.used) return i;
    if (s.loading) continue;
    int& b = valid_at(s, now) ? best_valid : best;
    if (b < 0 || s.last_used < slots[b].last_used) b = i;
  }
  return best >= 0 ? best : best_valid;
}

void clear(Slot& s) noexcept { secure_zero(&s, sizeof s); }

StoredCredential served(const Slot& s) {
  StoredCredential out;
  out.value = unmask(s.ident, s.seq, s.masked, s.length);
  out.refresh_at_us = s.refresh_at;
  out.expires_at_us = s.expires_at;
  return out;
}

StoredCredential SharedStore::get(std::string_view identity, const Fetch& fetch) {
  std::uint8_t ident[32];
  digest_of(identity, ident);
  const std::int64_t budget_us = static_cast<std::int64_t>(kms_wait_budget_ms()) * 1000;
  bool waited = false;
  for (;;) {
    enum { kServe, kWait, kFail, kClaim, kUnshared } action = kClaim;
    std::int64_t now = unix_now_us();
    int idx = -1;
    StoredCredential out;
    Failure failure{};
    std::optional<StoredCredential> previous_value;
    lock();
    try {
      idx = find(ident);
      if (idx >= 0) {
        Slot& s = slots[idx];
        if (s.loading && loader_gone(s, now, budget_us)) s.loading = 0;  // a dead or stuck claimant
        bool failure_remembered = s.failed_at != 0 && now - s.failed_at < kFailureMemoryUs;
        if (fresh_at(s, now) || (valid_at(s, now) && (s.loading || failure_remembered))) {
          action = kServe;  // fresh, or being refreshed / refresh failed moments ago: still valid
        } else if (s.loading) {
          action = kWait;
        } else if (failure_remembered) {
          failure = s.failure;
          action = kFail;
        } else {
          action = kClaim;
        }
      } else {
        idx = victim(now);
        if (idx < 0) {
          action = kUnshared;
        } else {
          clear(slots[idx]);
          slots[idx].used = 1;
          std::memcpy(slots[idx].ident, ident, 32);
          action = kClaim;
        }
      }
      if (action == kServe) {
        slots[idx].last_used = now;
        out = served(slots[idx]);
      } else if (action == kClaim) {
        Slot& s = slots[idx];
        s.loading = 1;
        s.loader_pid = MyProcPid;
        s.loading_since = now;
        s.last_used = now;
        if (valid_at(s, now)) previous_value = served(s);
      }
    } catch (...) {
      unlock();
      throw;
    }
    unlock();

    switch (action) {
      case kServe:
        count(store_hdr->hits);
        if (waited) count(store_hdr->waits);
        return out;
      case kFail:
        if (waited) count(store_hdr->waits);
        raise(failure);
      case kUnshared:
        count(store_hdr->not_shared);
        return fetch(nullptr);
      case kWait: {
        // Until the claimant publishes, abandons or is found gone (loader_gone: at the
        // latest the KMS retry budget after its claim).
        waited = true;
        std::uint32_t event = dek_wait_event();
        pg_call([event] {
          ConditionVariablePrepareToSleep(&store_hdr->published);
          (void)ConditionVariableTimedSleep(&store_hdr->published, 100, event);
          ConditionVariableCancelSleep();
        });
        continue;
      }
      case kClaim: break;
    }

    // This backend fetches, without the lock.
    StoredCredential got;
    try {
      got = fetch(previous_value ? &previous_value->value : nullptr);
    } catch (const Error& e) {
      // Cancellation is this backend's business: no failure remembered for the others.
      bool cancelled = std::string_view(e.sqlstate()) == sqlstate::kQueryCanceled;
      std::int64_t t = unix_now_us();
      bool fall_back = false;
      lock();
      Slot& s = slots[idx];
      if (s.used && s.loading && s.loader_pid == MyProcPid && std::memcmp(s.ident, ident, 32) == 0) {
        s.loading = 0;
        if (!cancelled) {
          s.failed_at = t;
          std::memcpy(s.failure.sqlstate, e.sqlstate(), sizeof s.failure.sqlstate);
          copy_text(s.failure.message, sizeof s.failure.message, e.what());
          copy_text(s.failure.detail, sizeof s.failure.detail, e.detail());
          copy_text(s.failure.hint, sizeof s.failure.hint, e.hint());
          fall_back = valid_at(s, t);
        }
      }
      unlock();
      ConditionVariableBroadcast(&store_hdr->published);
      if (!cancelled) count(store_hdr->failures);
      // A refresh that failed while the stored value is still valid: keep using it.
      if (fall_back && previous_value) return std::move(*previous_value);
      throw;
    } catch (...) {
      lock();
      Slot& s = slots[idx];
      if (s.used && s.loading && s.loader_pid == MyProcPid && std::memcmp(s.ident, ident, 32) == 0) s.loading = 0;
      unlock();
      ConditionVariableBroadcast(&store_hdr->published);
      throw;
    }

    bool share = got.shareable && !got.value.empty() && got.value.size() <= kMaxValue;
    if (got.shareable && got.value.size() > kMaxValue) {
      count(store_hdr->not_shared);
      if (pg_atomic_exchange_u32(&store_hdr->oversize_logged, 1) == 0)
        pg_call([n = got.value.size()] {
          ereport(LOG, (errmsg("pg_envelope: a KMS credential of %zu bytes is larger than a shared credential slot "
                               "(%zu bytes); it is cached per backend",
                               n, kMaxValue)));
        });
    }
    // Masked before the lock is taken (nothing that can fail runs under it).
    std::uint64_t seq = pg_atomic_add_fetch_u64(&store_hdr->next_seq, 1);
    SecureBytes masked;
    if (share) {
      masked = SecureBytes(got.value.data(), got.value.size());
      std::uint8_t info[52];
      shmem_mask::apply({mask_info(ident, seq, info), sizeof info}, masked.span());
    }
    std::int64_t t = unix_now_us();
    lock();
    Slot& s = slots[idx];
    bool mine = s.used && s.loading && s.loader_pid == MyProcPid && std::memcmp(s.ident, ident, 32) == 0;
    if (mine) {
      s.loading = 0;
      if (share) {
        secure_zero(s.masked, sizeof s.masked);
        s.seq = seq;
        std::memcpy(s.masked, masked.data(), masked.size());
        s.length = static_cast<std::uint32_t>(got.value.size());
        s.refresh_at = got.refresh_at_us;
        s.expires_at = got.expires_at_us;
        s.failed_at = 0;
        s.last_used = t;
      } else if (s.length == 0) {
        clear(s);  // nothing shared under this identity
      }
    }
    unlock();
    ConditionVariableBroadcast(&store_hdr->published);
    if (share) count(store_hdr->fetches);
    if (waited) count(store_hdr->waits);
    return got;
  }
}

bool SharedStore::invalidate(std::string_view identity, ByteView value) {
  std::uint8_t ident[32];
  digest_of(identity, ident);
  bool dropped = false;
  lock();
  int i = find(ident);
  if (i >= 0 && slots[i].length == value.size() && value.size() > 0) {
    Slot& s = slots[i];
    SecureBytes stored;
    try {
      stored = unmask(s.ident, s.seq, s.masked, s.length);
    } catch (...) {
      unlock();
      throw;
    }
    if (constant_time_equal(stored.view(), value)) {
      secure_zero(s.masked, sizeof s.masked);
      s.length = 0;
      s.refresh_at = s.expires_at = 0;
      dropped = true;
    }
  }
  unlock();
  if (dropped) count(store_hdr->invalidations);
  return dropped;
}

}  // namespace

std::size_t shmem_size() { return MAXALIGN(sizeof(Store)) + page_size() + slots_bytes(capacity_guc); }

void request_lwlock() { RequestNamedLWLockTranche("pg_envelope credentials", 1); }

void define_gucs() {
  DefineCustomIntVariable("envelope.credential_cache_entries",
                          "Number of KMS credentials (temporary credentials, login tokens) shared by all backends.",
                          "0: every backend fetches and caches its own.", &capacity_guc, 64, 0, 4096, PGC_POSTMASTER,
                          0, nullptr, nullptr, nullptr);
}

void attach() {
  shmem_mask::init();  // in the postmaster, before any backend forks
  bool exists = false;
  store_hdr = static_cast<Store*>(ShmemInitStruct("pg_envelope credential store", shmem_size(), &exists));
  std::size_t page = page_size();
  auto first = (reinterpret_cast<std::uintptr_t>(store_hdr) + MAXALIGN(sizeof(Store)) + page - 1) &
               ~static_cast<std::uintptr_t>(page - 1);
  slots = reinterpret_cast<Slot*>(first);
  if (!exists) {
    std::memset(store_hdr, 0, shmem_size());
    store_hdr->lock = &(GetNamedLWLockTranche("pg_envelope credentials"))->lock;
    store_hdr->capacity = capacity_guc;
    for (pg_atomic_uint64* c : {&store_hdr->hits, &store_hdr->fetches, &store_hdr->waits, &store_hdr->failures,
                                &store_hdr->invalidations, &store_hdr->not_shared})
      pg_atomic_init_u64(c, 0);
    pg_atomic_init_u32(&store_hdr->oversize_logged, 0);
    pg_atomic_init_u64(&store_hdr->next_seq, 0);
    ConditionVariableInit(&store_hdr->published);
  }
  if (store_hdr->capacity == 0) return;
  int err = shmem_mask::exclude_from_core_dumps(slots, slots_bytes(store_hdr->capacity));
  if (!exists) {
    store_hdr->dump_excluded = err == 0;
    if (err != 0)
      ereport(LOG, (errmsg("pg_envelope: could not exclude the shared credential store from core dumps: %s",
                           std::strerror(err)),
                    errhint("The stored credentials are masked; with huge_pages = on or try, the range may not be "
                            "aligned to a huge page. Set huge_pages = off to exclude it.")));
  }
}

std::shared_ptr<CredentialStore> store() {
  if (store_hdr == nullptr || store_hdr->capacity == 0) return nullptr;
  static std::shared_ptr<CredentialStore> instance = std::make_shared<SharedStore>();
  return instance;
}

Stats stats() {
  Stats s{};
  if (store_hdr == nullptr) return s;
  std::int64_t now = unix_now_us();
  lock();
  for (int i = 0; i < store_hdr->capacity; ++i)
    if (slots[i].used && valid_at(slots[i], now)) ++s.entries;
  unlock();
  auto read = [](pg_atomic_uint64& c) { return static_cast<std::int64_t>(pg_atomic_read_u64(&c)); };
  s.capacity = store_hdr->capacity;
  s.hits = read(store_hdr->hits);
  s.fetches = read(store_hdr->fetches);
  s.waits = read(store_hdr->waits);
  s.failures = read(store_hdr->failures);
  s.invalidations = read(store_hdr->invalidations);
  s.not_shared = read(store_hdr->not_shared);
  s.dump_excluded = store_hdr->dump_excluded;
  return s;
}

}  // namespace pg_envelope::shared_credentials
