// AES-256-GCM through the envelope format, as the SQL functions use it: the header is
// authenticated through build_aad, so no byte of a stored value can change unnoticed,
// and a value cannot be moved to another type or context.
#include <gtest/gtest.h>

#include <cstring>
#include <optional>
#include <string>
#include <string_view>

#include "pg_envelope/crypto.hpp"
#include "pg_envelope/envelope_format.hpp"
#include "test_support.hpp"

namespace pg_envelope {
namespace {

struct Context {
  bool present;
  std::string_view bytes;
};

class EnvelopeAead : public ::testing::Test {
 protected:
  EnvelopeAead() : dek_(32) {
    random_bytes(dek_.span());
    aead_.emplace(dek_.view());
  }

  Bytes seal(std::string_view plaintext, PlainType type, Context ctx) {
    EnvelopeHeader h;
    h.dek = {7, 3};
    random_bytes({h.nonce, kGcmNonceSize});
    Bytes env(kEnvelopeOverhead + plaintext.size());
    write_header(h, env.data());
    Bytes aad;
    build_aad({env.data(), kHeaderSize}, type, ctx.present, ctx.bytes, aad);
    aead_->seal({h.nonce, kGcmNonceSize}, aad, as_bytes(plaintext), env.data() + kHeaderSize,
                env.data() + kHeaderSize + plaintext.size());
    return env;
  }

  // The plaintext, or nullopt when the envelope is malformed or does not authenticate.
  std::optional<std::string> open(ByteView env, PlainType type, Context ctx) {
    EnvelopeView v;
    if (parse_envelope(env, v)) return std::nullopt;
    Bytes aad;
    build_aad(v.header_bytes, type, ctx.present, ctx.bytes, aad);
    std::string out(v.ciphertext.size(), '\0');
    if (!aead_->open({v.header.nonce, kGcmNonceSize}, aad, v.ciphertext, v.tag.data(),
                     reinterpret_cast<std::uint8_t*>(out.data())))
      return std::nullopt;
    return out;
  }

  SecureBytes dek_;
  std::optional<AesGcm> aead_;
};

TEST_F(EnvelopeAead, RoundTrip) {
  for (std::string_view pt : {"", "x", "123-45-6789", "a longer value spanning several AES blocks........"}) {
    Bytes env = seal(pt, PlainType::kText, {true, "users.ssn"});
    EXPECT_EQ(env.size(), pt.size() + kEnvelopeOverhead);
    if (pt.size() >= 8) {  // shorter strings can occur in random bytes by chance
      std::string_view stored(reinterpret_cast<const char*>(env.data()), env.size());
      EXPECT_EQ(stored.find(pt), std::string_view::npos) << "plaintext visible in the envelope";
    }
    EXPECT_EQ(open(env, PlainType::kText, {true, "users.ssn"}), std::string(pt));
  }
}

TEST_F(EnvelopeAead, EveryFlippedByteIsDetected) {
  const std::string pt = "123-45-6789";
  const Bytes env = seal(pt, PlainType::kText, {true, "ctx"});
  ASSERT_EQ(open(env, PlainType::kText, {true, "ctx"}), pt);
  for (std::size_t i = 0; i < env.size(); ++i) {
    for (std::uint8_t mask : {0x01, 0x80, 0xFF}) {
      Bytes bad = env;
      bad[i] ^= mask;
      EXPECT_EQ(open(bad, PlainType::kText, {true, "ctx"}), std::nullopt)
          << "byte " << i << " xor " << int(mask) << " went unnoticed";
    }
  }
}

TEST_F(EnvelopeAead, TruncatedOrExtendedEnvelopeIsDetected) {
  const Bytes env = seal("secret", PlainType::kBytea, {false, ""});
  for (std::size_t len = 0; len < env.size(); ++len)
    EXPECT_EQ(open(ByteView(env.data(), len), PlainType::kBytea, {false, ""}), std::nullopt) << len;
  Bytes longer = env;
  longer.push_back(0);
  EXPECT_EQ(open(longer, PlainType::kBytea, {false, ""}), std::nullopt);
}

TEST_F(EnvelopeAead, TypeIsBound) {
  const Bytes env = seal("{\"a\": 1}", PlainType::kJsonb, {false, ""});
  EXPECT_TRUE(open(env, PlainType::kJsonb, {false, ""}).has_value());
  EXPECT_EQ(open(env, PlainType::kText, {false, ""}), std::nullopt);
  EXPECT_EQ(open(env, PlainType::kBytea, {false, ""}), std::nullopt);
}

TEST_F(EnvelopeAead, ContextIsBoundAndNullDiffersFromEmpty) {
  const Bytes with_null = seal("v", PlainType::kText, {false, ""});
  const Bytes with_empty = seal("v", PlainType::kText, {true, ""});
  const Bytes with_ctx = seal("v", PlainType::kText, {true, "row 1"});
  EXPECT_TRUE(open(with_null, PlainType::kText, {false, ""}).has_value());
  EXPECT_EQ(open(with_null, PlainType::kText, {true, ""}), std::nullopt);
  EXPECT_TRUE(open(with_empty, PlainType::kText, {true, ""}).has_value());
  EXPECT_EQ(open(with_empty, PlainType::kText, {false, ""}), std::nullopt);
  EXPECT_TRUE(open(with_ctx, PlainType::kText, {true, "row 1"}).has_value());
  EXPECT_EQ(open(with_ctx, PlainType::kText, {true, "row 2"}), std::nullopt);
  EXPECT_EQ(open(with_ctx, PlainType::kText, {false, ""}), std::nullopt);
}

TEST_F(EnvelopeAead, AnotherDekCannotOpen) {
  const Bytes env = seal("v", PlainType::kText, {false, ""});
  SecureBytes other(32);
  random_bytes(other.span());
  aead_.emplace(other.view());
  EXPECT_EQ(open(env, PlainType::kText, {false, ""}), std::nullopt);
}

// The nonces above come from random_bytes(): two draws must differ.
TEST_F(EnvelopeAead, RandomNoncesDiffer) {
  const Bytes a = seal("same", PlainType::kText, {false, ""});
  const Bytes b = seal("same", PlainType::kText, {false, ""});
  EXPECT_NE(a, b);
  EXPECT_NE(0, std::memcmp(a.data() + 10, b.data() + 10, kGcmNonceSize));
}

}  // namespace
}  // namespace pg_envelope
