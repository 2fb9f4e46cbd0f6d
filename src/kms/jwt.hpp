// JSON Web Tokens signed with RS256 (RFC 7515, 7519), for the OAuth assertions that
// pg_envelope signs itself: the GCP service-account JWT bearer grant and the Azure AD
// client-certificate assertion. Pure C++ over OpenSSL.
//
// The private key arrives as PEM text inside a SecretString and is read by OpenSSL
// from that memory (BIO_new_mem_buf): it is never copied into a std::string. The
// signed JWT is a credential too and is returned in a SecretString.
#pragma once

#include <string>
#include <string_view>

#include "pg_envelope/secrets.hpp"
#include "secure_json.hpp"

namespace pg_envelope::remote::jwt {

// base64url (no padding) of the compact serialisation of `value`.
SecretString segment(const json& value);

// header "." claims "." signature: RSASSA-PKCS1-v1_5 with SHA-256 (RS256, via
// EVP_DigestSign) under the first private key in `pem` (PKCS#8 "PRIVATE KEY" or
// "RSA PRIVATE KEY"; an encrypted key is refused, never prompted for). Throws Error
// F0000 naming `origin` (e.g. "the service-account key file \"/x\"") when `pem` holds
// no RSA private key; never quotes the key.
SecretString sign_rs256(const json& header, const json& claims, std::string_view pem, const std::string& kms,
                        const std::string& origin);

// The thumbprints of the first certificate in `pem`: base64url (no padding) of its
// DER encoding's SHA-256 ("x5t#S256") and SHA-1 ("x5t"). Throws Error F0000 naming
// `origin` when `pem` holds no certificate, or when the certificate's public key is
// not the one of the private key in `pem`.
struct Thumbprints {
  std::string sha256;
  std::string sha1;
};
Thumbprints certificate_thumbprints(std::string_view pem, const std::string& kms, const std::string& origin);

// A random JWT ID: 32 hex digits.
std::string random_jti();

}  // namespace pg_envelope::remote::jwt
