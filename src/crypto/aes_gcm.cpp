// AES-GCM over OpenSSL's EVP interface.
//
// Each AesGcm owns one encryption and one decryption context initialised with the key
// once; every operation re-initialises only the nonce, which keeps the per-value cost
// to the GCM pass itself. The contexts (and the key schedule in them) are cleansed by
// EVP_CIPHER_CTX_free. A PooledAesGcm borrows its contexts from a per-process pool
// (crypto.hpp); EVP_CIPHER_CTX_reset cleanses a slot's key schedule when its holder goes.
#include "pg_envelope/crypto.hpp"

#include <openssl/evp.h>

#include <array>
#include <cstring>
#include <new>

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

namespace {

// The GCM pass of one value, on a context whose key and nonce are set.
void seal_with(EVP_CIPHER_CTX* ctx, ByteView aad, ByteView plaintext, std::uint8_t* out,
               std::uint8_t tag[kGcmTagSize]) {
  int len = 0;
  if (!aad.empty() && EVP_EncryptUpdate(ctx, nullptr, &len, aad.data(), checked_len(aad.size())) != 1)
    openssl_failure("aad");
  if (!plaintext.empty() && EVP_EncryptUpdate(ctx, out, &len, plaintext.data(), checked_len(plaintext.size())) != 1)
    openssl_failure("encrypt");
  if (EVP_EncryptFinal_ex(ctx, out + plaintext.size(), &len) != 1) openssl_failure("final");
  if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, kGcmTagSize, tag) != 1) openssl_failure("tag");
}

bool open_with(EVP_CIPHER_CTX* ctx, ByteView aad, ByteView ciphertext, const std::uint8_t tag[kGcmTagSize],
               std::uint8_t* out) {
  int len = 0;
  if (!aad.empty() && EVP_DecryptUpdate(ctx, nullptr, &len, aad.data(), checked_len(aad.size())) != 1)
    openssl_failure("aad");
  if (!ciphertext.empty() &&
      EVP_DecryptUpdate(ctx, out, &len, ciphertext.data(), checked_len(ciphertext.size())) != 1)
    openssl_failure("decrypt");
  // OpenSSL compares the tag in constant time (CRYPTO_memcmp) inside DecryptFinal.
  if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, kGcmTagSize, const_cast<std::uint8_t*>(tag)) != 1)
    openssl_failure("tag");
  if (EVP_DecryptFinal_ex(ctx, out + ciphertext.size(), &len) != 1) {
    secure_zero(out, ciphertext.size());
    return false;
  }
  return true;
}

}  // namespace

void AesGcm::seal(ByteView nonce, ByteView aad, ByteView plaintext, std::uint8_t* out,
                  std::uint8_t tag[kGcmTagSize]) {
  if (nonce.size() != kGcmNonceSize) throw Error(sqlstate::kInternalError, "invalid AES-GCM nonce length");
  if (EVP_EncryptInit_ex(enc_, nullptr, nullptr, nullptr, nonce.data()) != 1) openssl_failure("nonce setup");
  seal_with(enc_, aad, plaintext, out, tag);
}

bool AesGcm::open(ByteView nonce, ByteView aad, ByteView ciphertext, const std::uint8_t tag[kGcmTagSize],
                  std::uint8_t* out) {
  if (nonce.size() != kGcmNonceSize) return false;
  if (EVP_DecryptInit_ex(dec_, nullptr, nullptr, nullptr, nonce.data()) != 1) openssl_failure("nonce setup");
  return open_with(dec_, aad, ciphertext, tag, out);
}

// --- PooledAesGcm ------------------------------------------------------------------

namespace {

static_assert((kGcmPoolSlots & (kGcmPoolSlots - 1)) == 0, "the pool size must be a power of two");

struct PoolSlot {
  EVP_CIPHER_CTX* ctx = nullptr;  // created on first use, kept for the process's life
  std::uint64_t holder = 0;       // serial of the instance whose key is set, 0: none
  std::uint8_t key_size = 0;      // the AES variant the context is set up for, 0: none
};

std::array<PoolSlot, kGcmPoolSlots>& pool(bool encrypt) {
  static std::array<PoolSlot, kGcmPoolSlots> enc, dec;
  return encrypt ? enc : dec;
}

std::uint64_t next_serial = 0;
std::uint64_t rekey_count = 0;

// Forgets (and wipes) the key schedule of `serial` in its slot, if it is still there.
void release_slot(bool encrypt, std::uint64_t serial) noexcept {
  PoolSlot& s = pool(encrypt)[serial & (kGcmPoolSlots - 1)];
  if (s.holder != serial) return;
  EVP_CIPHER_CTX_reset(s.ctx);  // frees the cipher's state, OPENSSL_clear_free: the schedule is wiped
  s.holder = 0;
  s.key_size = 0;
}

}  // namespace

PooledAesGcm::PooledAesGcm(ByteView key) : serial_(++next_serial), key_size_(0) {
  (void)aes_gcm_algorithm(key.size());  // refuses other key lengths
  key_size_ = static_cast<std::uint8_t>(key.size());
  std::memcpy(key_, key.data(), key.size());
}

PooledAesGcm::~PooledAesGcm() {
  release_slot(true, serial_);
  release_slot(false, serial_);
  secure_zero(key_, sizeof key_);
}

std::uint64_t PooledAesGcm::rekeys() noexcept { return rekey_count; }

EVP_CIPHER_CTX* PooledAesGcm::start(bool encrypt, ByteView nonce) {
  PoolSlot& s = pool(encrypt)[serial_ & (kGcmPoolSlots - 1)];
  if (s.ctx == nullptr) {
    s.ctx = EVP_CIPHER_CTX_new();
    if (s.ctx == nullptr) throw std::bad_alloc();
  }
  auto init = encrypt ? EVP_EncryptInit_ex : EVP_DecryptInit_ex;
  if (s.holder == serial_) {
    if (init(s.ctx, nullptr, nullptr, nullptr, nonce.data()) != 1) openssl_failure("nonce setup");
    return s.ctx;
  }
  // Another key (or none) is set in this slot: set ours, and the nonce, in one call.
  // The cipher is given again only when the slot holds another AES variant (or none).
  const EVP_CIPHER* cipher = s.key_size == key_size_ ? nullptr : aes_gcm_algorithm(key_size_);
  s.holder = 0;
  if (init(s.ctx, cipher, nullptr, key_, nonce.data()) != 1) {
    EVP_CIPHER_CTX_reset(s.ctx);
    s.key_size = 0;
    openssl_failure("key setup");
  }
  s.holder = serial_;
  s.key_size = key_size_;
  ++rekey_count;
  return s.ctx;
}

void PooledAesGcm::seal(ByteView nonce, ByteView aad, ByteView plaintext, std::uint8_t* out,
                        std::uint8_t tag[kGcmTagSize]) {
  if (nonce.size() != kGcmNonceSize) throw Error(sqlstate::kInternalError, "invalid AES-GCM nonce length");
  seal_with(start(true, nonce), aad, plaintext, out, tag);
}

bool PooledAesGcm::open(ByteView nonce, ByteView aad, ByteView ciphertext, const std::uint8_t tag[kGcmTagSize],
                        std::uint8_t* out) {
  if (nonce.size() != kGcmNonceSize) return false;
  return open_with(start(false, nonce), aad, ciphertext, tag, out);
}

}  // namespace pg_envelope
