// KMS call statistics in shared memory (see kms_stats.hpp): lock-free counters.
#include "guard.hpp"

extern "C" {
#include "port/atomics.h"
#include "storage/shmem.h"
}

#include "kms_stats.hpp"

namespace pg_envelope::kms_stats {

namespace {

struct Shared {
  pg_atomic_uint64 calls, unwraps, errors, time_us, max_us;
};

Shared* shared = nullptr;

std::int64_t read_counter(pg_atomic_uint64& c) { return static_cast<std::int64_t>(pg_atomic_read_u64(&c)); }

}  // namespace

std::size_t shmem_size() { return MAXALIGN(sizeof(Shared)); }

void attach() {
  bool found = false;
  shared = static_cast<Shared*>(
      pg_call([&found] { return ShmemInitStruct("pg_envelope KMS statistics", sizeof(Shared), &found); }));
  if (!found)
    for (pg_atomic_uint64* c : {&shared->calls, &shared->unwraps, &shared->errors, &shared->time_us, &shared->max_us})
      pg_atomic_init_u64(c, 0);
}

void record(bool ok, bool unwrap, std::int64_t micros) noexcept {
  if (shared == nullptr) return;
  pg_atomic_fetch_add_u64(&shared->calls, 1);
  if (!ok) pg_atomic_fetch_add_u64(&shared->errors, 1);
  if (ok && unwrap) pg_atomic_fetch_add_u64(&shared->unwraps, 1);
  auto us = static_cast<std::uint64_t>(micros < 0 ? 0 : micros);
  pg_atomic_fetch_add_u64(&shared->time_us, us);
  std::uint64_t max = pg_atomic_read_u64(&shared->max_us);
  while (us > max && !pg_atomic_compare_exchange_u64(&shared->max_us, &max, us)) {
  }
}

Counters read() noexcept {
  Counters c{};
  if (shared == nullptr) return c;
  c.calls = read_counter(shared->calls);
  c.unwraps = read_counter(shared->unwraps);
  c.errors = read_counter(shared->errors);
  c.time_ms = static_cast<double>(read_counter(shared->time_us)) / 1000.0;
  c.max_ms = static_cast<double>(read_counter(shared->max_us)) / 1000.0;
  return c;
}

void reset() noexcept {
  if (shared == nullptr) return;
  for (pg_atomic_uint64* c : {&shared->calls, &shared->unwraps, &shared->errors, &shared->time_us, &shared->max_us})
    pg_atomic_write_u64(c, 0);
}

}  // namespace pg_envelope::kms_stats
