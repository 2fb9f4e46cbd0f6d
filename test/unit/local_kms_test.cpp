// The built-in "local" KMS (make_local_kms): DEK generation, wrapping bound to a
// DekBinding and a KEK name, and rewrapping.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "pg_envelope/crypto.hpp"
#include "pg_envelope/error.hpp"
#include "pg_envelope/kms.hpp"
#include "test_support.hpp"

namespace pg_envelope {
namespace {

using test::catch_error;

Bytes random_key() {
  Bytes k(32);
  random_bytes(k);
  return k;
}

Bytes copy_of(const SecureBytes& s) { return Bytes(s.data(), s.data() + s.size()); }

class LocalKms : public ::testing::Test {
 protected:
  LocalKms() : master_(random_key()), kms_(make_local_kms(master_)), binding_{"ssn", 17, 4} {}

  // Expects fn to throw pg_envelope::Error with SQLSTATE 22000 (data_exception).
  void expect_unwrap_failure(const std::function<void()>& fn, const std::string& what) {
    auto e = catch_error(fn);
    ASSERT_TRUE(e.has_value()) << what << ": unwrap succeeded";
    EXPECT_STREQ(e->sqlstate(), "22000") << what << ": " << e->what();
  }

  Bytes master_;
  std::unique_ptr<KmsProvider> kms_;
  DekBinding binding_;
};

TEST_F(LocalKms, Identity) {
  EXPECT_EQ(kms_->kms_name(), "local");
  EXPECT_EQ(kms_->default_kek(), "default");
}

TEST_F(LocalKms, GenerateDataKeyGivesA256BitDekThatUnwraps) {
  GeneratedDek g = kms_->generate_data_key("default", binding_);
  ASSERT_EQ(g.plaintext.size(), 32u);
  EXPECT_FALSE(std::all_of(g.plaintext.data(), g.plaintext.data() + 32, [](std::uint8_t b) { return b == 0; }));
  ASSERT_FALSE(g.wrapped.empty());
  // The DEK must not appear in the clear inside its wrapped form.
  EXPECT_EQ(std::search(g.wrapped.begin(), g.wrapped.end(), g.plaintext.data(), g.plaintext.data() + 32),
            g.wrapped.end());

  SecureBytes back = kms_->unwrap("default", binding_, g.wrapped);
  EXPECT_EQ(copy_of(back), copy_of(g.plaintext));
}

TEST_F(LocalKms, TwoGeneratedDeksDiffer) {
  GeneratedDek a = kms_->generate_data_key("default", binding_);
  GeneratedDek b = kms_->generate_data_key("default", binding_);
  EXPECT_NE(copy_of(a.plaintext), copy_of(b.plaintext));
  EXPECT_NE(a.wrapped, b.wrapped);
}

TEST_F(LocalKms, UnwrapIsBoundToKeyNameIdVersionAndKek) {
  GeneratedDek g = kms_->generate_data_key("default", binding_);
  ASSERT_NO_THROW(kms_->unwrap("default", binding_, g.wrapped));

  DekBinding other = binding_;
  other.key_name = "ssn2";
  expect_unwrap_failure([&] { kms_->unwrap("default", other, g.wrapped); }, "other key name");
  other = binding_;
  other.key_name = "SSN";
  expect_unwrap_failure([&] { kms_->unwrap("default", other, g.wrapped); }, "key name case");
  other = binding_;
  other.key_id += 1;
  expect_unwrap_failure([&] { kms_->unwrap("default", other, g.wrapped); }, "other key id");
  other = binding_;
  other.version += 1;
  expect_unwrap_failure([&] { kms_->unwrap("default", other, g.wrapped); }, "other version");
  // key_id and version swapped: the fields must be bound separately.
  other = binding_;
  std::swap(other.key_id, other.version);
  expect_unwrap_failure([&] { kms_->unwrap("default", other, g.wrapped); }, "id and version swapped");
  expect_unwrap_failure([&] { kms_->unwrap("other", binding_, g.wrapped); }, "other KEK name");
}

TEST_F(LocalKms, UnwrapFailsUnderAnotherMasterKey) {
  GeneratedDek g = kms_->generate_data_key("default", binding_);
  Bytes other_master = master_;
  other_master[31] ^= 0x01;
  auto other = make_local_kms(other_master);
  expect_unwrap_failure([&] { other->unwrap("default", binding_, g.wrapped); }, "other master key");
  // The same master key in a second provider instance works.
  auto same = make_local_kms(master_);
  EXPECT_EQ(copy_of(same->unwrap("default", binding_, g.wrapped)), copy_of(g.plaintext));
}

TEST_F(LocalKms, EveryFlippedByteOfTheWrappedDekIsDetected) {
  GeneratedDek g = kms_->generate_data_key("default", binding_);
  for (std::size_t i = 0; i < g.wrapped.size(); ++i) {
    Bytes bad = g.wrapped;
    bad[i] ^= 0x01;
    expect_unwrap_failure([&] { kms_->unwrap("default", binding_, bad); }, "byte " + std::to_string(i));
  }
}

TEST_F(LocalKms, TruncatedOrExtendedWrappedDekIsRejected) {
  GeneratedDek g = kms_->generate_data_key("default", binding_);
  Bytes shorter(g.wrapped.begin(), g.wrapped.end() - 1);
  expect_unwrap_failure([&] { kms_->unwrap("default", binding_, shorter); }, "one byte short");
  Bytes longer = g.wrapped;
  longer.push_back(0);
  expect_unwrap_failure([&] { kms_->unwrap("default", binding_, longer); }, "one byte long");
  expect_unwrap_failure([&] { kms_->unwrap("default", binding_, Bytes{}); }, "empty");
}

TEST_F(LocalKms, FailedUnwrapDoesNotRevealKeyMaterial) {
  GeneratedDek g = kms_->generate_data_key("default", binding_);
  DekBinding other = binding_;
  other.version += 1;
  auto e = catch_error([&] { kms_->unwrap("default", other, g.wrapped); });
  ASSERT_TRUE(e.has_value());
  for (const Bytes& secret : {copy_of(g.plaintext), master_}) {
    const std::string raw(secret.begin(), secret.end());
    const std::string hex = [&] {
      static const char* d = "0123456789abcdef";
      std::string s;
      for (std::uint8_t b : secret) s += {d[b >> 4], d[b & 15]};
      return s;
    }();
    EXPECT_FALSE(test::error_mentions(*e, raw.substr(0, 8)));
    EXPECT_FALSE(test::error_mentions(*e, hex.substr(0, 16)));
  }
}

TEST_F(LocalKms, WrappingTwiceUsesAFreshNonce) {
  SecureBytes dek(32);
  random_bytes(dek.span());
  Bytes a = kms_->wrap("default", binding_, dek.view());
  Bytes b = kms_->wrap("default", binding_, dek.view());
  EXPECT_NE(a, b);
  EXPECT_EQ(copy_of(kms_->unwrap("default", binding_, a)), copy_of(dek));
  EXPECT_EQ(copy_of(kms_->unwrap("default", binding_, b)), copy_of(dek));
}

TEST_F(LocalKms, WrapRefusesADekThatIsNot32Bytes) {
  for (std::size_t len : {0u, 16u, 31u, 33u}) {
    Bytes dek(len, 1);
    EXPECT_TRUE(catch_error([&] { kms_->wrap("default", binding_, dek); }).has_value()) << len;
  }
}

TEST_F(LocalKms, DefaultRewrapMovesTheDekToTheNewKek) {
  GeneratedDek g = kms_->generate_data_key("default", binding_);
  Bytes rewrapped = kms_->rewrap("default", "kek-2025", binding_, g.wrapped);
  EXPECT_NE(rewrapped, g.wrapped);
  EXPECT_EQ(copy_of(kms_->unwrap("kek-2025", binding_, rewrapped)), copy_of(g.plaintext));
  expect_unwrap_failure([&] { kms_->unwrap("default", binding_, rewrapped); }, "old KEK after rewrap");
  // Rewrapping a DEK that does not unwrap fails the same way.
  DekBinding other = binding_;
  other.key_id += 1;
  expect_unwrap_failure([&] { kms_->rewrap("default", "kek-2025", other, g.wrapped); }, "rewrap, wrong binding");
}

TEST_F(LocalKms, ValidateKek) {
  for (const std::string& kek : std::vector<std::string>{"default", "a", "kek-2025", "team/app:v1.2_x",
                                                         std::string(128, 'k')})
    EXPECT_NO_THROW(kms_->validate_kek(kek)) << kek;
  for (const std::string& kek : std::vector<std::string>{"", "has space", "semi;colon", "quote'", "tab\t",
                                                         "caf\xc3\xa9", std::string(129, 'k')}) {
    auto e = catch_error([&] { kms_->validate_kek(kek); });
    ASSERT_TRUE(e.has_value()) << "accepted \"" << kek << "\"";
    EXPECT_STREQ(e->sqlstate(), "22023");
  }
}

// A NUL is not in the documented KEK alphabet (A-Z, a-z, 0-9, "_.:/-").
TEST_F(LocalKms, ValidateKekRejectsNulByte) {
  for (const std::string& kek : {std::string("nul\0", 4), std::string("\0", 1), std::string("a\0b", 3)}) {
    auto e = catch_error([&] { kms_->validate_kek(kek); });
    EXPECT_TRUE(e.has_value()) << "accepted a KEK name containing NUL (" << kek.size() << " bytes)";
  }
}

TEST(LocalKmsSetup, MasterKeyMustBe32Bytes) {
  for (std::size_t len : {0u, 16u, 31u, 33u, 64u}) {
    Bytes master(len, 0x42);
    EXPECT_TRUE(catch_error([&] { make_local_kms(master); }).has_value()) << len;
  }
}

}  // namespace
}  // namespace pg_envelope
