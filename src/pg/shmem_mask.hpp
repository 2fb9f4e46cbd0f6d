// Secrets at rest in shared memory (the shared DEK cache, the shared credential store):
// masked with a secret of the postmaster's private memory, which every backend inherits
// and which is never in shared memory, so a dump of the shared segment alone reveals
// nothing; and their pages excluded from core dumps.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "pg_envelope/secure_bytes.hpp"

namespace pg_envelope::shmem_mask {

// Draws the masking secret (in the postmaster, before any backend forks; once).
void init();

// The mask for `info` (which names the value masked and carries a label of its user):
// HKDF-SHA256 of the secret, any length (longer masks are drawn in 8160-byte blocks
// under a block counter).
void derive(ByteView info, std::span<std::uint8_t> out);

// XORs `data` with the mask for `info` (masking and unmasking alike).
void apply(ByteView info, std::span<std::uint8_t> data);

// madvise(MADV_DONTDUMP) on whole pages; returns errno (0: done).
int exclude_from_core_dumps(void* first_page, std::size_t bytes) noexcept;

}  // namespace pg_envelope::shmem_mask
