// Fuzzes the AWS shared credentials file parser (src/kms/aws_credentials.hpp,
// parse_credentials_file). Input: the profile name, a newline, then the file's
// text. Seeds: test/fuzz/corpus/kms_aws_credentials/.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz_kms_support.hpp"
#include "kms/aws_credentials.hpp"

using namespace pg_envelope;

namespace {

void check_value(const SecretString& v) {
  std::string_view s = v.view();
  FUZZ_CHECK(s.find('\n') == std::string_view::npos, "a value holds no line break");
  if (!s.empty()) {
    FUZZ_CHECK(s.front() != ' ' && s.front() != '\t' && s.front() != '\r', "a value has no leading white space");
    FUZZ_CHECK(s.back() != ' ' && s.back() != '\t' && s.back() != '\r', "a value has no trailing white space");
  }
  FUZZ_CHECK(v.data()[v.size()] == '\0', "a SecretString is NUL-terminated");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  std::size_t nl = in.find('\n');
  std::string_view profile = nl == std::string_view::npos ? "default" : in.substr(0, nl);
  std::string_view text = nl == std::string_view::npos ? in : in.substr(nl + 1);
  remote::aws::Credentials c = remote::aws::parse_credentials_file(text, profile);
  check_value(c.access_key);
  check_value(c.secret_key);
  check_value(c.session_token);
  return 0;
}
