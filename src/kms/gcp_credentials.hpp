// Google service-account keys for the gcp-kms provider: the OAuth 2.0 JWT bearer
// grant (RFC 7523, Google's "Using OAuth 2.0 for server to server applications").
// Pure C++.
//
//   POST {token_uri}  (the key file's, or the "token_url" option)
//     grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<JWT>
//   JWT  header {"alg": "RS256", "typ": "JWT", "kid": private_key_id}
//        claims {"iss": client_email, "scope": "https://www.googleapis.com/auth/cloudkms",
//                "aud": <the token URL>, "iat": now, "exp": now + 3600}
//   -> {"access_token", "expires_in", "token_type": "Bearer"}
//
// The key file is a secret file (read_secret_file(): refused when other users can
// access it), re-read when it changes; its private key stays in wiping memory.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "oauth_token.hpp"
#include "pg_envelope/secrets.hpp"

namespace pg_envelope::remote::gcp {

inline constexpr const char* kCloudKmsScope = "https://www.googleapis.com/auth/cloudkms";
inline constexpr const char* kDefaultTokenUri = "https://oauth2.googleapis.com/token";
inline constexpr long kAssertionLifetime = 3600;

struct ServiceAccountKey {
  std::string type;            // "service_account" (checked by parse_service_account_key)
  std::string client_email;
  std::string private_key_id;  // may be empty (then the JWT has no "kid")
  std::string token_uri;       // kDefaultTokenUri when the file has none
  SecretString private_key;    // PEM
};

// The "type" of a Google credentials file (JSON), or "" when it is not a JSON object
// with a string "type": decides whether GOOGLE_APPLICATION_CREDENTIALS names a
// service-account key.
std::string credentials_type(std::string_view text);

// A service-account key file's content. Throws Error F0000 (naming `origin`, never
// quoting the content) when it is not a JSON object of type "service_account" with
// string client_email and private_key (a PEM private key), or when private_key_id or
// token_uri are not strings.
ServiceAccountKey parse_service_account_key(std::string_view text, const std::string& kms, const std::string& origin);

// The signed JWT of a token request to `token_url` at Unix time `now`.
SecretString service_account_assertion(const ServiceAccountKey& key, const std::string& token_url, std::int64_t now,
                                       const std::string& kms, const std::string& origin);

// The token source of a key file. `token_url` overrides the key file's token_uri
// (tests, private endpoints); `origin` describes where the path came from ("option
// \"credentials_file\"", "GOOGLE_APPLICATION_CREDENTIALS").
std::unique_ptr<CachedGrantSource> make_service_account_source(const std::string& kms, const std::string& path,
                                                               const std::string& origin,
                                                               const std::string& token_url,
                                                               std::function<std::int64_t()> now_ms = {});

}  // namespace pg_envelope::remote::gcp
