// Index reads of the key tables with a fresh snapshot (see key_catalog.hpp).
#include "guard.hpp"

extern "C" {
#include "access/genam.h"
#include "access/htup_details.h"
#include "access/skey.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "utils/datum.h"
#include "utils/fmgroids.h"
#include "utils/jsonb.h"
#include "utils/rel.h"
}

#include <algorithm>
#include <cstring>

#include "extension_objects.hpp"
#include "key_catalog.hpp"
#include "key_generation.hpp"
#include <string>
#include <unordered_map>

namespace pg_envelope::key_catalog {

namespace {

// One row copied out of a table: palloc'd arrays indexed by attribute number - 1.
struct Row {
  Datum* values;
  bool* nulls;
  int natts;
};

// ---- Plain C-style helpers: each runs inside one pg_call and holds no C++ object. ----

void copy_row(HeapTuple tup, TupleDesc desc, Row* row) {
  row->natts = desc->natts;
  row->values = static_cast<Datum*>(palloc(sizeof(Datum) * desc->natts));
  row->nulls = static_cast<bool*>(palloc(sizeof(bool) * desc->natts));
  heap_deform_tuple(tup, desc, row->values, row->nulls);
  for (int i = 0; i < desc->natts; ++i) {
    Form_pg_attribute att = TupleDescAttr(desc, i);
    if (!row->nulls[i] && !att->attbyval) row->values[i] = datumCopy(row->values[i], false, att->attlen);
  }
}

// The first row of `table` matching `keys` through `index`, read with a snapshot
// taken now (systable_beginscan with no snapshot uses GetCatalogSnapshot(), which
// for a table without a system cache is a new snapshot at every call).
bool fetch_one(Oid table, Oid index, ScanKeyData* keys, int nkeys, Row* row) {
  Relation rel = table_open(table, AccessShareLock);
  SysScanDesc scan = systable_beginscan(rel, index, true, nullptr, nkeys, keys);
  HeapTuple tup = systable_getnext(scan);
  bool found = HeapTupleIsValid(tup);
  if (found) copy_row(tup, RelationGetDescr(rel), row);
  systable_endscan(scan);
  table_close(rel, AccessShareLock);
  return found;
}

// Walks envelope.data_key newest first (backward through its created_at index), and
// stops at the first row `accept(row, arg)` takes; a copy of that row is left in `*row`
// (plain: no C++ object). The rows it passes over are only deformed, never copied.
bool newest_first(Oid table, Oid index, bool (*accept)(const Row*, void*), void* arg, Row* row) {
  Relation rel = table_open(table, AccessShareLock);
  Relation idx = index_open(index, AccessShareLock);
  SysScanDesc scan = systable_beginscan_ordered(rel, idx, nullptr, 0, nullptr);
  TupleDesc desc = RelationGetDescr(rel);
  Row view{static_cast<Datum*>(palloc(sizeof(Datum) * desc->natts)),
           static_cast<bool*>(palloc(sizeof(bool) * desc->natts)), desc->natts};
  bool found = false;
  HeapTuple tup;
  while (!found && HeapTupleIsValid(tup = systable_getnext_ordered(scan, BackwardScanDirection))) {
    heap_deform_tuple(tup, desc, view.values, view.nulls);
    found = accept(&view, arg);
    if (found) copy_row(tup, desc, row);
  }
  pfree(view.values);
  pfree(view.nulls);
  systable_endscan_ordered(scan);
  index_close(idx, AccessShareLock);
  table_close(rel, AccessShareLock);
  return found;
}

// Key ids of the rows of envelope.key whose state is not 'active'.
int inactive_key_ids(Oid table, AttrNumber key_id_att, AttrNumber state_att, uint32** out) {
  Relation rel = table_open(table, AccessShareLock);
  SysScanDesc scan = systable_beginscan(rel, InvalidOid, false, nullptr, 0, nullptr);
  int n = 0, cap = 16;
  *out = static_cast<uint32*>(palloc(sizeof(uint32) * cap));
  TupleDesc desc = RelationGetDescr(rel);
  HeapTuple tup;
  while (HeapTupleIsValid(tup = systable_getnext(scan))) {
    bool null_state = false, null_id = false;
    Datum state = heap_getattr(tup, state_att, desc, &null_state);
    Datum id = heap_getattr(tup, key_id_att, desc, &null_id);
    if (null_state || null_id) continue;
    text* t = DatumGetTextPP(state);
    bool active = VARSIZE_ANY_EXHDR(t) == 6 && memcmp(VARDATA_ANY(t), "active", 6) == 0;
    if (active) continue;
    if (n == cap) {
      cap *= 2;
      *out = static_cast<uint32*>(repalloc(*out, sizeof(uint32) * cap));
    }
    (*out)[n++] = static_cast<uint32>(DatumGetInt32(id));
  }
  systable_endscan(scan);
  table_close(rel, AccessShareLock);
  return n;
}

// Every row of `table`, copied, through `visit(row, arg)` (plain: no C++ object).
void scan_all(Oid table, void (*visit)(const Row*, void*), void* arg) {
  Relation rel = table_open(table, AccessShareLock);
  SysScanDesc scan = systable_beginscan(rel, InvalidOid, false, nullptr, 0, nullptr);
  HeapTuple tup;
  while (HeapTupleIsValid(tup = systable_getnext(scan))) {
    Row row;
    copy_row(tup, RelationGetDescr(rel), &row);
    visit(&row, arg);
  }
  systable_endscan(scan);
  table_close(rel, AccessShareLock);
}

// ---- C++ side ----

Datum text_datum(std::string_view s) {
  return PointerGetDatum(pg_varlena({reinterpret_cast<const std::uint8_t*>(s.data()), s.size()}));
}

std::string text_of(const Row& row, AttrNumber att) {
  if (att < 1 || att > row.natts || row.nulls[att - 1]) return {};
  Datum d = row.values[att - 1];
  text* t = pg_call([d] { return DatumGetTextPP(d); });
  return std::string(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
}

std::uint32_t uint_of(const Row& row, AttrNumber att) {
  if (att < 1 || att > row.natts || row.nulls[att - 1]) return 0;
  return static_cast<std::uint32_t>(DatumGetInt32(row.values[att - 1]));
}

Bytes bytes_of(const Row& row, AttrNumber att) {
  if (att < 1 || att > row.natts || row.nulls[att - 1]) return {};
  Datum d = row.values[att - 1];
  bytea* b = pg_call([d] { return DatumGetByteaPP(d); });
  const auto* p = reinterpret_cast<const std::uint8_t*>(VARDATA_ANY(b));
  return Bytes(p, p + VARSIZE_ANY_EXHDR(b));
}

KeyRecord key_of(const Row& row, const ext::Objects& o) {
  KeyRecord k;
  k.key_id = uint_of(row, o.key.key_id);
  k.name = text_of(row, o.key.name);
  k.kms = text_of(row, o.key.kms);
  k.kek = text_of(row, o.key.kek);
  std::string state = text_of(row, o.key.state);
  k.destroyed = state == "destroyed";
  k.disabled = state == "disabled";
  k.current_version = uint_of(row, o.key.current_version);
  return k;
}

void free_row(Row& row) {
  // The copied values live in the caller's memory context until it is reset.
  if (row.values == nullptr) return;
  pfree(row.values);
  pfree(row.nulls);
  row.values = nullptr;
  row.nulls = nullptr;
}

std::optional<KeyRecord> key_row_by_id(const ext::Objects& o, std::uint32_t key_id) {
  ScanKeyData key;
  ScanKeyInit(&key, o.key.key_id, BTEqualStrategyNumber, F_INT4EQ, Int32GetDatum(static_cast<int32>(key_id)));
  Row row{};
  if (!pg_call([&] { return fetch_one(o.key_table, o.key_pkey, &key, 1, &row); })) return std::nullopt;
  KeyRecord k = key_of(row, o);
  free_row(row);
  return k;
}

}  // namespace

std::optional<KeyRecord> key_by_name(std::string_view name) {
  const ext::Objects& o = ext::objects();
  ScanKeyData key;
  Datum d = text_datum(name);
  ScanKeyEntryInitialize(&key, 0, o.key.name, BTEqualStrategyNumber, InvalidOid, o.text_collation, F_TEXTEQ, d);
  Row row{};
  if (!pg_call([&] { return fetch_one(o.key_table, o.key_name_index, &key, 1, &row); })) return std::nullopt;
  KeyRecord k = key_of(row, o);
  free_row(row);
  return k;
}

std::optional<KeyRecord> key_by_id(std::uint32_t key_id) { return key_row_by_id(ext::objects(), key_id); }

std::optional<DekRecord> dek(DekId id) {
  const ext::Objects& o = ext::objects();
  ScanKeyData keys[2];
  ScanKeyInit(&keys[0], o.data_key.key_id, BTEqualStrategyNumber, F_INT4EQ,
              Int32GetDatum(static_cast<int32>(id.key_id)));
  ScanKeyInit(&keys[1], o.data_key.version, BTEqualStrategyNumber, F_INT4EQ,
              Int32GetDatum(static_cast<int32>(id.version)));
  Row row{};
  if (!pg_call([&] { return fetch_one(o.data_key_table, o.data_key_pkey, keys, 2, &row); })) return std::nullopt;
  DekRecord r;
  r.version = id.version;
  r.destroyed = text_of(row, o.data_key.state) == "destroyed";
  r.wrapped = bytes_of(row, o.data_key.wrapped);
  free_row(row);
  // The key row after the DEK row: a change to both (destroy_key) commits at once,
  // and a later snapshot can only be newer.
  std::optional<KeyRecord> key = key_row_by_id(o, id.key_id);
  if (!key) return std::nullopt;
  r.key = std::move(*key);
  return r;
}

namespace {

struct NewestLive {
  const ext::Objects* o;
  std::string_view kms;
};

// A DEK row not destroyed whose key uses the KMS (plain: runs inside pg_call).
bool live_dek_of_kms(const Row* row, void* arg) {
  auto* want = static_cast<NewestLive*>(arg);
  const ext::Objects& o = *want->o;
  if (row->nulls[o.data_key.wrapped - 1]) return false;
  std::uint32_t key_id = static_cast<std::uint32_t>(DatumGetInt32(row->values[o.data_key.key_id - 1]));
  ScanKeyData key;
  ScanKeyInit(&key, o.key.key_id, BTEqualStrategyNumber, F_INT4EQ, Int32GetDatum(static_cast<int32>(key_id)));
  Row krow{};
  if (!fetch_one(o.key_table, o.key_pkey, &key, 1, &krow)) return false;
  bool match = false;
  if (!krow.nulls[o.key.kms - 1]) {
    text* t = DatumGetTextPP(krow.values[o.key.kms - 1]);
    match = VARSIZE_ANY_EXHDR(t) == want->kms.size() &&
            std::memcmp(VARDATA_ANY(t), want->kms.data(), want->kms.size()) == 0;
  }
  free_row(krow);
  return match;
}

}  // namespace

std::optional<DekRecord> newest_live_dek(std::string_view kms, bool& indexed) {
  const ext::Objects& o = ext::objects();
  indexed = o.data_key_created_index != InvalidOid;
  if (!indexed) return std::nullopt;
  NewestLive want{&o, kms};
  Row row{};
  if (!pg_call([&] { return newest_first(o.data_key_table, o.data_key_created_index, live_dek_of_kms, &want, &row); }))
    return std::nullopt;
  std::optional<KeyRecord> key = key_row_by_id(o, uint_of(row, o.data_key.key_id));
  if (!key) {  // deleted since the walk read it (same snapshot rules as dek())
    free_row(row);
    return std::nullopt;
  }
  DekRecord r;
  r.key = std::move(*key);
  r.version = uint_of(row, o.data_key.version);
  r.destroyed = text_of(row, o.data_key.state) == "destroyed";
  r.wrapped = bytes_of(row, o.data_key.wrapped);
  free_row(row);
  return r;
}

std::optional<KmsConfig> kms(std::string_view name) {
  const ext::Objects& o = ext::objects();
  ScanKeyData key;
  Datum d = text_datum(name);
  ScanKeyEntryInitialize(&key, 0, o.kms.name, BTEqualStrategyNumber, InvalidOid, o.text_collation, F_TEXTEQ, d);
  Row row{};
  if (!pg_call([&] { return fetch_one(o.kms_table, o.kms_pkey, &key, 1, &row); })) return std::nullopt;
  KmsConfig cfg;
  cfg.name = text_of(row, o.kms.name);
  cfg.provider = text_of(row, o.kms.provider);
  if (o.kms.options <= row.natts && !row.nulls[o.kms.options - 1]) {
    Datum options = row.values[o.kms.options - 1];
    char* s = DatumGetCString(pg_call([options] { return DirectFunctionCall1(jsonb_out, options); }));
    cfg.options_json = s;
    pfree(s);
  } else {
    cfg.options_json = "{}";
  }
  free_row(row);
  return cfg;
}

std::vector<std::uint32_t> inactive_keys() {
  const ext::Objects& o = ext::objects();
  uint32* ids = nullptr;
  int n = pg_call([&] { return inactive_key_ids(o.key_table, o.key.key_id, o.key.state, &ids); });
  std::vector<std::uint32_t> out(ids, ids + n);
  pfree(ids);
  std::sort(out.begin(), out.end());
  return out;
}

namespace {

struct GrantRows {
  Row* rows;
  int n, cap;
};

// Collects copies of the rows (plain: runs inside pg_call).
void collect_row(const Row* row, void* arg) {
  auto* all = static_cast<GrantRows*>(arg);
  if (all->n == all->cap) {
    all->cap = all->cap == 0 ? 16 : all->cap * 2;
    all->rows = static_cast<Row*>(all->rows == nullptr ? palloc(sizeof(Row) * all->cap)
                                                       : repalloc(all->rows, sizeof(Row) * all->cap));
  }
  all->rows[all->n++] = *row;
}

}  // namespace

std::vector<Grant> grants() {
  const ext::Objects& o = ext::objects();
  std::vector<Grant> out;
  if (o.key_grant_table == InvalidOid) return out;
  GrantRows all{nullptr, 0, 0};
  pg_call([&] { scan_all(o.key_grant_table, collect_row, &all); });
  out.reserve(static_cast<std::size_t>(all.n));
  for (int i = 0; i < all.n; ++i) {
    Row& row = all.rows[i];
    Grant g;
    g.pattern = text_of(row, o.key_grant.pattern);
    g.grantee = row.nulls[o.key_grant.grantee - 1] ? InvalidOid : DatumGetObjectId(row.values[o.key_grant.grantee - 1]);
    g.privilege = text_of(row, o.key_grant.privilege);
    out.push_back(std::move(g));
    free_row(row);
  }
  if (all.rows != nullptr) pfree(all.rows);
  return out;
}

std::uint32_t current_version(std::uint32_t key_id) {
  static std::unordered_map<std::uint32_t, std::uint32_t> versions;
  static std::uint64_t seen_generation = UINT64_MAX;
  std::uint64_t g = key_generation();
  if (g != seen_generation) {
    versions.clear();
    seen_generation = g;
  }
  if (auto it = versions.find(key_id); it != versions.end()) return it->second;
  std::optional<KeyRecord> key = key_by_id(key_id);
  std::uint32_t v = key ? key->current_version : 0;
  if (versions.size() >= 4096) versions.clear();
  versions[key_id] = v;
  return v;
}

std::uint32_t key_id(std::string_view name) {
  static std::string last_name;
  static std::uint32_t last_id = 0;
  static std::uint64_t seen_generation = UINT64_MAX;
  std::uint64_t g = key_generation();
  if (g == seen_generation && name == last_name) return last_id;
  std::optional<KeyRecord> key = key_by_name(name);
  last_name = std::string(name);
  last_id = key ? key->key_id : 0;
  seen_generation = g;
  return last_id;
}

}  // namespace pg_envelope::key_catalog
