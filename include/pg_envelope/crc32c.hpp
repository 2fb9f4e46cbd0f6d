// CRC-32C (Castagnoli), the checksum Cloud KMS carries in its *Crc32c fields to
// detect corruption of requests and responses. Pure C++: no PostgreSQL headers.
//
// Reflected polynomial 0x82F63B78 (normal form 0x1EDC6F41), initial value and final
// XOR 0xFFFFFFFF: the CRC of iSCSI (RFC 3720 appendix B.4) and of SSE4.2's crc32
// instruction. Not a MAC: it detects accidents, not tampering.
#pragma once

#include <cstdint>

#include "pg_envelope/secure_bytes.hpp"

namespace pg_envelope {

// The CRC-32C of `data`. To checksum data in pieces, pass the previous result as
// `crc`: crc32c(b, crc32c(a)) == crc32c(a || b).
std::uint32_t crc32c(ByteView data, std::uint32_t crc = 0) noexcept;

}  // namespace pg_envelope
