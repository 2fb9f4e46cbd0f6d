// Per-key privileges and introspection: envelope.grant_key(), revoke_key(),
// key_of(). Not executable by PUBLIC.
#include "pg/guard.hpp"

extern "C" {
#include "access/htup_details.h"
#include "funcapi.h"
}

#include "pg/audit.hpp"
#include "pg/key_access.hpp"
#include "pg/key_admin_sql.hpp"
#include "pg/key_catalog.hpp"
#include "pg/key_errors.hpp"
#include "pg/shared_memory.hpp"
#include "pg/sql_args.hpp"
#include "pg_envelope/envelope_format.hpp"
#include "pg_envelope/key_patterns.hpp"

using namespace pg_envelope;

namespace {

std::string role_name_of(Oid role) {
  const char* n = pg_call([role] { return GetUserNameFromId(role, true); });
  return n != nullptr ? n : std::to_string(role);
}

struct GrantArgs {
  std::string pattern;
  Oid role;
  key_access::Privilege privilege;
};

// (key text, role regrole, privilege text), checked: a valid name or pattern, a known
// privilege, and the caller administers something that covers the pattern.
GrantArgs grant_args(FunctionCallInfo fcinfo, const char* action) {
  require_preloaded();
  require_writable(action);
  GrantArgs a;
  a.pattern = text_arg(fcinfo, 0, "key name or pattern");
  if (!valid_key_pattern(a.pattern))
    throw Error(sqlstate::kInvalidParameterValue, "invalid key name or pattern",
                "A key privilege is granted on a key name, on a prefix followed by \"*\" (such as \"tenant_*\"), "
                "or on \"*\" for every key.");
  if (PG_ARGISNULL(1)) throw Error(sqlstate::kNullValueNotAllowed, "role must not be null");
  a.role = PG_GETARG_OID(1);
  a.privilege = key_access::parse_privilege(text_arg(fcinfo, 2, "privilege"));
  key_access::require_admin_over(a.pattern);
  return a;
}

}  // namespace

// grant_key(key text, role regrole, privilege text) RETURNS void. Granting what is
// already granted does nothing.
PGENV_FUNCTION(envelope_grant_key) {
  GrantArgs a = grant_args(fcinfo, "grant a key privilege");
  key_admin_sql::insert_grant(a.pattern, a.role, key_access::privilege_name(a.privilege), GetUserId());
  audit::lifecycle("grant_key", a.pattern, 0, std::string(key_access::privilege_name(a.privilege)) + " to " + role_name_of(a.role));
  PG_RETURN_VOID();
}

// revoke_key(key text, role regrole, privilege text) RETURNS void: removes that grant
// (exactly that pattern; a grant on "tenant_*" is not narrowed by revoking "tenant_7").
// Revoking what is not granted does nothing.
PGENV_FUNCTION(envelope_revoke_key) {
  GrantArgs a = grant_args(fcinfo, "revoke a key privilege");
  key_admin_sql::delete_grant(a.pattern, a.role, key_access::privilege_name(a.privilege));
  audit::lifecycle("revoke_key", a.pattern, 0, std::string(key_access::privilege_name(a.privilege)) + " from " + role_name_of(a.role));
  PG_RETURN_VOID();
}

// key_of(value encrypted_*, OUT key_name text, OUT version integer, OUT kms text):
// which key and DEK version a value names in its header, without decrypting it.
PGENV_FUNCTION(envelope_key_of) {
  auto* v = static_cast<struct varlena*>(pg_call([fcinfo] { return PG_DETOAST_DATUM_PACKED(PG_GETARG_DATUM(0)); }));
  EnvelopeView env;
  if (FormatProblem p = parse_envelope({reinterpret_cast<const std::uint8_t*>(VARDATA_ANY(v)), VARSIZE_ANY_EXHDR(v)},
                                       env))
    throw Error(sqlstate::kDataException, "stored value is not a valid pg_envelope ciphertext", p.detail);
  std::optional<DekRecord> rec = key_catalog::dek(env.header.dek);
  if (!rec)
    throw Error(sqlstate::kUndefinedObject,
                "no data key with key id " + std::to_string(env.header.dek.key_id) + " version " +
                    std::to_string(env.header.dek.version) + " exists in this database",
                "The value was encrypted in a database whose key tables were not copied here.");
  TupleDesc desc;
  if (pg_call([&] { return get_call_result_type(fcinfo, nullptr, &desc); }) != TYPEFUNC_COMPOSITE)
    throw Error(sqlstate::kInternalError, "key_of must return a record");
  desc = pg_call([desc] { return BlessTupleDesc(desc); });
  Datum values[3] = {PointerGetDatum(pg_varlena({reinterpret_cast<const std::uint8_t*>(rec->key.name.data()),
                                                 rec->key.name.size()})),
                     Int32GetDatum(static_cast<int32>(rec->version)),
                     PointerGetDatum(pg_varlena({reinterpret_cast<const std::uint8_t*>(rec->key.kms.data()),
                                                 rec->key.kms.size()}))};
  bool nulls[3] = {false, false, false};
  HeapTuple tuple = pg_call([&] { return heap_form_tuple(desc, values, nulls); });
  return HeapTupleGetDatum(tuple);
}
