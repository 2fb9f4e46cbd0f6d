// Cryptographic primitives, all through OpenSSL: AES-GCM, HKDF-SHA256, SHA-256, HMAC-SHA256, the CSPRNG
// and constant-time comparison. Pure C++: no PostgreSQL headers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "pg_envelope/secure_bytes.hpp"

typedef struct evp_cipher_ctx_st EVP_CIPHER_CTX;
typedef struct evp_mac_ctx_st EVP_MAC_CTX;

namespace pg_envelope {

inline constexpr std::size_t kGcmNonceSize = 12;  // 96-bit nonce, the only size we emit
inline constexpr std::size_t kGcmTagSize = 16;    // 128-bit tag
inline constexpr std::size_t kAes256KeySize = 32;

// Fill `out` with bytes from OpenSSL's CSPRNG. Throws Error on failure (never
// returns predictable bytes).
void random_bytes(std::span<std::uint8_t> out);

// A fresh 96-bit GCM nonce. Nonces are public, so they are drawn from the CSPRNG in
// 4 KiB batches (one RAND_bytes call per 341 nonces); the batch is discarded in a
// forked child, so no two processes ever hand out the same nonce.
void random_nonce(std::uint8_t out[kGcmNonceSize]);

// Constant-time equality of two equal-length buffers; false if lengths differ.
bool constant_time_equal(ByteView a, ByteView b) noexcept;

// HKDF-SHA256 (RFC 5869) extract-and-expand into out.size() bytes.
void hkdf_sha256(ByteView ikm, ByteView salt, ByteView info, std::span<std::uint8_t> out);

// Fetches the OpenSSL algorithms the extension uses (SHA-256, HMAC, HKDF, AES-GCM) and
// runs each once, so that a process forked afterwards (a backend forked by the
// postmaster) finds them ready instead of paying the first fetch itself. Optional:
// every primitive fetches on first use otherwise.
void preload_algorithms();
void preload_aes_gcm();  // the AES-GCM part (aes_gcm.cpp)

// SHA-256 of `data` (OpenSSL's one-shot digest).
void sha256(ByteView data, std::uint8_t out[32]);

// HMAC-SHA256 (RFC 2104) of `data` under `key` (OpenSSL).
void hmac_sha256(ByteView key, ByteView data, std::uint8_t out[32]);

// HMAC-SHA256 under one key, for many messages: the keyed state is computed once
// (the one-shot hmac_sha256() fetches the algorithms and hashes the key every call).
// Not thread-safe; the key is held by OpenSSL's context and cleansed when it is freed.
class HmacSha256 {
 public:
  explicit HmacSha256(ByteView key);
  ~HmacSha256();
  HmacSha256(HmacSha256&& other) noexcept : ctx_(other.ctx_) { other.ctx_ = nullptr; }
  HmacSha256& operator=(HmacSha256&&) = delete;
  HmacSha256(const HmacSha256&) = delete;
  HmacSha256& operator=(const HmacSha256&) = delete;

  void mac(ByteView data, std::uint8_t out[32]);

 private:
  EVP_MAC_CTX* ctx_ = nullptr;
};

// HKDF-SHA256 (RFC 5869) under one input key and salt, for many infos: the extract
// step and the keyed HMAC state are computed once, so each expand() is the HMAC of
// its info alone (hkdf_sha256() fetches the algorithms and extracts at every call).
// Same output as hkdf_sha256(ikm, salt, info, out). Not thread-safe; the pseudorandom
// key is held by OpenSSL's context and cleansed when it is freed.
//
// RFC 5869's two steps over OpenSSL's HMAC-SHA256 rather than OpenSSL's HKDF, which
// cannot do this: OpenSSL 3.0 cannot copy an HKDF context (EVP_KDF_CTX_dup returns
// NULL), a new one fetches SHA-256 and HMAC again, and reusing one across derivations
// with different infos crashed in OpenSSL 3.0.19. Checked against the Wycheproof HKDF
// vectors and RFC 5869's appendix A (test/unit/hkdf_test.cpp).
class HkdfSha256 {
 public:
  HkdfSha256(ByteView ikm, ByteView salt);
  // out.size() at most 255 * 32 bytes (Error otherwise).
  void expand(ByteView info, std::span<std::uint8_t> out);

 private:
  HmacSha256 prk_;
};

// Sealing and opening with one AES-GCM key: what the envelope format encrypts with.
class Aead {
 public:
  virtual ~Aead() = default;

  // Encrypts plaintext into out (plaintext.size() bytes) and writes the tag.
  // nonce must be kGcmNonceSize bytes. out may alias plaintext.
  virtual void seal(ByteView nonce, ByteView aad, ByteView plaintext, std::uint8_t* out,
                    std::uint8_t tag[kGcmTagSize]) = 0;

  // Decrypts ciphertext into out (ciphertext.size() bytes) and verifies the tag in
  // constant time. Returns false, with out wiped, if authentication fails.
  [[nodiscard]] virtual bool open(ByteView nonce, ByteView aad, ByteView ciphertext,
                                  const std::uint8_t tag[kGcmTagSize], std::uint8_t* out) = 0;
};

// AES-GCM with a fixed key (16, 24 or 32 bytes). The key schedule is computed once,
// so sealing and opening many short values with one key is cheap. Not thread-safe.
class AesGcm final : public Aead {
 public:
  explicit AesGcm(ByteView key);
  ~AesGcm() override;
  AesGcm(const AesGcm&) = delete;
  AesGcm& operator=(const AesGcm&) = delete;

  void seal(ByteView nonce, ByteView aad, ByteView plaintext, std::uint8_t* out,
            std::uint8_t tag[kGcmTagSize]) override;
  [[nodiscard]] bool open(ByteView nonce, ByteView aad, ByteView ciphertext, const std::uint8_t tag[kGcmTagSize],
                          std::uint8_t* out) override;

 private:
  EVP_CIPHER_CTX* enc_ = nullptr;
  EVP_CIPHER_CTX* dec_ = nullptr;
};

// AES-GCM with a fixed key, for caches of thousands of keys (one per cached DEK).
// AesGcm keeps two OpenSSL contexts per key (about 2 kB in several allocations: key
// schedule, GHASH table, state); a cache of 10,000 keys used in random order then
// reads them from main memory on almost every value. A PooledAesGcm keeps only the
// key (wiped when it is destroyed) and borrows its contexts from a per-process pool
// of kGcmPoolSlots contexts per direction: an instance always uses the slot of its
// serial number (so up to kGcmPoolSlots instances created one after another never
// share one), and sets the key up again (AES key expansion and GHASH table, a fraction
// of a microsecond) only when another instance used that slot since. A slot's key
// schedule is wiped (its context reset) when the instance that holds it is destroyed.
// Not thread-safe: the pool is per process (a PostgreSQL backend is single-threaded).
inline constexpr std::size_t kGcmPoolSlots = 1024;

class PooledAesGcm final : public Aead {
 public:
  explicit PooledAesGcm(ByteView key);  // 16, 24 or 32 bytes
  ~PooledAesGcm() override;
  PooledAesGcm(const PooledAesGcm&) = delete;
  PooledAesGcm& operator=(const PooledAesGcm&) = delete;

  void seal(ByteView nonce, ByteView aad, ByteView plaintext, std::uint8_t* out,
            std::uint8_t tag[kGcmTagSize]) override;
  [[nodiscard]] bool open(ByteView nonce, ByteView aad, ByteView ciphertext, const std::uint8_t tag[kGcmTagSize],
                          std::uint8_t* out) override;

  // How many times, in this process, a pool slot had to be keyed again (for tests and
  // benchmarks).
  static std::uint64_t rekeys() noexcept;

 private:
  EVP_CIPHER_CTX* start(bool encrypt, ByteView nonce);

  std::uint64_t serial_;
  std::uint8_t key_size_;
  std::uint8_t key_[32];
};

inline ByteView as_bytes(std::string_view s) noexcept {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

}  // namespace pg_envelope
