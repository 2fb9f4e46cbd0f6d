// One call to a KMS, counted and timed in envelope.stats (kms_calls, kms_errors,
// kms_time_ms, kms_max_ms; kms_unwraps when `unwrap`). A cancel or
// statement_timeout is counted as a call, not as a KMS error.
#pragma once

#include <chrono>
#include <cstdint>
#include <string_view>

#include "kms_stats.hpp"
#include "pg_envelope/error.hpp"

namespace pg_envelope {

inline void record_kms_call(bool ok, bool unwrap, std::chrono::steady_clock::time_point start) {
  auto micros =
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start).count();
  kms_stats::record(ok, unwrap, static_cast<std::int64_t>(micros));
}

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

}  // namespace pg_envelope
