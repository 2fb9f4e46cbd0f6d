// Shared memory of pg_envelope, in the pattern of contrib/pg_stat_statements:
// a chained shmem_request_hook (PostgreSQL 15+; RequestAddinShmemSpace from _PG_init
// before that) and a chained shmem_startup_hook that creates the struct under
// AddinShmemInitLock.
#include "guard.hpp"

extern "C" {
#include "access/xact.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
}

#include "shared_cache.hpp"
#include "shared_state.hpp"

namespace pg_envelope {

namespace {

struct SharedState {
  pg_atomic_uint64 key_generation;
};

SharedState* shared = nullptr;
bool preloaded = false;
bool bump_registered = false;

// Keys whose shared-cache entries are zeroed again at commit. Plain arrays: the
// transaction callback runs in PostgreSQL's frames and holds no C++ object.
constexpr int kMaxPendingEvictions = 64;
std::uint32_t pending_evictions[kMaxPendingEvictions];
int n_pending_evictions = 0;
bool pending_flush = false;  // more keys than that: flush this database's entries

shmem_startup_hook_type prev_shmem_startup_hook = nullptr;
#if PG_VERSION_NUM >= 150000
shmem_request_hook_type prev_shmem_request_hook = nullptr;
#endif

void shmem_request() {
#if PG_VERSION_NUM >= 150000
  if (prev_shmem_request_hook) prev_shmem_request_hook();
#endif
  guarded_hook(ERROR, "shared memory request", [] {
    RequestAddinShmemSpace(MAXALIGN(sizeof(SharedState)) + shared_cache::shmem_size());
    shared_cache::request_lwlock();
  });
}

void shmem_startup() {
  if (prev_shmem_startup_hook) prev_shmem_startup_hook();
  LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
  // The lock is released by the error's clean-up if set-up fails (a FATAL start-up).
  guarded_hook(ERROR, "shared memory set-up", [] {
    bool found = false;
    shared = static_cast<SharedState*>(
        pg_call([&found] { return ShmemInitStruct("pg_envelope shared state", sizeof(SharedState), &found); }));
    if (!found) pg_atomic_init_u64(&shared->key_generation, 1);
    shared_cache::attach(found);
  });
  LWLockRelease(AddinShmemInitLock);
}

void bump() {
  if (shared != nullptr) pg_atomic_fetch_add_u64(&shared->key_generation, 1);
}

void xact_callback(XactEvent event, void*) {
  if (!bump_registered) return;
  // The commit of a prepared transaction runs no callback here, so it could not make
  // other backends drop DEKs they re-cached from the old rows meanwhile: refuse.
  // (No C++ object lives in this frame; ereport may longjmp out of it.)
  if (event == XACT_EVENT_PRE_PREPARE)
    ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                    errmsg("cannot PREPARE a transaction that rotated, re-wrapped or destroyed pg_envelope keys"),
                    errhint("Commit it directly.")));
  if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT) {
    // After commit no error may be raised: anything wrong is a WARNING.
    guarded_hook(WARNING, "commit of key changes", [] {
      bump();  // first: a DEK loaded from the old rows is no longer stored after this
      if (pending_flush)
        shared_cache::evict_database_at_commit();
      else
        for (int i = 0; i < n_pending_evictions; ++i) shared_cache::evict_key_at_commit(pending_evictions[i]);
    });
  }
  if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_COMMIT ||
      event == XACT_EVENT_PARALLEL_ABORT || event == XACT_EVENT_PREPARE) {
    bump_registered = false;
    n_pending_evictions = 0;
    pending_flush = false;
  }
}

}  // namespace

bool loaded_at_startup() noexcept { return preloaded; }
void set_loaded_at_startup() noexcept { preloaded = true; }

void require_preloaded() {
  if (!preloaded || shared == nullptr)
    throw Error(sqlstate::kObjectNotInPrerequisiteState,
                "pg_envelope must be loaded via \"shared_preload_libraries\"",
                "Encryption, decryption and key management need the master key and shared memory that "
                "pg_envelope sets up when the server starts.",
                "Add pg_envelope to shared_preload_libraries in postgresql.conf and restart the server.");
}

void request_shared_state() {
#if PG_VERSION_NUM >= 150000
  prev_shmem_request_hook = shmem_request_hook;
  shmem_request_hook = shmem_request;
#else
  shmem_request();
#endif
  prev_shmem_startup_hook = shmem_startup_hook;
  shmem_startup_hook = shmem_startup;
  RegisterXactCallback(xact_callback, nullptr);
}

std::uint64_t key_generation() noexcept {
  return shared == nullptr ? 0 : pg_atomic_read_u64(&shared->key_generation);
}

void invalidate_keys_at_commit() {
  bump();
  if (shared != nullptr) bump_registered = true;
}

void evict_key_at_commit(std::uint32_t key_id) {
  if (shared == nullptr) return;  // not preloaded: no shared cache, no callback
  invalidate_keys_at_commit();
  for (int i = 0; i < n_pending_evictions; ++i)
    if (pending_evictions[i] == key_id) return;
  if (n_pending_evictions < kMaxPendingEvictions)
    pending_evictions[n_pending_evictions++] = key_id;
  else
    pending_flush = true;
}

void evict_database_at_commit() {
  if (shared == nullptr) return;
  invalidate_keys_at_commit();
  pending_flush = true;
}

void evict_key_now_and_at_commit(std::uint32_t key_id) {
  shared_cache::evict_key(key_id);
  evict_key_at_commit(key_id);
  bump();
}

}  // namespace pg_envelope
