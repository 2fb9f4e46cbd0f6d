// pg_envelope::base64_encode / base64_decode_strict: RFC 4648 section 10 vectors and
// the canonical-form rules (padding required, unused bits zero, no whitespace).
#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "pg_envelope/crypto.hpp"
#include "pg_envelope/encoding.hpp"
#include "test_support.hpp"

namespace pg_envelope {
namespace {

using namespace std::string_view_literals;

Bytes bytes_of(std::string_view s) { return Bytes(s.begin(), s.end()); }

// RFC 4648, section 10.
const std::vector<std::pair<std::string_view, std::string_view>> kRfc4648 = {
    {"", ""},           {"f", "Zg=="},         {"fo", "Zm8="},         {"foo", "Zm9v"},
    {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"},
};

TEST(Base64, Rfc4648Section10Encode) {
  for (const auto& [plain, encoded] : kRfc4648) EXPECT_EQ(base64_encode(as_bytes(plain)), encoded) << plain;
}

TEST(Base64, Rfc4648Section10Decode) {
  for (const auto& [plain, encoded] : kRfc4648) {
    Bytes out = {0xEE};  // stale content must not survive
    ASSERT_TRUE(base64_decode_strict(encoded, out)) << encoded;
    EXPECT_EQ(out, bytes_of(plain)) << encoded;
  }
}

// The two non-alphanumeric characters of the standard (not URL-safe) alphabet,
// values 62 and 63 (RFC 4648 table 1).
TEST(Base64, UsesStandardAlphabetForValues62And63) {
  EXPECT_EQ(base64_encode(test::from_hex("fbefbe")), "++++");
  EXPECT_EQ(base64_encode(test::from_hex("ffffff")), "////");
  EXPECT_EQ(base64_encode(test::from_hex("fbff")), "+/8=");
  Bytes out;
  ASSERT_TRUE(base64_decode_strict("+/8=", out));
  EXPECT_EQ(out, test::from_hex("fbff"));
}

TEST(Base64, RoundTripsEveryByteValueAndLength) {
  Bytes all(256);
  for (int i = 0; i < 256; ++i) all[i] = static_cast<std::uint8_t>(i);
  for (std::size_t len = 0; len <= all.size(); ++len) {
    ByteView in(all.data() + (256 - len), len);
    std::string enc = base64_encode(in);
    EXPECT_EQ(enc.size(), (len + 2) / 3 * 4);
    Bytes out;
    ASSERT_TRUE(base64_decode_strict(enc, out)) << enc;
    EXPECT_EQ(out, Bytes(in.begin(), in.end()));
  }
}

TEST(Base64, RejectsNonCanonicalInput) {
  const std::vector<std::pair<std::string_view, const char*>> bad = {
      // wrong length / missing padding
      {"Z", "one character"},
      {"Zg", "unpadded"},
      {"Zg=", "short padding"},
      {"Zm9vY", "five characters"},
      {"Zm9vYg=", "seven characters"},
      {"Zm9vYmFy=", "padding after a full quantum"},
      // bad padding
      {"====", "only padding"},
      {"Z===", "three padding characters"},
      {"=Zg=", "padding first"},
      {"Zg=a", "data after padding"},
      {"Zg==Zg==", "padding in the middle"},
      {"Zm8=Zm9v", "padding before the last quantum"},
      // nonzero unused bits
      {"Zh==", "nonzero trailing bits, one byte"},
      {"Zm9=", "nonzero trailing bits, two bytes"},
      // whitespace
      {"Zm9v\n", "trailing newline"},
      {" Zm9v", "leading space"},
      {"Zm\n9v", "embedded newline"},
      {"Zm 9", "embedded space, length four"},
      {"Zm9vYmFy\r\n", "trailing CRLF"},
      {"Zm9\t", "tab"},
      // outside the alphabet
      {"Zm9-", "URL-safe minus"},
      {"Zm9_", "URL-safe underscore"},
      {"Zm9*", "asterisk"},
      {"Zm9.", "dot"},
      {"Zm9\x80", "high byte"},
      {"Zm9\xff", "0xff byte"},
      {"Zm9\0"sv, "NUL byte"},
      {"\0\0\0\0"sv, "four NULs"},
  };
  for (const auto& [input, why] : bad) {
    Bytes out;
    EXPECT_FALSE(base64_decode_strict(input, out)) << why << ": \"" << std::string(input) << "\"";
  }
}

// The decoder must stop at the view's end: a view of the first bytes of a longer
// valid string is judged on its own length.
TEST(Base64, HonoursTheViewLength) {
  const std::string_view whole = "Zm9vYg==Zm9v";
  Bytes out;
  EXPECT_FALSE(base64_decode_strict(whole.substr(0, 6), out));  // "Zm9vYg"
  EXPECT_FALSE(base64_decode_strict(whole.substr(0, 7), out));  // "Zm9vYg="
  EXPECT_FALSE(base64_decode_strict(whole.substr(0, 1), out));  // "Z"
  ASSERT_TRUE(base64_decode_strict(whole.substr(0, 4), out));   // "Zm9v"
  EXPECT_EQ(out, bytes_of("foo"));
  ASSERT_TRUE(base64_decode_strict(whole.substr(0, 0), out));
  EXPECT_TRUE(out.empty());
}

TEST(Base64, CanonicalCounterpartsOfRejectedInputsDecode) {
  // Each rejection above has a canonical neighbour that must decode, so the
  // rejections come from the rule tested, not from a decoder that refuses everything.
  for (std::string_view ok : {"Zg==", "Zm8=", "Zm9v", "Zm9vYmFy", "Zm//", "AA==", "AAA=", "AAAA"}) {
    Bytes out;
    EXPECT_TRUE(base64_decode_strict(ok, out)) << ok;
  }
}

}  // namespace
}  // namespace pg_envelope
