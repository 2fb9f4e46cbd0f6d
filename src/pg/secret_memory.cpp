// Memory-context reset callbacks that zero secrets (see secret_memory.hpp).
#include "guard.hpp"

#include "pg_envelope/secure_bytes.hpp"
#include "secret_memory.hpp"

namespace pg_envelope {

struct SecretChunk {
  MemoryContextCallback callback;
  void* ptr;
  Size size;
};

namespace {

// Called by PostgreSQL (MemoryContextReset/Delete) before the memory is released.
void zero_on_reset(void* arg) {
  auto* chunk = static_cast<SecretChunk*>(arg);
  if (chunk->ptr != nullptr) secure_zero(chunk->ptr, chunk->size);
  chunk->ptr = nullptr;
}

// Plain C-style: allocates the record in the buffer's own context (so it lives
// exactly as long) and registers the callback.
SecretChunk* register_chunk(void* ptr, Size n) {
  MemoryContext cxt = GetMemoryChunkContext(ptr);
  auto* chunk = static_cast<SecretChunk*>(MemoryContextAlloc(cxt, sizeof(SecretChunk)));
  chunk->ptr = ptr;
  chunk->size = n;
  chunk->callback.func = zero_on_reset;
  chunk->callback.arg = chunk;
  MemoryContextRegisterResetCallback(cxt, &chunk->callback);
  return chunk;
}

}  // namespace

SecretChunk* guard_secret(void* ptr, Size n) {
  return pg_call([ptr, n] { return register_chunk(ptr, n); });
}

void* secret_palloc(Size n, SecretChunk** chunk) {
  void* p = pg_alloc(n);
  try {
    *chunk = guard_secret(p, n);
  } catch (...) {
    pfree(p);
    throw;
  }
  return p;
}

void release_secret(SecretChunk* chunk) noexcept {
  if (chunk == nullptr || chunk->ptr == nullptr) return;
  secure_zero(chunk->ptr, chunk->size);
  pfree(chunk->ptr);
  chunk->ptr = nullptr;
}

void disarm_secret(SecretChunk* chunk) noexcept {
  if (chunk != nullptr) chunk->ptr = nullptr;
}

}  // namespace pg_envelope
