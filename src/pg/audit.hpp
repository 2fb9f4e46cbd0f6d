// Who used which key: the audit trail and the key usage counters (docs/access.md).
//
// The decrypt path counts each value it releases a DEK for (or refuses), per statement,
// key version, protected column and role, in backend memory: a scan pays one
// comparison and one increment per row. The counts are flushed when the next statement
// starts counting and at the end of the transaction (commit or abort: a value read in
// a transaction that later fails was still read):
//   * into the key usage counters in shared memory (envelope.key_usage), always;
//   * into the audit trail when envelope.audit is on: a pgaudit-style "AUDIT:" line in
//     the server log, and/or a row of envelope.audit_log written by a background
//     worker of the database in its own transaction (so a read-only transaction, an
//     aborted one or a denied call is recorded too), chained by SHA-256
//     (envelope.audit_verify()). On a standby, where no table can be written, table
//     records go to the server log instead, with one WARNING per backend.
// Key lifecycle events (create, rotate, rewrap, disable, enable, destroy, grant,
// revoke) are recorded when their transaction commits.
#pragma once

#include "pg_includes.hpp"

#include <cstdint>
#include <string_view>

#include "pg_envelope/dek_cache.hpp"

namespace pg_envelope::audit {

enum Event : std::uint8_t {
  kDecrypt = 0,    // a DEK was released to decrypt a value for the caller
  kDenied = 1,     // an explicit decrypt (or unseal) refused: no decrypt privilege (42501)
  kWithheld = 2,   // a protected column read as ciphertext: no decrypt privilege
  kFailure = 3,    // a value failed authentication (tampered, wrong context or type)
  kEncrypt = 4,    // a value encrypted (usage counters only, not the audit trail)
  kEncryptDenied = 5,
  kEventCount = 6
};

// Counts one value. `key_name` is only read when this (statement, DEK, column, role)
// has not been counted yet. Throws only what a catalog lookup or the flush of the
// previous statement's counts throws (the caller's statement fails then).
void note(DekId id, std::string_view key_name, Event e);
// The same for a DEK of the backend's cache, faster when the statement uses many keys
// (the DEK's entry remembers the counter it was last counted in).
void note(CachedDek& dek, Event e);

// While alive, values counted belong to this protected column (its protection id).
class ColumnScope {
 public:
  explicit ColumnScope(std::uint32_t protection_id) noexcept;
  ~ColumnScope();
  ColumnScope(const ColumnScope&) = delete;
  ColumnScope& operator=(const ColumnScope&) = delete;

 private:
  std::uint32_t saved_;
};

// A key lifecycle event of the current transaction, recorded if it commits, e.g.
// ("rotate", "tenant_7", 3, "") or ("grant", "tenant_*", 0, "decrypt to app").
void lifecycle(const char* action, std::string_view key, std::int32_t version, std::string_view detail);

// A refused key administration (42501): recorded at once, whatever the transaction
// does next (it is about to fail).
void denied(const char* event, std::string_view key);

// GUCs, shared memory and callbacks, from _PG_init (preloaded).
void define_gucs();
std::size_t shmem_size();
void request_lwlock();
void attach();
void register_callbacks();

// envelope.key_usage_counts(): one row per (key id, version) of this database.
struct UsageRow {
  std::uint32_t key_id, version;
  std::uint64_t counts[kEventCount];
  std::int64_t last_used;  // TimestampTz
};
template <typename F>
void for_each_usage(F&& f);
void usage_rows(void (*emit)(const UsageRow&, void*), void* ctx);
void usage_reset();

}  // namespace pg_envelope::audit

template <typename F>
void pg_envelope::audit::for_each_usage(F&& f) {
  using Fn = std::remove_reference_t<F>;
  usage_rows([](const UsageRow& r, void* p) { (*static_cast<Fn*>(p))(r); }, static_cast<void*>(&f));
}
