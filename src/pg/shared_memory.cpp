// The shmem hooks (see shared_memory.hpp).
#include "guard.hpp"

extern "C" {
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
}

#include "audit.hpp"
#include "key_generation.hpp"
#include "kms_stats.hpp"
#include "shared_credentials.hpp"
#include "shared_dek_cache.hpp"
#include "shared_key_info.hpp"
#include "shared_memory.hpp"

namespace pg_envelope {

namespace {

bool preloaded = false;
bool attached = false;

shmem_startup_hook_type prev_shmem_startup_hook = nullptr;
#if PG_VERSION_NUM >= 150000
shmem_request_hook_type prev_shmem_request_hook = nullptr;
#endif

void shmem_request() {
#if PG_VERSION_NUM >= 150000
  if (prev_shmem_request_hook) prev_shmem_request_hook();
#endif
  guarded_hook(ERROR, "shared memory request", [] {
    pg_call([] {
      RequestAddinShmemSpace(key_generation_memory::size() + kms_stats::shmem_size() + shared_dek_cache::shmem_size() +
                             shared_key_info::shmem_size() + audit::shmem_size() + shared_credentials::shmem_size());
    });
    shared_dek_cache::request_lwlock();
    shared_credentials::request_lwlock();
    audit::request_lwlock();
  });
}

void shmem_startup() {
  if (prev_shmem_startup_hook) prev_shmem_startup_hook();
  LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
  // The lock is released by the error's clean-up if set-up fails (a FATAL start-up).
  guarded_hook(ERROR, "shared memory set-up", [] {
    key_generation_memory::attach();
    kms_stats::attach();
    shared_dek_cache::attach();
    shared_key_info::attach();
    audit::attach();
    shared_credentials::attach();
    attached = true;
  });
  LWLockRelease(AddinShmemInitLock);
}

}  // namespace

void request_shared_memory() {
  preloaded = true;
#if PG_VERSION_NUM >= 150000
  prev_shmem_request_hook = shmem_request_hook;
  shmem_request_hook = shmem_request;
#else
  shmem_request();
#endif
  prev_shmem_startup_hook = shmem_startup_hook;
  shmem_startup_hook = shmem_startup;
}

void require_preloaded() {
  if (!preloaded || !attached)
    throw Error(sqlstate::kObjectNotInPrerequisiteState,
                "pg_envelope must be loaded via \"shared_preload_libraries\"",
                "Encryption, decryption and key management need the master key and shared memory that "
                "pg_envelope sets up when the server starts.",
                "Add pg_envelope to shared_preload_libraries in postgresql.conf and restart the server.");
}

}  // namespace pg_envelope
