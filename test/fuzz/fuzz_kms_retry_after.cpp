// Fuzzes parse_retry_after_ms (include/pg_envelope/http.hpp), the header parser
// libcurl's header callback runs inside curl_easy_perform: it must stay in range and
// never allocate or throw. Input: one raw header line. Seeds:
// test/fuzz/corpus/kms_retry_after/.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz_kms_support.hpp"

using namespace pg_envelope;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view line(reinterpret_cast<const char*>(data), size);
  long ms = parse_retry_after_ms(line);
  FUZZ_CHECK(ms == -1 || (ms >= 0 && ms <= kMaxRetryAfterSeconds * 1000 && ms % 1000 == 0), "a delay is -1 or whole seconds up to the cap");
  if (ms >= 0) FUZZ_CHECK(line.size() > 12, "a delay needs \"Retry-After:\" and a digit");
  return 0;
}
