// HashiCorp Vault / OpenBao Transit provider.
//
//   wrap   POST {address}/v1/{mount}/encrypt/{kek}   {"plaintext": b64(DEK || binding tag)}
//   unwrap POST {address}/v1/{mount}/decrypt/{kek}   {"ciphertext": "vault:vN:..."}
//   rewrap POST {address}/v1/{mount}/rewrap/{kek}    (same KEK, newest version, re-wrapped inside Vault;
//          envelope.rewrap_key() still unwraps old and new forms once to verify them)
//   KEK version  GET {address}/v1/{mount}/keys/{kek} -> "latest_version" and the creation time
//          of each version in "keys"; a wrapped DEK names its version ("vault:vN:")
//
// The wrapped DEK stored in envelope.data_key is the "vault:vN:..." string itself.
// Token (vault_auth.hpp): by default the "token_file" option (re-read whenever the
// file changes) or the server's VAULT_TOKEN environment variable; with "auth_method"
// a token from an AppRole, Kubernetes or JWT login, cached by this provider (one per
// backend) and renewed before it expires. Namespace via X-Vault-Namespace.
#include <algorithm>

#include "kms_messages.hpp"
#include "kms_responses.hpp"
#include "pg_envelope/encoding.hpp"
#include "remote_kms.hpp"
#include "secret_file.hpp"
#include "url.hpp"
#include "vault_auth.hpp"

namespace pg_envelope {

namespace remote::vault {

Verdict judge(const HttpResponse& resp) {
  if (resp.status >= 200 && resp.status < 300) return Verdict::kSuccess;
  if (resp.status == 429 || resp.status == 500 || resp.status == 502 || resp.status == 503 || resp.status == 504)
    return Verdict::kRetry;
  return Verdict::kFail;
}

json result(const HttpResult& r, const Site& site) {
  if (r.failure != HttpFailure::kNone) fail_transport(r, site.kms, site.op);
  json out = parse_body(r.response);
  long s = r.response.status;
  if (s >= 200 && s < 300) return out;
  // {"errors": ["..."]}: the first message names the failure; Vault puts a bad,
  // expired or revoked token's "invalid token" next to "permission denied", in the
  // same message (a multierror) or, from some proxies, in another entry.
  std::string msg;
  bool invalid_token = false;
  if (auto it = out.is_object() ? out.find("errors") : out.end(); it != out.end() && it->is_array()) {
    for (const auto& e : *it) {
      if (!e.is_string()) continue;
      const auto& m = e.get_ref<const SecureStdString&>();
      if (&e == &it->front()) msg = error_text(m);
      invalid_token = invalid_token || std::string_view(m).find("invalid token") != std::string_view::npos;
    }
  }
  std::string type = "HTTP " + std::to_string(s) + (msg.empty() ? "" : " " + msg);
  std::string detail = "Vault Transit key \"" + site.kek + "\" at " + site.address + " (mount \"" + site.mount + "\").";
  if (s == 401 || (s == 403 && invalid_token)) fail(FailureKind::kAuth, site.kms, site.op, type, detail);
  if (s == 403) fail(FailureKind::kPermission, site.kms, site.op, type, detail);
  if (s == 429 || s >= 500) fail(FailureKind::kUnavailable, site.kms, site.op, type, detail);
  if (msg.find("not found") != std::string::npos) fail(FailureKind::kNotFound, site.kms, site.op, type, detail);
  if (msg.find("authentication failed") != std::string::npos || msg.find("invalid ciphertext") != std::string::npos ||
      msg.find("unable to decrypt") != std::string::npos)
    fail(FailureKind::kInvalidCiphertext, site.kms, site.op, type, detail);
  if (msg.find("disabled") != std::string::npos || msg.find("min_decryption_version") != std::string::npos ||
      msg.find("disallowed by policy") != std::string::npos || msg.find("archived") != std::string::npos)
    fail(FailureKind::kDisabled, site.kms, site.op, type, detail);
  fail(FailureKind::kBadRequest, site.kms, site.op, type, detail);
}

namespace {

// "data".<name> when it is a string.
const json* data_field(const json& out, const char* name) {
  auto d = out.is_object() ? out.find("data") : out.end();
  if (d == out.end() || !d->is_object()) return nullptr;
  auto it = d->find(name);
  return (it == d->end() || !it->is_string()) ? nullptr : &*it;
}

}  // namespace

Bytes ciphertext(const json& out, const std::string& kms, const std::string& op) {
  const json* c = data_field(out, "ciphertext");
  if (c == nullptr || c->get_ref<const SecureStdString&>().rfind("vault:v", 0) != 0)
    fail(FailureKind::kBadRequest, kms, op, "malformed response", "The response has no \"vault:vN:\" ciphertext.");
  const auto& s = c->get_ref<const SecureStdString&>();
  return Bytes(s.begin(), s.end());
}

KekVersion latest_version(const json& out, const std::string& kms) {
  auto d = out.is_object() ? out.find("data") : out.end();
  const json* latest = nullptr;
  if (d != out.end() && d->is_object()) {
    auto it = d->find("latest_version");
    if (it != d->end() && it->is_number_unsigned()) latest = &*it;
  }
  if (latest == nullptr || latest->get<std::uint64_t>() == 0)
    fail(FailureKind::kBadRequest, kms, "read key", "malformed response", "The response has no \"latest_version\".");
  KekVersion v;
  std::uint64_t n = latest->get<std::uint64_t>();
  v.version = std::to_string(n);
  // "keys": {"1": <Unix time>, ...} for symmetric keys; version 1 has no older one.
  auto keys = d->find("keys");
  if (n > 1) {
    const json* created = nullptr;
    if (keys != d->end() && keys->is_object()) {
      auto it = keys->find(SecureStdString(v.version.begin(), v.version.end()));
      if (it != keys->end() && it->is_number_integer() && it->get<std::int64_t>() > 0 &&
          it->get<std::int64_t>() < 100000000000)  // Unix seconds before year 5000
        created = &*it;
    }
    if (created == nullptr)
      fail(FailureKind::kBadRequest, kms, "read key", "malformed response",
           "The response has no creation time for the latest version.");
    v.since_us = created->get<std::int64_t>() * 1000000;
  }
  return v;
}

std::string wrapped_version(ByteView wrapped) {
  std::string_view w(reinterpret_cast<const char*>(wrapped.data()), wrapped.size());
  if (w.rfind("vault:v", 0) != 0) return {};
  std::size_t end = w.find(':', 7);
  if (end == std::string_view::npos || end == 7 || end > 7 + 10) return {};
  for (std::size_t i = 7; i < end; ++i)
    if (w[i] < '0' || w[i] > '9') return {};
  return std::string(w.substr(7, end - 7));
}

SecureBytes plaintext(const json& out, const std::string& kms) {
  const json* p = data_field(out, "plaintext");
  SecureBytes payload;
  if (p == nullptr || !base64_decode_secret(std::string_view(p->get_ref<const SecureStdString&>()), payload))
    fail(FailureKind::kBadRequest, kms, "decrypt", "malformed response", "The response has no valid plaintext.");
  return payload;
}

}  // namespace remote::vault

namespace {

using remote::FailureKind;
using remote::json;

class VaultTransitKms final : public KmsProvider {
 public:
  VaultTransitKms(const KmsConfig& cfg, const KmsContext& ctx) : name_(cfg.name), ctx_(ctx) {
    remote::Options o(cfg);
    address_ = o.required_string("address");
    while (!address_.empty() && address_.back() == '/') address_.pop_back();
    mount_ = o.string_or("mount", "transit");
    namespace_ = o.string_or("namespace", "");
    std::string token_file = o.string_or("token_file", "");
    remote::vault::LoginConfig login;
    std::string method = o.string_or("auth_method", "");
    login.mount = o.string_or("auth_mount", "");
    login.role = o.string_or("role", "");
    login.role_id = o.string_or("role_id", "");
    login.role_id_file = o.string_or("role_id_file", "");
    login.secret_id_file = o.string_or("secret_id_file", "");
    login.jwt_file = o.string_or("jwt_file", "");
    o.apply_ca_file(ctx_.http);
    o.finish();
    // check_kms_url() first, so an address that is not an https (or loopback http)
    // URL gets that error; then the base-URL rules the other providers follow too,
    // since paths are appended to the address.
    check_kms_url(address_, name_, "address");
    remote::check_base_url(address_, name_, "address");
    auto bad_chars = [](const std::string& v) {
      for (char c : v)
        if (static_cast<unsigned char>(c) < 0x21 || c == 0x7f || c == '?' || c == '#') return true;
      return false;
    };
    if (mount_.empty() || bad_chars(mount_))
      throw Error(sqlstate::kInvalidParameterValue, "invalid \"mount\" for KMS \"" + name_ + "\"");
    if (bad_chars(namespace_))
      throw Error(sqlstate::kInvalidParameterValue, "invalid \"namespace\" for KMS \"" + name_ + "\"");
    login.kms = name_;
    login.address = address_;
    login.namespace_ = namespace_;
    tokens_ = make_token_source(method, token_file, std::move(login), bad_chars);
  }

  const std::string& kms_name() const override { return name_; }

  std::string default_kek() const override {
    throw Error(sqlstate::kInvalidParameterValue, "KMS \"" + name_ + "\" needs a KEK",
                "Vault Transit keys are named; pg_envelope does not pick one.",
                "Pass kek => 'transit-key-name' to envelope.create_key().");
  }

  void validate_kek(std::string_view kek) const override {
    bool ok = !kek.empty() && kek.size() <= 128;
    for (char c : kek)
      ok = ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                  c == '-' || c == '.');
    if (!ok)
      throw Error(sqlstate::kInvalidParameterValue, "invalid Vault Transit key name for KMS \"" + name_ + "\"",
                  "A Transit key name is 1 to 128 characters from A-Z, a-z, 0-9 and \"_-.\".");
  }

  Bytes wrap(std::string_view kek, const DekBinding& b, ByteView dek) override {
    SecureBytes payload = remote::bind_dek(dek, b);
    json body;
    body["plaintext"] = std::string_view(base64_encode_secret(payload.view()).view());
    return remote::vault::ciphertext(call("encrypt", kek, body), name_, "encrypt");
  }

  SecureBytes unwrap(std::string_view kek, const DekBinding& b, ByteView wrapped) override {
    json body;
    body["ciphertext"] = std::string_view(reinterpret_cast<const char*>(wrapped.data()), wrapped.size());
    json out = call("decrypt", kek, body);
    SecureBytes payload = remote::vault::plaintext(out, name_);
    return remote::unbind_dek(payload.view(), b, name_);
  }

  Bytes rewrap(std::string_view old_kek, std::string_view new_kek, const DekBinding& b, ByteView wrapped) override {
    if (old_kek != new_kek) return KmsProvider::rewrap(old_kek, new_kek, b, wrapped);
    json body;
    body["ciphertext"] = std::string_view(reinterpret_cast<const char*>(wrapped.data()), wrapped.size());
    return remote::vault::ciphertext(call("rewrap", new_kek, body), name_, "rewrap");
  }

  // Needs the "read" capability on {mount}/keys/{kek} besides encrypt/decrypt/rewrap.
  std::optional<KekVersion> current_kek_version(std::string_view kek) override {
    return remote::vault::latest_version(call("keys", kek, json(), "GET"), name_);
  }

  std::string wrapped_kek_version(std::string_view, ByteView wrapped) const override {
    return remote::vault::wrapped_version(wrapped);
  }

 private:
  // The token source of the options: the static token unless "auth_method" names a
  // login. Options of another method than the one chosen are refused (22023), so a
  // configuration never silently mixes two ways to authenticate.
  template <typename BadChars>
  std::unique_ptr<remote::vault::VaultTokenSource> make_token_source(const std::string& method,
                                                                     const std::string& token_file,
                                                                     remote::vault::LoginConfig login,
                                                                     const BadChars& bad_chars) const {
    using Method = remote::vault::LoginConfig::Method;
    auto refuse = [&](const std::string& msg, const std::string& detail, const std::string& hint = "") {
      throw Error(sqlstate::kInvalidParameterValue, msg, detail,
                  hint.empty() ? "See the vault-transit section of docs/kms.md for the options of each method." : hint);
    };
    auto conflict = [&](const char* option, const std::string& chosen) {
      refuse("KMS \"" + name_ + "\" configures two Vault auth methods",
             "Option \"" + std::string(option) + "\" does not belong to " + chosen + ".",
             "Keep the options of one method: \"token_file\" (or VAULT_TOKEN) for a static token, or "
             "\"auth_method\" with its options.");
    };
    const std::pair<const char*, const std::string*> all[] = {
        {"token_file", &token_file},          {"auth_mount", &login.mount},       {"role", &login.role},
        {"role_id", &login.role_id},          {"role_id_file", &login.role_id_file},
        {"secret_id_file", &login.secret_id_file}, {"jwt_file", &login.jwt_file}};
    auto allow_only = [&](std::initializer_list<const char*> allowed, const std::string& chosen) {
      for (const auto& [option, value] : all) {
        if (value->empty()) continue;
        bool ok = false;
        for (const char* a : allowed) ok = ok || std::string_view(a) == option;
        if (!ok) conflict(option, chosen);
      }
    };
    if (method.empty() || method == "token") {
      allow_only({"token_file"}, "a static token (no \"auth_method\")");
      return remote::vault::make_static_token_source(name_, token_file);
    }
    if (method == "approle") {
      login.method = Method::kAppRole;
      allow_only({"auth_mount", "role_id", "role_id_file", "secret_id_file"}, "the AppRole method");
      if (login.role_id.empty() == login.role_id_file.empty())
        refuse("KMS \"" + name_ + "\" needs one of \"role_id\" and \"role_id_file\"",
               "The AppRole method logs in with a role ID, given in the options or in a file, not both.");
      if (login.secret_id_file.empty())
        refuse("KMS \"" + name_ + "\" needs option \"secret_id_file\"",
               "The AppRole method logs in with a secret ID read from a file.");
      if (bad_chars(login.role_id) || login.role_id.size() > 256)
        refuse("invalid \"role_id\" for KMS \"" + name_ + "\"", "A role ID has no spaces or control characters.");
    } else if (method == "kubernetes" || method == "jwt") {
      bool k8s = method == "kubernetes";
      login.method = k8s ? Method::kKubernetes : Method::kJwt;
      allow_only({"auth_mount", "role", "jwt_file"}, k8s ? "the Kubernetes method" : "the JWT method");
      if (login.role.empty())
        refuse("KMS \"" + name_ + "\" needs option \"role\"",
               std::string("The ") + (k8s ? "Kubernetes" : "JWT") + " method logs in to a named Vault role.");
      if (login.jwt_file.empty()) {
        if (!k8s)
          refuse("KMS \"" + name_ + "\" needs option \"jwt_file\"", "The JWT method sends the JWT read from a file.");
        login.jwt_file = "/var/run/secrets/kubernetes.io/serviceaccount/token";
      }
      if (bad_chars(login.role) || login.role.size() > 256)
        refuse("invalid \"role\" for KMS \"" + name_ + "\"", "A role name has no spaces or control characters.");
    } else {
      refuse("invalid \"auth_method\" for KMS \"" + name_ + "\"",
             "Valid methods: \"token\" (the default), \"approle\", \"kubernetes\", \"jwt\".");
    }
    if (login.mount.empty()) login.mount = method;
    if (bad_chars(login.mount) || login.mount.front() == '/' || login.mount.back() == '/')
      refuse("invalid \"auth_mount\" for KMS \"" + name_ + "\"",
             "An auth mount is a path such as \"approle\" or \"k8s/prod\": no leading or trailing \"/\", no "
             "\"?\", \"#\", spaces or control characters.");
    for (const std::string* f : {&login.role_id_file, &login.secret_id_file, &login.jwt_file})
      if (!f->empty() && f->front() != '/')
        refuse("file options of KMS \"" + name_ + "\" must be absolute paths",
               "\"" + *f + "\" is relative; the server's working directory is its data directory.");
    return remote::vault::make_login_token_source(std::move(login));
  }

  // One Transit call. When Vault answers 403 to a cached login token (expired early,
  // revoked), the token is dropped and the call made once more after a new login.
  json call(const char* op, std::string_view kek, const json& body, const char* method = "POST") {
    validate_kek(kek);
    for (int round = 0;; ++round) {
      remote::vault::VaultCredential cred = tokens_->get(ctx_);
      for (char c : cred.token.view())
        if (static_cast<unsigned char>(c) < 0x21 || c == 0x7f)
          remote::fail(FailureKind::kAuth, name_, op, "malformed Vault token",
                       "The token contains spaces or control characters.");
      HttpRequest rq;
      rq.method = method;
      rq.url = address_ + "/v1/" + mount_ + "/" + op + "/" + std::string(kek);
      if (rq.method == "POST") rq.headers.push_back("Content-Type: application/json");
      if (!namespace_.empty()) rq.headers.push_back("X-Vault-Namespace: " + namespace_);
      SecretString hdr("X-Vault-Token: ");
      hdr.append(cred.token.view());
      rq.secret_headers.push_back(std::move(hdr));
      if (rq.method == "POST") remote::set_json_body(rq, body);
      HttpResult r = http_call(rq, ctx_.http, remote::vault::judge);
      if (round == 0 && cred.from_login && !cred.fresh && r.failure == HttpFailure::kNone && r.response.status == 403 &&
          tokens_->invalidate())
        continue;
      return remote::vault::result(r, {name_, rq.method == "GET" ? "read key" : op, std::string(kek), address_, mount_});
    }
  }

  std::string name_;
  KmsContext ctx_;
  std::string address_, mount_, namespace_;
  std::unique_ptr<remote::vault::VaultTokenSource> tokens_;
};

}  // namespace

std::unique_ptr<KmsProvider> make_vault_transit_kms(const KmsConfig& cfg, const KmsContext& ctx) {
  return std::make_unique<VaultTransitKms>(cfg, ctx);
}

}  // namespace pg_envelope
