// The stored form of protected values (protected_format.hpp): what sealed_prefix()
// writes parses back field for field, every malformed field is refused, unsealed
// values and the "penv1:" text form behave as documented.
#include <gtest/gtest.h>

#include <string>

#include "pg_envelope/protected_format.hpp"

namespace pg_envelope {
namespace {

Bytes envelope_bytes() {
  Bytes e(kEnvelopeOverheadV1 + 5, 0x5A);
  EnvelopeHeader h;
  h.format = kFormatV1;
  h.dek = DekId{7, 2};
  for (std::size_t i = 0; i < kGcmNonceSize; ++i) h.nonce[i] = static_cast<std::uint8_t>(i);
  write_header(h, e.data());
  return e;
}

Bytes sealed(PlainType type, ByteView blind, std::uint32_t blind_key, std::string_view key, bool has_ctx,
             std::string_view ctx) {
  Bytes v = sealed_prefix(type, 0xA1B2C3D4, blind_key, blind, key, has_ctx, ctx);
  Bytes e = envelope_bytes();
  v.insert(v.end(), e.begin(), e.end());
  return v;
}

TEST(ProtectedFormat, SealedPrefixParsesBackFieldForField) {
  const std::uint8_t blind[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  Bytes v = sealed(PlainType::kJsonb, {blind, 16}, 9, "tenant_42", true, "row-17");
  SealedView s;
  ASSERT_FALSE(parse_sealed(v, PlainType::kJsonb, s));
  EXPECT_TRUE(is_sealed(v));
  EXPECT_EQ(s.protection_id, 0xA1B2C3D4u);
  EXPECT_EQ(s.blind_key_id, 9u);
  ASSERT_EQ(s.blind.size(), 16u);
  EXPECT_EQ(s.blind[15], 16);
  EXPECT_EQ(s.key_name, "tenant_42");
  EXPECT_TRUE(s.has_context);
  EXPECT_EQ(s.context, "row-17");
  EXPECT_EQ(s.prefix.size() + s.envelope.size(), v.size());
  EXPECT_EQ(s.envelope.size(), kEnvelopeOverheadV1 + 5);
  // Big-endian protection id at offset 3.
  EXPECT_EQ(v[3], 0xA1);
  EXPECT_EQ(v[6], 0xD4);
  std::uint32_t pid = 0;
  ByteView b;
  ASSERT_TRUE(sealed_blind(v, PlainType::kJsonb, pid, b));
  EXPECT_EQ(pid, 0xA1B2C3D4u);
  EXPECT_EQ(b.data(), s.blind.data());
  EXPECT_EQ(b.size(), 16u);
  EXPECT_FALSE(sealed_blind(v, PlainType::kText, pid, b));
  // The same bytes are not a value of another type.
  EXPECT_TRUE(parse_sealed(v, PlainType::kText, s));
}

TEST(ProtectedFormat, NoBlindIndexNoContext) {
  Bytes v = sealed(PlainType::kText, {}, 0, "k", false, "");
  SealedView s;
  ASSERT_FALSE(parse_sealed(v, PlainType::kText, s));
  EXPECT_TRUE(s.blind.empty());
  EXPECT_FALSE(s.has_context);
}

TEST(ProtectedFormat, MalformedFieldsAreRefused) {
  const std::uint8_t blind[8] = {};
  Bytes good = sealed(PlainType::kText, {blind, 8}, 3, "key", true, "c");
  SealedView s;
  ASSERT_FALSE(parse_sealed(good, PlainType::kText, s));
  const std::size_t prefix_size = s.prefix.size();
  auto refused = [&](Bytes v) { return static_cast<bool>(parse_sealed(v, PlainType::kText, s)); };
  Bytes v = good;
  v[1] = 2;  // version
  EXPECT_TRUE(refused(v));
  v = good;
  v[11] = 33;  // blind length over 32
  EXPECT_TRUE(refused(v));
  v = good;
  v[7] = v[8] = v[9] = v[10] = 0;  // blind bytes without a blind key
  EXPECT_TRUE(refused(v));
  v = good;
  v[12 + 8] = 0;  // empty key name
  EXPECT_TRUE(refused(v));
  v = good;
  v[12 + 8] = 64;  // key name too long
  EXPECT_TRUE(refused(v));
  v = good;
  v[12 + 8 + 1 + 3] = 2;  // context flag
  EXPECT_TRUE(refused(v));
  v = good;
  v[12 + 8 + 1 + 3] = 0;  // a context without the flag
  EXPECT_TRUE(refused(v));
  // Cut anywhere before the shortest envelope ends (a shorter ciphertext is only caught
  // by authentication, which is not this layer's).
  for (std::size_t n = 0; n < prefix_size + kEnvelopeOverheadV1; ++n) {
    Bytes cut(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(n));
    EXPECT_TRUE(refused(cut)) << "truncated to " << n;
  }
}

TEST(ProtectedFormat, UnsealedValues) {
  ByteView plain;
  const std::string text = "ann@example.org";
  EXPECT_TRUE(unsealed_plaintext(as_bytes(text), PlainType::kText, plain));
  EXPECT_EQ(plain.size(), text.size());
  Bytes b = {kUnsealedMarker, 0xFF, 0x00};
  ASSERT_TRUE(unsealed_plaintext(b, PlainType::kBytea, plain));
  EXPECT_EQ(plain.size(), 2u);
  Bytes no_marker = {0x02, 0x03};
  EXPECT_FALSE(unsealed_plaintext(no_marker, PlainType::kBytea, plain));
  Bytes v = sealed(PlainType::kText, {}, 0, "k", false, "");
  EXPECT_FALSE(unsealed_plaintext(v, PlainType::kText, plain));
}

TEST(ProtectedFormat, TextForm) {
  Bytes v = sealed(PlainType::kBytea, {}, 0, "k", true, "1");
  std::string text(protected_text_form_length(v.size()), '\0');
  write_protected_text_form(v, text.data());
  EXPECT_EQ(text.rfind("penv1:", 0), 0u);
  Bytes back;
  bool matched = false;
  EXPECT_FALSE(decode_protected_text_form(text, PlainType::kBytea, back, matched));
  EXPECT_TRUE(matched);
  EXPECT_EQ(back, v);
  EXPECT_TRUE(decode_protected_text_form(text, PlainType::kText, back, matched));  // another type
  EXPECT_FALSE(decode_protected_text_form("plain text", PlainType::kText, back, matched));
  EXPECT_FALSE(matched);
  EXPECT_TRUE(decode_protected_text_form("penv1:AA=A", PlainType::kText, back, matched));  // not base64
  EXPECT_TRUE(matched);
  std::string padded = text + "=";
  EXPECT_TRUE(decode_protected_text_form(padded, PlainType::kBytea, back, matched));
}

}  // namespace
}  // namespace pg_envelope
