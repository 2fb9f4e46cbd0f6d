// AES-GCM over OpenSSL's EVP interface.
//
// Each AesGcm owns one encryption and one decryption context initialised with the key
// once; every operation re-initialises only the nonce, which keeps the per-value cost
// to the GCM pass itself. The contexts (and the key schedule in them) are cleansed by
// EVP_CIPHER_CTX_free.
#include "pg_envelope/crypto.hpp"

#include <openssl/evp.h>

#include "pg_envelope/error.hpp"

namespace pg_envelope {

namespace {

[[noreturn]] void openssl_failure(const char* what) {
  throw Error(sqlstate::kInternalError, std::string("OpenSSL AES-GCM failure: ") + what);
}

// OpenSSL takes int lengths; refuse anything that does not fit.
int checked_len(std::size_t n) {
  if (n > static_cast<std::size_t>(INT32_MAX))
    throw Error(sqlstate::kProgramLimitExceeded, "value too large to encrypt");
  return static_cast<int>(n);
}

const EVP_CIPHER* aes_gcm_algorithm(std::size_t key_size) {
  // Fetched once per process (see preload_algorithms()): the legacy EVP_aes_*_gcm()
  // objects make every context initialisation fetch the implementation again.
  static EVP_CIPHER* fetched[3] = {EVP_CIPHER_fetch(nullptr, "AES-128-GCM", nullptr),
                                   EVP_CIPHER_fetch(nullptr, "AES-192-GCM", nullptr),
                                   EVP_CIPHER_fetch(nullptr, "AES-256-GCM", nullptr)};
  int i = key_size == 16 ? 0 : key_size == 24 ? 1 : key_size == 32 ? 2 : -1;
  if (i < 0) throw Error(sqlstate::kInternalError, "invalid AES-GCM key length");
  if (fetched[i] == nullptr) throw Error(sqlstate::kInternalError, "AES-GCM is not available in OpenSSL");
  return fetched[i];
}

}  // namespace

void preload_aes_gcm() {
  (void)aes_gcm_algorithm(32);
  // One context initialised and used: OpenSSL sets up its GCM method tables on first use.
  std::uint8_t key[32] = {}, nonce[kGcmNonceSize] = {}, tag[kGcmTagSize], out[1];
  AesGcm gcm({key, sizeof key});
  gcm.seal({nonce, sizeof nonce}, {}, {key, 1}, out, tag);
}

AesGcm::AesGcm(ByteView key) {
  const EVP_CIPHER* cipher = aes_gcm_algorithm(key.size());
  enc_ = EVP_CIPHER_CTX_new();
  dec_ = EVP_CIPHER_CTX_new();
  if (enc_ == nullptr || dec_ == nullptr) {
    EVP_CIPHER_CTX_free(enc_);
    EVP_CIPHER_CTX_free(dec_);
    throw std::bad_alloc();
  }
  // The default GCM IV length is 12 bytes, the only one we use.
  if (EVP_EncryptInit_ex(enc_, cipher, nullptr, key.data(), nullptr) != 1 ||
      EVP_DecryptInit_ex(dec_, cipher, nullptr, key.data(), nullptr) != 1) {
    EVP_CIPHER_CTX_free(enc_);
    EVP_CIPHER_CTX_free(dec_);
    enc_ = dec_ = nullptr;
    openssl_failure("key setup");
  }
}

AesGcm::~AesGcm() {
  EVP_CIPHER_CTX_free(enc_);
  EVP_CIPHER_CTX_free(dec_);
}

void AesGcm::seal(ByteView nonce, ByteView aad, ByteView plaintext, std::uint8_t* out,
                  std::uint8_t tag[kGcmTagSize]) {
  if (nonce.size() != kGcmNonceSize) throw Error(sqlstate::kInternalError, "invalid AES-GCM nonce length");
  int len = 0;
  if (EVP_EncryptInit_ex(enc_, nullptr, nullptr, nullptr, nonce.data()) != 1) openssl_failure("nonce setup");
  if (!aad.empty() && EVP_EncryptUpdate(enc_, nullptr, &len, aad.data(), checked_len(aad.size())) != 1)
    openssl_failure("aad");
  if (!plaintext.empty() &&
      EVP_EncryptUpdate(enc_, out, &len, plaintext.data(), checked_len(plaintext.size())) != 1)
    openssl_failure("encrypt");
  if (EVP_EncryptFinal_ex(enc_, out + plaintext.size(), &len) != 1) openssl_failure("final");
  if (EVP_CIPHER_CTX_ctrl(enc_, EVP_CTRL_GCM_GET_TAG, kGcmTagSize, tag) != 1) openssl_failure("tag");
}

bool AesGcm::open(ByteView nonce, ByteView aad, ByteView ciphertext, const std::uint8_t tag[kGcmTagSize],
                  std::uint8_t* out) {
  if (nonce.size() != kGcmNonceSize) return false;
  int len = 0;
  if (EVP_DecryptInit_ex(dec_, nullptr, nullptr, nullptr, nonce.data()) != 1) openssl_failure("nonce setup");
  if (!aad.empty() && EVP_DecryptUpdate(dec_, nullptr, &len, aad.data(), checked_len(aad.size())) != 1)
    openssl_failure("aad");
  if (!ciphertext.empty() &&
      EVP_DecryptUpdate(dec_, out, &len, ciphertext.data(), checked_len(ciphertext.size())) != 1)
    openssl_failure("decrypt");
  // OpenSSL compares the tag in constant time (CRYPTO_memcmp) inside DecryptFinal.
  if (EVP_CIPHER_CTX_ctrl(dec_, EVP_CTRL_GCM_SET_TAG, kGcmTagSize, const_cast<std::uint8_t*>(tag)) != 1)
    openssl_failure("tag");
  if (EVP_DecryptFinal_ex(dec_, out + ciphertext.size(), &len) != 1) {
    secure_zero(out, ciphertext.size());
    return false;
  }
  return true;
}

}  // namespace pg_envelope
