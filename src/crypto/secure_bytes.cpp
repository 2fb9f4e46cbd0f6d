// Wiping memory for secrets (see include/pg_envelope/secure_bytes.hpp).
#include "pg_envelope/secure_bytes.hpp"

#include <openssl/crypto.h>

namespace pg_envelope {

// OPENSSL_cleanse: a store the compiler may not elide, unlike memset before a free.
void secure_zero(void* p, std::size_t n) noexcept {
  if (p != nullptr && n > 0) OPENSSL_cleanse(p, n);
}

}  // namespace pg_envelope
