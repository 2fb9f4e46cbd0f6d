// Protecting and unprotecting columns: envelope.protect_column(), the procedure
// envelope.seal_rows() that encrypts an already populated column in short batches
// (resumable, with progress in envelope.protected_columns), envelope.unprotect_column()
// and envelope.unseal(). docs/protect.md describes the model and the runbook.
//
// DDL runs as the caller (who must own the table, as for ALTER TABLE) with a pinned
// search_path, every name quoted; the registry envelope.protected_column is written as
// the extension's owner.
#include "pg/guard.hpp"

extern "C" {
#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "tcop/tcopprot.h"
#include "utils/backend_status.h"
#include "utils/snapmgr.h"
#include "catalog/pg_type.h"
#include "commands/event_trigger.h"
#include "commands/defrem.h"
#include "executor/spi.h"
#include "nodes/parsenodes.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
}

#include <nlohmann/json.hpp>

#include <chrono>
#include <regex>
#include <thread>

#include "pg/citus_sync.hpp"
#include "pg/dek_resolver.hpp"
#include "pg/key_access.hpp"
#include "pg/key_catalog.hpp"
#include "pg/key_errors.hpp"
#include "pg/key_generation.hpp"
#include "pg/owner_spi.hpp"
#include "pg/protection.hpp"
#include "pg/shared_memory.hpp"
#include "pg/sql_args.hpp"
#include "pg_envelope/crypto.hpp"
#include "pg_envelope/encoding.hpp"
#include "pg_envelope/key_patterns.hpp"
#include "pg_envelope/protected_format.hpp"

extern "C" {
#include "utils/jsonb.h"
}

using namespace pg_envelope;

namespace {

std::string quote_ident_str(const std::string& s) {
  const char* q = pg_call([&s] { return quote_identifier(s.c_str()); });
  return q;
}

std::string quote_literal_str(const std::string& s) {
  text* t = pg_call([&s] { return cstring_to_text_with_len(s.data(), static_cast<int>(s.size())); });
  text* q = reinterpret_cast<text*>(DatumGetPointer(pg_call([t] { return DirectFunctionCall1(quote_literal, PointerGetDatum(t)); })));
  return std::string(VARDATA_ANY(q), VARSIZE_ANY_EXHDR(q));
}

// The table's schema-qualified, quoted name (never resolved through a search_path).
std::string relation_sql(Oid relid) {
  char* nsp = pg_call([relid] { return get_namespace_name(get_rel_namespace(relid)); });
  char* rel = pg_call([relid] { return get_rel_name(relid); });
  if (nsp == nullptr || rel == nullptr) throw Error(sqlstate::kUndefinedObject, "relation does not exist");
  return quote_ident_str(nsp) + "." + quote_ident_str(rel);
}

bool owns(Oid relid) {
#if PG_VERSION_NUM >= 160000
  return pg_call([relid] { return object_ownercheck(RelationRelationId, relid, GetUserId()); });
#else
  return pg_call([relid] { return pg_class_ownercheck(relid, GetUserId()); });
#endif
}

struct Column {
  AttrNumber attnum = InvalidAttrNumber;
  Oid type = InvalidOid;
  std::int32_t typmod = -1;
};

Column column_of(Oid relid, const std::string& name) {
  Column c;
  c.attnum = pg_call([relid, &name] { return get_attnum(relid, name.c_str()); });
  if (c.attnum == InvalidAttrNumber || c.attnum < 0)
    throw Error(sqlstate::kUndefinedObject, "column \"" + name + "\" of relation \"" + relation_sql(relid) +
                                                "\" does not exist");
  pg_call([relid, &c] {
    Oid collation = InvalidOid;
    get_atttypetypmodcoll(relid, c.attnum, &c.type, &c.typmod, &collation);
  });
  return c;
}

std::string type_name(Oid type) {
  char* s = pg_call([type] { return format_type_be(type); });
  return s;
}

// The registry row of a protected column, if any.
struct Registered {
  std::int64_t protection_id = 0;
  std::string plain_type, state, original_type;
  std::int64_t next_block = 0, rows_sealed = 0;
  std::string check_name, trigger_name;
};

std::optional<Registered> registered(Oid relid, const std::string& col) {
  OwnerSpi spi;
  std::optional<Registered> out;
  if (spi.exec("SELECT protection_id, plain_type, state, next_block, rows_sealed, original_type FROM envelope.protected_column "
               "WHERE tbl OPERATOR(pg_catalog.=) $1::pg_catalog.oid::pg_catalog.regclass "
               "AND col OPERATOR(pg_catalog.=) $2::pg_catalog.name",
               {oid_param(relid), text_param(col)}, SPI_OK_SELECT) == 1) {
    Registered r;
    r.protection_id = spi.int8_at(0, 1);
    r.plain_type = spi.text_at(0, 2);
    r.state = spi.text_at(0, 3);
    r.next_block = spi.int8_at(0, 4);
    r.rows_sealed = spi.int8_at(0, 5);
    r.original_type = spi.isnull_at(0, 6) ? r.plain_type : spi.text_at(0, 6);
    out = std::move(r);
  }
  spi.finish();
  if (out) {
    out->check_name = "envelope_protected_" + std::to_string(out->protection_id);
    out->trigger_name = "zz_envelope_protect_" + std::to_string(out->protection_id);
  }
  return out;
}

std::string name_arg(FunctionCallInfo fcinfo, int n, const char* what) {
  if (PG_ARGISNULL(n)) throw Error(sqlstate::kNullValueNotAllowed, std::string(what) + " must not be null");
  return NameStr(*PG_GETARG_NAME(n));
}

std::optional<std::string> optional_name(FunctionCallInfo fcinfo, int n) {
  if (PG_ARGISNULL(n)) return std::nullopt;
  return std::string(NameStr(*PG_GETARG_NAME(n)));
}

// Operator classes of the plain types, which a protected column's index does not
// take (it uses the blind index's default), and the blind ones, which the plain
// column does not.
const std::regex kPlainOpclasses(R"( (text|varchar|bpchar|bytea|jsonb)_(pattern_)?ops\b)");
const std::regex kBlindOpclasses(R"( envelope\.blind_(text|bytea|jsonb)_ops\b)");

std::string without_opclasses(const std::string& def, const std::regex& which) {
  return std::regex_replace(def, which, "");
}

std::uint32_t fresh_protection_id() {
  for (int i = 0; i < 16; ++i) {
    std::uint8_t b[4];
    random_bytes(b);
    std::uint32_t id = load_be32(b);
    if (id == 0) continue;
    OwnerSpi spi;
    std::uint64_t n = spi.exec("SELECT 1 FROM envelope.protected_column WHERE protection_id OPERATOR(pg_catalog.=) $1",
                               {{INT8OID, Int64GetDatum(id)}}, SPI_OK_SELECT);
    spi.finish();
    if (n == 0) return id;
  }
  throw Error(sqlstate::kInternalError, "could not allocate a protection id");
}

}  // namespace

// protect_column(tbl regclass, col name, key text, context_column name DEFAULT NULL,
//                key_column name DEFAULT NULL, blind_index boolean DEFAULT true,
//                blind_bytes integer DEFAULT 16, blind_key text DEFAULT NULL) RETURNS void
PGENV_FUNCTION(envelope_protect_column) {
  require_preloaded();
  require_writable("protect a column");
  if (PG_ARGISNULL(0)) throw Error(sqlstate::kNullValueNotAllowed, "table must not be null");
  Oid relid = PG_GETARG_OID(0);
  std::string col = name_arg(fcinfo, 1, "column");
  std::string key = text_arg(fcinfo, 2, "key");
  std::optional<std::string> context_column = optional_name(fcinfo, 3);
  std::optional<std::string> key_column = optional_name(fcinfo, 4);
  bool blind = PG_ARGISNULL(5) ? true : PG_GETARG_BOOL(5);
  int blind_bytes = PG_ARGISNULL(6) ? 16 : PG_GETARG_INT32(6);
  std::optional<std::string> blind_key;
  if (!PG_ARGISNULL(7)) blind_key = text_arg(fcinfo, 7, "blind key");

  char relkind = pg_call([relid] { return get_rel_relkind(relid); });
  if (relkind != RELKIND_RELATION && relkind != RELKIND_PARTITIONED_TABLE)
    throw Error(sqlstate::kWrongObjectType, "\"" + relation_sql(relid) + "\" is not a table");
  if (!owns(relid))
    throw Error(sqlstate::kInsufficientPrivilege, "must be owner of table \"" + relation_sql(relid) + "\"",
                "Protecting a column alters the table.");
  Column c = column_of(relid, col);
  std::string plain_type;
  if (c.type == TEXTOID || c.type == VARCHAROID) plain_type = "text";
  else if (c.type == BYTEAOID) plain_type = "bytea";
  else if (c.type == JSONBOID) plain_type = "jsonb";
  else if (registered(relid, col))
    throw Error(sqlstate::kDuplicateObject, "column \"" + col + "\" of \"" + relation_sql(relid) + "\" is already protected");
  else
    throw Error(sqlstate::kWrongObjectType, "column \"" + col + "\" has type " + type_name(c.type),
                "Columns of type text, varchar, bytea and jsonb can be protected.");
  if (context_column) column_of(relid, *context_column);
  if (key_column) column_of(relid, *key_column);
  if (context_column == col || key_column == col)
    throw Error(sqlstate::kInvalidParameterValue, "a protected column cannot be its own key or context column");

  // The key: a name, or with key_column a template with one "{}".
  std::size_t brace = key.find("{}");
  if (key_column) {
    if (brace == std::string::npos || key.find("{}", brace + 2) != std::string::npos)
      throw Error(sqlstate::kInvalidParameterValue, "a per-row key needs a key template with one \"{}\"",
                  "With key_column, key is a template such as 'tenant_{}': {} is replaced by the row's value.");
    std::string pattern = key.substr(0, brace) + "*";
    if (!valid_key_pattern(pattern))
      throw Error(sqlstate::kInvalidParameterValue, "invalid key template", "The text before {} is not a valid key name prefix.");
    key_access::require_admin_over(pattern);
  } else {
    if (brace != std::string::npos)
      throw Error(sqlstate::kInvalidParameterValue, "a key template needs key_column",
                  "Name the column whose value replaces {} with key_column.");
    std::optional<KeyRecord> k = key_catalog::key_by_name(key);
    if (!k) throw_no_such_key("envelope.keys lists the keys of this database.");
    key_access::require(k->name, key_access::kEncrypt);
  }
  std::uint32_t blind_key_id = 0;
  if (blind) {
    if (blind_bytes < 8 || blind_bytes > 32)
      throw Error(sqlstate::kInvalidParameterValue, "blind_bytes must be between 8 and 32");
    std::string bk = blind_key.value_or(key_column ? "" : key);
    if (bk.empty())
      throw Error(sqlstate::kInvalidParameterValue, "a column with per-row keys needs a blind_key",
                  "Its blind index is one for the column, so it cannot come from the rows' keys.",
                  "Create a key for the column's blind index and pass it as blind_key.");
    std::optional<KeyRecord> k = key_catalog::key_by_name(bk);
    if (!k) throw_no_such_key("envelope.keys lists the keys of this database.");
    key_access::require(k->name, key_access::kEncrypt);
    dek_resolver::internal(DekId{k->key_id, 1});  // the blind key's first DEK must open
    blind_key_id = k->key_id;
  } else {
    blind_bytes = 0;
  }

  std::string rel = relation_sql(relid);
  std::string qcol = quote_ident_str(col);
  std::uint32_t pid = fresh_protection_id();
  std::string check_name = "envelope_protected_" + std::to_string(pid);
  std::string trigger_name = "zz_envelope_protect_" + std::to_string(pid);

  nlohmann::json cfg = {{"v", 1}, {"pid", pid}, {"column", col}, {"type", plain_type}, {"key", key},
                        {"key_column", key_column.value_or("")}, {"context_column", context_column.value_or("")},
                        {"blind_key_id", blind_key_id}, {"blind_bytes", blind_bytes}};
  // varchar(n) keeps its limit: the trigger checks the plaintext's length.
  std::int32_t max_chars = (c.type == VARCHAROID && c.typmod >= static_cast<std::int32_t>(VARHDRSZ))
                               ? c.typmod - static_cast<std::int32_t>(VARHDRSZ)
                               : 0;
  if (max_chars > 0) cfg["max_chars"] = max_chars;
  std::string original_type = pg_call([&c] {
    char* t = format_type_with_typemod(c.type, c.typmod);
    std::string out = t;
    pfree(t);
    return out;
  });

  OwnerSpi ddl(/*as_owner=*/false);
  // Refuse what protection would break: keys and foreign keys on the column.
  ddl.exec("SELECT 1 FROM pg_catalog.pg_constraint WHERE conrelid OPERATOR(pg_catalog.=) $1 "
           "AND contype OPERATOR(pg_catalog.=) ANY (ARRAY['p','f']::pg_catalog.char[]) "
           "AND $2::pg_catalog.int2 OPERATOR(pg_catalog.=) ANY (conkey)",
           {oid_param(relid), {INT2OID, Int16GetDatum(c.attnum)}}, SPI_OK_SELECT);
  bool keyed = SPI_processed > 0;
  ddl.exec("SELECT 1 FROM pg_catalog.pg_constraint WHERE confrelid OPERATOR(pg_catalog.=) $1 "
           "AND $2::pg_catalog.int2 OPERATOR(pg_catalog.=) ANY (confkey)",
           {oid_param(relid), {INT2OID, Int16GetDatum(c.attnum)}}, SPI_OK_SELECT);
  if (keyed || SPI_processed > 0)
    throw Error(sqlstate::kFeatureNotSupported, "column \"" + col + "\" is part of a primary or foreign key",
                "A protected column cannot be a primary key or take part in a foreign key.");
  bool populated = ddl.exec(("SELECT 1 FROM ONLY " + rel + " LIMIT 1").c_str(), {}, SPI_OK_SELECT) > 0;

  // On a populated table, indexes and unique/exclusion constraints on the column go
  // while its rows are sealed (an index must not mix plaintext and sealed values);
  // their definitions are kept for envelope.seal_rows() to give back.
  // Only plain btree indexes on the column come along (their operator class becomes the
  // blind index's); anything else must be dropped first.
  ddl.exec("SELECT i.indexrelid::pg_catalog.regclass::pg_catalog.text FROM pg_catalog.pg_index i "
           "JOIN pg_catalog.pg_class ic ON ic.oid OPERATOR(pg_catalog.=) i.indexrelid "
           "JOIN pg_catalog.pg_am am ON am.oid OPERATOR(pg_catalog.=) ic.relam "
           "WHERE i.indrelid OPERATOR(pg_catalog.=) $1 AND (am.amname OPERATOR(pg_catalog.<>) 'btree' "
           "OR i.indexprs IS NOT NULL OR i.indpred IS NOT NULL) "
           "AND EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid OPERATOR(pg_catalog.=) "
           "'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid OPERATOR(pg_catalog.=) i.indexrelid "
           "AND d.refobjid OPERATOR(pg_catalog.=) $1 AND d.refobjsubid OPERATOR(pg_catalog.=) $2)",
           {oid_param(relid), {INT2OID, Int16GetDatum(c.attnum)}}, SPI_OK_SELECT);
  if (SPI_processed > 0)
    throw Error(sqlstate::kFeatureNotSupported,
                "index " + ddl.text_at(0, 1) + " on column \"" + col + "\" cannot be kept on a protected column",
                "Only plain btree indexes on a protected column are supported: they use its blind index.",
                "Drop that index first.");
  std::vector<std::string> pending;
  {
    ddl.exec("SELECT co.conname::pg_catalog.text, pg_catalog.pg_get_constraintdef(co.oid) "
             "FROM pg_catalog.pg_constraint co WHERE co.conrelid OPERATOR(pg_catalog.=) $1 "
             "AND co.contype OPERATOR(pg_catalog.=) ANY (ARRAY['u','x']::pg_catalog.char[]) "
             "AND $2::pg_catalog.int2 OPERATOR(pg_catalog.=) ANY (co.conkey)",
             {oid_param(relid), {INT2OID, Int16GetDatum(c.attnum)}}, SPI_OK_SELECT);
    std::vector<std::pair<std::string, std::string>> constraints;
    for (std::uint64_t i = 0; i < SPI_processed; ++i) constraints.emplace_back(ddl.text_at(i, 1), ddl.text_at(i, 2));
    for (auto& [name, def] : constraints) {
      pending.push_back("ALTER TABLE " + rel + " ADD CONSTRAINT " + quote_ident_str(name) + " " +
                        without_opclasses(def, kPlainOpclasses));
      ddl.exec(("ALTER TABLE " + rel + " DROP CONSTRAINT " + quote_ident_str(name)).c_str(), {}, SPI_OK_UTILITY);
    }
    ddl.exec("SELECT i.indexrelid::pg_catalog.regclass::pg_catalog.text, pg_catalog.pg_get_indexdef(i.indexrelid) "
             "FROM pg_catalog.pg_index i WHERE i.indrelid OPERATOR(pg_catalog.=) $1 "
             "AND ($2::pg_catalog.int2 OPERATOR(pg_catalog.=) ANY (i.indkey::pg_catalog.int2[]) "
             "OR EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid OPERATOR(pg_catalog.=) "
             "'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid OPERATOR(pg_catalog.=) i.indexrelid "
             "AND d.refobjid OPERATOR(pg_catalog.=) $1 AND d.refobjsubid OPERATOR(pg_catalog.=) $2))",
             {oid_param(relid), {INT2OID, Int16GetDatum(c.attnum)}}, SPI_OK_SELECT);
    std::vector<std::pair<std::string, std::string>> indexes;
    for (std::uint64_t i = 0; i < SPI_processed; ++i) indexes.emplace_back(ddl.text_at(i, 1), ddl.text_at(i, 2));
    static const std::regex kPatternOps(R"(_pattern_ops\b)");
    for (auto& [name, def] : indexes) {
      ddl.exec(("DROP INDEX " + name).c_str(), {}, SPI_OK_UTILITY);
      // An index for LIKE (Django adds one beside every unique CharField) cannot serve a
      // protected column, and on the blind index it would only duplicate the other one.
      if (std::regex_search(def, kPatternOps) && def.rfind("CREATE UNIQUE", 0) != 0) {
        std::string index = name;
        pg_call([&index] {
          ereport(NOTICE, (errmsg("index %s (for LIKE) is dropped: a protected column is searched by equality only",
                                  index.c_str())));
        });
        continue;
      }
      pending.push_back(without_opclasses(def, kPlainOpclasses));
    }
  }
  // text -> protected_text is binary: no table rewrite, the rows keep their bytes and
  // stay plaintext (unsealed) until sealed. bytea and jsonb are rewritten.
  std::string ptype = "envelope.protected_" + plain_type;
  ddl.exec(("ALTER TABLE " + rel + " ALTER COLUMN " + qcol + " TYPE " + ptype + " USING " + qcol + "::" + ptype).c_str(),
           {}, SPI_OK_UTILITY);
  ddl.exec(("ALTER TABLE " + rel + " ADD CONSTRAINT " + quote_ident_str(check_name) + " CHECK (envelope.protected_ok(" +
            qcol + ", " + std::to_string(pid) + "))" + (populated ? " NOT VALID" : ""))
               .c_str(),
           {}, SPI_OK_UTILITY);
  ddl.exec(("CREATE TRIGGER " + quote_ident_str(trigger_name) + " BEFORE INSERT OR UPDATE ON " + rel +
            " FOR EACH ROW EXECUTE FUNCTION envelope.protect_row(" + quote_literal_str(cfg.dump()) + ")")
               .c_str(),
           {}, SPI_OK_UTILITY);
  ddl.exec(("ALTER TABLE " + rel + " ENABLE ALWAYS TRIGGER " + quote_ident_str(trigger_name)).c_str(), {},
           SPI_OK_UTILITY);
  // An empty table gets its indexes back at once, on the blind index.
  if (!populated) {
    for (const std::string& d : pending) ddl.exec(d.c_str(), {}, SPI_OK_UTILITY);
    pending.clear();
  }
  ddl.finish();

  OwnerSpi reg;
  std::string pending_json = nlohmann::json(pending).dump();
  reg.exec("INSERT INTO envelope.protected_column (protection_id, tbl, col, plain_type, key, key_column, "
           "context_column, blind_key, blind_bytes, state, pending_indexes, original_type) VALUES ($1, "
           "$2::pg_catalog.oid::pg_catalog.regclass, $3::pg_catalog.name, $4, $5, $6::pg_catalog.name, $7::pg_catalog.name, "
           "$8, $9, $10, ARRAY(SELECT pg_catalog.jsonb_array_elements_text($11::pg_catalog.jsonb)), $12)",
           {{INT8OID, Int64GetDatum(pid)}, oid_param(relid), text_param(col), text_param(plain_type), text_param(key),
            key_column ? text_param(*key_column) : SpiParam{TEXTOID, 0, true},
            context_column ? text_param(*context_column) : SpiParam{TEXTOID, 0, true},
            blind ? text_param(blind_key.value_or(key)) : SpiParam{TEXTOID, 0, true},
            {INT4OID, Int32GetDatum(blind_bytes)}, text_param(populated ? "sealing" : "protected"),
            text_param(pending_json), text_param(original_type)},
           SPI_OK_INSERT);
  reg.finish();
  if (populated)
    pg_call([&rel, &col] {
      ereport(NOTICE, (errmsg("column \"%s\" of %s is protected; its existing rows are still plaintext", col.c_str(),
                              rel.c_str()),
                       errhint("Seal them in short transactions: CALL envelope.seal_rows('%s', '%s');", rel.c_str(),
                               col.c_str())));
    });
  PG_RETURN_VOID();
}

namespace {

// The registered column named by (tbl regclass, col name), which the caller owns.
std::pair<Oid, Registered> owned_protected(FunctionCallInfo fcinfo, std::string& col) {
  if (PG_ARGISNULL(0)) throw Error(sqlstate::kNullValueNotAllowed, "table must not be null");
  Oid relid = PG_GETARG_OID(0);
  col = name_arg(fcinfo, 1, "column");
  if (!owns(relid))
    throw Error(sqlstate::kInsufficientPrivilege, "must be owner of table \"" + relation_sql(relid) + "\"");
  std::optional<Registered> r = registered(relid, col);
  if (!r)
    throw Error(sqlstate::kUndefinedObject, "column \"" + col + "\" of \"" + relation_sql(relid) + "\" is not protected",
                "", "envelope.protected_columns lists the protected columns.");
  return {relid, std::move(*r)};
}

void set_progress(std::int64_t pid, const char* sql_set, std::initializer_list<SpiParam> extra) {
  OwnerSpi reg;
  std::string sql = std::string("UPDATE envelope.protected_column SET ") + sql_set +
                    " WHERE protection_id OPERATOR(pg_catalog.=) $1";
  std::vector<SpiParam> params{{INT8OID, Int64GetDatum(pid)}};
  params.insert(params.end(), extra.begin(), extra.end());
  reg.exec(sql.c_str(), std::span<const SpiParam>(params), SPI_OK_UPDATE);
  reg.finish();
}

}  // namespace

// PROCEDURE seal_rows(tbl regclass, col name, batch_blocks integer DEFAULT 8,
//                     pause_ms integer DEFAULT 0, rebuild_indexes boolean DEFAULT false):
// seals the rows a protect_column() left plaintext, a few heap blocks per transaction
// (each committed; no lock beyond the rows of one batch), resumable where it stopped
// after a cancel or a crash; then validates the CHECK and marks the column protected.
// On a Citus table, one distributed UPDATE instead of the batches (see below).
// The indexes dropped by protect_column() are given back only with rebuild_indexes
// (CREATE INDEX blocks writes while it builds); otherwise envelope.protected_columns
// shows their definitions, to be run with CREATE INDEX CONCURRENTLY.
PGENV_FUNCTION(envelope_seal_rows) {
  require_preloaded();
  require_writable("seal rows");
  bool nonatomic = fcinfo->context != nullptr && IsA(fcinfo->context, CallContext) &&
                   !reinterpret_cast<CallContext*>(fcinfo->context)->atomic;
  if (!nonatomic)
    throw Error(sqlstate::kObjectNotInPrerequisiteState, "envelope.seal_rows() must be called with CALL, outside a transaction block",
                "It commits after every batch.", "CALL envelope.seal_rows('tbl', 'col');");
  std::string col;
  auto [relid, reg] = owned_protected(fcinfo, col);
  int batch_blocks = PG_ARGISNULL(2) ? 8 : PG_GETARG_INT32(2);
  int pause_ms = PG_ARGISNULL(3) ? 0 : PG_GETARG_INT32(3);
  bool rebuild = PG_ARGISNULL(4) ? false : PG_GETARG_BOOL(4);
  if (batch_blocks < 1 || pause_ms < 0)
    throw Error(sqlstate::kInvalidParameterValue, "batch_blocks must be positive and pause_ms not negative");
  std::string rel = relation_sql(relid);
  std::string qcol = quote_ident_str(col);
  OwnerSpi spi(/*as_owner=*/false, /*nonatomic=*/true);
  bool sealed_already = reg.state == "protected";
  if (!sealed_already && reg.next_block == 0 && reg.rows_sealed == 0) {
    spi.exec(("SELECT pg_catalog.count(*) FROM ONLY " + rel + " WHERE " + qcol + " IS NOT NULL AND NOT envelope.is_sealed(" +
              qcol + ")").c_str(),
             {}, SPI_OK_SELECT);
    std::int64_t total = spi.int8_at(0, 1);
    set_progress(reg.protection_id, "rows_total = $2, sealing_started_at = pg_catalog.now()", {{INT8OID, Int64GetDatum(total)}});
    spi.commit();
  }
  std::int64_t block = reg.next_block;
  std::int64_t sealed = reg.rows_sealed;
  // A Citus table: its rows are in shards, which the block ranges of the local shell
  // never reach. One distributed UPDATE seals them (each shard's trigger seals its own
  // rows; Citus runs the shards in parallel, each in one transaction).
  bool distributed = !sealed_already && citus_sync::is_citus_table(relid);
  if (distributed) {
    std::uint64_t n = spi.exec(("UPDATE " + rel + " SET " + qcol + " = " + qcol + " WHERE " + qcol +
                                " IS NOT NULL AND NOT envelope.is_sealed(" + qcol + ")").c_str(),
                               {}, SPI_OK_UPDATE);
    sealed += static_cast<std::int64_t>(n);
    set_progress(reg.protection_id, "rows_sealed = $2, last_batch_at = pg_catalog.now()",
                 {{INT8OID, Int64GetDatum(sealed)}});
    spi.commit();
  }
  for (int pass = 0; pass < 3 && !sealed_already && !distributed; ++pass) {
    // The table's end when the pass starts: rows written after it (also the new versions
    // this pass's own UPDATEs append) went through the trigger and are sealed already;
    // the check after the pass finds any that were not.
    spi.exec(("SELECT pg_catalog.pg_relation_size('" + rel + "'::pg_catalog.regclass) OPERATOR(pg_catalog./) "
              "pg_catalog.current_setting('block_size')::pg_catalog.int8").c_str(),
             {}, SPI_OK_SELECT);
    std::int64_t nblocks = spi.int8_at(0, 1);
    for (;;) {
      if (block >= nblocks) break;
      std::int64_t end = block + batch_blocks;
      std::uint64_t n = spi.exec(("UPDATE ONLY " + rel + " SET " + qcol + " = " + qcol +
                                  " WHERE ctid OPERATOR(pg_catalog.>=) $1::pg_catalog.text::pg_catalog.tid "
                                  "AND ctid OPERATOR(pg_catalog.<) $2::pg_catalog.text::pg_catalog.tid AND " + qcol +
                                  " IS NOT NULL AND NOT envelope.is_sealed(" + qcol + ")").c_str(),
                                 {text_param("(" + std::to_string(block) + ",0)"),
                                  text_param("(" + std::to_string(end) + ",0)")},
                                 SPI_OK_UPDATE);
      sealed += static_cast<std::int64_t>(n);
      block = end;
      set_progress(reg.protection_id, "next_block = $2, rows_sealed = $3, last_batch_at = pg_catalog.now()",
                   {{INT8OID, Int64GetDatum(block)}, {INT8OID, Int64GetDatum(sealed)}});
      spi.commit();
      pg_call([] { CHECK_FOR_INTERRUPTS(); });
      if (pause_ms > 0) {
        int ms = pause_ms;
        pg_call([ms] { pg_usleep(static_cast<long>(ms) * 1000L); });
      }
    }
    // Rows written meanwhile were sealed by the trigger; rows moved behind the scan
    // (an application's UPDATE) were too. Anything left is looked for once more.
    spi.exec(("SELECT 1 FROM ONLY " + rel + " WHERE " + qcol + " IS NOT NULL AND NOT envelope.is_sealed(" + qcol +
              ") LIMIT 1").c_str(),
             {}, SPI_OK_SELECT);
    if (SPI_processed == 0) break;
    block = 0;
  }
  if (!sealed_already)
    spi.exec(("ALTER TABLE " + rel + " VALIDATE CONSTRAINT " + quote_ident_str(reg.check_name)).c_str(), {},
             SPI_OK_UTILITY);
  if (rebuild) {
    std::vector<std::string> defs;
    {
      OwnerSpi registry;  // the registry is the extension owner's
      registry.exec("SELECT pg_catalog.unnest(pending_indexes) FROM envelope.protected_column "
                    "WHERE protection_id OPERATOR(pg_catalog.=) $1",
                    {{INT8OID, Int64GetDatum(reg.protection_id)}}, SPI_OK_SELECT);
      for (std::uint64_t i = 0; i < SPI_processed; ++i) defs.push_back(registry.text_at(i, 1));
      registry.finish();
    }
    // An index or constraint built by hand meanwhile (CREATE INDEX CONCURRENTLY) is kept.
    static const std::regex kObjectName(R"(^(?:ALTER TABLE \S+ ADD CONSTRAINT|CREATE (?:UNIQUE )?INDEX) (\S+) )");
    for (const std::string& d : defs) {
      std::smatch m;
      if (std::regex_search(d, m, kObjectName)) {
        spi.exec("SELECT 1 FROM pg_catalog.pg_class WHERE relnamespace OPERATOR(pg_catalog.=) $1 "
                 "AND relname OPERATOR(pg_catalog.=) pg_catalog.btrim($2, '\"')::pg_catalog.name",
                 {oid_param(pg_call([relid] { return get_rel_namespace(relid); })), text_param(m[1].str())},
                 SPI_OK_SELECT);
        if (SPI_processed > 0) continue;
      }
      spi.exec(d.c_str(), {}, SPI_OK_UTILITY);
    }
    set_progress(reg.protection_id, "pending_indexes = '{}'", {});
  }
  if (sealed_already) {
    spi.commit();
    spi.finish();
    PG_RETURN_VOID();
  }
  set_progress(reg.protection_id, "state = 'protected', sealed_at = pg_catalog.now()", {});
  spi.commit();
  spi.finish();
  PG_RETURN_VOID();
}

// unseal(value protected_*) RETURNS the plain type: decrypts (the current user needs
// decrypt on the value's key; superusers hold it) whatever the column's output
// function would show; for unprotect_column() and for explicit use.
namespace {

Datum unseal(FunctionCallInfo fcinfo, PlainType type) {
  auto* v = static_cast<struct varlena*>(pg_call([fcinfo] { return PG_DETOAST_DATUM_PACKED(PG_GETARG_DATUM(0)); }));
  ByteView bytes{reinterpret_cast<const std::uint8_t*>(VARDATA_ANY(v)), VARSIZE_ANY_EXHDR(v)};
  auto result = [type](ByteView plain) -> Datum {
    if (type != PlainType::kJsonb) return PointerGetDatum(pg_varlena(plain));
    std::string text(reinterpret_cast<const char*>(plain.data()), plain.size());
    Datum d = pg_call([&text] { return DirectFunctionCall1(jsonb_in, CStringGetDatum(text.c_str())); });
    secure_zero(text.data(), text.size());
    return d;
  };
  if (!is_sealed(bytes)) {
    ByteView plain;
    if (!unsealed_plaintext(bytes, type, plain)) throw Error(sqlstate::kDataCorrupted, "malformed protected value");
    return result(plain);
  }
  SealedView view;
  if (FormatProblem p = parse_sealed(bytes, type, view)) throw Error(sqlstate::kDataCorrupted, "malformed protected value", p.detail);
  protection::Opened o = protection::open(view, true, key_access::kDecrypt);
  Datum d;
  try {
    d = result({o.data, o.size});
  } catch (...) {
    protection::release(o);
    throw;
  }
  protection::release(o);
  return d;
}

}  // namespace

namespace {

// The sealed view of argument 0, or false for an unsealed (plaintext) value.
bool sealed_arg(FunctionCallInfo fcinfo, PlainType type, SealedView& view) {
  auto* v = static_cast<struct varlena*>(pg_call([fcinfo] { return PG_DETOAST_DATUM_PACKED(PG_GETARG_DATUM(0)); }));
  ByteView bytes{reinterpret_cast<const std::uint8_t*>(VARDATA_ANY(v)), VARSIZE_ANY_EXHDR(v)};
  if (!is_sealed(bytes)) {
    ByteView plain;
    if (!unsealed_plaintext(bytes, type, plain)) throw Error(sqlstate::kDataCorrupted, "malformed protected value");
    return false;
  }
  if (FormatProblem p = parse_sealed(bytes, type, view)) throw Error(sqlstate::kDataCorrupted, "malformed protected value", p.detail);
  return true;
}

// on_current_key(value protected_*) RETURNS boolean: whether a sealed value is under its
// key's current DEK version (NULL for a value not sealed yet).
Datum protected_on_current_key(FunctionCallInfo fcinfo, PlainType type) {
  require_preloaded();
  SealedView view;
  if (!sealed_arg(fcinfo, type, view)) PG_RETURN_NULL();
  DekId id = protection::dek_id_of(view);
  PG_RETURN_BOOL(id.version == key_catalog::current_version(id.key_id));
}

// reseal(value protected_*) RETURNS protected_*: sealed again for the same row, column
// and key under the key's current DEK version (returned as it is when it is there, or
// not sealed yet). The current user needs encrypt on the key.
Datum reseal(FunctionCallInfo fcinfo, PlainType type) {
  require_preloaded();
  SealedView view;
  if (!sealed_arg(fcinfo, type, view)) PG_RETURN_DATUM(PG_GETARG_DATUM(0));
  DekId id = protection::dek_id_of(view);
  if (id.version == key_catalog::current_version(id.key_id)) PG_RETURN_DATUM(PG_GETARG_DATUM(0));
  return PointerGetDatum(protection::reseal(type, view));
}

// key_version_of(value protected_*, key text) RETURNS integer: the DEK version when the
// sealed value is under `key`, else NULL (also for a value not sealed yet).
Datum protected_key_version_of(FunctionCallInfo fcinfo, PlainType type) {
  require_preloaded();
  SealedView view;
  if (!sealed_arg(fcinfo, type, view)) PG_RETURN_NULL();
  std::string key = text_arg(fcinfo, 1, "key");
  std::uint32_t key_id = key_catalog::key_id(key);
  if (key_id == 0) throw_no_such_key();
  DekId id = protection::dek_id_of(view);
  if (id.key_id != key_id) PG_RETURN_NULL();
  PG_RETURN_INT32(static_cast<std::int32_t>(id.version));
}

}  // namespace

PGENV_FUNCTION(envelope_protected_text_key_version_of) { return protected_key_version_of(fcinfo, PlainType::kText); }
PGENV_FUNCTION(envelope_protected_bytea_key_version_of) { return protected_key_version_of(fcinfo, PlainType::kBytea); }
PGENV_FUNCTION(envelope_protected_jsonb_key_version_of) { return protected_key_version_of(fcinfo, PlainType::kJsonb); }
PGENV_FUNCTION(envelope_protected_text_on_current_key) { return protected_on_current_key(fcinfo, PlainType::kText); }
PGENV_FUNCTION(envelope_protected_bytea_on_current_key) { return protected_on_current_key(fcinfo, PlainType::kBytea); }
PGENV_FUNCTION(envelope_protected_jsonb_on_current_key) { return protected_on_current_key(fcinfo, PlainType::kJsonb); }
PGENV_FUNCTION(envelope_reseal_text) { return reseal(fcinfo, PlainType::kText); }
PGENV_FUNCTION(envelope_reseal_bytea) { return reseal(fcinfo, PlainType::kBytea); }
PGENV_FUNCTION(envelope_reseal_jsonb) { return reseal(fcinfo, PlainType::kJsonb); }

PGENV_FUNCTION(envelope_unseal_text) { return unseal(fcinfo, PlainType::kText); }
PGENV_FUNCTION(envelope_unseal_bytea) { return unseal(fcinfo, PlainType::kBytea); }
PGENV_FUNCTION(envelope_unseal_jsonb) { return unseal(fcinfo, PlainType::kJsonb); }

namespace {
// Set while unprotect_column() itself changes a protected column's type.
bool g_own_ddl = false;
struct OwnDdl {
  OwnDdl() { g_own_ddl = true; }
  ~OwnDdl() { g_own_ddl = false; }
  OwnDdl(const OwnDdl&) = delete;
  OwnDdl& operator=(const OwnDdl&) = delete;
};

void refuse_if_protected(RangeVar* rv, const char* column, const char* what) {
  if (rv == nullptr || column == nullptr) return;
  Oid relid = pg_call([rv] { return RangeVarGetRelid(rv, NoLock, true); });
  if (!OidIsValid(relid) || !registered(relid, column)) return;
  throw Error(sqlstate::kFeatureNotSupported,
              std::string("column \"") + column + "\" of \"" + relation_sql(relid) + "\" is protected: cannot " + what + " it",
              "Its type, name and trigger belong to envelope.protect_column(); changing them would leave values "
              "nobody can read.",
              "Run envelope.unprotect_column() first, change the column, then envelope.protect_column() again.");
}
}  // namespace

// protected_ddl_guard() RETURNS event_trigger, ON ddl_command_start for ALTER TABLE:
// refuses to change the type of a protected column (an ORM's "sync"/"AlterField"
// would otherwise turn it back into varchar under its trigger) or to rename it.
PGENV_FUNCTION(envelope_protected_ddl_guard) {
  if (!CALLED_AS_EVENT_TRIGGER(fcinfo))
    throw Error(sqlstate::kObjectNotInPrerequisiteState, "envelope.protected_ddl_guard() must be called as an event trigger");
  if (g_own_ddl) PG_RETURN_VOID();
  Node* tree = reinterpret_cast<EventTriggerData*>(fcinfo->context)->parsetree;
  if (tree != nullptr && IsA(tree, AlterTableStmt)) {
    auto* stmt = reinterpret_cast<AlterTableStmt*>(tree);
    ListCell* lc;
    foreach (lc, stmt->cmds) {
      auto* cmd = static_cast<AlterTableCmd*>(lfirst(lc));
      if (cmd->subtype == AT_AlterColumnType) refuse_if_protected(stmt->relation, cmd->name, "change the type of");
    }
  } else if (tree != nullptr && IsA(tree, RenameStmt)) {
    auto* stmt = reinterpret_cast<RenameStmt*>(tree);
    if (stmt->renameType == OBJECT_COLUMN) refuse_if_protected(stmt->relation, stmt->subname, "rename");
  }
  PG_RETURN_VOID();
}

// unprotect_column(tbl regclass, col name) RETURNS void: the column becomes its plain
// type again, every value decrypted (the table is rewritten under an exclusive lock;
// the caller must own the table and hold decrypt on the column's keys).
PGENV_FUNCTION(envelope_unprotect_column) {
  require_preloaded();
  require_writable("unprotect a column");
  std::string col;
  auto [relid, reg] = owned_protected(fcinfo, col);
  std::string rel = relation_sql(relid);
  std::string qcol = quote_ident_str(col);
  OwnerSpi ddl(/*as_owner=*/false);
  // The column's values are decrypted by envelope.unseal() in the caller's ALTER TABLE:
  // say so up front rather than fail half-way with "permission denied for function".
  std::string unseal_sig = "envelope.unseal(envelope.protected_" + reg.plain_type + ")";
  ddl.exec("SELECT pg_catalog.has_function_privilege($1, 'EXECUTE')::pg_catalog.text", {text_param(unseal_sig)}, SPI_OK_SELECT);
  if (ddl.text_at(0, 1) != "true")
    throw Error(sqlstate::kInsufficientPrivilege, "permission denied to unprotect column \"" + col + "\"",
                "unprotect_column decrypts the column's values with " + unseal_sig + " as the current role.",
                "GRANT EXECUTE ON FUNCTION " + unseal_sig + " to the role, with decrypt on the column's key.");
  ddl.exec(("DROP TRIGGER IF EXISTS " + quote_ident_str(reg.trigger_name) + " ON " + rel).c_str(), {}, SPI_OK_UTILITY);
  ddl.exec(("ALTER TABLE " + rel + " DROP CONSTRAINT IF EXISTS " + quote_ident_str(reg.check_name)).c_str(), {},
           SPI_OK_UTILITY);
  // Indexes on the column use the blind-index operator class: they go, and come back
  // on the plain column with its default operator class.
  ddl.exec("SELECT i.indexrelid::pg_catalog.regclass::pg_catalog.text, pg_catalog.pg_get_indexdef(i.indexrelid), "
           "co.conname::pg_catalog.text, pg_catalog.pg_get_constraintdef(co.oid) "
           "FROM pg_catalog.pg_index i LEFT JOIN pg_catalog.pg_constraint co ON co.conindid OPERATOR(pg_catalog.=) i.indexrelid "
           "AND co.conrelid OPERATOR(pg_catalog.=) i.indrelid WHERE i.indrelid OPERATOR(pg_catalog.=) $1 "
           "AND $2::pg_catalog.int2 OPERATOR(pg_catalog.=) ANY (i.indkey::pg_catalog.int2[])",
           {oid_param(relid), {INT2OID, Int16GetDatum(column_of(relid, col).attnum)}}, SPI_OK_SELECT);
  std::vector<std::string> drops, creates;
  for (std::uint64_t i = 0; i < SPI_processed; ++i) {
    if (!ddl.isnull_at(i, 3)) {
      drops.push_back("ALTER TABLE " + rel + " DROP CONSTRAINT " + quote_ident_str(ddl.text_at(i, 3)));
      creates.push_back("ALTER TABLE " + rel + " ADD CONSTRAINT " + quote_ident_str(ddl.text_at(i, 3)) + " " +
                        without_opclasses(ddl.text_at(i, 4), kBlindOpclasses));
    } else {
      drops.push_back("DROP INDEX " + ddl.text_at(i, 1));
      creates.push_back(without_opclasses(ddl.text_at(i, 2), kBlindOpclasses));
    }
  }
  for (const std::string& d : drops) ddl.exec(d.c_str(), {}, SPI_OK_UTILITY);
  OwnDdl own;
  // Back to the type it had (varchar(n) included; format_type() qualifies what needs it).
  ddl.exec(("ALTER TABLE " + rel + " ALTER COLUMN " + qcol + " TYPE " + reg.original_type + " USING envelope.unseal(" +
            qcol + ")::" + reg.original_type).c_str(),
           {}, SPI_OK_UTILITY);
  for (const std::string& cdef : creates) ddl.exec(cdef.c_str(), {}, SPI_OK_UTILITY);
  ddl.finish();
  OwnerSpi r;
  r.exec("DELETE FROM envelope.protected_column WHERE protection_id OPERATOR(pg_catalog.=) $1",
         {{INT8OID, Int64GetDatum(reg.protection_id)}}, SPI_OK_DELETE);
  r.finish();
  PG_RETURN_VOID();
}

// Online re-encryption: CALL envelope.reencrypt() in the calling session, or
// envelope.start_reencryption() in a background worker that outlives it
// (docs/lifecycle.md). Both run run_reencryption(): every value of an encrypted_* or
// protected column onto the current DEK version of its key (or, for encrypted_*, of
// `key`: a move to another key), a few heap blocks per committed transaction. Each batch
// is one UPDATE whose new value is computed from the row as that UPDATE sees it, so an
// application's concurrent UPDATE is never lost: the row is re-read (READ COMMITTED) and
// the newer value re-encrypted. Values already there are not touched, so a re-run, after
// a cancel or a crash, carries on; progress is in envelope.reencryption_progress. Runs
// as the caller: PostgreSQL checks its UPDATE on the table, pg_envelope its key
// privileges per value.
namespace {

struct ReencryptJob {
  Oid relid = InvalidOid;
  std::string col;
  std::optional<std::string> context_col;
  std::optional<std::string> key;
  int batch_blocks = 8;
  int pause_ms = 0;
};

ReencryptJob reencrypt_job(FunctionCallInfo fcinfo) {
  if (PG_ARGISNULL(0) || PG_ARGISNULL(1)) throw Error(sqlstate::kNullValueNotAllowed, "table and column must not be null");
  ReencryptJob job;
  job.relid = PG_GETARG_OID(0);
  job.col = NameStr(*PG_GETARG_NAME(1));
  if (!PG_ARGISNULL(2)) job.context_col = std::string(NameStr(*PG_GETARG_NAME(2)));
  if (!PG_ARGISNULL(3)) job.key = text_arg(fcinfo, 3, "key");
  job.batch_blocks = PG_ARGISNULL(4) ? 8 : PG_GETARG_INT32(4);
  job.pause_ms = PG_ARGISNULL(5) ? 0 : PG_GETARG_INT32(5);
  if (job.batch_blocks < 1 || job.pause_ms < 0)
    throw Error(sqlstate::kInvalidParameterValue, "batch_blocks must be positive and pause_ms not negative");
  return job;
}

// What a job's UPDATEs look like, after every check that can refuse it up front.
struct ReencryptPlan {
  std::string rel, qcol, needs, value, key_label;
};

ReencryptPlan plan_reencryption(OwnerSpi& spi, const ReencryptJob& job) {
  const Oid relid = job.relid;
  const std::string& col = job.col;
  ReencryptPlan p;
  p.rel = relation_sql(relid);
  p.qcol = quote_ident_str(col);
  const std::string& rel = p.rel;
  char relkind = pg_call([relid] { return get_rel_relkind(relid); });
  if (relkind == RELKIND_PARTITIONED_TABLE)
    throw Error(sqlstate::kFeatureNotSupported, rel + " is partitioned: re-encrypt its partitions",
                "envelope.reencrypt() works on the rows of one table; a partitioned table holds none itself.",
                "CALL envelope.reencrypt() for each partition, e.g. those of SELECT relid FROM "
                "pg_partition_tree('" + rel + "') WHERE isleaf.");
  // A Citus distributed or reference table: its rows are in shards on other nodes,
  // which this run's block ranges of the local shell would never reach.
  if (citus_sync::is_citus_table(relid))
    throw Error(sqlstate::kFeatureNotSupported, "envelope.reencrypt() does not run on the Citus table " + rel + " yet",
                "Its rows are in shards on the workers; a run on the coordinator would re-encrypt none of them.",
                "Re-encrypt it with a distributed UPDATE through a MATERIALIZED CTE (docs/citus.md), then check "
                "with envelope.key_columns().");
  // The column's type decides the expression.
  spi.exec("SELECT t.typname::pg_catalog.text FROM pg_catalog.pg_attribute a "
           "JOIN pg_catalog.pg_type t ON t.oid OPERATOR(pg_catalog.=) a.atttypid "
           "WHERE a.attrelid OPERATOR(pg_catalog.=) $1 AND a.attname OPERATOR(pg_catalog.=) $2::pg_catalog.name "
           "AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped "
           "AND t.typnamespace OPERATOR(pg_catalog.=) 'envelope'::pg_catalog.regnamespace",
           {oid_param(relid), text_param(col)}, SPI_OK_SELECT);
  if (SPI_processed == 0) {
    spi.exec("SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid OPERATOR(pg_catalog.=) $1 "
             "AND attname OPERATOR(pg_catalog.=) $2::pg_catalog.name AND attnum OPERATOR(pg_catalog.>) 0 AND NOT attisdropped",
             {oid_param(relid), text_param(col)}, SPI_OK_SELECT);
    if (SPI_processed == 0)
      throw Error(sqlstate::kUndefinedColumn, "column \"" + col + "\" of " + rel + " does not exist");
    throw Error(sqlstate::kWrongObjectType, "column \"" + col + "\" of " + rel + " holds no pg_envelope values",
                "envelope.reencrypt() works on envelope.encrypted_* and protected columns.");
  }
  std::string type = spi.text_at(0, 1);
  bool is_protected = type.rfind("protected_", 0) == 0;
  if (!is_protected && type.rfind("encrypted_", 0) != 0)
    throw Error(sqlstate::kWrongObjectType, "column \"" + col + "\" of " + rel + " holds no pg_envelope values",
                "envelope.reencrypt() works on envelope.encrypted_* and protected columns.");
  if (is_protected && (job.context_col || job.key))
    throw Error(sqlstate::kFeatureNotSupported, "a protected column is re-encrypted under its own keys and binding",
                "Its row context and key come from envelope.protect_column(); leave context_column and key NULL.",
                "To move it to another key: envelope.unprotect_column(), then envelope.protect_column() with the new key.");
  if (job.context_col) {
    spi.exec("SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid OPERATOR(pg_catalog.=) $1 "
             "AND attname OPERATOR(pg_catalog.=) $2::pg_catalog.name AND attnum OPERATOR(pg_catalog.>) 0 AND NOT attisdropped",
             {oid_param(relid), text_param(*job.context_col)}, SPI_OK_SELECT);
    if (SPI_processed == 0)
      throw Error(sqlstate::kUndefinedColumn, "context column \"" + *job.context_col + "\" of " + rel + " does not exist");
  }
  if (job.key && !key_catalog::key_by_name(*job.key)) throw_no_such_key();
  std::string target = job.key ? "$3::pg_catalog.text" : "NULL::pg_catalog.text";
  p.needs = is_protected ? "NOT envelope.on_current_key(" + p.qcol + ")"
                         : "NOT envelope.on_current_key(" + p.qcol + ", " + target + ")";
  p.value = is_protected ? "envelope.reseal(" + p.qcol + ")"
                         : "envelope.reencrypt_field(" + p.qcol + ", " +
                               (job.context_col ? "CAST(" + quote_ident_str(*job.context_col) + " AS pg_catalog.text)"
                                                : std::string("NULL::pg_catalog.text")) +
                               ", " + target + ")";
  p.key_label = job.key.value_or(std::string());
  return p;
}

// One run per column at a time: another session's or worker's run that is still running
// (its process busy with a statement begun before its last batch) is not taken over.
void refuse_if_running(Oid relid, const std::string& col, const std::string& rel) {
  OwnerSpi reg;
  reg.exec("SELECT 1 FROM envelope.reencryption r JOIN pg_catalog.pg_stat_activity a "
           "ON a.pid OPERATOR(pg_catalog.=) r.pid WHERE r.tbl OPERATOR(pg_catalog.=) $1 "
           "AND r.col OPERATOR(pg_catalog.=) $2::pg_catalog.name AND r.finished_at IS NULL "
           "AND r.pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid() AND a.state OPERATOR(pg_catalog.=) 'active' "
           "AND a.query_start OPERATOR(pg_catalog.<=) COALESCE(r.last_batch_at, r.resumed_at, r.started_at)",
           {oid_param(relid), text_param(col)}, SPI_OK_SELECT);
  bool running = SPI_processed > 0;
  reg.finish();
  if (running)
    throw Error(sqlstate::kObjectInUse, "column \"" + col + "\" of " + rel + " is being re-encrypted by another session",
                "envelope.reencryption_progress shows its progress.",
                "Wait for it to finish, or cancel it (envelope.cancel_reencryption) and call envelope.reencrypt() again.");
}

// The transactions of a run: a CALL's non-atomic SPI that commits in place, or the
// background worker's own transactions (no portal there, so atomic SPI in each).
class RunTx {
 public:
  virtual ~RunTx() = default;
  virtual OwnerSpi& spi() = 0;
  virtual void commit() = 0;  // commits and begins the next transaction
};

class CallTx final : public RunTx {
 public:
  OwnerSpi& spi() override { return spi_; }
  void commit() override { spi_.commit(); }
  void finish() { spi_.finish(); }

 private:
  OwnerSpi spi_{/*as_owner=*/false, /*nonatomic=*/true};
};

class WorkerTx final : public RunTx {
 public:
  WorkerTx() { begin(); }
  OwnerSpi& spi() override { return *spi_; }
  void commit() override {
    end();
    begin();
  }
  void end() {
    spi_->finish();
    spi_.reset();
    pg_call([] {
      PopActiveSnapshot();
      CommitTransactionCommand();
    });
  }

 private:
  void begin() {
    pg_call([] {
      SetCurrentStatementStartTimestamp();
      StartTransactionCommand();
      PushActiveSnapshot(GetTransactionSnapshot());
    });
    spi_.emplace(/*as_owner=*/false);
  }
  std::optional<OwnerSpi> spi_;
};

// Commits after every batch.
void run_reencryption(RunTx& tx, const ReencryptJob& job) {
  OwnerSpi* spi_now = &tx.spi();
  auto spi_commit = [&] {
    tx.commit();
    spi_now = &tx.spi();
  };
  const Oid relid = job.relid;
  const std::string& col = job.col;
  ReencryptPlan plan = plan_reencryption(*spi_now, job);
  const std::string& rel = plan.rel;
  const std::string& key = plan.key_label;
  // Progress: resumed when the last run for this column and target did not finish.
  const char* kResumable =
      "SELECT next_block, rows_done FROM envelope.reencryption WHERE tbl OPERATOR(pg_catalog.=) $1 "
      "AND col OPERATOR(pg_catalog.=) $2::pg_catalog.name AND target_key IS NOT DISTINCT FROM NULLIF($3, '') "
      "AND finished_at IS NULL";
  auto resumable = [&] {
    OwnerSpi reg;
    reg.exec(kResumable, {oid_param(relid), text_param(col), text_param(key)}, SPI_OK_SELECT);
    bool found = SPI_processed == 1;
    reg.finish();
    return found;
  };
  auto count_rows = [&] {
    spi_now->exec(("SELECT pg_catalog.count(*) FROM ONLY " + rel + " WHERE " + plan.qcol + " IS NOT NULL AND " + plan.needs).c_str(),
                  {oid_param(relid), text_param(col), text_param(key)}, SPI_OK_SELECT);
    return spi_now->int8_at(0, 1);
  };
  // A new run counts the rows to do before it takes the run (the count may take a while).
  std::optional<std::int64_t> total;
  if (!resumable()) total = count_rows();
  // The claim: one transaction at a time checks and takes a column's run (a second
  // session or worker then sees the first one running: 55006).
  {
    OwnerSpi lock;
    lock.exec("LOCK TABLE envelope.reencryption IN SHARE ROW EXCLUSIVE MODE", {}, SPI_OK_UTILITY);
    lock.finish();
  }
  refuse_if_running(relid, col, rel);
  std::int64_t block = 0, done = 0;
  {
    OwnerSpi reg;
    reg.exec(kResumable, {oid_param(relid), text_param(col), text_param(key)}, SPI_OK_SELECT);
    bool resume = SPI_processed == 1;
    if (resume) {
      block = reg.int8_at(0, 1);
      done = reg.int8_at(0, 2);
      reg.exec("UPDATE envelope.reencryption SET pid = pg_catalog.pg_backend_pid(), resumed_at = pg_catalog.now(), "
               "rows_at_resume = rows_done, error = NULL, context_column = NULLIF($3, '')::pg_catalog.name "
               "WHERE tbl OPERATOR(pg_catalog.=) $1 AND col OPERATOR(pg_catalog.=) $2::pg_catalog.name",
               {oid_param(relid), text_param(col), text_param(job.context_col.value_or(""))}, SPI_OK_UPDATE);
    }
    reg.finish();
    if (!resume) {
      if (!total) total = count_rows();  // the run it would have resumed finished meanwhile
      OwnerSpi reg2;
      reg2.exec("INSERT INTO envelope.reencryption (tbl, col, target_key, rows_total, rows_done, next_block, passes, "
                "pid, started_at, context_column) VALUES ($1, $2::pg_catalog.name, NULLIF($3, ''), $4, 0, 0, 0, "
                "pg_catalog.pg_backend_pid(), pg_catalog.now(), NULLIF($5, '')::pg_catalog.name) "
                "ON CONFLICT (tbl, col) DO UPDATE SET target_key = EXCLUDED.target_key, "
                "rows_total = EXCLUDED.rows_total, rows_done = 0, next_block = 0, passes = 0, pid = EXCLUDED.pid, "
                "started_at = EXCLUDED.started_at, resumed_at = NULL, rows_at_resume = 0, last_batch_at = NULL, "
                "finished_at = NULL, error = NULL, context_column = EXCLUDED.context_column",
                {oid_param(relid), text_param(col), text_param(key), {INT8OID, Int64GetDatum(*total)},
                 text_param(job.context_col.value_or(""))},
                SPI_OK_INSERT);
      reg2.finish();
    }
    spi_commit();
  }
  auto progress = [&](const char* set, std::initializer_list<SpiParam> extra) {
    OwnerSpi reg;
    std::string sql = std::string("UPDATE envelope.reencryption SET ") + set +
                      " WHERE tbl OPERATOR(pg_catalog.=) $1 AND col OPERATOR(pg_catalog.=) $2::pg_catalog.name";
    std::vector<SpiParam> params{oid_param(relid), text_param(col)};
    params.insert(params.end(), extra.begin(), extra.end());
    reg.exec(sql.c_str(), std::span<const SpiParam>(params), SPI_OK_UPDATE);
    reg.finish();
  };
  for (int pass = 1; pass <= 3; ++pass) {
    spi_now->exec(("SELECT pg_catalog.pg_relation_size('" + rel + "'::pg_catalog.regclass) OPERATOR(pg_catalog./) "
              "pg_catalog.current_setting('block_size')::pg_catalog.int8").c_str(),
             {}, SPI_OK_SELECT);
    std::int64_t nblocks = spi_now->int8_at(0, 1);
    while (block < nblocks) {
      std::int64_t end = block + job.batch_blocks;
      std::uint64_t n = spi_now->exec(("UPDATE ONLY " + rel + " SET " + plan.qcol + " = " + plan.value +
                                  " WHERE ctid OPERATOR(pg_catalog.>=) $1::pg_catalog.text::pg_catalog.tid "
                                  "AND ctid OPERATOR(pg_catalog.<) $2::pg_catalog.text::pg_catalog.tid AND " + plan.qcol +
                                  " IS NOT NULL AND " + plan.needs).c_str(),
                                 {text_param("(" + std::to_string(block) + ",0)"),
                                  text_param("(" + std::to_string(end) + ",0)"), text_param(key)},
                                 SPI_OK_UPDATE);
      done += static_cast<std::int64_t>(n);
      block = end;
      progress("next_block = $3, rows_done = $4, passes = $5, last_batch_at = pg_catalog.now()",
               {{INT8OID, Int64GetDatum(block)}, {INT8OID, Int64GetDatum(done)}, {INT4OID, Int32GetDatum(pass)}});
      spi_commit();
      pg_call([] { CHECK_FOR_INTERRUPTS(); });
      // The throttle yields after a batch that wrote rows (a later pass walks blocks
      // whose rows are done; it has nothing to yield).
      if (job.pause_ms > 0 && n > 0) {
        int ms = job.pause_ms;
        pg_call([ms] {
          (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, ms, PG_WAIT_EXTENSION);
          ResetLatch(MyLatch);
          CHECK_FOR_INTERRUPTS();
        });
      }
    }
    // Rows an application moved behind the scan (an UPDATE of another column writes a
    // new version, maybe in a block already scanned) are looked for once more.
    spi_now->exec(("SELECT 1 FROM ONLY " + rel + " WHERE " + plan.qcol + " IS NOT NULL AND " + plan.needs + " LIMIT 1").c_str(),
             {oid_param(relid), text_param(col), text_param(key)}, SPI_OK_SELECT);
    if (SPI_processed == 0) break;
    block = 0;
    if (pass == 3)
      pg_call([&rel] {
        ereport(NOTICE, (errmsg("pg_envelope: rows of %s are still being written with older DEK versions", rel.c_str()),
                         errhint("Call envelope.reencrypt() again when the writes have settled.")));
      });
  }
  progress("finished_at = pg_catalog.now(), pid = NULL", {});
  spi_commit();
}

// What the background worker is given (bgw_extra, 128 bytes): names travel as numbers.
struct WorkerJob {
  Oid db;
  Oid session_user;
  Oid current_user;
  Oid relid;
  AttrNumber col_attnum;
  AttrNumber context_attnum;  // InvalidAttrNumber: no context column
  std::uint32_t key_id;       // 0: each value's own key
  std::int32_t batch_blocks;
  std::int32_t pause_ms;
};
static_assert(sizeof(WorkerJob) <= BGW_EXTRALEN);

}  // namespace

// PROCEDURE reencrypt(tbl regclass, col name, context_column name DEFAULT NULL,
//                     key text DEFAULT NULL, batch_blocks integer DEFAULT 8,
//                     pause_ms integer DEFAULT 0): the run, in the calling session.
PGENV_FUNCTION(envelope_reencrypt) {
  require_preloaded();
  require_writable("re-encrypt a column");
  bool nonatomic = fcinfo->context != nullptr && IsA(fcinfo->context, CallContext) &&
                   !reinterpret_cast<CallContext*>(fcinfo->context)->atomic;
  if (!nonatomic)
    throw Error(sqlstate::kObjectNotInPrerequisiteState,
                "envelope.reencrypt() must be called with CALL, outside a transaction block",
                "It commits after every batch.", "CALL envelope.reencrypt('tbl', 'col');");
  ReencryptJob job = reencrypt_job(fcinfo);
  CallTx tx;
  run_reencryption(tx, job);
  tx.finish();
  PG_RETURN_VOID();
}

// start_reencryption(tbl regclass, col name, context_column name DEFAULT NULL,
//                    key text DEFAULT NULL, batch_blocks integer DEFAULT 8,
//                    pause_ms integer DEFAULT 0) RETURNS integer: the same run in a
// background worker, as the current role; returns the worker's PID. It outlives the
// session; envelope.cancel_reencryption() stops it (a later start resumes).
PGENV_FUNCTION(envelope_start_reencryption) {
  require_preloaded();
  require_writable("re-encrypt a column");
  ReencryptJob job = reencrypt_job(fcinfo);
  bool restricted = pg_call([] { return InSecurityRestrictedOperation() || InLocalUserIdChange(); });
  if (restricted)
    throw Error(sqlstate::kInsufficientPrivilege, "cannot start a re-encryption worker from a security-restricted operation",
                "The worker runs as the session's current role; a SECURITY DEFINER function's role is not handed over.");
  WorkerJob w{};
  w.db = MyDatabaseId;
  w.session_user = pg_call([] { return GetSessionUserId(); });
  w.current_user = pg_call([] { return GetUserId(); });
  w.relid = job.relid;
  w.batch_blocks = job.batch_blocks;
  w.pause_ms = job.pause_ms;
  {
    // Every check the run would make first, here, so that a bad call fails in the caller.
    OwnerSpi spi(/*as_owner=*/false);
    ReencryptPlan plan = plan_reencryption(spi, job);
    spi.finish();
    refuse_if_running(job.relid, job.col, plan.rel);
    // PostgreSQL checks UPDATE again in the worker; say it here too.
    bool may_update = pg_call([&job] {
      return pg_class_aclcheck(job.relid, GetUserId(), ACL_UPDATE) == ACLCHECK_OK;
    });
    if (!may_update) throw Error(sqlstate::kInsufficientPrivilege, "permission denied for table " + plan.rel);
  }
  w.col_attnum = column_of(job.relid, job.col).attnum;
  w.context_attnum = job.context_col ? column_of(job.relid, *job.context_col).attnum : InvalidAttrNumber;
  w.key_id = job.key ? key_catalog::key_by_name(*job.key)->key_id : 0;
  BackgroundWorker bw{};
  std::snprintf(bw.bgw_name, BGW_MAXLEN, "pg_envelope re-encryption of %u", job.relid);
  std::snprintf(bw.bgw_type, BGW_MAXLEN, "pg_envelope reencrypt");
  bw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
  bw.bgw_start_time = BgWorkerStart_RecoveryFinished;
  bw.bgw_restart_time = BGW_NEVER_RESTART;
  std::snprintf(bw.bgw_library_name, BGW_MAXLEN, "pg_envelope");
  std::snprintf(bw.bgw_function_name, BGW_MAXLEN, "envelope_reencrypt_worker_main");
  std::memcpy(bw.bgw_extra, &w, sizeof w);
  bw.bgw_notify_pid = MyProcPid;
  BackgroundWorkerHandle* handle = nullptr;
  TimestampTz since = pg_call([] { return GetCurrentTimestamp(); });
  bool ok = pg_call([&bw, &handle] { return RegisterDynamicBackgroundWorker(&bw, &handle); });
  if (!ok)
    throw Error(sqlstate::kConfigurationLimitExceeded, "could not start a re-encryption worker: no background worker slot is free",
                "", "Raise max_worker_processes, or CALL envelope.reencrypt() in a session.");
  pid_t pid = 0;
  BgwHandleStatus status = pg_call([handle, &pid] { return WaitForBackgroundWorkerStartup(handle, &pid); });
  if (status != BGWH_STARTED)
    throw Error(sqlstate::kObjectNotInPrerequisiteState, "the re-encryption worker did not start",
                "The server log may say why.");
  // Returns once the worker has taken the run (so that a second start, a CALL or a
  // cancel that follows sees it), even when it already finished it or failed after taking
  // it (the view then shows the error); an error when it stopped before taking it. Not in REPEATABLE READ or SERIALIZABLE, whose snapshot would not show it.
  bool xact_snapshot = pg_call([] { return IsolationUsesXactSnapshot(); });
  for (int waited_ms = 0; !xact_snapshot; waited_ms += 10) {
    pid_t now_pid = 0;
    BgwHandleStatus st = pg_call([handle, &now_pid] { return GetBackgroundWorkerPid(handle, &now_pid); });
    OwnerSpi reg;
    reg.exec("SELECT (pid IS NOT DISTINCT FROM $3)::pg_catalog.text, "
             "(COALESCE(resumed_at, started_at) OPERATOR(pg_catalog.>=) $4)::pg_catalog.text, "
             "COALESCE(error, '') FROM envelope.reencryption "
             "WHERE tbl OPERATOR(pg_catalog.=) $1 AND col OPERATOR(pg_catalog.=) $2::pg_catalog.name",
             {oid_param(job.relid), text_param(job.col), {INT4OID, Int32GetDatum(pid)},
              {TIMESTAMPTZOID, TimestampTzGetDatum(since)}},
             SPI_OK_SELECT);
    bool claimed = SPI_processed == 1 && reg.text_at(0, 1) == "true" && st == BGWH_STARTED;
    bool taken = SPI_processed == 1 && reg.text_at(0, 2) == "true";  // since this call began
    std::string error = SPI_processed == 1 ? reg.text_at(0, 3) : std::string();
    reg.finish();
    if (claimed || taken) break;
    if (st == BGWH_STOPPED) {
      refuse_if_running(job.relid, job.col, relation_sql(job.relid));  // 55006: another run took it
      throw Error(sqlstate::kObjectNotInPrerequisiteState, "the re-encryption worker stopped before it started its run",
                  error.empty() ? "The server log says why." : "It failed: " + error);
    }
    if (waited_ms >= 10000) {
      pg_call([] {
        ereport(WARNING, (errmsg("pg_envelope: the re-encryption worker has not started its run yet"),
                          errhint("It may wait for a lock this transaction holds; envelope.reencryption_progress "
                                  "shows when it runs.")));
      });
      break;
    }
    pg_call([] {
      (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 10, PG_WAIT_EXTENSION);
      ResetLatch(MyLatch);
      CHECK_FOR_INTERRUPTS();
    });
  }
  PG_RETURN_INT32(static_cast<int32>(pid));
}

// cancel_reencryption(tbl regclass, col name) RETURNS boolean: stops the run of a
// column (a background worker, or a session's CALL); true when one was running. For the
// table's owners. The run stops at its next batch boundary; what it did stays.
PGENV_FUNCTION(envelope_cancel_reencryption) {
  require_preloaded();
  if (PG_ARGISNULL(0) || PG_ARGISNULL(1)) throw Error(sqlstate::kNullValueNotAllowed, "table and column must not be null");
  Oid relid = PG_GETARG_OID(0);
  std::string col = NameStr(*PG_GETARG_NAME(1));
  Oid owner = pg_call([relid] {
    HeapTuple tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
    if (!HeapTupleIsValid(tup)) return InvalidOid;
    Oid o = reinterpret_cast<Form_pg_class>(GETSTRUCT(tup))->relowner;
    ReleaseSysCache(tup);
    return o;
  });
  if (owner == InvalidOid) throw Error(sqlstate::kUndefinedTable, "relation does not exist");
  bool member = pg_call([owner] { return has_privs_of_role(GetUserId(), owner); });
  if (!member) throw Error(sqlstate::kInsufficientPrivilege, "must be owner of table " + relation_sql(relid));
  OwnerSpi reg;
  reg.exec("SELECT r.pid FROM envelope.reencryption r JOIN pg_catalog.pg_stat_activity a "
           "ON a.pid OPERATOR(pg_catalog.=) r.pid WHERE r.tbl OPERATOR(pg_catalog.=) $1 "
           "AND r.col OPERATOR(pg_catalog.=) $2::pg_catalog.name AND r.finished_at IS NULL "
           "AND a.state OPERATOR(pg_catalog.=) 'active' "
           "AND a.query_start OPERATOR(pg_catalog.<=) COALESCE(r.last_batch_at, r.resumed_at, r.started_at)",
           {oid_param(relid), text_param(col)}, SPI_OK_SELECT);
  int pid = SPI_processed == 1 ? reg.int4_at(0, 1) : 0;
  reg.finish();
  if (pid == 0 || pid == MyProcPid) PG_RETURN_BOOL(false);
  // A session's CALL gets a query cancel; a worker is stopped the same way (it exits).
  bool sent = pg_call([pid] {
    PGPROC* proc = BackendPidGetProc(pid);
    if (proc == nullptr) return false;
    return kill(pid, SIGINT) == 0;
  });
  PG_RETURN_BOOL(sent);
}

namespace {

void reencrypt_worker_main(const WorkerJob& w) {
  pg_call([&w] { BackgroundWorkerInitializeConnectionByOid(w.db, w.session_user, 0); });
  pg_call([] {
    pgstat_report_appname("pg_envelope reencrypt");
    SetCurrentStatementStartTimestamp();
    pgstat_report_activity(STATE_RUNNING, "envelope.start_reencryption (background worker)");
  });
  ReencryptJob job;
  job.relid = w.relid;
  job.batch_blocks = w.batch_blocks;
  job.pause_ms = w.pause_ms;
  Oid relid = w.relid;
  std::optional<WorkerTx> tx;
  std::optional<Error> failure;
  bool interrupted = false;
  try {
    tx.emplace();
    // The role the session had when it started the run (its SET ROLE, checked there);
    // in a transaction, for the catalog lookup.
    if (w.current_user != w.session_user)
      pg_call([&w] { SetCurrentRoleId(w.current_user, superuser_arg(w.current_user)); });
    char* col = pg_call([relid, &w] { return get_attname(relid, w.col_attnum, false); });
    job.col = col;
    if (w.context_attnum != InvalidAttrNumber)
      job.context_col = std::string(pg_call([relid, &w] { return get_attname(relid, w.context_attnum, false); }));
    if (w.key_id != 0) {
      std::optional<KeyRecord> k = key_catalog::key_by_id(w.key_id);
      if (!k) throw_no_such_key();
      job.key = k->name;
    }
    run_reencryption(*tx, job);
    tx->end();
    pg_call([] { pgstat_report_activity(STATE_IDLE, nullptr); });
  } catch (const PgError& e) {
    // Copied before the abort frees it.
    ErrorData* d = e.data();
    interrupted = d != nullptr && (d->sqlerrcode == ERRCODE_QUERY_CANCELED || d->sqlerrcode == ERRCODE_ADMIN_SHUTDOWN);
    failure.emplace(d != nullptr ? unpack_sql_state(d->sqlerrcode) : sqlstate::kInternalError,
                    d != nullptr && d->message != nullptr ? d->message : "unknown error",
                    d != nullptr && d->detail != nullptr ? d->detail : "", d != nullptr && d->hint != nullptr ? d->hint : "");
  } catch (const Error& e) {
    failure.emplace(e);
  }
  if (!failure) return;
  // Recorded for envelope.reencryption_progress, then raised (the server log has it).
  tx.reset();
  pg_call([] {
    AbortCurrentTransaction();
    StartTransactionCommand();
    PushActiveSnapshot(GetTransactionSnapshot());
  });
  if (!job.col.empty()) {
    OwnerSpi reg;
    // Not on the row of another run of the column that is running (a second worker
    // refused with 55006, say).
    reg.exec("UPDATE envelope.reencryption SET error = $3 WHERE tbl OPERATOR(pg_catalog.=) $1 "
             "AND col OPERATOR(pg_catalog.=) $2::pg_catalog.name AND finished_at IS NULL "
             "AND (pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid() OR NOT envelope.reencryption_running(tbl, col))",
             {oid_param(relid), text_param(job.col), text_param(interrupted ? "cancelled" : failure->what())}, SPI_OK_UPDATE);
    reg.finish();
  }
  pg_call([] {
    PopActiveSnapshot();
    CommitTransactionCommand();
  });
  if (!interrupted) throw *failure;
}

}  // namespace

extern "C" {
PGDLLEXPORT void envelope_reencrypt_worker_main(Datum arg);
}

void envelope_reencrypt_worker_main(Datum) {
  pqsignal(SIGTERM, die);
  BackgroundWorkerUnblockSignals();
  WorkerJob w;
  std::memcpy(&w, MyBgworkerEntry->bgw_extra, sizeof w);
  pg_envelope::guarded_hook(ERROR, "re-encryption worker", [&w] { reencrypt_worker_main(w); });
}
