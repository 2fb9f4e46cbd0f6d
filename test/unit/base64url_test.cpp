// pg_envelope::base64url_encode / base64url_decode: RFC 4648 section 10 vectors in
// the URL-safe alphabet without padding (RFC 4648 section 5, as JOSE and Azure Key
// Vault use it), the alphabet's values 62 and 63, round trips and rejections.
#include <gtest/gtest.h>

#include <algorithm>
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
Bytes bytes_of(const SecureBytes& s) { return Bytes(s.data(), s.data() + s.size()); }
std::string text_of(const SecretString& s) { return std::string(s.view()); }

// RFC 4648 section 10, with the padding removed.
const std::vector<std::pair<std::string_view, std::string_view>> kRfc4648 = {
    {"", ""},          {"f", "Zg"},         {"fo", "Zm8"},         {"foo", "Zm9v"},
    {"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"},
};

TEST(Base64Url, Rfc4648Section10Encode) {
  for (const auto& [plain, encoded] : kRfc4648) EXPECT_EQ(text_of(base64url_encode(as_bytes(plain))), encoded) << plain;
}

TEST(Base64Url, Rfc4648Section10Decode) {
  for (const auto& [plain, encoded] : kRfc4648) {
    SecureBytes out;
    ASSERT_TRUE(base64url_decode(encoded, out)) << encoded;
    EXPECT_EQ(bytes_of(out), bytes_of(plain)) << encoded;
  }
}

// Values 62 and 63 are "-" and "_" (RFC 4648 table 2), never "+" and "/".
TEST(Base64Url, UsesUrlSafeAlphabetForValues62And63) {
  EXPECT_EQ(text_of(base64url_encode(test::from_hex("fbefbe"))), "----");
  EXPECT_EQ(text_of(base64url_encode(test::from_hex("ffffff"))), "____");
  EXPECT_EQ(text_of(base64url_encode(test::from_hex("fbff"))), "-_8");
  SecureBytes out;
  ASSERT_TRUE(base64url_decode("-_8", out));
  EXPECT_EQ(bytes_of(out), test::from_hex("fbff"));
}

// Against the (independent) standard encoder: same text once "+/" become "-_" and
// the padding is dropped; and every length decodes back.
TEST(Base64Url, AgreesWithStandardBase64AndRoundTrips) {
  Bytes all(256);
  for (int i = 0; i < 256; ++i) all[i] = static_cast<std::uint8_t>(255 - i);
  for (std::size_t len = 0; len <= all.size(); ++len) {
    ByteView in(all.data() + (256 - len), len);
    std::string expected = base64_encode(in);
    std::replace(expected.begin(), expected.end(), '+', '-');
    std::replace(expected.begin(), expected.end(), '/', '_');
    expected.erase(std::find(expected.begin(), expected.end(), '='), expected.end());
    std::string enc = text_of(base64url_encode(in));
    EXPECT_EQ(enc, expected) << len;
    EXPECT_EQ(enc.size(), (len * 4 + 2) / 3) << len;
    SecureBytes out;
    ASSERT_TRUE(base64url_decode(enc, out)) << enc;
    EXPECT_EQ(bytes_of(out), Bytes(in.begin(), in.end()));
  }
}

TEST(Base64Url, AcceptsExactPadding) {
  for (const auto& [encoded, plain] : std::vector<std::pair<std::string_view, std::string_view>>{
           {"Zg==", "f"}, {"Zm8=", "fo"}, {"Zm9vYg==", "foob"}, {"Zm9vYmE=", "fooba"}}) {
    SecureBytes out;
    ASSERT_TRUE(base64url_decode(encoded, out)) << encoded;
    EXPECT_EQ(bytes_of(out), bytes_of(plain)) << encoded;
  }
}

TEST(Base64Url, RejectsMalformedInput) {
  const std::vector<std::pair<std::string_view, const char*>> bad = {
      {"Z", "one character"},
      {"Zm9vY", "five characters"},
      {"Zh", "nonzero unused bits, one byte"},
      {"Zm9", "nonzero unused bits, two bytes"},
      {"Zg=", "short padding"},
      {"Zg===", "long padding"},
      {"Zm8==", "too much padding for two bytes"},
      {"Zm9v=", "padding after a full quantum"},
      {"Zm9v====", "a padding-only quantum"},
      {"=", "only padding"},
      {"====", "four padding characters"},
      {"Zg==Zg", "padding in the middle"},
      {"Zm9+", "standard plus"},
      {"Zm9/", "standard slash"},
      {"Zm9v\n", "trailing newline"},
      {" Zm9v", "leading space"},
      {"Zm 9v", "embedded space"},
      {"Zm9*", "asterisk"},
      {"Zm9.", "dot"},
      {"Zm9\x80", "high byte"},
      {"Zm9\0"sv, "NUL byte"},
  };
  for (const auto& [input, why] : bad) {
    SecureBytes out(3);  // stale content must not survive a failure
    EXPECT_FALSE(base64url_decode(input, out)) << why;
    EXPECT_TRUE(out.empty()) << why;
  }
}

// The decoder stops at the view's end.
TEST(Base64Url, HonoursTheViewLength) {
  const std::string_view whole = "Zm9vYmFy";
  SecureBytes out;
  ASSERT_TRUE(base64url_decode(whole.substr(0, 4), out));
  EXPECT_EQ(bytes_of(out), bytes_of("foo"));
  EXPECT_FALSE(base64url_decode(whole.substr(0, 5), out));
}

}  // namespace
}  // namespace pg_envelope
