// Finding the extension's catalog objects by OID (see extension_objects.hpp).
#include "guard.hpp"

extern "C" {
#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/pg_class.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_index.h"
#include "commands/extension.h"
#include "nodes/pg_list.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/syscache.h"
}

#include <cstring>

#include "extension_objects.hpp"
#include "pg_envelope/version.hpp"

namespace pg_envelope::ext {

namespace {

Objects resolved;
bool valid = false;
bool version_check = true;

// ---- Plain C-style helpers: they run inside one pg_call and hold no C++ object. ----

// The extension's schema, its SQL version into `version` (cap bytes) and its owner.
Oid extension_schema(Oid extension, char* version, int cap, Oid* owner) {
  Relation rel = table_open(ExtensionRelationId, AccessShareLock);
  ScanKeyData key;
  ScanKeyInit(&key, Anum_pg_extension_oid, BTEqualStrategyNumber, F_OIDEQ, ObjectIdGetDatum(extension));
  SysScanDesc scan = systable_beginscan(rel, ExtensionOidIndexId, true, nullptr, 1, &key);
  HeapTuple tup = systable_getnext(scan);
  Oid schema = InvalidOid;
  version[0] = '\0';
  if (HeapTupleIsValid(tup)) {
    schema = reinterpret_cast<Form_pg_extension>(GETSTRUCT(tup))->extnamespace;
    *owner = reinterpret_cast<Form_pg_extension>(GETSTRUCT(tup))->extowner;
    bool isnull = false;
    Datum v = heap_getattr(tup, Anum_pg_extension_extversion, RelationGetDescr(rel), &isnull);
    if (!isnull) {
      text* t = DatumGetTextPP(v);
      int len = static_cast<int>(VARSIZE_ANY_EXHDR(t));
      int n = len < cap - 1 ? len : cap - 1;
      memcpy(version, VARDATA_ANY(t), n);
      version[n] = '\0';
    }
  }
  systable_endscan(scan);
  table_close(rel, AccessShareLock);
  return schema;
}

Oid relation_owner(Oid relid) {
  HeapTuple tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
  if (!HeapTupleIsValid(tup)) return InvalidOid;
  Oid owner = reinterpret_cast<Form_pg_class>(GETSTRUCT(tup))->relowner;
  ReleaseSysCache(tup);
  return owner;
}

// Whether `index` is a valid, immediate, plain index of `table` on exactly `attnums`.
bool index_matches(Oid index, Oid table, const AttrNumber* attnums, int ncolumns) {
  HeapTuple tup = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(index));
  if (!HeapTupleIsValid(tup)) return false;
  auto* form = reinterpret_cast<Form_pg_index>(GETSTRUCT(tup));
  bool match = form->indrelid == table && form->indnkeyatts == ncolumns && form->indisvalid &&
               form->indimmediate && heap_attisnull(tup, Anum_pg_index_indpred, nullptr) &&
               heap_attisnull(tup, Anum_pg_index_indexprs, nullptr);
  for (int i = 0; match && i < ncolumns; ++i) match = form->indkey.values[i] == attnums[i];
  ReleaseSysCache(tup);
  return match;
}

// The index of `table` whose key columns are exactly `columns` (by name), in order.
// First the index the extension's script creates, by its name (two cache lookups: a
// new backend builds no relation cache entry here); else any such index of the table.
Oid index_on(Oid table, const char* expected_name, const char* const* columns, int ncolumns) {
  AttrNumber attnums[4];
  for (int i = 0; i < ncolumns; ++i) {
    attnums[i] = get_attnum(table, columns[i]);
    if (attnums[i] == InvalidAttrNumber) return InvalidOid;
  }
  Oid named = get_relname_relid(expected_name, get_rel_namespace(table));
  if (named != InvalidOid && index_matches(named, table, attnums, ncolumns)) return named;
  Relation rel = table_open(table, AccessShareLock);
  List* indexes = RelationGetIndexList(rel);
  Oid found = InvalidOid;
  ListCell* lc;
  foreach (lc, indexes) {
    Oid index = lfirst_oid(lc);
    if (index_matches(index, table, attnums, ncolumns)) {
      found = index;
      break;
    }
  }
  list_free(indexes);
  table_close(rel, AccessShareLock);
  return found;
}

// Fills `out`; returns false when the extension is not installed (or not completely).
bool resolve(Objects* out) {
  *out = Objects{};
  out->extension = get_extension_oid("pg_envelope", true);
  if (out->extension == InvalidOid) return false;
  out->schema = extension_schema(out->extension, out->sql_version, sizeof out->sql_version, &out->extension_owner);
  if (out->schema == InvalidOid) return false;
  out->key_table = get_relname_relid("key", out->schema);
  out->data_key_table = get_relname_relid("data_key", out->schema);
  out->kms_table = get_relname_relid("kms", out->schema);
  if (out->key_table == InvalidOid || out->data_key_table == InvalidOid || out->kms_table == InvalidOid)
    return false;
  out->owner = relation_owner(out->key_table);
  out->key_grant_table = get_relname_relid("key_grant", out->schema);
  if (out->key_grant_table != InvalidOid) {
    out->key_grant = {get_attnum(out->key_grant_table, "pattern"), get_attnum(out->key_grant_table, "grantee"),
                      get_attnum(out->key_grant_table, "privilege")};
    if (out->key_grant.pattern == InvalidAttrNumber || out->key_grant.grantee == InvalidAttrNumber ||
        out->key_grant.privilege == InvalidAttrNumber)
      return false;
  }
  out->key = {get_attnum(out->key_table, "key_id"), get_attnum(out->key_table, "name"),
              get_attnum(out->key_table, "kms"),    get_attnum(out->key_table, "kek"),
              get_attnum(out->key_table, "state"),  get_attnum(out->key_table, "current_version")};
  out->data_key = {get_attnum(out->data_key_table, "key_id"), get_attnum(out->data_key_table, "version"),
                   get_attnum(out->data_key_table, "wrapped"), get_attnum(out->data_key_table, "state")};
  out->kms = {get_attnum(out->kms_table, "name"), get_attnum(out->kms_table, "provider"),
              get_attnum(out->kms_table, "options")};
  for (AttrNumber a : {out->key.key_id, out->key.name, out->key.kms, out->key.kek, out->key.state,
                       out->key.current_version, out->data_key.key_id, out->data_key.version,
                       out->data_key.wrapped, out->data_key.state, out->kms.name, out->kms.provider,
                       out->kms.options})
    if (a == InvalidAttrNumber) return false;
  {
    Oid type;
    int32 typmod;
    get_atttypetypmodcoll(out->key_table, out->key.name, &type, &typmod, &out->text_collation);
  }
  static const char* const kKeyId[] = {"key_id"};
  static const char* const kName[] = {"name"};
  static const char* const kKeyIdVersion[] = {"key_id", "version"};
  out->key_pkey = index_on(out->key_table, "key_pkey", kKeyId, 1);
  out->key_name_index = index_on(out->key_table, "key_name_key", kName, 1);
  out->data_key_pkey = index_on(out->data_key_table, "data_key_pkey", kKeyIdVersion, 2);
  out->kms_pkey = index_on(out->kms_table, "kms_pkey", kName, 1);
  static const char* const kCreatedAt[] = {"created_at"};
  out->data_key_created_index = index_on(out->data_key_table, "data_key_created_at", kCreatedAt, 1);
  return out->owner != InvalidOid && out->key_pkey != InvalidOid && out->key_name_index != InvalidOid &&
         out->data_key_pkey != InvalidOid && out->kms_pkey != InvalidOid;
}

}  // namespace

const Objects& objects() {
  if (valid) return resolved;
  Objects fresh;
  bool ok = pg_call([&fresh] { return resolve(&fresh); });
  if (!ok)
    throw Error(sqlstate::kObjectNotInPrerequisiteState, "extension \"pg_envelope\" is not installed in this database",
                "", "Run CREATE EXTENSION pg_envelope.");
  bool updating = creating_extension && CurrentExtensionObject == fresh.extension;
  if (version_check && !updating && std::strcmp(fresh.sql_version, kVersion) != 0)
    throw Error(sqlstate::kObjectNotInPrerequisiteState,
                std::string("pg_envelope library version ") + kVersion +
                    " does not match the extension's SQL version " + fresh.sql_version + " in this database",
                "The server loads a pg_envelope library that implements version " + std::string(kVersion) +
                    ", but this database's extension objects are version " + fresh.sql_version +
                    ". Keys are not used until both match.",
                "Run ALTER EXTENSION pg_envelope UPDATE in this database.");
  resolved = fresh;
  valid = true;
  return resolved;
}

void define_version_check_guc() {
  DefineCustomBoolVariable("envelope.version_check",
                           "Refuses to use keys while the extension's SQL version differs from the library's.",
                           "Turn off only to test upgrades: the library may depend on SQL objects an older "
                           "version lacks.",
                           &version_check, true, PGC_SUSET, 0, nullptr, nullptr, nullptr);
}

bool is_key_table(Oid relid) noexcept {
  return relid != InvalidOid && (relid == resolved.key_table || relid == resolved.data_key_table ||
                                 relid == resolved.kms_table || relid == resolved.key_grant_table);
}

bool key_tables_known() noexcept { return resolved.key_table != InvalidOid; }

bool resolved_at_library_version() noexcept { return valid && std::strcmp(resolved.sql_version, kVersion) == 0; }

void forget() noexcept { valid = false; }

}  // namespace pg_envelope::ext
