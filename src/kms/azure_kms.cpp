// Azure Key Vault provider: the keys data-plane API (api-version 7.4), wrapkey and
// unwrapkey with an RSA key (RSA-OAEP-256, the default) or, in Managed HSM or a
// Premium vault, an oct-HSM AES key (A256KW).
//
//   wrap   POST {vault_url}/keys/{name}[/{version}]/wrapkey?api-version=7.4
//            {"alg": "RSA-OAEP-256", "value": b64url(DEK || binding tag)} -> {"kid", "value"}
//   unwrap POST {vault_url}/keys/{name}/{version}/unwrapkey?api-version=7.4
//            {"alg", "value"} -> {"kid", "value": b64url(DEK || binding tag)}
//   rewrap unwrap, then wrap (an unversioned KEK wraps under the key's newest version)
//
// The KEK is "name" (the newest version at wrap time) or "name/version". wrapkey has
// no associated data, so the binding tag inside the payload is what ties a wrapped
// DEK to its key and version (remote::bind_dek).
//
// The wrapped DEK stored in envelope.data_key is the UTF-8 of a compact JSON object,
//   {"alg":"RSA-OAEP-256","kid":"https://v.vault.azure.net/keys/k/0123...","value":"<b64url>"}
// with the algorithm, the exact key version (kid, as Key Vault returned it) and the
// wrapped bytes, so unwrap needs neither the current "algorithm" option nor the
// newest key version. unwrap sends the token only to vault_url: the kid must name
// the same host and port and the KEK's key name, and the request goes to
// {vault_url}/keys/{name}/{version}, never to an address read from the database.
//
// Options: "vault_url" (required), "algorithm" (RSA-OAEP-256 or A256KW), "token_file",
// "tenant_id", "client_id", "client_secret_file", "client_certificate_file",
// "federated_token_file", "authority_url" (default: the server's AZURE_AUTHORITY_HOST,
// else https://login.microsoftonline.com),
// "imds_url" (e.g. http://169.254.169.254; no default), "ca_file".
// Token, first configured source wins (token_file, client_secret_file,
// client_certificate_file and federated_token_file exclude each other):
//   1. "token_file" (re-read when it changes);
//   2. Azure AD client credentials from the options (azure_credentials.hpp): a client
//      secret, a client certificate or a federated token file, for tenant_id and
//      client_id (the options, else the server's AZURE_TENANT_ID and AZURE_CLIENT_ID);
//   3. the server's AZURE_ACCESS_TOKEN;
//   4. the server's environment as the Azure SDKs read it: AZURE_TENANT_ID +
//      AZURE_CLIENT_ID with AZURE_CLIENT_SECRET, else AZURE_CLIENT_CERTIFICATE_PATH,
//      else AZURE_FEDERATED_TOKEN_FILE (workload identity);
//   5. the managed identity's token from IMDS (GET {imds_url}/metadata/identity/oauth2/
//      token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net with
//      "Metadata: true").
// Granted and IMDS tokens are cached per backend until shortly before expires_in; one
// the vault rejects (401) is fetched anew once.
#include <algorithm>
#include <cctype>
#include <iterator>

#include "azure_credentials.hpp"
#include "bearer_token.hpp"
#include "kms_messages.hpp"
#include "kms_responses.hpp"
#include "pg_envelope/encoding.hpp"
#include "remote_kms.hpp"
#include "url.hpp"

namespace pg_envelope {

namespace remote::azure {

namespace {

bool iequal(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

std::string error_code(const json& obj) {
  auto it = obj.find("code");
  if (it == obj.end() || !it->is_string()) return {};
  const auto& s = it->get_ref<const SecureStdString&>();
  if (s.size() > 60 || !std::all_of(s.begin(), s.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)); }))
    return {};
  return std::string(s.data(), s.size());
}

const SecureStdString* string_field(const json& obj, const char* name) {
  auto it = obj.is_object() ? obj.find(name) : obj.end();
  return (it != obj.end() && it->is_string()) ? &it->get_ref<const SecureStdString&>() : nullptr;
}

}  // namespace

// Key Vault names: 1 to 127 of [0-9A-Za-z-]; versions: 32 hex digits in practice,
// accepted as 1 to 64 alphanumerics.
bool valid_key_name(std::string_view n) noexcept {
  return !n.empty() && n.size() <= 127 && std::all_of(n.begin(), n.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
  });
}

bool valid_key_version(std::string_view v) noexcept {
  return !v.empty() && v.size() <= 64 && std::all_of(v.begin(), v.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  });
}

bool allowed_algorithm(std::string_view alg) noexcept { return alg == "RSA-OAEP-256" || alg == "A256KW"; }

bool parse_kid(const std::string& kid, const UrlParts& vault, KeyRef& out) {
  UrlParts p;
  if (!parse_url(kid, p) || (p.scheme != "https" && p.scheme != vault.scheme) || p.host != vault.host) return false;
  // Key Vault omits the default port in kids; a test vault on another port has it.
  std::string port = p.port;
  if (p.scheme != vault.scheme && port == (p.scheme == "https" ? "443" : "80"))
    port = vault.scheme == "https" ? "443" : "80";
  if (port != vault.port) return false;
  std::string_view path = p.path;
  if (path.rfind("/keys/", 0) != 0) return false;
  path.remove_prefix(6);
  std::size_t slash = path.find('/');
  if (slash == std::string_view::npos) return false;
  out.name = path.substr(0, slash);
  out.version = path.substr(slash + 1);
  return valid_key_name(out.name) && valid_key_version(out.version);
}

VaultError vault_error(const HttpResponse& resp) {
  VaultError e;
  json body = parse_body(resp);
  auto err = body.is_object() ? body.find("error") : body.end();
  if (err == body.end() || !err->is_object()) return e;
  e.code = error_code(*err);
  if (auto in = err->find("innererror"); in != err->end() && in->is_object()) e.inner = error_code(*in);
  if (auto it = err->find("message"); it != err->end() && it->is_string()) {
    const auto& m = it->get_ref<const SecureStdString&>();
    e.message = safe_message(std::string_view(m.data(), m.size()));
  }
  return e;
}

Verdict judge(const HttpResponse& resp) {
  if (resp.status >= 200 && resp.status < 300) return Verdict::kSuccess;
  if (resp.status == 429 || (resp.status >= 500 && resp.status != 501)) return Verdict::kRetry;
  return Verdict::kFail;
}

json result(const HttpResult& r, const Site& site) {
  if (r.failure != HttpFailure::kNone) fail_transport(r, site.kms, site.op);
  long s = r.response.status;
  if (s >= 200 && s < 300) return success_object(r, site.kms, site.op);

  VaultError e = vault_error(r.response);
  std::string type = (e.code.empty() ? "HTTP " + std::to_string(s) : e.code) + (e.inner.empty() ? "" : " (" + e.inner + ")");
  std::string version_used = site.key_path.size() > 6 ? site.key_path.substr(6) : site.key_path;  // after "/keys/"
  std::string detail = "Key \"" + site.kek + "\"" + (version_used == site.kek ? "" : " (" + version_used + ")") +
                       " in " + site.vault_url + " (HTTP " + std::to_string(s) + ", " + std::to_string(r.attempts) +
                       " attempt(s))" + (e.message.empty() ? "" : ": " + e.message) + ".";
  bool disabled = e.inner == "KeyDisabled" || e.code == "KeyDisabled" ||
                  ((s == 403 || e.code == "Forbidden") && e.message.find("disabled") != std::string::npos);
  if (e.code == "Unauthorized" || (s == 401 && e.code != "Forbidden"))
    fail(FailureKind::kAuth, site.kms, site.op, type, detail + " The token came from " + site.token_source + ".");
  if (disabled) fail(FailureKind::kDisabled, site.kms, site.op, type, detail);
  if (e.code == "Forbidden" || s == 403) fail(FailureKind::kPermission, site.kms, site.op, type, detail);
  if (e.code == "KeyNotFound" || s == 404) fail(FailureKind::kNotFound, site.kms, site.op, type, detail);
  if (s == 429 || s >= 500) fail(FailureKind::kUnavailable, site.kms, site.op, type, detail);
  if (s == 400 && site.op == "unwrapkey") fail(FailureKind::kInvalidCiphertext, site.kms, site.op, type, detail);
  fail(FailureKind::kBadRequest, site.kms, site.op, type, detail);
}

Bytes wrapkey_stored(const json& out, const Site& site, const KeyRef& ref, const UrlParts& vault,
                     const std::string& algorithm) {
  const SecureStdString* kid = string_field(out, "kid");
  const SecureStdString* value = string_field(out, "value");
  SecureBytes wrapped;
  if (kid == nullptr || value == nullptr || !base64url_decode(std::string_view(*value), wrapped) || wrapped.empty())
    fail(FailureKind::kBadRequest, site.kms, "wrapkey", "malformed response", "The response has no kid or value.");
  std::string kid_text(kid->data(), kid->size());
  KeyRef used;
  if (!parse_kid(kid_text, vault, used) || !iequal(used.name, ref.name) ||
      (!ref.version.empty() && !iequal(used.version, ref.version)))
    fail(FailureKind::kBadRequest, site.kms, "wrapkey", "malformed response",
         "The response's kid does not name a version of key \"" + ref.name + "\" in " + site.vault_url + ".");
  json stored;
  stored["alg"] = algorithm;
  stored["kid"] = kid_text;
  stored["value"] = std::string_view(base64url_encode(wrapped.view()).view());
  auto text = stored.dump();
  return Bytes(text.begin(), text.end());
}

StoredWrapped parse_stored(ByteView wrapped, const std::string& kms, std::string_view kek, const KeyRef& ref,
                           const UrlParts& vault, const std::string& vault_url) {
  json stored = json::parse(wrapped.begin(), wrapped.end(), nullptr, false);
  const SecureStdString* alg = string_field(stored, "alg");
  const SecureStdString* kid = string_field(stored, "kid");
  const SecureStdString* value = string_field(stored, "value");
  if (alg == nullptr || kid == nullptr || value == nullptr || !allowed_algorithm(std::string_view(*alg)))
    fail(FailureKind::kInvalidCiphertext, kms, "unwrapkey", "malformed wrapped data key",
         "The wrapped data key is not an Azure Key Vault {\"alg\", \"kid\", \"value\"} object.");
  StoredWrapped out;
  std::string kid_text(kid->data(), kid->size());
  if (!parse_kid(kid_text, vault, out.key))
    fail(FailureKind::kInvalidCiphertext, kms, "unwrapkey", "wrapped by another key vault",
         "The wrapped data key was made by key \"" + safe_message(kid_text) + "\", which is not in " + vault_url +
             "; pg_envelope sends its token only to vault_url.");
  if (!iequal(out.key.name, ref.name) || (!ref.version.empty() && !iequal(out.key.version, ref.version)))
    fail(FailureKind::kInvalidCiphertext, kms, "unwrapkey", "wrapped by another key",
         "The wrapped data key was made by key \"" + out.key.name + "/" + out.key.version + "\", not by KEK \"" +
             std::string(kek) + "\".");
  out.alg.assign(alg->data(), alg->size());
  out.value.assign(value->data(), value->size());
  return out;
}

SecureBytes unwrapkey_value(const json& out, const std::string& kms) {
  const SecureStdString* plain = string_field(out, "value");
  SecureBytes payload;
  if (plain == nullptr || !base64url_decode(std::string_view(*plain), payload))
    fail(FailureKind::kBadRequest, kms, "unwrapkey", "malformed response", "The response has no value.");
  return payload;
}

KekVersion current_version(const json& out, const Site& site, const KeyRef& ref, const UrlParts& vault) {
  auto bad = [&site](const char* what) {
    fail(FailureKind::kBadRequest, site.kms, site.op, "malformed response", what);
  };
  auto key = out.is_object() ? out.find("key") : out.end();
  const SecureStdString* kid = key != out.end() ? string_field(*key, "kid") : nullptr;
  KeyRef used;
  if (kid == nullptr || !parse_kid(std::string(kid->data(), kid->size()), vault, used) || !iequal(used.name, ref.name) ||
      (!ref.version.empty() && !iequal(used.version, ref.version)))
    bad("The response's key.kid does not name a version of the KEK in this vault.");
  KekVersion v;
  v.version = used.version;
  const json* created = nullptr;
  if (auto attrs = out.find("attributes"); attrs != out.end() && attrs->is_object())
    if (auto it = attrs->find("created"); it != attrs->end() && it->is_number_integer() && it->get<std::int64_t>() > 0 &&
        it->get<std::int64_t>() < 100000000000)  // Unix seconds before year 5000
      created = &*it;
  if (created == nullptr) bad("The response has no attributes.created.");
  v.since_us = created->get<std::int64_t>() * 1000000;
  return v;
}

}  // namespace remote::azure

namespace {

using remote::FailureKind;
using remote::json;
using remote::SecureStdString;
using remote::azure::KeyRef;

constexpr const char* kApiVersion = "api-version=7.4";
constexpr const char* kImdsTokenPath =
    "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net";

class AzureKeyVaultKms final : public KmsProvider {
 public:
  AzureKeyVaultKms(const KmsConfig& cfg, const KmsContext& ctx) : name_(cfg.name), ctx_(ctx), token_(make_token(cfg)) {}

  const std::string& kms_name() const override { return name_; }

  std::string default_kek() const override {
    throw Error(sqlstate::kInvalidParameterValue, "KMS \"" + name_ + "\" needs a KEK",
                "An Azure Key Vault KEK is a key name, or \"name/version\" to pin one version.",
                "Pass kek => 'key-name' to envelope.create_key().");
  }

  void validate_kek(std::string_view kek) const override { (void)parse_kek(kek); }

  Bytes wrap(std::string_view kek, const DekBinding& b, ByteView dek) override {
    KeyRef ref = parse_kek(kek);
    SecureBytes payload = remote::bind_dek(dek, b);
    json body;
    body["alg"] = algorithm_;
    body["value"] = std::string_view(base64url_encode(payload.view()).view());
    std::string path = "/keys/" + ref.name + (ref.version.empty() ? "" : "/" + ref.version);
    json out = call("wrapkey", path, kek, body);
    return remote::azure::wrapkey_stored(out, site("wrapkey", path, kek), ref, vault_, algorithm_);
  }

  SecureBytes unwrap(std::string_view kek, const DekBinding& b, ByteView wrapped) override {
    KeyRef ref = parse_kek(kek);
    remote::azure::StoredWrapped stored = remote::azure::parse_stored(wrapped, name_, kek, ref, vault_, vault_url_);
    json body;
    body["alg"] = stored.alg;
    body["value"] = stored.value;
    json out = call("unwrapkey", "/keys/" + stored.key.name + "/" + stored.key.version, kek, body);
    SecureBytes payload = remote::azure::unwrapkey_value(out, name_);
    return remote::unbind_dek(payload.view(), b, name_);
  }

  // GET /keys/{name}[/{version}] (the "get" key permission): the version an
  // unversioned KEK wraps under now. A wrapped DEK names its version in its kid.
  std::optional<KekVersion> current_kek_version(std::string_view kek) override {
    KeyRef ref = parse_kek(kek);
    std::string path = "/keys/" + ref.name + (ref.version.empty() ? "" : "/" + ref.version);
    json out = call(nullptr, path, kek, json());
    return remote::azure::current_version(out, site("get key", path, kek), ref, vault_);
  }

  std::string wrapped_kek_version(std::string_view kek, ByteView wrapped) const override {
    try {
      KeyRef ref = parse_kek(kek);
      return remote::azure::parse_stored(wrapped, name_, kek, ref, vault_, vault_url_).key.version;
    } catch (const Error&) {
      return {};
    }
  }

 private:
  // Reads the options (in the constructor's initializer list, so the token source
  // is built from them) and validates them.
  remote::BearerToken make_token(const KmsConfig& cfg) {
    remote::Options o(cfg);
    vault_url_ = o.required_string("vault_url");
    while (!vault_url_.empty() && vault_url_.back() == '/') vault_url_.pop_back();
    algorithm_ = o.string_or("algorithm", "RSA-OAEP-256");
    std::string token_file = o.string_or("token_file", "");
    std::string tenant_id = o.string_or("tenant_id", "");
    std::string client_id = o.string_or("client_id", "");
    std::string secret_file = o.string_or("client_secret_file", "");
    std::string cert_file = o.string_or("client_certificate_file", "");
    std::string federated_file = o.string_or("federated_token_file", "");
    std::string authority = o.string_or("authority_url", "");
    const char* authority_option = "authority_url";
    if (authority.empty()) {  // as the Azure SDKs: AZURE_AUTHORITY_HOST (AKS workload identity sets it)
      const char* host = ctx_.getenv ? ctx_.getenv("AZURE_AUTHORITY_HOST") : nullptr;
      authority = host != nullptr && *host != '\0' ? host : remote::azure::kDefaultAuthority;
      authority_option = host != nullptr && *host != '\0' ? "AZURE_AUTHORITY_HOST" : "authority_url";
    }
    while (!authority.empty() && authority.back() == '/') authority.pop_back();
    std::string imds_url = o.string_or("imds_url", "");
    while (!imds_url.empty() && imds_url.back() == '/') imds_url.pop_back();
    o.apply_ca_file(ctx_.http);
    o.finish();
    remote::check_base_url(vault_url_, name_, "vault_url");
    if (!remote::parse_url(vault_url_, vault_) || (vault_.path != "/" && !vault_.path.empty()))
      throw Error(sqlstate::kInvalidParameterValue, "invalid \"vault_url\" for KMS \"" + name_ + "\"",
                  "The vault URL has no path, e.g. https://myvault.vault.azure.net.");
    if (!remote::azure::allowed_algorithm(algorithm_))
      throw Error(sqlstate::kInvalidParameterValue, "invalid \"algorithm\" for KMS \"" + name_ + "\"",
                  "Use \"RSA-OAEP-256\" (RSA keys) or \"A256KW\" (oct-HSM AES keys).");
    if (!imds_url.empty()) remote::check_base_url(imds_url, name_, "imds_url", /*metadata=*/true);
    remote::check_credential_url(authority, name_,
                                 authority_option == std::string("authority_url") ? "the option \"authority_url\""
                                                                                  : "the server's AZURE_AUTHORITY_HOST",
                                 /*base=*/true);
    for (const auto& [opt, value] : {std::pair<const char*, const std::string*>{"tenant_id", &tenant_id},
                                     {"client_id", &client_id}})
      if (!value->empty() && !remote::azure::valid_directory_id(*value))
        throw Error(sqlstate::kInvalidParameterValue, std::string("invalid \"") + opt + "\" for KMS \"" + name_ + "\"",
                    "A tenant or client id is a GUID (a tenant may also be a domain name such as "
                    "contoso.onmicrosoft.com).");
    int explicit_sources = !token_file.empty() + !secret_file.empty() + !cert_file.empty() + !federated_file.empty();
    if (explicit_sources > 1)
      throw Error(sqlstate::kInvalidParameterValue, "KMS \"" + name_ + "\" has two credential sources",
                  "Only one of the options \"token_file\", \"client_secret_file\", \"client_certificate_file\" "
                  "and \"federated_token_file\" may be set.");

    std::unique_ptr<remote::OAuthTokenSource> grant;
    if (explicit_sources == 1 && token_file.empty()) {
      remote::azure::ClientConfig c;
      c.kms = name_;
      c.authority = authority;
      c.tenant_id = id_or_env(tenant_id, "tenant_id", "AZURE_TENANT_ID");
      c.client_id = id_or_env(client_id, "client_id", "AZURE_CLIENT_ID");
      c.origin = "the KMS options";
      if (!secret_file.empty()) {
        c.kind = remote::azure::ClientConfig::Kind::kSecret;
        c.file = secret_file;
      } else if (!cert_file.empty()) {
        c.kind = remote::azure::ClientConfig::Kind::kCertificate;
        c.file = cert_file;
      } else {
        c.kind = remote::azure::ClientConfig::Kind::kFederated;
        c.file = federated_file;
      }
      grant = remote::azure::make_client_source(std::move(c));
    }
    std::string kms = name_;
    auto from_env = [kms, authority, tenant_id, client_id](const KmsContext& ctx) -> std::unique_ptr<remote::OAuthTokenSource> {
      auto env = [&ctx](const char* n) -> std::string {
        const char* v = ctx.getenv ? ctx.getenv(n) : nullptr;
        return v == nullptr ? std::string() : std::string(v);
      };
      remote::azure::ClientConfig c;
      c.kms = kms;
      c.authority = authority;
      c.tenant_id = tenant_id.empty() ? env("AZURE_TENANT_ID") : tenant_id;
      c.client_id = client_id.empty() ? env("AZURE_CLIENT_ID") : client_id;
      c.origin = "the server's environment";
      const char* secret = ctx.getenv ? ctx.getenv("AZURE_CLIENT_SECRET") : nullptr;
      if (secret != nullptr && *secret != '\0') {
        c.kind = remote::azure::ClientConfig::Kind::kSecret;
        c.secret_env = "AZURE_CLIENT_SECRET";
      } else if (std::string p = env("AZURE_CLIENT_CERTIFICATE_PATH"); !p.empty()) {
        c.kind = remote::azure::ClientConfig::Kind::kCertificate;
        c.file = p;
      } else if (std::string f = env("AZURE_FEDERATED_TOKEN_FILE"); !f.empty()) {
        c.kind = remote::azure::ClientConfig::Kind::kFederated;
        c.file = f;
      } else {
        return nullptr;
      }
      if (c.tenant_id.empty() || c.client_id.empty()) return nullptr;  // the SDKs' rule: all or nothing
      if (!remote::azure::valid_directory_id(c.tenant_id) || !remote::azure::valid_directory_id(c.client_id))
        throw Error(sqlstate::kInvalidParameterValue, "invalid Azure AD ids for KMS \"" + kms + "\"",
                    "The server's AZURE_TENANT_ID or AZURE_CLIENT_ID is not a GUID or domain name.");
      return remote::azure::make_client_source(std::move(c));
    };
    // A user-assigned managed identity is chosen by its client id (option "client_id"),
    // as the Azure SDKs' ManagedIdentityCredential(client_id) does; without it IMDS
    // answers for the system-assigned identity.
    std::string imds_token_url = imds_url.empty() ? "" : imds_url + kImdsTokenPath;
    if (!imds_token_url.empty() && !client_id.empty()) imds_token_url += "&client_id=" + client_id;
    remote::MetadataTokenSource md{"imds_url", imds_token_url, "Metadata: true"};
    return remote::BearerToken(name_, token_file, "AZURE_ACCESS_TOKEN", std::move(grant), from_env,
                               "AZURE_TENANT_ID + AZURE_CLIENT_ID with AZURE_CLIENT_SECRET, "
                               "AZURE_CLIENT_CERTIFICATE_PATH or AZURE_FEDERATED_TOKEN_FILE",
                               std::move(md));
  }

  // An Azure AD id from its option, else from the server's environment (22023 without).
  std::string id_or_env(const std::string& option_value, const char* option, const char* env_var) const {
    if (!option_value.empty()) return option_value;
    const char* v = ctx_.getenv ? ctx_.getenv(env_var) : nullptr;
    std::string id = v == nullptr ? "" : v;
    if (id.empty())
      throw Error(sqlstate::kInvalidParameterValue, "KMS \"" + name_ + "\" needs option \"" + option + "\"",
                  std::string("Azure AD client credentials need the tenant and client ids: the option \"") + option +
                      "\", or the server's " + env_var + ".");
    if (!remote::azure::valid_directory_id(id))
      throw Error(sqlstate::kInvalidParameterValue, std::string("invalid ") + env_var + " for KMS \"" + name_ + "\"",
                  "A tenant or client id is a GUID (a tenant may also be a domain name).");
    return id;
  }

  KeyRef parse_kek(std::string_view kek) const {
    KeyRef ref;
    std::size_t slash = kek.find('/');
    std::string_view name = kek.substr(0, slash);
    std::string_view version = slash == std::string_view::npos ? std::string_view{} : kek.substr(slash + 1);
    if (!remote::azure::valid_key_name(name) ||
        (slash != std::string_view::npos && !remote::azure::valid_key_version(version)))
      throw Error(sqlstate::kInvalidParameterValue, "invalid Azure Key Vault key name for KMS \"" + name_ + "\"",
                  "A KEK is \"name\" or \"name/version\": a name of 1 to 127 characters from A-Z, a-z, 0-9 and "
                  "\"-\", a version of letters and digits.");
    ref.name = name;
    ref.version = version;
    return ref;
  }

  remote::azure::Site site(const char* op, const std::string& key_path, std::string_view kek) const {
    return {name_, op, std::string(kek), key_path, vault_url_, token_.describe()};
  }

  // `op` nullptr: GET the key itself.
  json call(const char* op, const std::string& key_path, std::string_view kek, const json& body) {
    HttpRequest rq;
    if (op == nullptr) {
      rq.method = "GET";
      rq.url = vault_url_ + key_path + "?" + kApiVersion;
    } else {
      rq.url = vault_url_ + key_path + "/" + op + "?" + kApiVersion;
      rq.headers.push_back("Content-Type: application/json");
      remote::set_json_body(rq, body);
    }
    HttpResult r = token_.call(rq, ctx_, remote::azure::judge);
    return remote::azure::result(r, site(op == nullptr ? "get key" : op, key_path, kek));
  }

  std::string name_;
  KmsContext ctx_;
  std::string vault_url_, algorithm_;
  remote::UrlParts vault_;
  remote::BearerToken token_;
};

}  // namespace

std::unique_ptr<KmsProvider> make_azure_keyvault_kms(const KmsConfig& cfg, const KmsContext& ctx) {
  return std::make_unique<AzureKeyVaultKms>(cfg, ctx);
}

}  // namespace pg_envelope
