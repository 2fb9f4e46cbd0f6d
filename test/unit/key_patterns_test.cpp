// Key-name patterns of per-key privileges.
#include <gtest/gtest.h>

#include "pg_envelope/key_patterns.hpp"

namespace pg_envelope {
namespace {

TEST(KeyPatterns, Valid) {
  for (const char* p : {"*", "k", "tenant_*", "tenant_42", "a.b:c@d/e-f", "_x*", "x"})
    EXPECT_TRUE(valid_key_pattern(p)) << p;
  for (const char* p : {"", "**", "*x", "t*x", "-x", "a b", "tenant_%", "x**", ".x*"})
    EXPECT_FALSE(valid_key_pattern(p)) << p;
  EXPECT_TRUE(valid_key_pattern(std::string(63, 'k') + "*"));
  EXPECT_FALSE(valid_key_pattern(std::string(64, 'k')));
}

TEST(KeyPatterns, Matches) {
  EXPECT_TRUE(key_pattern_matches("*", "anything"));
  EXPECT_TRUE(key_pattern_matches("tenant_*", "tenant_42"));
  EXPECT_TRUE(key_pattern_matches("tenant_*", "tenant_"));
  EXPECT_FALSE(key_pattern_matches("tenant_*", "tenant"));
  EXPECT_FALSE(key_pattern_matches("tenant_*", "other_tenant_1"));
  EXPECT_TRUE(key_pattern_matches("k1", "k1"));
  EXPECT_FALSE(key_pattern_matches("k1", "k10"));
  EXPECT_FALSE(key_pattern_matches("k1", "k"));
}

TEST(KeyPatterns, Covers) {
  EXPECT_TRUE(key_pattern_covers("*", "*"));
  EXPECT_TRUE(key_pattern_covers("*", "tenant_*"));
  EXPECT_TRUE(key_pattern_covers("tenant_*", "tenant_4*"));
  EXPECT_TRUE(key_pattern_covers("tenant_*", "tenant_42"));
  EXPECT_FALSE(key_pattern_covers("tenant_*", "*"));
  EXPECT_FALSE(key_pattern_covers("tenant_*", "tenant*"));
  EXPECT_FALSE(key_pattern_covers("tenant_42", "tenant_*"));
  EXPECT_TRUE(key_pattern_covers("tenant_42", "tenant_42"));
  EXPECT_FALSE(key_pattern_covers("tenant_42", "tenant_420"));
}

}  // namespace
}  // namespace pg_envelope
