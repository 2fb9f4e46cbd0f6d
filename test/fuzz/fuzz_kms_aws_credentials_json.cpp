// Fuzzes the parser of the credentials the ECS/EKS container endpoint and EC2's
// instance-metadata service return (src/kms/aws_credentials.hpp:
// parse_credentials_json) and the refresh-time arithmetic applied to them
// (credential_refresh_at_us). Input: see fuzz_kms_support.hpp; op "container" or
// "imds" (only the messages differ). Seeds: test/fuzz/corpus/kms_aws_credentials_json/.
#include <cstddef>
#include <cstdint>

#include "fuzz_kms_support.hpp"
#include "kms/aws_credentials.hpp"

using namespace pg_envelope;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::Input in = fuzz::read_input(data, size, {"container", "imds"});
  try {
    remote::aws::Credentials c = remote::aws::parse_credentials_json(
        in.result.response, "fuzz", in.op + " credentials request", "The endpoint at http://169.254.170.2/v1");
    FUZZ_CHECK(in.result.response.status >= 200 && in.result.response.status < 300, "credentials only from a 2xx");
    FUZZ_CHECK(remote::aws::credentials_well_formed(c), "credentials are well formed");
    FUZZ_CHECK(c.expires_at_us > 0, "temporary credentials expire");
    const std::int64_t now = 1764756000LL * 1000000;  // 2025-12-03
    std::int64_t at = remote::aws::credential_refresh_at_us(c.expires_at_us, now);
    FUZZ_CHECK(at >= now, "never refreshed before they were fetched");
    FUZZ_CHECK(at <= c.expires_at_us || c.expires_at_us <= now, "refreshed no later than they expire");
  } catch (const Error& e) {
    fuzz::check_error(e);
    std::string_view state(e.sqlstate());
    FUZZ_CHECK(state == "28000" || state == "58000", "a credentials failure is 28000 or 58000");
  }
  return 0;
}
