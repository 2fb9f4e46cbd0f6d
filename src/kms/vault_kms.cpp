// HashiCorp Vault / OpenBao Transit provider.
//
//   wrap   POST {address}/v1/{mount}/encrypt/{kek}   {"plaintext": b64(DEK || binding tag)}
//   unwrap POST {address}/v1/{mount}/decrypt/{kek}   {"ciphertext": "vault:vN:..."}
//   rewrap POST {address}/v1/{mount}/rewrap/{kek}    (same KEK, newest version, re-wrapped inside Vault;
//          envelope.rewrap_key() still unwraps old and new forms once to verify them)
//
// The wrapped DEK stored in envelope.data_key is the "vault:vN:..." string itself.
// Token: the "token_file" option (re-read whenever the file changes) or the server's
// VAULT_TOKEN environment variable. Namespace via X-Vault-Namespace.
#include <sys/stat.h>

#include "remote_kms.hpp"

namespace pg_envelope {

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
    token_file_ = o.string_or("token_file", "");
    std::string ca = o.string_or("ca_file", "");
    if (!ca.empty()) {
      ctx_.http.ca_file = ca;
      ctx_.http.ca_file_fixed = true;
    }
    o.finish();
    check_kms_url(address_, name_);
    auto bad_chars = [](const std::string& v) {
      for (char c : v)
        if (static_cast<unsigned char>(c) < 0x21 || c == 0x7f || c == '?' || c == '#') return true;
      return false;
    };
    if (mount_.empty() || bad_chars(mount_))
      throw Error(sqlstate::kInvalidParameterValue, "invalid \"mount\" for KMS \"" + name_ + "\"");
    if (bad_chars(namespace_))
      throw Error(sqlstate::kInvalidParameterValue, "invalid \"namespace\" for KMS \"" + name_ + "\"");
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
    body["plaintext"] = std::string_view(remote::b64_secret(payload.view()).view());
    json out = call("encrypt", kek, body);
    return ciphertext_of(out, "encrypt");
  }

  SecureBytes unwrap(std::string_view kek, const DekBinding& b, ByteView wrapped) override {
    json body;
    body["ciphertext"] = std::string_view(reinterpret_cast<const char*>(wrapped.data()), wrapped.size());
    json out = call("decrypt", kek, body);
    const json* p = field(out, "plaintext");
    SecureBytes payload;
    if (p == nullptr || !remote::unb64(std::string_view(p->get_ref<const remote::SecureStdString&>()), payload))
      remote::fail(FailureKind::kBadRequest, name_, "decrypt", "malformed response", "The response has no valid plaintext.");
    return remote::unbind_dek(payload.view(), b, name_);
  }

  Bytes rewrap(std::string_view old_kek, std::string_view new_kek, const DekBinding& b, ByteView wrapped) override {
    if (old_kek != new_kek) return KmsProvider::rewrap(old_kek, new_kek, b, wrapped);
    json body;
    body["ciphertext"] = std::string_view(reinterpret_cast<const char*>(wrapped.data()), wrapped.size());
    return ciphertext_of(call("rewrap", new_kek, body), "rewrap");
  }

 private:
  SecretString token() {
    if (token_file_.empty()) {
      const char* env = ctx_.getenv ? ctx_.getenv("VAULT_TOKEN") : nullptr;
      if (env == nullptr || *env == '\0')
        remote::fail(FailureKind::kAuth, name_, "authentication", "no Vault token",
                     "Neither the \"token_file\" option nor the server's VAULT_TOKEN environment variable is set.");
      return SecretString(env);
    }
    struct stat st;
    if (::stat(token_file_.c_str(), &st) == 0 &&
        (st.st_mtim.tv_sec != token_mtime_.tv_sec || st.st_mtim.tv_nsec != token_mtime_.tv_nsec ||
         cached_token_.empty())) {
      cached_token_ = remote::read_secret_file(token_file_, name_, "token");
      token_mtime_ = st.st_mtim;
    } else if (cached_token_.empty()) {
      cached_token_ = remote::read_secret_file(token_file_, name_, "token");
    }
    return SecretString(cached_token_.view());
  }

  json call(const char* op, std::string_view kek, const json& body) {
    validate_kek(kek);
    SecretString tok = token();
    for (char c : tok.view())
      if (static_cast<unsigned char>(c) < 0x21 || c == 0x7f)
        remote::fail(FailureKind::kAuth, name_, op, "malformed Vault token",
                     "The token contains spaces or control characters.");
    HttpRequest rq;
    rq.url = address_ + "/v1/" + mount_ + "/" + op + "/" + std::string(kek);
    rq.headers.push_back("Content-Type: application/json");
    if (!namespace_.empty()) rq.headers.push_back("X-Vault-Namespace: " + namespace_);
    SecretString hdr("X-Vault-Token: ");
    hdr.append(tok.view());
    rq.secret_headers.push_back(std::move(hdr));
    remote::set_json_body(rq, body);
    HttpResult r = http_call(rq, ctx_.http, [](const HttpResponse& resp) {
      if (resp.status >= 200 && resp.status < 300) return Verdict::kSuccess;
      if (resp.status == 429 || resp.status == 500 || resp.status == 502 || resp.status == 503 || resp.status == 504)
        return Verdict::kRetry;
      return Verdict::kFail;
    });
    if (r.failure != HttpFailure::kNone) remote::fail_transport(r, name_, op);
    json out = remote::parse_body(r.response);
    if (r.response.status >= 200 && r.response.status < 300) return out;
    std::string msg;
    if (out.is_object() && out.contains("errors") && out["errors"].is_array() && !out["errors"].empty() &&
        out["errors"][0].is_string()) {
      const auto& m = out["errors"][0].get_ref<const remote::SecureStdString&>();
      msg.assign(m.data(), std::min<std::size_t>(m.size(), 200));
    }
    std::string type = "HTTP " + std::to_string(r.response.status) + (msg.empty() ? "" : " " + msg);
    std::string detail = "Vault Transit key \"" + std::string(kek) + "\" at " + address_ + " (mount \"" + mount_ + "\").";
    long s = r.response.status;
    if (s == 401) remote::fail(FailureKind::kAuth, name_, op, type, detail);
    if (s == 403) remote::fail(FailureKind::kPermission, name_, op, type, detail);
    if (s == 429 || s >= 500) remote::fail(FailureKind::kUnavailable, name_, op, type, detail);
    if (msg.find("not found") != std::string::npos) remote::fail(FailureKind::kNotFound, name_, op, type, detail);
    if (msg.find("authentication failed") != std::string::npos || msg.find("invalid ciphertext") != std::string::npos ||
        msg.find("unable to decrypt") != std::string::npos)
      remote::fail(FailureKind::kInvalidCiphertext, name_, op, type, detail);
    if (msg.find("disabled") != std::string::npos || msg.find("min_decryption_version") != std::string::npos ||
        msg.find("disallowed by policy") != std::string::npos ||
        msg.find("archived") != std::string::npos)
      remote::fail(FailureKind::kDisabled, name_, op, type, detail);
    remote::fail(FailureKind::kBadRequest, name_, op, type, detail);
  }

  const json* field(const json& out, const char* name) {
    if (!out.is_object() || !out.contains("data") || !out["data"].is_object()) return nullptr;
    const json& d = out["data"];
    auto it = d.find(name);
    return (it == d.end() || !it->is_string()) ? nullptr : &*it;
  }

  Bytes ciphertext_of(const json& out, const char* op) {
    const json* c = field(out, "ciphertext");
    if (c == nullptr || c->get_ref<const remote::SecureStdString&>().rfind("vault:v", 0) != 0)
      remote::fail(FailureKind::kBadRequest, name_, op, "malformed response", "The response has no \"vault:vN:\" ciphertext.");
    const auto& s = c->get_ref<const remote::SecureStdString&>();
    return Bytes(s.begin(), s.end());
  }

  std::string name_;
  KmsContext ctx_;
  std::string address_, mount_, namespace_, token_file_;
  SecretString cached_token_;
  timespec token_mtime_{};
};

}  // namespace

std::unique_ptr<KmsProvider> make_vault_transit_kms(const KmsConfig& cfg, const KmsContext& ctx) {
  return std::make_unique<VaultTransitKms>(cfg, ctx);
}

}  // namespace pg_envelope
