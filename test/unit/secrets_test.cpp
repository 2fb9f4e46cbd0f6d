// SecretString (include/pg_envelope/secrets.hpp): move-only text in wiping heap
// memory, always NUL-terminated, emptied on move and on wipe.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <type_traits>

#include "pg_envelope/http.hpp"
#include "pg_envelope/secrets.hpp"

namespace pg_envelope {
namespace {

TEST(SecretString, IsMoveOnlyAndMovesWithoutThrowing) {
  static_assert(!std::is_copy_constructible_v<SecretString>);
  static_assert(!std::is_copy_assignable_v<SecretString>);
  static_assert(std::is_nothrow_move_constructible_v<SecretString>);
  static_assert(std::is_nothrow_move_assignable_v<SecretString>);
  static_assert(std::is_nothrow_destructible_v<SecretString>);
}

TEST(SecretString, EmptyIsAnEmptyCString) {
  SecretString s;
  EXPECT_TRUE(s.empty());
  EXPECT_EQ(s.size(), 0u);
  ASSERT_NE(s.data(), nullptr);
  EXPECT_STREQ(s.data(), "");
  EXPECT_STREQ(s.c_str(), "");
  EXPECT_EQ(s.view(), "");
  SecretString from_empty{std::string_view()};
  EXPECT_TRUE(from_empty.empty());
  EXPECT_STREQ(from_empty.data(), "");
}

TEST(SecretString, AppendsAndStaysNulTerminated) {
  SecretString s("ab");
  EXPECT_EQ(s.view(), "ab");
  EXPECT_EQ(std::strlen(s.data()), 2u);
  s.append("cd");
  s.append("", 0);
  s.push_back('e');
  s.append(std::string_view("fghijklmnopqrstuvwxyz"));
  EXPECT_EQ(s.view(), "abcdefghijklmnopqrstuvwxyz");
  EXPECT_EQ(std::strlen(s.c_str()), 26u);
  // Growth in many small steps, as libcurl's body callback does.
  SecretString big;
  std::string expected;
  for (int i = 0; i < 5000; ++i) {
    char c = static_cast<char>('a' + i % 26);
    big.append(&c, 1);
    expected.push_back(c);
  }
  EXPECT_EQ(big.view(), expected);
  EXPECT_EQ(big.data()[big.size()], '\0');
}

TEST(SecretString, EmbeddedNulsAreKept) {
  SecretString s(std::string_view("a\0b", 3));
  EXPECT_EQ(s.size(), 3u);
  EXPECT_EQ(s.view(), std::string_view("a\0b", 3));
}

TEST(SecretString, MoveLeavesTheSourceEmptyAndKeepsTheBuffer) {
  SecretString a("a secret token of some length");
  const char* storage = a.data();
  SecretString b(std::move(a));
  EXPECT_TRUE(a.empty());  // NOLINT(bugprone-use-after-move): the behaviour under test
  EXPECT_STREQ(a.data(), "");
  EXPECT_EQ(b.view(), "a secret token of some length");
  EXPECT_EQ(b.data(), storage) << "a move should hand the buffer over, not copy the secret";

  SecretString c("x");
  c = std::move(b);
  EXPECT_TRUE(b.empty());  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(c.view(), "a secret token of some length");
  SecretString& self = c;
  c = std::move(self);
  EXPECT_EQ(c.view(), "a secret token of some length");
}

// Short strings too live in the heap buffer, never inside the object (no
// small-string optimisation), so no copy of them stays behind in the object.
TEST(SecretString, ShortStringsAreNotStoredInline) {
  SecretString s("short");
  auto object = reinterpret_cast<const char*>(&s);
  EXPECT_FALSE(s.data() >= object && s.data() < object + sizeof s);
}

TEST(SecretString, WipeEmptiesAndCanBeReused) {
  SecretString s("secret");
  s.wipe();
  EXPECT_TRUE(s.empty());
  EXPECT_STREQ(s.data(), "");
  s.wipe();
  s.append("again");
  EXPECT_EQ(s.view(), "again");
}

TEST(SecretString, HttpHeaderStillProvidesIt) {
  // http.hpp includes secrets.hpp: code that names SecretString through it keeps working.
  HttpRequest rq;
  rq.userpwd = SecretString("AKID:secret");
  EXPECT_STREQ(rq.userpwd.c_str(), "AKID:secret");
}

}  // namespace
}  // namespace pg_envelope
