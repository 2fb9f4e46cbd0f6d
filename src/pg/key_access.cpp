// Per-key privileges (see key_access.hpp).
#include "guard.hpp"

extern "C" {
#include "utils/acl.h"
#include "utils/inval.h"
#include "utils/syscache.h"
}

#include <vector>

#include "audit.hpp"
#include "extension_objects.hpp"
#include "key_access.hpp"
#include "key_catalog.hpp"
#include "key_generation.hpp"
#include "shared_key_info.hpp"
#include "pg_envelope/key_patterns.hpp"

namespace pg_envelope::key_access {

std::uint64_t role_epoch_counter = 1;

namespace {

void roles_changed(Datum, int, uint32) { ++role_epoch_counter; }

struct Grant {
  std::string pattern;
  Oid grantee;
  std::uint8_t privilege;
};

// The grants as of `loaded_at` (a key generation); `legacy` in a schema without
// envelope.key_grant (before 0.2.0), where EXECUTE alone decides.
std::vector<Grant> grants;
std::uint64_t loaded_at = 0;
bool legacy = false;

bool grants_valid = false;

void refresh_grants() {
  std::uint64_t g = key_generation();
  if (grants_valid && loaded_at == g) return;
  std::vector<Grant> fresh;
  // As another backend read them at this generation, with no key change in progress
  // since (shared_key_info.hpp); else from envelope.key_grant, then shared.
  std::vector<shared_key_info::GrantRow> rows;
  bool shared_legacy = false;
  if (shared_key_info::find_grants(g, shared_legacy, rows)) {
    legacy = shared_legacy;
    for (shared_key_info::GrantRow& r : rows) fresh.push_back(Grant{std::move(r.pattern), r.grantee, r.privilege});
  } else {
    legacy = ext::objects().key_grant_table == InvalidOid;
    for (key_catalog::Grant& row : key_catalog::grants()) {
      std::uint8_t bit = row.privilege == "encrypt" ? kEncrypt : row.privilege == "decrypt" ? kDecrypt
                       : row.privilege == "admin"   ? kAdmin
                                                    : 0;
      if (bit != 0) fresh.push_back(Grant{std::move(row.pattern), row.grantee, bit});
    }
    if (ext::resolved_at_library_version()) {
      for (const Grant& gr : fresh) rows.push_back(shared_key_info::GrantRow{gr.pattern, gr.grantee, gr.privilege});
      shared_key_info::publish_grants(g, legacy, rows);
    }
  }
  grants = std::move(fresh);
  loaded_at = g;
  grants_valid = true;
  ++role_epoch_counter;  // answers remembered on cached DEKs were computed from the old grants
}

bool member(Oid user, Oid grantee) {
  if (user == grantee) return true;
  return pg_call([user, grantee] { return has_privs_of_role(user, grantee); });
}

// Membership for an explicit grant: a superuser counts as a member only of the roles
// it really belongs to (has_privs_of_role() makes it a member of every role).
bool member_explicitly(Oid user, Oid grantee) {
  if (user == grantee) return true;
  return pg_call([user, grantee] {
    return superuser_arg(user) ? is_member_of_role_nosuper(user, grantee) : has_privs_of_role(user, grantee);
  });
}

bool is_superuser(Oid user) {
  return pg_call([user] { return superuser_arg(user); });
}

// A superuser, or a member of the extension's owner: administers every key.
bool is_root_admin(Oid user) {
  if (is_superuser(user)) return true;
  Oid owner = ext::objects().extension_owner;
  return owner != InvalidOid && member(user, owner);
}

std::string role_name(Oid role) {
  const char* name = pg_call([role] { return GetUserNameFromId(role, true); });
  return name != nullptr ? name : "?";
}

}  // namespace

const char* privilege_name(Privilege p) noexcept {
  switch (p) {
    case kEncrypt:
      return "encrypt";
    case kDecrypt:
      return "decrypt";
    case kAdmin:
      return "admin";
    case kReadProtected:
      return "decrypt";
  }
  return "?";
}

Privilege parse_privilege(std::string_view text) {
  if (text == "encrypt") return kEncrypt;
  if (text == "decrypt") return kDecrypt;
  if (text == "admin") return kAdmin;
  throw Error(sqlstate::kInvalidParameterValue, "unknown key privilege",
              "A key privilege is \"encrypt\", \"decrypt\" or \"admin\".");
}

void forget_grants() noexcept {
  grants_valid = false;
  ++role_epoch_counter;
}

bool holds(std::string_view key_name, Privilege p) {
  Oid user = GetUserId();
  if (p == kReadProtected) {
    refresh_grants();
    if (legacy) return true;
    for (const Grant& g : grants)
      if (g.privilege == kDecrypt && key_pattern_matches(g.pattern, key_name) && member_explicitly(user, g.grantee))
        return true;
    return false;
  }
  if (is_superuser(user)) return true;
  if (p == kAdmin && is_root_admin(user)) return true;
  refresh_grants();
  if (legacy) return true;
  for (const Grant& g : grants)
    if (g.privilege == p && key_pattern_matches(g.pattern, key_name) && member(user, g.grantee)) return true;
  return false;
}

void require(std::string_view key_name, Privilege p) {
  if (holds(key_name, p)) return;
  if (p == kAdmin) audit::denied("admin_denied", key_name);
  std::string role = role_name(GetUserId());
  std::string key(key_name);
  throw Error(sqlstate::kInsufficientPrivilege, "permission denied for key \"" + key + "\"",
              "Role \"" + role + "\" does not hold the " + privilege_name(p) + " privilege on key \"" + key + "\".",
              std::string("A key administrator can grant it: SELECT envelope.grant_key('") + key + "', '" + role +
                  "', '" + privilege_name(p) + "');");
}

void require_admin_over(std::string_view pattern) {
  Oid user = GetUserId();
  if (is_root_admin(user)) return;
  refresh_grants();
  if (legacy) return;
  for (const Grant& g : grants)
    if (g.privilege == kAdmin && key_pattern_covers(g.pattern, pattern) && member(user, g.grantee)) return;
  audit::denied("admin_denied", "");
  // The pattern or name given names nothing yet: it is not repeated.
  throw Error(sqlstate::kInsufficientPrivilege, "permission denied to administer the keys given",
              "Role \"" + role_name(user) +
                  "\" holds no admin privilege on a key pattern that covers the key name or pattern given.",
              "A superuser, the extension's owner or an administrator of a covering pattern can grant it, e.g. "
              "SELECT envelope.grant_key('tenant_*', 'key_admin', 'admin');");
}

void register_callbacks() {
  pg_call([] {
    CacheRegisterSyscacheCallback(AUTHMEMROLEMEM, roles_changed, 0);
    CacheRegisterSyscacheCallback(AUTHOID, roles_changed, 0);
  });
}

}  // namespace pg_envelope::key_access
