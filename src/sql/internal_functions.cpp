// Functions the install scripts use, not part of the SQL interface:
//  * envelope.key_tables_changed(): the trigger on the key tables that carries every
//    change of a key (made by the key functions, by hand, by pg_restore, or applied
//    by logical replication) to every backend: it zeroes the key's shared-cache
//    entries and moves the key generation at commit, and sends a relcache
//    invalidation of the table, which the commit record carries to every physical
//    standby, where backends drop their first-level caches on replay.
//  * envelope.check_own_schema(): refuses, at CREATE EXTENSION and ALTER EXTENSION
//    UPDATE, a schema "envelope" that the extension did not create (see
//    PostgreSQL's "Security Considerations for Extensions").
#include "pg/guard.hpp"

extern "C" {
#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/dependency.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/objectaddress.h"
#include "catalog/pg_depend.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_namespace.h"
#include "commands/extension.h"
#include "commands/trigger.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"
}

#include "pg/citus_sync.hpp"
#include "pg/key_change_commit.hpp"

using namespace pg_envelope;

namespace {

// The key_id of a row of envelope.key or envelope.data_key (0 if it has none).
std::uint32_t key_id_of(Relation rel, HeapTuple tuple) {
  if (tuple == nullptr) return 0;
  AttrNumber att = pg_call([rel] { return get_attnum(RelationGetRelid(rel), "key_id"); });
  if (att == InvalidAttrNumber) return 0;
  bool isnull = false;
  Datum d = pg_call([&] { return heap_getattr(tuple, att, RelationGetDescr(rel), &isnull); });
  return isnull ? 0 : static_cast<std::uint32_t>(DatumGetInt32(d));
}

// The state column of a key or DEK row ("" when it has none).
std::string state_of(Relation rel, HeapTuple tuple) {
  AttrNumber att = pg_call([rel] { return get_attnum(RelationGetRelid(rel), "state"); });
  if (att == InvalidAttrNumber) return {};
  bool isnull = false;
  Datum d = pg_call([&] { return heap_getattr(tuple, att, RelationGetDescr(rel), &isnull); });
  if (isnull) return {};
  text* t = pg_call([d] { return DatumGetTextPP(d); });
  return std::string(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
}

// Whether an UPDATE took a key out of use (disabled, destroyed) or destroyed a DEK
// version. (A retired version still decrypts; enabling needs no eviction.)
bool leaves_use(Relation rel, HeapTuple before, HeapTuple after) {
  std::string old_state = state_of(rel, before), new_state = state_of(rel, after);
  return old_state != new_state && (new_state == "disabled" || new_state == "destroyed");
}

}  // namespace

// key_tables_changed() RETURNS trigger: AFTER INSERT OR UPDATE OR DELETE (row) and
// AFTER TRUNCATE (statement) on envelope.key, envelope.data_key and envelope.kms,
// enabled ALWAYS so that it fires in logical replication's apply workers too.
PGENV_FUNCTION(envelope_key_tables_changed) {
  if (!CALLED_AS_TRIGGER(fcinfo))
    throw Error(sqlstate::kObjectNotInPrerequisiteState, "envelope.key_tables_changed() must be called as a trigger");
  auto* td = reinterpret_cast<TriggerData*>(fcinfo->context);
  Relation rel = td->tg_relation;
  // On Citus: applied on every worker in this transaction (coordinator), or refused
  // (a worker, unless the coordinator sent it).
  if (TRIGGER_FIRED_BY_TRUNCATE(td->tg_event))
    citus_sync::truncated();
  else if (TRIGGER_FIRED_FOR_ROW(td->tg_event))
    citus_sync::changed(rel, td);
  // Sent at commit to every backend of this server and logged with the commit record
  // for every standby.
  pg_call([rel] { CacheInvalidateRelcache(rel); });
  if (TRIGGER_FIRED_BY_TRUNCATE(td->tg_event)) {
    evict_database_at_commit();
  } else if (TRIGGER_FIRED_FOR_ROW(td->tg_event)) {
    // Every change moves the key generation at commit: backends drop their own DEKs,
    // and KMS providers are rebuilt from changed envelope.kms rows. A key's entries
    // in the shared cache are zeroed when the key is disabled or destroyed, a DEK
    // version destroyed, or a row deleted. A new wrapped form (rewrap_key), a new or
    // retired version (rotate_key) needs no eviction: a shared entry is identified
    // by the digest of the wrapped DEK, and the key rows are checked on every miss.
    invalidate_keys_at_commit();
    std::uint32_t before = key_id_of(rel, td->tg_trigtuple);
    if (TRIGGER_FIRED_BY_DELETE(td->tg_event)) {
      if (before != 0) evict_key_at_commit(before);
    } else if (TRIGGER_FIRED_BY_UPDATE(td->tg_event)) {
      std::uint32_t after = key_id_of(rel, td->tg_newtuple);
      if (before != after || (before != 0 && leaves_use(rel, td->tg_trigtuple, td->tg_newtuple))) {
        if (before != 0) evict_key_at_commit(before);
        if (after != 0 && after != before) evict_key_at_commit(after);
      }
    }
  }
  return PointerGetDatum(nullptr);
}

// apply_key_changes(changes jsonb) RETURNS void: on a Citus worker, what the
// coordinator's key tables' trigger (or citus_sync_keys()) sent. Superuser only.
PGENV_FUNCTION(envelope_apply_key_changes) {
  if (PG_ARGISNULL(0)) throw Error(sqlstate::kNullValueNotAllowed, "the key changes must not be NULL");
  char* json = pg_call([fcinfo] { return DatumGetCString(DirectFunctionCall1(jsonb_out, PG_GETARG_DATUM(0))); });
  citus_sync::apply(json);
  PG_RETURN_VOID();
}

// citus_sync_keys() RETURNS bigint: on a Citus coordinator, makes every worker's key
// tables equal to this node's; returns the number of workers.
PGENV_FUNCTION(envelope_citus_sync_keys) { PG_RETURN_INT64(citus_sync::sync_all()); }

namespace {

struct SchemaCheck {
  Oid extension_owner;
  Oid schema;
  Oid schema_owner;
  bool created_here;    // by this transaction: CREATE EXTENSION made it
  int foreign_objects;  // objects in the schema that are not members of the extension
  char example[256];    // a description of one of them
};

// Plain C-style: runs inside one pg_call and holds no C++ object.
bool inspect_schema(Oid extension, SchemaCheck* out) {
  memset(out, 0, sizeof *out);
  Relation ext_rel = table_open(ExtensionRelationId, AccessShareLock);
  ScanKeyData key;
  ScanKeyInit(&key, Anum_pg_extension_oid, BTEqualStrategyNumber, F_OIDEQ, ObjectIdGetDatum(extension));
  SysScanDesc scan = systable_beginscan(ext_rel, ExtensionOidIndexId, true, nullptr, 1, &key);
  HeapTuple tup = systable_getnext(scan);
  bool found = HeapTupleIsValid(tup);
  if (found) {
    auto* form = reinterpret_cast<Form_pg_extension>(GETSTRUCT(tup));
    out->extension_owner = form->extowner;
    out->schema = form->extnamespace;
  }
  systable_endscan(scan);
  table_close(ext_rel, AccessShareLock);
  if (!found) return false;

  HeapTuple nsp = SearchSysCache1(NAMESPACEOID, ObjectIdGetDatum(out->schema));
  if (!HeapTupleIsValid(nsp)) return false;
  out->schema_owner = reinterpret_cast<Form_pg_namespace>(GETSTRUCT(nsp))->nspowner;
  out->created_here = TransactionIdIsCurrentTransactionId(HeapTupleHeaderGetXmin(nsp->t_data));
  ReleaseSysCache(nsp);

  // Every object that depends on the schema (its members: functions, types,
  // operators, relations, ...) must also be a member of the extension.
  Relation dep = table_open(DependRelationId, AccessShareLock);
  ScanKeyData keys[2];
  ScanKeyInit(&keys[0], Anum_pg_depend_refclassid, BTEqualStrategyNumber, F_OIDEQ,
              ObjectIdGetDatum(NamespaceRelationId));
  ScanKeyInit(&keys[1], Anum_pg_depend_refobjid, BTEqualStrategyNumber, F_OIDEQ, ObjectIdGetDatum(out->schema));
  scan = systable_beginscan(dep, DependReferenceIndexId, true, nullptr, 2, keys);
  while (HeapTupleIsValid(tup = systable_getnext(scan))) {
    auto* d = reinterpret_cast<Form_pg_depend>(GETSTRUCT(tup));
    ObjectAddress obj;
    obj.classId = d->classid;
    obj.objectId = d->objid;
    obj.objectSubId = 0;
    if (d->classid == ExtensionRelationId && d->objid == extension) continue;  // the extension itself
    if (getExtensionOfObject(d->classid, d->objid) == extension) continue;
    if (out->foreign_objects++ == 0) {
#if PG_VERSION_NUM >= 140000
      char* desc = getObjectDescription(&obj, true);
#else
      char* desc = getObjectDescription(&obj);
#endif
      snprintf(out->example, sizeof out->example, "%s", desc != nullptr ? desc : "an object");
      if (desc != nullptr) pfree(desc);
    }
  }
  systable_endscan(scan);
  table_close(dep, AccessShareLock);
  return true;
}

}  // namespace

// check_own_schema() RETURNS void, run first by every install and update script.
PGENV_FUNCTION(envelope_check_own_schema) {
  Oid extension = pg_call([] { return get_extension_oid("pg_envelope", true); });
  if (!creating_extension || extension == InvalidOid || CurrentExtensionObject != extension)
    throw Error(sqlstate::kObjectNotInPrerequisiteState,
                "envelope.check_own_schema() runs only inside CREATE EXTENSION or ALTER EXTENSION pg_envelope");
  SchemaCheck c;
  if (!pg_call([&c, extension] { return inspect_schema(extension, &c); }))
    throw Error(sqlstate::kInternalError, "could not read the catalog entries of extension \"pg_envelope\"");
  const char* hint =
      "Find out who created schema \"envelope\" and what it holds; drop or rename it, then run CREATE EXTENSION "
      "pg_envelope again (for an update: drop the foreign objects and make the extension's owner own the "
      "schema).";
  // A superuser's schema is no squat (with a trusted install the scripts hand the schema
  // to the bootstrap superuser, so that the extension's owner cannot add to it).
  bool superuser_schema = pg_call([&c] { return superuser_arg(c.schema_owner); });
  if (!c.created_here && c.schema_owner != c.extension_owner && !superuser_schema) {
    char* owner = pg_call([&c] { return GetUserNameFromId(c.schema_owner, true); });
    throw Error(sqlstate::kInvalidSchemaName,
                std::string("schema \"envelope\" is owned by role \"") + (owner ? owner : "?") +
                    "\", not by the owner of extension \"pg_envelope\"",
                "pg_envelope installs into a schema that it creates itself. A schema created beforehand by another "
                "role lets that role add, replace or drop objects next to the extension's own, for example a "
                "function that captures plaintext passed to envelope.encrypt_field().",
                hint);
  }
  if (!c.created_here && c.foreign_objects > 0)
    throw Error(sqlstate::kInvalidSchemaName,
                "schema \"envelope\" holds " + std::to_string(c.foreign_objects) +
                    " object(s) that do not belong to extension \"pg_envelope\"",
                std::string("For example: ") + c.example +
                    ". Objects beside the extension's own in its schema can shadow them for callers.",
                hint);
  PG_RETURN_VOID();
}
