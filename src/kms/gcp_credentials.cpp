// Google service-account keys: the JWT bearer grant (see gcp_credentials.hpp).
#include "gcp_credentials.hpp"

#include <algorithm>

#include "jwt.hpp"
#include "kms_messages.hpp"
#include "remote_kms.hpp"
#include "secret_file.hpp"
#include "url.hpp"

namespace pg_envelope::remote::gcp {

namespace {

[[noreturn]] void bad_key(const std::string& kms, const std::string& origin, const std::string& why) {
  throw Error(sqlstate::kConfigFileError, "invalid service-account key for KMS \"" + kms + "\"",
              "In " + origin + ": " + why,
              "Use a JSON key of a service account as downloaded from Google Cloud (\"type\": \"service_account\").");
}

// A string field: nullptr when absent; bad_key() when present but not a string.
const SecureStdString* field(const json& obj, const char* name, const std::string& kms, const std::string& origin) {
  auto it = obj.find(name);
  if (it == obj.end() || it->is_null()) return nullptr;
  if (!it->is_string()) bad_key(kms, origin, std::string("\"") + name + "\" is not a string.");
  return &it->get_ref<const SecureStdString&>();
}

std::string plain(const SecureStdString* s) { return s == nullptr ? std::string() : std::string(s->data(), s->size()); }

class ServiceAccountSource final : public CachedGrantSource {
 public:
  ServiceAccountSource(const std::string& kms, const std::string& path, std::string origin, std::string token_url,
                       std::function<std::int64_t()> now)
      : CachedGrantSource(kms, std::move(now)),
        file_(path, kms, "service-account key"),
        origin_(std::move(origin)),
        token_url_(std::move(token_url)) {}

  std::string describe() const override {
    std::string d = "the service-account key file \"" + file_.path() + "\" (" + origin_ + ")";
    if (!email_.empty()) d += ", service account \"" + email_ + "\"";
    return d;
  }

 protected:
  TokenResponse request_token(const KmsContext& ctx) override {
    std::string where_file = "the service-account key file \"" + file_.path() + "\"";
    SecretString text = file_.get();
    ServiceAccountKey key = parse_service_account_key(text.view(), kms_, where_file);
    text.wipe();
    email_ = key.client_email;
    std::string url = token_url_.empty() ? key.token_uri : token_url_;
    // The assertion goes only where a KMS request may go: https, or http to loopback.
    check_credential_url(url, kms_,
                         token_url_.empty() ? "the token_uri of " + where_file : std::string("the option \"token_url\""));
    SecretString assertion = service_account_assertion(key, url, unix_now_seconds(), kms_, where_file);
    HttpRequest rq;
    rq.method = "POST";
    rq.url = url;
    rq.headers.push_back("Content-Type: application/x-www-form-urlencoded");
    form_append(rq.body, "grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer");
    form_append(rq.body, "assertion", assertion.view());
    HttpResult r = http_call(rq, ctx.http, judge_token_response);
    return parse_token_response(r, kms_, "The token endpoint " + url + " (service account \"" + email_ + "\")",
                                {assertion.view()});
  }

 private:
  CachedSecretFile file_;
  std::string origin_;
  std::string token_url_;
  std::string email_;
};

}  // namespace

std::string credentials_type(std::string_view text) {
  json obj = parse_json_secret(text);
  auto it = obj.is_object() ? obj.find("type") : obj.end();
  if (it == obj.end() || !it->is_string()) return {};
  const auto& s = it->get_ref<const SecureStdString&>();
  return std::string(s.data(), std::min<std::size_t>(s.size(), 64));
}

ServiceAccountKey parse_service_account_key(std::string_view text, const std::string& kms, const std::string& origin) {
  json obj = parse_json_secret(text);
  if (!obj.is_object()) bad_key(kms, origin, "the file is not a JSON object.");
  ServiceAccountKey key;
  key.type = plain(field(obj, "type", kms, origin));
  if (key.type != "service_account")
    bad_key(kms, origin,
            key.type.empty() ? std::string("the file has no \"type\".")
                             : "the credential type is \"" + safe_message(key.type) +
                                   "\"; only \"service_account\" keys are supported.");
  key.client_email = plain(field(obj, "client_email", kms, origin));
  if (key.client_email.empty() || key.client_email.size() > 254 ||
      key.client_email.find('@') == std::string::npos ||
      !std::all_of(key.client_email.begin(), key.client_email.end(), [](char c) { return c > ' ' && c < 127 && c != '"'; }))
    bad_key(kms, origin, "\"client_email\" is missing or is not an e-mail address.");
  key.private_key_id = plain(field(obj, "private_key_id", kms, origin));
  if (key.private_key_id.size() > 128 ||
      !std::all_of(key.private_key_id.begin(), key.private_key_id.end(), [](char c) { return c > ' ' && c < 127 && c != '"'; }))
    bad_key(kms, origin, "\"private_key_id\" is not a key id.");
  const SecureStdString* uri = field(obj, "token_uri", kms, origin);
  key.token_uri = uri == nullptr || uri->empty() ? kDefaultTokenUri : plain(uri);
  if (key.token_uri.size() > 2048) bad_key(kms, origin, "\"token_uri\" is too long.");
  const SecureStdString* pk = field(obj, "private_key", kms, origin);
  if (pk == nullptr || std::string_view(pk->data(), pk->size()).find("PRIVATE KEY-----") == std::string_view::npos)
    bad_key(kms, origin, "\"private_key\" is missing or is not a PEM private key.");
  key.private_key = SecretString(std::string_view(pk->data(), pk->size()));
  return key;
}

SecretString service_account_assertion(const ServiceAccountKey& key, const std::string& token_url, std::int64_t now,
                                       const std::string& kms, const std::string& origin) {
  json header;
  header["alg"] = "RS256";
  header["typ"] = "JWT";
  if (!key.private_key_id.empty()) header["kid"] = key.private_key_id;
  json claims;
  claims["iss"] = key.client_email;
  claims["scope"] = kCloudKmsScope;
  claims["aud"] = token_url;
  claims["iat"] = now;
  claims["exp"] = now + kAssertionLifetime;
  return jwt::sign_rs256(header, claims, key.private_key.view(), kms, origin);
}

std::unique_ptr<CachedGrantSource> make_service_account_source(const std::string& kms, const std::string& path,
                                                               const std::string& origin,
                                                               const std::string& token_url,
                                                               std::function<std::int64_t()> now_ms) {
  return std::make_unique<ServiceAccountSource>(kms, path, origin, token_url, std::move(now_ms));
}

}  // namespace pg_envelope::remote::gcp
