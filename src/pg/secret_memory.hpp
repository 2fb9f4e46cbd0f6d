// Plaintext and key material in palloc'd memory, zeroed on every way out.
//
// As pgsodium does: a buffer that holds a secret gets a memory-context reset
// callback, so that when its context is reset or deleted -- after an error anywhere
// in the statement, or at the end of a query -- the bytes are zeroed before the
// memory is reused. release_secret() zeroes and frees it at once on the normal path.
#pragma once

#include "pg_includes.hpp"

namespace pg_envelope {

struct SecretChunk;

// Registers `ptr` (n bytes, palloc'd in any context) to be zeroed when its context
// is reset or deleted, unless release_secret() ran first.
SecretChunk* guard_secret(void* ptr, Size n);

// palloc in CurrentMemoryContext plus guard_secret().
void* secret_palloc(Size n, SecretChunk** chunk);

// Zeroes and frees the buffer now; the callback then does nothing. Null-safe.
void release_secret(SecretChunk* chunk) noexcept;

// Stops watching the buffer without touching it (it is handed to PostgreSQL as a
// function result, which PostgreSQL owns from then on).
void disarm_secret(SecretChunk* chunk) noexcept;

}  // namespace pg_envelope
