// The key generation counter in shared memory (see key_generation.hpp).
#include "guard.hpp"

extern "C" {
#include "port/atomics.h"
#include "storage/shmem.h"
}

#include "key_generation.hpp"

namespace pg_envelope {

namespace {

struct Counter {
  pg_atomic_uint64 generation;
};

Counter* counter = nullptr;

}  // namespace

std::uint64_t key_generation() noexcept { return counter == nullptr ? 0 : pg_atomic_read_u64(&counter->generation); }

void bump_key_generation() noexcept {
  if (counter != nullptr) pg_atomic_fetch_add_u64(&counter->generation, 1);
}

namespace key_generation_memory {

std::size_t size() { return MAXALIGN(sizeof(Counter)); }

void attach() {
  bool found = false;
  counter = static_cast<Counter*>(
      pg_call([&found] { return ShmemInitStruct("pg_envelope key generation", sizeof(Counter), &found); }));
  if (!found) pg_atomic_init_u64(&counter->generation, 1);
}

}  // namespace key_generation_memory

}  // namespace pg_envelope
