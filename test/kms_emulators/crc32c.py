"""CRC-32C (Castagnoli), as used by Cloud KMS's ``*Crc32c`` checksum fields.

Reflected polynomial 0x82F63B78 (normal form 0x1EDC6F41), initial value and
final XOR 0xFFFFFFFF: the same CRC as iSCSI (RFC 3720 appendix B.4) and
SSE4.2's ``crc32`` instruction.  Table-driven, one byte at a time; plenty for
the few kilobytes a KMS request carries.
"""

from __future__ import annotations

_POLY_REFLECTED = 0x82F63B78


def _build_table() -> tuple:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _POLY_REFLECTED if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _build_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C of ``data``; pass a previous result as ``crc`` to continue it."""
    crc ^= 0xFFFFFFFF
    table = _TABLE
    for b in bytes(data):
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF
