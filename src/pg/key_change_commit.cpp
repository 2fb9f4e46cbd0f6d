// Key changes at commit (see key_change_commit.hpp).
#include "guard.hpp"

extern "C" {
#include "access/xact.h"
}

#include "key_change_commit.hpp"
#include "key_generation.hpp"
#include "shared_dek_cache.hpp"

namespace pg_envelope {

namespace {

bool callback_registered = false;  // this process preloaded the library
bool change_registered = false;    // the current transaction changed a key

// Keys whose shared-cache entries are zeroed again at commit. Plain arrays: the
// transaction callback runs in PostgreSQL's frames and holds no C++ object.
constexpr int kMaxPendingEvictions = 64;
std::uint32_t pending_evictions[kMaxPendingEvictions];
int n_pending_evictions = 0;
bool pending_flush = false;  // more keys than that: zero this database's entries

void xact_callback(XactEvent event, void*) {
  if (!change_registered) return;
  // COMMIT PREPARED runs no callback of ours: what its commit must do is left in
  // shared memory, and every backend applies it at its next statement once the
  // transaction has committed (see key_generation.hpp). The keys are zeroed now too,
  // which costs nothing. (No C++ object lives in this frame; ereport may longjmp.)
  if (event == XACT_EVENT_PRE_PREPARE) {
    // Slots of transactions committed or rolled back since are freed first: a Citus
    // worker that only receives key changes decrypts nothing that would free them.
    settle_prepared_changes([](std::uint32_t key_id) { shared_dek_cache::evict_key_at_commit(key_id); },
                            [] { shared_dek_cache::evict_database_at_commit(); });
    if (!remember_prepared_change(GetTopTransactionIdIfAny(), pending_flush, pending_evictions,
                                  n_pending_evictions))
      ereport(ERROR, (errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
                      errmsg("too many prepared transactions that changed pg_envelope keys are waiting to be committed"),
                      errdetail("At most %d can wait at once.", kMaxPreparedChanges),
                      errhint("Commit or roll back prepared transactions (pg_prepared_xacts), or commit this one directly.")));
    bump_key_generation();
    if (pending_flush)
      shared_dek_cache::evict_database_at_commit();
    else
      for (int i = 0; i < n_pending_evictions; ++i) shared_dek_cache::evict_key_at_commit(pending_evictions[i]);
  }
  if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT) {
    // After commit no error may be raised: anything wrong is a WARNING.
    guarded_hook(WARNING, "commit of key changes", [] {
      bump_key_generation();  // first: a DEK loaded from the old rows is no longer stored after this
      if (pending_flush)
        shared_dek_cache::evict_database_at_commit();
      else
        for (int i = 0; i < n_pending_evictions; ++i) shared_dek_cache::evict_key_at_commit(pending_evictions[i]);
    });
  }
  if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_COMMIT ||
      event == XACT_EVENT_PARALLEL_ABORT || event == XACT_EVENT_PREPARE) {
    change_registered = false;
    n_pending_evictions = 0;
    pending_flush = false;
  }
}

}  // namespace

void register_commit_callback() {
  pg_call([] { RegisterXactCallback(xact_callback, nullptr); });
  callback_registered = true;
}

void invalidate_keys_at_commit() {
  bump_key_generation();
  if (callback_registered) change_registered = true;
}

void evict_key_at_commit(std::uint32_t key_id) {
  if (!callback_registered) return;  // not preloaded: no shared cache, no callback
  invalidate_keys_at_commit();
  for (int i = 0; i < n_pending_evictions; ++i)
    if (pending_evictions[i] == key_id) return;
  if (n_pending_evictions < kMaxPendingEvictions)
    pending_evictions[n_pending_evictions++] = key_id;
  else
    pending_flush = true;
}

void evict_database_at_commit() {
  if (!callback_registered) return;
  invalidate_keys_at_commit();
  pending_flush = true;
}

void settle_prepared_key_changes() {
  pg_call([] {
    settle_prepared_changes([](std::uint32_t key_id) { shared_dek_cache::evict_key_at_commit(key_id); },
                            [] { shared_dek_cache::evict_database_at_commit(); });
  });
}

void evict_key_now_and_at_commit(std::uint32_t key_id) {
  shared_dek_cache::evict_key(key_id);
  evict_key_at_commit(key_id);
  bump_key_generation();
}

}  // namespace pg_envelope
