"""The Vault emulator's auth methods: AppRole, Kubernetes and JWT logins, token TTL
and max TTL, renew-self, expiry enforced on Transit calls, per-endpoint counters."""
import base64
import time

import pytest

from kms_emulators import vault

import kmshttp


def post(emu, path, body=None, headers=None):
    return kmshttp.request(emu.url, "POST", "/v1/" + path, body if body is not None else {}, headers or {})


def encrypt(emu, token, headers=None):
    return post(emu, "transit/encrypt/pg-envelope", {"plaintext": base64.b64encode(b"x").decode()},
                {"X-Vault-Token": token, **(headers or {})})


@pytest.fixture
def emu():
    e = vault.start(keys=("pg-envelope",))
    yield e
    e.stop()


def test_approle_login_shape_and_token_use(emu):
    role_id, secret_id = emu.add_approle("pg", ttl=120, max_ttl=600)
    r = post(emu, "auth/approle/login", {"role_id": role_id, "secret_id": secret_id})
    assert r.status == 200, r
    auth = r.json["auth"]
    assert auth["client_token"].startswith("hvs.") and auth["renewable"] is True
    assert 119 <= auth["lease_duration"] <= 120
    assert auth["metadata"] == {"role_name": "pg"} and r.json["data"] is None
    assert encrypt(emu, auth["client_token"]).status == 200
    assert emu.calls("approle/login") == 1 and emu.calls("encrypt") == 1
    assert auth["client_token"] in emu.issued_tokens()


@pytest.mark.parametrize("body, message", [
    ({"role_id": "nope", "secret_id": "x"}, "invalid role or secret ID"),
    ({"secret_id": "x"}, "missing role_id"),
    ({"role_id": "R"}, "missing secret_id"),
])
def test_approle_refusals(emu, body, message):
    emu.add_approle("pg", role_id="R", secret_id="S")
    r = post(emu, "auth/approle/login", body)
    assert r.status == 400 and r.json == {"errors": [message]}
    assert emu.errors("approle/login") == 1 and emu.issued_tokens() == []


def test_wrong_secret_id_is_refused_without_echo(emu):
    role_id, _ = emu.add_approle("pg")
    r = post(emu, "auth/approle/login", {"role_id": role_id, "secret_id": "wrong-secret-id-123"})
    assert r.status == 400 and r.json == {"errors": ["invalid role or secret ID"]}
    assert b"wrong-secret-id-123" not in r.body


@pytest.mark.parametrize("method", ["kubernetes", "jwt"])
def test_role_and_jwt_logins(emu, method):
    add = emu.add_kubernetes_role if method == "kubernetes" else emu.add_jwt_role
    add("app", "eyJhbGciOiJSUzI1NiJ9.payload.sig", mount=f"{method}-prod")
    ok = post(emu, f"auth/{method}-prod/login", {"role": "app", "jwt": "eyJhbGciOiJSUzI1NiJ9.payload.sig"})
    assert ok.status == 200 and encrypt(emu, ok.json["auth"]["client_token"]).status == 200
    bad = post(emu, f"auth/{method}-prod/login", {"role": "app", "jwt": "eyJ.other.sig"})
    if method == "kubernetes":
        assert bad.status == 403 and bad.json == {"errors": ["permission denied"]}
    else:
        assert bad.status == 400 and bad.json["errors"][0].startswith("error validating token")
    unknown = post(emu, f"auth/{method}-prod/login", {"role": "nope", "jwt": "eyJ.other.sig"})
    assert unknown.status == 400 and "nope" in unknown.json["errors"][0]
    # The default mount is not enabled: Vault's "no handler for route".
    r = post(emu, f"auth/{method}/login", {"role": "app", "jwt": "x"})
    assert r.status == 404 and "no handler for route" in r.json["errors"][0]
    assert emu.calls(f"{method}-prod/login") == 3 and emu.errors(f"{method}-prod/login") == 2


def test_expired_token_is_permission_denied_on_transit(emu):
    emu.add_approle("pg", role_id="R", secret_id="S", ttl=1, max_ttl=10)
    token = post(emu, "auth/approle/login", {"role_id": "R", "secret_id": "S"}).json["auth"]["client_token"]
    assert encrypt(emu, token).status == 200
    time.sleep(1.1)
    r = encrypt(emu, token)
    assert r.status == 403 and r.json == {"errors": ["permission denied"]}
    assert emu.rejected("encrypt") == 1


def test_expire_and_revoke_helpers(emu):
    emu.add_approle("pg", role_id="R", secret_id="S")
    token = post(emu, "auth/approle/login", {"role_id": "R", "secret_id": "S"}).json["auth"]["client_token"]
    emu.expire_tokens()
    assert encrypt(emu, token).json == {"errors": ["permission denied"]}
    emu.revoke_tokens()
    assert "invalid token" in encrypt(emu, token).json["errors"][0]
    # The static token is untouched.
    assert encrypt(emu, "emulator-root-token").status == 200


def test_renew_self_extends_up_to_max_ttl(emu):
    emu.add_approle("pg", role_id="R", secret_id="S", ttl=2, max_ttl=4)
    token = post(emu, "auth/approle/login", {"role_id": "R", "secret_id": "S"}).json["auth"]["client_token"]
    time.sleep(1.2)
    r = post(emu, "auth/token/renew-self", {"increment": "2s"}, {"X-Vault-Token": token})
    assert r.status == 200 and r.json["auth"]["client_token"] == token
    assert r.json["auth"]["lease_duration"] in (1, 2) and r.json["warnings"] is None
    time.sleep(1.2)
    assert encrypt(emu, token).status == 200  # past the first TTL, renewed
    r = post(emu, "auth/token/renew-self", {"increment": 2}, {"X-Vault-Token": token})
    assert r.status == 200 and r.json["auth"]["lease_duration"] in (1, 2)  # ~1.6 s left of the max TTL
    assert "max_ttl" in r.json["warnings"][0]
    time.sleep(1.7)
    assert encrypt(emu, token).status == 403  # past the max TTL
    r = post(emu, "auth/token/renew-self", {"increment": "2s"}, {"X-Vault-Token": token})
    assert r.status == 403 and emu.rejected("renew-self") == 1 and emu.calls("renew-self") == 2


def test_renew_self_refusals(emu):
    emu.add_approle("fixed", role_id="F", secret_id="S", renewable=False)
    emu.add_approle("pg", role_id="R", secret_id="S")
    fixed = post(emu, "auth/approle/login", {"role_id": "F", "secret_id": "S"}).json["auth"]
    assert fixed["renewable"] is False
    r = post(emu, "auth/token/renew-self", {}, {"X-Vault-Token": fixed["client_token"]})
    assert r.status == 400 and r.json == {"errors": ["lease is not renewable"]}
    token = post(emu, "auth/approle/login", {"role_id": "R", "secret_id": "S"}).json["auth"]["client_token"]
    emu.refuse_renewals = True
    r = post(emu, "auth/token/renew-self", {}, {"X-Vault-Token": token})
    assert r.status == 403 and r.json == {"errors": ["permission denied"]}
    r = post(emu, "auth/token/renew-self", {}, {"X-Vault-Token": "unknown"})
    assert r.status == 403 and "invalid token" in r.json["errors"][0]


def test_login_respects_namespace():
    e = vault.start(keys=("pg-envelope",), namespace="team-a")
    try:
        e.add_approle("pg", role_id="R", secret_id="S")
        assert post(e, "auth/approle/login", {"role_id": "R", "secret_id": "S"}).status == 403
        r = post(e, "auth/approle/login", {"role_id": "R", "secret_id": "S"}, {"X-Vault-Namespace": "team-a"})
        assert r.status == 200
        assert encrypt(e, r.json["auth"]["client_token"], {"X-Vault-Namespace": "team-a"}).status == 200
    finally:
        e.stop()
