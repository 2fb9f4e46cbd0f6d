// Credential values of the shared credential store (see credential_codec.hpp).
#include "credential_codec.hpp"

#include <cstring>

namespace pg_envelope::remote {

namespace {

constexpr std::uint8_t kVersion = 1;

void put_be(std::uint8_t* p, std::uint64_t v, int n) noexcept {
  for (int i = n - 1; i >= 0; --i, v >>= 8) p[i] = static_cast<std::uint8_t>(v);
}

std::uint64_t get_be(const std::uint8_t* p, int n) noexcept {
  std::uint64_t v = 0;
  for (int i = 0; i < n; ++i) v = (v << 8) | p[i];
  return v;
}

}  // namespace

SecureBytes CredentialWriter::finish() const {
  std::size_t n = 2;
  for (const Field& f : fields_) n += f.is_secret ? 4 + f.text.size() : 8;
  SecureBytes out(n);
  std::uint8_t* p = out.data();
  *p++ = kVersion;
  *p++ = kind_;
  for (const Field& f : fields_) {
    if (f.is_secret) {
      put_be(p, f.text.size(), 4);
      p += 4;
      if (!f.text.empty()) std::memcpy(p, f.text.data(), f.text.size());
      p += f.text.size();
    } else {
      put_be(p, static_cast<std::uint64_t>(f.value), 8);
      p += 8;
    }
  }
  return out;
}

CredentialReader::CredentialReader(ByteView bytes, std::uint8_t kind) noexcept : bytes_(bytes) {
  ok_ = bytes.size() >= 2 && bytes[0] == kVersion && bytes[1] == kind;
  pos_ = ok_ ? 2 : 0;
}

bool CredentialReader::secret(SecretString& out) {
  if (!ok_ || bytes_.size() - pos_ < 4) return ok_ = false;
  std::uint64_t n = get_be(bytes_.data() + pos_, 4);
  if (bytes_.size() - pos_ - 4 < n) return ok_ = false;
  out.wipe();
  out.append(reinterpret_cast<const char*>(bytes_.data() + pos_ + 4), static_cast<std::size_t>(n));
  pos_ += 4 + static_cast<std::size_t>(n);
  return true;
}

bool CredentialReader::integer(std::int64_t& out) noexcept {
  if (!ok_ || bytes_.size() - pos_ < 8) return ok_ = false;
  out = static_cast<std::int64_t>(get_be(bytes_.data() + pos_, 8));
  pos_ += 8;
  return true;
}

}  // namespace pg_envelope::remote
