import os
import random

from kms_emulators.crc32c import crc32c


def _bitwise_crc32c(data: bytes) -> int:
    """Independent bit-at-a-time reference (no table)."""
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def test_standard_check_value():
    assert crc32c(b"123456789") == 0xE3069283


def test_empty():
    assert crc32c(b"") == 0


# RFC 3720 (iSCSI) appendix B.4 "CRC Examples". The RFC prints the CRC
# bytes in transmission order (least significant byte first).
def test_rfc3720_32_zero_bytes():
    assert crc32c(bytes(32)) == 0x8A9136AA


def test_rfc3720_32_ff_bytes():
    assert crc32c(b"\xff" * 32) == 0x62A8AB43


def test_rfc3720_32_incrementing_bytes():
    assert crc32c(bytes(range(32))) == 0x46DD794E


def test_rfc3720_32_decrementing_bytes():
    assert crc32c(bytes(range(31, -1, -1))) == 0x113FDB5C


def test_rfc3720_iscsi_read_pdu():
    pdu = bytes.fromhex(
        "01c00000000000000000000000000000"
        "14000000000004000000001400000018"
        "28000000000000000200000000000000")
    assert crc32c(pdu) == 0xD9963A56


def test_rfc3720_vectors_in_wire_byte_order():
    # The same vectors as the RFC lists them: little-endian bytes.
    assert crc32c(bytes(32)).to_bytes(4, "little") == bytes.fromhex("aa36918a")
    assert crc32c(b"\xff" * 32).to_bytes(4, "little") == bytes.fromhex("43aba862")


def test_table_matches_bitwise_reference_on_random_data():
    rng = random.Random(1234)
    for n in (1, 2, 3, 7, 8, 63, 64, 255, 1000):
        data = bytes(rng.getrandbits(8) for _ in range(n))
        assert crc32c(data) == _bitwise_crc32c(data), n


def test_incremental_equals_one_shot():
    data = os.urandom(1000)
    assert crc32c(data[600:], crc32c(data[:600])) == crc32c(data)


def test_differs_from_plain_crc32():
    import zlib
    assert crc32c(b"123456789") != zlib.crc32(b"123456789")  # 0xCBF43926 is CRC-32/ISO-HDLC
