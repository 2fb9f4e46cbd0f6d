// parse_retry_after_ms (include/pg_envelope/http.hpp): the pure parser libcurl's
// header callback uses, so it must never allocate or throw.
#include <gtest/gtest.h>

#include <string>

#include "pg_envelope/http.hpp"

namespace pg_envelope {
namespace {

TEST(RetryAfter, Seconds) {
  static_assert(noexcept(parse_retry_after_ms("")));
  EXPECT_EQ(parse_retry_after_ms("Retry-After: 3\r\n"), 3000);
  EXPECT_EQ(parse_retry_after_ms("retry-after:0\r\n"), 0);
  EXPECT_EQ(parse_retry_after_ms("RETRY-AFTER: \t 12"), 12000);
  EXPECT_EQ(parse_retry_after_ms("Retry-After: +5\r\n"), 5000);
  EXPECT_EQ(parse_retry_after_ms("Retry-After: 1.5\r\n"), 1000);  // the integer part, as strtol read it
}

TEST(RetryAfter, NotADelay) {
  EXPECT_EQ(parse_retry_after_ms(""), -1);
  EXPECT_EQ(parse_retry_after_ms("HTTP/1.1 429 Too Many Requests\r\n"), -1);
  EXPECT_EQ(parse_retry_after_ms("Content-Length: 12\r\n"), -1);
  EXPECT_EQ(parse_retry_after_ms("Retry-After:"), -1);
  EXPECT_EQ(parse_retry_after_ms("Retry-After: \r\n"), -1);
  EXPECT_EQ(parse_retry_after_ms("Retry-After: -5\r\n"), -1);
  EXPECT_EQ(parse_retry_after_ms("Retry-After: Wed, 21 Oct 2015 07:28:00 GMT\r\n"), -1);
  EXPECT_EQ(parse_retry_after_ms("Retry-Afte: 5"), -1);
  EXPECT_EQ(parse_retry_after_ms("X-Retry-After: 5"), -1);
  EXPECT_EQ(parse_retry_after_ms("Retry-After : 5"), -1);
}

// A huge value used to overflow (seconds * 1000 in a long); it is capped instead,
// far above any retry budget, so it still ends the retries.
TEST(RetryAfter, HugeValuesAreCapped) {
  const long cap = kMaxRetryAfterSeconds * 1000;
  EXPECT_EQ(parse_retry_after_ms("Retry-After: 86400"), cap);
  EXPECT_EQ(parse_retry_after_ms("Retry-After: 86401"), cap);
  EXPECT_EQ(parse_retry_after_ms("Retry-After: 99999999999999999999999999999999\r\n"), cap);
  EXPECT_EQ(parse_retry_after_ms("Retry-After: " + std::string(100000, '9')), cap);
  EXPECT_GT(cap, 3600L * 1000);  // above the largest envelope.kms_retry_budget
}

TEST(RetryAfter, NeedsNoNulTerminator) {
  const char line[] = {'R', 'e', 't', 'r', 'y', '-', 'A', 'f', 't', 'e', 'r', ':', ' ', '7'};
  EXPECT_EQ(parse_retry_after_ms(std::string_view(line, sizeof line)), 7000);
  EXPECT_EQ(parse_retry_after_ms(std::string_view(line, 12)), -1);
}

}  // namespace
}  // namespace pg_envelope
