// SecureBytes (include/pg_envelope/secure_bytes.hpp): move-only ownership of secrets,
// emptied on move and on wipe; secure_zero.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "pg_envelope/secure_bytes.hpp"

namespace pg_envelope {
namespace {

SecureBytes filled(std::size_t n, std::uint8_t v) {
  SecureBytes s(n);
  std::memset(s.data(), v, n);
  return s;
}

bool all_equal(const SecureBytes& s, std::uint8_t v) {
  return std::all_of(s.data(), s.data() + s.size(), [v](std::uint8_t b) { return b == v; });
}

TEST(SecureBytes, IsMoveOnly) {
  static_assert(!std::is_copy_constructible_v<SecureBytes>);
  static_assert(!std::is_copy_assignable_v<SecureBytes>);
  static_assert(std::is_nothrow_move_constructible_v<SecureBytes>);
  static_assert(std::is_nothrow_move_assignable_v<SecureBytes>);
}

TEST(SecureBytes, ConstructsZeroedOrFromBytes) {
  SecureBytes empty;
  EXPECT_TRUE(empty.empty());
  EXPECT_EQ(empty.size(), 0u);
  SecureBytes sized(32);
  EXPECT_EQ(sized.size(), 32u);
  EXPECT_TRUE(all_equal(sized, 0));
  const std::uint8_t raw[] = {1, 2, 3, 4};
  SecureBytes copy(raw, sizeof raw);
  ASSERT_EQ(copy.size(), 4u);
  EXPECT_NE(copy.data(), raw);
  EXPECT_EQ(0, std::memcmp(copy.data(), raw, sizeof raw));
  EXPECT_EQ(copy.view().size(), 4u);
  EXPECT_EQ(copy.span().data(), copy.data());
}

TEST(SecureBytes, MoveConstructionLeavesSourceEmpty) {
  SecureBytes a = filled(32, 0xAB);
  const std::uint8_t* storage = a.data();
  SecureBytes b(std::move(a));
  EXPECT_TRUE(a.empty());  // NOLINT(bugprone-use-after-move): the behaviour under test
  EXPECT_EQ(a.size(), 0u);
  EXPECT_EQ(b.size(), 32u);
  EXPECT_EQ(b.data(), storage) << "a move should transfer the buffer, not copy the secret";
  EXPECT_TRUE(all_equal(b, 0xAB));
}

TEST(SecureBytes, MoveAssignmentLeavesSourceEmptyAndReplacesTarget) {
  SecureBytes a = filled(16, 0x11);
  SecureBytes b = filled(8, 0x22);
  b = std::move(a);
  EXPECT_TRUE(a.empty());  // NOLINT(bugprone-use-after-move)
  ASSERT_EQ(b.size(), 16u);
  EXPECT_TRUE(all_equal(b, 0x11));

  SecureBytes& self = b;
  b = std::move(self);  // self-move keeps the contents
  EXPECT_EQ(b.size(), 16u);
  EXPECT_TRUE(all_equal(b, 0x11));
}

TEST(SecureBytes, WipeEmpties) {
  SecureBytes s = filled(64, 0x5C);
  s.wipe();
  EXPECT_TRUE(s.empty());
  EXPECT_EQ(s.size(), 0u);
  s.wipe();  // idempotent
  EXPECT_TRUE(s.empty());
}

TEST(SecureZero, ZeroesExactlyTheGivenRange) {
  std::uint8_t buf[32];
  std::memset(buf, 0xFF, sizeof buf);
  secure_zero(buf + 4, 24);
  for (std::size_t i = 0; i < sizeof buf; ++i) EXPECT_EQ(buf[i], (i >= 4 && i < 28) ? 0 : 0xFF) << i;
  secure_zero(nullptr, 0);  // tolerated
  secure_zero(buf, 0);
  EXPECT_EQ(buf[0], 0xFF);
}

}  // namespace
}  // namespace pg_envelope
