#!/usr/bin/env python3
"""Writes the seed corpora of the format and key-file fuzz harnesses:
test/fuzz/corpus/{envelope,text_form,base64,base64url,master_key}/.

Deterministic (fixed bytes, no randomness), standard library only. Run it after
changing a seed here and commit the result; scripts/fuzz.sh only reads the corpora
(it fuzzes a copy). Each corpus is replaced as a whole; other corpora (the KMS ones)
are left alone.

    python3 test/fuzz/make_corpus.py
"""

import base64
import pathlib
import shutil
import struct

CORPUS = pathlib.Path(__file__).resolve().parent / "corpus"

NONCE = bytes(range(0xF0, 0xFC))  # 12 bytes
TAG = b"\x77" * 16


def envelope(ct: bytes = b"", key_id: int = 0x01020304, version: int = 1,
             fmt: int = 1, alg: int = 1) -> bytes:
    """docs/format.md section 1: version, algorithm, key id, DEK version, nonce, ct, tag."""
    return struct.pack(">BBII", fmt, alg, key_id, version) + NONCE + ct + TAG


def leb128(v: int) -> bytes:
    out = bytearray()
    while True:
        b, v = v & 0x7F, v >> 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def envelope2(ct: bytes = b"", key_id: int = 0x01020304, version: int = 1, raw_version: bytes | None = None) -> bytes:
    """docs/format.md section 1, format 2: 0x02, key id, LEB128 DEK version, nonce, ct, tag."""
    v = leb128(version) if raw_version is None else raw_version
    return struct.pack(">BI", 2, key_id) + v + NONCE + ct + TAG


def b64(b: bytes) -> bytes:
    return base64.b64encode(b)


def b64url(b: bytes) -> bytes:
    return base64.urlsafe_b64encode(b).rstrip(b"=")


VALID_ENVELOPES = {
    "valid_empty_plaintext": envelope(),
    "valid_11_bytes": envelope(b"\x33" * 11),
    "valid_16_bytes": envelope(bytes(range(16))),
    "valid_max_ids": envelope(b"x", key_id=0xFFFFFFFF, version=0xFFFFFFFF),
    "valid_1000_bytes": envelope(bytes(i % 251 for i in range(1000))),
    "v2_valid_empty_plaintext": envelope2(),
    "v2_valid_11_bytes": envelope2(b"\x33" * 11),
    "v2_valid_version_300": envelope2(b"ab", version=300),
    "v2_valid_max_ids": envelope2(b"x", key_id=0xFFFFFFFF, version=0xFFFFFFFF),
}

ENVELOPE = {
    **VALID_ENVELOPES,
    "empty": b"",
    "short_37_bytes": envelope()[:37],
    "header_only": envelope()[:22],
    "bad_format_0": envelope(fmt=0),
    "bad_format_3": envelope(fmt=3),
    "v1_layout_format_2": envelope(fmt=2),
    "v2_short_33_bytes": envelope2()[:33],
    "v2_version_0": envelope2(version=0),
    "v2_overlong_version": envelope2(raw_version=b"\x81\x00"),
    "v2_six_byte_version": envelope2(raw_version=b"\x80\x80\x80\x80\x80\x01"),
    "v2_version_above_32_bits": envelope2(raw_version=b"\xff\xff\xff\xff\x1f"),
    "v2_no_room_for_tag": envelope2(version=300)[:34],
    "bad_algorithm_0": envelope(alg=0),
    "bad_algorithm_2": envelope(alg=2),
    "zero_key_id": envelope(key_id=0),
    "zero_version": envelope(version=0),
    "all_ff": b"\xff" * 40,
}

TEXT_FORM = {
    **{name: b"env1:" + b64(env) for name, env in VALID_ENVELOPES.items()},
    "prefix_only": b"env1:",
    "no_colon": b"env1",
    "upper_prefix": b"ENV1:" + b64(envelope()),
    "version_2_prefix": b"env2:" + b64(envelope()),
    "leading_space": b" env1:" + b64(envelope()),
    "trailing_newline": b"env1:" + b64(envelope()) + b"\n",
    "inner_newline": b"env1:" + b64(envelope())[:20] + b"\n" + b64(envelope())[20:],
    "unpadded": b"env1:" + b64(envelope(b"ab")).rstrip(b"="),
    "nonzero_unused_bits": b"env1:" + b64(envelope(b"ab"))[:-3] + b"B==",
    "url_safe_alphabet": b"env1:" + base64.urlsafe_b64encode(envelope(b"\xfb\xff\xfe")),
    "short_envelope": b"env1:" + b64(envelope()[:37]),
    "bad_format": b"env1:" + b64(envelope(fmt=3)),
    "v2_overlong_version": b"env1:" + b64(envelope2(raw_version=b"\x81\x00")),
    "zero_key_id": b"env1:" + b64(envelope(key_id=0)),
    "nul_inside": b"env1:" + b64(envelope())[:8] + b"\0" + b64(envelope())[9:],
}

BASE64 = {
    # RFC 4648 section 10
    "rfc_empty": b"",
    "rfc_f": b"Zg==",
    "rfc_fo": b"Zm8=",
    "rfc_foo": b"Zm9v",
    "rfc_foob": b"Zm9vYg==",
    "rfc_fooba": b"Zm9vYmE=",
    "rfc_foobar": b"Zm9vYmFy",
    "values_62_63": b"+/8=",
    "all_slashes": b"////",
    "key_32_bytes": b64(bytes(range(32))),
    # rejected
    "unpadded": b"Zg",
    "short_padding": b"Zg=",
    "nonzero_bits_1": b"Zh==",
    "nonzero_bits_2": b"Zm9=",
    "padding_inside": b"Zg==Zg==",
    "only_padding": b"====",
    "space_inside": b"Zm 9v",
    "trailing_newline": b"Zm9v\n",
    "url_safe": b"-_8=",
}

BASE64URL = {
    "rfc_empty": b"",
    "rfc_f": b"Zg",
    "rfc_fo": b"Zm8",
    "rfc_foo": b"Zm9v",
    "rfc_foob": b"Zm9vYg",
    "rfc_fooba": b"Zm9vYmE",
    "rfc_foobar": b"Zm9vYmFy",
    "padded_f": b"Zg==",
    "padded_fo": b"Zm8=",
    "values_62_63": b"-_8",
    "all_underscores": b"____",
    "key_32_bytes": b64url(bytes(range(32))),
    "rsa_wrapped_256_bytes": b64url(bytes((7 * i + 3) % 256 for i in range(256))),
    # rejected
    "one_char": b"Z",
    "short_padding": b"Zg=",
    "long_padding": b"Zg===",
    "nonzero_bits": b"Zh",
    "standard_alphabet": b"+/8",
    "space_inside": b"Zm9v YmFy",
    "data_after_padding": b"Zm9vYg=a",
}

KEY_HEX = bytes(range(32)).hex().encode()  # a public, obviously fake key

MASTER_KEY = {
    "openssl_rand_hex": KEY_HEX + b"\n",
    "bare": KEY_HEX,
    "upper_case": KEY_HEX.upper(),
    "crlf": KEY_HEX + b"\r\n",
    "spaces_and_tabs": b" \t " + KEY_HEX + b"\t \n\n",
    "empty": b"",
    "only_whitespace": b" \n\t\r ",
    "63_digits": KEY_HEX[:63] + b"\n",
    "65_digits": KEY_HEX + b"0\n",
    "non_hex_digit": KEY_HEX[:10] + b"g" + KEY_HEX[11:],
    "space_inside": KEY_HEX[:32] + b" " + KEY_HEX[32:],
    "vertical_tab": b"\v" + KEY_HEX,
    "nul_after": KEY_HEX + b"\0",
    "two_keys": KEY_HEX + b"\n" + KEY_HEX + b"\n",
    "too_long_4097": b"0" * 4097,
}


def write(name: str, seeds: dict) -> None:
    d = CORPUS / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    for seed, data in seeds.items():
        (d / seed).write_bytes(data)


def main() -> None:
    write("envelope", ENVELOPE)
    write("text_form", TEXT_FORM)
    write("base64", BASE64)
    write("base64url", BASE64URL)
    write("master_key", MASTER_KEY)


if __name__ == "__main__":
    main()
