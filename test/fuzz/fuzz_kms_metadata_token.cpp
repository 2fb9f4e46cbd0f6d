// Fuzzes the instance-metadata token response parser (src/kms/bearer_token.hpp:
// judge_metadata_response, parse_metadata_token, token_cache_seconds) shared by the
// GCP metadata server and Azure IMDS. Input: see fuzz_kms_support.hpp; the op is
// ignored ("token"). Seeds: test/fuzz/corpus/kms_metadata_token/.
#include <cstddef>
#include <cstdint>

#include "fuzz_kms_support.hpp"
#include "kms/bearer_token.hpp"

using namespace pg_envelope;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::Input in = fuzz::read_input(data, size, {"token"});
  remote::judge_metadata_response(in.result.response);
  try {
    remote::MetadataToken t =
        remote::parse_metadata_token(in.result.response, "fuzz", "http://169.254.169.254/token");
    FUZZ_CHECK(!t.token.empty(), "a token is never empty");
    FUZZ_CHECK(t.expires_in == -1 || (t.expires_in >= 0 && t.expires_in < 1000000000L), "a lifetime is -1 or below 10^9 s");
    long cache = remote::token_cache_seconds(t.expires_in);
    FUZZ_CHECK(cache >= 0 && cache <= t.expires_in + 0L + (t.expires_in < 0 ? 1 : 0), "a token is cached no longer than it lives");
  } catch (const Error& e) {
    fuzz::check_error(e);
  }
  return 0;
}
