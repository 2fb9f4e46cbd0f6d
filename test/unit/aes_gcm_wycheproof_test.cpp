// pg_envelope::AesGcm against Project Wycheproof's AES-GCM vectors (96-bit nonces,
// 128-bit tags: the only parameters AesGcm supports), plus its argument checks.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <string>

#include "pg_envelope/crypto.hpp"
#include "pg_envelope/error.hpp"
#include "test_support.hpp"

namespace pg_envelope {
namespace {

using test::from_hex;

struct Counts {
  int valid = 0;
  int invalid = 0;
  int acceptable = 0;
  std::map<int, int> by_key_bits;
  int total() const { return valid + invalid + acceptable; }
};

TEST(AesGcmWycheproof, AllNinetySixBitNonceGroups) {
  nlohmann::json doc;
  ASSERT_TRUE(test::load_json("wycheproof/aes_gcm_test.json", doc));
  ASSERT_EQ(doc.at("algorithm").get<std::string>(), "AES-GCM");

  // The file is complete: as many tests as it announces.
  int in_file = 0;
  for (const auto& g : doc.at("testGroups")) in_file += static_cast<int>(g.at("tests").size());
  ASSERT_EQ(in_file, doc.at("numberOfTests").get<int>());

  Counts n;
  for (const auto& group : doc.at("testGroups")) {
    if (group.at("ivSize").get<int>() != 96 || group.at("tagSize").get<int>() != 128) continue;
    const int key_bits = group.at("keySize").get<int>();
    for (const auto& t : group.at("tests")) {
      const int tc = t.at("tcId").get<int>();
      SCOPED_TRACE("tcId " + std::to_string(tc) + " (" + std::to_string(key_bits) + "-bit key): " +
                   t.at("comment").get<std::string>());
      const Bytes key = from_hex(t.at("key").get<std::string>());
      const Bytes iv = from_hex(t.at("iv").get<std::string>());
      const Bytes aad = from_hex(t.at("aad").get<std::string>());
      const Bytes msg = from_hex(t.at("msg").get<std::string>());
      const Bytes ct = from_hex(t.at("ct").get<std::string>());
      const Bytes tag = from_hex(t.at("tag").get<std::string>());
      const std::string result = t.at("result").get<std::string>();
      ASSERT_EQ(key.size() * 8, static_cast<std::size_t>(key_bits));
      ASSERT_EQ(iv.size(), kGcmNonceSize);
      ASSERT_EQ(tag.size(), kGcmTagSize);
      ++n.by_key_bits[key_bits];

      AesGcm aead(key);
      // One spare byte so an overrun past ciphertext.size() is visible.
      Bytes opened(ct.size() + 1, 0xA5);
      const bool ok = aead.open(iv, aad, ct, tag.data(), opened.data());
      EXPECT_EQ(opened.back(), 0xA5) << "open() wrote past the ciphertext length";
      opened.pop_back();

      if (result == "valid") {
        ++n.valid;
        Bytes sealed(msg.size());
        std::uint8_t sealed_tag[kGcmTagSize];
        aead.seal(iv, aad, msg, sealed.data(), sealed_tag);
        EXPECT_EQ(sealed, ct) << "seal() ciphertext differs";
        EXPECT_EQ(Bytes(sealed_tag, sealed_tag + kGcmTagSize), tag) << "seal() tag differs";
        EXPECT_TRUE(ok) << "open() rejected a valid ciphertext";
        EXPECT_EQ(opened, msg) << "open() returned the wrong plaintext";
      } else if (result == "invalid") {
        ++n.invalid;
        EXPECT_FALSE(ok) << "open() accepted an invalid ciphertext";
        EXPECT_TRUE(std::all_of(opened.begin(), opened.end(), [](std::uint8_t b) { return b == 0; }))
            << "open() failed but left output bytes behind";
      } else if (result == "acceptable") {
        // Legal but discouraged inputs: rejecting is fine, but whatever open() accepts
        // must decrypt to the message.
        ++n.acceptable;
        if (ok) {
          EXPECT_EQ(opened, msg);
        }
      } else {
        ADD_FAILURE() << "unknown result \"" << result << "\"";
      }
    }
  }

  // 197 cases in the current file (116 valid, 81 invalid); guard against a filter
  // or file change that silently runs far fewer.
  EXPECT_GE(n.total(), 190);
  EXPECT_GE(n.valid, 100);
  EXPECT_GE(n.invalid, 70);
  for (int bits : {128, 192, 256}) EXPECT_GT(n.by_key_bits[bits], 50) << bits << "-bit keys";
  RecordProperty("valid", n.valid);
  RecordProperty("invalid", n.invalid);
  RecordProperty("acceptable", n.acceptable);
}

// The same key object seals and opens many values: the per-operation nonce reset must
// not leak state from one call into the next.
TEST(AesGcmWycheproof, KeyReuseAcrossVectorsOfOneKey) {
  nlohmann::json doc;
  ASSERT_TRUE(test::load_json("wycheproof/aes_gcm_test.json", doc));
  std::map<std::string, std::vector<const nlohmann::json*>> by_key;
  for (const auto& group : doc.at("testGroups")) {
    if (group.at("ivSize").get<int>() != 96 || group.at("tagSize").get<int>() != 128) continue;
    for (const auto& t : group.at("tests"))
      if (t.at("result") == "valid") by_key[t.at("key").get<std::string>()].push_back(&t);
  }
  int reused = 0;
  for (const auto& [key_hex, tests] : by_key) {
    if (tests.size() < 2) continue;
    AesGcm aead(from_hex(key_hex));
    for (int round = 0; round < 2; ++round) {
      for (const nlohmann::json* t : tests) {
        SCOPED_TRACE("tcId " + std::to_string(t->at("tcId").get<int>()));
        const Bytes iv = from_hex(t->at("iv").get<std::string>());
        const Bytes aad = from_hex(t->at("aad").get<std::string>());
        const Bytes msg = from_hex(t->at("msg").get<std::string>());
        const Bytes ct = from_hex(t->at("ct").get<std::string>());
        const Bytes tag = from_hex(t->at("tag").get<std::string>());
        Bytes out(msg.size());
        std::uint8_t got_tag[kGcmTagSize];
        aead.seal(iv, aad, msg, out.data(), got_tag);
        EXPECT_EQ(out, ct);
        EXPECT_EQ(Bytes(got_tag, got_tag + kGcmTagSize), tag);
        Bytes back(ct.size());
        EXPECT_TRUE(aead.open(iv, aad, ct, tag.data(), back.data()));
        EXPECT_EQ(back, msg);
        ++reused;
      }
    }
  }
  EXPECT_GT(reused, 0) << "no key appears in two valid vectors; the test checked nothing";
}

TEST(AesGcm, RejectsKeyLengthsOtherThan128192256Bits) {
  for (std::size_t len : {0u, 15u, 17u, 20u, 31u, 33u, 64u}) {
    Bytes key(len, 0x11);
    auto e = test::catch_error([&] { AesGcm aead(key); });
    ASSERT_TRUE(e.has_value()) << len << "-byte key accepted";
  }
}

TEST(AesGcm, SealRefusesAndOpenRejectsWrongNonceLength) {
  Bytes key(32, 0x42);
  AesGcm aead(key);
  Bytes msg = {1, 2, 3};
  Bytes out(msg.size());
  std::uint8_t tag[kGcmTagSize];
  for (std::size_t len : {0u, 8u, 11u, 13u, 16u}) {
    Bytes nonce(len, 0);
    EXPECT_TRUE(test::catch_error([&] { aead.seal(nonce, {}, msg, out.data(), tag); }).has_value())
        << "seal accepted a " << len << "-byte nonce";
  }
  Bytes nonce(kGcmNonceSize, 7);
  aead.seal(nonce, {}, msg, out.data(), tag);
  Bytes back(msg.size());
  EXPECT_FALSE(aead.open(Bytes(8, 7), {}, out, tag, back.data()));
  EXPECT_TRUE(aead.open(nonce, {}, out, tag, back.data()));
  EXPECT_EQ(back, msg);
}

}  // namespace
}  // namespace pg_envelope
