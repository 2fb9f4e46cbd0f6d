// Vault / OpenBao tokens for the vault-transit provider: a static token, or a token
// the backend obtains by logging in (AppRole, Kubernetes, JWT/OIDC) and keeps alive by
// renewing it. Pure C++.
//
// Every source answers get() with the token plus what is known of its expiry
// (VaultCredential), behind one small interface (VaultTokenSource). With a server-wide
// credential store in the KmsContext (pg_envelope/credential_store.hpp), a login token
// is shared by every backend of the server: one backend logs in or renews it when it
// is due and publishes the new lease, the others use it (one login per server and KMS
// configuration); after a 403, invalidate() drops it from the store too, once.
// Without a store each backend's provider keeps its own login token.
//
//   login      POST {address}/v1/auth/{auth_mount}/login
//                approle:    {"role_id", "secret_id"}
//                kubernetes: {"role", "jwt"}   (the service-account token file)
//                jwt:        {"role", "jwt"}
//   renewal    POST {address}/v1/auth/token/renew-self {"increment": "<lease>s"}
//
// A login token is renewed once two thirds of its lease have passed; when the renewal
// is refused, the token is not renewable, or a renewal came back shorter than asked
// (the token reached its max TTL), the next refresh logs in again instead.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>

#include "pg_envelope/http.hpp"
#include "pg_envelope/kms.hpp"
#include "pg_envelope/secrets.hpp"
#include "secret_file.hpp"

namespace pg_envelope::remote::vault {

// A token to send, with what is known of its life (for a later shared cache).
struct VaultCredential {
  SecretString token;
  std::int64_t expires_ms = 0;  // steady-clock milliseconds; 0: unknown or never
  bool from_login = false;
  bool fresh = false;  // from a login made by this get(): a 403 to it is not cured by another
};

class VaultTokenSource {
 public:
  virtual ~VaultTokenSource() = default;
  // The token for the next request. Throws Error: 28000 for no or a refused
  // credential, the file errors of read_secret_file(), fail_transport()'s errors.
  virtual VaultCredential get(const KmsContext& ctx) = 0;
  // After Vault answered 403 to the token get() gave: forgets a login token so the
  // next get() logs in again. True when that may help (worth one more attempt).
  virtual bool invalidate() = 0;
  // Where the token comes from, for error details.
  virtual std::string describe() const = 0;
};

// ---------------------------------------------------------------- pure parts

// The "auth" block of a login or renew-self response.
struct AuthLease {
  SecretString client_token;
  long lease_seconds = 0;  // 0: the token does not expire (e.g. a root token)
  bool renewable = false;
};

// Whether a login or renewal response is final, worth retrying (429, 5xx) or failed.
Verdict judge_auth(const HttpResponse& response);

// The lease of a finished login ("login") or renew-self ("token renewal") request,
// else the Error it means: transport failures as fail_transport(); 429 and 5xx →
// 58000; any other non-2xx → 28000 "KMS "x" <op> failed: HTTP <status> <Vault's first
// error>" (never the request's secrets: Vault's text only, made safe by error_text());
// a 2xx without "auth"."client_token" (non-empty visible ASCII), with a
// "lease_duration" that is not a whole number of seconds below 10^9 or a "renewable"
// that is not a boolean → 28000 "malformed response". `where` ends the detail
// ("The AppRole login at https://vault:8200 (mount \"approle\")"). Vault's error text
// is withheld when it contains one of `withhold` (the secret ID or JWT sent, the token
// renewed): Vault never quotes them, a proxy in front of it might.
AuthLease parse_auth_response(const HttpResult& result, const std::string& kms, const std::string& op,
                              const std::string& where, std::initializer_list<std::string_view> withhold = {});

// What a login token needs before the next request.
enum class TokenAction { kUse, kRenew, kLogin };

struct LeaseState {
  std::int64_t granted_ms = 0;  // when the login or the last renewal answered
  long lease_seconds = 0;       // 0: never expires
  bool renewable = false;
  bool capped = false;  // the last renewal came back shorter than asked: at its max TTL
};

// kUse before two thirds of the lease, then kRenew (kLogin when the token cannot be
// renewed or is capped); kLogin once the lease has run out (1 s early, or a tenth of
// a lease shorter than 10 s, for the request on the way). A lease of 0 never
// expires: kUse.
TokenAction next_action(const LeaseState& lease, std::int64_t now_ms) noexcept;

// When the token of `lease` stops working (steady-clock ms); 0 for a lease of 0.
std::int64_t lease_expiry_ms(const LeaseState& lease) noexcept;

// The increment a renewal asks for: the lease of the login (seconds, at least 1).
long renew_increment(long login_lease_seconds) noexcept;

// A renewal that granted `granted` seconds when `asked` were asked for reached the
// token's max TTL.
bool renewal_capped(long asked, long granted) noexcept;

// ---------------------------------------------------------------- sources

// The configuration of a login method, checked by the provider's constructor.
struct LoginConfig {
  enum class Method { kAppRole, kKubernetes, kJwt } method = Method::kAppRole;
  std::string kms;
  std::string address;    // no trailing '/'
  std::string namespace_;  // X-Vault-Namespace; empty: none
  std::string mount;      // auth mount: "approle", "kubernetes", "jwt" by default
  std::string role;       // kubernetes, jwt
  std::string role_id;    // approle: the option, when given
  std::string role_id_file, secret_id_file, jwt_file;
};

// Method name for messages ("AppRole", "Kubernetes", "JWT").
const char* method_label(LoginConfig::Method m) noexcept;

// The token_file option (re-read when it changes), else the server's VAULT_TOKEN.
std::unique_ptr<VaultTokenSource> make_static_token_source(const std::string& kms, const std::string& token_file);

// Logs in with `config`, caches the token and renews it (see the top of this file).
// `now_ms` is the steady clock in milliseconds (replaced by tests).
std::unique_ptr<VaultTokenSource> make_login_token_source(LoginConfig config,
                                                         std::function<std::int64_t()> now_ms = {});

}  // namespace pg_envelope::remote::vault
