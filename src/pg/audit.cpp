// The audit trail and key usage counters (see audit.hpp).
#include "guard.hpp"

extern "C" {
#include "access/parallel.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "common/ip.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "tcop/tcopprot.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/backend_status.h"
#include "utils/guc.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"
}

#include <algorithm>
#include <cstring>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "audit.hpp"
#include "extension_objects.hpp"
#include "owner_spi.hpp"

namespace pg_envelope::audit {

namespace {

// --- settings -------------------------------------------------------------------

enum Mode { kOff = 0, kLog = 1, kTable = 2, kBoth = 3 };
const struct config_enum_entry mode_options[] = {
    {"off", kOff, false}, {"log", kLog, false}, {"table", kTable, false}, {"all", kBoth, false}, {nullptr, 0, false}};
int mode = kOff;
int retention_days = 0;
int usage_entries = 8192;
int queue_records = 1024;
constexpr int kQueues = 4;  // databases with an audit worker at a time

const char* const kEventNames[kEventCount] = {"decrypt", "decrypt_denied", "withheld", "decrypt_failed", "encrypt",
                                              "encrypt_denied"};

// --- shared memory --------------------------------------------------------------

// One audit record, fixed size (strings truncated, always NUL-terminated).
struct Record {
  std::int64_t statement_at;
  std::int64_t query_id;
  std::uint64_t count;
  Oid db;
  std::int32_t pid;
  std::int32_t version;
  std::uint32_t protection;
  char event[16];
  char key[128];
  char session_user_name[NAMEDATALEN];
  char current_user_name[NAMEDATALEN];
  char application[64];
  char client[64];
  char detail[192];
  char object[192];  // the protected column, when known
  bool logged;       // also written to the server log by its backend (envelope.audit = all)
};

struct Queue {
  Oid db;
  pid_t worker_pid;
  bool starting;
  TimestampTz starting_since;
  Latch* latch;
  std::uint64_t head, tail;  // records [tail, head) are waiting
};

// The identity (db, key_id, version) is written under the lock held exclusively; the
// counters are atomics, added to under the lock held shared, so that backends counting
// key versions already in the table never wait for each other.
struct UsageSlot {
  Oid db;  // InvalidOid: free
  std::uint32_t key_id, version;
  pg_atomic_uint64 counts[kEventCount];
  pg_atomic_uint64 last_used;  // TimestampTz
};
// How far a key version's slot may be from its hash position: lookups stay O(1) when
// the table is full (the counts that find no slot are added to usage_overflow).
constexpr int kUsageProbes = 32;

struct Shared {
  LWLock* lock;
  pg_atomic_uint64 usage_overflow;
  Queue queues[kQueues];
  // followed by Record[kQueues * queue_records], then UsageSlot[usage_entries]
};

Shared* shared = nullptr;
Record* records = nullptr;
UsageSlot* usage = nullptr;

std::size_t records_offset() { return MAXALIGN(sizeof(Shared)); }
std::size_t usage_offset() {
  return records_offset() + MAXALIGN(sizeof(Record) * static_cast<std::size_t>(kQueues) * queue_records);
}

void copy_str(char* dst, std::size_t cap, std::string_view s) {
  std::size_t n = std::min(cap - 1, s.size());
  // Never cut a multibyte character in half.
  while (n > 0 && n < s.size() && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  std::memcpy(dst, s.data(), n);
  dst[n] = '\0';
}

// --- backend-local counting ------------------------------------------------------

struct AggKey {
  std::uint32_t key_id, version, protection;
  Oid user;
  std::uint8_t event;
  bool operator==(const AggKey& o) const noexcept {
    return key_id == o.key_id && version == o.version && protection == o.protection && user == o.user &&
           event == o.event;
  }
};
struct AggKeyHash {
  std::size_t operator()(const AggKey& k) const noexcept {
    std::uint64_t h = (static_cast<std::uint64_t>(k.key_id) << 32) ^ k.version;
    h ^= (static_cast<std::uint64_t>(k.protection) << 17) ^ (static_cast<std::uint64_t>(k.user) << 7) ^ k.event;
    return std::hash<std::uint64_t>()(h);
  }
};
struct Agg {
  AggKey k;
  std::string key_name;
  std::string user_name;  // of k.user, looked up when the entry was made
  std::string object;     // the protected column, when the audit trail is on
  std::uint64_t count;
};

std::vector<Agg> aggs;
std::vector<std::uint64_t> agg_counts;  // aggs[i]'s count while counting (small: stays in the CPU cache)
std::uint64_t agg_epoch = 1;            // moves whenever aggs is emptied (see note(CachedDek&))
// aggs' index by key: open addressing (linear probing, at most half full), so that a
// statement that uses 100,000 key versions makes no allocation per version and its
// flush empties the index in one pass (a node-based map allocated and freed a node
// per version, every statement).
class AggIndex {
 public:
  // The index of `k` in aggs, or SIZE_MAX.
  std::size_t find(const AggKey& k) const noexcept {
    if (used_ == 0) return SIZE_MAX;
    for (std::size_t i = home(k);; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.at == SIZE_MAX) return SIZE_MAX;
      if (s.k == k) return s.at;
    }
  }
  void put(const AggKey& k, std::size_t at) {
    if ((used_ + 1) * 2 > slots_.size()) grow();
    std::size_t i = home(k);
    while (slots_[i].at != SIZE_MAX && !(slots_[i].k == k)) i = (i + 1) & mask_;
    if (slots_[i].at == SIZE_MAX) {
      ++used_;
      filled_.push_back(i);
    }
    slots_[i] = Slot{k, at};
  }
  // Frees the slots in use only: a table that grew for one statement of 100,000 key
  // versions is not swept whole at the end of every later statement.
  void clear() noexcept {
    for (std::size_t i : filled_) slots_[i] = Slot{};
    filled_.clear();
    used_ = 0;
  }

 private:
  struct Slot {
    AggKey k{};
    std::size_t at = SIZE_MAX;  // SIZE_MAX: free
  };
  // AggKeyHash keeps the key id in the high bits (a prime-sized node map takes it
  // modulo); mixed here, so that the low bits a power-of-two table uses depend on it.
  std::size_t home(const AggKey& k) const noexcept {
    std::uint64_t h = AggKeyHash()(k);
    h ^= h >> 33;
    h *= 0xFF51AFD7ED558CCDull;
    h ^= h >> 33;
    return static_cast<std::size_t>(h) & mask_;
  }
  void grow() {
    std::vector<Slot> old;
    old.swap(slots_);
    slots_.assign(old.empty() ? 64 : old.size() * 2, Slot{});
    mask_ = slots_.size() - 1;
    used_ = 0;
    filled_.clear();
    for (const Slot& s : old)
      if (s.at != SIZE_MAX) put(s.k, s.at);
  }
  std::vector<Slot> slots_;
  std::vector<std::size_t> filled_;  // the slots in use
  std::size_t mask_ = 0;
  std::size_t used_ = 0;
};
AggIndex agg_index;
std::size_t last_agg = SIZE_MAX;
Oid agg_user = InvalidOid;        // the role whose name agg_user_name is, in this statement
std::string agg_user_name;
std::int64_t agg_statement = 0;
std::int64_t agg_query_id = 0;
std::uint32_t current_protection = 0;
std::vector<Record> pending_lifecycle;
std::vector<Record> pending_denials;  // emitted at the end of the transaction, whatever its outcome
bool warned_standby = false;
bool warned_queue = false;
std::unordered_map<std::uint32_t, std::string> column_names;  // protection id -> "tbl.col"
Oid session_user_cached = InvalidOid;
std::string session_user_name_cached;

bool preloaded() { return shared != nullptr; }

std::int64_t query_id() {
#if PG_VERSION_NUM >= 140000
  return static_cast<std::int64_t>(pgstat_get_my_query_id());
#else
  return 0;
#endif
}

std::string role_name_of(Oid role) {
  const char* n = pg_call([role] { return GetUserNameFromId(role, true); });
  return n != nullptr ? n : "?";
}

// The session user's name, looked up when it changes (never while aborting: the
// entries that are flushed then were made before).
const std::string& session_user_name() {
  Oid su = GetSessionUserId();
  if (su != session_user_cached) {
    session_user_name_cached = role_name_of(su);
    session_user_cached = su;
  }
  return session_user_name_cached;
}

// The client's address as the server log shows it ("[local]" for a unix socket),
// found once per backend.
const std::string& client_address() {
  static bool known = false;
  static std::string address;
  if (known) return address;
  known = true;
  if (MyBEEntry == nullptr || MyBEEntry->st_clientaddr.salen == 0) return address;
  const SockAddr& a = MyBEEntry->st_clientaddr;
  if (a.addr.ss_family == AF_UNIX) return address = "[local]";
  char host[NI_MAXHOST];
  int rc = pg_getnameinfo_all(&a.addr, a.salen, host, sizeof host, nullptr, 0, NI_NUMERICHOST);
  if (rc == 0) address = host;
  return address;
}

// The session's PID: a parallel worker records its leader's (its lock group leader), so
// that the records of one parallel statement share PID and statement time.
int session_pid() {
  if (IsParallelWorker() && MyProc != nullptr && MyProc->lockGroupLeader != nullptr) return MyProc->lockGroupLeader->pid;
  return MyProcPid;
}

void fill_session(Record& r, const std::string& user_name) {
  r.db = MyDatabaseId;
  r.pid = session_pid();
  copy_str(r.session_user_name, sizeof r.session_user_name, session_user_name_cached);
  copy_str(r.current_user_name, sizeof r.current_user_name, user_name);
  copy_str(r.application, sizeof r.application, application_name != nullptr ? application_name : "");
  copy_str(r.client, sizeof r.client, client_address());
}

// "schema.table.column" of a protected column, looked up once per backend (not while
// aborting: the table sink's worker fills it in then).
std::string column_name(std::uint32_t protection, bool may_look_up) {
  if (protection == 0) return "";
  if (auto it = column_names.find(protection); it != column_names.end()) return it->second;
  if (!may_look_up) return "";
  std::string name;
  OwnerSpi spi;
  if (spi.exec("SELECT pg_catalog.format('%s.%I', p.tbl::pg_catalog.regclass, p.col) "
               "FROM envelope.protected_column p WHERE p.protection_id OPERATOR(pg_catalog.=) $1",
               {{INT8OID, Int64GetDatum(protection)}}, SPI_OK_SELECT) == 1)
    name = spi.text_at(0, 1);
  spi.finish();
  column_names[protection] = name;
  return name;
}

// The pgaudit-style line: AUDIT: ENVELOPE,<event>,<key>,<version>,<object>,<count>,
// <session user>,<current user>,<application>,<client>,<database oid>,<pid>,
// <statement start>,<query id>,<detail>; fields quoted as in CSV when needed.
std::string csv(std::string_view s) {
  if (s.find_first_of(",\"\n\r") == std::string_view::npos) return std::string(s);
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + '"';
}

void log_record(const Record& r) {
  std::string object = r.object;
  std::string line = "AUDIT: ENVELOPE," + csv(r.event) + "," + csv(r.key) + "," + std::to_string(r.version) + "," +
                     csv(object) + "," + std::to_string(r.count) + "," + csv(r.session_user_name) + "," +
                     csv(r.current_user_name) + "," + csv(r.application) + "," + csv(r.client) + "," +
                     std::to_string(r.db) + "," + std::to_string(r.pid) + "," +
                     std::string(timestamptz_to_str(r.statement_at)) + "," + std::to_string(r.query_id) + "," +
                     csv(r.detail);
  pg_call([&line] {
    ereport(LOG, (errmsg_internal("%s", line.c_str()), errhidestmt(true), errhidecontext(true)));
  });
}

void start_worker(Oid db);

// Puts records into this database's queue for the worker; false when the queue is
// full or none is free (the caller logs them instead).
bool enqueue(const Record* recs, std::size_t n, bool may_start_worker) {
  if (n == 0) return true;
  bool ok = false, need_worker = false;
  Latch* latch = nullptr;
  pg_call([] { LWLockAcquire(shared->lock, LW_EXCLUSIVE); });
  Queue* q = nullptr;
  for (Queue& c : shared->queues)
    if (c.db == MyDatabaseId) q = &c;
  if (q == nullptr)
    for (Queue& c : shared->queues)
      if (c.db == InvalidOid || (c.head == c.tail && c.worker_pid == 0 && !c.starting)) {
        q = &c;
        q->db = MyDatabaseId;
        q->head = q->tail = 0;
        q->worker_pid = 0;
        q->starting = false;
        q->latch = nullptr;
        break;
      }
  if (q != nullptr && q->head - q->tail + n <= static_cast<std::uint64_t>(queue_records)) {
    std::size_t qi = static_cast<std::size_t>(q - shared->queues);
    for (std::size_t i = 0; i < n; ++i)
      records[qi * queue_records + (q->head + i) % queue_records] = recs[i];
    q->head += n;
    ok = true;
    TimestampTz now = GetCurrentTimestamp();
    if (q->worker_pid == 0 && (!q->starting || now - q->starting_since > 10 * USECS_PER_SEC) && may_start_worker) {
      q->starting = true;
      q->starting_since = now;
      need_worker = true;
    }
    latch = q->latch;
  }
  LWLockRelease(shared->lock);
  if (latch != nullptr) SetLatch(latch);
  if (need_worker) start_worker(MyDatabaseId);
  return ok;
}

void emit(const std::vector<Record>& recs, bool at_abort) {
  if (recs.empty()) return;
  bool to_log = (mode & kLog) != 0;
  bool to_table = (mode & kTable) != 0;
  if (to_table && RecoveryInProgress()) {
    to_table = false;
    to_log = true;
    if (!warned_standby) {
      warned_standby = true;
      pg_call([] {
        ereport(WARNING, (errmsg("pg_envelope: this server is a standby: its audit records go to the server log"),
                          errdetail("envelope.audit_log cannot be written during recovery."), errhidestmt(true)));
      });
    }
  }
  if (to_table && to_log) {
    // Both: the writer must not log them a second time should the table fail it.
    std::vector<Record> marked(recs);
    for (Record& r : marked) r.logged = true;
    if (!enqueue(marked.data(), marked.size(), true)) to_table = false;
  }
  if (to_table && !to_log && !enqueue(recs.data(), recs.size(), true)) {
    to_log = true;
    if (!warned_queue && !at_abort) {
      warned_queue = true;
      pg_call([] {
        ereport(WARNING, (errmsg("pg_envelope: the audit queue is full: records go to the server log"),
                          errhint("Raise envelope.audit_queue_size."), errhidestmt(true)));
      });
    }
  }
  if (to_log)
    for (const Record& r : recs) log_record(r);
}

std::uint32_t usage_hash(const AggKey& k) {
  return (k.key_id * 2654435761u) ^ (k.version * 40503u) ^ (MyDatabaseId * 97u);
}

UsageSlot& usage_at(std::uint32_t h, int probe) {
  return usage[(h + static_cast<std::uint32_t>(probe)) % static_cast<std::uint32_t>(usage_entries)];
}

bool usage_is(const UsageSlot& s, const AggKey& k) {
  return s.db == MyDatabaseId && s.key_id == k.key_id && s.version == k.version;
}

void count_in(UsageSlot& s, const Agg& a, TimestampTz now) {
  pg_atomic_fetch_add_u64(&s.counts[a.k.event], a.count);
  pg_atomic_write_u64(&s.last_used, static_cast<std::uint64_t>(now));
}

// Counts `a` in its slot; false when it has none. With `claim` (the lock held
// exclusively) a free slot becomes its slot, and the counts that find none of their 32
// slots free go to usage_overflow; without (the lock held shared) nothing but the
// counters is written.
bool add_usage(const Agg& a, TimestampTz now, bool claim) {
  std::uint32_t h = usage_hash(a.k);
  for (int probe = 0; probe < kUsageProbes && probe < usage_entries; ++probe) {
    UsageSlot& s = usage_at(h, probe);
    if (s.db == InvalidOid) {
      if (!claim) return false;  // slots are never freed: it is not further on
      s.key_id = a.k.key_id;
      s.version = a.k.version;
      for (pg_atomic_uint64& c : s.counts) pg_atomic_write_u64(&c, 0);
      s.db = MyDatabaseId;
    }
    if (usage_is(s, a.k)) {
      count_in(s, a, now);
      return true;
    }
  }
  if (claim) pg_atomic_fetch_add_u64(&shared->usage_overflow, a.count);
  return false;
}

bool warned_usage_full = false;

// Flushes the counts of the last statement: usage counters, then the audit trail.
void flush(bool at_abort) {
  if (aggs.empty()) return;
  // The vectors keep their memory from one statement to the next: a statement that
  // uses 100,000 key versions would otherwise map, fault in and unmap megabytes each
  // time. `spare` lends its buffer to aggs and gets aggs' back when this returns (a
  // nested flush, should there be one, finds it empty and allocates its own).
  static std::vector<Agg> spare;
  struct GiveBack {
    std::vector<Agg> v;
    ~GiveBack() {
      v.clear();
      if (spare.capacity() < v.capacity()) spare.swap(v);
    }
  } held;
  std::vector<Agg>& done = held.v;
  done.swap(spare);
  done.clear();
  done.swap(aggs);
  for (std::size_t i = 0; i < done.size(); ++i) done[i].count = agg_counts[i];
  agg_counts.clear();
  ++agg_epoch;
  agg_index.clear();
  last_agg = SIZE_MAX;
  if (!preloaded()) return;
  TimestampTz now = GetCurrentTimestamp();
  // Key versions already counted: under the lock held shared. The exclusive lock only
  // for the first use of a key version since the server started.
  std::vector<const Agg*> first_use;
  pg_call([] { LWLockAcquire(shared->lock, LW_SHARED); });
  for (const Agg& a : done)
    if (a.count > 0 && !add_usage(a, now, false)) first_use.push_back(&a);
  LWLockRelease(shared->lock);
  if (!first_use.empty()) {
    bool all_counted = true;
    pg_call([] { LWLockAcquire(shared->lock, LW_EXCLUSIVE); });
    for (const Agg* a : first_use) all_counted = add_usage(*a, now, true) && all_counted;
    LWLockRelease(shared->lock);
    if (!all_counted && !warned_usage_full) {
      // Once per backend, in the server log: the counts are an operator's concern.
      warned_usage_full = true;
      pg_call([] {
        ereport(LOG, (errmsg("pg_envelope: envelope.key_usage_entries is too small: uses of some key versions "
                             "are not counted in envelope.key_usage"),
                      errhint("Raise envelope.key_usage_entries (it takes effect at the next server start) to "
                              "about twice the number of key versions in use."),
                      errhidestmt(true)));
      });
    }
  }
  if (mode == kOff) return;
  std::vector<Record> recs;
  for (const Agg& a : done) {
    if (a.k.event == kEncrypt || a.count == 0) continue;  // 0: a decrypt taken back by its failure
    Record r{};
    r.statement_at = agg_statement;
    r.query_id = agg_query_id;
    r.count = a.count;
    r.version = static_cast<std::int32_t>(a.k.version);
    r.protection = a.k.protection;
    copy_str(r.event, sizeof r.event, kEventNames[a.k.event]);
    copy_str(r.key, sizeof r.key, a.key_name);
    fill_session(r, a.user_name);
    copy_str(r.object, sizeof r.object, a.object);
    recs.push_back(r);
  }
  emit(recs, at_abort);
}

void xact_callback(XactEvent event, void*) {
  switch (event) {
    case XACT_EVENT_COMMIT:
    case XACT_EVENT_PARALLEL_COMMIT:
    case XACT_EVENT_PREPARE:
      guarded_hook(WARNING, "audit", [] {
        flush(true);
        std::vector<Record> lc;
        lc.swap(pending_lifecycle);
        lc.insert(lc.end(), pending_denials.begin(), pending_denials.end());
        pending_denials.clear();
        if (mode != kOff && !lc.empty()) emit(lc, true);
      });
      break;
    case XACT_EVENT_ABORT:
    case XACT_EVENT_PARALLEL_ABORT:
      guarded_hook(WARNING, "audit", [] {
        pending_lifecycle.clear();
        current_protection = 0;
        flush(true);
        std::vector<Record> d;
        d.swap(pending_denials);
        if (mode != kOff && !d.empty()) emit(d, true);
      });
      break;
    case XACT_EVENT_PRE_COMMIT:
    case XACT_EVENT_PARALLEL_PRE_COMMIT:
    case XACT_EVENT_PRE_PREPARE:
      // The transaction's last statement's counts, before the commit (names were
      // looked up when counting began).
      guarded_hook(ERROR, "audit", [] { flush(false); });
      break;
  }
}

// --- the worker -------------------------------------------------------------------

void start_worker(Oid db) {
  BackgroundWorker w{};
  std::snprintf(w.bgw_name, BGW_MAXLEN, "pg_envelope audit writer for database %u", db);
  std::snprintf(w.bgw_type, BGW_MAXLEN, "pg_envelope audit writer");
  w.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
  w.bgw_start_time = BgWorkerStart_RecoveryFinished;
  w.bgw_restart_time = BGW_NEVER_RESTART;
  std::snprintf(w.bgw_library_name, BGW_MAXLEN, "pg_envelope");
  std::snprintf(w.bgw_function_name, BGW_MAXLEN, "envelope_audit_worker_main");
  w.bgw_main_arg = ObjectIdGetDatum(db);
  w.bgw_notify_pid = 0;
  bool ok = pg_call([&w] { return RegisterDynamicBackgroundWorker(&w, nullptr); });
  if (ok) return;
  // No worker slot (max_worker_processes): what waits goes to the server log now.
  std::vector<Record> waiting;
  pg_call([] { LWLockAcquire(shared->lock, LW_EXCLUSIVE); });
  for (Queue& q : shared->queues)
    if (q.db == db && q.worker_pid == 0) {
      q.starting = false;
      std::size_t qi = static_cast<std::size_t>(&q - shared->queues);
      for (std::uint64_t i = q.tail; i < q.head; ++i) waiting.push_back(records[qi * queue_records + i % queue_records]);
      q.tail = q.head;
    }
  LWLockRelease(shared->lock);
  if (waiting.empty()) return;
  if (!warned_queue) {
    warned_queue = true;
    pg_call([] {
      ereport(WARNING, (errmsg("pg_envelope: no background worker could be started to write envelope.audit_log"),
                        errdetail("The audit records go to the server log instead."),
                        errhint("Raise max_worker_processes."), errhidestmt(true)));
    });
  }
  for (const Record& r : waiting)
    if (!r.logged) log_record(r);
}

Queue* my_queue = nullptr;
// The writer leaves soon after its queue is empty: a worker connected to a database
// would hold up DROP DATABASE (which waits 5 s for other sessions), and the next
// record starts a new one.
constexpr TimestampTz kIdleExit = 1 * USECS_PER_SEC;

// A before_shmem_exit callback: PostgreSQL's frames, so the lock is taken directly
// (LWLockAcquire raises no error for a lock that is not already held).
void worker_exit(int, Datum) {
  if (shared == nullptr || my_queue == nullptr) return;
  LWLockAcquire(shared->lock, LW_EXCLUSIVE);
  if (my_queue->worker_pid == MyProcPid) {
    my_queue->worker_pid = 0;
    my_queue->latch = nullptr;
    my_queue->starting = false;
  }
  LWLockRelease(shared->lock);
}

constexpr const char* kInsert =
    "WITH v AS (SELECT $1::pg_catalog.int8 AS seq, pg_catalog.clock_timestamp() AS logged_at, "
    "  $2::pg_catalog.timestamptz AS statement_at, $3::pg_catalog.text AS event, $4::pg_catalog.text AS key_name, "
    "  NULLIF($5::pg_catalog.int4, 0) AS key_version, "
    "  NULLIF($16::pg_catalog.text, '') AS object, "
    "  NULLIF($7::pg_catalog.int8, 0) AS value_count, $8::pg_catalog.text AS session_user_name, "
    "  $9::pg_catalog.text AS current_user_name, $10::pg_catalog.text AS application_name, "
    "  NULLIF($11::pg_catalog.text, '') AS client_addr, pg_catalog.current_database()::pg_catalog.text AS database_name, "
    "  $12::pg_catalog.int4 AS backend_pid, NULLIF($13::pg_catalog.int8, 0) AS query_id, "
    "  NULLIF($14::pg_catalog.text, '') AS detail, $15::pg_catalog.bytea AS prev_hash) "
    "INSERT INTO envelope.audit_log SELECT v.*, envelope.audit_hash(ROW(v.*, NULL)::envelope.audit_log) FROM v "
    "RETURNING hash";

struct Chain {
  bool known = false;
  std::int64_t seq = 0;
  Bytes hash;
};

void read_chain(OwnerSpi& spi, Chain& c) {
  c.known = true;
  c.seq = 0;
  c.hash.clear();
  if (spi.exec("SELECT seq, hash FROM envelope.audit_log ORDER BY seq DESC LIMIT 1", {}, SPI_OK_SELECT) == 1) {
    c.seq = spi.int8_at(0, 1);
    c.hash = spi.bytea_at(0, 2);
  }
}

void write_batch(const std::vector<Record>& batch, Chain& chain) {
  pg_call([] {
    SetCurrentStatementStartTimestamp();
    StartTransactionCommand();
    PushActiveSnapshot(GetTransactionSnapshot());
  });
  {
    OwnerSpi spi(false);
    // Never in anyone's way: a DROP EXTENSION or a TRUNCATE of the log wins, and the
    // batch is written again a moment later (the writer touches audit_log only).
    spi.exec("SELECT pg_catalog.set_config('lock_timeout', '200ms', true)", {}, SPI_OK_SELECT);
    if (!chain.known) read_chain(spi, chain);
    for (const Record& r : batch) {
      SpiParam params[] = {
          {INT8OID, Int64GetDatum(chain.seq + 1)},
          {TIMESTAMPTZOID, TimestampTzGetDatum(r.statement_at)},
          text_param(r.event),
          text_param(r.key),
          {INT4OID, Int32GetDatum(r.version)},
          {INT8OID, Int64GetDatum(r.protection)},
          {INT8OID, Int64GetDatum(static_cast<std::int64_t>(r.count))},
          text_param(r.session_user_name),
          text_param(r.current_user_name),
          text_param(r.application),
          text_param(r.client),
          {INT4OID, Int32GetDatum(r.pid)},
          {INT8OID, Int64GetDatum(r.query_id)},
          text_param(r.detail),
          chain.hash.empty() ? SpiParam{BYTEAOID, 0, true} : bytea_param(chain.hash),
          text_param(r.object),
      };
      spi.exec(kInsert, std::span<const SpiParam>(params, std::size(params)), SPI_OK_INSERT_RETURNING);
      chain.seq += 1;
      chain.hash = spi.bytea_at(0, 1);
    }
    if (retention_days > 0)
      spi.exec("DELETE FROM envelope.audit_log WHERE logged_at OPERATOR(pg_catalog.<) "
               "(pg_catalog.now() OPERATOR(pg_catalog.-) pg_catalog.make_interval(days => $1))",
               {int4_param(static_cast<std::uint32_t>(retention_days))}, SPI_OK_DELETE);
    spi.finish();
  }
  pg_call([] {
    PopActiveSnapshot();
    CommitTransactionCommand();
  });
}

void worker_main(Oid db) {
  pg_call([db] { BackgroundWorkerInitializeConnectionByOid(db, InvalidOid, 0); });
  pgstat_report_appname("pg_envelope audit writer");
  pg_call([] { LWLockAcquire(shared->lock, LW_EXCLUSIVE); });
  for (Queue& q : shared->queues)
    if (q.db == db) my_queue = &q;
  bool mine = my_queue != nullptr && (my_queue->worker_pid == 0 || my_queue->worker_pid == MyProcPid);
  if (mine) {
    my_queue->worker_pid = MyProcPid;
    my_queue->latch = MyLatch;
    my_queue->starting = false;
  }
  LWLockRelease(shared->lock);
  if (!mine) return;
  pg_call([] { before_shmem_exit(worker_exit, 0); });
  std::size_t qi = static_cast<std::size_t>(my_queue - shared->queues);
  Chain chain;
  TimestampTz idle_since = GetCurrentTimestamp();
  TimestampTz last_head_log = 0;
  for (;;) {
    std::vector<Record> batch;
    pg_call([] { LWLockAcquire(shared->lock, LW_SHARED); });
    std::uint64_t n = std::min<std::uint64_t>(my_queue->head - my_queue->tail, 64);
    for (std::uint64_t i = 0; i < n; ++i)
      batch.push_back(records[qi * queue_records + (my_queue->tail + i) % queue_records]);
    LWLockRelease(shared->lock);
    if (!batch.empty()) {
      try {
        write_batch(batch, chain);
      } catch (const PgError& e) {
        ErrorData* d = e.data();
        bool busy = d != nullptr && d->sqlerrcode == ERRCODE_LOCK_NOT_AVAILABLE;
        std::string why = d != nullptr && d->message != nullptr ? d->message : "unknown error";
        pg_call([] { AbortCurrentTransaction(); });
        chain.known = false;
        if (busy) {
          // Someone holds audit_log (DROP EXTENSION, TRUNCATE): the same batch again soon.
          pg_call([] { pg_usleep(500 * 1000L); });
          continue;
        }
        // The table could not be written (the extension was dropped, a disk error):
        // the records go to the server log, never lost; the chain is read again.
        pg_call([&why] {
          ereport(WARNING, (errmsg("pg_envelope: could not write envelope.audit_log: %s", why.c_str()),
                            errdetail("The records are written to the server log instead.")));
        });
        for (const Record& r : batch)
          if (!r.logged) log_record(r);
      }
      pg_call([] { LWLockAcquire(shared->lock, LW_EXCLUSIVE); });
      my_queue->tail += batch.size();
      LWLockRelease(shared->lock);
      idle_since = GetCurrentTimestamp();
      // The chain's head, at most once a minute: an anchor outside the table.
      if (chain.known && idle_since - last_head_log > 60 * USECS_PER_SEC) {
        last_head_log = idle_since;
        std::string hex;
        static const char* digits = "0123456789abcdef";
        for (std::uint8_t b : chain.hash) {
          hex += digits[b >> 4];
          hex += digits[b & 15];
        }
        std::int64_t seq = chain.seq;
        pg_call([seq, &hex] {
          ereport(LOG, (errmsg("pg_envelope audit chain head: seq %lld hash %s", static_cast<long long>(seq),
                               hex.c_str())));
        });
      }
      continue;
    }
    if (GetCurrentTimestamp() - idle_since > kIdleExit) {
      pg_call([] { LWLockAcquire(shared->lock, LW_EXCLUSIVE); });
      bool empty = my_queue->head == my_queue->tail;
      if (empty) {
        my_queue->worker_pid = 0;
        my_queue->latch = nullptr;
      }
      LWLockRelease(shared->lock);
      if (empty) return;
    }
    int rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 200, PG_WAIT_EXTENSION);
    (void)rc;
    ResetLatch(MyLatch);
    pg_call([] { CHECK_FOR_INTERRUPTS(); });
    if (ConfigReloadPending) {
      ConfigReloadPending = false;
      pg_call([] { ProcessConfigFile(PGC_SIGHUP); });
    }
  }
}

}  // namespace

// --- public -----------------------------------------------------------------------

void note(DekId id, std::string_view key_name, Event e) {
  {
    std::int64_t stmt = GetCurrentStatementStartTimestamp();
    if (stmt != agg_statement) {
      if (!aggs.empty()) flush(false);
      agg_user_name.clear();
      agg_statement = stmt;
      agg_query_id = query_id();
    }
    AggKey k{id.key_id, id.version, current_protection, GetUserId(), e};
    if (e == kFailure) {
      // The DEK was handed out (and counted as a decrypt) before the value failed.
      AggKey d = k;
      d.event = kDecrypt;
      if (std::size_t at = agg_index.find(d); at != SIZE_MAX && agg_counts[at] > 0) --agg_counts[at];
    }
    if (last_agg < aggs.size() && aggs[last_agg].k == k) {
      ++agg_counts[last_agg];
      return;
    }
    if (std::size_t at = agg_index.find(k); at != SIZE_MAX) {
      last_agg = at;
      ++agg_counts[last_agg];
      return;
    }
    (void)session_user_name();
    (void)client_address();
    // The role's name, looked up once per statement (not once per key version).
    if (k.user != agg_user || agg_user_name.empty()) {
      agg_user_name = role_name_of(k.user);
      agg_user = k.user;
    }
    std::string user = agg_user_name;
    // Looked up now, inside the statement (there is no snapshot to query with once
    // it has ended); once per column and backend.
    std::string object = mode != kOff ? column_name(k.protection, !IsParallelWorker()) : std::string();
    aggs.push_back(Agg{k, std::string(key_name), std::move(user), std::move(object), 0});
    agg_counts.push_back(1);
    last_agg = aggs.size() - 1;
    agg_index.put(k, last_agg);
  }
}

void note(CachedDek& dek, Event e) {
  // The hot path with many keys: the counter this DEK was last counted in, remembered
  // in the DEK's own cache entry (already in the CPU cache), instead of a lookup in a
  // map of every key version the statement used.
  if (e != kFailure && dek.audit_epoch == agg_epoch && dek.audit_event == e &&
      dek.audit_protection == current_protection && dek.audit_user == GetUserId() &&
      GetCurrentStatementStartTimestamp() == agg_statement && dek.audit_index < agg_counts.size()) {
    ++agg_counts[dek.audit_index];
    last_agg = dek.audit_index;
    return;
  }
  note(dek.id, dek.key_name, e);
  if (last_agg < aggs.size()) {
    dek.audit_epoch = agg_epoch;
    dek.audit_index = static_cast<std::uint32_t>(last_agg);
    dek.audit_event = static_cast<std::uint8_t>(aggs[last_agg].k.event);
    dek.audit_protection = aggs[last_agg].k.protection;
    dek.audit_user = aggs[last_agg].k.user;
  }
}

ColumnScope::ColumnScope(std::uint32_t protection_id) noexcept : saved_(current_protection) {
  current_protection = protection_id;
}
ColumnScope::~ColumnScope() { current_protection = saved_; }

void lifecycle(const char* action, std::string_view key, std::int32_t version, std::string_view detail) {
  if (!preloaded()) return;
  Record r{};
  r.statement_at = GetCurrentStatementStartTimestamp();
  r.query_id = query_id();
  r.count = 0;
  r.version = version;
  copy_str(r.event, sizeof r.event, action);
  copy_str(r.key, sizeof r.key, key);
  copy_str(r.detail, sizeof r.detail, detail);
  (void)session_user_name();
  std::string user = role_name_of(GetUserId());
  fill_session(r, user);
  pending_lifecycle.push_back(r);
}

void denied(const char* event, std::string_view key) {
  if (!preloaded() || mode == kOff) return;
  {
    Record r{};
    r.statement_at = GetCurrentStatementStartTimestamp();
    r.query_id = query_id();
    copy_str(r.event, sizeof r.event, event);
    copy_str(r.key, sizeof r.key, key);
    (void)session_user_name();
    fill_session(r, role_name_of(GetUserId()));
    pending_denials.push_back(r);
  }
}

void define_gucs() {
  DefineCustomEnumVariable("envelope.audit", "Where pg_envelope records who decrypted what: off, log, table or all.",
                           nullptr, &mode, kOff, mode_options, PGC_SUSET, 0, nullptr, nullptr, nullptr);
  DefineCustomIntVariable("envelope.audit_retention", "Days envelope.audit_log keeps its rows (0: forever).", nullptr,
                          &retention_days, 0, 0, 36500, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
  DefineCustomIntVariable("envelope.audit_queue_size", "Audit records waiting for the writer, per database.", nullptr,
                          &queue_records, 1024, 16, 1 << 20, PGC_POSTMASTER, 0, nullptr, nullptr, nullptr);
  DefineCustomIntVariable("envelope.key_usage_entries", "Key versions envelope.key_usage counts.", nullptr,
                          &usage_entries, 8192, 64, 1 << 22, PGC_POSTMASTER, 0, nullptr, nullptr, nullptr);
}

std::size_t shmem_size() {
  return usage_offset() + MAXALIGN(sizeof(UsageSlot) * static_cast<std::size_t>(usage_entries));
}

void request_lwlock() { RequestNamedLWLockTranche("pg_envelope audit", 1); }

void attach() {
  bool found = false;
  std::size_t size = shmem_size();
  auto* base = static_cast<char*>(pg_call([&found, size] { return ShmemInitStruct("pg_envelope audit", size, &found); }));
  shared = reinterpret_cast<Shared*>(base);
  records = reinterpret_cast<Record*>(base + records_offset());
  usage = reinterpret_cast<UsageSlot*>(base + usage_offset());
  if (!found) {
    std::memset(base, 0, size);
    shared->lock = &(pg_call([] { return GetNamedLWLockTranche("pg_envelope audit"); }))->lock;
  }
}

void register_callbacks() {
  pg_call([] { RegisterXactCallback(xact_callback, nullptr); });
}

void usage_rows(void (*emit_row)(const UsageRow&, void*), void* ctx) {
  if (!preloaded()) return;
  std::vector<UsageRow> rows;
  pg_call([] { LWLockAcquire(shared->lock, LW_SHARED); });
  for (int i = 0; i < usage_entries; ++i) {
    const UsageSlot& s = usage[i];
    if (s.db != MyDatabaseId) continue;
    UsageRow r{};
    r.key_id = s.key_id;
    r.version = s.version;
    for (int e = 0; e < kEventCount; ++e) r.counts[e] = pg_atomic_read_u64(const_cast<pg_atomic_uint64*>(&s.counts[e]));
    r.last_used = static_cast<TimestampTz>(pg_atomic_read_u64(const_cast<pg_atomic_uint64*>(&s.last_used)));
    rows.push_back(r);
  }
  LWLockRelease(shared->lock);
  for (const UsageRow& r : rows) emit_row(r, ctx);
}

void usage_reset() {
  if (!preloaded()) return;
  pg_call([] { LWLockAcquire(shared->lock, LW_EXCLUSIVE); });
  for (int i = 0; i < usage_entries; ++i)
    if (usage[i].db == MyDatabaseId) {
      for (pg_atomic_uint64& c : usage[i].counts) pg_atomic_write_u64(&c, 0);
      pg_atomic_write_u64(&usage[i].last_used, 0);
    }
  LWLockRelease(shared->lock);
}

}  // namespace pg_envelope::audit

extern "C" {
PGDLLEXPORT void envelope_audit_worker_main(Datum arg);
}

void envelope_audit_worker_main(Datum arg) {
  pqsignal(SIGTERM, die);
  pqsignal(SIGHUP, SignalHandlerForConfigReload);
  BackgroundWorkerUnblockSignals();
  pg_envelope::guarded_hook(ERROR, "audit writer", [arg] { pg_envelope::audit::worker_main(DatumGetObjectId(arg)); });
}
