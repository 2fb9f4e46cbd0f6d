// Envelope formats 1 and 2 (include/pg_envelope/envelope_format.hpp): header layouts,
// structural validation, the "env1:" text form and the AAD construction. The tests
// that name no format use format 1; the Format2 tests follow.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <string_view>

#include "pg_envelope/encoding.hpp"
#include "pg_envelope/envelope_format.hpp"
#include "test_support.hpp"

namespace pg_envelope {
namespace {

EnvelopeHeader sample_header() {
  EnvelopeHeader h;
  h.format = kFormatV1;
  h.dek.key_id = 0x01020304;
  h.dek.version = 0xA0B0C0D0;
  for (std::size_t i = 0; i < kGcmNonceSize; ++i) h.nonce[i] = static_cast<std::uint8_t>(0xF0 + i);
  return h;
}

// header || ciphertext (ct_len bytes of 0x33) || tag (16 bytes of 0x77)
Bytes sample_envelope(std::size_t ct_len, const EnvelopeHeader& h = sample_header()) {
  const std::size_t header = header_size(h);
  Bytes env(header + ct_len + kGcmTagSize);
  EXPECT_EQ(write_header(h, env.data()), header);
  std::memset(env.data() + header, 0x33, ct_len);
  std::memset(env.data() + header + ct_len, 0x77, kGcmTagSize);
  return env;
}

bool problem_mentions(const FormatProblem& p, std::string_view needle) {
  return p.detail != nullptr && std::string_view(p.detail).find(needle) != std::string_view::npos;
}

TEST(EnvelopeFormat, Constants) {
  EXPECT_EQ(kHeaderSizeV1, 22u);
  EXPECT_EQ(kEnvelopeOverheadV1, 38u);
  EXPECT_EQ(kMinEnvelopeSize, 34u);
  EXPECT_EQ(kFormatV1, 1);
  EXPECT_EQ(kFormatV2, 2);
  EXPECT_EQ(EnvelopeHeader{}.format, kFormatV2);  // written by default
  EXPECT_EQ(kAlgAes256Gcm, 1);
  EXPECT_EQ(kTextPrefix, "env1:");
}

// The byte layout documented at the top of envelope_format.hpp.
TEST(EnvelopeFormat, WriteHeaderLayout) {
  std::uint8_t out[kHeaderSizeV1];
  std::memset(out, 0xCC, sizeof out);
  write_header(sample_header(), out);
  EXPECT_EQ(test::to_bytes({out, kHeaderSizeV1}),
            test::from_hex("0101"                        // version, algorithm
                           "01020304"                    // key id, big-endian
                           "a0b0c0d0"                    // DEK version, big-endian
                           "f0f1f2f3f4f5f6f7f8f9fafb"));  // nonce
}

TEST(EnvelopeFormat, ParseRoundTrip) {
  for (std::size_t ct_len : {0u, 1u, 15u, 16u, 17u, 1000u}) {
    SCOPED_TRACE(ct_len);
    const EnvelopeHeader h = sample_header();
    const Bytes env = sample_envelope(ct_len, h);
    EnvelopeView v;
    FormatProblem p = parse_envelope(env, v);
    ASSERT_FALSE(p) << p.detail;
    EXPECT_EQ(v.header.format, kFormatV1);
    EXPECT_EQ(v.header.algorithm, kAlgAes256Gcm);
    EXPECT_EQ(v.header.dek.key_id, h.dek.key_id);
    EXPECT_EQ(v.header.dek.version, h.dek.version);
    EXPECT_EQ(0, std::memcmp(v.header.nonce, h.nonce, kGcmNonceSize));
    // Views into the caller's buffer, not copies.
    EXPECT_EQ(v.header_bytes.data(), env.data());
    EXPECT_EQ(v.header_bytes.size(), kHeaderSizeV1);
    EXPECT_EQ(v.ciphertext.data(), env.data() + kHeaderSizeV1);
    EXPECT_EQ(v.ciphertext.size(), ct_len);
    EXPECT_EQ(v.tag.data(), env.data() + kHeaderSizeV1 + ct_len);
    EXPECT_EQ(v.tag.size(), kGcmTagSize);
  }
}

TEST(EnvelopeFormat, RejectsShortInput) {
  const Bytes env = sample_envelope(0);
  ASSERT_EQ(env.size(), kEnvelopeOverheadV1);
  for (std::size_t len = 0; len < kEnvelopeOverheadV1; ++len) {
    EnvelopeView v;
    EXPECT_TRUE(parse_envelope(ByteView(env.data(), len), v)) << len << " bytes accepted";
  }
}

TEST(EnvelopeFormat, RejectsWrongVersion) {
  for (int version : {0, 3, 0x81, 0xFF}) {
    Bytes env = sample_envelope(4);
    env[0] = static_cast<std::uint8_t>(version);
    EnvelopeView v;
    EXPECT_TRUE(parse_envelope(env, v)) << "version " << version;
  }
}

TEST(EnvelopeFormat, RejectsUnknownAlgorithm) {
  for (int alg : {0, 2, 3, 0xFF}) {
    Bytes env = sample_envelope(4);
    env[1] = static_cast<std::uint8_t>(alg);
    EnvelopeView v;
    EXPECT_TRUE(parse_envelope(env, v)) << "algorithm " << alg;
  }
}

TEST(EnvelopeFormat, RejectsZeroKeyIdOrVersion) {
  EnvelopeHeader zero_id = sample_header();
  zero_id.dek.key_id = 0;
  EnvelopeHeader zero_version = sample_header();
  zero_version.dek.version = 0;
  EnvelopeView v;
  EXPECT_TRUE(parse_envelope(sample_envelope(4, zero_id), v));
  EXPECT_TRUE(parse_envelope(sample_envelope(4, zero_version), v));
  // Only the all-zero field is special: 1 and 2^32-1 are ordinary ids.
  EnvelopeHeader edge = sample_header();
  edge.dek.key_id = 1;
  edge.dek.version = 0xFFFFFFFF;
  EXPECT_FALSE(parse_envelope(sample_envelope(4, edge), v));
  EXPECT_EQ(v.header.dek.version, 0xFFFFFFFFu);
}

TEST(EnvelopeFormat, TextFormRoundTrip) {
  for (std::size_t ct_len : {0u, 1u, 2u, 3u, 31u, 100u}) {
    SCOPED_TRACE(ct_len);
    const Bytes env = sample_envelope(ct_len);
    const std::size_t n = text_form_length(env.size());
    EXPECT_EQ(n, 5 + (env.size() + 2) / 3 * 4);
    std::string text(n + 1, '#');  // one guard character
    write_text_form(env, text.data());
    EXPECT_EQ(text.back(), '#') << "write_text_form wrote past text_form_length()";
    text.pop_back();
    EXPECT_EQ(text.substr(0, 5), "env1:");
    Bytes back;
    FormatProblem p = decode_text_form(text, back);
    ASSERT_FALSE(p) << p.detail;
    EXPECT_EQ(back, env);
  }
}

TEST(EnvelopeFormat, TextFormRejectsPlaintextWithoutEchoingIt) {
  // ("env1" itself is rejected too, but the detail legitimately names the prefix, so it
  // is not in this list.)
  const std::string plaintexts[] = {"123-45-6789", "", "env", "ENV1:AQE=", "hello world",
                                    "4111111111111111", "{\"ssn\": \"123-45-6789\"}"};
  for (const std::string& s : plaintexts) {
    Bytes out;
    FormatProblem p = decode_text_form(s, out);
    ASSERT_TRUE(p) << "accepted \"" << s << "\"";
    ASSERT_NE(p.detail, nullptr);
    if (s.size() >= 4) {
      EXPECT_FALSE(problem_mentions(p, s)) << "detail echoes the input: " << p.detail;
    }
    EXPECT_FALSE(problem_mentions(p, "6789")) << p.detail;
  }
  Bytes out;
  EXPECT_TRUE(decode_text_form("env1", out));
  EXPECT_TRUE(decode_text_form("env1;AQEAAAABAAAAAQ==", out));
}

TEST(EnvelopeFormat, TextFormRejectsBadPayloadWithoutEchoingIt) {
  const Bytes env = sample_envelope(8);
  std::string good(text_form_length(env.size()), '\0');
  write_text_form(env, good.data());
  const std::string payload = good.substr(5);

  std::vector<std::string> bad = {
      "env1:",                                  // empty: shorter than an envelope
      "env1:" + payload + "\n",                 // whitespace
      " " + good,                               // leading space before the prefix
      "env1:" + payload.substr(0, 48),          // canonical, but 36 bytes: too short
      "env1:" + payload.substr(1),              // wrong base64 length
      "env1:" + std::string(payload.size(), '*'),
      "env1:" + base64_encode(Bytes(40, 0)),    // well-formed base64, version 0
  };
  // A non-canonical payload: 46 bytes end in "x==", where x carries four unused bits
  // that must be zero; setting the lowest one keeps the decoded bytes the same.
  ASSERT_EQ(env.size(), 46u);
  std::string t = payload;
  ASSERT_EQ(t.substr(t.size() - 2), "==");
  constexpr std::string_view kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const std::size_t v = kAlphabet.find(t[t.size() - 3]);
  ASSERT_EQ(v & 0x0F, 0u);
  t[t.size() - 3] = kAlphabet[v | 1];
  bad.push_back("env1:" + t);

  for (const std::string& s : bad) {
    Bytes out;
    FormatProblem p = decode_text_form(s, out);
    EXPECT_TRUE(p) << "accepted \"" << s << "\"";
    if (p && s.size() > 8) {
      EXPECT_FALSE(problem_mentions(p, s.substr(5, 8))) << p.detail;
    }
  }
}

TEST(EnvelopeFormat, BuildAadLayout) {
  std::uint8_t header[kHeaderSizeV1];
  write_header(sample_header(), header);
  const ByteView hb(header, kHeaderSizeV1);

  Bytes aad = {9, 9, 9};  // stale content must be replaced
  build_aad(hb, PlainType::kText, false, "", aad);
  Bytes expect = test::to_bytes(hb);
  expect.push_back(1);  // kText
  expect.push_back(0);  // no context
  EXPECT_EQ(aad, expect);

  build_aad(hb, PlainType::kJsonb, true, "ctx", aad);
  expect = test::to_bytes(hb);
  expect.insert(expect.end(), {3, 1, 'c', 't', 'x'});
  EXPECT_EQ(aad, expect);
}

TEST(EnvelopeFormat, BuildAadDistinguishesNullFromEmptyContext) {
  std::uint8_t header[kHeaderSizeV1];
  write_header(sample_header(), header);
  Bytes null_ctx, empty_ctx;
  build_aad({header, kHeaderSizeV1}, PlainType::kText, false, "", null_ctx);
  build_aad({header, kHeaderSizeV1}, PlainType::kText, true, "", empty_ctx);
  EXPECT_NE(null_ctx, empty_ctx);
  // A NULL context ignores any context bytes passed alongside it.
  Bytes null_with_text;
  build_aad({header, kHeaderSizeV1}, PlainType::kText, false, "ignored", null_with_text);
  EXPECT_EQ(null_ctx, null_with_text);
}

TEST(EnvelopeFormat, BuildAadBindsTypeHeaderAndContext) {
  std::uint8_t header[kHeaderSizeV1];
  write_header(sample_header(), header);
  const ByteView hb(header, kHeaderSizeV1);
  Bytes text, bytea, jsonb;
  build_aad(hb, PlainType::kText, true, "a", text);
  build_aad(hb, PlainType::kBytea, true, "a", bytea);
  build_aad(hb, PlainType::kJsonb, true, "a", jsonb);
  EXPECT_NE(text, bytea);
  EXPECT_NE(text, jsonb);
  EXPECT_NE(bytea, jsonb);

  Bytes other_ctx;
  build_aad(hb, PlainType::kText, true, "b", other_ctx);
  EXPECT_NE(text, other_ctx);

  EnvelopeHeader h2 = sample_header();
  h2.dek.version += 1;
  std::uint8_t header2[kHeaderSizeV1];
  write_header(h2, header2);
  Bytes other_header;
  build_aad({header2, kHeaderSizeV1}, PlainType::kText, true, "a", other_header);
  EXPECT_NE(text, other_header);
}

// Format 2: 1-byte format, 4-byte key id, the DEK version in unsigned LEB128.
TEST(EnvelopeFormat, Format2HeaderLayout) {
  EnvelopeHeader h = sample_header();
  h.format = kFormatV2;
  h.dek.version = 300;  // 0xAC 0x02
  std::uint8_t out[kMaxHeaderSize];
  ASSERT_EQ(write_header(h, out), 19u);
  EXPECT_EQ(header_size(h), 19u);
  EXPECT_EQ(envelope_overhead(h), 35u);
  EXPECT_EQ(test::to_bytes({out, 19}), test::from_hex("02"                            // format
                                                      "01020304"                      // key id
                                                      "ac02"                          // version 300
                                                      "f0f1f2f3f4f5f6f7f8f9fafb"));  // nonce
}

TEST(EnvelopeFormat, Format2RejectsBadVersionEncodings) {
  const std::string nonce_ct_tag(2 * (kGcmNonceSize + 4 + kGcmTagSize), '0');  // 4 bytes of ciphertext
  for (const char* version : {"00",            // zero
                              "8100",          // 1 in two bytes (not the shortest form)
                              "808080808001",  // six bytes
                              "ffffffff1f",    // 2^35 - 1 > 2^32 - 1
                              "ffffffff8f"}) {  // five bytes, continuation bit on the last
    Bytes env = test::from_hex(std::string("0201020304") + version + nonce_ct_tag);
    EnvelopeView v;
    EXPECT_TRUE(parse_envelope(env, v)) << version << " accepted";
  }
  for (const char* ok : {"01", "7f", "8001", "ff7f", "ffffffff0f"}) {
    Bytes env = test::from_hex(std::string("0201020304") + ok + nonce_ct_tag);
    EnvelopeView v;
    EXPECT_FALSE(parse_envelope(env, v)) << ok << " refused";
    std::uint8_t again[kMaxHeaderSize];
    ASSERT_EQ(write_header(v.header, again), v.header_bytes.size());
    EXPECT_EQ(0, std::memcmp(again, env.data(), v.header_bytes.size())) << ok;
    EXPECT_EQ(v.ciphertext.size(), 4u);
  }
  // The shortest format 2 envelope is 34 bytes; with a 2-byte version, 35.
  EnvelopeView v;
  EXPECT_FALSE(parse_envelope(test::from_hex("020102030401" + std::string(2 * 28, '0')), v));
  EXPECT_TRUE(parse_envelope(test::from_hex("020102030401" + std::string(2 * 27, '0')), v));
  EXPECT_TRUE(parse_envelope(test::from_hex("02010203048001" + std::string(2 * 27, '0')), v));
}

TEST(EnvelopeFormat, BigEndianHelpers) {
  std::uint8_t b[4];
  store_be32(b, 0x89ABCDEF);
  EXPECT_EQ(test::to_bytes({b, 4}), test::from_hex("89abcdef"));
  EXPECT_EQ(load_be32(b), 0x89ABCDEFu);
}

}  // namespace
}  // namespace pg_envelope
