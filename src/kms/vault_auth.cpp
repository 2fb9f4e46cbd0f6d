// Vault / OpenBao tokens: static, or by login with renewal (see vault_auth.hpp).
#include "vault_auth.hpp"

#include <algorithm>

#include "credential_codec.hpp"
#include "kms_messages.hpp"
#include "remote_kms.hpp"

namespace pg_envelope::remote::vault {

namespace {

// A token goes into a header line: visible ASCII only.
bool clean_token(std::string_view t) {
  return !t.empty() && std::all_of(t.begin(), t.end(), [](char c) { return c > ' ' && c < 127; });
}

std::int64_t steady_now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// The first of Vault's {"errors": [...]}, safe to show; withheld if it quotes one of
// `secrets` (Vault does not, but a proxy in front of it might echo the request).
std::string first_error(const json& out, std::initializer_list<std::string_view> secrets) {
  auto it = out.is_object() ? out.find("errors") : out.end();
  if (it == out.end() || !it->is_array() || it->empty() || !it->front().is_string()) return {};
  const auto& m = it->front().get_ref<const SecureStdString&>();
  std::string_view raw(m.data(), m.size());
  for (std::string_view s : secrets)
    if (s.size() >= 4 && raw.find(s) != std::string_view::npos) return "(error text withheld: it quotes the credential)";
  return error_text(raw);
}

}  // namespace

Verdict judge_auth(const HttpResponse& resp) {
  if (resp.status >= 200 && resp.status < 300) return Verdict::kSuccess;
  if (resp.status == 429 || resp.status == 500 || resp.status == 502 || resp.status == 503 || resp.status == 504)
    return Verdict::kRetry;
  return Verdict::kFail;
}

AuthLease parse_auth_response(const HttpResult& r, const std::string& kms, const std::string& op,
                              const std::string& where, std::initializer_list<std::string_view> withhold) {
  if (r.failure != HttpFailure::kNone) fail_transport(r, kms, op);
  json out = parse_body(r.response);
  long s = r.response.status;
  if (s < 200 || s >= 300) {
    std::string msg = first_error(out, withhold);
    fail(s == 429 || s >= 500 ? FailureKind::kUnavailable : FailureKind::kAuth, kms, op,
         "HTTP " + std::to_string(s) + (msg.empty() ? "" : " " + msg), where + " was refused.");
  }
  auto malformed = [&](const std::string& why) {
    fail(FailureKind::kAuth, kms, op, "malformed response", where + " answered " + why + ".");
  };
  auto auth = out.is_object() ? out.find("auth") : out.end();
  if (auth == out.end() || !auth->is_object()) malformed("without an \"auth\" object");
  auto tok = auth->find("client_token");
  if (tok == auth->end() || !tok->is_string() ||
      !clean_token(std::string_view(tok->get_ref<const SecureStdString&>().data(), tok->get_ref<const SecureStdString&>().size())))
    malformed("without a client_token of visible ASCII characters");
  AuthLease lease;
  auto ld = auth->find("lease_duration");
  if (ld == auth->end() || !ld->is_number_unsigned() || ld->get<std::uint64_t>() >= 1000000000u)
    malformed("without a lease_duration in whole seconds below 10^9");
  lease.lease_seconds = static_cast<long>(ld->get<std::uint64_t>());
  if (auto rn = auth->find("renewable"); rn != auth->end()) {
    if (!rn->is_boolean()) malformed("with a \"renewable\" that is not a boolean");
    lease.renewable = rn->get<bool>();
  }
  const auto& t = tok->get_ref<const SecureStdString&>();
  lease.client_token = SecretString(std::string_view(t.data(), t.size()));
  return lease;
}

TokenAction next_action(const LeaseState& lease, std::int64_t now_ms) noexcept {
  if (lease.lease_seconds <= 0) return TokenAction::kUse;
  std::int64_t lease_ms = static_cast<std::int64_t>(lease.lease_seconds) * 1000;
  // Ends a little early, for the request on the way: 1 s, or a tenth of a short lease
  // (so that a lease of a few seconds still reaches its renewal at two thirds).
  if (now_ms >= lease.granted_ms + lease_ms - std::min<std::int64_t>(1000, lease_ms / 10)) return TokenAction::kLogin;
  if (now_ms >= lease.granted_ms + lease_ms * 2 / 3)
    return lease.renewable && !lease.capped ? TokenAction::kRenew : TokenAction::kLogin;
  return TokenAction::kUse;
}

std::int64_t lease_expiry_ms(const LeaseState& lease) noexcept {
  return lease.lease_seconds <= 0 ? 0 : lease.granted_ms + static_cast<std::int64_t>(lease.lease_seconds) * 1000;
}

long renew_increment(long login_lease_seconds) noexcept { return std::max(1L, login_lease_seconds); }

bool renewal_capped(long asked, long granted) noexcept { return granted < asked; }

const char* method_label(LoginConfig::Method m) noexcept {
  switch (m) {
    case LoginConfig::Method::kAppRole: return "AppRole";
    case LoginConfig::Method::kKubernetes: return "Kubernetes";
    case LoginConfig::Method::kJwt: return "JWT";
  }
  return "";
}

namespace {

class StaticTokenSource final : public VaultTokenSource {
 public:
  StaticTokenSource(std::string kms, const std::string& token_file)
      : kms_(std::move(kms)), file_(token_file, kms_, "token") {}

  VaultCredential get(const KmsContext& ctx) override {
    VaultCredential c;
    if (file_.path().empty()) {
      const char* env = ctx.getenv ? ctx.getenv("VAULT_TOKEN") : nullptr;
      if (env == nullptr || *env == '\0')
        fail(FailureKind::kAuth, kms_, "authentication", "no Vault token",
             "Neither the \"token_file\" option, the server's VAULT_TOKEN environment variable nor the "
             "\"auth_method\" option is set.");
      c.token = SecretString(env);
    } else {
      c.token = file_.get();
    }
    return c;
  }

  bool invalidate() override { return false; }

  std::string describe() const override {
    return file_.path().empty() ? "the server's VAULT_TOKEN" : "the token file \"" + file_.path() + "\"";
  }

 private:
  std::string kms_;
  CachedSecretFile file_;
};

class LoginTokenSource final : public VaultTokenSource {
 public:
  LoginTokenSource(LoginConfig cfg, std::function<std::int64_t()> now)
      : cfg_(std::move(cfg)),
        now_(now ? std::move(now) : std::function<std::int64_t()>(steady_now_ms)),
        role_id_file_(cfg_.role_id_file, cfg_.kms, "role_id"),
        secret_id_file_(cfg_.secret_id_file, cfg_.kms, "secret_id"),
        jwt_file_(cfg_.jwt_file, cfg_.kms, "JWT") {}

  VaultCredential get(const KmsContext& ctx) override {
    logins_in_get_ = 0;
    if (ctx.credentials) return get_shared(ctx);
    if (token_.empty()) {
      login(ctx);
    } else {
      switch (next_action(lease_, now_())) {
        case TokenAction::kUse: break;
        case TokenAction::kRenew: renew(ctx); break;
        case TokenAction::kLogin: login(ctx); break;
      }
    }
    return credential();
  }

  bool invalidate() override {
    if (token_.empty()) return false;
    token_.wipe();
    if (store_ && !value_.empty()) (void)store_->invalidate(identity(), value_.view());
    value_.wipe();
    return true;
  }

  std::string describe() const override {
    return std::string("the ") + method_label(cfg_.method) + " login (auth mount \"" + cfg_.mount + "\")";
  }

 private:
  HttpRequest request(const std::string& path) const {
    HttpRequest rq;
    rq.method = "POST";
    rq.url = cfg_.address + "/v1/" + path;
    rq.headers.push_back("Content-Type: application/json");
    if (!cfg_.namespace_.empty()) rq.headers.push_back("X-Vault-Namespace: " + cfg_.namespace_);
    return rq;
  }

  std::string where_login() const {
    return std::string("The ") + method_label(cfg_.method) + " login at " + cfg_.address + " (auth mount \"" +
           cfg_.mount + "\"" + (cfg_.role.empty() ? "" : ", role \"" + cfg_.role + "\"") + ")";
  }

  VaultCredential credential() {
    VaultCredential c;
    c.fresh = logins_in_get_ > 0;
    c.token = SecretString(token_.view());
    c.expires_ms = lease_expiry_ms(lease_);
    c.from_login = true;
    return c;
  }

  // What decides where the token comes from (never a secret): the server-wide store's
  // identity of this login.
  std::string identity() const {
    return std::string("vault-transit login\n") + cfg_.kms + "\n" + cfg_.address + "\n" + cfg_.namespace_ + "\n" +
           method_label(cfg_.method) + "\n" + cfg_.mount + "\n" + cfg_.role + "\n" + cfg_.role_id + "\n" +
           cfg_.role_id_file + "\n" + cfg_.secret_id_file + "\n" + cfg_.jwt_file;
  }

  // The token through the server-wide store: this backend's copy while it needs
  // nothing; else the stored one, which one backend of the server renews (renew-self)
  // or replaces (a new login) when it is due, publishing its new lease.
  VaultCredential get_shared(const KmsContext& ctx) {
    store_ = ctx.credentials;
    if (!token_.empty() && next_action(lease_, now_()) == TokenAction::kUse) return credential();
    token_.wipe();
    value_.wipe();
    StoredCredential got = ctx.credentials->get(identity(), [&](const SecureBytes* previous) {
      // The stored token is due (its refresh time is the renewal point): renewed when it
      // can be, else replaced by a new login.
      if (previous != nullptr && decode(previous->view()) && lease_.renewable && !lease_.capped &&
          next_action(lease_, now_()) != TokenAction::kLogin)
        renew(ctx, false);
      else
        login(ctx);
      return encode();
    });
    if (!decode(got.value.view()))
      fail(FailureKind::kAuth, cfg_.kms, "authentication", "malformed shared Vault token",
           "The token in the server's shared credential store could not be read back.");
    value_ = SecureBytes(got.value.data(), got.value.size());
    return credential();
  }

  // The token and its lease as stored: times in Unix microseconds (this backend's
  // steady clock is converted both ways).
  StoredCredential encode() const {
    std::int64_t unix_now = unix_now_us(), steady_now = now_();
    auto to_unix = [&](std::int64_t ms) { return unix_now + (ms - steady_now) * 1000; };
    StoredCredential out;
    out.value = CredentialWriter(kVaultTokenKind)
                    .secret(token_.view())
                    .integer(to_unix(lease_.granted_ms))
                    .integer(lease_.lease_seconds)
                    .integer(lease_.renewable ? 1 : 0)
                    .integer(lease_.capped ? 1 : 0)
                    .integer(login_lease_)
                    .finish();
    if (lease_.lease_seconds <= 0) {
      out.refresh_at_us = out.expires_at_us = 0;  // never expires
    } else {
      std::int64_t lease_ms = static_cast<std::int64_t>(lease_.lease_seconds) * 1000;
      out.refresh_at_us = to_unix(lease_.granted_ms + lease_ms * 2 / 3);
      out.expires_at_us = to_unix(lease_.granted_ms + lease_ms - std::min<std::int64_t>(1000, lease_ms / 10));
    }
    return out;
  }

  bool decode(ByteView bytes) {
    CredentialReader r(bytes, kVaultTokenKind);
    SecretString token;
    std::int64_t granted = 0, lease = 0, renewable = 0, capped = 0, login_lease = 0;
    if (!r.secret(token) || !r.integer(granted) || !r.integer(lease) || !r.integer(renewable) || !r.integer(capped) ||
        !r.integer(login_lease) || !r.done() || token.empty() || lease < 0 || lease >= 1000000000 || login_lease < 0 ||
        login_lease >= 1000000000)
      return false;
    token_ = std::move(token);
    lease_ = LeaseState{now_() - (unix_now_us() - granted) / 1000, static_cast<long>(lease), renewable != 0,
                        capped != 0};
    login_lease_ = static_cast<long>(login_lease);
    return true;
  }

  static std::int64_t unix_now_us() {
    return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
  }

  void login(const KmsContext& ctx) {
    token_.wipe();
    HttpRequest rq = request("auth/" + cfg_.mount + "/login");
    json body;
    SecretString a, b;  // role_id and secret_id, or the JWT
    if (cfg_.method == LoginConfig::Method::kAppRole) {
      a = cfg_.role_id.empty() ? role_id_file_.get() : SecretString(cfg_.role_id);
      b = secret_id_file_.get();
      body["role_id"] = a.view();
      body["secret_id"] = b.view();
    } else {
      b = jwt_file_.get();
      body["role"] = std::string_view(cfg_.role);
      body["jwt"] = b.view();
    }
    set_json_body(rq, body);
    std::int64_t sent = now_();
    HttpResult r = http_call(rq, ctx.http, judge_auth);
    AuthLease got = parse_auth_response(r, cfg_.kms, "login", where_login(), {b.view()});
    token_ = std::move(got.client_token);
    lease_ = LeaseState{sent, got.lease_seconds, got.renewable, false};
    login_lease_ = got.lease_seconds;
    ++logins_in_get_;
  }

  // Renews the token; a refused renewal logs in again, a Vault that cannot be reached
  // leaves the token in use while it is still valid (with `tolerate`; the shared store
  // instead keeps the stored token in use and remembers the failure).
  void renew(const KmsContext& ctx, bool tolerate = true) {
    HttpRequest rq = request("auth/token/renew-self");
    SecretString hdr("X-Vault-Token: ");
    hdr.append(token_.view());
    rq.secret_headers.push_back(std::move(hdr));
    long asked = renew_increment(login_lease_);
    json body;
    body["increment"] = std::to_string(asked) + "s";
    set_json_body(rq, body);
    std::int64_t sent = now_();
    HttpResult r = http_call(rq, ctx.http, judge_auth);
    std::string where = std::string("The renewal of the ") + method_label(cfg_.method) + " login token at " + cfg_.address;
    AuthLease got;
    try {
      got = parse_auth_response(r, cfg_.kms, "token renewal", where, {token_.view()});
    } catch (const Error& e) {
      if (std::string_view(e.sqlstate()) == sqlstate::kInvalidAuthorizationSpecification) {
        login(ctx);  // refused (revoked, expired, not renewable): a new login
        return;
      }
      if (tolerate && e.sqlstate() != std::string_view(sqlstate::kQueryCanceled) &&
          next_action(lease_, now_()) != TokenAction::kLogin)
        return;  // Vault unavailable for now; the token still works
      throw;
    }
    if (!got.client_token.empty() && got.client_token.view() != token_.view()) token_ = std::move(got.client_token);
    lease_ = LeaseState{sent, got.lease_seconds, got.renewable, renewal_capped(asked, got.lease_seconds)};
  }

  LoginConfig cfg_;
  std::function<std::int64_t()> now_;
  CachedSecretFile role_id_file_, secret_id_file_, jwt_file_;
  SecretString token_;
  LeaseState lease_;
  long login_lease_ = 0;
  int logins_in_get_ = 0;
  std::shared_ptr<CredentialStore> store_;  // the store the token came from (shared mode)
  SecureBytes value_;                      // its stored value, for invalidate()
};

}  // namespace

std::unique_ptr<VaultTokenSource> make_static_token_source(const std::string& kms, const std::string& token_file) {
  return std::make_unique<StaticTokenSource>(kms, token_file);
}

std::unique_ptr<VaultTokenSource> make_login_token_source(LoginConfig config, std::function<std::int64_t()> now_ms) {
  return std::make_unique<LoginTokenSource>(std::move(config), std::move(now_ms));
}

}  // namespace pg_envelope::remote::vault
