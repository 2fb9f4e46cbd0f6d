import base64
import datetime
import hashlib
import hmac
import json
import shutil
import subprocess

import botocore.session
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from kms_emulators import aws
from kms_emulators.aws import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY, compute_sigv4

import kmshttp

CURL = shutil.which("curl")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl CLI not installed")
AMZ = "%Y%m%dT%H%M%SZ"


@pytest.fixture(autouse=True)
def _no_aws_config(monkeypatch, tmp_path):
    # Keep botocore away from any ~/.aws or AWS_* in the environment.
    for var in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_CA_BUNDLE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def kms_client(emu, access_key=DEFAULT_ACCESS_KEY, secret=DEFAULT_SECRET_KEY, token=None,
               region="us-east-1", verify=None):
    return botocore.session.get_session().create_client(
        "kms", endpoint_url=emu.url, region_name=region, aws_access_key_id=access_key,
        aws_secret_access_key=secret, aws_session_token=token, verify=verify,
        config=Config(retries={"max_attempts": 0}, connect_timeout=5, read_timeout=10))


def error_code(excinfo):
    return excinfo.value.response["Error"]["Code"]


# ------------------------------------------------------------- botocore client

def test_botocore_generate_decrypt_reencrypt_round_trip(aws_emulator):
    emu = aws_emulator
    dest = emu.create_key(description="second", alias="second")
    kms = kms_client(emu)
    ctx = {"pg_envelope:table": "public.t", "pg_envelope:column": "c"}
    gen = kms.generate_data_key(KeyId="alias/pg-envelope", KeySpec="AES_256", EncryptionContext=ctx)
    assert len(gen["Plaintext"]) == 32
    assert gen["KeyId"].startswith("arn:aws:kms:us-east-1:111122223333:key/")
    dec = kms.decrypt(CiphertextBlob=gen["CiphertextBlob"], EncryptionContext=ctx)
    assert dec["Plaintext"] == gen["Plaintext"] and dec["KeyId"] == gen["KeyId"]
    assert dec["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    ctx2 = {"pg_envelope:table": "public.t2"}
    re = kms.re_encrypt(CiphertextBlob=gen["CiphertextBlob"], SourceEncryptionContext=ctx,
                        DestinationKeyId="alias/second", DestinationEncryptionContext=ctx2)
    assert re["SourceKeyId"] == gen["KeyId"] and re["KeyId"] == emu.key_arn(dest)
    assert re["CiphertextBlob"] != gen["CiphertextBlob"]
    dec2 = kms.decrypt(CiphertextBlob=re["CiphertextBlob"], EncryptionContext=ctx2,
                       KeyId=emu.key_arn(dest))
    assert dec2["Plaintext"] == gen["Plaintext"]
    assert emu.calls("GenerateDataKey") == 1 and emu.calls("Decrypt") == 2
    assert emu.calls("ReEncrypt") == 1 and emu.rejected() == 0
    # what botocore signed
    signed = [r for r in emu.request_log if r["op"] == "Decrypt"][0]["headers"]["authorization"]
    assert "SignedHeaders=content-type;host;x-amz-date;x-amz-target" in signed


def test_botocore_wrong_secret_is_invalid_signature(aws_emulator):
    kms = kms_client(aws_emulator, secret="not-the-secret")
    with pytest.raises(ClientError) as ei:
        kms.generate_data_key(KeyId="alias/pg-envelope", KeySpec="AES_256")
    assert error_code(ei) == "InvalidSignatureException"
    assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "Canonical String" in ei.value.response["Error"]["Message"]
    assert aws_emulator.rejected("GenerateDataKey") == 1 and aws_emulator.calls() == 0


def test_botocore_encryption_context_mismatch_is_invalid_ciphertext(aws_emulator):
    kms = kms_client(aws_emulator)
    gen = kms.generate_data_key(KeyId="alias/pg-envelope", NumberOfBytes=32,
                                EncryptionContext={"a": "1"})
    for wrong in ({"a": "2"}, {}, {"a": "1", "b": "2"}):
        with pytest.raises(ClientError) as ei:
            kms.decrypt(CiphertextBlob=gen["CiphertextBlob"], EncryptionContext=wrong)
        assert error_code(ei) == "InvalidCiphertextException"
    with pytest.raises(ClientError) as ei:
        kms.decrypt(CiphertextBlob=gen["CiphertextBlob"][:-1] + b"\x00",
                    EncryptionContext={"a": "1"})
    assert error_code(ei) == "InvalidCiphertextException"


def test_botocore_unknown_access_key(aws_emulator):
    kms = kms_client(aws_emulator, access_key="AKIDUNKNOWN000000000")
    with pytest.raises(ClientError) as ei:
        kms.describe_key(KeyId="alias/pg-envelope")
    assert error_code(ei) == "UnrecognizedClientException"


def test_botocore_wrong_region_in_scope(aws_emulator):
    kms = kms_client(aws_emulator, region="eu-west-1")
    with pytest.raises(ClientError) as ei:
        kms.describe_key(KeyId="alias/pg-envelope")
    assert error_code(ei) == "InvalidSignatureException"
    assert "scoped to a valid region" in ei.value.response["Error"]["Message"]


def test_botocore_session_token_required_and_checked(aws_emulator):
    emu = aws_emulator
    emu.add_credentials("ASIATEMPORARY0000001", "temp-secret", session_token="session-tok")
    ok = kms_client(emu, "ASIATEMPORARY0000001", "temp-secret", token="session-tok")
    assert ok.describe_key(KeyId="alias/pg-envelope")["KeyMetadata"]["KeyState"] == "Enabled"
    for token in (None, "wrong-token"):
        kms = kms_client(emu, "ASIATEMPORARY0000001", "temp-secret", token=token)
        with pytest.raises(ClientError) as ei:
            kms.describe_key(KeyId="alias/pg-envelope")
        assert error_code(ei) == "UnrecognizedClientException"
    # a token sent with long-term credentials is refused too
    kms = kms_client(emu, token="stray")
    with pytest.raises(ClientError) as ei:
        kms.describe_key(KeyId="alias/pg-envelope")
    assert error_code(ei) == "UnrecognizedClientException"


def test_botocore_key_id_forms(aws_emulator):
    emu = aws_emulator
    kms = kms_client(emu)
    key_id = kms.describe_key(KeyId="alias/pg-envelope")["KeyMetadata"]["KeyId"]
    forms = [key_id, emu.key_arn(key_id), "alias/pg-envelope", emu.alias_arn("alias/pg-envelope")]
    for form in forms:
        out = kms.encrypt(KeyId=form, Plaintext=b"dek")
        assert out["KeyId"] == emu.key_arn(key_id)
        assert kms.decrypt(CiphertextBlob=out["CiphertextBlob"], KeyId=form)["Plaintext"] == b"dek"
    for missing in ("alias/nope", "00000000-0000-0000-0000-000000000000",
                    f"arn:aws:kms:us-west-2:111122223333:key/{key_id}", "not a key"):
        with pytest.raises(ClientError) as ei:
            kms.encrypt(KeyId=missing, Plaintext=b"dek")
        assert error_code(ei) == "NotFoundException", missing


def test_botocore_incorrect_key_and_disabled(aws_emulator):
    emu = aws_emulator
    kms = kms_client(emu)
    other = kms.create_key(Description="other")["KeyMetadata"]
    kms.create_alias(AliasName="alias/other", TargetKeyId=other["KeyId"])
    blob = kms.encrypt(KeyId="alias/pg-envelope", Plaintext=b"dek")["CiphertextBlob"]
    with pytest.raises(ClientError) as ei:
        kms.decrypt(CiphertextBlob=blob, KeyId="alias/other")
    assert error_code(ei) == "IncorrectKeyException"
    kms.disable_key(KeyId="alias/pg-envelope")
    for call in (lambda: kms.decrypt(CiphertextBlob=blob),
                 lambda: kms.generate_data_key(KeyId="alias/pg-envelope", KeySpec="AES_128")):
        with pytest.raises(ClientError) as ei:
            call()
        assert error_code(ei) == "DisabledException"
    assert kms.describe_key(KeyId="alias/pg-envelope")["KeyMetadata"]["KeyState"] == "Disabled"
    kms.enable_key(KeyId="alias/pg-envelope")
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"dek"
    with pytest.raises(ClientError) as ei:
        kms.create_alias(AliasName="alias/other", TargetKeyId=other["KeyId"])
    assert error_code(ei) == "AlreadyExistsException"


def test_rotation_keeps_old_blobs_decryptable(aws_emulator):
    emu = aws_emulator
    kms = kms_client(emu)
    old = kms.encrypt(KeyId="alias/pg-envelope", Plaintext=b"v1")["CiphertextBlob"]
    emu.rotate_key("alias/pg-envelope")
    new = kms.encrypt(KeyId="alias/pg-envelope", Plaintext=b"v2")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=old)["Plaintext"] == b"v1"
    assert kms.decrypt(CiphertextBlob=new)["Plaintext"] == b"v2"


def test_access_denied_for_disallowed_operation(aws_emulator):
    emu = aws_emulator
    emu.add_credentials("AKIDENCRYPTONLY00001", "s3cret", allowed_ops={"Encrypt", "GenerateDataKey"})
    kms = kms_client(emu, "AKIDENCRYPTONLY00001", "s3cret")
    blob = kms.generate_data_key(KeyId="alias/pg-envelope", KeySpec="AES_256")["CiphertextBlob"]
    with pytest.raises(ClientError) as ei:
        kms.decrypt(CiphertextBlob=blob)
    assert error_code(ei) == "AccessDeniedException"
    assert "kms:Decrypt" in ei.value.response["Error"]["Message"]


def test_validation_errors(aws_emulator):
    kms = kms_client(aws_emulator)
    with pytest.raises(ClientError) as ei:
        kms.generate_data_key(KeyId="alias/pg-envelope")                   # neither spec nor bytes
    assert error_code(ei) == "ValidationException"
    with pytest.raises(ClientError) as ei:
        kms.generate_data_key(KeyId="alias/pg-envelope", KeySpec="AES_256", NumberOfBytes=32)
    assert error_code(ei) == "ValidationException"


def test_botocore_throttling_and_internal_error_faults(aws_emulator):
    emu = aws_emulator
    kms = kms_client(emu)
    emu.inject_throttle(count=1, op="Decrypt")
    emu.inject_http_error(500, count=1, op="GenerateDataKey")
    with pytest.raises(ClientError) as ei:
        kms.generate_data_key(KeyId="alias/pg-envelope", KeySpec="AES_256")
    assert error_code(ei) == "KMSInternalException"
    assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    gen = kms.generate_data_key(KeyId="alias/pg-envelope", KeySpec="AES_256")
    with pytest.raises(ClientError) as ei:
        kms.decrypt(CiphertextBlob=gen["CiphertextBlob"])
    assert error_code(ei) == "ThrottlingException"
    assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert kms.decrypt(CiphertextBlob=gen["CiphertextBlob"])["Plaintext"] == gen["Plaintext"]
    assert emu.faulted("Decrypt") == 1 and emu.faulted("GenerateDataKey") == 1


def test_botocore_over_https(kms_pki):
    emu = aws.start(aliases=("pg-envelope",), tls=kms_pki)
    try:
        kms = kms_client(emu, verify=str(kms_pki.ca_cert))
        gen = kms.generate_data_key(KeyId="alias/pg-envelope", KeySpec="AES_256")
        assert kms.decrypt(CiphertextBlob=gen["CiphertextBlob"])["Plaintext"] == gen["Plaintext"]
    finally:
        emu.stop()


# ------------------------------------------------- hand-made SigV4 (independent of botocore)

def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def sign_by_hand(emu, target, payload, *, access_key=DEFAULT_ACCESS_KEY, secret=DEFAULT_SECRET_KEY,
                 when=None, region="us-east-1", service="kms", sign_host=True, body=None):
    """A from-the-spec SigV4 signer (AWS General Reference), returning headers+body."""
    body = body if body is not None else json.dumps(payload).encode()
    when = when or datetime.datetime.now(datetime.timezone.utc)
    amz_date = when.strftime(AMZ)
    headers = {"content-type": "application/x-amz-json-1.1", "host": f"127.0.0.1:{emu.port}",
               "x-amz-date": amz_date, "x-amz-target": f"TrentService.{target}"}
    signed = sorted(h for h in headers if sign_host or h != "host")
    canonical = "\n".join(["POST", "/", "", "".join(f"{h}:{headers[h]}\n" for h in signed),
                           ";".join(signed), hashlib.sha256(body).hexdigest()])
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    sts = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                     hashlib.sha256(canonical.encode()).hexdigest()])
    k = _hmac(("AWS4" + secret).encode(), amz_date[:8])
    for part in (region, service, "aws4_request"):
        k = _hmac(k, part)
    sig = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
                                f"SignedHeaders={';'.join(signed)}, Signature={sig}")
    return headers, body


def send(emu, headers, body):
    return kmshttp.request(emu.url, "POST", "/", body, headers)


def test_sigv4_matches_aws_test_suite_get_vanilla():
    sig, _, _ = compute_sigv4(
        method="GET", host="example.amazonaws.com", path="/", query="",
        headers=[("host", "example.amazonaws.com"), ("x-amz-date", "20150830T123600Z")],
        body=b"", timestamp="20150830T123600Z", access_key="AKIDEXAMPLE",
        secret_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", region="us-east-1",
        service="service")
    assert sig == "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"


def test_hand_signed_request_accepted(aws_emulator):
    h, b = sign_by_hand(aws_emulator, "GenerateDataKey",
                        {"KeyId": "alias/pg-envelope", "KeySpec": "AES_256"})
    r = send(aws_emulator, h, b)
    assert r.status == 200, r
    assert r.headers["Content-Type"] == "application/x-amz-json-1.1"
    assert len(base64.b64decode(r.json["Plaintext"])) == 32


def test_body_tampered_after_signing_is_rejected(aws_emulator):
    h, b = sign_by_hand(aws_emulator, "GenerateDataKey",
                        {"KeyId": "alias/pg-envelope", "KeySpec": "AES_256"})
    r = send(aws_emulator, h, b.replace(b"AES_256", b"AES_128"))
    assert r.status == 400 and r.json["__type"] == "InvalidSignatureException"


def test_skew_limits(aws_emulator):
    now = datetime.datetime.now(datetime.timezone.utc)
    payload = {"KeyId": "alias/pg-envelope"}
    r = send(aws_emulator, *sign_by_hand(aws_emulator, "DescribeKey", payload,
                                         when=now - datetime.timedelta(minutes=10)))
    assert r.status == 200
    r = send(aws_emulator, *sign_by_hand(aws_emulator, "DescribeKey", payload,
                                         when=now - datetime.timedelta(minutes=20)))
    assert r.status == 400 and r.json["__type"] == "InvalidSignatureException"
    assert r.json["message"].startswith("Signature expired:")
    r = send(aws_emulator, *sign_by_hand(aws_emulator, "DescribeKey", payload,
                                         when=now + datetime.timedelta(minutes=20)))
    assert r.status == 400 and r.json["message"].startswith("Signature not yet current:")


def test_wrong_service_in_scope(aws_emulator):
    r = send(aws_emulator, *sign_by_hand(aws_emulator, "DescribeKey",
                                         {"KeyId": "alias/pg-envelope"}, service="s3"))
    assert r.status == 400 and r.json["__type"] == "InvalidSignatureException"
    assert "correct service" in r.json["message"]


def test_host_must_be_signed_and_auth_must_exist(aws_emulator):
    r = send(aws_emulator, *sign_by_hand(aws_emulator, "DescribeKey",
                                         {"KeyId": "alias/pg-envelope"}, sign_host=False))
    assert r.status == 400 and r.json["__type"] == "IncompleteSignatureException"
    r = send(aws_emulator, {"Content-Type": "application/x-amz-json-1.1",
                            "X-Amz-Target": "TrentService.DescribeKey"}, b"{}")
    assert r.status == 400 and r.json["__type"] == "MissingAuthenticationTokenException"


def test_wrong_content_type_and_unknown_target(aws_emulator):
    h, b = sign_by_hand(aws_emulator, "DescribeKey", {"KeyId": "alias/pg-envelope"})
    h["content-type"] = "application/json"
    assert send(aws_emulator, h, b).status == 400
    h, b = sign_by_hand(aws_emulator, "DeleteEverything", {})
    r = send(aws_emulator, h, b)
    assert r.status == 400 and r.json["__type"] == "UnknownOperationException"


# ------------------------------------------------------------- curl --aws-sigv4

def curl_kms(emu, target, payload, user, extra=()):
    out = subprocess.run(
        [CURL, "-sS", "--max-time", "10", "--aws-sigv4", "aws:amz:us-east-1:kms",
         "--user", user, "-H", "Content-Type: application/x-amz-json-1.1",
         "-H", f"X-Amz-Target: TrentService.{target}", *extra,
         "--data-binary", json.dumps(payload), "-w", "\n%{http_code}", emu.url + "/"],
        capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    body, _, code = out.stdout.rpartition("\n")
    return int(code), json.loads(body) if body else None


@needs_curl
def test_curl_aws_sigv4_is_accepted(aws_emulator):
    emu = aws_emulator
    user = f"{DEFAULT_ACCESS_KEY}:{DEFAULT_SECRET_KEY}"
    ctx = {"k": "v"}
    code, gen = curl_kms(emu, "GenerateDataKey", {"KeyId": "alias/pg-envelope",
                                                   "KeySpec": "AES_256", "EncryptionContext": ctx},
                         user)
    assert code == 200, gen
    code, dec = curl_kms(emu, "Decrypt", {"CiphertextBlob": gen["CiphertextBlob"],
                                          "EncryptionContext": ctx}, user)
    assert code == 200 and dec["Plaintext"] == gen["Plaintext"]
    assert emu.calls("GenerateDataKey") == 1 and emu.calls("Decrypt") == 1
    assert emu.rejected() == 0
    auth = emu.request_log[-1]["headers"]["authorization"]
    assert "SignedHeaders=" in auth and "host" in auth


@needs_curl
def test_curl_aws_sigv4_wrong_secret_rejected(aws_emulator):
    code, err = curl_kms(aws_emulator, "DescribeKey", {"KeyId": "alias/pg-envelope"},
                         f"{DEFAULT_ACCESS_KEY}:wrong")
    assert code == 400 and err["__type"] == "InvalidSignatureException"


@needs_curl
def test_curl_aws_sigv4_with_session_token(aws_emulator):
    emu = aws_emulator
    emu.add_credentials("ASIACURL000000000001", "curl-secret", session_token="curl-session")
    code, out = curl_kms(emu, "DescribeKey", {"KeyId": "alias/pg-envelope"},
                         "ASIACURL000000000001:curl-secret",
                         ("-H", "X-Amz-Security-Token: curl-session"))
    assert code == 200, out
    code, out = curl_kms(emu, "DescribeKey", {"KeyId": "alias/pg-envelope"},
                         "ASIACURL000000000001:curl-secret")
    assert code == 400 and out["__type"] == "UnrecognizedClientException"
