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

void evict_key_now_and_at_commit(std::uint32_t key_id) {
  shared_dek_cache::evict_key(key_id);
  evict_key_at_commit(key_id);
  bump_key_generation();
}

}  // namespace pg_envelope
