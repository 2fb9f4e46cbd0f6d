// A server-wide store of KMS credentials (issue 15 goal 5): temporary credentials and
// login tokens fetched once for the whole server instead of once per backend. Pure C++:
// the KMS code sees only this interface; the PostgreSQL layer implements it in shared
// memory (src/pg/shared_credentials.hpp) and hands it to the providers through
// KmsContext::credentials. Without it (unit tests, a library that was not preloaded)
// every provider keeps its credentials per backend, as before.
//
// A credential is identified by a non-secret identity string that says where it comes
// from (provider kind, KMS name, the options that choose the source: role ARN,
// endpoints, file paths, auth method/mount/role); the store adds the database. Its
// value is opaque bytes in the source's own encoding (credential_codec.hpp).
#pragma once

#include <cstdint>
#include <functional>
#include <string_view>

#include "pg_envelope/secure_bytes.hpp"

namespace pg_envelope {

// A credential with its life, in Unix microseconds.
struct StoredCredential {
  SecureBytes value;
  std::int64_t refresh_at_us = 0;  // fetched again from then on (by one backend)
  std::int64_t expires_at_us = 0;  // never served past it; 0: does not expire
  // false: a static credential (environment, file) that is not shared; the fetch's
  // result goes to its caller only.
  bool shareable = true;
};

class CredentialStore {
 public:
  virtual ~CredentialStore() = default;

  // Fetches a credential: gets `previous` (the stored value being refreshed, e.g. a
  // Vault token to renew; nullptr when there is none) and returns the new one.
  // Throws pg_envelope::Error on failure (never with a secret in it).
  using Fetch = std::function<StoredCredential(const SecureBytes* previous)>;

  // A stored value still before its refresh time; else one caller in the whole server
  // runs `fetch` (single flight) while the others use the stored value if it has not
  // expired or wait for the fetch (bounded). A failed fetch keeps the stored value in
  // service until it expires and is remembered briefly (its error is raised again to
  // the callers meanwhile, unless they have a value to use).
  virtual StoredCredential get(std::string_view identity, const Fetch& fetch) = 0;

  // After the service refused `value`: drops the stored credential of `identity` when it
  // is still that value (so a second backend refused the same value drops nothing
  // new). True when it dropped one.
  virtual bool invalidate(std::string_view identity, ByteView value) = 0;
};

}  // namespace pg_envelope
