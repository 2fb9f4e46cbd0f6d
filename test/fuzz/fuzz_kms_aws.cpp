// Fuzzes the AWS KMS provider's response handling (src/kms/kms_responses.hpp,
// remote::aws): the "__type" of errors, retry verdict, type and status mapping, and
// the fields of Encrypt, Decrypt and ReEncrypt responses. Input: see
// fuzz_kms_support.hpp; ops "Encrypt", "Decrypt", "ReEncrypt", "DescribeKey", "ListKeyRotations". Seeds:
// test/fuzz/corpus/kms_aws/.
#include <cctype>
#include <cstddef>
#include <cstdint>

#include "fuzz_kms_support.hpp"
#include "kms/kms_responses.hpp"

using namespace pg_envelope;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::Input in = fuzz::read_input(data, size, {"Decrypt", "Encrypt", "ReEncrypt", "DescribeKey", "ListKeyRotations"});
  remote::aws::Site site{"fuzz", in.op, "alias/pg-envelope", "us-east-1", "https://kms.us-east-1.amazonaws.com", "the server's environment (AWS_ACCESS_KEY_ID)"};
  std::string type = remote::aws::error_type(in.result.response);
  FUZZ_CHECK(type.size() <= 100, "an error type is at most 100 characters");
  for (char c : type) FUZZ_CHECK(std::isalnum(static_cast<unsigned char>(c)) || c == ' ', "an error type is alphanumeric (or \"invalid error type\")");
  Verdict v = remote::aws::judge(in.result.response);
  FUZZ_CHECK((v == Verdict::kSuccess) == (in.result.response.status == 200), "success is exactly a 200");
  try {
    remote::json out = remote::aws::result(in.result, site);
    FUZZ_CHECK(out.is_object(), "a successful result is a JSON object");
    if (in.op == "DescribeKey") {
      FUZZ_CHECK(remote::aws::describe_key_arn(out, site.kms).rfind("arn:", 0) == 0, "a key ARN starts with arn:");
    } else if (in.op == "ListKeyRotations") {
      std::uint64_t n = 0;
      std::int64_t latest = 0;
      std::string marker = remote::aws::key_rotations_page(out, site.kms, n, latest);
      FUZZ_CHECK(marker.size() <= 1024, "a marker is bounded");
    } else if (in.op == "Decrypt") {
      SecureBytes payload = remote::aws::plaintext(out, site.kms);
      remote::unbind_dek(payload.view(), DekBinding{"ssn", 17, 4}, site.kms);
    } else {
      Bytes blob = remote::aws::ciphertext_blob(out, site.kms, in.op);
      FUZZ_CHECK(!blob.empty(), "a CiphertextBlob is not empty");
    }
  } catch (const Error& e) {
    fuzz::check_error(e);
  }
  return 0;
}
