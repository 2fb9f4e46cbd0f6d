// Byte encodings, all in one place. Pure C++: no PostgreSQL headers.
//
//   - Standard base64 (RFC 4648 section 4: "+" and "/", "=" padding), decoded
//     strictly, so every byte string has exactly one accepted text: the envelope's
//     text form, and the base64 fields of KMS requests and responses. Two forms: into
//     std::string and Bytes for values that are public (ciphertexts), and into
//     SecretString and SecureBytes for values that are secrets (DEKs with their
//     binding tag on their way to and from a KMS), so no plain std::string or
//     std::vector ever holds a secret.
//   - Base64url (RFC 4648 section 5: "-" and "_"), without padding: binary values in
//     JOSE/JWK and so in Azure Key Vault's wrapkey and unwrapkey calls. They may be
//     key material, so only the wiping form exists.
//   - 32-bit big-endian integers: the key id and DEK version in the envelope header
//     (docs/format.md), the local KMS's AAD and the DEK binding tag.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "pg_envelope/secrets.hpp"
#include "pg_envelope/secure_bytes.hpp"

namespace pg_envelope {

// ---------------------------------------------------------------- base64

// The length of the padded base64 of `binary_len` bytes: 4 characters for every 3
// bytes begun.
std::size_t base64_length(std::size_t binary_len) noexcept;

// Writes the padded base64 of `in` to `out`: base64_length(in.size()) characters,
// no NUL. Allocates nothing.
void base64_write(ByteView in, char* out) noexcept;

// The padded base64 of `in`. Not for secrets: see base64_encode_secret().
std::string base64_encode(ByteView in);

// Strict decoding: the length a multiple of 4, only the standard alphabet, "=" only
// at the very end and only to complete the last quantum, unused bits zero (no
// whitespace, no missing or extra padding). Empty text decodes to no bytes. `out`
// is cleared first; on failure returns false, and `out` may hold the bytes decoded
// before the fault.
bool base64_decode_strict(std::string_view in, Bytes& out);

// The padded base64 of `bytes`, exactly as base64_encode(), into a SecretString.
SecretString base64_encode_secret(ByteView bytes);

// Decodes with exactly the rules of base64_decode_strict() into wiping memory. On
// failure returns false and leaves `out` empty.
[[nodiscard]] bool base64_decode_secret(std::string_view text, SecureBytes& out);

// ---------------------------------------------------------------- base64url

// Encodes without padding: 4 characters per 3 bytes, 2 or 3 for a final 1 or 2 bytes.
SecretString base64url_encode(ByteView bytes);

// Decodes the unpadded form; padding is also accepted when it is exactly right
// ("Zg==", never "Zg=" or "Zg==="). Refuses characters outside the URL-safe
// alphabet (including "+", "/" and whitespace), a length of 1 mod 4 and non-zero
// unused bits, so every byte string has exactly one accepted unpadded encoding.
// On failure returns false and leaves `out` empty.
[[nodiscard]] bool base64url_decode(std::string_view text, SecureBytes& out);

// ---------------------------------------------------------------- big-endian

inline std::uint32_t load_be32(const std::uint8_t* p) noexcept {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | p[3];
}

inline void store_be32(std::uint8_t* p, std::uint32_t v) noexcept {
  p[0] = static_cast<std::uint8_t>(v >> 24);
  p[1] = static_cast<std::uint8_t>(v >> 16);
  p[2] = static_cast<std::uint8_t>(v >> 8);
  p[3] = static_cast<std::uint8_t>(v);
}

}  // namespace pg_envelope
