"""The aws-kms provider's credential chain against a real cluster and the loopback
emulators (test/kms_emulators: aws, aws_sts, aws_imds, aws_ecs): each source end to
end (create_key, encrypt, decrypt through AWS KMS with that source only), the chain's
order, temporary credentials refreshed before they expire and refetched once when KMS
calls them expired, role assumption with an external id, an IMDSv1-only service
refused, option checks, and no credential, token or secret in the server log or in
any error. The emulators' call counters are the oracle.

The postmaster inherits this process's environment (monkeypatch) when it starts, so
every test sets the AWS_* variables first and restarts the cluster to change them.
"""
from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

import psycopg2
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # <repo>/test
from kms_emulators import aws, aws_ecs, aws_imds, aws_sts  # noqa: E402

from pgcluster import pg_error  # noqa: E402

ROLE = "arn:aws:iam::111122223333:role/pg-envelope"
OIDC_TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6cGcifQ.c2lnbmF0dXJlLTQ3MTE"
POD_TOKEN = "eks-pod-identity-token-4711"
PLAIN = "patient 4711 has allergies"

AWS_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
            "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN",
            "AWS_ROLE_SESSION_NAME", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN",
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "AWS_EC2_METADATA_DISABLED",
            "AWS_EC2_METADATA_SERVICE_ENDPOINT", "AWS_REGION", "AWS_DEFAULT_REGION")


@pytest.fixture
def env(monkeypatch, tmp_path):
    """A clean AWS environment for the postmaster: no variable set, HOME without .aws,
    the instance-metadata service off unless a test turns it on."""
    for v in AWS_VARS:
        monkeypatch.delenv(v, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return monkeypatch


@pytest.fixture
def kms():
    emu = aws.start(aliases=("pg-envelope",))
    yield emu
    emu.stop()


@pytest.fixture
def emulators(kms):
    """STS, IMDS and a container endpoint, all issuing credentials `kms` accepts."""
    sts = aws_sts.start(kms=kms, roles={ROLE: {"external_id": "ext-4711", "web_identity_token": OIDC_TOKEN}})
    imds = aws_imds.start(kms=kms)
    ecs = aws_ecs.start(kms=kms, auth_token=POD_TOKEN, path="/v1/credentials")
    yield sts, imds, ecs
    for e in (sts, imds, ecs):
        e.stop()


def start_cluster(cluster_factory):
    pg = cluster_factory.create("awscreds", settings={"envelope.kms_request_timeout": "3s",
                                                      "envelope.kms_retry_budget": "6s"})
    pg.sql("CREATE EXTENSION pg_envelope")
    return pg


def options(kms, **extra):
    return {"region": "us-east-1", "endpoint": kms.url, **extra}


def round_trip(pg, opts, name="aws", key="k1"):
    """create_kms + create_key + encrypt + decrypt on one connection (one backend),
    then a decrypt in a new backend after the shared DEK cache was flushed."""
    conn = pg.connect()
    cur = conn.cursor()
    cur.execute("SELECT envelope.create_kms(%s, 'aws-kms', %s::jsonb)", (name, json.dumps(opts)))
    cur.execute("SELECT envelope.create_key(%s, kms => %s, kek => 'alias/pg-envelope')", (key, name))
    cur.execute("SELECT envelope.decrypt_field(envelope.encrypt_field(%s, %s))", (PLAIN, key))
    assert cur.fetchone()[0] == PLAIN
    conn.close()
    pg.sql("SELECT envelope.cache_flush()")
    assert pg.scalar("SELECT envelope.decrypt_field(envelope.encrypt_field(%s, %s))", (PLAIN, key)) == PLAIN


def expect_error(pg, query, params=None):
    cur = pg.connect().cursor()
    with pytest.raises(psycopg2.Error) as e:
        cur.execute(query, params)
    return pg_error(e)


def error_text(err):
    return " ".join(str(err.get(k) or "") for k in ("message", "detail", "hint"))


def signed_with(kms):
    """The access key ids that signed the KMS requests so far."""
    ids = set()
    for r in kms.request_log:
        auth = r["headers"].get("authorization", "")
        if "Credential=" in auth:
            ids.add(auth.split("Credential=", 1)[1].split("/", 1)[0])
    return ids


def closed_port_url():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


# --------------------------------------------------------------------------- each source


def test_web_identity_irsa(cluster_factory, env, kms, emulators, tmp_path):
    sts, imds, ecs = emulators
    token_file = tmp_path / "token"
    token_file.write_text(OIDC_TOKEN + "\n")
    token_file.chmod(0o644)  # as Kubernetes projects it
    env.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token_file))
    env.setenv("AWS_ROLE_ARN", ROLE)
    env.setenv("AWS_ROLE_SESSION_NAME", "pg-irsa")
    pg = start_cluster(cluster_factory)
    round_trip(pg, options(kms, sts_endpoint=sts.url))
    # One AssumeRoleWithWebIdentity for the server: the second backend finds the
    # credentials in the shared credential store.
    assert sts.calls("AssumeRoleWithWebIdentity") == 1
    assert sts.last_params["AssumeRoleWithWebIdentity"]["RoleSessionName"] == "pg-irsa"
    assert sts.calls("AssumeRole") == imds.calls() == ecs.calls() == 0
    assert kms.rejected() == 0
    assert all(k.startswith("ASIA") for k in signed_with(kms))
    pg.assert_log_free_of([OIDC_TOKEN] + sts.issuer.secrets())

    # A token STS does not accept: 28000 naming the action and STS's code, no token shown.
    token_file.write_text("forged-token-value\n")
    pg.restart()  # the credentials fetched with the good token are shared until they expire
    pg.sql("SELECT envelope.cache_flush()")
    err = expect_error(pg, "SELECT envelope.decrypt_field(envelope.encrypt_field('x', 'k1'))")
    assert err["sqlstate"] == "28000", err
    assert err["message"] == 'KMS "aws" AssumeRoleWithWebIdentity failed: InvalidIdentityToken', err
    assert "forged-token-value" not in error_text(err)
    pg.assert_log_free_of([OIDC_TOKEN, "forged-token-value"] + sts.issuer.secrets())


def test_container_relative_uri_ecs(cluster_factory, env, kms):
    ecs = aws_ecs.start(kms=kms, path="/v2/credentials/6f1a2c3d-task")
    try:
        env.setenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/credentials/6f1a2c3d-task")
        pg = start_cluster(cluster_factory)
        round_trip(pg, options(kms, container_endpoint=ecs.url))
        assert ecs.calls("GetCredentials") == 1 and ecs.rejected() == 0  # shared by both backends
        assert kms.rejected() == 0
        pg.assert_log_free_of(ecs.issuer.secrets())
    finally:
        ecs.stop()


def test_container_full_uri_eks_pod_identity(cluster_factory, env, kms, emulators, tmp_path):
    sts, imds, ecs = emulators
    token_file = tmp_path / "eks-pod-identity-token"
    token_file.write_text(POD_TOKEN)
    token_file.chmod(0o644)
    env.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", ecs.full_uri)
    env.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", str(token_file))
    pg = start_cluster(cluster_factory)
    round_trip(pg, options(kms))
    assert ecs.calls("GetCredentials") == 1 and ecs.rejected() == 0  # shared by both backends
    assert sts.calls() == imds.calls() == 0
    # The Authorization header carried the file's token.
    assert {r["headers"].get("authorization") for r in ecs.request_log} == {POD_TOKEN}

    # A wrong token: the endpoint's 401 is a 28000; the token is in no error and no log line.
    token_file.write_text("stale-pod-token")
    pg.restart()  # the credentials fetched with the good token are shared until they expire
    pg.sql("SELECT envelope.cache_flush()")
    err = expect_error(pg, "SELECT envelope.decrypt_field(envelope.encrypt_field('x', 'k1'))")
    assert err["sqlstate"] == "28000", err
    assert err["message"] == 'KMS "aws" container credentials request failed: HTTP 401', err
    assert "stale-pod-token" not in error_text(err) and POD_TOKEN not in error_text(err)
    pg.assert_log_free_of([POD_TOKEN, "stale-pod-token"] + ecs.issuer.secrets())


def test_container_full_uri_with_token_variable(cluster_factory, env, kms, emulators):
    sts, imds, ecs = emulators
    env.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", ecs.full_uri)
    env.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", POD_TOKEN)
    pg = start_cluster(cluster_factory)
    round_trip(pg, options(kms))
    assert ecs.calls("GetCredentials") == 1 and ecs.rejected() == 0  # shared by both backends
    pg.assert_log_free_of([POD_TOKEN] + ecs.issuer.secrets())


def test_ec2_instance_profile_imdsv2(cluster_factory, env, kms, emulators):
    sts, imds, ecs = emulators
    env.delenv("AWS_EC2_METADATA_DISABLED")
    env.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url)  # the variable works as well as the option
    pg = start_cluster(cluster_factory)
    round_trip(pg, options(kms))
    # IMDSv2 only: every GET carried a token (none was refused); one token and one
    # credential fetch for the server (the second backend uses the shared credentials).
    assert imds.calls("PutToken") == 1 and imds.calls("GetCredentials") == 1
    assert imds.rejected() == 0
    assert all(r["headers"].get("x-aws-ec2-metadata-token") for r in imds.request_log if r["method"] == "GET")
    assert sts.calls() == ecs.calls() == 0 and kms.rejected() == 0
    pg.assert_log_free_of(imds.issuer.secrets())


def test_imds_refresh_with_an_expired_session_token(cluster_factory, env, kms):
    """Credentials near expiry are fetched again; the cached IMDSv2 session token was
    expired by the service meanwhile: its 401 costs one new token, never an IMDSv1 call."""
    imds = aws_imds.start(kms=kms, lifetime=4)
    try:
        env.delenv("AWS_EC2_METADATA_DISABLED")
        pg = start_cluster(cluster_factory)
        cur = pg.connect().cursor()
        cur.execute("SELECT envelope.create_kms('aws', 'aws-kms', %s::jsonb)",
                    (json.dumps(options(kms, ec2_metadata_endpoint=imds.url)),))
        cur.execute("SELECT envelope.create_key('k1', kms => 'aws', kek => 'alias/pg-envelope')")
        cur.execute("SELECT envelope.encrypt_field(%s, 'k1')", (PLAIN,))
        sealed = cur.fetchone()[0]
        assert (imds.calls("PutToken"), imds.calls("GetCredentials")) == (1, 1)
        time.sleep(2.6)
        imds.expire_tokens()
        pg.sql("SELECT envelope.cache_flush()")
        cur.execute("SELECT envelope.decrypt_field(%s::envelope.encrypted_text)", (sealed,))
        assert cur.fetchone()[0] == PLAIN
        assert (imds.calls("PutToken"), imds.calls("GetCredentials")) == (2, 2)
        assert imds.rejected() == 1 and kms.rejected() == 0
        assert all(r["headers"].get("x-aws-ec2-metadata-token") for r in imds.request_log if r["method"] == "GET")
        pg.assert_log_free_of(imds.issuer.secrets())
    finally:
        imds.stop()


def test_imdsv1_only_service_is_refused(cluster_factory, env, kms):
    v1 = aws_imds.start(kms=kms, v1_only=True)
    try:
        env.delenv("AWS_EC2_METADATA_DISABLED")
        pg = start_cluster(cluster_factory)
        pg.sql("SELECT envelope.create_kms('aws', 'aws-kms', %s::jsonb)",
               (json.dumps(options(kms, ec2_metadata_endpoint=v1.url)),))
        err = expect_error(pg, "SELECT envelope.create_key('k1', kms => 'aws', kek => 'alias/pg-envelope')")
        assert err["sqlstate"] == "28000", err
        assert err["message"] == 'KMS "aws" instance metadata token request failed: HTTP 404', err
        assert "never uses IMDSv1" in err["detail"], err
        # Not a single request without a token: the service saw the PUT only.
        assert {r["method"] for r in v1.request_log} == {"PUT"}
        assert v1.calls("ListRoles") == v1.calls("GetCredentials") == 0
        assert kms.calls() == 0
    finally:
        v1.stop()


# --------------------------------------------------------------------------- chain order


def test_chain_order(cluster_factory, env, kms, emulators, tmp_path):
    """Every source configured at once; then the first one removed, and so on: the
    counters show which source answered each time."""
    sts, imds, ecs = emulators
    token_file = tmp_path / "token"
    token_file.write_text(OIDC_TOKEN)
    creds_file = tmp_path / "credentials"
    creds_file.write_text("[default]\naws_access_key_id = AKIDFILE000000000001\n"
                          "aws_secret_access_key = file/secret/0001\n")
    creds_file.chmod(0o600)
    kms.add_credentials("AKIDFILE000000000001", "file/secret/0001")
    env.setenv("AWS_ACCESS_KEY_ID", aws.DEFAULT_ACCESS_KEY)
    env.setenv("AWS_SECRET_ACCESS_KEY", aws.DEFAULT_SECRET_KEY)
    env.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token_file))
    env.setenv("AWS_ROLE_ARN", ROLE)
    env.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds_file))
    env.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", ecs.full_uri)
    env.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", POD_TOKEN)
    env.delenv("AWS_EC2_METADATA_DISABLED")
    env.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url)
    pg = start_cluster(cluster_factory)
    opts = options(kms, sts_endpoint=sts.url)
    pg.sql("SELECT envelope.create_kms('aws', 'aws-kms', %s::jsonb)", (json.dumps(opts),))

    def used(n):
        kms.request_log.clear()
        pg.sql("SELECT envelope.cache_flush()")
        assert pg.scalar("SELECT envelope.decrypt_field(envelope.encrypt_field(%s, 'k1'))", (PLAIN,)) == PLAIN
        counts = (sts.calls(), ecs.calls(), imds.calls("GetCredentials"))
        return signed_with(kms), counts

    pg.sql("SELECT envelope.create_key('k1', kms => 'aws', kek => 'alias/pg-envelope')")
    # 1. environment
    ids, counts = used(1)
    assert ids == {aws.DEFAULT_ACCESS_KEY} and counts == (0, 0, 0)
    # 2. web identity
    env.delenv("AWS_ACCESS_KEY_ID")
    pg.restart()
    ids, counts = used(2)
    assert counts == (1, 0, 0) and all(i.startswith("ASIA") for i in ids)
    # 3. the shared credentials file
    env.delenv("AWS_WEB_IDENTITY_TOKEN_FILE")
    pg.restart()
    ids, counts = used(3)
    assert ids == {"AKIDFILE000000000001"} and counts == (1, 0, 0)
    # 4. the container endpoint
    env.delenv("AWS_SHARED_CREDENTIALS_FILE")
    pg.restart()
    ids, counts = used(4)
    assert counts == (1, 1, 0) and all(i.startswith("ASIA") for i in ids)
    # 5. the instance-metadata service
    env.delenv("AWS_CONTAINER_CREDENTIALS_FULL_URI")
    pg.restart()
    ids, counts = used(5)
    assert counts == (1, 1, 1) and all(i.startswith("ASIA") for i in ids)
    # 6. nothing: 28000 naming every source that was looked at
    env.setenv("AWS_EC2_METADATA_DISABLED", "true")
    pg.restart()
    pg.sql("SELECT envelope.cache_flush()")
    err = expect_error(pg, "SELECT envelope.decrypt_field(envelope.encrypt_field('x', 'k1'))")
    assert err["sqlstate"] == "28000" and err["message"] == 'KMS "aws" authentication failed: no AWS credentials'
    for part in ("AWS_ACCESS_KEY_ID", "AWS_WEB_IDENTITY_TOKEN_FILE", "shared credentials file",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_EC2_METADATA_DISABLED"):
        assert part in err["detail"], err
    secrets = [aws.DEFAULT_SECRET_KEY, "file/secret/0001", OIDC_TOKEN, POD_TOKEN]
    pg.assert_log_free_of(secrets + sts.issuer.secrets() + ecs.issuer.secrets() + imds.issuer.secrets())


def test_unreachable_instance_metadata_means_no_credentials(cluster_factory, env, kms):
    env.delenv("AWS_EC2_METADATA_DISABLED")
    pg = start_cluster(cluster_factory)
    url = closed_port_url()
    pg.sql("SELECT envelope.create_kms('aws', 'aws-kms', %s::jsonb)",
           (json.dumps(options(kms, ec2_metadata_endpoint=url)),))
    t0 = time.monotonic()
    err = expect_error(pg, "SELECT envelope.create_key('k1', kms => 'aws', kek => 'alias/pg-envelope')")
    assert time.monotonic() - t0 < 6
    assert err["sqlstate"] == "28000" and "no AWS credentials" in err["message"], err
    assert f"instance-metadata service at {url} did not answer" in err["detail"], err


# --------------------------------------------------------------------------- expiry


def test_expiry_mid_run_is_refreshed_and_expired_credentials_refetched_once(cluster_factory, env, kms, tmp_path):
    sts = aws_sts.start(kms=kms, lifetime=4, roles={ROLE: {"web_identity_token": OIDC_TOKEN}})
    try:
        token_file = tmp_path / "token"
        token_file.write_text(OIDC_TOKEN)
        env.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token_file))
        env.setenv("AWS_ROLE_ARN", ROLE)
        pg = start_cluster(cluster_factory)
        conn = pg.connect()  # one backend throughout: its credential cache is what is tested
        cur = conn.cursor()
        cur.execute("SELECT envelope.create_kms('aws', 'aws-kms', %s::jsonb)",
                    (json.dumps(options(kms, sts_endpoint=sts.url)),))
        cur.execute("SELECT envelope.create_key('k1', kms => 'aws', kek => 'alias/pg-envelope')")
        cur.execute("SELECT envelope.encrypt_field(%s, 'k1')", (PLAIN,))
        sealed = cur.fetchone()[0]

        def decrypt_via_kms():
            pg.sql("SELECT envelope.cache_flush()")
            cur.execute("SELECT envelope.decrypt_field(%s::envelope.encrypted_text)", (sealed,))
            assert cur.fetchone()[0] == PLAIN

        assert sts.calls() == 1
        decrypt_via_kms()
        assert sts.calls() == 1  # cached: still far from expiry
        # Past the refresh point (half of a few seconds' lifetime): fetched again before
        # KMS could call them expired.
        time.sleep(2.6)
        decrypt_via_kms()
        assert sts.calls() == 2 and kms.rejected() == 0
        # Revoked early: KMS answers ExpiredTokenException, the backend fetches new
        # credentials once and the call succeeds.
        assert kms.expire_credentials() >= 2
        decrypt_via_kms()
        assert sts.calls() == 3
        assert kms.rejected("Decrypt") == 1
        # Expired again, and STS now refuses: one refetch only, then a clear 28000.
        kms.expire_credentials()
        token_file.write_text("revoked")
        pg.sql("SELECT envelope.cache_flush()")
        with pytest.raises(psycopg2.Error) as e:
            cur.execute("SELECT envelope.decrypt_field(%s::envelope.encrypted_text)", (sealed,))
        err = pg_error(e)
        assert err["sqlstate"] == "28000" and "AssumeRoleWithWebIdentity failed" in err["message"], err
        assert sts.calls() == 4 and kms.rejected("Decrypt") == 2
        pg.assert_log_free_of([OIDC_TOKEN] + sts.issuer.secrets())
    finally:
        sts.stop()


# --------------------------------------------------------------------------- role assumption


def test_role_assumption_with_external_id(cluster_factory, env, kms, emulators):
    sts, imds, ecs = emulators
    env.setenv("AWS_ACCESS_KEY_ID", aws.DEFAULT_ACCESS_KEY)  # the base credentials (STS knows them)
    env.setenv("AWS_SECRET_ACCESS_KEY", aws.DEFAULT_SECRET_KEY)
    kms.remove_credentials(aws.DEFAULT_ACCESS_KEY)  # KMS accepts only the role's credentials
    pg = start_cluster(cluster_factory)
    role = {"role_arn": ROLE, "external_id": "ext-4711", "role_session_name": "pg-prod",
            "duration_seconds": 900, "sts_endpoint": sts.url}
    round_trip(pg, options(kms, **role))
    assert sts.calls("AssumeRole") == 1 and sts.rejected() == 0  # shared by both backends
    p = sts.last_params["AssumeRole"]
    assert (p["ExternalId"], p["RoleSessionName"], p["DurationSeconds"]) == ("ext-4711", "pg-prod", "900")
    assert all(i.startswith("ASIA") for i in signed_with(kms)) and kms.rejected() == 0

    # The wrong external id: STS refuses, a clear 28000 that names role and STS.
    wrong = options(kms, role_arn=ROLE, external_id="ext-0000", sts_endpoint=sts.url)
    pg.sql("SELECT envelope.create_kms('aws2', 'aws-kms', %s::jsonb)", (json.dumps(wrong),))
    err = expect_error(pg, "SELECT envelope.create_key('k2', kms => 'aws2', kek => 'alias/pg-envelope')")
    assert err["sqlstate"] == "28000", err
    assert err["message"] == 'KMS "aws2" AssumeRole failed: AccessDenied', err
    assert ROLE in err["detail"] and sts.url in err["detail"], err
    assert aws.DEFAULT_SECRET_KEY not in error_text(err)
    pg.assert_log_free_of([aws.DEFAULT_SECRET_KEY] + sts.issuer.secrets())


def test_role_assumed_on_top_of_web_identity(cluster_factory, env, kms, emulators, tmp_path):
    """IRSA credentials (temporary, with a session token) sign AssumeRole for a second
    role: the cross-account pattern. KMS sees only the second role's keys."""
    sts, imds, ecs = emulators
    target = "arn:aws:iam::444455556666:role/pg-envelope-keys"
    sts.add_role(target, external_id="cross-account-1")
    token_file = tmp_path / "token"
    token_file.write_text(OIDC_TOKEN)
    env.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token_file))
    env.setenv("AWS_ROLE_ARN", ROLE)
    pg = start_cluster(cluster_factory)
    round_trip(pg, options(kms, sts_endpoint=sts.url, role_arn=target, external_id="cross-account-1"))
    assert sts.calls("AssumeRoleWithWebIdentity") == 1 and sts.calls("AssumeRole") == 1  # shared
    assert sts.rejected() == 0 and kms.rejected() == 0
    # The web identity credentials went to STS only: every KMS request was signed by
    # keys that AssumeRole handed out (the 2nd set issued, shared by both backends).
    issued = [c["AccessKeyId"] for c in sts.issuer.issued]
    assert len(issued) == 2 and signed_with(kms) == {issued[1]}
    pg.assert_log_free_of([OIDC_TOKEN] + sts.issuer.secrets())


def test_role_options_are_checked(cluster_factory, env, kms):
    pg = start_cluster(cluster_factory)
    cases = [
        ({"role_arn": "arn:aws:iam::123:role/x"}, '"role_arn"'),
        ({"role_arn": ROLE, "duration_seconds": 600}, '"duration_seconds"'),
        ({"role_arn": ROLE, "duration_seconds": "forever"}, '"duration_seconds"'),
        ({"role_arn": ROLE, "role_session_name": "a b"}, '"role_session_name"'),
        ({"role_arn": ROLE, "external_id": "x"}, '"external_id"'),
        ({"external_id": "ext-4711"}, '"external_id"'),
        ({"sts_endpoint": "http://sts.example.com"}, "https"),
        ({"ec2_metadata_endpoint": "http://10.0.0.1"}, "https"),
        ({"container_endpoint": "http://10.0.0.1"}, '"container_endpoint"'),
        ({"role_arn": 42}, '"role_arn"'),
    ]
    for extra, needle in cases:
        err = expect_error(pg, "SELECT envelope.create_kms('bad', 'aws-kms', %s::jsonb)",
                           (json.dumps(options(kms, **extra)),))
        assert err["sqlstate"] == "22023", (extra, err)
        assert needle in error_text(err), (extra, err)
    # Good values are accepted (nothing is contacted when a KMS is created).
    pg.sql("SELECT envelope.create_kms('good', 'aws-kms', %s::jsonb)",
           (json.dumps(options(kms, role_arn=ROLE, external_id="ext-4711", role_session_name="pg",
                               duration_seconds="3600", sts_endpoint="https://sts.eu-west-1.amazonaws.com",
                               ec2_metadata_endpoint="http://169.254.169.254",
                               container_endpoint="http://169.254.170.2")),))
