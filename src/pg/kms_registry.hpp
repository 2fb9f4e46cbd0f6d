// The KMS providers of this backend: the built-in "local" one and those configured in
// envelope.kms, built on first use and rebuilt when a KMS is altered or dropped
// anywhere (the shared key generation moves).
#pragma once

#include <chrono>
#include <cstdint>
#include <string_view>

#include "pg_envelope/kms.hpp"

namespace pg_envelope {

// The provider for a KMS name; Error 42704 when no such KMS is configured.
KmsProvider& kms_provider(std::string_view kms_name);

// Builds (and so validates) a provider for a configuration without registering it.
std::unique_ptr<KmsProvider> build_kms_provider(const KmsConfig& config);

// Wait events for pg_stat_activity: "Extension" before PostgreSQL 17; from 17 on,
// the custom events "EnvelopeKmsCall" (a KMS call in flight) and "EnvelopeDekWait"
// (waiting for another backend's unwrap of the same DEK).
std::uint32_t kms_call_wait_event();
std::uint32_t dek_wait_event();

// Reports the KMS call wait event while a KMS call is in flight.
class KmsWait {
 public:
  KmsWait();
  ~KmsWait();
  KmsWait(const KmsWait&) = delete;
  KmsWait& operator=(const KmsWait&) = delete;
};

// One call to a KMS, counted and timed in envelope.stats (kms_calls, kms_errors,
// kms_time_ms, kms_max_ms; kms_unwraps when `unwrap`). A cancel or
// statement_timeout is counted as a call, not as a KMS error.
void record_kms_call(bool ok, bool unwrap, std::chrono::steady_clock::time_point start);

template <class F>
auto timed_kms_call(bool unwrap, F&& call) -> decltype(call()) {
  auto start = std::chrono::steady_clock::now();
  try {
    auto result = call();
    record_kms_call(true, unwrap, start);
    return result;
  } catch (const Error& e) {
    bool cancelled = std::string_view(e.sqlstate()) == sqlstate::kQueryCanceled;
    record_kms_call(cancelled, false, start);
    throw;
  } catch (...) {
    record_kms_call(false, false, start);
    throw;
  }
}

// How long a backend waits for another backend's KMS call for the same DEK: the
// whole retry budget of that call plus a margin.
long kms_wait_budget_ms();

// GUCs envelope.kms_* (timeouts, retry budget, CA file).
void define_kms_gucs();

}  // namespace pg_envelope
