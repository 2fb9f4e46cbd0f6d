// Data classification: a column's sensitivity label (pii, phi, pci, secret,
// confidential, public) is a PostgreSQL security label of provider "pg_envelope", so
// it follows the column through renames, goes away with it, and pg_dump carries it
// (SECURITY LABEL FOR pg_envelope ON COLUMN ... IS 'pii'). envelope.classify() and
// envelope.unclassify() set and remove it as the caller: PostgreSQL's own rule for
// security labels applies (only the table's owner may label its columns).
#include "pg/guard.hpp"

extern "C" {
#include "catalog/pg_class.h"
#include "commands/seclabel.h"
#include "nodes/makefuncs.h"
#include "nodes/parsenodes.h"
#include "utils/lsyscache.h"
}

#include <array>
#include <cstring>

#include "pg/classification.hpp"
#include "pg/sql_args.hpp"

using namespace pg_envelope;

namespace {

constexpr const char* kProvider = "pg_envelope";
constexpr std::array<const char*, 6> kLabels = {"pii", "phi", "pci", "secret", "confidential", "public"};

bool known_label(const char* label) {
  for (const char* l : kLabels)
    if (std::strcmp(l, label) == 0) return true;
  return false;
}

// The provider's check: a label of ours on a column of a relation, from the list.
// Runs for every SECURITY LABEL FOR pg_envelope (classify(), a restored dump, by hand).
void check_label(const ObjectAddress* object, const char* label) {
  guarded_hook(ERROR, "classification", [&] {
    if (object->classId != RelationRelationId || object->objectSubId <= 0)
      throw Error(sqlstate::kFeatureNotSupported, "pg_envelope labels classify columns only",
                  "Label a column: SECURITY LABEL FOR pg_envelope ON COLUMN tbl.col IS 'pii'.");
    if (label != nullptr && !known_label(label))
      throw Error(sqlstate::kInvalidParameterValue, "unknown classification label",
                  "The labels are pii, phi, pci, secret, confidential and public (reviewed, not sensitive).");
  });
}

void set_label(FunctionCallInfo fcinfo, const char* label) {
  if (PG_ARGISNULL(0) || PG_ARGISNULL(1)) throw Error(sqlstate::kNullValueNotAllowed, "table and column must not be null");
  Oid relid = PG_GETARG_OID(0);
  std::string col = NameStr(*PG_GETARG_NAME(1));
  pg_call([&] {
    char* relname = get_rel_name(relid);
    if (relname == nullptr)
      ereport(ERROR, (errcode(ERRCODE_UNDEFINED_TABLE), errmsg("relation with OID %u does not exist", relid)));
    AttrNumber attnum = get_attnum(relid, col.c_str());
    if (attnum == InvalidAttrNumber)
      ereport(ERROR, (errcode(ERRCODE_UNDEFINED_COLUMN),
                      errmsg("column \"%s\" of relation \"%s\" does not exist", col.c_str(), relname)));
    if (attnum < 0)
      ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED), errmsg("a system column cannot be classified")));
    SecLabelStmt* stmt = makeNode(SecLabelStmt);
    stmt->objtype = OBJECT_COLUMN;
    stmt->object = reinterpret_cast<Node*>(list_make3(makeString(get_namespace_name(get_rel_namespace(relid))),
                                                      makeString(relname), makeString(pstrdup(col.c_str()))));
    stmt->provider = pstrdup(kProvider);
    stmt->label = label != nullptr ? pstrdup(label) : nullptr;
    ExecSecLabelStmt(stmt);
  });
}

}  // namespace

namespace pg_envelope {
void register_label_provider_once() {
  static bool registered = false;
  if (registered) return;
  pg_call([] { register_label_provider(kProvider, check_label); });
  registered = true;
}
}  // namespace pg_envelope

// classify(tbl regclass, col name, label text) RETURNS void.
PGENV_FUNCTION(envelope_classify) {
  if (PG_ARGISNULL(2)) throw Error(sqlstate::kNullValueNotAllowed, "label must not be null",
                                   "", "To remove a label, call envelope.unclassify(tbl, col).");
  std::string label = text_arg(fcinfo, 2, "label");
  if (!known_label(label.c_str()))
    throw Error(sqlstate::kInvalidParameterValue, "unknown classification label",
                "The labels are pii, phi, pci, secret, confidential and public (reviewed, not sensitive).");
  set_label(fcinfo, label.c_str());
  PG_RETURN_VOID();
}

// unclassify(tbl regclass, col name) RETURNS void.
PGENV_FUNCTION(envelope_unclassify) {
  set_label(fcinfo, nullptr);
  PG_RETURN_VOID();
}
