// Fuzzes the STS answer parser (src/kms/aws_sts.hpp: judge_sts_response,
// parse_sts_response and the XML reader xml_text under it) for AssumeRole and
// AssumeRoleWithWebIdentity. Input: see fuzz_kms_support.hpp; op "AssumeRole" or
// "AssumeRoleWithWebIdentity". Seeds: test/fuzz/corpus/kms_aws_sts/.
#include <cstddef>
#include <cstdint>

#include "fuzz_kms_support.hpp"
#include "kms/aws_sts.hpp"

using namespace pg_envelope;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::Input in = fuzz::read_input(data, size, {"AssumeRole", "AssumeRoleWithWebIdentity"});
  const HttpResponse& resp = in.result.response;
  Verdict v = remote::aws::judge_sts_response(resp);
  if (resp.status >= 200 && resp.status < 300) FUZZ_CHECK(v == Verdict::kSuccess, "a 2xx is a success");
  else FUZZ_CHECK(v != Verdict::kSuccess, "only a 2xx is a success");

  SecretString text;
  bool found = remote::aws::xml_text(resp.body.view(), {"ErrorResponse", "Error", "Message"}, text);
  FUZZ_CHECK(found || text.empty(), "a failed lookup leaves the output empty");
  FUZZ_CHECK(text.size() <= resp.body.size() * 4, "decoded text is never longer than its references allow");

  try {
    remote::aws::Credentials c = remote::aws::parse_sts_response(resp, in.op, "fuzz", "role \"r\" at https://sts");
    FUZZ_CHECK(resp.status >= 200 && resp.status < 300, "credentials only from a 2xx");
    FUZZ_CHECK(remote::aws::credentials_well_formed(c), "credentials are well formed");
    FUZZ_CHECK(!c.session_token.empty(), "STS credentials have a session token");
    FUZZ_CHECK(c.expires_at_us > 0, "STS credentials expire");
  } catch (const Error& e) {
    fuzz::check_error(e);
    std::string_view state(e.sqlstate());
    FUZZ_CHECK(state == "28000" || state == "58000", "an STS failure is 28000 or 58000");
  }
  return 0;
}
