// Base64url (RFC 4648 section 5: "-" and "_" for values 62 and 63) without padding,
// the encoding of binary values in JOSE/JWK and so in Azure Key Vault's wrapkey and
// unwrapkey calls. Pure C++: no PostgreSQL headers.
//
// The values it carries may be key material, so the encoder writes into a
// SecretString and the decoder into SecureBytes.
#pragma once

#include <string_view>

#include "pg_envelope/secrets.hpp"
#include "pg_envelope/secure_bytes.hpp"

namespace pg_envelope {

// Encodes without padding: 4 characters per 3 bytes, 2 or 3 for a final 1 or 2 bytes.
SecretString base64url_encode(ByteView bytes);

// Decodes the unpadded form; padding is also accepted when it is exactly right
// ("Zg==", never "Zg=" or "Zg==="). Refuses characters outside the URL-safe
// alphabet (including "+", "/" and whitespace), a length of 1 mod 4 and non-zero
// unused bits, so every byte string has exactly one accepted unpadded encoding.
// On failure returns false and leaves `out` empty.
[[nodiscard]] bool base64url_decode(std::string_view text, SecureBytes& out);

}  // namespace pg_envelope
