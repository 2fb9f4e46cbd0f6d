// OAuth 2.0 access tokens that a backend obtains itself from a token endpoint: the
// shared shape of the GCP service-account key (JWT bearer grant, gcp_credentials.hpp)
// and the Azure AD client credentials (client secret, client certificate, workload
// identity; azure_credentials.hpp). Pure C++.
//
// Every source answers get() with the token plus its expiry (OAuthCredential), behind
// one small interface (OAuthTokenSource), the same shape as the Vault token sources
// (vault_auth.hpp), so that a later change can keep the tokens in shared memory for
// the whole server. For now each backend's provider keeps its own token, cached until
// shortly before it expires (token_cache_seconds(), bearer_token.hpp).
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>
#include <string_view>

#include "pg_envelope/http.hpp"
#include "pg_envelope/kms.hpp"
#include "pg_envelope/secrets.hpp"
#include "secure_json.hpp"

namespace pg_envelope::remote {

// A token to send, with what is known of its life (for a later shared cache).
struct OAuthCredential {
  SecretString token;
  std::int64_t expires_ms = 0;  // steady-clock milliseconds; 0: unknown
  bool fresh = false;           // requested by this get(): a 401 to it is not cured by another
};

class OAuthTokenSource {
 public:
  virtual ~OAuthTokenSource() = default;
  // The token for the next request. Throws Error: 28000 for a refused or malformed
  // token request, the errors of the credential files, fail_transport()'s errors.
  virtual OAuthCredential get(const KmsContext& ctx) = 0;
  // After the KMS answered 401 to the token get() gave: forgets it so the next get()
  // requests a new one. True when that may help (worth one more attempt).
  virtual bool invalidate() = 0;
  // Where the token comes from, for error details.
  virtual std::string describe() const = 0;
};

// ---------------------------------------------------------------- pure parts

// How long a fetched token is cached: until a minute before it expires, or half its
// lifetime when that is shorter; 0 (this one call) without a lifetime. (Defined in
// bearer_token.cpp, for metadata tokens too.)
long token_cache_seconds(long expires_in) noexcept;

// The steady clock in milliseconds; the wall clock in Unix seconds (JWT iat/exp).
std::int64_t steady_now_ms();
std::int64_t unix_now_seconds();

// Appends "name=value" (with a leading '&' unless `body` is empty) to an
// application/x-www-form-urlencoded body, percent-encoding all but A-Z a-z 0-9 - . _ ~.
void form_append(SecretString& body, std::string_view name, std::string_view value);

// The "expires_in" of a token response: a JSON number (Google, Azure AD) or a decimal
// string (Azure IMDS), below 10^9 seconds; -1 when absent or out of that range.
long expires_in_seconds(const json& out);

// Checks the URL a credential is sent to (a token endpoint, an Azure AD authority):
// check_kms_url() (https, or http to loopback), or with `base` check_base_url() (no
// query, fragment or user info either). Throws Error 22023 naming `what` (e.g. "the
// option \"token_url\"", "the token_uri of the key file \"/x\"") and the URL.
void check_credential_url(const std::string& url, const std::string& kms, const std::string& what, bool base = false);

// Whether a token response is final, worth retrying (429, 5xx) or failed.
Verdict judge_token_response(const HttpResponse& response);

struct TokenResponse {
  SecretString access_token;
  long expires_in = -1;  // seconds; -1 when the response gives none
};

// The token of a finished token request (RFC 6749 section 5.1), else the Error it
// means: transport failures as fail_transport(), `where` added to the detail; 429 and 5xx → 58000; any other
// non-2xx → 28000 "KMS "x" token request failed: HTTP <status> <error>" with the
// service's "error" code and "error_description" (made safe, and withheld when it
// quotes one of `withhold`: the secret, assertion or federated token sent); a 2xx
// without an access_token of visible ASCII, or with a token_type other than Bearer →
// 28000 "malformed response". `where` begins the detail ("The token endpoint
// https://... (service account \"a@b\")").
TokenResponse parse_token_response(const HttpResult& result, const std::string& kms, const std::string& where,
                                   std::initializer_list<std::string_view> withhold = {});

// ---------------------------------------------------------------- caching

// A source that posts to a token endpoint and keeps the token until shortly before
// it expires (token_cache_seconds()). Subclasses build and send the request.
class CachedGrantSource : public OAuthTokenSource {
 public:
  OAuthCredential get(const KmsContext& ctx) override;
  bool invalidate() override;

  // Token requests made so far (for tests).
  int requests() const noexcept { return requests_; }

 protected:
  CachedGrantSource(std::string kms, std::function<std::int64_t()> now_ms);
  // One token request: builds it, sends it, parses the answer (parse_token_response).
  virtual TokenResponse request_token(const KmsContext& ctx) = 0;

  std::string kms_;

 private:
  std::function<std::int64_t()> now_;
  SecretString token_;
  std::int64_t use_until_ms_ = 0;
  std::int64_t expires_ms_ = 0;
  int requests_ = 0;
};

}  // namespace pg_envelope::remote
