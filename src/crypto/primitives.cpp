// CSPRNG, HKDF-SHA256, constant-time comparison and secure zeroing via OpenSSL.
#include <openssl/crypto.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>
#include <unistd.h>

#include "pg_envelope/crypto.hpp"
#include "pg_envelope/error.hpp"

namespace pg_envelope {

void secure_zero(void* p, std::size_t n) noexcept {
  if (p != nullptr && n > 0) OPENSSL_cleanse(p, n);
}

void random_bytes(std::span<std::uint8_t> out) {
  // Backends are forked from the postmaster. OpenSSL 3 detects the fork and reseeds its
  // DRBG; reseeding once more per process costs nothing measurable and does not rely on
  // that detection.
  static pid_t seeded_pid = 0;
  if (seeded_pid != getpid()) {
    if (RAND_poll() != 1)
      throw Error(sqlstate::kInternalError, "could not seed the random number generator");
    seeded_pid = getpid();
  }
  if (out.empty()) return;
  if (RAND_bytes(out.data(), static_cast<int>(out.size())) != 1)
    throw Error(sqlstate::kInternalError, "could not generate random bytes",
                "OpenSSL's random number generator failed.");
}

bool constant_time_equal(ByteView a, ByteView b) noexcept {
  if (a.size() != b.size()) return false;
  if (a.empty()) return true;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

void hkdf_sha256(ByteView ikm, ByteView salt, ByteView info, std::span<std::uint8_t> out) {
  EVP_KDF* kdf = EVP_KDF_fetch(nullptr, OSSL_KDF_NAME_HKDF, nullptr);
  if (kdf == nullptr) throw Error(sqlstate::kInternalError, "HKDF is not available in OpenSSL");
  EVP_KDF_CTX* ctx = EVP_KDF_CTX_new(kdf);
  EVP_KDF_free(kdf);
  if (ctx == nullptr) throw std::bad_alloc();

  char digest[] = "SHA256";
  // OpenSSL rejects an empty key with a NULL pointer; any valid pointer is fine for n = 0.
  static const std::uint8_t empty = 0;
  OSSL_PARAM params[5];
  int n = 0;
  params[n++] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0);
  params[n++] = OSSL_PARAM_construct_octet_string(
      OSSL_KDF_PARAM_KEY, const_cast<std::uint8_t*>(ikm.empty() ? &empty : ikm.data()), ikm.size());
  if (!salt.empty())
    params[n++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT,
                                                    const_cast<std::uint8_t*>(salt.data()), salt.size());
  params[n++] = OSSL_PARAM_construct_octet_string(
      OSSL_KDF_PARAM_INFO, const_cast<std::uint8_t*>(info.empty() ? &empty : info.data()), info.size());
  params[n] = OSSL_PARAM_construct_end();

  int rc = EVP_KDF_derive(ctx, out.data(), out.size(), params);
  EVP_KDF_CTX_free(ctx);
  if (rc != 1) throw Error(sqlstate::kInternalError, "HKDF-SHA256 derivation failed");
}

}  // namespace pg_envelope
