import base64
import os

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from kms_emulators import azure
from kms_emulators.azure import b64url, b64url_decode

import kmshttp

TOKEN = "emulator-azure-token"
API = "api-version=7.4"


def auth(token=TOKEN):
    return {"Authorization": f"Bearer {token}"} if token is not None else {}


def kv(emu, path, body=None, token=TOKEN, method="POST", query=API):
    return kmshttp.request(emu.url, method, f"{path}?{query}" if query else path, body,
                           auth(token))


def wrap(emu, name, data, alg="RSA-OAEP-256", version=None, token=TOKEN, op="wrapkey"):
    path = f"/keys/{name}/{version}/{op}" if version else f"/keys/{name}/{op}"
    return kv(emu, path, {"alg": alg, "value": b64url(data)}, token)


def imds(emu, resource="https://vault.azure.net", headers=None):
    q = "api-version=2018-02-01" + (f"&resource={resource}" if resource else "")
    return kmshttp.request(emu.url, "GET", f"{azure.IMDS_PATH}?{q}",
                           headers={"Metadata": "true"} if headers is None else headers)


def test_imds_token_then_rsa_oaep_256_round_trip(azure_emulator):
    emu = azure_emulator
    assert imds(emu, headers={}).json == {"error": "invalid_request",
                                          "error_description": "Required metadata header not specified"}
    r = imds(emu)
    assert r.status == 200
    tok = r.json
    assert tok["token_type"] == "Bearer" and tok["resource"] == "https://vault.azure.net"
    assert int(tok["expires_in"]) > 3600 and isinstance(tok["expires_in"], str)

    dek = os.urandom(32)
    r = wrap(emu, "pg-envelope", dek, token=tok["access_token"])
    assert r.status == 200, r
    version = emu.versions("pg-envelope")[0]
    assert r.json["kid"] == f"https://127.0.0.1:{emu.port}/keys/pg-envelope/{version}"
    wrapped = b64url_decode(r.json["value"])
    assert len(wrapped) == 256 and "=" not in r.json["value"]
    r = wrap(emu, "pg-envelope", wrapped, version=version, token=tok["access_token"], op="unwrapkey")
    assert r.status == 200 and b64url_decode(r.json["value"]) == dek
    assert emu.calls("wrapkey") == 1 and emu.calls("unwrapkey") == 1
    assert emu.calls("imds_token") == 1 and emu.rejected("imds_token") == 1


def test_wrap_with_public_jwk_locally_unwrap_in_emulator(azure_emulator):
    """Proves the emulator's RSA-OAEP-256 is the standard one (SHA-256 + MGF1-SHA-256)."""
    emu = azure_emulator
    r = kv(emu, "/keys/pg-envelope", method="GET")
    assert r.status == 200
    jwk = r.json["key"]
    assert jwk["kty"] == "RSA" and "wrapKey" in jwk["key_ops"]
    n = int.from_bytes(b64url_decode(jwk["n"]), "big")
    e = int.from_bytes(b64url_decode(jwk["e"]), "big")
    assert n.bit_length() == 2048 and e == 65537
    pub = rsa.RSAPublicNumbers(e, n).public_key()
    dek = os.urandom(32)
    oaep256 = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    r = wrap(emu, "pg-envelope", pub.encrypt(dek, oaep256), op="unwrapkey")
    assert r.status == 200 and b64url_decode(r.json["value"]) == dek
    # RSA-OAEP (SHA-1) ciphertext must not unwrap as RSA-OAEP-256
    oaep1 = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    r = wrap(emu, "pg-envelope", pub.encrypt(dek, oaep1), op="unwrapkey")
    assert r.status == 400 and r.json["error"]["code"] == "BadParameter"
    r = wrap(emu, "pg-envelope", pub.encrypt(dek, oaep1), alg="RSA-OAEP", op="unwrapkey")
    assert r.status == 200 and b64url_decode(r.json["value"]) == dek


def test_a256kw_matches_rfc3394_vector():
    # RFC 3394 section 4.6: 256-bit key data wrapped with a 256-bit KEK.
    kek = bytes(range(32))
    data = bytes.fromhex("00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F")
    expected = bytes.fromhex("28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326"
                             "CBC7F0E71A99F43BFB988B9B7A02DD21")
    emu = azure.AzureKeyVaultEmulator()
    emu.create_key("kek", kty="oct-HSM", material=kek)
    emu.start()
    try:
        r = wrap(emu, "kek", data, alg="A256KW")
        assert r.status == 200, r
        assert b64url_decode(r.json["value"]) == expected
        r = wrap(emu, "kek", expected, alg="A256KW", op="unwrapkey")
        assert b64url_decode(r.json["value"]) == data
        # RFC 3394 4.3: 128-bit data, 256-bit KEK
        r = wrap(emu, "kek", bytes.fromhex("00112233445566778899AABBCCDDEEFF"), alg="A256KW")
        assert b64url_decode(r.json["value"]) == bytes.fromhex(
            "64E8C3F9CE0F5BA263E9777905818A2A93C8191E7D6E8AE7")
    finally:
        emu.stop()


def test_a256kw_failures(azure_emulator):
    emu = azure_emulator
    r = wrap(emu, "pg-envelope-oct", b"\x01" * 31, alg="A256KW")        # not a multiple of 8
    assert r.status == 400 and r.json["error"]["code"] == "BadParameter"
    w = b64url_decode(wrap(emu, "pg-envelope-oct", b"\x02" * 32, alg="A256KW").json["value"])
    bad = bytes([w[0] ^ 1]) + w[1:]
    r = wrap(emu, "pg-envelope-oct", bad, alg="A256KW", op="unwrapkey")
    assert r.status == 400 and r.json["error"]["code"] == "BadParameter"
    # algorithm / key type mismatches
    assert wrap(emu, "pg-envelope-oct", b"\x02" * 32).status == 400            # RSA alg on oct
    assert wrap(emu, "pg-envelope", b"\x02" * 32, alg="A256KW").status == 400  # AES alg on RSA
    assert wrap(emu, "pg-envelope", b"\x02" * 32, alg="NOPE").status == 400


def test_auth_failures(azure_emulator):
    emu = azure_emulator
    r = wrap(emu, "pg-envelope", b"k" * 32, token=None)
    assert r.status == 401 and r.json["error"]["code"] == "Unauthorized"
    challenge = r.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer authorization="https://login.microsoftonline.com/')
    assert 'resource="https://vault.azure.net"' in challenge
    assert wrap(emu, "pg-envelope", b"k" * 32, token="forged").status == 401
    # an IMDS token for another audience is refused
    other = imds(emu, resource="https://storage.azure.com").json["access_token"]
    r = wrap(emu, "pg-envelope", b"k" * 32, token=other)
    assert r.status == 401 and "audience" in r.json["error"]["message"]
    emu.expire_tokens()
    good = imds(emu).json["access_token"]
    assert wrap(emu, "pg-envelope", b"k" * 32, token=good).status == 200
    emu.expire_tokens()
    assert wrap(emu, "pg-envelope", b"k" * 32, token=good).status == 401
    assert emu.rejected("wrapkey") == 4


def test_forbidden_token():
    emu = azure.start(keys=("k",), denied_tokens=("reader-only",))
    try:
        r = wrap(emu, "k", b"k" * 32, token="reader-only")
        assert r.status == 403 and r.json["error"]["code"] == "Forbidden"
    finally:
        emu.stop()


def test_key_not_found_and_disabled(azure_emulator):
    emu = azure_emulator
    r = wrap(emu, "missing", b"k" * 32)
    assert r.status == 404 and r.json["error"]["code"] == "KeyNotFound"
    r = wrap(emu, "pg-envelope", b"k" * 32, version="0" * 32)
    assert r.status == 404 and r.json["error"]["code"] == "KeyNotFound"
    wrapped = wrap(emu, "pg-envelope", b"k" * 32).json["value"]
    emu.set_enabled("pg-envelope", False)
    r = kv(emu, "/keys/pg-envelope/unwrapkey", {"alg": "RSA-OAEP-256", "value": wrapped})
    assert r.status == 403
    assert r.json["error"] == {"code": "Forbidden",
                               "message": "Operation unwrapKey is not allowed on a disabled key.",
                               "innererror": {"code": "KeyDisabled"}}


def test_bad_requests(azure_emulator):
    emu = azure_emulator
    r = kv(emu, "/keys/pg-envelope/wrapkey", {"alg": "RSA-OAEP-256", "value": "a+b/c=="})
    assert r.status == 400 and r.json["error"]["code"] == "BadParameter"
    assert kv(emu, "/keys/pg-envelope/wrapkey", {"value": "AAAA"}).status == 400
    r = kv(emu, "/keys/pg-envelope/wrapkey", {"alg": "RSA-OAEP-256", "value": "AAAA"}, query="")
    assert r.status == 400 and r.json["error"]["code"] == "BadParameter"
    r = wrap(emu, "pg-envelope", os.urandom(191))                 # > 190 bytes for OAEP-256/2048
    assert r.status == 400


def test_rotation_and_versionless_unwrap(azure_emulator):
    emu = azure_emulator
    v1 = emu.versions("pg-envelope")[0]
    w1 = wrap(emu, "pg-envelope", b"first-dek-32-bytes..............").json
    assert w1["kid"].endswith(v1)
    r = kv(emu, "/keys/pg-envelope/rotate", {})
    assert r.status == 200
    v2 = r.json["key"]["kid"].rsplit("/", 1)[1]
    assert v2 != v1 and emu.versions("pg-envelope") == [v1, v2]
    w2 = wrap(emu, "pg-envelope", b"second").json
    assert w2["kid"].endswith("/" + v2)
    # unwrap via the kid's version works for both; versionless means latest
    for w, ver, plain in ((w1, v1, b"first-dek-32-bytes.............."), (w2, v2, b"second")):
        r = kv(emu, f"/keys/pg-envelope/{ver}/unwrapkey", {"alg": "RSA-OAEP-256", "value": w["value"]})
        assert b64url_decode(r.json["value"]) == plain
    assert kv(emu, "/keys/pg-envelope/unwrapkey",
              {"alg": "RSA-OAEP-256", "value": w1["value"]}).status == 400
    # mixed-case operation segment as some SDKs send it
    r = kv(emu, f"/keys/pg-envelope/{v2}/unwrapKey", {"alg": "RSA-OAEP-256", "value": w2["value"]})
    assert r.status == 200


def test_create_over_rest(azure_emulator):
    emu = azure_emulator
    r = kv(emu, "/keys/new-oct/create", {"kty": "oct-HSM", "key_size": 256})
    assert r.status == 200 and r.json["key"]["kty"] == "oct-HSM"
    assert wrap(emu, "new-oct", b"\x00" * 32, alg="A256KW").status == 200
    assert kv(emu, "/keys/bad/create", {"kty": "EC"}).status == 400


def test_throttle_has_retry_after(azure_emulator):
    emu = azure_emulator
    emu.inject_throttle(count=1, retry_after=7)
    emu.inject_http_error(503, count=1)
    r = wrap(emu, "pg-envelope", b"k" * 32)
    assert r.status == 429 and r.headers["Retry-After"] == "7"
    assert r.json["error"]["code"] == "Throttled"
    r = wrap(emu, "pg-envelope", b"k" * 32)
    assert r.status == 503 and r.json["error"]["code"] == "ServiceUnavailable"
    assert wrap(emu, "pg-envelope", b"k" * 32).status == 200


def test_b64url_helpers():
    for n in range(0, 40):
        data = os.urandom(n)
        assert b64url_decode(b64url(data)) == data
    with pytest.raises(ValueError):
        b64url_decode("ab+/")
    assert b64url(b"\xfb\xff") == "-_8"
    assert base64.urlsafe_b64decode("-_8=") == b"\xfb\xff"
