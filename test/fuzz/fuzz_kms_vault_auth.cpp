// Fuzzes the Vault login and token-renewal response parser (src/kms/vault_auth.hpp:
// judge_auth, parse_auth_response, and next_action over the lease it returns) of the
// vault-transit provider's AppRole, Kubernetes and JWT logins. Input: see
// fuzz_kms_support.hpp; ops "login", "renew". Seeds: test/fuzz/corpus/kms_vault_auth/.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz_kms_support.hpp"
#include "kms/vault_auth.hpp"

using namespace pg_envelope;

namespace {

// Stands for the secret ID or JWT the request sent: never in an error.
constexpr std::string_view kSent = "fuzz-secret-id-0001";

bool mentions(const Error& e, std::string_view s) {
  return std::string_view(e.what()).find(s) != std::string_view::npos ||
         std::string_view(e.detail()).find(s) != std::string_view::npos ||
         std::string_view(e.hint()).find(s) != std::string_view::npos;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::Input in = fuzz::read_input(data, size, {"login", "renew"});
  Verdict v = remote::vault::judge_auth(in.result.response);
  long s = in.result.response.status;
  FUZZ_CHECK((v == Verdict::kSuccess) == (s >= 200 && s < 300), "success is exactly a 2xx");
  const char* op = in.op == "login" ? "login" : "token renewal";
  try {
    remote::vault::AuthLease a = remote::vault::parse_auth_response(
        in.result, "fuzz", op, "The AppRole login at https://vault.example.com:8200", {kSent});
    FUZZ_CHECK(in.result.failure == HttpFailure::kNone && s >= 200 && s < 300,
               "only a 2xx without transport failure gives a token");
    FUZZ_CHECK(!a.client_token.empty(), "a token is never empty");
    for (char c : a.client_token.view()) FUZZ_CHECK(c > ' ' && c < 127, "a token is visible ASCII (a header value)");
    FUZZ_CHECK(a.lease_seconds >= 0 && a.lease_seconds < 1000000000L, "a lease is 0 to 10^9 s");
    remote::vault::LeaseState l{1000, a.lease_seconds, a.renewable, false};
    FUZZ_CHECK(remote::vault::next_action(l, 1000) == remote::vault::TokenAction::kUse, "a fresh token is used");
    if (a.lease_seconds > 0) {
      FUZZ_CHECK(remote::vault::next_action(l, remote::vault::lease_expiry_ms(l)) == remote::vault::TokenAction::kLogin,
                 "an expired token means a new login");
      FUZZ_CHECK(!remote::vault::renewal_capped(remote::vault::renew_increment(a.lease_seconds), a.lease_seconds),
                 "a lease is not capped against itself");
    }
  } catch (const Error& e) {
    fuzz::check_error(e);
    FUZZ_CHECK(!mentions(e, kSent), "the credential sent is never in an error");
  }
  return 0;
}
