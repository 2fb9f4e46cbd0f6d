// Key usage counters: envelope.key_usage_counts() behind the view envelope.key_usage,
// and envelope.key_usage_reset(). Not executable by PUBLIC.
#include "pg/guard.hpp"

extern "C" {
#include "access/htup_details.h"
#include "funcapi.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"
}

#include <vector>

#include "pg/audit.hpp"
#include "pg/shared_memory.hpp"

using namespace pg_envelope;

// key_usage_counts(OUT key_id integer, OUT version integer, OUT encrypts bigint,
//   OUT decrypts bigint, OUT denials bigint, OUT withheld bigint, OUT failures bigint,
//   OUT last_used timestamptz) RETURNS SETOF record: this database's counters since the
// server started (or key_usage_reset()).
PGENV_FUNCTION(envelope_key_usage_counts) {
  require_preloaded();
  std::vector<audit::UsageRow> rows;
  audit::for_each_usage([&rows](const audit::UsageRow& r) { rows.push_back(r); });
  auto* rsinfo = reinterpret_cast<ReturnSetInfo*>(fcinfo->resultinfo);
  pg_call([fcinfo] {
#if PG_VERSION_NUM >= 150000
    InitMaterializedSRF(fcinfo, 0);
#else
    SetSingleFuncCall(fcinfo, 0);
#endif
  });
  for (const audit::UsageRow& r : rows) {
    Datum values[8] = {Int32GetDatum(static_cast<std::int32_t>(r.key_id)),
                       Int32GetDatum(static_cast<std::int32_t>(r.version)),
                       Int64GetDatum(static_cast<std::int64_t>(r.counts[audit::kEncrypt])),
                       Int64GetDatum(static_cast<std::int64_t>(r.counts[audit::kDecrypt])),
                       Int64GetDatum(static_cast<std::int64_t>(r.counts[audit::kDenied] + r.counts[audit::kEncryptDenied])),
                       Int64GetDatum(static_cast<std::int64_t>(r.counts[audit::kWithheld])),
                       Int64GetDatum(static_cast<std::int64_t>(r.counts[audit::kFailure])),
                       TimestampTzGetDatum(r.last_used)};
    bool nulls[8] = {};
    nulls[7] = r.last_used == 0;
    pg_call([&] { tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls); });
  }
  return static_cast<Datum>(0);
}

// key_usage_reset() RETURNS void: zeroes this database's counters.
PGENV_FUNCTION(envelope_key_usage_reset) {
  require_preloaded();
  audit::usage_reset();
  PG_RETURN_VOID();
}
