"""Credentials that the gcp-kms and azure-keyvault providers turn into OAuth tokens
themselves, against the emulators' token endpoints (test/kms_emulators/gcp.py and
azure.py): a GCP service-account key (option credentials_file, the server's
GOOGLE_APPLICATION_CREDENTIALS), Azure AD client credentials (client secret,
client certificate, workload identity's federated token; from options or from the
server's AZURE_* environment as the Azure SDKs read it).

Each source end to end (create_key + encrypt + decrypt), the token cached per
backend and requested again after it expires (the emulators' counters prove it),
refused requests as 28000 with the service's error code, credential files that
other users can read refused (F0000), option conflicts (22023), and no secret,
private key, assertion or token in any error or in the server log.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import psycopg2
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # <repo>/test
from kms_emulators import azure, gcp  # noqa: E402

from pgcluster import pg_error  # noqa: E402

PLAIN = "patient 4711 has allergies"
TENANT = "00000000-0000-0000-0000-0000000000aa"
CLIENT = "3f2a9c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b"
FEDERATED = ("eyJhbGciOiJSUzI1NiIsImtpZCI6ImFrcyJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6ZGI6cGciLCJhdWQiOiJh"
             "cGk6Ly9BenVyZUFEVG9rZW5FeGNoYW5nZSJ9.aks-federated-signature")


@pytest.fixture(scope="module")
def pg(module_cluster_factory):
    c = module_cluster_factory.create("cloudcreds", settings={"envelope.kms_request_timeout": "2s",
                                                              "envelope.kms_retry_budget": "5s"})
    c.sql("CREATE EXTENSION pg_envelope")
    return c


@pytest.fixture
def gemu():
    e = gcp.start(keys=("pg-envelope",))
    yield e
    e.stop()


@pytest.fixture
def aemu():
    e = azure.start(keys=("pg-envelope",))
    yield e
    e.stop()


_seq = [0]


def unique(prefix):
    _seq[0] += 1
    return f"{prefix}{_seq[0]}"


def create_kms(pg, provider, options):
    name = unique("kms")
    pg.sql("SELECT envelope.create_kms(%s, %s, %s::jsonb)", (name, provider, json.dumps(options)))
    return name


def roundtrip(cur, kms, kek):
    key = unique("key")
    cur.execute("SELECT envelope.create_key(%s, kms => %s, kek => %s)", (key, kms, kek))
    cur.execute("SELECT envelope.decrypt_field(envelope.encrypt_field(%s, %s))", (PLAIN, key))
    assert cur.fetchone() == (PLAIN,)
    return key


def expect_error(cur, query, params=None):
    with pytest.raises(psycopg2.Error) as e:
        cur.execute(query, params)
    return pg_error(e)


def pem_lines(pem):
    """Lines of the base64 body of every PEM block (each one would betray it)."""
    return [ln for ln in pem.splitlines() if ln and not ln.startswith("-----")][1:4]


def assert_clean(pg, err, secrets_, since=0):
    text = json.dumps(err)
    for i, s in enumerate(secrets_):
        assert s not in text, f"secret #{i} appears in the error"
    pg.assert_log_free_of(secrets_, since)


def bearer_tokens_sent(emu, ops):
    return {r["headers"].get("authorization", "")[7:] for r in emu.request_log if r["op"] in ops}


# ------------------------------------------------------------------ GCP


def gcp_key_file(pg, emu, name="sa.json", mode=0o600, **edit):
    kf = emu.add_service_account()
    kf.update(edit)
    return kf, pg.write_file(unique("") + name, json.dumps(kf, indent=2), mode)


def gcp_secrets(kf, emu):
    s = pem_lines(kf["private_key"]) + emu.issued_tokens()
    if emu.last_assertion:
        s.append(emu.last_assertion["raw"])
    return s


def test_gcp_service_account_key_end_to_end(pg, gemu):
    since = pg.log_position()
    kf, path = gcp_key_file(pg, gemu)
    kms = create_kms(pg, "gcp-kms", {"endpoint": gemu.url, "credentials_file": str(path)})
    cur = pg.connect().cursor()
    key = roundtrip(cur, kms, gemu.key_name("pg-envelope"))
    cur.execute("SELECT envelope.cache_flush()")
    cur.execute("SELECT envelope.decrypt_field(envelope.encrypt_field('again', %s))", (key,))
    assert cur.fetchone() == ("again",)
    # One JWT grant served every call of this backend; the KMS saw only granted tokens.
    assert gemu.calls("oauth_token") == 1 and gemu.granted == {kf["client_email"]: 1}
    assert gemu.calls("encrypt") >= 1 and gemu.calls("decrypt") >= 2 and gemu.rejected() == 0
    assert bearer_tokens_sent(gemu, ("encrypt", "decrypt")) == set(gemu.issued_tokens())
    a = gemu.last_assertion
    assert a["header"] == {"alg": "RS256", "typ": "JWT", "kid": kf["private_key_id"]}
    c = a["claims"]
    assert c["iss"] == kf["client_email"] and c["aud"] == gemu.url + "/token"
    assert c["scope"] == "https://www.googleapis.com/auth/cloudkms" and c["exp"] - c["iat"] == 3600
    assert abs(c["iat"] - time.time()) < 60
    pg.assert_log_free_of(gcp_secrets(kf, gemu), since)


def test_gcp_token_url_option_overrides_key_file(pg, gemu):
    kf, path = gcp_key_file(pg, gemu, token_uri="https://oauth2.googleapis.com/token")
    kms = create_kms(pg, "gcp-kms", {"endpoint": gemu.url, "credentials_file": str(path),
                                     "token_url": gemu.url + "/token"})
    roundtrip(pg.connect().cursor(), kms, gemu.key_name("pg-envelope"))
    assert gemu.calls("oauth_token") == 1


def test_gcp_token_requested_again_after_expiry(pg):
    emu = gcp.start(keys=("pg-envelope",), sa_token_ttl=3)  # cached for 2 s (a second early)
    try:
        kf, path = gcp_key_file(pg, emu)
        kms = create_kms(pg, "gcp-kms", {"endpoint": emu.url, "credentials_file": str(path)})
        cur = pg.connect().cursor()
        key = roundtrip(cur, kms, emu.key_name("pg-envelope"))
        assert emu.calls("oauth_token") == 1
        time.sleep(3.2)
        cur.execute("SELECT envelope.cache_flush()")
        cur.execute("SELECT envelope.decrypt_field(envelope.encrypt_field('later', %s))", (key,))
        assert cur.fetchone() == ("later",)
        assert emu.calls("oauth_token") == 2
        assert emu.rejected() == 0  # renewed before the KMS saw an expired token
    finally:
        emu.stop()


def test_gcp_refused_grant_is_28000_without_secrets(pg, gemu):
    since = pg.log_position()
    kf, path = gcp_key_file(pg, gemu)
    gemu.delete_service_account_key(kf["client_email"], kf["private_key_id"])  # a deleted key
    gemu.add_service_account(kf["client_email"])
    kms = create_kms(pg, "gcp-kms", {"endpoint": gemu.url, "credentials_file": str(path)})
    cur = pg.connect().cursor()
    err = expect_error(cur, "SELECT envelope.create_key('gbad', kms => %s, kek => %s)",
                       (kms, gemu.key_name("pg-envelope")))
    assert err["sqlstate"] == "28000", err
    assert "token request failed: HTTP 400 invalid_grant" in err["message"]
    assert "Invalid JWT Signature" in err["detail"] and kf["client_email"] in err["detail"]
    assert gemu.calls("encrypt") == 0
    assert_clean(pg, err, gcp_secrets(kf, gemu), since)


def test_gcp_unknown_account_is_28000(pg, gemu):
    kf, path = gcp_key_file(pg, gemu, client_email="ghost@emulator-project.iam.gserviceaccount.com")
    kms = create_kms(pg, "gcp-kms", {"endpoint": gemu.url, "credentials_file": str(path)})
    err = expect_error(pg.connect().cursor(), "SELECT envelope.create_key('gghost', kms => %s, kek => %s)",
                       (kms, gemu.key_name("pg-envelope")))
    assert err["sqlstate"] == "28000" and "invalid_grant" in err["message"], err
    assert "account not found" in err["detail"]


def test_gcp_key_file_readable_by_others_refused(pg, gemu):
    kf, path = gcp_key_file(pg, gemu, mode=0o644)
    kms = create_kms(pg, "gcp-kms", {"endpoint": gemu.url, "credentials_file": str(path)})
    err = expect_error(pg.connect().cursor(), "SELECT envelope.create_key('gworld', kms => %s, kek => %s)",
                       (kms, gemu.key_name("pg-envelope")))
    assert err["sqlstate"] == "F0000" and "other users" in err["detail"], err
    assert gemu.calls("oauth_token") == 0
    assert_clean(pg, err, pem_lines(kf["private_key"]))


def test_gcp_malformed_key_file(pg, gemu):
    path = pg.write_file(unique("bad") + ".json", json.dumps({"type": "service_account", "client_email": "a@b.c",
                                                              "private_key": "not a key"}))
    kms = create_kms(pg, "gcp-kms", {"endpoint": gemu.url, "credentials_file": str(path)})
    err = expect_error(pg.connect().cursor(), "SELECT envelope.create_key('gmal', kms => %s, kek => %s)",
                       (kms, gemu.key_name("pg-envelope")))
    assert err["sqlstate"] == "F0000" and "private_key" in err["detail"], err


@pytest.mark.parametrize("options,needle", [
    ({"token_file": "/x/token", "credentials_file": "/x/sa.json"}, "two credential sources"),
    ({"credentials_file": "/x/sa.json", "token_url": "http://oauth2.example.com/token"}, "http"),
])
def test_gcp_option_errors(pg, gemu, options, needle):
    options = {"endpoint": gemu.url, **options}
    err = expect_error(pg.connect().cursor(), "SELECT envelope.create_kms(%s, 'gcp-kms', %s::jsonb)",
                       (unique("bad"), json.dumps(options)))
    assert err["sqlstate"] == "22023" and needle in json.dumps(err), err


def test_gcp_google_application_credentials(cluster_factory, monkeypatch):
    emu = gcp.start(keys=("pg-envelope",))
    try:
        kf = emu.add_service_account()
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent")  # replaced below
        pg = cluster_factory.create("gac", start=False)
        path = pg.write_file("gac.json", json.dumps(kf))
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
        pg.start()  # the postmaster inherits this environment
        pg.sql("CREATE EXTENSION pg_envelope")
        kms = create_kms(pg, "gcp-kms", {"endpoint": emu.url, "metadata_url": emu.url})
        roundtrip(pg.connect().cursor(), kms, emu.key_name("pg-envelope"))
        # The key file came before the metadata server.
        assert emu.calls("oauth_token") == 1 and emu.calls("metadata_token") == 0
        pg.assert_log_free_of(gcp_secrets(kf, emu))
        # A credentials file of another type is an error, not a silent fall-through.
        path.write_text(json.dumps({"type": "authorized_user", "client_id": "x", "client_secret": "y",
                                    "refresh_token": "z"}))
        err = expect_error(pg.connect().cursor(), "SELECT envelope.create_key('gother', kms => %s, kek => %s)",
                           (kms, emu.key_name("pg-envelope")))
        assert err["sqlstate"] == "F0000" and "authorized_user" in err["detail"], err
    finally:
        emu.stop()


@pytest.mark.parametrize("provider", ["gcp", "azure"])
def test_revoked_cached_token_is_requested_anew_once(pg, provider):
    """A granted token the KMS rejects (401) before its expiry: one new token request,
    and the call succeeds; a token the KMS rejects although it was just granted is not
    requested a third time."""
    if provider == "gcp":
        emu = gcp.start(keys=("pg-envelope",))
        _, path = gcp_key_file(pg, emu)
        kms = create_kms(pg, "gcp-kms", {"endpoint": emu.url, "credentials_file": str(path)})
        kek, op = emu.key_name("pg-envelope"), "oauth_token"
    else:
        emu = azure.start(keys=("pg-envelope",))
        kms = create_kms(pg, "azure-keyvault", azure_source(pg, emu, "secret")[0])
        kek, op = "pg-envelope", "aad_token"
    try:
        cur = pg.connect().cursor()
        key = roundtrip(cur, kms, kek)
        emu.expire_tokens()  # revoked: the backend's cached token is now refused
        cur.execute("SELECT envelope.cache_flush()")
        cur.execute("SELECT envelope.decrypt_field(envelope.encrypt_field('again', %s))", (key,))
        assert cur.fetchone() == ("again",)
        assert emu.calls(op) == 2 and emu.rejected() == 1, emu.stats()
        # Tokens that are refused as soon as they are issued: one request per call, no loop.
        if provider == "gcp":
            emu.sa_token_ttl = 0  # new tokens are expired on arrival
        else:
            emu.aad_token_ttl = 0
        cur.execute("SELECT envelope.cache_flush()")
        emu.expire_tokens()
        err = expect_error(cur, "SELECT envelope.decrypt_field(envelope.encrypt_field('x', %s))", (key,))
        assert err["sqlstate"] == "28000", err
        assert emu.calls(op) == 3
    finally:
        emu.stop()


# ------------------------------------------------------------------ Azure


def azure_options(emu, **extra):
    return {"vault_url": emu.url, "authority_url": emu.url, "tenant_id": TENANT, "client_id": CLIENT, **extra}


def azure_source(pg, emu, kind, mode=0o600):
    """Options and secrets of one explicit Azure AD source."""
    if kind == "secret":
        secret = emu.add_client_secret(CLIENT)
        path = pg.write_file(unique("") + "client.secret", secret + "\n", mode)
        return azure_options(emu, client_secret_file=str(path)), [secret]
    if kind == "certificate":
        pem = emu.add_client_certificate(CLIENT)
        path = pg.write_file(unique("") + "client.pem", pem, mode)
        return azure_options(emu, client_certificate_file=str(path)), pem_lines(pem)
    emu.add_federated_credential(CLIENT, FEDERATED)
    path = pg.write_file(unique("") + "azure-identity-token", FEDERATED, mode)
    return azure_options(emu, federated_token_file=str(path)), [FEDERATED]


def azure_secrets(emu, secrets_):
    s = list(secrets_) + emu.issued_tokens()
    if emu.last_assertion:
        s.append(emu.last_assertion["raw"])
    return s


@pytest.mark.parametrize("kind,grant", [("secret", "client_secret"), ("certificate", "client_certificate"),
                                        ("federated", "federated")])
def test_azure_client_credentials_end_to_end(pg, aemu, kind, grant):
    since = pg.log_position()
    options, secrets_ = azure_source(pg, aemu, kind)
    kms = create_kms(pg, "azure-keyvault", options)
    cur = pg.connect().cursor()
    key = roundtrip(cur, kms, "pg-envelope")
    cur.execute("SELECT envelope.cache_flush()")
    cur.execute("SELECT envelope.decrypt_field(envelope.encrypt_field('again', %s))", (key,))
    assert cur.fetchone() == ("again",)
    assert aemu.calls("aad_token") == 1 and aemu.grants == {grant: 1}
    assert aemu.calls("wrapkey") >= 1 and aemu.calls("unwrapkey") >= 2 and aemu.rejected() == 0
    assert bearer_tokens_sent(aemu, ("wrapkey", "unwrapkey")) == set(aemu.issued_tokens())
    if kind == "certificate":
        a = aemu.last_assertion
        assert a["header"]["alg"] == "RS256" and "x5t#S256" in a["header"] and "x5t" in a["header"]
        c = a["claims"]
        assert c["aud"] == aemu.token_url() and c["iss"] == c["sub"] == CLIENT
        assert c["jti"] and c["nbf"] <= time.time() + 5 and c["exp"] - c["nbf"] == 600
    pg.assert_log_free_of(azure_secrets(aemu, secrets_), since)


def test_azure_token_requested_again_after_expiry(pg):
    emu = azure.start(keys=("pg-envelope",), aad_token_ttl=3)
    try:
        options, _ = azure_source(pg, emu, "secret")
        kms = create_kms(pg, "azure-keyvault", options)
        cur = pg.connect().cursor()
        key = roundtrip(cur, kms, "pg-envelope")
        assert emu.calls("aad_token") == 1
        time.sleep(3.2)
        cur.execute("SELECT envelope.cache_flush()")
        cur.execute("SELECT envelope.decrypt_field(envelope.encrypt_field('later', %s))", (key,))
        assert cur.fetchone() == ("later",)
        assert emu.calls("aad_token") == 2 and emu.rejected() == 0
    finally:
        emu.stop()


def test_azure_wrong_secret_and_unknown_client_are_28000(pg, aemu):
    since = pg.log_position()
    real = aemu.add_client_secret(CLIENT)
    wrong = "Wr0ng~" + real[6:]
    path = pg.write_file(unique("") + "wrong.secret", wrong)
    kms = create_kms(pg, "azure-keyvault", azure_options(aemu, client_secret_file=str(path)))
    cur = pg.connect().cursor()
    err = expect_error(cur, "SELECT envelope.create_key('awrong', kms => %s, kek => 'pg-envelope')", (kms,))
    assert err["sqlstate"] == "28000", err
    assert "token request failed: HTTP 401 invalid_client" in err["message"]
    assert "AADSTS7000215" in err["detail"] and CLIENT in err["detail"]
    other = create_kms(pg, "azure-keyvault", {**azure_options(aemu, client_secret_file=str(path)),
                                               "client_id": "99999999-0000-0000-0000-000000000000"})
    err2 = expect_error(cur, "SELECT envelope.create_key('aunknown', kms => %s, kek => 'pg-envelope')", (other,))
    assert err2["sqlstate"] == "28000" and "unauthorized_client" in err2["message"], err2
    assert "AADSTS700016" in err2["detail"]
    assert aemu.calls("wrapkey") == 0
    for e in (err, err2):
        assert_clean(pg, e, [wrong, real], since)


def test_azure_federated_token_mismatch_is_28000(pg, aemu):
    aemu.add_federated_credential(CLIENT, FEDERATED)
    path = pg.write_file(unique("") + "stale-token", FEDERATED[:-3] + "old")
    kms = create_kms(pg, "azure-keyvault", azure_options(aemu, federated_token_file=str(path)))
    err = expect_error(pg.connect().cursor(),
                       "SELECT envelope.create_key('afed', kms => %s, kek => 'pg-envelope')", (kms,))
    assert err["sqlstate"] == "28000" and "AADSTS70021" in err["detail"], err
    assert_clean(pg, err, [FEDERATED, FEDERATED[:-3] + "old"])


@pytest.mark.parametrize("kind", ["secret", "certificate", "federated"])
def test_azure_credential_file_readable_by_others_refused(pg, aemu, kind):
    options, secrets_ = azure_source(pg, aemu, kind, mode=0o644)
    kms = create_kms(pg, "azure-keyvault", options)
    err = expect_error(pg.connect().cursor(),
                       "SELECT envelope.create_key(%s, kms => %s, kek => 'pg-envelope')", (unique("aw"), kms))
    assert err["sqlstate"] == "F0000" and "other users" in err["detail"], err
    assert aemu.calls("aad_token") == 0
    assert_clean(pg, err, secrets_)


@pytest.mark.parametrize("extra,needle", [
    ({"client_secret_file": "/x/s", "client_certificate_file": "/x/c"}, "two credential sources"),
    ({"token_file": "/x/t", "federated_token_file": "/x/f"}, "two credential sources"),
    ({"client_secret_file": "/x/s", "tenant_id": "bad tenant/../x"}, "tenant_id"),
    ({"client_secret_file": "/x/s", "tenant_id": None}, "tenant_id"),
    ({"client_secret_file": "/x/s", "authority_url": "http://login.example.com"}, "https"),
])
def test_azure_option_errors(pg, aemu, extra, needle):
    options = {k: v for k, v in azure_options(aemu, **extra).items() if v is not None}
    err = expect_error(pg.connect().cursor(), "SELECT envelope.create_kms(%s, 'azure-keyvault', %s::jsonb)",
                       (unique("bad"), json.dumps(options)))
    assert err["sqlstate"] == "22023" and needle in json.dumps(err), err


@pytest.mark.parametrize("kind,grant", [("secret", "client_secret"), ("certificate", "client_certificate"),
                                        ("federated", "federated")])
def test_azure_credentials_from_server_environment(cluster_factory, monkeypatch, kind, grant):
    """AZURE_TENANT_ID + AZURE_CLIENT_ID with AZURE_CLIENT_SECRET, AZURE_CLIENT_CERTIFICATE_PATH
    or AZURE_FEDERATED_TOKEN_FILE (AKS workload identity), tried before IMDS."""
    emu = azure.start(keys=("pg-envelope",))
    try:
        pg = cluster_factory.create("azenv", start=False)
        monkeypatch.setenv("AZURE_TENANT_ID", TENANT)
        monkeypatch.setenv("AZURE_CLIENT_ID", CLIENT)
        if kind == "secret":
            secret = emu.add_client_secret(CLIENT)
            monkeypatch.setenv("AZURE_CLIENT_SECRET", secret)
            secrets_ = [secret]
        elif kind == "certificate":
            pem = emu.add_client_certificate(CLIENT)
            monkeypatch.setenv("AZURE_CLIENT_CERTIFICATE_PATH", str(pg.write_file("client.pem", pem)))
            secrets_ = pem_lines(pem)
        else:
            emu.add_federated_credential(CLIENT, FEDERATED)
            monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(pg.write_file("azure-identity-token", FEDERATED)))
            secrets_ = [FEDERATED]
        pg.start()  # the postmaster inherits this environment
        pg.sql("CREATE EXTENSION pg_envelope")
        kms = create_kms(pg, "azure-keyvault", {"vault_url": emu.url, "authority_url": emu.url,
                                                "imds_url": emu.url})
        roundtrip(pg.connect().cursor(), kms, "pg-envelope")
        assert emu.grants == {grant: 1} and emu.calls("imds_token") == 0
        pg.assert_log_free_of(azure_secrets(emu, secrets_))
    finally:
        emu.stop()
