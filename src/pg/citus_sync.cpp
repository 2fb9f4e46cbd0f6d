// Keys on Citus (see citus_sync.hpp).
#include "guard.hpp"

extern "C" {
#include <dlfcn.h>

#include "access/htup_details.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "utils/fmgrprotos.h"
#include "utils/rel.h"
}

#include <array>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "citus_sync.hpp"
#include "owner_spi.hpp"

namespace pg_envelope::citus_sync {

namespace {

// The Citus functions used, found in the running server (Citus exports them; they
// are the ones Citus itself uses to send metadata changes to the workers inside the
// coordinator's transaction).
struct CitusApi {
  bool (*has_been_loaded)();                        // CitusHasBeenLoaded
  bool (*is_coordinator)();                         // IsCoordinator
  void (*send_to_metadata_workers)(const char*);    // SendCommandToWorkersWithMetadataViaSuperUser
};

const CitusApi* citus_api() {
  static bool looked = false;
  static CitusApi api{};
  static bool found = false;
  if (!looked) {
    looked = true;
    char path[MAXPGPATH];
    std::snprintf(path, sizeof path, "%s/citus%s", pkglib_path, DLSUFFIX);
    // RTLD_NOLOAD: only a Citus that shared_preload_libraries already loaded.
    if (void* h = dlopen(path, RTLD_NOW | RTLD_NOLOAD)) {
      api.has_been_loaded = reinterpret_cast<bool (*)()>(dlsym(h, "CitusHasBeenLoaded"));
      api.is_coordinator = reinterpret_cast<bool (*)()>(dlsym(h, "IsCoordinator"));
      api.send_to_metadata_workers =
          reinterpret_cast<void (*)(const char*)>(dlsym(h, "SendCommandToWorkersWithMetadataViaSuperUser"));
      found = api.has_been_loaded && api.is_coordinator && api.send_to_metadata_workers;
    }
  }
  return found ? &api : nullptr;
}

// Set while envelope.apply_key_changes() applies what the coordinator sent.
bool applying = false;

struct Applying {
  Applying() { applying = true; }
  ~Applying() { applying = false; }
  Applying(const Applying&) = delete;
  Applying& operator=(const Applying&) = delete;
};

// The key tables, in the order their rows are upserted (a row's references first),
// with their primary keys.
struct KeyTable {
  const char* name;
  std::vector<const char*> primary_key;
};

const std::array<KeyTable, 4>& key_tables() {
  static const std::array<KeyTable, 4> tables{{
      {"kms", {"name"}},
      {"key", {"key_id"}},
      {"data_key", {"key_id", "version"}},
      {"key_grant", {"pattern", "grantee", "privilege"}},
  }};
  return tables;
}

const KeyTable* key_table(const char* name) {
  for (const KeyTable& t : key_tables())
    if (std::strcmp(t.name, name) == 0) return &t;
  return nullptr;
}

// Sends `command` to every worker with metadata in the current transaction (plain:
// runs inside pg_call).
void send(const CitusApi* api, const char* command) { api->send_to_metadata_workers(command); }

// "SELECT envelope.apply_key_changes('<json>'::pg_catalog.jsonb)" for one row change
// (plain: runs inside pg_call and holds no C++ object). A row goes as row_to_json()
// makes it: regrole columns by name, bytea in hex.
char* row_change_command(Relation rel, HeapTuple deleted, HeapTuple upserted) {
  TupleDesc desc = RelationGetDescr(rel);
  StringInfoData json;
  initStringInfo(&json);
  appendStringInfo(&json, "{\"%s\": {\"delete\": [", RelationGetRelationName(rel));
  if (deleted != nullptr)
    appendStringInfoString(&json, text_to_cstring(DatumGetTextPP(DirectFunctionCall1(
                                      row_to_json, heap_copy_tuple_as_datum(deleted, desc)))));
  appendStringInfoString(&json, "], \"upsert\": [");
  if (upserted != nullptr)
    appendStringInfoString(&json, text_to_cstring(DatumGetTextPP(DirectFunctionCall1(
                                      row_to_json, heap_copy_tuple_as_datum(upserted, desc)))));
  appendStringInfoString(&json, "]}}");
  return psprintf("SELECT envelope.apply_key_changes(%s::pg_catalog.jsonb)", quote_literal_cstr(json.data));
}

[[noreturn]] void refuse_on_worker() {
  throw Error(sqlstate::kFeatureNotSupported, "pg_envelope keys cannot be changed on a Citus worker",
              "Keys, their data keys, grants and KMS configurations are changed on the coordinator, which applies "
              "every change on every worker in the same transaction.",
              "Run the key function on the coordinator. envelope.citus_sync_keys() there copies every key to every "
              "worker.");
}

std::string pk_match(const KeyTable& t, const char* a, const char* b) {
  std::string s;
  for (const char* c : t.primary_key) {
    if (!s.empty()) s += " AND ";
    s += std::string(a) + "." + c + " OPERATOR(pg_catalog.=) " + b + "." + c;
  }
  return s;
}

// The rows of table `t` in the payload's list `list` ("upsert" or "delete").
std::string rows_of(const KeyTable& t, const char* list) {
  return std::string("pg_catalog.jsonb_populate_recordset(NULL::envelope.") + t.name +
         ", COALESCE($1::pg_catalog.jsonb OPERATOR(pg_catalog.->) '" + t.name + "' OPERATOR(pg_catalog.->) '" + list +
         "', '[]'::pg_catalog.jsonb))";
}

// The worker's own data_key file stands in for the coordinator's (verify_destroyed
// compares it with the file data_key has when it is checked).
constexpr const char* kLocalFilenode = "pg_catalog.pg_relation_filenode('envelope.data_key'::pg_catalog.regclass)";

// Deletes rows of `t`: with `replace`, every row the payload does not list under
// "upsert"; else the rows listed under "delete" that are not upserted again.
void delete_rows(OwnerSpi& spi, const KeyTable& t, bool replace, const char* payload) {
  std::string sql = std::string("DELETE FROM envelope.") + t.name + " t WHERE ";
  if (replace)
    sql += "NOT EXISTS (SELECT 1 FROM " + rows_of(t, "upsert") + " u WHERE " + pk_match(t, "u", "t") + ")";
  else
    sql += "EXISTS (SELECT 1 FROM " + rows_of(t, "delete") + " d WHERE " + pk_match(t, "d", "t") +
           ") AND NOT EXISTS (SELECT 1 FROM " + rows_of(t, "upsert") + " u WHERE " + pk_match(t, "u", "t") + ")";
  spi.exec(sql.c_str(), {text_param(payload)}, SPI_OK_DELETE);
}

void upsert_rows(OwnerSpi& spi, const KeyTable& t, const char* payload) {
  spi.exec(
      "SELECT a.attname::pg_catalog.text FROM pg_catalog.pg_attribute a WHERE a.attrelid OPERATOR(pg_catalog.=) "
      "$1::pg_catalog.regclass AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped ORDER BY a.attnum",
      {text_param(std::string("envelope.") + t.name)}, SPI_OK_SELECT);
  std::vector<std::string> columns;
  for (std::uint64_t i = 0; i < SPI_processed; ++i) columns.push_back(spi.text_at(i, 1));
  std::string select, set, conflict;
  for (const std::string& c : columns) {
    std::string q = pg_call([&c] { return quote_identifier(c.c_str()); });
    if (!select.empty()) {
      select += ", ";
      set += ", ";
    }
    if (std::strcmp(t.name, "key") == 0 && c == "destroyed_filenode") {
      select += "CASE WHEN r." + q + " IS NULL THEN NULL ELSE " + kLocalFilenode + " END";
      // A key destroyed before keeps the file it was destroyed in.
      set += q + " = CASE WHEN EXCLUDED." + q + " IS NULL THEN NULL ELSE COALESCE(t." + q + ", EXCLUDED." + q + ") END";
    } else {
      select += "r." + q;
      set += q + " = EXCLUDED." + q;
    }
  }
  for (const char* c : t.primary_key) conflict += std::string(conflict.empty() ? "" : ", ") + c;
  std::string sql = std::string("INSERT INTO envelope.") + t.name + " AS t SELECT " + select + " FROM " +
                    rows_of(t, "upsert") + " r ON CONFLICT (" + conflict + ") DO UPDATE SET " + set +
                    " WHERE (pg_catalog.to_jsonb(t.*) OPERATOR(pg_catalog.-) 'destroyed_filenode'::pg_catalog.text) "
                    "OPERATOR(pg_catalog.<>) (pg_catalog.to_jsonb(EXCLUDED.*) OPERATOR(pg_catalog.-) "
                    "'destroyed_filenode'::pg_catalog.text)";
  spi.exec(sql.c_str(), {text_param(payload)}, SPI_OK_INSERT);
}

}  // namespace

Role role() {
  const CitusApi* api = citus_api();
  if (api == nullptr) return Role::kNone;
  if (!pg_call([api] { return api->has_been_loaded(); })) return Role::kNone;
  return pg_call([api] { return api->is_coordinator(); }) ? Role::kCoordinator : Role::kWorker;
}

bool is_citus_table(Oid relid) {
  if (role() == Role::kNone) return false;
  OwnerSpi spi;
  spi.exec("SELECT 1 FROM pg_catalog.pg_dist_partition WHERE logicalrelid OPERATOR(pg_catalog.=) $1",
           {oid_param(relid)}, SPI_OK_SELECT);
  bool found = SPI_processed != 0;
  spi.finish();
  return found;
}

void changed(Relation rel, TriggerData* td) {
  // CREATE / ALTER EXTENSION runs the same script on every node; a change the
  // coordinator sent is already where it belongs.
  if (creating_extension || applying) return;
  Role r = role();
  if (r == Role::kNone) return;
  if (r == Role::kWorker) refuse_on_worker();
  const CitusApi* api = citus_api();
  HeapTuple deleted = nullptr, upserted = nullptr;
  if (TRIGGER_FIRED_BY_INSERT(td->tg_event)) {
    upserted = td->tg_trigtuple;
  } else if (TRIGGER_FIRED_BY_UPDATE(td->tg_event)) {
    deleted = td->tg_trigtuple;  // dropped on the worker only if its primary key changed
    upserted = td->tg_newtuple;
  } else {
    deleted = td->tg_trigtuple;
  }
  pg_call([&] { send(api, row_change_command(rel, deleted, upserted)); });
}

void truncated() {
  if (creating_extension || applying) return;
  Role r = role();
  if (r == Role::kWorker) refuse_on_worker();
  if (r == Role::kCoordinator) (void)sync_all();
}

void apply(const char* changes_json) {
  if (!pg_call([] { return superuser(); }))
    throw Error(sqlstate::kInsufficientPrivilege, "permission denied for envelope.apply_key_changes",
                "Only a superuser (the Citus coordinator's connection) applies key changes.");
  if (role() != Role::kWorker)
    throw Error(sqlstate::kFeatureNotSupported, "envelope.apply_key_changes runs on Citus workers only",
                "It applies the key changes a Citus coordinator sends; elsewhere keys are changed with the key "
                "functions.");
  Applying guard;
  OwnerSpi spi;
  spi.exec("SELECT COALESCE(($1::pg_catalog.jsonb OPERATOR(pg_catalog.->>) 'replace')::pg_catalog.bool, false)::pg_catalog.text",
           {text_param(changes_json)}, SPI_OK_SELECT);
  bool replace = spi.text_at(0, 1) == "true";
  spi.exec("SELECT k FROM pg_catalog.jsonb_object_keys($1::pg_catalog.jsonb) k WHERE k OPERATOR(pg_catalog.<>) 'replace'",
           {text_param(changes_json)}, SPI_OK_SELECT);
  for (std::uint64_t i = 0; i < SPI_processed; ++i) {
    std::string name = spi.text_at(i, 1);
    if (key_table(name.c_str()) == nullptr)
      throw Error(sqlstate::kInvalidParameterValue, "\"" + name + "\" is not a pg_envelope key table");
  }
  // References first for upserts, last for deletes: data keys and grants, keys, and
  // KMS configurations last of all (after the keys that used them are gone).
  for (const char* name : {"data_key", "key_grant", "key"}) delete_rows(spi, *key_table(name), replace, changes_json);
  for (const KeyTable& t : key_tables()) upsert_rows(spi, t, changes_json);
  delete_rows(spi, *key_table("kms"), replace, changes_json);
  spi.finish();
}

std::int64_t sync_all() {
  const CitusApi* api = citus_api();
  if (role() != Role::kCoordinator)
    throw Error(sqlstate::kFeatureNotSupported, "envelope.citus_sync_keys() runs on a Citus coordinator",
                "This database is not the coordinator of a Citus cluster (or Citus is not installed in it).");
  OwnerSpi spi;
  spi.exec(
      "SELECT pg_catalog.jsonb_build_object('replace', true, "
      "'kms', pg_catalog.jsonb_build_object('upsert', (SELECT COALESCE(pg_catalog.jsonb_agg(r), '[]'::pg_catalog.jsonb) FROM envelope.kms r)), "
      "'key', pg_catalog.jsonb_build_object('upsert', (SELECT COALESCE(pg_catalog.jsonb_agg(r), '[]'::pg_catalog.jsonb) FROM envelope.key r)), "
      "'data_key', pg_catalog.jsonb_build_object('upsert', (SELECT COALESCE(pg_catalog.jsonb_agg(r), '[]'::pg_catalog.jsonb) FROM envelope.data_key r)), "
      "'key_grant', pg_catalog.jsonb_build_object('upsert', (SELECT COALESCE(pg_catalog.jsonb_agg(r), '[]'::pg_catalog.jsonb) FROM envelope.key_grant r))"
      ")::pg_catalog.text",
      {}, SPI_OK_SELECT);
  std::string payload = spi.text_at(0, 1);
  spi.exec(
      "SELECT pg_catalog.count(*) FROM pg_catalog.pg_dist_node WHERE hasmetadata AND isactive AND groupid "
      "OPERATOR(pg_catalog.<>) 0 AND noderole::pg_catalog.text OPERATOR(pg_catalog.=) 'primary'",
      {}, SPI_OK_SELECT);
  std::int64_t workers = spi.int8_at(0, 1);
  spi.finish();
  pg_call([&] {
    send(api, psprintf("SELECT envelope.apply_key_changes(%s::pg_catalog.jsonb)", quote_literal_cstr(payload.c_str())));
  });
  return workers;
}

}  // namespace pg_envelope::citus_sync
