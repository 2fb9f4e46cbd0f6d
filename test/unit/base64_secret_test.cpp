// base64_encode_secret / base64_decode_secret (include/pg_envelope/encoding.hpp):
// exactly the encoding and the strictness of base64_encode / base64_decode_strict,
// into wiping storage.
#include <gtest/gtest.h>

#include <random>
#include <string>

#include "pg_envelope/crypto.hpp"
#include "pg_envelope/encoding.hpp"

namespace pg_envelope {
namespace {

Bytes bytes_of(const SecureBytes& s) { return Bytes(s.data(), s.data() + s.size()); }

TEST(Base64Secret, Rfc4648Vectors) {
  const std::pair<std::string, std::string> vectors[] = {
      {"", ""}, {"f", "Zg=="}, {"fo", "Zm8="}, {"foo", "Zm9v"}, {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="},
      {"foobar", "Zm9vYmFy"}};
  for (const auto& [plain, encoded] : vectors) {
    EXPECT_EQ(base64_encode_secret(as_bytes(plain)).view(), encoded);
    SecureBytes out;
    ASSERT_TRUE(base64_decode_secret(encoded, out)) << encoded;
    EXPECT_EQ(std::string(out.data(), out.data() + out.size()), plain);
  }
}

// Same answers as the envelope format's codec, for every length and random bytes,
// and for strings that are valid except for one character.
TEST(Base64Secret, AgreesWithTheStrictCodec) {
  std::mt19937 rng(42);
  for (std::size_t len = 0; len < 100; ++len) {
    Bytes data(len);
    for (auto& b : data) b = static_cast<std::uint8_t>(rng());
    std::string expected = base64_encode(data);
    EXPECT_EQ(base64_encode_secret(data).view(), expected);
    for (std::size_t i = 0; i < expected.size(); ++i)
      for (char c : {'A', 'Q', 'g', 'w', '=', '+', '/', '-', '_', ' ', '\0', '\x80'}) {
        std::string text = expected;
        text[i] = c;
        Bytes strict;
        SecureBytes secret;
        bool ok_strict = base64_decode_strict(text, strict);
        bool ok_secret = base64_decode_secret(text, secret);
        ASSERT_EQ(ok_secret, ok_strict) << text;
        if (ok_strict) EXPECT_EQ(bytes_of(secret), strict) << text;
        else EXPECT_TRUE(secret.empty());
      }
  }
}

TEST(Base64Secret, RefusesWhatTheStrictCodecRefuses) {
  for (const char* bad : {"Zg=", "Zg", "Zh==", "Zm9=", "Zg==Zg==", "=Zg=", "Z===", "====", "Zm 9v", "Zm9v\n",
                          "Zm-v", "Zm_v", "Zg==="}) {
    SecureBytes out(3);
    Bytes strict;
    EXPECT_FALSE(base64_decode_strict(bad, strict)) << bad;
    EXPECT_FALSE(base64_decode_secret(bad, out)) << bad;
    EXPECT_TRUE(out.empty()) << bad;
  }
}

}  // namespace
}  // namespace pg_envelope
