// Azure AD client credentials (see azure_credentials.hpp).
#include "azure_credentials.hpp"

#include <algorithm>

#include "jwt.hpp"
#include "remote_kms.hpp"
#include "secret_file.hpp"

namespace pg_envelope::remote::azure {

namespace {

class ClientSource final : public CachedGrantSource {
 public:
  ClientSource(ClientConfig cfg, std::function<std::int64_t()> now)
      : CachedGrantSource(cfg.kms, std::move(now)),
        cfg_(std::move(cfg)),
        file_(cfg_.file, cfg_.kms,
              cfg_.kind == ClientConfig::Kind::kSecret        ? "client secret"
              : cfg_.kind == ClientConfig::Kind::kCertificate ? "client certificate"
                                                              : "federated token"),
        url_(token_url(cfg_)) {}

  std::string describe() const override {
    std::string d = std::string("the Azure AD ") + kind_label(cfg_.kind) + " of client \"" + cfg_.client_id +
                    "\" in tenant \"" + cfg_.tenant_id + "\" (";
    if (!file_.path().empty())
      d += "file \"" + file_.path() + "\", ";
    else if (cfg_.secret_env != nullptr)
      d += std::string(cfg_.secret_env) + ", ";
    return d + "from " + cfg_.origin + ")";
  }

 protected:
  TokenResponse request_token(const KmsContext& ctx) override {
    HttpRequest rq;
    rq.method = "POST";
    rq.url = url_;
    rq.headers.push_back("Content-Type: application/x-www-form-urlencoded");
    form_append(rq.body, "client_id", cfg_.client_id);
    form_append(rq.body, "scope", kKeyVaultScope);
    form_append(rq.body, "grant_type", "client_credentials");
    SecretString credential;
    if (cfg_.kind == ClientConfig::Kind::kSecret) {
      if (file_.path().empty()) {
        const char* env = ctx.getenv ? ctx.getenv(cfg_.secret_env) : nullptr;
        if (env == nullptr || *env == '\0')
          fail(FailureKind::kAuth, kms_, "authentication", "no client secret",
               std::string("The server's ") + cfg_.secret_env + " environment variable is not set.");
        credential = SecretString(env);
      } else {
        credential = file_.get();
      }
      form_append(rq.body, "client_secret", credential.view());
    } else {
      if (cfg_.kind == ClientConfig::Kind::kCertificate) {
        SecretString pem = file_.get();
        credential = certificate_assertion(pem.view(), cfg_.client_id, url_, unix_now_seconds(), kms_,
                                           "the client certificate file \"" + file_.path() + "\"");
      } else {
        credential = file_.get();
      }
      form_append(rq.body, "client_assertion_type", kAssertionType);
      form_append(rq.body, "client_assertion", credential.view());
    }
    HttpResult r = http_call(rq, ctx.http, judge_token_response);
    return parse_token_response(r, kms_,
                                "The Azure AD token endpoint " + url_ + " (" + kind_label(cfg_.kind) + " of client \"" +
                                    cfg_.client_id + "\")",
                                {credential.view()});
  }

 private:
  ClientConfig cfg_;
  CachedSecretFile file_;
  std::string url_;
};

}  // namespace

const char* kind_label(ClientConfig::Kind k) noexcept {
  switch (k) {
    case ClientConfig::Kind::kSecret: return "client secret";
    case ClientConfig::Kind::kCertificate: return "client certificate";
    case ClientConfig::Kind::kFederated: return "workload identity";
  }
  return "";
}

bool valid_directory_id(const std::string& id) noexcept {
  return !id.empty() && id.size() <= 100 && std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
           c == '_';
  });
}

std::string token_url(const ClientConfig& cfg) { return cfg.authority + "/" + cfg.tenant_id + "/oauth2/v2.0/token"; }

SecretString certificate_assertion(std::string_view pem, const std::string& client_id, const std::string& url,
                                   std::int64_t now, const std::string& kms, const std::string& origin) {
  jwt::Thumbprints t = jwt::certificate_thumbprints(pem, kms, origin);
  json header;
  header["alg"] = "RS256";
  header["typ"] = "JWT";
  header["x5t#S256"] = t.sha256;
  header["x5t"] = t.sha1;
  json claims;
  claims["aud"] = url;
  claims["iss"] = client_id;
  claims["sub"] = client_id;
  claims["jti"] = jwt::random_jti();
  claims["nbf"] = now;
  claims["iat"] = now;
  claims["exp"] = now + kAssertionLifetime;
  return jwt::sign_rs256(header, claims, pem, kms, origin);
}

std::unique_ptr<CachedGrantSource> make_client_source(ClientConfig cfg, std::function<std::int64_t()> now_ms) {
  return std::make_unique<ClientSource>(std::move(cfg), std::move(now_ms));
}

}  // namespace pg_envelope::remote::azure
