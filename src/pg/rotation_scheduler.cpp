// Scheduled rotation: the background worker (see rotation_scheduler.hpp).
//
// Each key is handled in its own transaction, as the extension's owner (SET ROLE, as
// the session of a superuser would), through the same SQL functions an administrator
// calls (envelope.rotate_key, kek_status, rewrap_key, start_reencryption), with the
// search_path pinned and every name qualified (OwnerSpi). A failed rotation is
// recorded in the policy's last_error and retried after min(rotate_every, 10 minutes);
// a failed KEK check after envelope.kek_check_interval; neither stops the worker.
//
// Policies with `rewrap` are checked every envelope.kek_check_interval: the worker
// asks the KMS for the KEK's current version (envelope.kek_status) and, when a DEK is
// wrapped under an older one, re-wraps the key's DEKs (envelope.rewrap_key).
#include "pg/rotation_scheduler.hpp"

#include "pg/guard.hpp"

extern "C" {
#include "access/heapam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "utils/timestamp.h"
#include "catalog/pg_extension.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/backend_status.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
}

#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "pg/extension_objects.hpp"
#include "pg/owner_spi.hpp"

namespace pg_envelope::rotation_scheduler {

namespace {

char* databases_guc = nullptr;
int naptime_seconds = 60;
int kek_check_seconds = 3600;
constexpr const char* kKekCheckPrefix = "KEK version check: ";
constexpr int kMaxDatabases = 16;

std::vector<std::string> database_names() {
  std::vector<std::string> names;
  std::string all = databases_guc != nullptr ? databases_guc : "";
  std::size_t start = 0;
  while (start <= all.size()) {
    std::size_t comma = all.find(',', start);
    if (comma == std::string::npos) comma = all.size();
    std::string n = all.substr(start, comma - start);
    std::size_t b = n.find_first_not_of(" \t"), e = n.find_last_not_of(" \t");
    if (b != std::string::npos) names.push_back(n.substr(b, e - b + 1));
    start = comma + 1;
  }
  return names;
}

// Runs f in a transaction of its own; returns the error message when it failed (the
// transaction is then rolled back).
std::optional<std::string> in_transaction(const std::function<void()>& f) {
  pg_call([] {
    SetCurrentStatementStartTimestamp();
    StartTransactionCommand();
    PushActiveSnapshot(GetTransactionSnapshot());
  });
  try {
    f();
    pg_call([] {
      PopActiveSnapshot();
      CommitTransactionCommand();
    });
    return std::nullopt;
  } catch (const PgError& e) {
    ErrorData* d = e.data();
    std::string why = d != nullptr && d->message != nullptr ? d->message : "unknown error";
    pg_call([] { AbortCurrentTransaction(); });
    return why;
  } catch (const Error& e) {
    std::string why = e.what();
    pg_call([] { AbortCurrentTransaction(); });
    return why;
  }
}

struct Due {
  std::int32_t key_id;
  std::string name;
  bool reencrypt;
  bool rewrap;
};

// `retry`: the rotation itself failed, so it is tried again soon; otherwise (the
// re-encryption after a rotation) the next rotation stays when the policy says.
void record_failure(std::int32_t key_id, const std::string& why, bool retry = true) {
  (void)in_transaction([&] {
    OwnerSpi spi;
    spi.exec(retry ? "UPDATE envelope.rotation_policy SET last_run_at = pg_catalog.now(), last_error = $2, "
                     "next_rotation_at = pg_catalog.now() OPERATOR(pg_catalog.+) "
                     "LEAST(rotate_every, '10 minutes'::pg_catalog.interval) WHERE key_id OPERATOR(pg_catalog.=) $1"
                   : "UPDATE envelope.rotation_policy SET last_error = $2 WHERE key_id OPERATOR(pg_catalog.=) $1",
             {int4_param(static_cast<std::uint32_t>(key_id)), text_param(why)}, SPI_OK_UPDATE);
    spi.finish();
  });
  pg_call([key_id, &why] {
    ereport(LOG, (errmsg("pg_envelope scheduler: scheduled rotation of key id %d failed: %s", key_id, why.c_str())));
  });
}

// Asks the KMS whether the key's KEK has a newer version than its DEKs are wrapped
// under and, if so, re-wraps them; records what it found.
void check_kek(const Due& d) {
  std::string version;
  bool rewrapped = false;
  std::optional<std::string> why = in_transaction([&] {
    OwnerSpi as_admin(/*as_owner=*/false);
    as_admin.exec("SELECT COALESCE(kek_version, ''), COALESCE(data_keys_behind, 0)::pg_catalog.text "
                  "FROM envelope.kek_status($1)",
                  {text_param(d.name)}, SPI_OK_SELECT);
    version = as_admin.text_at(0, 1);
    rewrapped = as_admin.text_at(0, 2) != "0";
    if (rewrapped) as_admin.exec("SELECT envelope.rewrap_key($1)::pg_catalog.text", {text_param(d.name)}, SPI_OK_SELECT);
    as_admin.finish();
    OwnerSpi spi;
    spi.exec("UPDATE envelope.rotation_policy SET kek_checked_at = pg_catalog.now(), kek_version = NULLIF($2, ''), "
             "last_rewrapped_at = CASE WHEN $3 THEN pg_catalog.now() ELSE last_rewrapped_at END, "
             "last_error = CASE WHEN pg_catalog.starts_with(last_error, $4) THEN NULL ELSE last_error END "
             "WHERE key_id OPERATOR(pg_catalog.=) $1",
             {int4_param(static_cast<std::uint32_t>(d.key_id)), text_param(version), {BOOLOID, BoolGetDatum(rewrapped)},
              text_param(kKekCheckPrefix)},
             SPI_OK_UPDATE);
    spi.finish();
  });
  if (!why) return;
  std::string message = kKekCheckPrefix + *why;
  (void)in_transaction([&] {
    OwnerSpi spi;
    spi.exec("UPDATE envelope.rotation_policy SET kek_checked_at = pg_catalog.now(), last_error = $2 "
             "WHERE key_id OPERATOR(pg_catalog.=) $1",
             {int4_param(static_cast<std::uint32_t>(d.key_id)), text_param(message)}, SPI_OK_UPDATE);
    spi.finish();
  });
  pg_call([&d, &message] {
    ereport(LOG, (errmsg("pg_envelope scheduler: key id %d: %s", d.key_id, message.c_str())));
  });
}

// One pass over the due policies of this database.
void tick() {
  bool installed = false;
  Oid extowner = InvalidOid;
  bool owner_is_superuser = false;
  std::vector<Due> due, kek_due;
  std::optional<std::string> failed = in_transaction([&] {
    Oid ext = pg_call([] { return get_extension_oid("pg_envelope", true); });
    if (ext == InvalidOid) return;
    const ext::Objects& o = ext::objects();  // 55000 when the SQL version is not this library's
    extowner = o.extension_owner;
    owner_is_superuser = pg_call([extowner] { return superuser_arg(extowner); });
    Oid policy = pg_call([&o] { return get_relname_relid("rotation_policy", o.schema); });
    if (policy == InvalidOid) return;
    installed = true;
    OwnerSpi spi;
    spi.exec("SELECT p.key_id, k.name, p.reencrypt::pg_catalog.text, p.rewrap::pg_catalog.text "
             "FROM envelope.rotation_policy p JOIN envelope.key k ON k.key_id OPERATOR(pg_catalog.=) p.key_id "
             "WHERE p.next_rotation_at OPERATOR(pg_catalog.<=) pg_catalog.now() AND k.state OPERATOR(pg_catalog.=) 'active' "
             "ORDER BY p.next_rotation_at LIMIT 100",
             {}, SPI_OK_SELECT);
    for (std::uint64_t i = 0; i < SPI_processed; ++i)
      due.push_back({spi.int4_at(i, 1), spi.text_at(i, 2), spi.text_at(i, 3) == "true", spi.text_at(i, 4) == "true"});
    spi.exec("SELECT p.key_id, k.name FROM envelope.rotation_policy p "
             "JOIN envelope.key k ON k.key_id OPERATOR(pg_catalog.=) p.key_id "
             "WHERE p.rewrap AND k.state OPERATOR(pg_catalog.=) 'active' AND (p.kek_checked_at IS NULL OR "
             "p.kek_checked_at OPERATOR(pg_catalog.<=) (pg_catalog.now() OPERATOR(pg_catalog.-) "
             "pg_catalog.make_interval(secs => $1))) "
             "ORDER BY p.kek_checked_at NULLS FIRST LIMIT 100",
             {int4_param(static_cast<std::uint32_t>(kek_check_seconds))}, SPI_OK_SELECT);
    for (std::uint64_t i = 0; i < SPI_processed; ++i) kek_due.push_back({spi.int4_at(i, 1), spi.text_at(i, 2), false, true});
    spi.finish();
  });
  if (failed) {
    pg_call([&failed] { ereport(LOG, (errmsg("pg_envelope scheduler: %s", failed->c_str()))); });
    return;
  }
  if (!installed || (due.empty() && kek_due.empty())) return;
  // As the extension's owner, like SET ROLE (the worker's session user is the
  // bootstrap superuser).
  pg_call([extowner, owner_is_superuser] { SetCurrentRoleId(extowner, owner_is_superuser); });
  for (const Due& d : due) {
    std::optional<std::string> why = in_transaction([&d] {
      OwnerSpi as_admin(/*as_owner=*/false);
      as_admin.exec("SELECT envelope.rotate_key($1)::pg_catalog.text", {text_param(d.name)}, SPI_OK_SELECT);
      as_admin.finish();
      OwnerSpi spi;
      spi.exec("UPDATE envelope.rotation_policy SET last_rotated_at = pg_catalog.now(), last_run_at = pg_catalog.now(), "
               "last_error = NULL, next_rotation_at = pg_catalog.now() OPERATOR(pg_catalog.+) rotate_every "
               "WHERE key_id OPERATOR(pg_catalog.=) $1",
               {int4_param(static_cast<std::uint32_t>(d.key_id))}, SPI_OK_UPDATE);
      spi.finish();
    });
    if (why) {
      record_failure(d.key_id, *why);
      continue;
    }
    if (!d.reencrypt) continue;
    // Every column holding the key's values gets a background re-encryption (as the
    // extension's owner, who needs UPDATE on the table): a protected column brings its
    // own binding; an encrypted_* column is re-encrypted with the context_column of its
    // last run by hand (CALL envelope.reencrypt or start_reencryption), and skipped,
    // with last_error saying so, when it never had one.
    struct Target {
      std::string rel, col, context;
      bool known;
    };
    std::vector<Target> targets;
    why = in_transaction([&d, &targets] {
      OwnerSpi as_admin(/*as_owner=*/false);
      as_admin.exec("SELECT DISTINCT kc.relation::pg_catalog.oid::pg_catalog.text, kc.column_name::pg_catalog.text, "
                    "(t.typname OPERATOR(pg_catalog.~~) 'protected\\_%')::pg_catalog.text "
                    "FROM envelope.key_columns($1) kc "
                    "JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) kc.relation "
                    "AND a.attname OPERATOR(pg_catalog.=) kc.column_name "
                    "JOIN pg_catalog.pg_type t ON t.oid OPERATOR(pg_catalog.=) a.atttypid",
                    {text_param(d.name)}, SPI_OK_SELECT);
      for (std::uint64_t i = 0; i < SPI_processed; ++i)
        targets.push_back({as_admin.text_at(i, 1), as_admin.text_at(i, 2), "", as_admin.text_at(i, 3) == "true"});
      as_admin.finish();
      OwnerSpi spi;
      for (Target& t : targets) {
        if (t.known) continue;
        spi.exec("SELECT COALESCE(context_column::pg_catalog.text, '') FROM envelope.reencryption "
                 "WHERE tbl OPERATOR(pg_catalog.=) $1::pg_catalog.oid AND col OPERATOR(pg_catalog.=) $2::pg_catalog.name "
                 "AND target_key IS NULL",
                 {text_param(t.rel), text_param(t.col)}, SPI_OK_SELECT);
        if (SPI_processed == 1) {
          t.known = true;
          t.context = spi.text_at(0, 1);
        }
      }
      spi.finish();
    });
    std::string skipped;
    for (const Target& t : targets) {
      if (why) break;
      if (!t.known) {
        skipped += (skipped.empty() ? "" : ", ") + t.col + " of relation " + t.rel;
        continue;
      }
      why = in_transaction([&t] {
        OwnerSpi as_admin(/*as_owner=*/false);
        as_admin.exec("SELECT envelope.start_reencryption($1::pg_catalog.oid::pg_catalog.regclass, $2::pg_catalog.name, "
                      "NULLIF($3, '')::pg_catalog.name)::pg_catalog.text",
                      {text_param(t.rel), text_param(t.col), text_param(t.context)}, SPI_OK_SELECT);
        as_admin.finish();
      });
    }
    if (!why && !skipped.empty())
      why = "not re-encrypted (never re-encrypted by hand, so its context_column is unknown): column " + skipped;
    if (why) record_failure(d.key_id, "re-encryption after rotation: " + *why, /*retry=*/false);
  }
  for (const Due& d : kek_due) check_kek(d);
  pg_call([] { SetCurrentRoleId(InvalidOid, false); });
}

void worker_main(const char* dbname) {
  pg_call([dbname] { BackgroundWorkerInitializeConnection(dbname, nullptr, 0); });
  pgstat_report_appname("pg_envelope scheduler");
  for (;;) {
    pg_call([] {
      (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, naptime_seconds * 1000L,
                      PG_WAIT_EXTENSION);
      ResetLatch(MyLatch);
      CHECK_FOR_INTERRUPTS();
      if (ConfigReloadPending) {
        ConfigReloadPending = false;
        ProcessConfigFile(PGC_SIGHUP);
      }
    });
    pg_call([] { pgstat_report_activity(STATE_RUNNING, "pg_envelope scheduled rotation"); });
    tick();
    pg_call([] {
      pgstat_report_activity(STATE_IDLE, nullptr);
      pgstat_report_stat(true);
    });
  }
}

// Which of `names` are databases that accept connections: pg_database is a shared
// catalog, readable by the launcher, which is connected to no database.
void find_databases(const char* const* names, int n, bool* exists) {
  pg_call([names, n, exists] {
    for (int i = 0; i < n; ++i) exists[i] = false;
    StartTransactionCommand();
    PushActiveSnapshot(GetTransactionSnapshot());
    Relation rel = table_open(DatabaseRelationId, AccessShareLock);
    TableScanDesc scan = table_beginscan_catalog(rel, 0, nullptr);
    HeapTuple tuple;
    while ((tuple = heap_getnext(scan, ForwardScanDirection)) != nullptr) {
      auto* db = reinterpret_cast<Form_pg_database>(GETSTRUCT(tuple));
      for (int i = 0; i < n; ++i)
        if (db->datallowconn && strcmp(NameStr(db->datname), names[i]) == 0) exists[i] = true;
    }
    table_endscan(scan);
    table_close(rel, AccessShareLock);
    PopActiveSnapshot();
    CommitTransactionCommand();
  });
}

// The launcher: starts the scheduler of each database of envelope.scheduler_databases
// that exists, and starts it again should it stop; a database that does not exist (or
// was dropped) is reported once in the server log and looked for again every
// envelope.scheduler_naptime, instead of a worker failing to connect every 10 seconds
// for as long as the server runs.
void launcher_main() {
  pg_call([] { BackgroundWorkerInitializeConnection(nullptr, nullptr, 0); });
  pgstat_report_appname("pg_envelope scheduler launcher");
  std::vector<std::string> names = database_names();
  if (names.size() > static_cast<std::size_t>(kMaxDatabases)) names.resize(kMaxDatabases);
  const char* cnames[kMaxDatabases];
  bool exists[kMaxDatabases];
  bool reported[kMaxDatabases] = {};
  BackgroundWorkerHandle* handles[kMaxDatabases] = {};
  TimestampTz started_at[kMaxDatabases] = {};
  int n = static_cast<int>(names.size());
  for (int i = 0; i < n; ++i) cnames[i] = names[i].c_str();
  for (;;) {
    find_databases(cnames, n, exists);
    for (int i = 0; i < n; ++i) {
      if (!exists[i]) {
        if (!reported[i]) {
          reported[i] = true;
          const char* name = cnames[i];
          pg_call([name] {
            ereport(LOG, (errmsg("pg_envelope: database \"%s\" of envelope.scheduler_databases does not exist or does "
                                 "not allow connections: no scheduled rotation runs there",
                                 name),
                          errhint("It is looked for again every envelope.scheduler_naptime.")));
          });
        }
        continue;
      }
      reported[i] = false;
      if (handles[i] != nullptr) {
        pid_t pid;
        BackgroundWorkerHandle* h = handles[i];
        BgwHandleStatus st = pg_call([h, &pid] { return GetBackgroundWorkerPid(h, &pid); });
        if (st == BGWH_STARTED || st == BGWH_NOT_YET_STARTED) continue;
        handles[i] = nullptr;
      }
      if (names[i].size() >= NAMEDATALEN) continue;
      // A worker that stopped soon after it started is started again no sooner than
      // 10 seconds after (as bgw_restart_time would), never in a tight loop.
      TimestampTz now = GetCurrentTimestamp();
      if (started_at[i] != 0 && now - started_at[i] < 10 * USECS_PER_SEC) continue;
      started_at[i] = now;
      BackgroundWorker w{};
      snprintf(w.bgw_name, BGW_MAXLEN, "pg_envelope scheduler for database %s", cnames[i]);
      snprintf(w.bgw_type, BGW_MAXLEN, "pg_envelope scheduler");
      w.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
      w.bgw_start_time = BgWorkerStart_RecoveryFinished;
      w.bgw_restart_time = BGW_NEVER_RESTART;  // the launcher starts it again
      w.bgw_notify_pid = MyProcPid;
      snprintf(w.bgw_library_name, BGW_MAXLEN, "pg_envelope");
      snprintf(w.bgw_function_name, BGW_MAXLEN, "envelope_scheduler_main");
      std::memcpy(w.bgw_extra, cnames[i], names[i].size() + 1);
      BackgroundWorkerHandle** slot = &handles[i];
      bool ok = pg_call([&w, slot] { return RegisterDynamicBackgroundWorker(&w, slot); });
      if (!ok) handles[i] = nullptr;  // no free worker slot: tried again at the next round
    }
    pg_call([] {
      (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, naptime_seconds * 1000L,
                      PG_WAIT_EXTENSION);
      ResetLatch(MyLatch);
      CHECK_FOR_INTERRUPTS();
      if (ConfigReloadPending) {
        ConfigReloadPending = false;
        ProcessConfigFile(PGC_SIGHUP);
      }
    });
  }
}

}  // namespace

void define_gucs() {
  DefineCustomStringVariable("envelope.scheduler_databases",
                             "Databases in which the rotation scheduler carries out the keys' rotation policies.",
                             "A comma-separated list of database names; read at server start.", &databases_guc, "",
                             PGC_POSTMASTER, GUC_SUPERUSER_ONLY, nullptr, nullptr, nullptr);
  DefineCustomIntVariable("envelope.scheduler_naptime", "How often the rotation scheduler looks for due rotations.",
                          nullptr, &naptime_seconds, 60, 1, 86400, PGC_SIGHUP, GUC_UNIT_S, nullptr, nullptr, nullptr);
  DefineCustomIntVariable("envelope.kek_check_interval",
                          "How often the rotation scheduler asks the KMS for a new KEK version (policies with rewrap).",
                          nullptr, &kek_check_seconds, 3600, 1, 30 * 86400, PGC_SIGHUP, GUC_UNIT_S, nullptr, nullptr,
                          nullptr);
}

void register_workers() {
  if (database_names().empty()) return;
  BackgroundWorker w{};
  snprintf(w.bgw_name, BGW_MAXLEN, "pg_envelope scheduler launcher");
  snprintf(w.bgw_type, BGW_MAXLEN, "pg_envelope scheduler launcher");
  w.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
  w.bgw_start_time = BgWorkerStart_RecoveryFinished;
  w.bgw_restart_time = 10;
  snprintf(w.bgw_library_name, BGW_MAXLEN, "pg_envelope");
  snprintf(w.bgw_function_name, BGW_MAXLEN, "envelope_scheduler_launcher_main");
  pg_call([&w] { RegisterBackgroundWorker(&w); });
}

bool runs_in_current_database() {
  const char* db = pg_call([] { return get_database_name(MyDatabaseId); });
  if (db == nullptr) return false;
  for (const std::string& n : database_names())
    if (n == db) return true;
  return false;
}

}  // namespace pg_envelope::rotation_scheduler

extern "C" {
PGDLLEXPORT void envelope_scheduler_main(Datum arg);
PGDLLEXPORT void envelope_scheduler_launcher_main(Datum arg);
}

void envelope_scheduler_launcher_main(Datum) {
  pqsignal(SIGTERM, die);
  pqsignal(SIGHUP, SignalHandlerForConfigReload);
  BackgroundWorkerUnblockSignals();
  pg_envelope::guarded_hook(ERROR, "rotation scheduler launcher", [] { pg_envelope::rotation_scheduler::launcher_main(); });
}

void envelope_scheduler_main(Datum) {
  pqsignal(SIGTERM, die);
  pqsignal(SIGHUP, SignalHandlerForConfigReload);
  BackgroundWorkerUnblockSignals();
  char dbname[NAMEDATALEN];
  std::memcpy(dbname, MyBgworkerEntry->bgw_extra, NAMEDATALEN);
  dbname[NAMEDATALEN - 1] = '\0';
  pg_envelope::guarded_hook(ERROR, "rotation scheduler", [&dbname] { pg_envelope::rotation_scheduler::worker_main(dbname); });
}
