// pg_envelope::AesGcm and PooledAesGcm against Project Wycheproof's AES-GCM vectors
// (96-bit nonces, 128-bit tags: the only parameters they support), their argument
// checks, and the context pool of PooledAesGcm (slots shared, re-keyed, released).
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <vector>
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

template <class Gcm>
void all_ninety_six_bit_nonce_groups() {
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

      Gcm aead(key);
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
  ::testing::Test::RecordProperty("valid", n.valid);
  ::testing::Test::RecordProperty("invalid", n.invalid);
  ::testing::Test::RecordProperty("acceptable", n.acceptable);
}

TEST(AesGcmWycheproof, AllNinetySixBitNonceGroups) { all_ninety_six_bit_nonce_groups<AesGcm>(); }

// Every vector through a pooled instance: each new instance takes the next pool slot
// and keys its context there (the slot's previous holder, destroyed, had reset it).
TEST(PooledAesGcmWycheproof, AllNinetySixBitNonceGroups) { all_ninety_six_bit_nonce_groups<PooledAesGcm>(); }

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
    auto p = test::catch_error([&] { PooledAesGcm aead(key); });
    ASSERT_TRUE(p.has_value()) << len << "-byte key accepted by PooledAesGcm";
  }
}

Bytes random_key(std::size_t n) {
  Bytes k(n);
  random_bytes(k);
  return k;
}

// Seals `msg` under `sealer` and checks that `opener` opens it to `msg`.
void round_trip(Aead& sealer, Aead& opener, const Bytes& msg, const Bytes& aad) {
  std::uint8_t nonce[kGcmNonceSize];
  random_nonce(nonce);
  Bytes ct(msg.size());
  std::uint8_t tag[kGcmTagSize];
  sealer.seal({nonce, kGcmNonceSize}, aad, msg, ct.data(), tag);
  Bytes back(msg.size());
  ASSERT_TRUE(opener.open({nonce, kGcmNonceSize}, aad, ct, tag, back.data()));
  ASSERT_EQ(back, msg);
}

// Three times as many keys as pool slots, used in an order where the instances that
// share a slot (serials kGcmPoolSlots apart) alternate: every value must still be
// sealed and opened under its own key (checked against an AesGcm of the same key,
// both ways), and the slot is keyed again exactly when its holder changed.
TEST(PooledAesGcm, KeysSharingPoolSlotsStaySeparate) {
  const std::size_t n = 3 * kGcmPoolSlots + 7;
  std::vector<Bytes> keys;
  std::vector<std::unique_ptr<PooledAesGcm>> pooled;
  std::vector<std::unique_ptr<AesGcm>> reference;
  for (std::size_t i = 0; i < n; ++i) {
    keys.push_back(random_key(i % 5 == 0 ? 16 : 32));
    pooled.push_back(std::make_unique<PooledAesGcm>(keys.back()));
    reference.push_back(std::make_unique<AesGcm>(keys.back()));
  }
  const Bytes msg = test::from_hex("00112233445566778899aabbccddeeff0102030405");
  const Bytes aad = test::from_hex("a1a2a3");
  for (int round = 0; round < 2; ++round)
    for (std::size_t slot = 0; slot < kGcmPoolSlots; slot += 97)
      for (std::size_t i = slot; i < n; i += kGcmPoolSlots) {
        SCOPED_TRACE("instance " + std::to_string(i));
        round_trip(*pooled[i], *reference[i], msg, aad);
        round_trip(*reference[i], *pooled[i], msg, aad);
        // A value of another key sharing the slot is refused, whichever key the slot holds.
        std::size_t other = i + kGcmPoolSlots < n ? i + kGcmPoolSlots : i - kGcmPoolSlots;
        std::uint8_t nonce[kGcmNonceSize];
        random_nonce(nonce);
        Bytes ct(msg.size()), back(msg.size());
        std::uint8_t tag[kGcmTagSize];
        reference[other]->seal({nonce, kGcmNonceSize}, aad, msg, ct.data(), tag);
        EXPECT_FALSE(pooled[i]->open({nonce, kGcmNonceSize}, aad, ct, tag, back.data()));
        EXPECT_TRUE(pooled[other]->open({nonce, kGcmNonceSize}, aad, ct, tag, back.data()));
        EXPECT_EQ(back, msg);
      }

  // The same instance again and again: its slot is keyed once, then only the nonce is set.
  PooledAesGcm& one = *pooled[5];
  round_trip(one, *reference[5], msg, aad);  // keys its encryption slot
  round_trip(*reference[5], one, msg, aad);  // and its decryption slot
  std::uint64_t before = PooledAesGcm::rekeys();
  for (int i = 0; i < 100; ++i) round_trip(*reference[5], one, msg, aad);
  EXPECT_EQ(PooledAesGcm::rekeys(), before);
  // Its decryption slot's other holder takes the slot (one re-key), then it takes it
  // back (another).
  round_trip(*reference[5 + kGcmPoolSlots], *pooled[5 + kGcmPoolSlots], msg, aad);
  round_trip(*reference[5], one, msg, aad);
  EXPECT_EQ(PooledAesGcm::rekeys(), before + 2);
}

// An instance destroyed while holding its slot leaves nothing usable behind: the slot's
// next holder (a new instance on the same slot) works with its own key only, and an
// instance created on a slot whose holder went is keyed afresh.
TEST(PooledAesGcm, DestroyedHolderReleasesItsSlot) {
  const Bytes msg = test::from_hex("c0ffee");
  Bytes key_a = random_key(32);
  AesGcm ref_a(key_a);
  std::uint8_t nonce[kGcmNonceSize];
  random_nonce(nonce);
  Bytes ct(msg.size()), back(msg.size());
  std::uint8_t tag[kGcmTagSize];
  ref_a.seal({nonce, kGcmNonceSize}, {}, msg, ct.data(), tag);
  std::vector<std::unique_ptr<PooledAesGcm>> fillers;
  {
    PooledAesGcm a(key_a);
    ASSERT_TRUE(a.open({nonce, kGcmNonceSize}, {}, ct, tag, back.data()));
    // kGcmPoolSlots - 1 more instances: the next one after them gets a's slot.
    for (std::size_t i = 0; i + 1 < kGcmPoolSlots; ++i) fillers.push_back(std::make_unique<PooledAesGcm>(random_key(32)));
  }
  Bytes key_b = random_key(32);
  PooledAesGcm b(key_b);
  AesGcm ref_b(key_b);
  std::uint64_t before = PooledAesGcm::rekeys();
  EXPECT_FALSE(b.open({nonce, kGcmNonceSize}, {}, ct, tag, back.data())) << "a value of the destroyed key opened";
  EXPECT_EQ(PooledAesGcm::rekeys(), before + 1) << "the released slot was not keyed afresh";
  round_trip(b, ref_b, msg, {});
  round_trip(ref_b, b, msg, {});
}

// A failed authentication leaves the pooled context usable for the next value.
TEST(PooledAesGcm, FailedOpenDoesNotSpoilTheSlot) {
  Bytes key = random_key(32);
  PooledAesGcm p(key);
  AesGcm ref(key);
  const Bytes msg = test::from_hex("0102030405060708");
  std::uint8_t nonce[kGcmNonceSize];
  random_nonce(nonce);
  Bytes ct(msg.size()), back(msg.size());
  std::uint8_t tag[kGcmTagSize];
  ref.seal({nonce, kGcmNonceSize}, {}, msg, ct.data(), tag);
  tag[0] ^= 1;
  EXPECT_FALSE(p.open({nonce, kGcmNonceSize}, {}, ct, tag, back.data()));
  EXPECT_EQ(back, Bytes(msg.size(), 0));
  tag[0] ^= 1;
  EXPECT_TRUE(p.open({nonce, kGcmNonceSize}, {}, ct, tag, back.data()));
  EXPECT_EQ(back, msg);
  round_trip(p, ref, msg, {});
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
