"""The emulators' OAuth token endpoints: Google's (service-account JWT bearer grant)
and Azure AD's v2.0 (client secret, client certificate assertion, federated token),
and the KMS emulators accepting exactly the tokens they issued."""
import base64
import json
import time
from urllib.parse import urlencode, urlsplit

import pytest
from cryptography.hazmat.primitives import serialization

from kms_emulators import azure, gcp, oauth

import kmshttp

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
KEY = "projects/emulator-project/locations/global/keyRings/emulator-ring/cryptoKeys/pg-envelope"


def post_form(url, fields):
    u = urlsplit(url)
    return kmshttp.request(url, "POST", u.path, urlencode(fields), FORM)


# ------------------------------------------------------------------ Google

@pytest.fixture
def g():
    e = gcp.start(keys=("pg-envelope",), sa_token_ttl=2)
    yield e
    e.stop()


def sa_assertion(keyfile, **over):
    pk = over.pop("signer", None) or serialization.load_pem_private_key(keyfile["private_key"].encode(), None)
    now = int(time.time())
    header = {"alg": "RS256", "typ": "JWT", "kid": keyfile["private_key_id"]}
    claims = {"iss": keyfile["client_email"], "scope": "https://www.googleapis.com/auth/cloudkms",
              "aud": keyfile["token_uri"], "iat": now, "exp": now + 3600}
    header.update(over.pop("header", {}))
    claims.update(over)
    return oauth.sign_rs256(pk, header, claims)


def sa_grant(keyfile, assertion):
    return post_form(keyfile["token_uri"], {"grant_type": gcp.JWT_BEARER, "assertion": assertion})


def test_google_grant_issues_token_the_kms_accepts_until_it_expires(g):
    kf = g.add_service_account()
    assert kf["type"] == "service_account" and kf["token_uri"] == g.url + "/token"
    r = sa_grant(kf, sa_assertion(kf))
    assert r.status == 200, r
    body = r.json
    assert body["token_type"] == "Bearer" and body["expires_in"] == 2
    tok = body["access_token"]
    assert g.calls("oauth_token") == 1 and g.granted == {kf["client_email"]: 1}
    get = lambda: kmshttp.request(g.url, "GET", "/v1/" + KEY, headers={"Authorization": "Bearer " + tok})
    assert get().status == 200
    time.sleep(2.2)
    r = get()
    assert r.status == 401 and r.json["error"]["status"] == "UNAUTHENTICATED"


@pytest.mark.parametrize("case,error,text", [
    ("bad_signature", "invalid_grant", "Invalid JWT Signature."),
    ("unknown_account", "invalid_grant", "account not found"),
    ("wrong_aud", "invalid_grant", "Failed audience check"),
    ("expired", "invalid_grant", "short-lived token"),
    ("too_long", "invalid_grant", "short-lived token"),
    ("no_scope", "invalid_scope", "Invalid OAuth scope"),
    ("garbage", "invalid_grant", "short-lived token"),
    ("deleted_key", "invalid_grant", "Invalid JWT Signature."),
])
def test_google_grant_refusals(g, case, error, text):
    kf = g.add_service_account()
    now = int(time.time())
    if case == "bad_signature":
        a = sa_assertion(kf, signer=oauth.new_rsa_key())
    elif case == "unknown_account":
        a = sa_assertion(kf, iss="nobody@emulator-project.iam.gserviceaccount.com")
    elif case == "wrong_aud":
        a = sa_assertion(kf, aud="https://oauth2.googleapis.com/token")
    elif case == "expired":
        a = sa_assertion(kf, iat=now - 4000, exp=now - 400)
    elif case == "too_long":
        a = sa_assertion(kf, exp=now + 7200)
    elif case == "no_scope":
        a = sa_assertion(kf, scope="https://www.googleapis.com/auth/devstorage.read_only")
    elif case == "garbage":
        a = "not.a-jwt"
    else:
        a = sa_assertion(kf)
        g.delete_service_account_key(kf["client_email"], kf["private_key_id"])
        g.add_service_account(kf["client_email"])
    r = sa_grant(kf, a)
    assert r.status == 400, r
    assert r.json["error"] == error and text in r.json["error_description"]
    assert g.issued_tokens() == []


def test_google_grant_wrong_grant_type(g):
    kf = g.add_service_account()
    r = post_form(kf["token_uri"], {"grant_type": "client_credentials", "assertion": sa_assertion(kf)})
    assert r.status == 400 and r.json["error"] == "unsupported_grant_type"


# ------------------------------------------------------------------ Azure AD

CLIENT = "11111111-2222-3333-4444-555555555555"


@pytest.fixture
def a():
    e = azure.start(keys=("pg-envelope",), aad_token_ttl=2)
    yield e
    e.stop()


def aad(emu, fields, tenant=None):
    base = {"client_id": CLIENT, "scope": "https://vault.azure.net/.default", "grant_type": "client_credentials"}
    base.update(fields)
    return post_form(emu.token_url(tenant), {k: v for k, v in base.items() if v is not None})


def cert_assertion(emu, pem, **over):
    pk = over.pop("signer", None) or serialization.load_pem_private_key(pem.encode(), None)
    from cryptography import x509
    cert = x509.load_pem_x509_certificate(pem[pem.index("-----BEGIN CERTIFICATE"):].encode())
    now = int(time.time())
    header = {"alg": "RS256", "typ": "JWT", "x5t#S256": oauth.thumbprint(cert)}
    header.update(over.pop("header", {}))
    claims = {"aud": emu.token_url(), "iss": CLIENT, "sub": CLIENT, "jti": "j1", "nbf": now, "exp": now + 600}
    claims.update(over)
    return oauth.sign_rs256(pk, header, claims)


def assertion_fields(assertion):
    return {"client_assertion_type": azure.ASSERTION_TYPE, "client_assertion": assertion}


def vault_get(emu, tok):
    return kmshttp.request(emu.url, "GET", "/keys/pg-envelope?api-version=7.4",
                           headers={"Authorization": "Bearer " + tok})


def test_aad_client_secret_token_accepted_by_key_vault_until_expiry(a):
    secret = a.add_client_secret(CLIENT)
    r = aad(a, {"client_secret": secret})
    assert r.status == 200, r
    assert r.json["token_type"] == "Bearer" and r.json["expires_in"] == 2
    tok = r.json["access_token"]
    assert vault_get(a, tok).status == 200
    assert a.calls("aad_token") == 1 and a.grants == {"client_secret": 1}
    time.sleep(2.2)
    assert vault_get(a, tok).status == 401


def test_aad_refusals_are_aadsts_json(a):
    secret = a.add_client_secret(CLIENT)
    r = aad(a, {"client_secret": secret + "x"})
    assert r.status == 401 and r.json["error"] == "invalid_client"
    assert r.json["error_description"].startswith("AADSTS7000215:") and r.json["error_codes"] == [7000215]
    assert "trace_id" in r.json and "correlation_id" in r.json
    assert secret not in r.body.decode()
    r = aad(a, {"client_id": "99999999-0000-0000-0000-000000000000", "client_secret": secret})
    assert r.status == 400 and r.json["error"] == "unauthorized_client" and "AADSTS700016" in r.json["error_description"]
    r = aad(a, {"client_secret": secret}, tenant="other-tenant")
    assert r.status == 400 and "AADSTS90002" in r.json["error_description"]
    r = aad(a, {"client_secret": secret, "scope": "https://vault.azure.net"})
    assert r.status == 400 and r.json["error"] == "invalid_scope"
    assert a.issued_tokens() == []


def test_aad_client_certificate(a):
    pem = a.add_client_certificate(CLIENT)
    assert "PRIVATE KEY" in pem and "CERTIFICATE" in pem
    r = aad(a, assertion_fields(cert_assertion(a, pem)))
    assert r.status == 200, r
    assert vault_get(a, r.json["access_token"]).status == 200
    assert a.grants == {"client_certificate": 1}
    # SHA-1 thumbprint (x5t) only is accepted too
    from cryptography import x509
    cert = x509.load_pem_x509_certificate(pem[pem.index("-----BEGIN CERTIFICATE"):].encode())
    hdr = {"x5t": oauth.thumbprint(cert, "sha1")}
    a2 = cert_assertion(a, pem, header=hdr)
    h = json.loads(base64.urlsafe_b64decode(a2.split(".")[0] + "=="))
    h.pop("x5t#S256")
    pk = serialization.load_pem_private_key(pem.encode(), None)
    claims = json.loads(base64.urlsafe_b64decode(a2.split(".")[1] + "=="))
    r = aad(a, assertion_fields(oauth.sign_rs256(pk, h, claims)))
    assert r.status == 200, r


@pytest.mark.parametrize("case,code", [
    ("other_key", 700027), ("unknown_cert", 700027), ("wrong_aud", 700212),
    ("wrong_iss", 700021), ("expired", 700024),
])
def test_aad_client_certificate_refusals(a, case, code):
    pem = a.add_client_certificate(CLIENT)
    now = int(time.time())
    if case == "other_key":
        asr = cert_assertion(a, pem, signer=oauth.new_rsa_key())
    elif case == "unknown_cert":
        asr = cert_assertion(a, pem, header={"x5t#S256": oauth.b64url(b"\0" * 32)})
    elif case == "wrong_aud":
        asr = cert_assertion(a, pem, aud="https://login.microsoftonline.com/x/oauth2/v2.0/token")
    elif case == "wrong_iss":
        asr = cert_assertion(a, pem, iss="someone-else")
    else:
        asr = cert_assertion(a, pem, nbf=now - 2000, exp=now - 1000)
    r = aad(a, assertion_fields(asr))
    assert r.status == 401 and r.json["error"] == "invalid_client", r
    assert r.json["error_codes"] == [code]


def test_aad_federated_token(a):
    fed = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6ZGI6cGcifQ.sig"
    a.add_federated_credential(CLIENT, fed)
    r = aad(a, assertion_fields(fed))
    assert r.status == 200 and a.grants == {"federated": 1}
    r = aad(a, assertion_fields(fed + "x"))
    assert r.status == 400 and "AADSTS70021" in r.json["error_description"]
