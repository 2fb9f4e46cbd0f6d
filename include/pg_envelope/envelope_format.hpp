// Envelope formats 1 and 2: the bytes stored in encrypted_text / encrypted_bytea /
// encrypted_jsonb values, and their canonical text form. docs/format.md is the
// byte-by-byte specification; this file and that document change together.
//
// Format 1 (pg_envelope 0.1.0; always readable):
//   offset size field
//   0      1    format version (1)
//   1      1    algorithm id (1 = AES-256-GCM)
//   2      4    key id, big-endian (envelope.key.key_id)
//   6      4    DEK version, big-endian (envelope.data_key.version)
//   10     12   nonce
//   22     n    ciphertext
//   22+n   16   GCM tag                                    overhead: 38 bytes
//
// Format 2 (compact; written by default from 0.2.0):
//   0      1    format version (2), which also means AES-256-GCM
//   1      4    key id, big-endian
//   5      v    DEK version, unsigned LEB128 in its shortest form (v = 1 for 1-127,
//               2 up to 16383, at most 5)
//   5+v    12   nonce
//   17+v   n    ciphertext
//   17+v+n 16   GCM tag                          overhead: 33 + v bytes (34 usually)
//
// The AAD is the header bytes, one byte naming the plaintext type, then either 0x00
// (no context) or 0x01 followed by the context bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "pg_envelope/crypto.hpp"

namespace pg_envelope {

inline constexpr std::uint8_t kFormatV1 = 1;
inline constexpr std::uint8_t kFormatV2 = 2;
inline constexpr std::uint8_t kAlgAes256Gcm = 1;
inline constexpr std::size_t kHeaderSizeV1 = 22;
inline constexpr std::size_t kMaxHeaderSize = kHeaderSizeV1;  // format 2: 18 to 22
inline constexpr std::size_t kEnvelopeOverheadV1 = kHeaderSizeV1 + kGcmTagSize;  // 38 bytes
inline constexpr std::size_t kMinEnvelopeSize = 1 + 4 + 1 + kGcmNonceSize + kGcmTagSize;  // 34: format 2, empty
// The text form's prefix names the text encoding (base64 of the bytes), the same for
// both binary formats, so that applications recognising ciphertext by "env1:" keep
// working.
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
  std::uint8_t format = kFormatV2;
  std::uint8_t algorithm = kAlgAes256Gcm;
  DekId dek;
  std::uint8_t nonce[kGcmNonceSize] = {};
};

// A parsed, structurally valid envelope; the spans point into the caller's buffer.
struct EnvelopeView {
  EnvelopeHeader header;
  ByteView header_bytes;  // the header bytes (22 in format 1, 18-22 in format 2), as authenticated
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

// The header's size in h.format (kFormatV1 or kFormatV2), and the bytes an envelope
// adds to its plaintext.
std::size_t header_size(const EnvelopeHeader& h) noexcept;
inline std::size_t envelope_overhead(const EnvelopeHeader& h) noexcept { return header_size(h) + kGcmTagSize; }

// Writes the header in h.format; returns header_size(h) (at most kMaxHeaderSize).
std::size_t write_header(const EnvelopeHeader& h, std::uint8_t* out) noexcept;

// AAD = header || type || (0x00 | 0x01 || context). `has_context` distinguishes a
// NULL context from an empty one.
void build_aad(ByteView header_bytes, PlainType type, bool has_context, std::string_view context,
               Bytes& aad);

// Writes a whole envelope into `out` (envelope_overhead(h) + plaintext.size() bytes):
// h with a fresh nonce, then `plaintext` sealed under `aead` with the AAD above (built
// in `aad`, a buffer the caller may reuse). h.format and h.dek are the caller's.
void seal_envelope(EnvelopeHeader h, Aead& aead, PlainType type, bool has_context, std::string_view context,
                   ByteView plaintext, std::uint8_t* out, Bytes& aad);

// Canonical text form: "env1:" followed by standard padded base64 of the bytes.
std::size_t text_form_length(std::size_t binary_len) noexcept;
void write_text_form(ByteView bytes, char* out) noexcept;  // writes text_form_length() chars, no NUL

// Decodes the text form strictly: exact prefix, canonical base64 (padding required,
// unused bits zero, no whitespace). Returns a problem on failure.
FormatProblem decode_text_form(std::string_view text, Bytes& out);

}  // namespace pg_envelope
