// CSPRNG, nonces, HKDF-SHA256, SHA-256 and constant-time comparison via OpenSSL.
#include <openssl/crypto.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include "pg_envelope/crypto.hpp"
#include "pg_envelope/error.hpp"

namespace pg_envelope {

namespace {

// Backends are forked from the postmaster. OpenSSL 3 detects the fork and reseeds its
// DRBG; we reseed once more in each new process so no two processes can ever share
// DRBG state, whatever that detection does. The flag is cleared in the child by a
// pthread_atfork handler (PostgreSQL forks with fork(), which runs it), which keeps
// the per-value path free of a getpid() system call.
std::atomic<bool> seeded{false};

// The nonce batch (see random_nonce). `nonce_left` bytes at the end are unused.
constexpr std::size_t kNonceBatch = 341 * kGcmNonceSize;  // 4092 bytes
std::uint8_t nonce_batch[kNonceBatch];
std::size_t nonce_left = 0;

void on_fork_child() {
  seeded.store(false, std::memory_order_relaxed);
  nonce_left = 0;  // never reuse the parent's nonces
}

void ensure_seeded() {
  static const bool registered = (pthread_atfork(nullptr, nullptr, on_fork_child) == 0);
  if (!registered) throw Error(sqlstate::kInternalError, "could not register the fork handler of the RNG");
  if (seeded.load(std::memory_order_relaxed)) return;
  if (RAND_poll() != 1) throw Error(sqlstate::kInternalError, "could not seed the random number generator");
  seeded.store(true, std::memory_order_relaxed);
}

}  // namespace

void random_bytes(std::span<std::uint8_t> out) {
  ensure_seeded();
  if (out.empty()) return;
  if (RAND_bytes(out.data(), static_cast<int>(out.size())) != 1)
    throw Error(sqlstate::kInternalError, "could not generate random bytes",
                "OpenSSL's random number generator failed.");
}

void random_nonce(std::uint8_t out[kGcmNonceSize]) {
  if (nonce_left < kGcmNonceSize) {
    random_bytes({nonce_batch, kNonceBatch});
    nonce_left = kNonceBatch;
  }
  std::memcpy(out, nonce_batch + (kNonceBatch - nonce_left), kGcmNonceSize);
  // Wipe what was handed out, so the batch never holds a used nonce twice.
  std::memset(nonce_batch + (kNonceBatch - nonce_left), 0, kGcmNonceSize);
  nonce_left -= kGcmNonceSize;
}

bool constant_time_equal(ByteView a, ByteView b) noexcept {
  if (a.size() != b.size()) return false;
  if (a.empty()) return true;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

namespace {

// The algorithms, fetched from OpenSSL's default provider once per process (and, by
// preload_algorithms(), once in the postmaster before any backend forks): an implicit
// fetch at every call, or the first one in every new backend, costs far more than the
// operation on a short input.
EVP_MD* sha256_algorithm() {
  static EVP_MD* md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  if (md == nullptr) throw Error(sqlstate::kInternalError, "SHA-256 is not available in OpenSSL");
  return md;
}

}  // namespace

void sha256(ByteView data, std::uint8_t out[32]) {
  unsigned int n = 0;
  if (EVP_Digest(data.data(), data.size(), out, &n, sha256_algorithm(), nullptr) != 1 || n != 32)
    throw Error(sqlstate::kInternalError, "SHA-256 failed");
}

void hmac_sha256(ByteView key, ByteView data, std::uint8_t out[32]) {
  unsigned int n = 0;
  // HMAC() with an empty key still needs a non-null pointer.
  static const std::uint8_t kEmpty = 0;
  if (HMAC(sha256_algorithm(), key.empty() ? &kEmpty : key.data(), static_cast<int>(key.size()), data.data(), data.size(),
           out, &n) == nullptr ||
      n != 32)
    throw Error(sqlstate::kInternalError, "HMAC-SHA256 failed");
}

namespace {
EVP_MAC* hmac_algorithm() {
  static EVP_MAC* mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  if (mac == nullptr) throw Error(sqlstate::kInternalError, "HMAC is not available in OpenSSL");
  return mac;
}

// HMAC with SHA-256 set and no key: each HmacSha256 is a copy of it, keyed. Setting
// the digest by name fetches SHA-256 again in OpenSSL's HMAC; a copy does not.
EVP_MAC_CTX* hmac_template() {
  static EVP_MAC_CTX* tmpl = [] {
    EVP_MAC_CTX* c = EVP_MAC_CTX_new(hmac_algorithm());
    if (c == nullptr) throw std::bad_alloc();
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                           OSSL_PARAM_construct_end()};
    if (EVP_MAC_CTX_set_params(c, params) != 1) {
      EVP_MAC_CTX_free(c);
      throw Error(sqlstate::kInternalError, "HMAC-SHA256 setup failed");
    }
    return c;
  }();
  return tmpl;
}
}  // namespace

HmacSha256::HmacSha256(ByteView key) {
  ctx_ = EVP_MAC_CTX_dup(hmac_template());
  if (ctx_ == nullptr) throw std::bad_alloc();
  static const std::uint8_t kEmpty = 0;
  if (EVP_MAC_init(ctx_, key.empty() ? &kEmpty : key.data(), key.size(), nullptr) != 1) {
    EVP_MAC_CTX_free(ctx_);
    ctx_ = nullptr;
    throw Error(sqlstate::kInternalError, "HMAC-SHA256 setup failed");
  }
}

HmacSha256::~HmacSha256() { EVP_MAC_CTX_free(ctx_); }

void HmacSha256::mac(ByteView data, std::uint8_t out[32]) {
  std::size_t n = 0;
  // A NULL key re-initialises with the key already set (OpenSSL 3).
  if (ctx_ == nullptr || EVP_MAC_init(ctx_, nullptr, 0, nullptr) != 1 ||
      (!data.empty() && EVP_MAC_update(ctx_, data.data(), data.size()) != 1) ||
      EVP_MAC_final(ctx_, out, &n, 32) != 1 || n != 32)
    throw Error(sqlstate::kInternalError, "HMAC-SHA256 failed");
}

namespace {

// HKDF-Extract: PRK = HMAC(salt, IKM), an empty salt being 32 zero bytes.
HmacSha256 extract(ByteView ikm, ByteView salt) {
  static const std::uint8_t kZeros[32] = {};
  HmacSha256 keyed(salt.empty() ? ByteView(kZeros, sizeof kZeros) : salt);
  std::uint8_t prk[32];
  keyed.mac(ikm, prk);
  HmacSha256 expander(ByteView(prk, sizeof prk));
  secure_zero(prk, sizeof prk);
  return expander;
}

}  // namespace

HkdfSha256::HkdfSha256(ByteView ikm, ByteView salt) : prk_(extract(ikm, salt)) {}

void HkdfSha256::expand(ByteView info, std::span<std::uint8_t> out) {
  if (out.size() > 255 * 32) throw Error(sqlstate::kInternalError, "HKDF-SHA256 derivation failed");
  // T(i) = HMAC(PRK, T(i-1) | info | i), T(0) empty.
  std::vector<std::uint8_t, ZeroingAllocator<std::uint8_t>> msg;
  msg.reserve(32 + info.size() + 1);
  std::uint8_t t[32];
  std::size_t off = 0;
  for (unsigned i = 1; off < out.size(); ++i) {
    msg.clear();
    if (i > 1) msg.insert(msg.end(), t, t + sizeof t);
    msg.insert(msg.end(), info.begin(), info.end());
    msg.push_back(static_cast<std::uint8_t>(i));
    prk_.mac({msg.data(), msg.size()}, t);
    std::size_t n = std::min(sizeof t, out.size() - off);
    std::memcpy(out.data() + off, t, n);
    off += n;
  }
  secure_zero(t, sizeof t);
}

void hkdf_sha256(ByteView ikm, ByteView salt, ByteView info, std::span<std::uint8_t> out) {
  // Extract and expand over HMAC-SHA256 (RFC 5869 section 2), without OpenSSL's
  // HKDF, which fetches its digest and HMAC again at every derivation.
  if (out.empty() || out.size() > 255 * 32) throw Error(sqlstate::kInternalError, "HKDF-SHA256 derivation failed");
  HkdfSha256(ikm, salt).expand(info, out);
}

void preload_algorithms() {
  (void)sha256_algorithm();
  (void)hmac_template();
  preload_aes_gcm();
  // One derivation and one digest: OpenSSL builds its per-algorithm method caches and
  // name maps on first use.
  std::uint8_t out[32];
  hkdf_sha256(as_bytes(std::string_view("preload")), {}, {}, {out, sizeof out});
  sha256(as_bytes(std::string_view("preload")), out);
  secure_zero(out, sizeof out);
}

}  // namespace pg_envelope
