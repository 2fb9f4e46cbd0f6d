// Key grants name their grantee by OID (a regrole), which PostgreSQL's dependency
// tracking does not know: a role dropped with grants left behind would leave rows
// naming a role that no longer exists, and a role created later with the same OID
// would inherit them. So, in the database where the command runs (the key tables are
// per database, as PostgreSQL's own privileges are):
//   * DROP ROLE of a role that still holds key grants is refused (2BP01), as
//     PostgreSQL refuses to drop a role that still holds privileges;
//   * DROP OWNED BY revokes the roles' key grants too, as it revokes their
//     privileges (through the key tables' trigger: caches, Citus workers and the
//     audit trail see a revoke like any other).
// Grants a role made (granted_by) do not stop its DROP: they stay valid, and name
// the dropped role's OID as their grantor.
#include "pg_includes.hpp"

extern "C" {
#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "nodes/parsenodes.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/lsyscache.h"
}

#include <string>
#include <vector>

#include "audit.hpp"
#include "guard.hpp"
#include "owner_spi.hpp"
#include "pg_envelope/error.hpp"
#include "role_guard.hpp"

namespace pg_envelope::role_guard {

namespace {

ProcessUtility_hook_type prev_hook = nullptr;

// The roles a DROP ROLE / DROP OWNED names that exist (missing ones are PostgreSQL's
// to report), when pg_envelope with envelope.key_grant is installed here.
std::vector<Oid> named_roles(List* roles) {
  std::vector<Oid> out;
  bool has_grants = pg_call([] {
    if (!OidIsValid(get_extension_oid("pg_envelope", true))) return false;
    Oid ns = get_namespace_oid("envelope", true);
    return OidIsValid(ns) && OidIsValid(get_relname_relid("key_grant", ns));
  });
  if (!has_grants) return out;
  ListCell* cell;
  foreach (cell, roles) {
    auto* spec = static_cast<RoleSpec*>(lfirst(cell));
    Oid role = pg_call([spec] { return get_rolespec_oid(spec, true); });
    if (OidIsValid(role)) out.push_back(role);
  }
  return out;
}

std::string role_name(Oid role) {
  const char* n = pg_call([role] { return GetUserNameFromId(role, true); });
  return n != nullptr ? n : std::to_string(role);
}

void refuse_drop_of_grantees(List* roles) {
  std::vector<Oid> oids = named_roles(roles);
  if (oids.empty()) return;
  OwnerSpi spi;
  for (Oid role : oids) {
    spi.exec(
        "SELECT pg_catalog.count(*)::pg_catalog.int4 FROM envelope.key_grant "
        "WHERE grantee::pg_catalog.oid OPERATOR(pg_catalog.=) $1",
        {oid_param(role)}, SPI_OK_SELECT);
    std::int32_t n = spi.int4_at(0, 1);
    if (n > 0)
      throw Error(sqlstate::kDependentObjectsStillExist,
                  "role \"" + role_name(role) + "\" cannot be dropped because it holds pg_envelope key grants",
                  std::to_string(n) + " grant" + (n == 1 ? "" : "s") +
                      " in envelope.key_grant of this database name it as grantee.",
                  "Revoke them with envelope.revoke_key() (envelope.key_grants lists them), or run DROP OWNED BY "
                  "the role in this database, which revokes them too.");
  }
  spi.finish();
}

void revoke_grants_of(List* roles) {
  std::vector<Oid> oids = named_roles(roles);
  if (oids.empty()) return;
  struct Revoked {
    std::string pattern, privilege, role;
  };
  std::vector<Revoked> revoked;
  {
    OwnerSpi spi;
    for (Oid role : oids) {
      std::uint64_t n = spi.exec(
          "DELETE FROM envelope.key_grant WHERE grantee::pg_catalog.oid OPERATOR(pg_catalog.=) $1 "
          "RETURNING pattern, privilege",
          {oid_param(role)}, SPI_OK_DELETE_RETURNING);
      for (std::uint64_t i = 0; i < n; ++i) revoked.push_back({spi.text_at(i, 1), spi.text_at(i, 2), role_name(role)});
    }
    spi.finish();
  }
  for (const Revoked& r : revoked) audit::lifecycle("revoke_key", r.pattern, 0, r.privilege + " from " + r.role + " (DROP OWNED)");
}

void process_utility(PlannedStmt* pstmt, const char* query, bool read_only_tree, ProcessUtilityContext context,
                     ParamListInfo params, QueryEnvironment* env, DestReceiver* dest, QueryCompletion* qc) {
  Node* stmt = pstmt->utilityStmt;
  if (stmt != nullptr && IsA(stmt, DropRoleStmt)) {
    List* roles = castNode(DropRoleStmt, stmt)->roles;
    guarded_hook(ERROR, "DROP ROLE", [roles] { refuse_drop_of_grantees(roles); });
  }
#if PG_VERSION_NUM >= 140000
  if (prev_hook != nullptr)
    prev_hook(pstmt, query, read_only_tree, context, params, env, dest, qc);
  else
    standard_ProcessUtility(pstmt, query, read_only_tree, context, params, env, dest, qc);
#else
  (void)read_only_tree;
  if (prev_hook != nullptr)
    prev_hook(pstmt, query, context, params, env, dest, qc);
  else
    standard_ProcessUtility(pstmt, query, context, params, env, dest, qc);
#endif
  // After PostgreSQL's own DROP OWNED, which checks that the caller may act for the
  // roles (an error there leaves the grants untouched).
  if (stmt != nullptr && IsA(stmt, DropOwnedStmt)) {
    List* roles = castNode(DropOwnedStmt, stmt)->roles;
    guarded_hook(ERROR, "DROP OWNED", [roles] { revoke_grants_of(roles); });
  }
}

#if PG_VERSION_NUM >= 140000
void hook(PlannedStmt* pstmt, const char* query, bool read_only_tree, ProcessUtilityContext context,
          ParamListInfo params, QueryEnvironment* env, DestReceiver* dest, QueryCompletion* qc) {
  process_utility(pstmt, query, read_only_tree, context, params, env, dest, qc);
}
#else
void hook(PlannedStmt* pstmt, const char* query, ProcessUtilityContext context, ParamListInfo params,
          QueryEnvironment* env, DestReceiver* dest, QueryCompletion* qc) {
  process_utility(pstmt, query, false, context, params, env, dest, qc);
}
#endif

}  // namespace

void register_hook() {
  prev_hook = ProcessUtility_hook;
  ProcessUtility_hook = hook;
}

}  // namespace pg_envelope::role_guard
