// Fuzzes the OAuth 2.0 token response parser (src/kms/oauth_token.hpp:
// judge_token_response, parse_token_response, form_append) of the token endpoints
// pg_envelope asks itself: Google's (service-account keys) and Azure AD's v2.0 (client
// credentials). Input: see fuzz_kms_support.hpp; the op is ignored ("token").
// Seeds: test/fuzz/corpus/kms_oauth_token/.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz_kms_support.hpp"
#include "kms/bearer_token.hpp"
#include "kms/oauth_token.hpp"

using namespace pg_envelope;

namespace {
// The credential "sent" with the request: an error may never quote it.
constexpr std::string_view kSent = "Qx8~fuzz-client-secret";

bool mentions(const Error& e, std::string_view s) {
  return std::string_view(e.what()).find(s) != std::string_view::npos ||
         std::string_view(e.detail()).find(s) != std::string_view::npos ||
         std::string_view(e.hint()).find(s) != std::string_view::npos;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::Input in = fuzz::read_input(data, size, {"token"});
  Verdict v = remote::judge_token_response(in.result.response);
  long s = in.result.response.status;
  FUZZ_CHECK((v == Verdict::kSuccess) == (s >= 200 && s < 300), "success exactly for a 2xx");
  try {
    remote::TokenResponse t = remote::parse_token_response(in.result, "fuzz", "The token endpoint https://t", {kSent});
    FUZZ_CHECK(in.result.failure == HttpFailure::kNone && s >= 200 && s < 300, "only a 2xx is a token");
    FUZZ_CHECK(!t.access_token.empty(), "a token is never empty");
    for (char c : t.access_token.view()) FUZZ_CHECK(c > ' ' && c < 127, "a token is visible ASCII");
    FUZZ_CHECK(t.expires_in == -1 || (t.expires_in >= 0 && t.expires_in < 1000000000L), "a lifetime is -1 or below 10^9 s");
    long cache = remote::token_cache_seconds(t.expires_in);
    FUZZ_CHECK(cache >= 0 && (t.expires_in < 0 || cache <= t.expires_in), "a token is cached no longer than it lives");
  } catch (const Error& e) {
    fuzz::check_error(e);
    FUZZ_CHECK(!mentions(e, kSent), "the credential sent never appears in an error");
  }
  // Form encoding of any value: only unreserved characters and %XX escapes.
  SecretString body;
  remote::form_append(body, "v", in.result.response.body.view());
  for (char c : body.view().substr(2))
    FUZZ_CHECK((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
                   c == '_' || c == '~' || c == '%',
               "a form value is percent-encoded");
  return 0;
}
