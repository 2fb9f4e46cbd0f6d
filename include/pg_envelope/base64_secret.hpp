// Standard base64 (RFC 4648 section 4, with padding) for values that are secrets:
// DEKs with their binding tag on their way to and from a KMS. Pure C++: no
// PostgreSQL headers.
//
// The same encoding as base64_encode() and base64_decode_strict() of the envelope
// format (include/pg_envelope/envelope_format.hpp), but the encoder writes into a
// SecretString and the decoder into SecureBytes, so no plain std::string or
// std::vector ever holds the secret.
#pragma once

#include <string_view>

#include "pg_envelope/secrets.hpp"
#include "pg_envelope/secure_bytes.hpp"

namespace pg_envelope {

// Padded standard base64 of `bytes`.
SecretString base64_encode_secret(ByteView bytes);

// Decodes with exactly the rules of base64_decode_strict(): length a multiple of 4,
// only the standard alphabet, "=" padding only at the very end and only to complete
// the last quantum, unused bits zero. On failure returns false and leaves `out`
// empty. Empty text decodes to no bytes.
[[nodiscard]] bool base64_decode_secret(std::string_view text, SecureBytes& out);

}  // namespace pg_envelope
