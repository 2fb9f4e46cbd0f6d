// The encoding of a credential's value in the server-wide credential store
// (pg_envelope/credential_store.hpp): a version byte, then fields in order, each a
// secret (4-byte big-endian length + bytes) or a signed 64-bit big-endian integer.
// Written straight into SecureBytes and read back into SecretString, so the secret
// never passes through a std::string. Pure C++.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "pg_envelope/secrets.hpp"
#include "pg_envelope/secure_bytes.hpp"

namespace pg_envelope::remote {

class CredentialWriter {
 public:
  // `kind` tells the sources apart (a value of one is never parsed as another's).
  explicit CredentialWriter(std::uint8_t kind) : kind_(kind) {}
  CredentialWriter& secret(std::string_view s) {
    fields_.push_back({s, 0, true});
    return *this;
  }
  CredentialWriter& integer(std::int64_t v) {
    fields_.push_back({{}, v, false});
    return *this;
  }
  SecureBytes finish() const;

 private:
  struct Field {
    std::string_view text;
    std::int64_t value;
    bool is_secret;
  };
  std::uint8_t kind_;
  std::vector<Field> fields_;
};

// Reads the fields back in the order they were written; every read of a value that is
// truncated, of another kind or version fails (returns false) and so does done() with
// bytes left over.
class CredentialReader {
 public:
  CredentialReader(ByteView bytes, std::uint8_t kind) noexcept;
  bool secret(SecretString& out);
  bool integer(std::int64_t& out) noexcept;
  bool done() const noexcept { return ok_ && pos_ == bytes_.size(); }

 private:
  ByteView bytes_;
  std::size_t pos_ = 0;
  bool ok_ = false;
};

inline constexpr std::uint8_t kAwsCredentialKind = 1;
inline constexpr std::uint8_t kVaultTokenKind = 2;

}  // namespace pg_envelope::remote
