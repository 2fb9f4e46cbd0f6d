"""The AWS credential emulators (aws_sts, aws_imds, aws_ecs) against botocore's own
clients and credential fetchers, so they speak the real protocols; and the credentials
they issue against the AWS KMS emulator (accepted until they expire)."""

import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import botocore.session
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.utils import ContainerMetadataFetcher, InstanceMetadataFetcher

from kms_emulators import aws, aws_ecs, aws_imds, aws_sts
from kms_emulators.aws import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY

import kmshttp

ROLE = "arn:aws:iam::111122223333:role/pg-envelope"
OIDC_TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2EifQ.c2lnbmF0dXJl"


@pytest.fixture(autouse=True)
def _no_aws_config(monkeypatch, tmp_path):
    for var in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_CA_BUNDLE", "AWS_ROLE_ARN",
                "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def client(service, url, access_key=DEFAULT_ACCESS_KEY, secret=DEFAULT_SECRET_KEY, token=None, unsigned=False):
    cfg = Config(retries={"max_attempts": 0}, connect_timeout=5, read_timeout=10,
                 signature_version=UNSIGNED if unsigned else None)
    return botocore.session.get_session().create_client(
        service, endpoint_url=url, region_name="us-east-1", aws_access_key_id=access_key,
        aws_secret_access_key=secret, aws_session_token=token, config=cfg)


def code(excinfo):
    return excinfo.value.response["Error"]["Code"]


def kms_round_trip(kms_emu, access_key, secret, token):
    kms = client("kms", kms_emu.url, access_key, secret, token)
    blob = kms.encrypt(KeyId="alias/pg-envelope", Plaintext=b"x" * 48)["CiphertextBlob"]
    return kms.decrypt(CiphertextBlob=blob)["Plaintext"]


# ------------------------------------------------------------------------- STS

def test_sts_assume_role_signed_by_botocore(aws_emulator, aws_sts_emulator):
    sts_emu = aws_sts_emulator
    sts_emu.add_role(ROLE, external_id="ext-4711")
    sts = client("sts", sts_emu.url)
    out = sts.assume_role(RoleArn=ROLE, RoleSessionName="pg_envelope-1", ExternalId="ext-4711",
                          DurationSeconds=900)
    c = out["Credentials"]
    assert c["AccessKeyId"].startswith("ASIA") and len(c["AccessKeyId"]) == 20
    assert out["AssumedRoleUser"]["Arn"] == "arn:aws:sts::111122223333:assumed-role/pg-envelope/pg_envelope-1"
    left = (c["Expiration"] - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
    assert 890 <= left <= 900  # DurationSeconds honoured
    assert sts_emu.calls("AssumeRole") == 1
    assert sts_emu.last_params["AssumeRole"]["ExternalId"] == "ext-4711"
    assert kms_round_trip(aws_emulator, c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"]) == b"x" * 48
    # Without the session token KMS refuses the temporary key.
    with pytest.raises(ClientError) as e:
        kms_round_trip(aws_emulator, c["AccessKeyId"], c["SecretAccessKey"], None)
    assert code(e) == "UnrecognizedClientException"


def test_sts_assume_role_refusals(aws_sts_emulator):
    sts_emu = aws_sts_emulator
    sts_emu.add_role(ROLE, external_id="ext-4711")
    sts = client("sts", sts_emu.url)
    for kw in ({"ExternalId": "wrong"}, {}):
        with pytest.raises(ClientError) as e:
            sts.assume_role(RoleArn=ROLE, RoleSessionName="s1", **kw)
        assert code(e) == "AccessDenied"
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        assert "is not authorized to perform: sts:AssumeRole" in e.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as e:
        sts.assume_role(RoleArn="arn:aws:iam::111122223333:role/other", RoleSessionName="s1", ExternalId="ext-4711")
    assert code(e) == "AccessDenied"
    with pytest.raises(ClientError) as e:
        client("sts", sts_emu.url, secret="wrong").assume_role(RoleArn=ROLE, RoleSessionName="s1")
    assert code(e) == "SignatureDoesNotMatch"
    with pytest.raises(ClientError) as e:
        client("sts", sts_emu.url, access_key="AKIDUNKNOWN000000001").assume_role(RoleArn=ROLE,
                                                                               RoleSessionName="s1")
    assert code(e) == "InvalidClientTokenId"
    with pytest.raises(ClientError) as e:
        client("sts", sts_emu.url, unsigned=True).assume_role(RoleArn=ROLE, RoleSessionName="s1")
    assert code(e) == "MissingAuthenticationToken"
    with pytest.raises(ClientError) as e:
        sts.assume_role(RoleArn=ROLE, RoleSessionName="bad/name", ExternalId="ext-4711")
    assert code(e) == "ValidationError"
    assert sts_emu.calls("AssumeRole") == 4  # the signed ones reached the action
    assert sts_emu.rejected("AssumeRole") == 3


def test_sts_web_identity_unsigned(aws_emulator, aws_sts_emulator):
    sts_emu = aws_sts_emulator
    sts_emu.add_role(ROLE, web_identity_token=OIDC_TOKEN)
    sts = client("sts", sts_emu.url, unsigned=True)
    out = sts.assume_role_with_web_identity(RoleArn=ROLE, RoleSessionName="irsa", WebIdentityToken=OIDC_TOKEN)
    c = out["Credentials"]
    assert out["Audience"] == "sts.amazonaws.com"
    assert kms_round_trip(aws_emulator, c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"]) == b"x" * 48
    with pytest.raises(ClientError) as e:
        sts.assume_role_with_web_identity(RoleArn=ROLE, RoleSessionName="irsa", WebIdentityToken="forged")
    assert code(e) == "InvalidIdentityToken"
    assert "WebIdentityToken" not in sts_emu.last_params["AssumeRoleWithWebIdentity"]
    assert sts_emu.calls("AssumeRoleWithWebIdentity") == 2


def test_sts_short_lifetime_then_kms_says_expired(aws_emulator):
    sts_emu = aws_sts.start(kms=aws_emulator, lifetime=2, roles={ROLE: {}})
    try:
        c = client("sts", sts_emu.url).assume_role(RoleArn=ROLE, RoleSessionName="s1")["Credentials"]
        assert kms_round_trip(aws_emulator, c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"])
        time.sleep(max(0.0, c["Expiration"].timestamp() - time.time()) + 0.2)
        with pytest.raises(ClientError) as e:
            kms_round_trip(aws_emulator, c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"])
        assert code(e) == "ExpiredTokenException"
        # STS itself no longer takes them to sign AssumeRole either.
        with pytest.raises(ClientError) as e:
            client("sts", sts_emu.url, c["AccessKeyId"], c["SecretAccessKey"],
                   c["SessionToken"]).assume_role(RoleArn=ROLE, RoleSessionName="s2")
        assert code(e) == "ExpiredToken"
    finally:
        sts_emu.stop()


def test_sts_role_chaining(aws_emulator, aws_sts_emulator):
    """Credentials STS issued (here by web identity) may sign AssumeRole, with their token."""
    sts_emu = aws_sts_emulator
    sts_emu.add_role(ROLE, web_identity_token=OIDC_TOKEN)
    other = "arn:aws:iam::444455556666:role/other"
    sts_emu.add_role(other)
    first = client("sts", sts_emu.url, unsigned=True).assume_role_with_web_identity(
        RoleArn=ROLE, RoleSessionName="irsa", WebIdentityToken=OIDC_TOKEN)["Credentials"]
    chained = client("sts", sts_emu.url, first["AccessKeyId"], first["SecretAccessKey"], first["SessionToken"])
    c = chained.assume_role(RoleArn=other, RoleSessionName="chained")["Credentials"]
    assert kms_round_trip(aws_emulator, c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"]) == b"x" * 48
    with pytest.raises(ClientError) as e:  # the session token is part of the caller's identity
        client("sts", sts_emu.url, first["AccessKeyId"], first["SecretAccessKey"], "wrong-token").assume_role(
            RoleArn=other, RoleSessionName="chained")
    assert code(e) == "InvalidClientTokenId"


def test_sts_throttle_and_errors_are_xml(aws_sts_emulator):
    aws_sts_emulator.add_role(ROLE)
    aws_sts_emulator.inject_throttle(count=1)
    with pytest.raises(ClientError) as e:
        client("sts", aws_sts_emulator.url).assume_role(RoleArn=ROLE, RoleSessionName="s1")
    assert code(e) == "Throttling"
    r = kmshttp.request(aws_sts_emulator.url, "POST", "/", body="Action=Nope&Version=2011-06-15",
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status == 400 and b"<Code>InvalidAction</Code>" in r.body and b"<ErrorResponse" in r.body


def test_kms_expire_credentials(aws_emulator):
    aws_emulator.add_credentials("ASIATEMP000000000001", "temp/secret", "temp-token", expires_at=time.time() + 600)
    assert kms_round_trip(aws_emulator, "ASIATEMP000000000001", "temp/secret", "temp-token")
    assert aws_emulator.expire_credentials("ASIATEMP000000000001") == 1
    with pytest.raises(ClientError) as e:
        kms_round_trip(aws_emulator, "ASIATEMP000000000001", "temp/secret", "temp-token")
    assert code(e) == "ExpiredTokenException"
    assert aws_emulator.expire_credentials(DEFAULT_ACCESS_KEY) == 0  # static keys never expire


# ------------------------------------------------------------------------- IMDS

def imds_fetcher(emu):
    return InstanceMetadataFetcher(timeout=2, num_attempts=1, base_url=emu.url + "/", env={})


def test_imds_v2_with_botocore(aws_emulator, aws_imds_emulator):
    emu = aws_imds_emulator
    creds = imds_fetcher(emu).retrieve_iam_role_credentials()
    assert creds["role_name"] == aws_imds.DEFAULT_ROLE
    assert emu.calls("PutToken") == 1 and emu.calls("ListRoles") == 1 and emu.calls("GetCredentials") == 1
    assert emu.rejected() == 0
    assert kms_round_trip(aws_emulator, creds["access_key"], creds["secret_key"], creds["token"]) == b"x" * 48
    # The same credentials until they near their expiry, as IMDS does.
    again = imds_fetcher(emu).retrieve_iam_role_credentials()
    assert again["access_key"] == creds["access_key"]


def test_imds_requires_a_live_token(aws_imds_emulator):
    emu = aws_imds_emulator
    path = aws_imds.CREDS_PATH
    assert kmshttp.request(emu.url, "GET", path).status == 401          # IMDSv1: refused
    assert kmshttp.request(emu.url, "GET", path, headers={aws_imds.TOKEN_HEADER: "made-up"}).status == 401
    assert kmshttp.request(emu.url, "PUT", aws_imds.TOKEN_PATH).status == 400  # TTL header missing
    assert kmshttp.request(emu.url, "PUT", aws_imds.TOKEN_PATH, headers={aws_imds.TTL_HEADER: "21601"}).status == 400
    assert kmshttp.request(emu.url, "PUT", aws_imds.TOKEN_PATH,
                           headers={aws_imds.TTL_HEADER: "60", "X-Forwarded-For": "10.0.0.1"}).status == 403
    r = kmshttp.request(emu.url, "PUT", aws_imds.TOKEN_PATH, headers={aws_imds.TTL_HEADER: "1"})
    assert r.status == 200 and r.headers[aws_imds.TTL_HEADER] == "1"
    token = r.body.decode()
    r = kmshttp.request(emu.url, "GET", path, headers={aws_imds.TOKEN_HEADER: token})
    assert r.status == 200 and r.body.decode() == aws_imds.DEFAULT_ROLE
    time.sleep(1.1)  # the TTL asked for is honoured
    assert kmshttp.request(emu.url, "GET", path, headers={aws_imds.TOKEN_HEADER: token}).status == 401
    assert emu.rejected("ListRoles") == 3


def test_imds_v1_only_and_no_role(aws_emulator):
    v1 = aws_imds.start(v1_only=True, kms=aws_emulator)
    try:
        assert kmshttp.request(v1.url, "PUT", aws_imds.TOKEN_PATH, headers={aws_imds.TTL_HEADER: "60"}).status == 404
        r = kmshttp.request(v1.url, "GET", aws_imds.CREDS_PATH)
        assert r.status == 200
        c = json.loads(kmshttp.request(v1.url, "GET", aws_imds.CREDS_PATH + r.body.decode()).body)
        assert c["Code"] == "Success" and c["Type"] == "AWS-HMAC"
    finally:
        v1.stop()
    none = aws_imds.start(role=None)
    try:
        assert imds_fetcher(none).retrieve_iam_role_credentials() == {}  # botocore: no role, no credentials
        assert none.calls("ListRoles") == 1 and none.errors("ListRoles") == 1
        assert none.calls("GetCredentials") == 0
    finally:
        none.stop()


# ------------------------------------------------------------------------- ECS / EKS Pod Identity

def test_container_endpoint_with_botocore(aws_emulator, aws_ecs_emulator):
    emu = aws_ecs_emulator
    fetcher = ContainerMetadataFetcher()
    creds = fetcher.retrieve_full_uri(emu.full_uri, headers={"Authorization": "ecs-auth-token-0001"})
    assert creds["RoleArn"].endswith(":role/pg-envelope-task")
    assert kms_round_trip(aws_emulator, creds["AccessKeyId"], creds["SecretAccessKey"], creds["Token"]) == b"x" * 48
    for headers in ({}, {"Authorization": "wrong"}):
        r = kmshttp.request(emu.url, "GET", emu.path, headers=headers)
        assert r.status == 401, r
    assert emu.calls("GetCredentials") == 1 and emu.rejected("GetCredentials") == 2
    assert kmshttp.request(emu.url, "GET", "/v2/credentials/other",
                           headers={"Authorization": "ecs-auth-token-0001"}).status == 404


# ------------------------------------------------------------------------- CLI, cross-process

def test_cli_sts_registers_credentials_with_kms_url(aws_emulator):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    p = subprocess.Popen([sys.executable, "-m", "kms_emulators", "aws_sts", "--print-url", "--exit-on-stdin-eof",
                          "--kms-url", aws_emulator.url, "--role", f"{ROLE},external_id=cli-ext", "--lifetime", "60"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
    try:
        url = p.stdout.readline().strip()
        info = json.loads(p.stdout.readline())
        assert info["provider"] == "aws_sts" and info["roles"] == [ROLE]
        c = client("sts", url).assume_role(RoleArn=ROLE, RoleSessionName="cli", ExternalId="cli-ext")["Credentials"]
        assert kms_round_trip(aws_emulator, c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"]) == b"x" * 48
    finally:
        p.stdin.close()
        p.wait(timeout=10)
