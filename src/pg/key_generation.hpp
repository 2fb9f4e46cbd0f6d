// The key generation: one counter in shared memory that moves whenever a key, a DEK
// version or a KMS configuration changes anywhere on this server (at the call and
// again at commit, see key_change_commit.hpp). A backend drops its first-level DEK
// cache when the generation it last saw differs, a KMS provider is rebuilt from its
// row, and a DEK unwrapped from key rows read at an older generation is never put
// into the shared cache.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pg_envelope {

// The current generation; 0 when the library was not preloaded.
std::uint64_t key_generation() noexcept;
void bump_key_generation() noexcept;

namespace key_generation_memory {
std::size_t size();
void attach();  // from the shmem startup hook, under AddinShmemInitLock
}  // namespace key_generation_memory

}  // namespace pg_envelope
