// Envelope format v1: the bytes stored in encrypted_text / encrypted_bytea /
// encrypted_jsonb values, and their canonical text form. docs/format.md is the
// byte-by-byte specification; this file and that document change together.
//
//   offset size field
//   0      1    format version (1)
//   1      1    algorithm id (1 = AES-256-GCM)
//   2      4    key id, big-endian (envelope.key.key_id)
//   6      4    DEK version, big-endian (envelope.data_key.version)
//   10     12   nonce
//   22     n    ciphertext
//   22+n   16   GCM tag
//
// The AAD is the 22 header bytes, one byte naming the plaintext type, then either
// 0x00 (no context) or 0x01 followed by the context bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "pg_envelope/crypto.hpp"

namespace pg_envelope {

inline constexpr std::uint8_t kFormatV1 = 1;
inline constexpr std::uint8_t kAlgAes256Gcm = 1;
inline constexpr std::size_t kHeaderSize = 22;
inline constexpr std::size_t kEnvelopeOverhead = kHeaderSize + kGcmTagSize;  // 38 bytes
inline constexpr std::string_view kTextPrefix = "env1:";

// Which SQL type a value belongs to; bound into the AAD so a ciphertext cannot be
// reinterpreted as another type.
enum class PlainType : std::uint8_t { kText = 1, kBytea = 2, kJsonb = 3 };

struct DekId {
  std::uint32_t key_id = 0;
  std::uint32_t version = 0;
  bool operator==(const DekId& o) const noexcept { return key_id == o.key_id && version == o.version; }
};

struct EnvelopeHeader {
  std::uint8_t format = kFormatV1;
  std::uint8_t algorithm = kAlgAes256Gcm;
  DekId dek;
  std::uint8_t nonce[kGcmNonceSize] = {};
};

// A parsed, structurally valid envelope; the spans point into the caller's buffer.
struct EnvelopeView {
  EnvelopeHeader header;
  ByteView header_bytes;  // the 22 header bytes, as authenticated
  ByteView ciphertext;
  ByteView tag;
};

// Why a byte string is not an envelope; the text never includes the value itself.
struct FormatProblem {
  const char* detail = nullptr;  // a full sentence, or nullptr when valid
  explicit operator bool() const noexcept { return detail != nullptr; }
};

// Validates structure (length, version, algorithm, ids). Never decrypts.
FormatProblem parse_envelope(ByteView bytes, EnvelopeView& out) noexcept;

void write_header(const EnvelopeHeader& h, std::uint8_t out[kHeaderSize]) noexcept;

// AAD = header || type || (0x00 | 0x01 || context). `has_context` distinguishes a
// NULL context from an empty one.
void build_aad(ByteView header_bytes, PlainType type, bool has_context, std::string_view context,
               Bytes& aad);

// Canonical text form: "env1:" followed by standard padded base64 of the bytes.
std::size_t text_form_length(std::size_t binary_len) noexcept;
void write_text_form(ByteView bytes, char* out) noexcept;  // writes text_form_length() chars, no NUL

// Decodes the text form strictly: exact prefix, canonical base64 (padding required,
// unused bits zero, no whitespace). Returns a problem on failure.
FormatProblem decode_text_form(std::string_view text, Bytes& out);

}  // namespace pg_envelope
