// Keys on Citus: every change of the key tables (envelope.kms, envelope.key,
// envelope.data_key, envelope.key_grant) made on the coordinator is applied on every
// worker inside the coordinator's transaction.
//
// The key tables' trigger calls changed() for each row (and truncated() for a
// TRUNCATE). On the coordinator it sends the row, as JSON, to every worker with
// metadata through Citus's own transaction connections (as the Citus extension
// owner): `SELECT envelope.apply_key_changes(...)`, which Citus prepares on the
// workers and commits with the coordinator's transaction (two-phase commit), so a
// key change is on every node or on none. On a worker, the same trigger refuses a
// key change that did not come from the coordinator (0A000): keys made on a worker
// would diverge from the coordinator's.
//
// Citus is looked up in the running server only (dlopen RTLD_NOLOAD of
// $libdir/citus.so): pg_envelope neither links against nor loads it. Without Citus,
// or in a database without the citus extension, all of this does nothing.
#pragma once

#include "pg_includes.hpp"

extern "C" {
#include "commands/trigger.h"
}

#include <cstdint>

namespace pg_envelope::citus_sync {

enum class Role { kNone, kCoordinator, kWorker };

// This database's place in a Citus cluster.
Role role();

// Whether `relid` is a Citus distributed or reference table (its rows are in shards;
// the local relation is an empty shell). False without Citus.
bool is_citus_table(Oid relid);

// From the key tables' trigger, for a row change and a TRUNCATE.
void changed(Relation rel, TriggerData* td);
void truncated();

// envelope.apply_key_changes(jsonb) on a worker: applies what a coordinator sent.
void apply(const char* changes_json);

// envelope.citus_sync_keys() on the coordinator: makes every worker's key tables
// equal to the coordinator's (a worker added later, a repair). Returns how many
// workers were sent the tables.
std::int64_t sync_all();

}  // namespace pg_envelope::citus_sync
