// Per-key privileges (envelope.grant_key / revoke_key): encrypt, decrypt and admin,
// on a key name, a prefix pattern ("tenant_*") or every key ("*"). Checked for the
// current user (GetUserId(): SET ROLE, SET LOCAL ROLE and SECURITY DEFINER count) with
// the privileges of the roles it belongs to, on every call; superusers hold them all.
//
// The grants are read from envelope.key_grant once per key generation (a grant or
// revoke moves it, here and, through the commit record, on standbys); role changes
// (membership, superuser) are noticed through the role catalogs' invalidations. On
// the decrypt path the answer is kept on the cached DEK, for the user and the role
// epoch it was computed for, so a scan pays two comparisons per row.
#pragma once

#include "pg_includes.hpp"

#include <cstdint>
#include <string>
#include <string_view>

#include "pg_envelope/dek_cache.hpp"

namespace pg_envelope::key_access {

// kReadProtected is decrypt as a protected column asks for it: superusers need an
// explicit grant too (so a superuser's pg_dump and COPY TO carry ciphertext).
enum Privilege : std::uint8_t { kEncrypt = 1, kDecrypt = 2, kAdmin = 4, kReadProtected = 8 };

const char* privilege_name(Privilege p) noexcept;
// Error 22023 for anything but "encrypt", "decrypt" or "admin".
Privilege parse_privilege(std::string_view text);

// Moves when a role's memberships or superuser status may have changed, or the
// grants were re-read. (A plain variable: read on every row of a scan.)
extern std::uint64_t role_epoch_counter;
inline std::uint64_t role_epoch() noexcept { return role_epoch_counter; }

// Whether the current user holds `p` on the key named `key_name`.
bool holds(std::string_view key_name, Privilege p);

// The same for a cached DEK's key, remembered on the DEK.
inline bool holds(CachedDek& dek, Privilege p) {
  Oid user = GetUserId();
  std::uint64_t epoch = role_epoch();
  if (dek.access_user != user || dek.access_epoch != epoch) {
    dek.access_user = user;
    dek.access_epoch = epoch;
    dek.access_checked = dek.access_held = 0;
  } else if (dek.access_checked & p) {
    return (dek.access_held & p) != 0;
  }
  bool held = holds(dek.key_name, p);
  dek.access_checked |= p;
  if (held) dek.access_held |= p;
  return held;
}

// Error 42501 naming the key and the current role unless it holds `p`.
void require(std::string_view key_name, Privilege p);
inline void require(CachedDek& dek, Privilege p) {
  if (!holds(dek, p)) require(dek.key_name, p);  // raises the error
}

// Notes on the DEK that the current user was just found to hold `p` on its key.
inline void remember(CachedDek& dek, Privilege p) {
  Oid user = GetUserId();
  std::uint64_t epoch = role_epoch();
  if (dek.access_user != user || dek.access_epoch != epoch) {
    dek.access_user = user;
    dek.access_epoch = epoch;
    dek.access_checked = dek.access_held = 0;
  }
  dek.access_checked |= p;
  dek.access_held |= p;
}

// admin on something that covers `pattern` (a key name or a pattern): for
// create_key of a new name, and for grant_key/revoke_key. Error 42501 otherwise.
void require_admin_over(std::string_view pattern);

// Drops this backend's copy of the grants (a key table changed: on a standby, where
// the key generation does not move, a replayed grant or revoke).
void forget_grants() noexcept;

// Registers the role catalogs' invalidation callbacks (from _PG_init).
void register_callbacks();

}  // namespace pg_envelope::key_access
