// envelope.cache_flush(), cache_stats() (behind the envelope.stats view) and
// stats_reset(); cache_evict() is with the key functions.
#include "pg/guard.hpp"

extern "C" {
#include "access/htup_details.h"
#include "funcapi.h"
#include "utils/timestamp.h"
}

#include "pg/dek_resolver.hpp"
#include "pg/shared_credentials.hpp"
#include "pg/shared_dek_cache.hpp"
#include "pg/key_change_commit.hpp"
#include "pg/kms_stats.hpp"
#include "pg/shared_memory.hpp"

using namespace pg_envelope;

// cache_flush() RETURNS void: every backend stops using its cached DEKs before this
// returns (the key generation moves), and the shared cache is zeroed.
PGENV_FUNCTION(envelope_cache_flush) {
  require_preloaded();
  invalidate_keys_at_commit();
  shared_dek_cache::flush();
  dek_resolver::forget_all();
  PG_RETURN_VOID();
}

// cache_stats() RETURNS record: the counters of the shared DEK cache and of KMS calls.
PGENV_FUNCTION(envelope_cache_stats) {
  require_preloaded();
  shared_dek_cache::Stats s = shared_dek_cache::stats();
  kms_stats::Counters k = kms_stats::read();
  TupleDesc desc;
  if (pg_call([&] { return get_call_result_type(fcinfo, nullptr, &desc); }) != TYPEFUNC_COMPOSITE)
    throw Error(sqlstate::kInternalError, "cache_stats must return a record");
  desc = pg_call([desc] { return BlessTupleDesc(desc); });
  constexpr int kColumns = 16;
  if (desc->natts != kColumns) throw Error(sqlstate::kInternalError, "cache_stats returns the wrong columns");
  double avg = k.calls > 0 ? k.time_ms / static_cast<double>(k.calls) : 0.0;
  Datum values[kColumns] = {Int64GetDatum(s.capacity),   Int64GetDatum(s.entries),     Int64GetDatum(s.hits),
                            Int64GetDatum(s.misses),     Int64GetDatum(s.stores),      Int64GetDatum(s.evictions),
                            Int64GetDatum(k.calls),      Int64GetDatum(k.unwraps),     Int64GetDatum(k.errors),
                            Float8GetDatum(k.time_ms),   Float8GetDatum(avg),          Float8GetDatum(k.max_ms),
                            Int64GetDatum(s.flushes),    Int64GetDatum(s.waits),       BoolGetDatum(s.dump_excluded),
                            TimestampTzGetDatum(s.reset_at)};
  bool nulls[kColumns] = {};
  nulls[10] = k.calls == 0;  // no average of nothing
  HeapTuple tuple = pg_call([&] { return heap_form_tuple(desc, values, nulls); });
  return HeapTupleGetDatum(tuple);
}

// stats_reset() RETURNS void: zeroes the counters of envelope.stats (not the cache).
PGENV_FUNCTION(envelope_stats_reset) {
  require_preloaded();
  shared_dek_cache::reset_stats();
  kms_stats::reset();
  PG_RETURN_VOID();
}

// credential_cache_stats() RETURNS record: the counters of the server-wide credential
// store (never a credential: counts only).
PGENV_FUNCTION(envelope_credential_cache_stats) {
  require_preloaded();
  shared_credentials::Stats s = shared_credentials::stats();
  TupleDesc desc;
  if (pg_call([&] { return get_call_result_type(fcinfo, nullptr, &desc); }) != TYPEFUNC_COMPOSITE)
    throw Error(sqlstate::kInternalError, "credential_cache_stats must return a record");
  desc = pg_call([desc] { return BlessTupleDesc(desc); });
  constexpr int kColumns = 9;
  if (desc->natts != kColumns)
    throw Error(sqlstate::kInternalError, "credential_cache_stats returns the wrong columns");
  Datum values[kColumns] = {Int64GetDatum(s.capacity), Int64GetDatum(s.entries),       Int64GetDatum(s.hits),
                            Int64GetDatum(s.fetches),  Int64GetDatum(s.waits),         Int64GetDatum(s.failures),
                            Int64GetDatum(s.invalidations), Int64GetDatum(s.not_shared), BoolGetDatum(s.dump_excluded)};
  bool nulls[kColumns] = {};
  HeapTuple tuple = pg_call([&] { return heap_form_tuple(desc, values, nulls); });
  return HeapTupleGetDatum(tuple);
}
