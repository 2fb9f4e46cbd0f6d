// Rotation policies (docs/lifecycle.md): envelope.set_rotation_policy() and
// envelope.clear_rotation_policy(), for the key's administrators; the scheduler
// (src/pg/rotation_scheduler.cpp) carries them out; envelope.rotation_schedule shows
// them.
#include "pg/guard.hpp"

extern "C" {
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/timestamp.h"
}

#include "pg/key_access.hpp"
#include "pg/key_admin_sql.hpp"
#include "pg/key_catalog.hpp"
#include "pg/key_errors.hpp"
#include "pg/owner_spi.hpp"
#include "pg/rotation_scheduler.hpp"
#include "pg/shared_memory.hpp"
#include "pg/sql_args.hpp"

using namespace pg_envelope;

namespace {

KeyRecord administered_key(FunctionCallInfo fcinfo) {
  std::string name = text_arg(fcinfo, 0, "key name");
  std::optional<KeyRecord> key = key_admin_sql::find_key(name, /*for_update=*/true);
  if (!key) throw_no_such_key("envelope.keys lists the keys of this database.");
  key_access::require(key->name, key_access::kAdmin);
  return std::move(*key);
}

}  // namespace

// set_rotation_policy(key text, rotate_every interval, reencrypt boolean DEFAULT false,
//                     rewrap boolean DEFAULT false) RETURNS timestamptz: the key's DEK is
// rotated every `rotate_every` (the first time `rotate_every` from now, or from its
// last scheduled rotation); `rewrap`: the scheduler asks the KMS every
// envelope.kek_check_interval for the KEK's current version and re-wraps the key's
// DEKs when it is newer than theirs (not for the local KMS, which has no KEK
// versions: 22023); `reencrypt`: every column holding the key's values is re-encrypted
// in the background after each rotation. Returns the next rotation.
PGENV_FUNCTION(envelope_set_rotation_policy) {
  require_preloaded();
  require_writable("set a rotation policy");
  KeyRecord key = administered_key(fcinfo);
  if (key.destroyed) throw_key_destroyed(key.name);
  if (PG_ARGISNULL(1)) throw Error(sqlstate::kNullValueNotAllowed, "rotate_every must not be null");
  Interval* every = PG_GETARG_INTERVAL_P(1);
  bool reencrypt = PG_ARGISNULL(2) ? false : PG_GETARG_BOOL(2);
  bool rewrap = PG_ARGISNULL(3) ? false : PG_GETARG_BOOL(3);
  double seconds = static_cast<double>(every->time) / USECS_PER_SEC + every->day * 86400.0 + every->month * 30.0 * 86400.0;
  if (seconds < 1.0)
    throw Error(sqlstate::kInvalidParameterValue, "rotate_every must be at least one second");
  if (rewrap && key.kms == "local")
    throw Error(sqlstate::kInvalidParameterValue, "the local KMS has no KEK versions to re-wrap under",
                "rewrap => true re-wraps a key's data keys when its KMS reports a new KEK version; the local "
                "master key has none.",
                "Use rewrap => false for keys of the local KMS.");
  Oid set_by = pg_call([] { return GetUserId(); });  // before OwnerSpi switches to the owner
  OwnerSpi spi;
  spi.exec("INSERT INTO envelope.rotation_policy (key_id, rotate_every, reencrypt, rewrap, next_rotation_at, set_by) "
           "VALUES ($1, $2, $3, $4, pg_catalog.now() OPERATOR(pg_catalog.+) $2, $5) "
           "ON CONFLICT (key_id) DO UPDATE SET rotate_every = EXCLUDED.rotate_every, reencrypt = EXCLUDED.reencrypt, "
           "rewrap = EXCLUDED.rewrap, set_by = EXCLUDED.set_by, last_error = NULL, kek_checked_at = NULL, "
           "next_rotation_at = COALESCE(envelope.rotation_policy.last_rotated_at, pg_catalog.now()) "
           "OPERATOR(pg_catalog.+) EXCLUDED.rotate_every",
           {int4_param(key.key_id), {INTERVALOID, PointerGetDatum(every)}, {BOOLOID, BoolGetDatum(reencrypt)},
            {BOOLOID, BoolGetDatum(rewrap)}, oid_param(set_by)},
           SPI_OK_INSERT);
  spi.exec("SELECT next_rotation_at FROM envelope.rotation_policy WHERE key_id OPERATOR(pg_catalog.=) $1",
           {int4_param(key.key_id)}, SPI_OK_SELECT);
  bool isnull = false;
  Datum next = pg_call([&isnull] { return SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull); });
  spi.finish();
  if (!rotation_scheduler::runs_in_current_database())
    pg_call([] {
      ereport(WARNING, (errmsg("pg_envelope: no rotation scheduler runs in this database"),
                        errhint("Add the database to envelope.scheduler_databases and restart the server.")));
    });
  PG_RETURN_DATUM(next);
}

// clear_rotation_policy(key text) RETURNS boolean: no more scheduled rotation; true
// when the key had a policy.
PGENV_FUNCTION(envelope_clear_rotation_policy) {
  require_preloaded();
  require_writable("clear a rotation policy");
  KeyRecord key = administered_key(fcinfo);
  OwnerSpi spi;
  std::uint64_t n = spi.exec("DELETE FROM envelope.rotation_policy WHERE key_id OPERATOR(pg_catalog.=) $1",
                             {int4_param(key.key_id)}, SPI_OK_DELETE);
  spi.finish();
  PG_RETURN_BOOL(n > 0);
}
