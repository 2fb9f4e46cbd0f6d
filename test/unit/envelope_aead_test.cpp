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

  Bytes seal(std::string_view plaintext, PlainType type, Context ctx, std::uint8_t format = kFormatV2,
             std::uint32_t version = 3) {
    EnvelopeHeader h;
    h.format = format;
    h.dek = {7, version};
    random_bytes({h.nonce, kGcmNonceSize});
    const std::size_t header = header_size(h);
    Bytes env(header + kGcmTagSize + plaintext.size());
    EXPECT_EQ(write_header(h, env.data()), header);
    Bytes aad;
    build_aad({env.data(), header}, type, ctx.present, ctx.bytes, aad);
    aead_->seal({h.nonce, kGcmNonceSize}, aad, as_bytes(plaintext), env.data() + header,
                env.data() + header + plaintext.size());
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
    EXPECT_EQ(env.size(), pt.size() + 34);  // format 2, DEK version below 128
    if (pt.size() >= 8) {  // shorter strings can occur in random bytes by chance
      std::string_view stored(reinterpret_cast<const char*>(env.data()), env.size());
      EXPECT_EQ(stored.find(pt), std::string_view::npos) << "plaintext visible in the envelope";
    }
    EXPECT_EQ(open(env, PlainType::kText, {true, "users.ssn"}), std::string(pt));
  }
}

// Both formats, and format 2 with 1- to 5-byte DEK versions: every size of header.
TEST_F(EnvelopeAead, RoundTripInEveryFormatAndVersionLength) {
  struct Case {
    std::uint8_t format;
    std::uint32_t version;
    std::size_t overhead;
  };
  for (Case c : {Case{kFormatV1, 3, 38}, Case{kFormatV1, 0xFFFFFFFF, 38}, Case{kFormatV2, 1, 34},
                 Case{kFormatV2, 127, 34}, Case{kFormatV2, 128, 35}, Case{kFormatV2, 16383, 35},
                 Case{kFormatV2, 16384, 36}, Case{kFormatV2, (1u << 21) - 1, 36}, Case{kFormatV2, 1u << 21, 37},
                 Case{kFormatV2, (1u << 28) - 1, 37}, Case{kFormatV2, 1u << 28, 38}, Case{kFormatV2, 0xFFFFFFFF, 38}}) {
    SCOPED_TRACE(std::to_string(c.format) + "/" + std::to_string(c.version));
    const Bytes env = seal("value", PlainType::kBytea, {true, "c"}, c.format, c.version);
    EXPECT_EQ(env.size(), 5 + c.overhead);
    EnvelopeView v;
    ASSERT_FALSE(parse_envelope(env, v));
    EXPECT_EQ(v.header.format, c.format);
    EXPECT_EQ(v.header.dek.version, c.version);
    EXPECT_EQ(v.header.dek.key_id, 7u);
    EXPECT_EQ(open(env, PlainType::kBytea, {true, "c"}), std::string("value"));
  }
}

// Fixed vectors made by an independent implementation (Python's cryptography AESGCM,
// laying out the bytes as docs/format.md says): DEK 0x40..0x5f, nonce 0xa0..0xab, key
// id 42, context "row-7", type text, plaintext "readable forever". The format 1 value is
// what pg_envelope 0.1.0 stores: it must decrypt forever, whatever format new values use.
TEST_F(EnvelopeAead, FixedVectorsOfBothFormatsDecrypt) {
  Bytes dek_bytes;
  for (int i = 0x40; i < 0x60; ++i) dek_bytes.push_back(static_cast<std::uint8_t>(i));
  aead_.emplace(ByteView(dek_bytes));
  struct Vector {
    const char* hex;
    std::uint8_t format;
    std::uint32_t version;
  };
  for (Vector vec : {Vector{"01010000002a00000003a0a1a2a3a4a5a6a7a8a9aaaba5ea675b8389f04859092e8cecca5584ea5b15495f"
                            "ce15b07d66cbcf12eef728",
                            kFormatV1, 3},
                     Vector{"020000002a03a0a1a2a3a4a5a6a7a8a9aaaba5ea675b8389f04859092e8cecca5584aede302cce097fb7"
                            "e378ad11b3ca72fe",
                            kFormatV2, 3},
                     Vector{"020000002aac02a0a1a2a3a4a5a6a7a8a9aaaba5ea675b8389f04859092e8cecca5584a6268ac1ed408b"
                            "14bc4bf9be0b591833",
                            kFormatV2, 300}}) {
    SCOPED_TRACE(vec.hex);
    const Bytes env = test::from_hex(vec.hex);
    EnvelopeView v;
    ASSERT_FALSE(parse_envelope(env, v));
    EXPECT_EQ(v.header.format, vec.format);
    EXPECT_EQ(v.header.dek.key_id, 42u);
    EXPECT_EQ(v.header.dek.version, vec.version);
    EXPECT_EQ(open(env, PlainType::kText, {true, "row-7"}), std::string("readable forever"));
    EXPECT_EQ(open(env, PlainType::kText, {true, "row-8"}), std::nullopt);
    // write_header reproduces the stored header byte for byte.
    std::uint8_t again[kMaxHeaderSize];
    ASSERT_EQ(write_header(v.header, again), v.header_bytes.size());
    EXPECT_EQ(0, std::memcmp(again, v.header_bytes.data(), v.header_bytes.size()));
  }
}

TEST_F(EnvelopeAead, EveryFlippedByteIsDetected) {
  const std::string pt = "123-45-6789";
  for (std::uint8_t format : {kFormatV1, kFormatV2}) {
  const Bytes env = seal(pt, PlainType::kText, {true, "ctx"}, format);
  ASSERT_EQ(open(env, PlainType::kText, {true, "ctx"}), pt);
  for (std::size_t i = 0; i < env.size(); ++i) {
    for (std::uint8_t mask : {0x01, 0x80, 0xFF}) {
      Bytes bad = env;
      bad[i] ^= mask;
      EXPECT_EQ(open(bad, PlainType::kText, {true, "ctx"}), std::nullopt)
          << "format " << int(format) << " byte " << i << " xor " << int(mask) << " went unnoticed";
    }
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
  EXPECT_NE(0, std::memcmp(a.data() + 6, b.data() + 6, kGcmNonceSize));  // format 2, 1-byte version
}

}  // namespace
}  // namespace pg_envelope
