"""Vault/OpenBao login methods of the vault-transit provider against the emulator
(test/kms_emulators/vault.py): AppRole, Kubernetes and JWT logins end to end, the
token renewed (renew-self) before it expires, a new login after a refused renewal,
at the max TTL and after a 403 to a login token, refused logins (28000) and
credential files others can read (F0000), option checks (22023), and neither the
login token, the secret ID nor the JWT in any error or in the server log.

The emulator's per-endpoint counters are the oracle: "<mount>/login", "renew-self",
"encrypt", "decrypt". The token is shared by the whole server (the credential
store, test_shared_credentials.py); the tests that count logins use one connection.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import psycopg2
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # <repo>/test
from kms_emulators import vault  # noqa: E402

from pgcluster import pg_error  # noqa: E402

SECRET_ID = "5ecre7-1d-0f-the-approle-9f3c"
K8S_JWT = "eyJhbGciOiJSUzI1NiIsImtpZCI6Ims4cyJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6ZGI6cGcifQ.k8s-sig"
OIDC_JWT = "eyJhbGciOiJSUzI1NiIsImtpZCI6Im9pZGMifQ.eyJzdWIiOiJwZy1lbnZlbG9wZSJ9.oidc-sig"
PLAIN = "patient 4711 has allergies"


@pytest.fixture
def pg(cluster_factory):
    c = cluster_factory.create("vaultauth", settings={"envelope.kms_request_timeout": "2s",
                                                      "envelope.kms_retry_budget": "5s"})
    c.sql("CREATE EXTENSION pg_envelope")
    return c


@pytest.fixture
def emu():
    e = vault.start(keys=("pg-envelope",))
    yield e
    e.stop()


def approle_options(pg, emu, *, ttl=3600, max_ttl=86400, role_id_in_file=False, mount=None):
    role_id, _ = emu.add_approle("pg-envelope", secret_id=SECRET_ID, ttl=ttl, max_ttl=max_ttl, mount=mount)
    opts = {"address": emu.url, "auth_method": "approle",
            "secret_id_file": str(pg.write_file("vault.secret_id", SECRET_ID + "\n"))}
    if mount:
        opts["auth_mount"] = mount
    if role_id_in_file:
        opts["role_id_file"] = str(pg.write_file("vault.role_id", role_id + "\n"))
    else:
        opts["role_id"] = role_id
    return opts


def create_kms(pg, options, name="v"):
    pg.sql("SELECT envelope.create_kms(%s, 'vault-transit', %s::jsonb)", (name, json.dumps(options)))


def create_key(cur, key, kms="v"):
    cur.execute("SELECT envelope.create_key(%s, kms => %s, kek => 'pg-envelope')", (key, kms))
    cur.execute("SELECT envelope.decrypt_field(envelope.encrypt_field(%s, %s))", (PLAIN, key))
    assert cur.fetchone() == (PLAIN,)


def expect_error(cur, query, params=None):
    with pytest.raises(psycopg2.Error) as e:
        cur.execute(query, params)
    return pg_error(e)


def secrets_of(emu):
    return [SECRET_ID, K8S_JWT, OIDC_JWT] + emu.issued_tokens()


def assert_clean(err, emu):
    for s in secrets_of(emu):
        assert s not in json.dumps(err), "a credential appears in the error"


# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["approle", "approle-role_id_file", "kubernetes", "jwt"])
def test_login_method_end_to_end(pg, emu, method):
    if method.startswith("approle"):
        options = approle_options(pg, emu, role_id_in_file=method.endswith("file"))
        login_op = "approle/login"
    elif method == "kubernetes":
        emu.add_kubernetes_role("db-role", K8S_JWT)
        options = {"address": emu.url, "auth_method": "kubernetes", "role": "db-role",
                   "jwt_file": str(pg.write_file("sa.token", K8S_JWT))}
        login_op = "kubernetes/login"
    else:
        emu.add_jwt_role("ci-role", OIDC_JWT, mount="oidc-ci")
        options = {"address": emu.url, "auth_method": "jwt", "auth_mount": "oidc-ci", "role": "ci-role",
                   "jwt_file": str(pg.write_file("oidc.jwt", OIDC_JWT + "\n"))}
        login_op = "oidc-ci/login"
    create_kms(pg, options)
    cur = pg.connect().cursor()
    create_key(cur, "k1")
    cur.execute("CREATE TABLE t (id int, v envelope.encrypted_text)")
    cur.execute("INSERT INTO t SELECT g, envelope.encrypt_field(%s || g, 'k1') FROM generate_series(1, 20) g",
                (PLAIN,))
    cur.execute("SELECT envelope.cache_flush()")
    cur.execute("SELECT count(*) FROM t WHERE envelope.decrypt_field(v) = %s || id", (PLAIN,))
    assert cur.fetchone() == (20,)
    create_key(cur, "k2")
    # One login serves every call of the backend (2 encrypts, several decrypts).
    assert emu.calls(login_op) == 1, emu.stats()
    assert emu.calls("encrypt") == 2 and emu.calls("decrypt") >= 3
    assert emu.calls("renew-self") == 0 and emu.rejected() == 0
    # The login token went to Transit, never the credential itself.
    transit = [r for r in emu.request_log if r["op"] in ("encrypt", "decrypt")]
    assert {r["headers"]["x-vault-token"] for r in transit} == set(emu.issued_tokens())
    pg.assert_log_free_of(secrets_of(emu) + [PLAIN])


def test_token_renewed_before_expiry(pg, emu):
    create_kms(pg, approle_options(pg, emu, ttl=3, max_ttl=600))
    cur = pg.connect().cursor()
    create_key(cur, "k1")
    assert emu.calls("approle/login") == 1
    time.sleep(2.3)  # past two thirds of the 3 s lease
    create_key(cur, "k2")
    assert emu.calls("renew-self") == 1 and emu.calls("approle/login") == 1, emu.stats()
    time.sleep(2.3)  # the first lease (3 s) is over: only the renewal keeps it alive
    create_key(cur, "k3")
    assert emu.calls("renew-self") == 2 and emu.calls("approle/login") == 1, emu.stats()
    assert emu.rejected() == 0 and len(emu.issued_tokens()) == 1
    renewals = [r for r in emu.request_log if r["op"] == "renew-self"]
    assert all(r["headers"]["x-vault-token"] == emu.issued_tokens()[0] for r in renewals)
    pg.assert_log_free_of(secrets_of(emu))


def test_new_login_after_refused_renewal(pg, emu):
    create_kms(pg, approle_options(pg, emu, ttl=3, max_ttl=600))
    cur = pg.connect().cursor()
    create_key(cur, "k1")
    emu.refuse_renewals = True
    time.sleep(2.3)
    create_key(cur, "k2")
    assert emu.calls("renew-self") == 1 and emu.errors("renew-self") == 1, emu.stats()
    assert emu.calls("approle/login") == 2 and emu.rejected() == 0
    assert len(emu.issued_tokens()) == 2


def test_new_login_at_max_ttl(pg, emu):
    create_kms(pg, approle_options(pg, emu, ttl=6, max_ttl=8))
    cur = pg.connect().cursor()
    create_key(cur, "k1")
    time.sleep(4.3)  # renewal at 4 s grants only what is left of the 8 s max TTL
    create_key(cur, "k2")
    assert emu.calls("renew-self") == 1 and emu.calls("approle/login") == 1, emu.stats()
    time.sleep(3.0)  # two thirds of the capped lease (3 or 4 s): a renewal could not extend it
    create_key(cur, "k3")
    assert emu.calls("renew-self") == 1 and emu.calls("approle/login") == 2, emu.stats()
    assert emu.rejected() == 0


def test_403_to_a_login_token_logs_in_once_and_retries(pg, emu):
    create_kms(pg, approle_options(pg, emu))
    cur = pg.connect().cursor()
    create_key(cur, "k1")
    emu.expire_tokens()  # expired early (e.g. revoked by policy): Transit says 403
    create_key(cur, "k2")
    # (create_key first probes the KMS with a decrypt of the newest DEK: that one is refused.)
    assert emu.rejected() == 1 and emu.calls("approle/login") == 2, emu.stats()
    # A 403 that a new login does not cure is reported, after exactly one retry.
    emu.disable_key("pg-envelope")
    cur.execute("SELECT envelope.cache_flush()")
    err = expect_error(cur, "SELECT envelope.decrypt_field(envelope.encrypt_field('x', 'k1'))")
    assert err["sqlstate"] == "42501" and "permission denied" in err["message"], err
    assert emu.calls("approle/login") == 3 and emu.errors("decrypt") == 2, emu.stats()
    assert_clean(err, emu)
    # A new backend takes the token of the shared credential store (not one it logged in
    # for): the 403 to it drops it from the store, one new login, one retry, refused again.
    cur2 = pg.connect().cursor()
    cur2.execute("SELECT envelope.cache_flush()")
    err = expect_error(cur2, "SELECT envelope.decrypt_field(envelope.encrypt_field('x', 'k1'))")
    assert err["sqlstate"] == "42501", err
    assert emu.calls("approle/login") == 4 and emu.errors("decrypt") == 4, emu.stats()


def test_static_token_gets_no_retry_and_no_login(pg, emu):
    token_file = pg.write_file("vault.token", "emulator-root-token\n")
    create_kms(pg, {"address": emu.url, "token_file": str(token_file)})
    cur = pg.connect().cursor()
    create_key(cur, "k1")
    emu.disable_key("pg-envelope")
    cur.execute("SELECT envelope.cache_flush()")
    err = expect_error(cur, "SELECT envelope.decrypt_field(envelope.encrypt_field('x', 'k1'))")
    assert err["sqlstate"] == "42501", err
    assert emu.errors("decrypt") == 1 and emu.calls("renew-self") == 0


def test_wrong_secret_id_is_a_clear_28000(pg, emu):
    options = approle_options(pg, emu)
    options["secret_id_file"] = str(pg.write_file("wrong.secret_id", "wrong-secret-id-0000\n"))
    create_kms(pg, options)
    cur = pg.connect().cursor()
    err = expect_error(cur, "SELECT envelope.create_key('k1', kms => 'v', kek => 'pg-envelope')")
    assert err["sqlstate"] == "28000", err
    assert err["message"] == 'KMS "v" login failed: HTTP 400 invalid role or secret ID', err
    assert "AppRole login" in err["detail"] and "approle" in err["detail"], err
    assert "wrong-secret-id-0000" not in json.dumps(err)
    assert_clean(err, emu)
    assert emu.calls("encrypt") == 0
    pg.assert_log_free_of(secrets_of(emu) + ["wrong-secret-id-0000"])


def test_refused_kubernetes_login(pg, emu):
    emu.add_kubernetes_role("db-role", K8S_JWT)
    create_kms(pg, {"address": emu.url, "auth_method": "kubernetes", "role": "db-role",
                    "jwt_file": str(pg.write_file("sa.token", "eyJ.another-service-account.sig"))})
    err = expect_error(pg.connect().cursor(), "SELECT envelope.create_key('k1', kms => 'v', kek => 'pg-envelope')")
    assert err["sqlstate"] == "28000" and "HTTP 403 permission denied" in err["message"], err
    assert "Kubernetes login" in err["detail"] and 'role "db-role"' in err["detail"], err
    assert "another-service-account" not in json.dumps(err)
    pg.assert_log_free_of(["another-service-account", K8S_JWT])


@pytest.mark.parametrize("which", ["secret_id_file", "role_id_file", "jwt_file"])
def test_credential_files_readable_by_others_are_refused(pg, emu, which):
    if which == "jwt_file":
        emu.add_jwt_role("r", OIDC_JWT)
        options = {"address": emu.url, "auth_method": "jwt", "role": "r",
                   "jwt_file": str(pg.write_file("oidc.jwt", OIDC_JWT, mode=0o644))}
    else:
        options = approle_options(pg, emu, role_id_in_file=True)
        os_path = Path(options[which])
        os_path.chmod(0o604)
    create_kms(pg, options)
    err = expect_error(pg.connect().cursor(), "SELECT envelope.create_key('k1', kms => 'v', kek => 'pg-envelope')")
    what = {"secret_id_file": "secret_id", "role_id_file": "role_id", "jwt_file": "JWT"}[which]
    assert err["sqlstate"] == "F0000", err
    assert err["message"] == f'the {what} file of KMS "v" is world-accessible', err
    assert sum(emu.calls(op) for op in ("approle/login", "jwt/login")) == 0
    assert_clean(err, emu)


@pytest.mark.parametrize("options, needle", [
    ({"auth_method": "approle", "role_id": "r", "secret_id_file": "/x", "token_file": "/t"},
     "configures two Vault auth methods"),
    ({"role_id": "r"}, "configures two Vault auth methods"),
    ({"auth_method": "kubernetes", "role": "r", "secret_id_file": "/x"}, "configures two Vault auth methods"),
    ({"auth_method": "ldap"}, 'invalid "auth_method"'),
    ({"auth_method": "approle", "secret_id_file": "/x"}, '"role_id" and "role_id_file"'),
    ({"auth_method": "approle", "role_id": "r", "role_id_file": "/r", "secret_id_file": "/x"},
     '"role_id" and "role_id_file"'),
    ({"auth_method": "approle", "role_id": "r"}, '"secret_id_file"'),
    ({"auth_method": "kubernetes"}, 'needs option "role"'),
    ({"auth_method": "jwt", "role": "r"}, 'needs option "jwt_file"'),
    ({"auth_method": "jwt", "role": "r", "jwt_file": "relative/jwt"}, "absolute paths"),
    ({"auth_method": "approle", "role_id": "r", "secret_id_file": "/x", "auth_mount": "a b"}, '"auth_mount"'),
    ({"auth_method": "kubernetes", "role": "r x"}, 'invalid "role"'),
    ({"auth_method": "approle", "role_id": "r", "secret_id": "s"}, "looks like a secret"),
])
def test_option_checks(pg, options, needle):
    cur = pg.connect().cursor()
    # (create_kms writes a new KMS's name as "the new KMS" in its errors: a long one here.)
    err = expect_error(cur, "SELECT envelope.create_kms('vault_checked', 'vault-transit', %s::jsonb)",
                       (json.dumps({"address": "https://vault.example.com:8200", **options}),))
    assert err["sqlstate"] == "22023", err
    assert needle in err["message"], err
    assert pg.scalar("SELECT count(*) FROM envelope.kms WHERE name = 'vault_checked'") == 0
