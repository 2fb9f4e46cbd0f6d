// The per-row machinery of protected columns:
//  * envelope.protect_row(): the BEFORE INSERT OR UPDATE trigger that seals a
//    protected column's plaintext under the row's key and binding (protection id,
//    key name, row context), keeps a value that is already sealed exactly so
//    (pg_dump, COPY, logical replication: never encrypted twice), and re-binds one
//    sealed for another row, column or key (an upsert's EXCLUDED value, a copied
//    value, a changed tenant or primary key);
//  * envelope.protected_ok(): the CHECK that keeps unsealed values out of the table
//    even when the trigger did not run;
//  * comparison of blind-index views (envelope.blind_*): equality search and
//    uniqueness through an ordinary btree index, by HMAC, never decrypting.
#include "pg/guard.hpp"

extern "C" {
#include "access/detoast.h"
#include "access/htup_details.h"
#include "commands/trigger.h"
#include "commands/vacuum.h"
#include "executor/spi.h"
#include "nodes/supportnodes.h"
#include "utils/lsyscache.h"
#include "mb/pg_wchar.h"
#include "utils/rel.h"
}

#include <nlohmann/json.hpp>

#include <cstring>
#include <map>

#include "pg/key_access.hpp"
#include "pg/protection.hpp"
#include "pg/secret_memory.hpp"
#include "pg_envelope/key_patterns.hpp"
#include "pg_envelope/protected_format.hpp"

using namespace pg_envelope;

namespace {

// A protected column's configuration, as protect_column() wrote it into the trigger's
// argument (so that a dump carries it with the table, before any data).
struct Config {
  std::uint32_t protection_id = 0;
  std::string column;
  PlainType type = PlainType::kText;
  std::string key;  // a key name, or a template with "{}" for the key column's value
  std::string key_column;
  std::string context_column;
  std::uint32_t blind_key_id = 0;
  std::uint8_t blind_bytes = 0;
  std::int32_t max_chars = 0;  // varchar(n): n, else 0
};

Config parse_config(const char* text) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  auto bad = [] {
    throw Error(sqlstate::kInvalidParameterValue, "malformed protected-column trigger",
                "The trigger's argument is not what envelope.protect_column() writes.",
                "Run envelope.unprotect_column() and envelope.protect_column() again.");
  };
  if (!j.is_object() || j.value("v", 0) != 1) bad();
  Config c;
  c.protection_id = j.value("pid", 0u);
  c.column = j.value("column", "");
  std::string type = j.value("type", "");
  c.type = type == "text" ? PlainType::kText : type == "bytea" ? PlainType::kBytea : PlainType::kJsonb;
  if (type != "text" && type != "bytea" && type != "jsonb") bad();
  c.key = j.value("key", "");
  c.key_column = j.value("key_column", "");
  c.context_column = j.value("context_column", "");
  c.blind_key_id = j.value("blind_key_id", 0u);
  c.blind_bytes = static_cast<std::uint8_t>(j.value("blind_bytes", 0u));
  c.max_chars = j.value("max_chars", 0);
  if (c.protection_id == 0 || c.column.empty() || c.key.empty() || c.blind_bytes > kMaxBlindIndex ||
      (c.blind_key_id == 0) != (c.blind_bytes == 0))
    bad();
  return c;
}

const Config& config_of(const Trigger* trigger) {
  static std::map<Oid, std::pair<std::string, Config>> cache;
  if (trigger->tgnargs != 1)
    throw Error(sqlstate::kInvalidParameterValue, "malformed protected-column trigger",
                "envelope.protect_row() takes the column's configuration as its one argument.");
  const char* arg = trigger->tgargs[0];
  auto it = cache.find(trigger->tgoid);
  if (it != cache.end() && it->second.first == arg) return it->second.second;
  Config c = parse_config(arg);
  auto& slot = cache[trigger->tgoid];
  slot = {arg, std::move(c)};
  return slot.second;
}

int column_number(TupleDesc desc, const std::string& name, const char* role) {
  int n = pg_call([desc, &name] { return SPI_fnumber(desc, name.c_str()); });
  if (n <= 0)
    throw Error(sqlstate::kUndefinedObject,
                std::string("the ") + role + " \"" + name + "\" of a protected column no longer exists",
                "A protected column, its key column or its context column was renamed or dropped.",
                "Run envelope.unprotect_column() and envelope.protect_column() again, or rename it back.");
  return n;
}

// The text of a column value as its type's output function writes it.
bool column_text(HeapTuple tuple, TupleDesc desc, int attnum, std::string& out) {
  bool isnull = false;
  Datum d = pg_call([&] { return heap_getattr(tuple, attnum, desc, &isnull); });
  if (isnull) return false;
  Oid type = TupleDescAttr(desc, attnum - 1)->atttypid;
  char* s = pg_call([type, d] {
    Oid out_fn;
    bool varlena;
    getTypeOutputInfo(type, &out_fn, &varlena);
    return OidOutputFunctionCall(out_fn, d);
  });
  out = s;
  pfree(s);
  return true;
}

protection::Binding binding_of(const Config& c, HeapTuple tuple, TupleDesc desc) {
  protection::Binding b;
  b.protection_id = c.protection_id;
  b.blind_key_id = c.blind_key_id;
  b.blind_bytes = c.blind_bytes;
  if (c.key_column.empty()) {
    b.key_name = c.key;
  } else {
    std::string value;
    if (!column_text(tuple, desc, column_number(desc, c.key_column, "key column"), value))
      throw Error(sqlstate::kNotNullViolation, "the key column \"" + c.key_column + "\" of protected column \"" +
                                                   c.column + "\" is null",
                  "Each row's key is chosen from that column; a row without one cannot be encrypted.");
    b.key_name = c.key;
    std::size_t at = b.key_name.find("{}");
    b.key_name.replace(at, 2, value);
    if (!valid_key_pattern(b.key_name) || b.key_name.back() == '*')
      throw Error(sqlstate::kInvalidParameterValue, "a row's key name for protected column \"" + c.column +
                                                        "\" is not a valid key name",
                  "The key column's value does not make a valid key name; it is not repeated here.");
  }
  if (!c.context_column.empty())
    b.has_context = column_text(tuple, desc, column_number(desc, c.context_column, "context column"), b.context);
  if (b.context.size() > 65535)
    throw Error(sqlstate::kProgramLimitExceeded, "the row context of protected column \"" + c.column + "\" is too long",
                "A row context is at most 65535 bytes.");
  return b;
}

// The sealed value of one column of one row, or nullptr to keep the value as it is.
struct varlena* seal_value(const Config& c, const protection::Binding& b, Datum value) {
  auto* v = static_cast<struct varlena*>(pg_call([value] { return PG_DETOAST_DATUM_PACKED(value); }));
  ByteView bytes{reinterpret_cast<const std::uint8_t*>(VARDATA_ANY(v)), VARSIZE_ANY_EXHDR(v)};
  if (is_sealed(bytes)) {
    SealedView view;
    if (FormatProblem p = parse_sealed(bytes, c.type, view))
      throw Error(sqlstate::kInvalidTextRepresentation, "malformed protected value", p.detail);
    if (protection::bound_as(view, b)) return nullptr;  // already sealed exactly so
    // Sealed for another row, column or key: re-bind. Under another key the caller
    // must be allowed to read the source (or copying it would let it read the value
    // through a column it may decrypt).
    bool other_key = view.key_name != b.key_name;
    protection::Opened o = protection::open(view, other_key, key_access::kDecrypt);
    struct varlena* out;
    try {
      out = protection::seal(c.type, b, {o.data, o.size});
    } catch (...) {
      protection::release(o);
      throw;
    }
    protection::release(o);
    return out;
  }
  ByteView plain;
  if (!unsealed_plaintext(bytes, c.type, plain))
    throw Error(sqlstate::kInvalidTextRepresentation, "malformed protected value",
                "The value is neither sealed nor a plaintext of the column's type.");
  // A text value reaches the column without its input function when it is cast from
  // text (a text-typed parameter): a "penv1:" text form is then a sealed value, too.
  if (c.type == PlainType::kText) {
    Bytes decoded;
    bool matched = false;
    std::string_view text(reinterpret_cast<const char*>(plain.data()), plain.size());
    if (FormatProblem p = decode_protected_text_form(text, c.type, decoded, matched))
      throw Error(sqlstate::kInvalidTextRepresentation, "invalid input syntax for type envelope.protected_text",
                  p.detail);
    if (matched) {
      // Kept as it is means the sealed bytes, not their text form.
      struct varlena* sealed = pg_varlena(decoded);
      struct varlena* rebound = seal_value(c, b, PointerGetDatum(sealed));
      return rebound != nullptr ? rebound : sealed;
    }
  }
  if (c.max_chars > 0 && c.type == PlainType::kText && plain.size() > static_cast<std::size_t>(c.max_chars)) {
    int chars = pg_call([&plain] {
      return pg_mbstrlen_with_len(reinterpret_cast<const char*>(plain.data()), static_cast<int>(plain.size()));
    });
    if (chars > c.max_chars)
      throw Error(sqlstate::kStringDataRightTruncation,
                  "value too long for type character varying(" + std::to_string(c.max_chars) + ")",
                  "Protected column \"" + c.column + "\" keeps the length limit of its type.");
  }
  try {
    return protection::seal(c.type, b, plain);
  } catch (const Error& e) {
    if (std::strcmp(e.sqlstate(), sqlstate::kUndefinedObject) != 0 || c.key_column.empty()) throw;
    // The row's key, named from its key column, does not exist (the name is not repeated).
    throw Error(e.sqlstate(), e.what(), e.detail(),
                "The row's key is named by protected column \"" + c.column + "\"'s key template and its key column \"" +
                    c.key_column + "\"; create that key with envelope.create_key() first.");
  }
}

}  // namespace

// protect_row() RETURNS trigger: BEFORE INSERT OR UPDATE, FOR EACH ROW, ENABLE ALWAYS.
PGENV_FUNCTION(envelope_protect_row) {
  if (!CALLED_AS_TRIGGER(fcinfo))
    throw Error(sqlstate::kObjectNotInPrerequisiteState, "envelope.protect_row() must be called as a trigger");
  auto* td = reinterpret_cast<TriggerData*>(fcinfo->context);
  if (!TRIGGER_FIRED_BEFORE(td->tg_event) || !TRIGGER_FIRED_FOR_ROW(td->tg_event) ||
      !(TRIGGER_FIRED_BY_INSERT(td->tg_event) || TRIGGER_FIRED_BY_UPDATE(td->tg_event)))
    throw Error(sqlstate::kObjectNotInPrerequisiteState,
                "envelope.protect_row() must run BEFORE INSERT OR UPDATE FOR EACH ROW");
  const Config& c = config_of(td->tg_trigger);
  HeapTuple tuple = TRIGGER_FIRED_BY_UPDATE(td->tg_event) ? td->tg_newtuple : td->tg_trigtuple;
  TupleDesc desc = RelationGetDescr(td->tg_relation);
  int attnum = column_number(desc, c.column, "column");
  bool isnull = false;
  Datum value = pg_call([&] { return heap_getattr(tuple, attnum, desc, &isnull); });
  if (isnull) return PointerGetDatum(tuple);
  protection::Binding b = binding_of(c, tuple, desc);
  struct varlena* sealed = seal_value(c, b, value);
  if (sealed == nullptr) return PointerGetDatum(tuple);
  Datum replacement = PointerGetDatum(sealed);
  bool replacement_null = false;
  HeapTuple out =
      pg_call([&] { return heap_modify_tuple_by_cols(tuple, desc, 1, &attnum, &replacement, &replacement_null); });
  return PointerGetDatum(out);
}

namespace {

ByteView datum_bytes(Datum d, struct varlena*& holder) {
  holder = static_cast<struct varlena*>(pg_call([d] { return PG_DETOAST_DATUM_PACKED(d); }));
  return {reinterpret_cast<const std::uint8_t*>(VARDATA_ANY(holder)), VARSIZE_ANY_EXHDR(holder)};
}

// protected_ok(value blind_*, protection_id bigint): the value is sealed for that
// column (the CHECK of a protected column; NULL passes, as in every CHECK).
bool sealed_for(FunctionCallInfo fcinfo, PlainType type) {
  struct varlena* holder;
  ByteView bytes = datum_bytes(PG_GETARG_DATUM(0), holder);
  SealedView view;
  return is_sealed(bytes) && !parse_sealed(bytes, type, view) &&
         view.protection_id == static_cast<std::uint32_t>(PG_GETARG_INT64(1));
}

// The blind index of an unsealed search value, for the column a sealed value belongs
// to; remembered for the next comparison with the same search value (an index scan
// compares one search value with many entries).
struct SearchCache {
  std::uint32_t protection_id, blind_key_id;
  std::size_t blind_len;
  std::uint8_t blind[kMaxBlindIndex];
  std::uint8_t* plain;  // a copy, zeroed with its memory context
  std::size_t plain_len;
  bool valid;
};

const std::uint8_t* search_blind(FunctionCallInfo fcinfo, const SealedView& column_value, ByteView plain) {
  auto* cache = static_cast<SearchCache*>(fcinfo->flinfo->fn_extra);
  if (cache == nullptr) {
    cache = static_cast<SearchCache*>(
        pg_call([fcinfo] { return MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(SearchCache)); }));
    fcinfo->flinfo->fn_extra = cache;
  }
  if (cache->valid && cache->protection_id == column_value.protection_id &&
      cache->blind_key_id == column_value.blind_key_id && cache->blind_len == column_value.blind.size() &&
      cache->plain_len == plain.size() && std::memcmp(cache->plain, plain.data(), plain.size()) == 0)
    return cache->blind;
  protection::require_search(column_value.blind_key_id);
  cache->valid = false;
  if (cache->plain == nullptr || cache->plain_len < plain.size()) {
    MemoryContext cxt = fcinfo->flinfo->fn_mcxt;
    std::size_t n = plain.size() + 1;
    void* p = pg_call([cxt, n] { return MemoryContextAlloc(cxt, n); });
    guard_secret(p, n);
    cache->plain = static_cast<std::uint8_t*>(p);
  }
  if (!plain.empty()) std::memcpy(cache->plain, plain.data(), plain.size());
  cache->plain_len = plain.size();
  protection::blind_index(column_value.blind_key_id, column_value.protection_id, plain,
                          static_cast<std::uint8_t>(column_value.blind.size()), cache->blind);
  cache->protection_id = column_value.protection_id;
  cache->blind_key_id = column_value.blind_key_id;
  cache->blind_len = column_value.blind.size();
  cache->valid = true;
  return cache->blind;
}

[[noreturn]] void no_blind_index() {
  throw Error(sqlstate::kFeatureNotSupported, "a protected column without a blind index cannot be compared",
              "Equality, sorting and unique indexes on a protected column need its blind index.",
              "Protect the column with blind_index => true.");
}

int compare_bytes(ByteView a, ByteView b) {
  int c = std::memcmp(a.data(), b.data(), std::min(a.size(), b.size()));
  if (c != 0) return c < 0 ? -1 : 1;
  return a.size() < b.size() ? -1 : a.size() > b.size() ? 1 : 0;
}

// Total order of blind views: sealed values by (protection id, blind index); a search
// plaintext as if sealed for the column it is compared with; two plaintexts by bytes.
// `ordering`: called as <, <=, > or >= (not by the btree, which calls the cmp support
// function): a plaintext compared that way would be compared with keyed hashes, which
// have no order a plaintext would recognise, so it is refused rather than answered.
int compare(FunctionCallInfo fcinfo, PlainType type, bool ordering = false) {
  struct varlena *ha, *hb;
  ByteView a = datum_bytes(PG_GETARG_DATUM(0), ha);
  ByteView b = datum_bytes(PG_GETARG_DATUM(1), hb);
  bool sa = is_sealed(a), sb = is_sealed(b);
  // The btree's path (two stored values of one column): only the protection id and the
  // blind index are needed, read in place; the full structural check is for the rest.
  if (sa && sb) {
    std::uint32_t pa = 0, pb = 0;
    ByteView ba, bb;
    if (sealed_blind(a, type, pa, ba) && sealed_blind(b, type, pb, bb)) {
      if (ba.empty() || bb.empty()) no_blind_index();
      if (pa == pb) return compare_bytes(ba, bb);
    }
  }
  SealedView va, vb;
  if (sa && parse_sealed(a, type, va)) throw Error(sqlstate::kDataCorrupted, "malformed protected value");
  if (sb && parse_sealed(b, type, vb)) throw Error(sqlstate::kDataCorrupted, "malformed protected value");
  if (sa && sb) {
    if (va.blind.empty() || vb.blind.empty()) no_blind_index();
    if (va.protection_id != vb.protection_id)
      throw Error(sqlstate::kFeatureNotSupported, "values of two different protected columns cannot be compared",
                  "Each protected column has its own blind index: equal plaintexts in two columns do not compare "
                  "equal without decrypting.",
                  "Compare the decrypted values, e.g. envelope.unseal(a.col) = envelope.unseal(b.col), as a role "
                  "holding decrypt on both keys.");
    return compare_bytes(va.blind, vb.blind);
  }
  if (!sa && !sb) {
    ByteView pa, pb;
    if (!unsealed_plaintext(a, type, pa) || !unsealed_plaintext(b, type, pb))
      throw Error(sqlstate::kDataCorrupted, "malformed protected value");
    return compare_bytes(pa, pb);
  }
  if (ordering)
    throw Error(sqlstate::kFeatureNotSupported, "a protected column can only be compared for equality",
                "Its index holds keyed hashes of the plaintexts: <, <=, > and >= have no meaning on it.",
                "Search with = or IN; sort or filter by range on the decrypted values.");
  const SealedView& column_value = sa ? va : vb;
  ByteView plain;
  if (!unsealed_plaintext(sa ? b : a, type, plain)) throw Error(sqlstate::kDataCorrupted, "malformed protected value");
  if (column_value.blind.empty()) no_blind_index();
  const std::uint8_t* blind = search_blind(fcinfo, column_value, plain);
  int c = compare_bytes(column_value.blind, {blind, column_value.blind.size()});
  return sa ? c : -c;
}

}  // namespace

// One set of SQL-callable functions per blind type (text, bytea, jsonb).
#define PGENV_BLIND_FUNCTIONS(t, T)                                                                  \
  PGENV_FUNCTION(envelope_##t##_protected_ok) { PG_RETURN_BOOL(sealed_for(fcinfo, PlainType::T)); } \
  PGENV_FUNCTION(envelope_##t##_cmp) { PG_RETURN_INT32(compare(fcinfo, PlainType::T)); }            \
  PGENV_FUNCTION(envelope_##t##_eq) { PG_RETURN_BOOL(compare(fcinfo, PlainType::T) == 0); }         \
  PGENV_FUNCTION(envelope_##t##_ne) { PG_RETURN_BOOL(compare(fcinfo, PlainType::T) != 0); }         \
  PGENV_FUNCTION(envelope_##t##_lt) { PG_RETURN_BOOL(compare(fcinfo, PlainType::T, true) < 0); }          \
  PGENV_FUNCTION(envelope_##t##_le) { PG_RETURN_BOOL(compare(fcinfo, PlainType::T, true) <= 0); }         \
  PGENV_FUNCTION(envelope_##t##_gt) { PG_RETURN_BOOL(compare(fcinfo, PlainType::T, true) > 0); }          \
  PGENV_FUNCTION(envelope_##t##_ge) { PG_RETURN_BOOL(compare(fcinfo, PlainType::T, true) >= 0); }

// The planner support function of the ordering operators (<, <=, >, >=) of every blind
// type. They are in the btree operator class only so that ORDER BY, GROUP BY and UNIQUE
// work; an explicit use in an expression (email OPERATOR(envelope.>) 'b', or plain `>`
// with `envelope` on the search_path) would be answered by keyed-hash order when the
// planner picks the blind index (the btree calls the cmp function, not the operator), so
// it is refused when the expression is planned, whatever the plan would have been.
PGENV_FUNCTION(envelope_blind_ordering_support) {
  Node* request = reinterpret_cast<Node*>(PG_GETARG_POINTER(0));
  if (IsA(request, SupportRequestSimplify))
    throw Error(sqlstate::kFeatureNotSupported, "a protected column can only be compared for equality",
                "Its index holds keyed hashes of the plaintexts: <, <=, > and >= have no meaning on it.",
                "Search with = or IN; sort or filter by range on the decrypted values.");
  PG_RETURN_POINTER(nullptr);
}

PGENV_BLIND_FUNCTIONS(blind_text, kText)
PGENV_BLIND_FUNCTIONS(blind_bytea, kBytea)
PGENV_BLIND_FUNCTIONS(blind_jsonb, kJsonb)

PGENV_FUNCTION(envelope_is_sealed) {
  struct varlena* holder;
  PG_RETURN_BOOL(is_sealed(datum_bytes(PG_GETARG_DATUM(0), holder)));
}

// ANALYZE of a protected column. Its statistics come from the blind-index operator
// class (protected_* is binary-coercible to blind_*), whose comparisons refuse values
// without a blind index; and a sample may mix values sealed with and without one, or
// plaintexts not sealed yet. So the standard statistics are computed only when every
// sampled value is sealed with a blind index; otherwise only the null fraction and the
// width (no value is compared). The wrapper runs in PostgreSQL's frames: no C++
// exception, no allocation by C++.
namespace {

struct AnalyzedType {
  Oid type;
  PlainType plain;
  AnalyzeAttrComputeStatsFunc standard;  // what std_typanalyze chose for the type
};
AnalyzedType analyzed_types[3];

const AnalyzedType* analyzed(Oid type) {
  for (const AnalyzedType& t : analyzed_types)
    if (t.type == type) return &t;
  return nullptr;
}

bool sample_all_blind(VacAttrStats* stats, AnalyzeAttrFetchFunc fetchfunc, int samplerows, int* nulls,
                      double* width) {
  const AnalyzedType* t = analyzed(stats->attrtypid);
  PlainType type = t != nullptr ? t->plain : PlainType::kText;
  bool all = true;
  *nulls = 0;
  *width = 0;
  for (int i = 0; i < samplerows; ++i) {
    vacuum_delay_point();
    bool isnull = false;
    Datum d = fetchfunc(stats, i, &isnull);
    if (isnull) {
      ++*nulls;
      continue;
    }
    *width += static_cast<double>(toast_raw_datum_size(d));
    if (!all) continue;
    struct varlena* raw = reinterpret_cast<struct varlena*>(DatumGetPointer(d));
    struct varlena* v = pg_detoast_datum_packed(raw);
    ByteView bytes{reinterpret_cast<const std::uint8_t*>(VARDATA_ANY(v)), VARSIZE_ANY_EXHDR(v)};
    std::uint32_t pid = 0;
    ByteView blind;
    if (!is_sealed(bytes) || !sealed_blind(bytes, type, pid, blind) || blind.empty()) all = false;
    if (v != raw) pfree(v);
  }
  return all;
}

extern "C" void protected_compute_stats(VacAttrStats* stats, AnalyzeAttrFetchFunc fetchfunc, int samplerows,
                                        double totalrows) {
  int nulls = 0;
  double width = 0;
  const AnalyzedType* t = analyzed(stats->attrtypid);
  if (sample_all_blind(stats, fetchfunc, samplerows, &nulls, &width) && t != nullptr && t->standard != nullptr) {
    t->standard(stats, fetchfunc, samplerows, totalrows);
    return;
  }
  int nonnull = samplerows - nulls;
  stats->stats_valid = true;
  stats->stanullfrac = samplerows > 0 ? static_cast<float4>(nulls) / static_cast<float4>(samplerows) : 0;
  stats->stawidth = nonnull > 0 ? static_cast<int32>(width / nonnull) : 0;
  stats->stadistinct = 0.0;  // unknown
}

Datum protected_typanalyze(FunctionCallInfo fcinfo, PlainType plain) {
  auto* stats = reinterpret_cast<VacAttrStats*>(PG_GETARG_POINTER(0));
  bool ok = pg_call([stats] { return std_typanalyze(stats); });
  if (!ok) PG_RETURN_BOOL(false);
  for (AnalyzedType& t : analyzed_types)
    if (t.type == InvalidOid || t.type == stats->attrtypid) {
      t = {stats->attrtypid, plain, stats->compute_stats};
      break;
    }
  stats->compute_stats = protected_compute_stats;
  PG_RETURN_BOOL(true);
}

}  // namespace

PGENV_FUNCTION(envelope_protected_text_typanalyze) { return protected_typanalyze(fcinfo, PlainType::kText); }
PGENV_FUNCTION(envelope_protected_bytea_typanalyze) { return protected_typanalyze(fcinfo, PlainType::kBytea); }
PGENV_FUNCTION(envelope_protected_jsonb_typanalyze) { return protected_typanalyze(fcinfo, PlainType::kJsonb); }
