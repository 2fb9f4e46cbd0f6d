// Azure AD (Microsoft Entra ID) client credentials for the azure-keyvault provider:
// the OAuth 2.0 client credentials grant against the v2.0 token endpoint. Pure C++.
//
//   POST {authority}/{tenant}/oauth2/v2.0/token
//     client_id=...&scope=https://vault.azure.net/.default&grant_type=client_credentials
//     &client_secret=...                                    (a client secret)
//     &client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer
//     &client_assertion=<JWT>                               (a certificate, workload identity)
//   -> {"token_type": "Bearer", "expires_in", "access_token"}
//
// A certificate's assertion is a JWT pg_envelope signs (RS256) with the certificate's
// private key: header {"alg": "RS256", "typ": "JWT", "x5t#S256": <SHA-256 thumbprint>,
// "x5t": <SHA-1 thumbprint>}, claims {"aud": <token URL>, "iss" = "sub": client_id,
// "jti", "nbf", "iat", "exp": now + 600}. Workload identity (AKS) sends the federated
// token the platform writes into a file, unchanged, re-read when it changes.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "oauth_token.hpp"

namespace pg_envelope::remote::azure {

inline constexpr const char* kDefaultAuthority = "https://login.microsoftonline.com";
inline constexpr const char* kKeyVaultScope = "https://vault.azure.net/.default";
inline constexpr const char* kAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
inline constexpr long kAssertionLifetime = 600;

struct ClientConfig {
  enum class Kind { kSecret, kCertificate, kFederated } kind = Kind::kSecret;
  std::string kms;
  std::string authority;  // no trailing '/'
  std::string tenant_id;
  std::string client_id;
  std::string file;  // the secret, certificate or federated token file; empty: the secret in `secret_env`
  const char* secret_env = nullptr;  // e.g. "AZURE_CLIENT_SECRET", read from the server's environment
  std::string origin;  // "options" or "the server's environment", for messages
};

// "client secret", "client certificate", "workload identity".
const char* kind_label(ClientConfig::Kind k) noexcept;

// A tenant (a GUID or a domain name) or client id (a GUID) as the token URL and the
// form may carry it: 1 to 100 of A-Z a-z 0-9 . - _.
bool valid_directory_id(const std::string& id) noexcept;

// {authority}/{tenant}/oauth2/v2.0/token
std::string token_url(const ClientConfig& cfg);

// The client assertion of a certificate (`pem`: the private key and the
// certificate) for `url` at Unix time `now` (jti random).
SecretString certificate_assertion(std::string_view pem, const std::string& client_id, const std::string& url,
                                   std::int64_t now, const std::string& kms, const std::string& origin);

// The token source of `cfg` (checked by the caller: ids valid, authority a base URL).
std::unique_ptr<CachedGrantSource> make_client_source(ClientConfig cfg, std::function<std::int64_t()> now_ms = {});

}  // namespace pg_envelope::remote::azure
