// The key generation counter in shared memory (see key_generation.hpp).
#include "guard.hpp"

extern "C" {
#include "access/transam.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/procarray.h"
#include "storage/shmem.h"
#include "storage/spin.h"
}

#include "key_generation.hpp"

namespace pg_envelope {

namespace {

// A prepared transaction's key changes, waiting for COMMIT PREPARED (or ROLLBACK
// PREPARED), which runs no callback of ours (see key_generation.hpp).
struct PreparedChange {
  Oid database;             // InvalidOid: a free slot
  TransactionId xid;
  bool settling;            // a backend is applying it
  bool all_keys;            // every key of the database
  int n_keys;
  std::uint32_t keys[kMaxPreparedChangeKeys];
};

struct Counter {
  pg_atomic_uint64 generation;
  pg_atomic_uint32 prepared;  // slots in use (read without the lock on every statement)
  pg_atomic_uint32 changing;  // transactions with key changes not yet committed or aborted
  slock_t mutex;              // guards the slots
  PreparedChange changes[kMaxPreparedChanges];
};

Counter* counter = nullptr;

}  // namespace

std::uint64_t key_generation() noexcept { return counter == nullptr ? 0 : pg_atomic_read_u64(&counter->generation); }

void bump_key_generation() noexcept {
  if (counter != nullptr) pg_atomic_fetch_add_u64(&counter->generation, 1);
}

void begin_key_change() noexcept {
  if (counter != nullptr) pg_atomic_fetch_add_u32(&counter->changing, 1);  // a full barrier
}

void end_key_change() noexcept {
  if (counter != nullptr) pg_atomic_fetch_sub_u32(&counter->changing, 1);  // a full barrier
}

bool key_rows_settled() noexcept {
  if (counter == nullptr) return false;
  pg_memory_barrier();
  return pg_atomic_read_u32(&counter->changing) == 0 && pg_atomic_read_u32(&counter->prepared) == 0;
}

bool remember_prepared_change(TransactionId xid, bool all_keys, const std::uint32_t* keys, int n_keys) noexcept {
  if (counter == nullptr) return true;  // not preloaded: no shared cache to correct
  if (n_keys > kMaxPreparedChangeKeys) {
    all_keys = true;
    n_keys = 0;
  }
  bool stored = false;
  SpinLockAcquire(&counter->mutex);
  for (PreparedChange& c : counter->changes) {
    if (c.database != InvalidOid) continue;
    c.database = MyDatabaseId;
    c.xid = xid;
    c.settling = false;
    c.all_keys = all_keys;
    c.n_keys = n_keys;
    for (int i = 0; i < n_keys; ++i) c.keys[i] = keys[i];
    stored = true;
    break;
  }
  if (stored) pg_atomic_fetch_add_u32(&counter->prepared, 1);
  SpinLockRelease(&counter->mutex);
  return stored;
}

void settle_prepared_changes(void (*evict_key)(std::uint32_t), void (*evict_database)()) {
  if (counter == nullptr || pg_atomic_read_u32(&counter->prepared) == 0) return;
  for (int slot = 0; slot < kMaxPreparedChanges; ++slot) {
    PreparedChange& c = counter->changes[slot];
    SpinLockAcquire(&counter->mutex);
    bool mine = c.database == MyDatabaseId && !c.settling;
    TransactionId xid = c.xid;
    SpinLockRelease(&counter->mutex);
    if (!mine) continue;
    // Still prepared (a prepared transaction counts as in progress): look again at
    // the next statement. (The in-progress test comes first, as PostgreSQL's own
    // visibility code does: the commit log is set before the proc array is cleared.)
    if (TransactionIdIsInProgress(xid)) continue;
    bool committed = TransactionIdDidCommit(xid);
    SpinLockAcquire(&counter->mutex);
    mine = c.database == MyDatabaseId && !c.settling && c.xid == xid;
    if (mine) c.settling = true;
    SpinLockRelease(&counter->mutex);
    if (!mine) continue;
    if (committed) {
      // As at a commit in this server: the generation first (a DEK read from the old
      // rows is no longer stored after this), then the entries.
      bump_key_generation();
      if (c.all_keys)
        evict_database();
      else
        for (int i = 0; i < c.n_keys; ++i) evict_key(c.keys[i]);
    }
    SpinLockAcquire(&counter->mutex);
    c.database = InvalidOid;
    c.settling = false;
    pg_atomic_fetch_sub_u32(&counter->prepared, 1);
    SpinLockRelease(&counter->mutex);
  }
}

namespace key_generation_memory {

std::size_t size() { return MAXALIGN(sizeof(Counter)); }

void attach() {
  bool found = false;
  counter = static_cast<Counter*>(
      pg_call([&found] { return ShmemInitStruct("pg_envelope key generation", sizeof(Counter), &found); }));
  if (!found) {
    pg_atomic_init_u64(&counter->generation, 1);
    pg_atomic_init_u32(&counter->prepared, 0);
    pg_atomic_init_u32(&counter->changing, 0);
    SpinLockInit(&counter->mutex);
    for (PreparedChange& c : counter->changes) c = PreparedChange{};
  }
}

}  // namespace key_generation_memory

}  // namespace pg_envelope
