// without() (src/pg/key_errors.hpp): a caller-supplied name that names nothing is
// taken out of an error's texts, and nothing else is.
#include <gtest/gtest.h>

#include "pg/key_errors.hpp"

namespace pg_envelope {
namespace {

TEST(KeyErrorsWithout, QuotedAndBareOccurrencesAreReplaced) {
  Error e(sqlstate::kInternalError, "KEK \"arn:aws:kms:eu-west-1:111:key/abc\" was refused",
          "the KMS said: key arn:aws:kms:eu-west-1:111:key/abc is disabled",
          "path /v1/arn:aws:kms:eu-west-1:111:key/abc/x");
  Error s = without(e, "KEK", "arn:aws:kms:eu-west-1:111:key/abc", "the KEK given");
  EXPECT_EQ(std::string(s.what()), "the KEK given was refused");
  EXPECT_EQ(s.detail(), "the KMS said: key (the KEK given) is disabled");
  EXPECT_EQ(s.hint(), "path /v1/(the KEK given)/x");
  EXPECT_STREQ(s.sqlstate(), e.sqlstate());
}

// A one-letter KMS name used to turn "reach" into "re(the new KMS)ch"; the letter is
// still taken out where it stands alone.
TEST(KeyErrorsWithout, ShortNameDoesNotMangleWords) {
  Error e(sqlstate::kConnectionFailure, "KMS \"v\" could not reach the vault",
          "GET https://vault.example/v1/transit/keys/v failed", "retry v later");
  Error s = without(e, "KMS", "v", "the new KMS");
  EXPECT_EQ(std::string(s.what()), "the new KMS could not reach the vault");
  EXPECT_EQ(s.detail(), "GET https://vault.example/v1/transit/keys/(the new KMS) failed");
  EXPECT_EQ(s.hint(), "retry (the new KMS) later");
}

TEST(KeyErrorsWithout, NameInsideALongerNameIsKept) {
  Error e(sqlstate::kInternalError, "key \"tenant\" exists", "tenants, tenant_2 and tenant are listed", "");
  Error s = without(e, "key", "tenant", "the new key");
  EXPECT_EQ(std::string(s.what()), "the new key exists");
  EXPECT_EQ(s.detail(), "tenants, tenant_2 and (the new key) are listed");
}

// A needle that begins and ends with punctuation has no word to be inside of.
TEST(KeyErrorsWithout, PunctuationEdgesAreReplacedEverywhere) {
  Error e(sqlstate::kInternalError, "x", "a-/secret/-b and z-/secret/-", "");
  Error s = without(e, "KEK", "-/secret/-", "the KEK given");
  EXPECT_EQ(s.detail(), "a(the KEK given)b and z(the KEK given)");
}

}  // namespace
}  // namespace pg_envelope
