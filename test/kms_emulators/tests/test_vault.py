import base64

import pytest

from kms_emulators import vault

import kmshttp

TOKEN = "emulator-root-token"
H = {"X-Vault-Token": TOKEN}


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def post(emu, path, body=None, headers=H, **kw):
    return kmshttp.request(emu.url, "POST", "/v1/" + path, body if body is not None else {},
                           headers, **kw)


def test_encrypt_decrypt_round_trip(vault_emulator):
    r = post(vault_emulator, "transit/encrypt/pg-envelope", {"plaintext": b64(b"secret dek")})
    assert r.status == 200, r
    data = r.json["data"]
    assert data["key_version"] == 1
    assert data["ciphertext"].startswith("vault:v1:")
    assert "request_id" in r.json and r.headers["Content-Type"] == "application/json"
    r = post(vault_emulator, "transit/decrypt/pg-envelope", {"ciphertext": data["ciphertext"]})
    assert r.status == 200
    assert base64.b64decode(r.json["data"]["plaintext"]) == b"secret dek"


def test_bearer_authorization_header_also_accepted(vault_emulator):
    r = post(vault_emulator, "transit/encrypt/pg-envelope", {"plaintext": b64(b"x")},
             {"Authorization": f"Bearer {TOKEN}"})
    assert r.status == 200


@pytest.mark.parametrize("headers", [{}, {"X-Vault-Token": "not-the-token"}])
def test_bad_or_missing_token_is_403(vault_emulator, headers):
    r = post(vault_emulator, "transit/encrypt/pg-envelope", {"plaintext": b64(b"x")}, headers)
    assert r.status == 403
    assert r.json == {"errors": ["2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n"]}
    assert vault_emulator.rejected("encrypt") == 1 and vault_emulator.calls() == 0


def test_namespace_must_match_when_configured():
    emu = vault.start(keys=("k",), namespace="team-a")
    try:
        body = {"plaintext": b64(b"x")}
        assert post(emu, "transit/encrypt/k", body).status == 403
        assert post(emu, "transit/encrypt/k", body, {**H, "X-Vault-Namespace": "team-b"}).status == 403
        assert post(emu, "transit/encrypt/k", body, {**H, "X-Vault-Namespace": "team-a/"}).status == 200
    finally:
        emu.stop()


def test_namespace_header_refused_when_none_configured(vault_emulator):
    r = post(vault_emulator, "transit/encrypt/pg-envelope", {"plaintext": b64(b"x")},
             {**H, "X-Vault-Namespace": "elsewhere"})
    assert r.status == 403


def test_unknown_key_is_400_encryption_key_not_found(vault_emulator):
    for op, body in (("encrypt", {"plaintext": b64(b"x")}),
                     ("decrypt", {"ciphertext": "vault:v1:AAAA"})):
        r = post(vault_emulator, f"transit/{op}/nope", body)
        assert r.status == 400
        assert r.json == {"errors": ["encryption key not found"]}


def test_upsert_creates_key_on_encrypt_when_enabled():
    emu = vault.start(allow_upsert=True)
    try:
        assert post(emu, "transit/encrypt/fresh", {"plaintext": b64(b"x")}).status == 200
        assert emu.key_info("fresh")["latest_version"] == 1
    finally:
        emu.stop()


def test_tampered_ciphertext_fails_authentication(vault_emulator):
    ct = post(vault_emulator, "transit/encrypt/pg-envelope",
              {"plaintext": b64(b"x" * 32)}).json["data"]["ciphertext"]
    raw = bytearray(base64.b64decode(ct.split(":", 2)[2]))
    raw[-1] ^= 1
    bad = "vault:v1:" + base64.b64encode(bytes(raw)).decode()
    r = post(vault_emulator, "transit/decrypt/pg-envelope", {"ciphertext": bad})
    assert r.status == 400
    assert r.json == {"errors": ["cipher: message authentication failed"]}
    r = post(vault_emulator, "transit/decrypt/pg-envelope", {"ciphertext": "garbage"})
    assert r.status == 400 and "no prefix" in r.json["errors"][0]


def test_ciphertext_of_one_key_does_not_open_under_another(vault_emulator):
    vault_emulator.create_key("other")
    ct = post(vault_emulator, "transit/encrypt/pg-envelope",
              {"plaintext": b64(b"x")}).json["data"]["ciphertext"]
    r = post(vault_emulator, "transit/decrypt/other", {"ciphertext": ct})
    assert r.status == 400 and r.json["errors"] == ["cipher: message authentication failed"]


def test_derived_key_binds_context(vault_emulator):
    emu = vault_emulator
    r = post(emu, "transit/keys/derived", {"type": "aes256-gcm96", "derived": True})
    assert r.status == 200 and r.json["data"]["derived"] is True
    ctx1, ctx2 = b64(b"table=t1"), b64(b"table=t2")
    r = post(emu, "transit/encrypt/derived", {"plaintext": b64(b"dek")})
    assert r.status == 400 and "context" in r.json["errors"][0]
    ct = post(emu, "transit/encrypt/derived",
              {"plaintext": b64(b"dek"), "context": ctx1}).json["data"]["ciphertext"]
    ok = post(emu, "transit/decrypt/derived", {"ciphertext": ct, "context": ctx1})
    assert ok.status == 200 and base64.b64decode(ok.json["data"]["plaintext"]) == b"dek"
    bad = post(emu, "transit/decrypt/derived", {"ciphertext": ct, "context": ctx2})
    assert bad.status == 400 and bad.json["errors"] == ["cipher: message authentication failed"]


def test_context_is_ignored_for_non_derived_keys_like_real_vault(vault_emulator):
    ct = post(vault_emulator, "transit/encrypt/pg-envelope",
              {"plaintext": b64(b"dek"), "context": b64(b"a")}).json["data"]["ciphertext"]
    r = post(vault_emulator, "transit/decrypt/pg-envelope",
             {"ciphertext": ct, "context": b64(b"b")})
    assert r.status == 200


def test_associated_data_binds_non_derived_key(vault_emulator):
    ct = post(vault_emulator, "transit/encrypt/pg-envelope",
              {"plaintext": b64(b"dek"), "associated_data": b64(b"row-1")}).json["data"]["ciphertext"]
    assert post(vault_emulator, "transit/decrypt/pg-envelope",
                {"ciphertext": ct, "associated_data": b64(b"row-1")}).status == 200
    assert post(vault_emulator, "transit/decrypt/pg-envelope",
                {"ciphertext": ct, "associated_data": b64(b"row-2")}).status == 400


def test_rotate_rewrap_and_min_decryption_version(vault_emulator):
    emu = vault_emulator
    ct1 = post(emu, "transit/encrypt/pg-envelope", {"plaintext": b64(b"dek")}).json["data"]["ciphertext"]
    r = post(emu, "transit/keys/pg-envelope/rotate")
    assert r.status == 200 and r.json["data"]["latest_version"] == 2
    ct2 = post(emu, "transit/encrypt/pg-envelope", {"plaintext": b64(b"dek")}).json["data"]
    assert ct2["ciphertext"].startswith("vault:v2:") and ct2["key_version"] == 2
    rw = post(emu, "transit/rewrap/pg-envelope", {"ciphertext": ct1})
    assert rw.status == 200 and rw.json["data"]["ciphertext"].startswith("vault:v2:")
    assert rw.json["data"]["key_version"] == 2
    # old ciphertext still decrypts until min_decryption_version moves
    assert post(emu, "transit/decrypt/pg-envelope", {"ciphertext": ct1}).status == 200
    cfg = post(emu, "transit/keys/pg-envelope/config", {"min_decryption_version": 2})
    assert cfg.status == 200 and cfg.json["data"]["min_decryption_version"] == 2
    r = post(emu, "transit/decrypt/pg-envelope", {"ciphertext": ct1})
    assert r.status == 400 and "disallowed by policy" in r.json["errors"][0]
    r = post(emu, "transit/decrypt/pg-envelope", {"ciphertext": rw.json["data"]["ciphertext"]})
    assert r.status == 200 and base64.b64decode(r.json["data"]["plaintext"]) == b"dek"
    # a version that does not exist yet
    fut = "vault:v9:" + ct1.split(":", 2)[2]
    assert post(emu, "transit/decrypt/pg-envelope", {"ciphertext": fut}).json["errors"] == \
        ["invalid key version"]


def test_datakey_plaintext_and_wrapped(vault_emulator):
    emu = vault_emulator
    r = post(emu, "transit/datakey/plaintext/pg-envelope", {"bits": 256})
    assert r.status == 200
    dk = base64.b64decode(r.json["data"]["plaintext"])
    assert len(dk) == 32 and r.json["data"]["ciphertext"].startswith("vault:v1:")
    back = post(emu, "transit/decrypt/pg-envelope", {"ciphertext": r.json["data"]["ciphertext"]})
    assert base64.b64decode(back.json["data"]["plaintext"]) == dk
    w = post(emu, "transit/datakey/wrapped/pg-envelope", {"bits": 512})
    assert w.status == 200 and "plaintext" not in w.json["data"]
    back = post(emu, "transit/decrypt/pg-envelope", {"ciphertext": w.json["data"]["ciphertext"]})
    assert len(base64.b64decode(back.json["data"]["plaintext"])) == 64
    assert post(emu, "transit/datakey/plaintext/pg-envelope", {"bits": 100}).status == 400
    assert emu.calls("datakey") == 3


def test_disabled_key_denies_decrypt_but_not_encrypt(vault_emulator):
    emu = vault_emulator
    ct = post(emu, "transit/encrypt/pg-envelope", {"plaintext": b64(b"dek")}).json["data"]["ciphertext"]
    emu.disable_key("pg-envelope")
    r = post(emu, "transit/decrypt/pg-envelope", {"ciphertext": ct})
    assert r.status == 403 and r.json == {"errors": ["permission denied"]}
    assert post(emu, "transit/rewrap/pg-envelope", {"ciphertext": ct}).status == 403
    assert post(emu, "transit/encrypt/pg-envelope", {"plaintext": b64(b"x")}).status == 200
    emu.enable_key("pg-envelope")
    assert post(emu, "transit/decrypt/pg-envelope", {"ciphertext": ct}).status == 200


def test_key_create_read_and_other_mount(vault_emulator):
    emu = vault_emulator
    r = kmshttp.request(emu.url, "GET", "/v1/transit/keys/pg-envelope", headers=H)
    assert r.status == 200 and r.json["data"]["type"] == "aes256-gcm96"
    assert kmshttp.request(emu.url, "GET", "/v1/transit/keys/missing", headers=H).status == 404
    assert post(emu, "transit/keys/bad", {"type": "rsa-9999"}).status == 400
    # chacha20 key, PUT works like POST
    r = kmshttp.request(emu.url, "PUT", "/v1/transit/keys/cc", {"type": "chacha20-poly1305"}, H)
    assert r.status == 200
    ct = post(emu, "transit/encrypt/cc", {"plaintext": b64(b"z")}).json["data"]["ciphertext"]
    assert base64.b64decode(post(emu, "transit/decrypt/cc", {"ciphertext": ct})
                            .json["data"]["plaintext"]) == b"z"
    # unknown mount -> no handler
    r = post(emu, "other/encrypt/pg-envelope", {"plaintext": b64(b"x")})
    assert r.status == 404 and "no handler for route" in r.json["errors"][0]
    emu.create_key("k2", mount="kms/transit")
    assert post(emu, "kms/transit/encrypt/k2", {"plaintext": b64(b"x")}).status == 200


def test_bad_input_shapes(vault_emulator):
    emu = vault_emulator
    assert post(emu, "transit/encrypt/pg-envelope", {}).json["errors"] == \
        ["missing plaintext to encrypt"]
    r = post(emu, "transit/encrypt/pg-envelope", {"plaintext": "not base64!"})
    assert r.status == 400 and "base64" in r.json["errors"][0]
    r = kmshttp.request(emu.url, "POST", "/v1/transit/encrypt/pg-envelope", b"{not json", H)
    assert r.status == 400


def test_health_needs_no_token(vault_emulator):
    r = kmshttp.request(vault_emulator.url, "GET", "/v1/sys/health")
    assert r.status == 200 and r.json["initialized"] and not r.json["sealed"]


def test_5xx_fault_shape(vault_emulator):
    vault_emulator.inject_http_error(500)
    r = post(vault_emulator, "transit/encrypt/pg-envelope", {"plaintext": b64(b"x")})
    assert r.status == 500 and r.json == {"errors": ["internal error"]}
