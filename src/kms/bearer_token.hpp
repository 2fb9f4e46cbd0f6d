// Bearer tokens for the OAuth-based KMS providers (GCP Cloud KMS, Azure Key Vault).
// Pure C++.
//
// A token comes from the first configured source, in this order:
//   1. a token file named by an option ("token_file"), re-read whenever it changes;
//   2. a token grant configured by options (a GCP service-account key, Azure AD client
//      credentials: oauth_token.hpp), which a token file excludes;
//   3. an environment variable of the server (GOOGLE_OAUTH_ACCESS_TOKEN, AZURE_ACCESS_TOKEN);
//   4. a token grant the server's environment configures (GOOGLE_APPLICATION_CREDENTIALS,
//      AZURE_CLIENT_SECRET, AZURE_FEDERATED_TOKEN_FILE, ...), looked at once per backend;
//   5. the cloud's instance-metadata service (an option naming its base URL), whose
//      token is cached until shortly before it expires.
// Grant tokens are cached by their source until shortly before they expire.
// A configured file that cannot be read is an error, never a reason to fall through
// to the next source.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "pg_envelope/credential_store.hpp"
#include "pg_envelope/http.hpp"
#include "pg_envelope/kms.hpp"
#include "pg_envelope/secrets.hpp"
#include "oauth_token.hpp"
#include "secret_file.hpp"

namespace pg_envelope::remote {

// How to ask an instance-metadata service for a token.
struct MetadataTokenSource {
  std::string option;  // the option that configures it, for messages ("metadata_url")
  std::string url;     // the full token URL; empty: no metadata source
  std::string header;  // e.g. "Metadata-Flavor: Google"
};

// An instance-metadata service's token response, read. The pure half of a token
// request (no network), also used by the unit tests and fuzz harnesses.
struct MetadataToken {
  SecretString token;
  long expires_in = -1;  // seconds; -1 when the response gives no lifetime
};

// Whether a token response is final, worth retrying (429, 5xx) or failed.
Verdict judge_metadata_response(const HttpResponse& response);

// The token of a finished token request, or the Error it means: for a refusal,
// "KMS "x" token request failed: HTTP <status>", 58000 for 429 and 5xx, 28000 for
// any other status (no credentials could be obtained, so the server cannot
// authenticate: a metadata service's 403 is 28000 too, unlike a KMS's 403); for a 2xx
// without a string access_token or with a token_type other than Bearer, 28000
// "malformed response". `url` is the token URL, for the detail.
MetadataToken parse_metadata_token(const HttpResponse& response, const std::string& kms, const std::string& url);

// token_cache_seconds(): see oauth_token.hpp.

class BearerToken {
 public:
  // Builds the grant that the server's environment configures, or nullptr for none.
  using EnvGrantFactory = std::function<std::unique_ptr<OAuthTokenSource>(const KmsContext&)>;

  BearerToken(std::string kms_name, std::string token_file, const char* env_var, MetadataTokenSource metadata);
  // With grants: `grant` from the provider's options (nullptr: none), `env_grant` from
  // the server's environment; `env_grant_vars` names its variables for messages.
  BearerToken(std::string kms_name, std::string token_file, const char* env_var,
              std::unique_ptr<OAuthTokenSource> grant, EnvGrantFactory env_grant, std::string env_grant_vars,
              MetadataTokenSource metadata);

  // The token to send. Throws Error (28000) when no source is configured or the
  // metadata service refuses, and the transport errors of fail_transport().
  SecretString get(const KmsContext& ctx);

  // After the KMS answered 401: forgets a cached metadata or grant token (one not
  // requested by this very get()) so the next get() asks for a fresh one. True when that may help (worth one more attempt).
  bool invalidate();

  // Sends `rq` with "Authorization: Bearer <token>"; when the KMS answers 401 to a
  // cached metadata token, fetches a fresh token and tries once more.
  HttpResult call(HttpRequest& rq, const KmsContext& ctx, const std::function<Verdict(const HttpResponse&)>& judge);

  // Which sources are configured, for error details ("token file \"/x\"", ...).
  std::string describe() const;

 private:
  SecretString from_metadata(const KmsContext& ctx);
  // A granted or metadata token through the server-wide credential store (one request
  // for the whole server per token lifetime): `identity` names the source; `fetch`
  // requests a new token and its lifetime in seconds (-1: unknown, then it is not
  // shared and serves the call that asked for it).
  SecretString shared_token(const KmsContext& ctx, std::string identity,
                            const std::function<MetadataToken()>& fetch);
  MetadataToken request_metadata_token(const KmsContext& ctx);
  SecretString granted(const KmsContext& ctx, OAuthTokenSource& grant, const std::string& identity);

  std::string kms_;
  CachedSecretFile token_file_;
  const char* env_var_;
  std::unique_ptr<OAuthTokenSource> grant_;
  EnvGrantFactory env_factory_;
  std::string env_grant_vars_;
  std::unique_ptr<OAuthTokenSource> env_grant_;
  std::string grant_identity_, env_grant_identity_;
  bool env_checked_ = false;
  MetadataTokenSource metadata_;
  SecretString metadata_token_;
  std::chrono::steady_clock::time_point metadata_expiry_{};
  enum class Used { kNone, kStatic, kGrant, kEnvGrant, kMetadata } used_ = Used::kNone;  // by the last get()
  bool used_fresh_ = false;  // the last get()'s grant token was requested by it
  // The last get()'s token when it came from the server-wide store: dropped there (once)
  // after the KMS answered 401 to it.
  std::shared_ptr<CredentialStore> store_;
  std::string shared_identity_;
  SecureBytes shared_value_;
};

}  // namespace pg_envelope::remote
