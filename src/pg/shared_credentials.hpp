// The server-wide credential store (issue 15 goal 5): AWS temporary credentials and
// Vault login tokens fetched once for the whole server, not once per backend. It
// implements the pure C++ interface pg_envelope/credential_store.hpp, which the PG
// layer hands to the KMS providers through KmsContext::credentials (kms_settings.cpp).
//
// A fixed array of slots (envelope.credential_cache_entries, postmaster) in shared
// memory under one LWLock of the tranche "pg_envelope credentials". A slot holds one
// credential: the SHA-256 of its identity (this database + the source's identity
// string), its value (at most kMaxValue bytes, masked like the DEK cache's entries with
// shmem_mask, zeroed when dropped, on pages excluded from core dumps), its refresh and
// expiry times, whether a backend is fetching it (single flight: claimed under the lock,
// fetched without it, published under it; a claimant that died or ran past the KMS
// retry budget is taken over), and the last failure, remembered for two seconds so
// that an outage is not hammered by every backend. A refresh that fails keeps the stored
// value in service until it expires, never past. A larger credential is not shared
// (logged once); without shared_preload_libraries there is no store at all.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "pg_envelope/credential_store.hpp"

namespace pg_envelope::shared_credentials {

constexpr std::size_t kMaxValue = 8192;

std::size_t shmem_size();
void request_lwlock();
void attach();
void define_gucs();  // envelope.credential_cache_entries

// The store, or null when the library was not preloaded.
std::shared_ptr<CredentialStore> store();

struct Stats {
  std::int64_t capacity, entries, hits, fetches, waits, failures, invalidations, not_shared;
  bool dump_excluded;
};
Stats stats();

}  // namespace pg_envelope::shared_credentials
