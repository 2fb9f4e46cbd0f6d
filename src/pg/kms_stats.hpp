// Statistics of this server's KMS calls, in shared memory, behind envelope.stats
// (kms_calls, kms_unwraps, kms_errors, kms_time_ms, kms_max_ms).
#pragma once

#include <cstddef>
#include <cstdint>

namespace pg_envelope::kms_stats {

std::size_t shmem_size();
void attach();  // from the shmem startup hook, under AddinShmemInitLock

// One KMS call: `ok` false when the KMS (or the way to it) failed; `unwrap` counts it
// as a DEK unwrap as well. A cancel is counted as a call that did not fail.
void record(bool ok, bool unwrap, std::int64_t micros) noexcept;

struct Counters {
  std::int64_t calls, unwraps, errors;
  double time_ms, max_ms;
};
Counters read() noexcept;
void reset() noexcept;

}  // namespace pg_envelope::kms_stats
