// Key changes at commit (see key_change_commit.hpp).
#include "guard.hpp"

extern "C" {
#include "access/xact.h"
#include "catalog/objectaccess.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
}

#include "key_change_commit.hpp"
#include "key_generation.hpp"
#include "shared_dek_cache.hpp"

namespace pg_envelope {

namespace {

bool callback_registered = false;  // this process preloaded the library
bool change_registered = false;    // the current transaction changed a key
bool counted_as_changing = false;  // and is counted in begin_key_change() (key_generation.hpp)

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
    // After the commit's generation move (a prepared transaction: after its slot was
    // taken, which keeps it counted until it is settled).
    if (counted_as_changing) end_key_change();
    counted_as_changing = false;
    n_pending_evictions = 0;
    pending_flush = false;
  }
}

object_access_hook_type prev_object_access_hook = nullptr;

// DROP EXTENSION pg_envelope drops the key tables without firing their row triggers:
// it counts as a change of every key of the database, so nothing read from the old
// rows (a backend's cache, shared_key_info.hpp, the shared cache) outlives them.
void object_access(ObjectAccessType access, Oid class_id, Oid object_id, int sub_id, void* arg) {
  if (prev_object_access_hook) prev_object_access_hook(access, class_id, object_id, sub_id, arg);
  if (access != OAT_DROP || class_id != ExtensionRelationId) return;
  guarded_hook(ERROR, "drop of the extension", [object_id] {
    Oid ours = pg_call([] { return get_extension_oid("pg_envelope", true); });
    if (ours != InvalidOid && object_id == ours) evict_database_at_commit();
  });
}

}  // namespace

void register_commit_callback() {
  pg_call([] { RegisterXactCallback(xact_callback, nullptr); });
  callback_registered = true;
  prev_object_access_hook = object_access_hook;
  object_access_hook = object_access;
}

void invalidate_keys_at_commit() {
  if (callback_registered) {
    // Counted before the generation first moves, uncounted after it last moves.
    if (!counted_as_changing) begin_key_change();
    counted_as_changing = true;
    change_registered = true;
  }
  bump_key_generation();
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
