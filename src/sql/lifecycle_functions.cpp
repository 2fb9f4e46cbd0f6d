// Key lifecycle beyond rotation (docs/lifecycle.md): retiring the DEK versions no
// value references any more, and the proof that a destroyed key is gone.
//
//   retire_unreferenced_versions(key text) RETURNS TABLE (version integer,
//       values_referencing bigint, retired boolean, kept text)
//   verify_destroyed(key text) RETURNS TABLE (check_name text, ok boolean, detail text)
//
// References are counted by a scan (envelope.key_columns(key, strict => true), as the
// caller): nothing maintains a counter per version, so there is no count to drift.
#include "pg/guard.hpp"

extern "C" {
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/relscan.h"
#include "access/tableam.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/tuplestore.h"
}

#include <map>
#include <string>
#include <vector>

#include "pg/audit.hpp"
#include "pg/dek_resolver.hpp"
#include "pg/extension_objects.hpp"
#include "pg/key_access.hpp"
#include "pg/key_admin_sql.hpp"
#include "pg/key_catalog.hpp"
#include "pg/key_change_commit.hpp"
#include "pg/key_errors.hpp"
#include "pg/owner_spi.hpp"
#include "pg/shared_dek_cache.hpp"
#include "pg/shared_memory.hpp"
#include "pg/sql_args.hpp"

using namespace pg_envelope;

namespace {

ReturnSetInfo* materialize(FunctionCallInfo fcinfo) {
  pg_call([fcinfo] {
#if PG_VERSION_NUM >= 150000
    InitMaterializedSRF(fcinfo, 0);
#else
    SetSingleFuncCall(fcinfo, 0);
#endif
  });
  return reinterpret_cast<ReturnSetInfo*>(fcinfo->resultinfo);
}

// Tuples of envelope.data_key for the key that still hold a wrapped DEK, whether live
// or dead (SnapshotAny: an older row version that VACUUM has not removed).
std::int64_t row_versions_with_wrapped(std::uint32_t key_id) {
  const ext::Objects& o = ext::objects();
  return pg_call([&o, key_id] {
    Relation rel = table_open(o.data_key_table, AccessShareLock);
    TableScanDesc scan = table_beginscan(rel, SnapshotAny, 0, nullptr);
    std::int64_t n = 0;
    HeapTuple tup;
    while ((tup = heap_getnext(scan, ForwardScanDirection)) != nullptr) {
      bool isnull = false;
      Datum id = heap_getattr(tup, o.data_key.key_id, RelationGetDescr(rel), &isnull);
      if (isnull || DatumGetInt32(id) != static_cast<std::int32_t>(key_id)) continue;
      (void)heap_getattr(tup, o.data_key.wrapped, RelationGetDescr(rel), &isnull);
      if (!isnull) ++n;
    }
    table_endscan(scan);
    table_close(rel, AccessShareLock);
    return n;
  });
}

}  // namespace

// Deletes the wrapped DEK of every version of the key that is not current, that no
// value references and that is not the first (version 1 seeds the blind indexes of the
// protected columns that name the key as blind_key, at any time, so it stays) (by a scan of every encrypted and protected column, which must all
// be readable by the caller: 42501 otherwise, nothing retired). Purges the versions'
// cache entries everywhere at commit. One row per version of the key.
PGENV_FUNCTION(envelope_retire_unreferenced_versions) {
  require_preloaded();
  require_writable("retire key versions");
  std::string name = text_arg(fcinfo, 0, "key name");
  std::optional<KeyRecord> key = key_admin_sql::find_key(name, /*for_update=*/true);
  if (!key) throw_no_such_key("envelope.keys lists the keys of this database.");
  key_access::require(key->name, key_access::kAdmin);
  if (key->destroyed) throw_key_destroyed(key->name);
  // Values per version, as the caller (a column it may not read fails the call).
  std::map<std::int32_t, std::int64_t> refs;
  {
    OwnerSpi scan(/*as_owner=*/false);
    scan.exec("SELECT version, pg_catalog.sum(value_count)::pg_catalog.int8 FROM envelope.key_columns($1, true) "
              "GROUP BY version",
              {text_param(key->name)}, SPI_OK_SELECT);
    for (std::uint64_t i = 0; i < SPI_processed; ++i) refs[scan.int4_at(i, 1)] = scan.int8_at(i, 2);
    scan.finish();
  }
  std::vector<std::int32_t> versions;
  {
    OwnerSpi spi;
    spi.exec("SELECT version FROM envelope.data_key WHERE key_id OPERATOR(pg_catalog.=) $1 ORDER BY version",
             {int4_param(key->key_id)}, SPI_OK_SELECT);
    for (std::uint64_t i = 0; i < SPI_processed; ++i) versions.push_back(spi.int4_at(i, 1));
    spi.finish();
  }
  ReturnSetInfo* rsinfo = materialize(fcinfo);
  bool any = false;
  for (std::int32_t v : versions) {
    std::int64_t n = refs.count(v) ? refs[v] : 0;
    const char* kept = static_cast<std::uint32_t>(v) == key->current_version ? "current version"
                       : n > 0                                               ? "referenced"
                       : v == 1 ? "first version: it seeds the key's blind indexes"
                                : nullptr;
    bool retire = kept == nullptr;
    if (retire) {
      OwnerSpi spi;
      spi.exec("DELETE FROM envelope.data_key WHERE key_id OPERATOR(pg_catalog.=) $1 AND version OPERATOR(pg_catalog.=) $2",
               {int4_param(key->key_id), int4_param(static_cast<std::uint32_t>(v))}, SPI_OK_DELETE);
      spi.finish();
      audit::lifecycle("retire_version", key->name, v, "");
      any = true;
    }
    text* why = kept != nullptr ? pg_call([kept] { return cstring_to_text(kept); }) : nullptr;
    Datum values[4] = {Int32GetDatum(v), Int64GetDatum(n), BoolGetDatum(retire), PointerGetDatum(why)};
    bool nulls[4] = {false, false, false, why == nullptr};
    pg_call([&] { tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls); });
  }
  if (any) {
    evict_key_now_and_at_commit(key->key_id);
    dek_resolver::forget_all();
  }
  return static_cast<Datum>(0);
}

// Whether a destroyed key is gone, on this server (run it on the primary and on each
// standby): one row per check.
//   key destroyed      the key's row says destroyed
//   wrapped DEKs       no live row of envelope.data_key holds one of its wrapped DEKs
//   old row versions   no older row version (dead, not yet vacuumed) holds one
//   table rewritten    envelope.data_key was rewritten (VACUUM FULL) since the key was
//                      destroyed, so no page of the file holds the bytes of a removed
//                      row version either (plain VACUUM leaves them in the page)
//   shared cache       no entry of this server's shared DEK cache holds one of its DEKs
//                      (leftovers are zeroed first, and reported); each backend's own
//                      cache is dropped before its next use of any key (the shared key
//                      generation, or on a standby the replayed invalidation) and no
//                      backend resolves a DEK of a key whose row says destroyed
PGENV_FUNCTION(envelope_verify_destroyed) {
  require_preloaded();
  std::string name = text_arg(fcinfo, 0, "key name");
  std::optional<KeyRecord> key = key_catalog::key_by_name(name);
  if (!key) throw_no_such_key("envelope.keys lists the keys of this database.");
  key_access::require(key->name, key_access::kAdmin);
  struct Check {
    const char* name;
    bool ok;
    std::string detail;
  };
  std::vector<Check> checks;
  checks.push_back({"key destroyed", key->destroyed, key->destroyed ? "" : "the key is " + std::string(key->disabled ? "disabled" : "active")});
  std::int64_t live = 0;
  bool rewritten = false;
  std::string rewrite_detail;
  {
    OwnerSpi spi;
    spi.exec("SELECT pg_catalog.count(*) FROM envelope.data_key WHERE key_id OPERATOR(pg_catalog.=) $1 AND wrapped IS NOT NULL",
             {int4_param(key->key_id)}, SPI_OK_SELECT);
    live = spi.int8_at(0, 1);
    spi.exec("SELECT (k.destroyed_filenode IS NOT NULL AND k.destroyed_filenode OPERATOR(pg_catalog.<>) "
             "pg_catalog.pg_relation_filenode('envelope.data_key'::pg_catalog.regclass))::pg_catalog.text, "
             "(k.destroyed_filenode IS NULL)::pg_catalog.text "
             "FROM envelope.key k WHERE k.key_id OPERATOR(pg_catalog.=) $1",
             {int4_param(key->key_id)}, SPI_OK_SELECT);
    rewritten = SPI_processed == 1 && spi.text_at(0, 1) == "true";
    if (!rewritten)
      rewrite_detail = SPI_processed == 1 && spi.text_at(0, 2) == "true" && key->destroyed
                           ? "destroyed before this check existed: run VACUUM FULL envelope.data_key, then verify again"
                           : "run VACUUM FULL envelope.data_key (with no older transaction open), then verify again";
    spi.finish();
  }
  if (!key->destroyed) rewrite_detail = "the key is not destroyed";
  checks.push_back({"wrapped DEKs", live == 0, live == 0 ? "" : std::to_string(live) + " rows of envelope.data_key hold one"});
  std::int64_t versions = row_versions_with_wrapped(key->key_id);
  std::int64_t old_versions = versions - live;
  checks.push_back({"old row versions", old_versions == 0,
                    old_versions == 0 ? "" : std::to_string(old_versions) +
                                                 " older row versions of envelope.data_key still hold one: "
                                                 "run VACUUM FULL envelope.data_key"});
  checks.push_back({"table rewritten", rewritten && key->destroyed, rewritten ? "" : rewrite_detail});
  // Entries left over (a standby zeroes them when one of its backends reads the replayed
  // change; none may have yet) are zeroed here first, then the cache is read again.
  std::int64_t zeroed = key->destroyed ? shared_dek_cache::evict_key(key->key_id) : 0;
  std::int64_t cached = shared_dek_cache::key_entries(key->key_id);
  checks.push_back({"shared cache", cached == 0,
                    cached != 0  ? std::to_string(cached) + " entries hold one of its DEKs"
                    : zeroed > 0 ? "zeroed " + std::to_string(zeroed) + " leftover entries"
                                 : ""});
  ReturnSetInfo* rsinfo = materialize(fcinfo);
  for (const Check& c : checks) {
    text* n = pg_call([&c] { return cstring_to_text(c.name); });
    text* d = c.detail.empty() ? nullptr : pg_call([&c] { return cstring_to_text_with_len(c.detail.data(), static_cast<int>(c.detail.size())); });
    Datum values[3] = {PointerGetDatum(n), BoolGetDatum(c.ok), PointerGetDatum(d)};
    bool nulls[3] = {false, false, d == nullptr};
    pg_call([&] { tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls); });
  }
  return static_cast<Datum>(0);
}
