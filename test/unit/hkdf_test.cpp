// pg_envelope::hkdf_sha256 against Project Wycheproof's HKDF-SHA-256 vectors and the
// RFC 5869 appendix A test cases, plus the empty-input paths the vectors do not cover.
#include <gtest/gtest.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <set>
#include <string>

#include "pg_envelope/crypto.hpp"
#include "pg_envelope/error.hpp"
#include "test_support.hpp"

namespace pg_envelope {
namespace {

using test::from_hex;

TEST(HkdfSha256Wycheproof, AllVectors) {
  nlohmann::json doc;
  ASSERT_TRUE(test::load_json("wycheproof/hkdf_sha256_test.json", doc));
  ASSERT_EQ(doc.at("algorithm").get<std::string>(), "HKDF-SHA-256");

  int valid = 0, invalid = 0, empty_salt = 0, empty_info = 0, empty_ikm = 0, in_file = 0;
  std::set<std::size_t> sizes;
  for (const auto& group : doc.at("testGroups")) {
    for (const auto& t : group.at("tests")) {
      ++in_file;
      const int tc = t.at("tcId").get<int>();
      SCOPED_TRACE("tcId " + std::to_string(tc) + ": " + t.at("comment").get<std::string>());
      const Bytes ikm = from_hex(t.at("ikm").get<std::string>());
      const Bytes salt = from_hex(t.at("salt").get<std::string>());
      const Bytes info = from_hex(t.at("info").get<std::string>());
      const std::size_t size = t.at("size").get<std::size_t>();
      const std::string result = t.at("result").get<std::string>();
      if (ikm.empty()) ++empty_ikm;
      if (salt.empty()) ++empty_salt;
      if (info.empty()) ++empty_info;
      sizes.insert(size);

      Bytes okm(size, 0);
      if (result == "valid") {
        ++valid;
        ASSERT_NO_THROW(hkdf_sha256(ikm, salt, info, okm));
        EXPECT_EQ(okm, from_hex(t.at("okm").get<std::string>()));
      } else if (result == "invalid") {
        // Only output sizes above 255 * 32 bytes are invalid in this file.
        ++invalid;
        auto e = test::catch_error([&] { hkdf_sha256(ikm, salt, info, okm); });
        EXPECT_TRUE(e.has_value()) << "derived " << size << " bytes, beyond HKDF's limit of 8160";
      } else {
        ADD_FAILURE() << "unexpected result \"" << result << "\"";
      }
    }
  }
  EXPECT_EQ(in_file, doc.at("numberOfTests").get<int>());
  EXPECT_GE(valid, 80);
  EXPECT_GE(invalid, 3);
  // The vectors exercise the no-salt and no-info paths of hkdf_sha256 (salt omitted,
  // info passed through a dummy pointer); they contain no empty IKM, which is covered
  // below instead.
  EXPECT_GT(empty_salt, 0);
  EXPECT_GT(empty_info, 0);
  EXPECT_EQ(empty_ikm, 0) << "the file now has empty-IKM vectors; they ran above";
  EXPECT_TRUE(sizes.count(8160)) << "the maximal output size was not exercised";
}

// The keyed form (extract once, expand many) against the same vectors, one instance
// reused across several infos and sizes of a group's key.
TEST(HkdfSha256Keyed, AllVectorsAndReuse) {
  nlohmann::json doc;
  ASSERT_TRUE(test::load_json("wycheproof/hkdf_sha256_test.json", doc));
  int checked = 0;
  for (const auto& group : doc.at("testGroups")) {
    for (const auto& t : group.at("tests")) {
      SCOPED_TRACE("tcId " + std::to_string(t.at("tcId").get<int>()));
      const Bytes ikm = from_hex(t.at("ikm").get<std::string>());
      const Bytes salt = from_hex(t.at("salt").get<std::string>());
      const Bytes info = from_hex(t.at("info").get<std::string>());
      Bytes okm(t.at("size").get<std::size_t>(), 0);
      HkdfSha256 keyed(ikm, salt);
      if (t.at("result").get<std::string>() != "valid") {
        EXPECT_TRUE(test::catch_error([&] { keyed.expand(info, okm); }).has_value());
        continue;
      }
      keyed.expand(info, okm);
      EXPECT_EQ(okm, from_hex(t.at("okm").get<std::string>()));
      // The same instance again, for another info and a short output.
      const Bytes other = from_hex("00ff10");
      Bytes a(42, 0), b(42, 0);
      keyed.expand(other, a);
      hkdf_sha256(ikm, salt, other, b);
      EXPECT_EQ(a, b);
      ++checked;
    }
  }
  EXPECT_GE(checked, 80);
}

// RFC 5869 appendix A.1 and A.3 (A.3: no salt, no info).
TEST(HkdfSha256, Rfc5869AppendixA) {
  const Bytes ikm(22, 0x0b);
  {
    Bytes okm(42);
    hkdf_sha256(ikm, from_hex("000102030405060708090a0b0c"), from_hex("f0f1f2f3f4f5f6f7f8f9"), okm);
    EXPECT_EQ(okm, from_hex("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
                            "34007208d5b887185865"));
  }
  {
    Bytes okm(42);
    hkdf_sha256(ikm, {}, {}, okm);
    EXPECT_EQ(okm, from_hex("8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
                            "9d201395faa4b61a96c8"));
  }
}

// RFC 5869 written out over OpenSSL's one-shot HMAC, as an independent reference for
// the inputs no public vector covers.
Bytes reference_hkdf(const Bytes& ikm, const Bytes& salt_in, const Bytes& info, std::size_t len) {
  const Bytes salt = salt_in.empty() ? Bytes(32, 0) : salt_in;
  static const std::uint8_t dummy = 0;
  std::uint8_t prk[32];
  unsigned int prk_len = 0;
  HMAC(EVP_sha256(), salt.data(), static_cast<int>(salt.size()), ikm.empty() ? &dummy : ikm.data(), ikm.size(),
       prk, &prk_len);
  Bytes okm, t;
  for (std::uint8_t i = 1; okm.size() < len; ++i) {
    Bytes block = t;
    block.insert(block.end(), info.begin(), info.end());
    block.push_back(i);
    std::uint8_t out[32];
    unsigned int out_len = 0;
    HMAC(EVP_sha256(), prk, static_cast<int>(prk_len), block.data(), block.size(), out, &out_len);
    t.assign(out, out + out_len);
    okm.insert(okm.end(), t.begin(), t.end());
  }
  okm.resize(len);
  return okm;
}

TEST(HkdfSha256, ReferenceAgreesWithRfcVector) {
  // The reference itself must be right before it is trusted below.
  EXPECT_EQ(reference_hkdf(Bytes(22, 0x0b), from_hex("000102030405060708090a0b0c"),
                           from_hex("f0f1f2f3f4f5f6f7f8f9"), 42),
            from_hex("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"));
}

TEST(HkdfSha256, EmptyIkmFollowsRfc5869) {
  for (const Bytes& salt : {Bytes{}, Bytes(16, 0x5a)}) {
    for (const Bytes& info : {Bytes{}, from_hex("0102")}) {
      Bytes okm(48);
      ASSERT_NO_THROW(hkdf_sha256({}, salt, info, okm)) << "salt " << salt.size() << ", info " << info.size();
      EXPECT_EQ(okm, reference_hkdf({}, salt, info, okm.size()));
    }
  }
}

TEST(HkdfSha256, InputsAreBoundIntoTheOutput) {
  const Bytes ikm(32, 1), salt(32, 2), info = from_hex("6b6579");
  Bytes base(32), other(32);
  hkdf_sha256(ikm, salt, info, base);
  hkdf_sha256(ikm, salt, from_hex("6b657a"), other);
  EXPECT_NE(base, other) << "info ignored";
  hkdf_sha256(ikm, Bytes(32, 3), info, other);
  EXPECT_NE(base, other) << "salt ignored";
  hkdf_sha256(Bytes(32, 4), salt, info, other);
  EXPECT_NE(base, other) << "ikm ignored";
}

// sha256() (used to fingerprint wrapped DEKs in the shared cache) against the
// FIPS 180-2 appendix B examples.
TEST(Sha256, Fips180Examples) {
  const std::pair<std::string, std::string> cases[] = {
      {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
      {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
      {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
  };
  for (const auto& [msg, hex] : cases) {
    std::uint8_t out[32];
    sha256(as_bytes(msg), out);
    EXPECT_EQ(Bytes(out, out + 32), from_hex(hex)) << msg;
  }
}

}  // namespace
}  // namespace pg_envelope
