// The built-in "local" KMS: KEKs derived from the master key with HKDF-SHA256, DEKs
// wrapped with AES-256-GCM.
//
//   KEK(name)      = HKDF-SHA256(ikm = master key, salt = "pg_envelope local KEK v1",
//                                info = kek name)
//   wrapped DEK    = 0x01 || nonce(12) || AES-256-GCM(KEK, nonce, DEK, aad)(32) || tag(16)
//   aad            = "pg_envelope DEK v1" || 0x00 || key_id(4, BE) || version(4, BE) || key name
//
// And the process-wide local KMS over the server's master key: installed once (in the
// postmaster), or the reason it could not be, which local_kms() reports.
#include <cctype>
#include <cstring>

#include "pg_envelope/crypto.hpp"
#include "pg_envelope/encoding.hpp"
#include "pg_envelope/error.hpp"
#include "pg_envelope/kms.hpp"

namespace pg_envelope {

namespace {

constexpr std::uint8_t kWrapFormat = 1;
constexpr std::size_t kWrappedSize = 1 + kGcmNonceSize + kAes256KeySize + kGcmTagSize;  // 61
constexpr std::string_view kKekSalt = "pg_envelope local KEK v1";
constexpr std::string_view kWrapLabel = "pg_envelope DEK v1";

// Not std::isalnum: that follows the server's locale, the documented alphabet does not.
bool is_ascii_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); }

Bytes wrap_aad(const DekBinding& b) {
  Bytes aad(kWrapLabel.begin(), kWrapLabel.end());
  aad.push_back(0);
  std::uint8_t ids[8];
  store_be32(ids, b.key_id);
  store_be32(ids + 4, b.version);
  aad.insert(aad.end(), ids, ids + 8);
  aad.insert(aad.end(), b.key_name.begin(), b.key_name.end());
  return aad;
}

class LocalKms final : public KmsProvider {
 public:
  explicit LocalKms(ByteView master) : master_(master.data(), master.size()) {
    if (master.size() != kAes256KeySize) throw Error(sqlstate::kInternalError, "master key must be 32 bytes");
  }

  const std::string& kms_name() const override { return name_; }
  std::string default_kek() const override { return "default"; }

  void validate_kek(std::string_view kek) const override {
    bool ok = !kek.empty() && kek.size() <= 128;
    for (char c : kek) ok = ok && (is_ascii_alnum(c) || (c != '\0' && std::strchr("_.:/-", c)));
    if (!ok)
      throw Error(sqlstate::kInvalidParameterValue, "invalid KEK name for the local KMS",
                  "A local KEK name is 1 to 128 characters from A-Z, a-z, 0-9 and \"_.:/-\".");
  }

  Bytes wrap(std::string_view kek, const DekBinding& b, ByteView dek) override {
    if (dek.size() != kAes256KeySize) throw Error(sqlstate::kInternalError, "a DEK must be 32 bytes");
    SecureBytes k = derive_kek(kek);
    AesGcm aead(k.view());
    Bytes out(kWrappedSize);
    out[0] = kWrapFormat;
    random_bytes({out.data() + 1, kGcmNonceSize});
    Bytes aad = wrap_aad(b);
    aead.seal({out.data() + 1, kGcmNonceSize}, aad, dek, out.data() + 1 + kGcmNonceSize,
              out.data() + 1 + kGcmNonceSize + kAes256KeySize);
    return out;
  }

  SecureBytes unwrap(std::string_view kek, const DekBinding& b, ByteView wrapped) override {
    if (wrapped.size() != kWrappedSize || wrapped[0] != kWrapFormat)
      throw Error(sqlstate::kDataException,
                  "wrapped data key of key \"" + b.key_name + "\" version " + std::to_string(b.version) +
                      " is malformed",
                  "The stored wrapped data key is not in the local KMS format.");
    SecureBytes k = derive_kek(kek);
    AesGcm aead(k.view());
    SecureBytes dek(kAes256KeySize);
    Bytes aad = wrap_aad(b);
    if (!aead.open(wrapped.subspan(1, kGcmNonceSize), aad, wrapped.subspan(1 + kGcmNonceSize, kAes256KeySize),
                   wrapped.data() + 1 + kGcmNonceSize + kAes256KeySize, dek.data()))
      throw Error(sqlstate::kDataException,
                  "could not unwrap the data key of key \"" + b.key_name + "\" version " +
                      std::to_string(b.version) + " with the local KMS",
                  "The wrapped data key does not authenticate under KEK \"" + std::string(kek) +
                      "\": the server's master key differs from the one that created it, or the stored "
                      "key row was modified.",
                  "Start the server with the master key this database's keys were created with.");
    return dek;
  }

 private:
  SecureBytes derive_kek(std::string_view kek) const {
    SecureBytes out(kAes256KeySize);
    hkdf_sha256(master_.view(), as_bytes(kKekSalt), as_bytes(kek), out.span());
    return out;
  }

  std::string name_ = "local";
  SecureBytes master_;
};

}  // namespace

std::unique_ptr<KmsProvider> make_local_kms(ByteView master_key) { return std::make_unique<LocalKms>(master_key); }

namespace {

std::unique_ptr<KmsProvider>& local_slot() {
  static std::unique_ptr<KmsProvider> provider;
  return provider;
}

MasterKeyStatus& status_slot() {
  static MasterKeyStatus status;
  return status;
}

}  // namespace

void install_master_key(SecureBytes key) {
  local_slot() = make_local_kms(key.view());
  MasterKeyStatus& s = status_slot();
  s.state = MasterKeyStatus::State::kLoaded;
  s.sqlstate.clear();
  s.message.clear();
}

void record_master_key_failure(MasterKeyStatus status) {
  local_slot().reset();
  status_slot() = std::move(status);
}

KmsProvider& local_kms() {
  if (auto& p = local_slot()) return *p;

  const MasterKeyStatus& s = status_slot();
  switch (s.state) {
    case MasterKeyStatus::State::kNotLoaded:
      throw Error(sqlstate::kObjectNotInPrerequisiteState,
                  "pg_envelope must be loaded via \"shared_preload_libraries\"",
                  "The local KMS master key is read once, when the server starts.",
                  "Add pg_envelope to shared_preload_libraries in postgresql.conf and restart the server.");
    case MasterKeyStatus::State::kNotConfigured:
      throw Error(sqlstate::kObjectNotInPrerequisiteState, "the local KMS has no master key",
                  "Neither envelope.master_key_file nor envelope.master_key_command is set.",
                  "Generate a key with \"openssl rand -hex 32\", store it in a file readable only by the "
                  "server's user, set envelope.master_key_file to its path and restart the server.");
    default:
      throw Error(s.sqlstate.empty() ? sqlstate::kObjectNotInPrerequisiteState : s.sqlstate.c_str(),
                  "the local KMS master key could not be loaded" + (s.source.empty() ? "" : " from " + s.source),
                  s.message + " The key is read once, when the server starts.",
                  s.source.empty() ? "Correct the master key settings and restart the server."
                                   : "Correct " + s.source + " and restart the server.");
  }
}

}  // namespace pg_envelope
