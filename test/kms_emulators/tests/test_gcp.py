import base64
import time

import pytest

from kms_emulators import gcp
from kms_emulators.crc32c import crc32c

import kmshttp

TOKEN = "emulator-gcp-token"
KEY = "projects/emulator-project/locations/global/keyRings/emulator-ring/cryptoKeys/pg-envelope"


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def auth(token=TOKEN):
    return {"Authorization": f"Bearer {token}"}


def call(emu, name, verb, body, token=TOKEN, headers=None):
    h = auth(token) if token is not None else {}
    h.update(headers or {})
    return kmshttp.request(emu.url, "POST", f"/v1/{name}:{verb}", body, h)


def encrypt(emu, pt=b"data encryption key", aad=None, name=KEY, token=TOKEN, with_crc=True):
    body = {"plaintext": b64(pt)}
    if with_crc:
        body["plaintextCrc32c"] = str(crc32c(pt))
    if aad is not None:
        body["additionalAuthenticatedData"] = b64(aad)
        if with_crc:
            body["additionalAuthenticatedDataCrc32c"] = str(crc32c(aad))
    return call(emu, name, "encrypt", body, token)


def test_metadata_token_then_encrypt_decrypt_with_checksums(gcp_emulator):
    emu = gcp_emulator
    # metadata server: header required
    r = kmshttp.request(emu.url, "GET", gcp.METADATA_TOKEN_PATH)
    assert r.status == 403 and b"Metadata-Flavor" in r.body
    r = kmshttp.request(emu.url, "GET", gcp.METADATA_TOKEN_PATH,
                        headers={"Metadata-Flavor": "Google"})
    assert r.status == 200 and r.headers["Metadata-Flavor"] == "Google"
    tok = r.json
    assert tok["token_type"] == "Bearer" and 3500 < tok["expires_in"] <= 3599
    # the same cached token comes back on the next call
    again = kmshttp.request(emu.url, "GET", gcp.METADATA_TOKEN_PATH,
                            headers={"Metadata-Flavor": "Google"}).json
    assert again["access_token"] == tok["access_token"]

    pt, aad = b"\x00\x01 32-byte DEK goes here ......", b"pg_envelope:public.t.c"
    r = encrypt(emu, pt, aad, token=tok["access_token"])
    assert r.status == 200, r
    enc = r.json
    assert enc["name"] == KEY + "/cryptoKeyVersions/1"
    assert enc["verifiedPlaintextCrc32c"] is True
    assert enc["verifiedAdditionalAuthenticatedDataCrc32c"] is True
    assert enc["protectionLevel"] == "SOFTWARE"
    ct = base64.b64decode(enc["ciphertext"])
    assert enc["ciphertextCrc32c"] == str(crc32c(ct))      # decimal string (int64 JSON)

    r = call(emu, KEY, "decrypt", {"ciphertext": enc["ciphertext"],
                                   "ciphertextCrc32c": enc["ciphertextCrc32c"],
                                   "additionalAuthenticatedData": b64(aad),
                                   "additionalAuthenticatedDataCrc32c": str(crc32c(aad))},
             tok["access_token"])
    assert r.status == 200, r
    dec = r.json
    assert base64.b64decode(dec["plaintext"]) == pt
    assert dec["plaintextCrc32c"] == str(crc32c(pt))
    assert dec["usedPrimary"] is True and dec["protectionLevel"] == "SOFTWARE"
    assert emu.calls("metadata_token") == 2 and emu.rejected("metadata_token") == 1
    assert emu.calls("encrypt") == 1 and emu.calls("decrypt") == 1


def test_false_booleans_are_omitted_like_proto3_json(gcp_emulator):
    r = encrypt(gcp_emulator, with_crc=False)
    assert r.status == 200
    assert "verifiedPlaintextCrc32c" not in r.json
    assert "verifiedAdditionalAuthenticatedDataCrc32c" not in r.json
    emu = gcp.start(keys=("k",), emit_defaults=True)
    try:
        r = encrypt(emu, name=emu.key_name("k"), with_crc=False)
        assert r.json["verifiedPlaintextCrc32c"] is False
        assert r.json["verifiedAdditionalAuthenticatedDataCrc32c"] is False
    finally:
        emu.stop()


def test_crc_mismatches_are_invalid_argument(gcp_emulator):
    emu = gcp_emulator
    r = call(emu, KEY, "encrypt", {"plaintext": b64(b"abc"), "plaintextCrc32c": str(crc32c(b"abd"))})
    assert r.status == 400
    assert r.json["error"]["status"] == "INVALID_ARGUMENT" and r.json["error"]["code"] == 400
    assert "plaintext_crc32c" in r.json["error"]["message"]
    r = call(emu, KEY, "encrypt", {"plaintext": b64(b"abc"), "additionalAuthenticatedData": b64(b"x"),
                                   "additionalAuthenticatedDataCrc32c": "12345"})
    assert r.status == 400 and r.json["error"]["status"] == "INVALID_ARGUMENT"
    enc = encrypt(emu).json
    r = call(emu, KEY, "decrypt", {"ciphertext": enc["ciphertext"],
                                   "ciphertextCrc32c": str((int(enc["ciphertextCrc32c"]) + 1)
                                                           % 2**32)})
    assert r.status == 400 and "ciphertext_crc32c" in r.json["error"]["message"]
    # numbers (not strings) are accepted too, as proto3 JSON allows
    r = call(emu, KEY, "decrypt", {"ciphertext": enc["ciphertext"],
                                   "ciphertextCrc32c": int(enc["ciphertextCrc32c"])})
    assert r.status == 200


def test_aad_mismatch_and_tampering_fail(gcp_emulator):
    emu = gcp_emulator
    enc = encrypt(emu, b"dek", b"ctx-1").json
    r = call(emu, KEY, "decrypt", {"ciphertext": enc["ciphertext"],
                                   "additionalAuthenticatedData": b64(b"ctx-2")})
    assert r.status == 400 and r.json["error"]["status"] == "INVALID_ARGUMENT"
    assert "Decryption failed" in r.json["error"]["message"]
    raw = bytearray(base64.b64decode(enc["ciphertext"]))
    raw[-3] ^= 0x40
    r = call(emu, KEY, "decrypt", {"ciphertext": b64(bytes(raw)),
                                   "additionalAuthenticatedData": b64(b"ctx-1")})
    assert r.status == 400
    # a ciphertext from another key does not decrypt
    other = emu.create_crypto_key("other")
    r = call(emu, other, "decrypt", {"ciphertext": enc["ciphertext"],
                                     "additionalAuthenticatedData": b64(b"ctx-1")})
    assert r.status == 400


def test_auth_failures(gcp_emulator):
    emu = gcp_emulator
    r = encrypt(emu, token=None)
    assert r.status == 401 and r.json["error"]["status"] == "UNAUTHENTICATED"
    assert "WWW-Authenticate" in r.headers
    r = encrypt(emu, token="ya29.forged")
    assert r.status == 401 and r.json["error"]["status"] == "UNAUTHENTICATED"
    assert emu.rejected("encrypt") == 2 and emu.calls() == 0


def test_permission_denied_token():
    emu = gcp.start(keys=("k",), denied_tokens=("no-iam-role",))
    try:
        r = encrypt(emu, name=emu.key_name("k"), token="no-iam-role")
        assert r.status == 403
        assert r.json["error"] == {
            "code": 403, "status": "PERMISSION_DENIED",
            "message": f"Permission 'cloudkms.cryptoKeyVersions.useToEncrypt' denied on resource "
                       f"'{emu.key_name('k')}' (or it may not exist)."}
    finally:
        emu.stop()


def test_expired_metadata_token_is_refused():
    emu = gcp.start(keys=("k",), token_ttl=1)
    try:
        tok = kmshttp.request(emu.url, "GET", gcp.METADATA_TOKEN_PATH,
                              headers={"Metadata-Flavor": "Google"}).json
        assert tok["expires_in"] <= 1
        assert encrypt(emu, name=emu.key_name("k"), token=tok["access_token"]).status == 200
        emu.expire_tokens()
        r = encrypt(emu, name=emu.key_name("k"), token=tok["access_token"])
        assert r.status == 401
        # a fresh one is handed out afterwards
        tok2 = kmshttp.request(emu.url, "GET", gcp.METADATA_TOKEN_PATH,
                               headers={"Metadata-Flavor": "Google"}).json
        assert tok2["access_token"] != tok["access_token"]
        short = emu.issue_token(ttl=0.2)
        assert encrypt(emu, name=emu.key_name("k"), token=short).status == 200
        time.sleep(0.3)
        assert encrypt(emu, name=emu.key_name("k"), token=short).status == 401
    finally:
        emu.stop()


def test_unknown_key_and_route(gcp_emulator):
    r = encrypt(gcp_emulator, name=KEY.replace("pg-envelope", "missing"))
    assert r.status == 404 and r.json["error"]["status"] == "NOT_FOUND"
    r = kmshttp.request(gcp_emulator.url, "POST", "/v1/projects/p:explode", {}, auth())
    assert r.status == 404


def test_versions_primary_and_disabled(gcp_emulator):
    emu = gcp_emulator
    old = encrypt(emu, b"dek").json
    assert emu.add_version(KEY) == 2
    new = encrypt(emu, b"dek").json
    assert new["name"].endswith("/cryptoKeyVersions/2")
    dec_old = call(emu, KEY, "decrypt", {"ciphertext": old["ciphertext"]}).json
    assert base64.b64decode(dec_old["plaintext"]) == b"dek"
    assert "usedPrimary" not in dec_old              # false -> omitted
    assert call(emu, KEY, "decrypt", {"ciphertext": new["ciphertext"]}).json["usedPrimary"] is True
    # encrypt with an explicit version
    v1 = call(emu, KEY + "/cryptoKeyVersions/1", "encrypt", {"plaintext": b64(b"x")})
    assert v1.status == 200 and v1.json["name"].endswith("/cryptoKeyVersions/1")
    emu.set_version_state(KEY, 1, enabled=False)
    r = call(emu, KEY, "decrypt", {"ciphertext": old["ciphertext"]})
    assert r.status == 400 and r.json["error"]["status"] == "FAILED_PRECONDITION"


def test_create_ring_and_key_over_rest(gcp_emulator):
    emu = gcp_emulator
    base = "/v1/projects/p1/locations/europe-west1/keyRings"
    r = kmshttp.request(emu.url, "POST", base + "?keyRingId=r1", {}, auth())
    assert r.status == 200 and r.json["name"].endswith("keyRings/r1")
    r = kmshttp.request(emu.url, "POST", base + "/r1/cryptoKeys?cryptoKeyId=k1",
                        {"purpose": "ENCRYPT_DECRYPT"}, auth())
    assert r.status == 200 and r.json["primary"]["name"].endswith("cryptoKeys/k1/cryptoKeyVersions/1")
    assert kmshttp.request(emu.url, "POST", base + "/r1/cryptoKeys?cryptoKeyId=k1", {},
                           auth()).status == 409
    name = "projects/p1/locations/europe-west1/keyRings/r1/cryptoKeys/k1"
    assert kmshttp.request(emu.url, "GET", "/v1/" + name, headers=auth()).status == 200
    assert encrypt(emu, name=name).status == 200


def test_throttling_and_5xx_shapes(gcp_emulator):
    emu = gcp_emulator
    emu.inject_throttle(count=1)
    emu.inject_http_error(503, count=1)
    r = encrypt(emu)
    assert r.status == 429 and r.json["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert r.json["error"]["code"] == 429
    r = encrypt(emu)
    assert r.status == 503 and r.json["error"]["status"] == "UNAVAILABLE"
    assert encrypt(emu).status == 200


@pytest.mark.parametrize("bad", ["***", 5])
def test_bad_base64_is_invalid_argument(gcp_emulator, bad):
    r = call(gcp_emulator, KEY, "encrypt", {"plaintext": bad})
    assert r.status == 400 and r.json["error"]["status"] == "INVALID_ARGUMENT"


def test_urlsafe_base64_accepted(gcp_emulator):
    pt = b"\xfb\xff\xfe"
    r = call(gcp_emulator, KEY, "encrypt", {"plaintext": base64.urlsafe_b64encode(pt).decode()})
    assert r.status == 200
    d = call(gcp_emulator, KEY, "decrypt", {"ciphertext": r.json["ciphertext"]}).json
    assert base64.b64decode(d["plaintext"]) == pt
