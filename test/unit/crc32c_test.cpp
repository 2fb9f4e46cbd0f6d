// pg_envelope::crc32c: the CRC-32C check value and the RFC 3720 appendix B.4 vectors
// (the checksum Cloud KMS puts in its *Crc32c fields).
#include <gtest/gtest.h>

#include <cstdint>
#include <string_view>

#include "pg_envelope/crc32c.hpp"
#include "pg_envelope/crypto.hpp"

namespace pg_envelope {
namespace {

Bytes filled(std::size_t n, std::uint8_t value) { return Bytes(n, value); }

Bytes counting(bool ascending) {
  Bytes b(32);
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = static_cast<std::uint8_t>(ascending ? i : 31 - i);
  return b;
}

// The "check" value of the CRC catalogue: the CRC of the ASCII digits 1 to 9.
TEST(Crc32c, CheckValue) { EXPECT_EQ(crc32c(as_bytes("123456789")), 0xE3069283u); }

// RFC 3720 appendix B.4 (the RFC prints each CRC least significant byte first).
TEST(Crc32c, Rfc3720AppendixB4) {
  EXPECT_EQ(crc32c(filled(32, 0x00)), 0x8A9136AAu);
  EXPECT_EQ(crc32c(filled(32, 0xFF)), 0x62A8AB43u);
  EXPECT_EQ(crc32c(counting(true)), 0x46DD794Eu);
  EXPECT_EQ(crc32c(counting(false)), 0x113FDB5Cu);
}

TEST(Crc32c, EmptyInputIsZero) { EXPECT_EQ(crc32c(ByteView{}), 0u); }

TEST(Crc32c, ContinuesAcrossPieces) {
  const std::string_view text = "The quick brown fox jumps over the lazy dog";
  const std::uint32_t whole = crc32c(as_bytes(text));
  for (std::size_t cut = 0; cut <= text.size(); ++cut)
    EXPECT_EQ(crc32c(as_bytes(text.substr(cut)), crc32c(as_bytes(text.substr(0, cut)))), whole) << cut;
}

// Every single-bit error in a 32-byte message changes the checksum (a CRC detects
// all of them); a checksum that ignored part of the input would fail here.
TEST(Crc32c, DetectsEverySingleBitFlip) {
  Bytes msg = counting(true);
  const std::uint32_t good = crc32c(msg);
  for (std::size_t i = 0; i < msg.size() * 8; ++i) {
    msg[i / 8] ^= static_cast<std::uint8_t>(1u << (i % 8));
    EXPECT_NE(crc32c(msg), good) << "bit " << i;
    msg[i / 8] ^= static_cast<std::uint8_t>(1u << (i % 8));
  }
  EXPECT_EQ(crc32c(msg), good);
}

}  // namespace
}  // namespace pg_envelope
