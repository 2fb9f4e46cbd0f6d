// pg_envelope::hmac_sha256 and HmacSha256 (the blind indexes of protected columns) against Project
// Wycheproof's HMAC-SHA-256 vectors. A blind index keeps a prefix of the tag, so the
// vectors' truncated tags check that prefixes compare as the full tag does.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "pg_envelope/crypto.hpp"
#include "test_support.hpp"

namespace pg_envelope {
namespace {

using test::from_hex;

TEST(HmacSha256Wycheproof, AllVectors) {
  nlohmann::json doc;
  ASSERT_TRUE(test::load_json("wycheproof/hmac_sha256_test.json", doc));
  ASSERT_EQ(doc.at("algorithm").get<std::string>(), "HMACSHA256");
  int valid = 0, invalid = 0, in_file = 0, truncated = 0;
  for (const auto& group : doc.at("testGroups")) {
    const std::size_t tag_bytes = group.at("tagSize").get<std::size_t>() / 8;
    if (tag_bytes < 32) ++truncated;
    for (const auto& t : group.at("tests")) {
      ++in_file;
      SCOPED_TRACE("tcId " + std::to_string(t.at("tcId").get<int>()));
      const Bytes key = from_hex(t.at("key").get<std::string>());
      const Bytes msg = from_hex(t.at("msg").get<std::string>());
      const Bytes tag = from_hex(t.at("tag").get<std::string>());
      std::uint8_t out[32];
      hmac_sha256(key, msg, out);
      // The keyed object gives the same tag, also for a second message under one key.
      HmacSha256 keyed(key);
      std::uint8_t again[32], twice[32];
      keyed.mac(msg, again);
      keyed.mac(msg, twice);
      EXPECT_TRUE(std::equal(out, out + 32, again));
      EXPECT_TRUE(std::equal(out, out + 32, twice));
      const bool match = tag.size() == tag_bytes && std::equal(tag.begin(), tag.end(), out);
      if (t.at("result").get<std::string>() == "valid") {
        ++valid;
        EXPECT_TRUE(match);
      } else {
        ++invalid;
        EXPECT_FALSE(match);
      }
    }
  }
  EXPECT_EQ(in_file, doc.at("numberOfTests").get<int>());
  EXPECT_GE(valid, 50);
  EXPECT_GE(invalid, 50);
  EXPECT_GE(truncated, 1);
}

}  // namespace
}  // namespace pg_envelope
