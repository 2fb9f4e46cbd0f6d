"""The server-wide credential store (issue 15 goal 5; src/pg/shared_credentials.hpp):
AWS temporary credentials (STS AssumeRoleWithWebIdentity) and Vault AppRole login tokens
fetched once for the whole server, not once per backend. The emulators' call counters
(test/kms_emulators) are the oracle: 200 new connections, each with a cold backend and
a flushed DEK cache (so that each makes a KMS call), cost one STS call / one login per
credential lifetime; a credential due for refresh is refreshed once for all backends
(single flight, also when they arrive together); a failed refresh keeps the stored
credential in service until it expires, then a clear error; a backend terminated in the
middle of a fetch does not wedge the slot; no credential in the server log, in an error,
or in envelope.credential_cache_stats(); the slots are excluded from core dumps.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import psycopg2
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # <repo>/test
from kms_emulators import aws, aws_sts, azure, gcp, vault  # noqa: E402

from pgcluster import pg_error  # noqa: E402

ROLE = "arn:aws:iam::111122223333:role/pg-envelope"
OIDC_TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6cGcifQ.c2hhcmVkLWNyZWRz"
SECRET_ID = "5ecre7-1d-shared-store-77aa"
PLAIN = "patient 4711 has allergies"
AWS_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
            "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN",
            "AWS_ROLE_SESSION_NAME", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN",
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "AWS_EC2_METADATA_DISABLED",
            "AWS_EC2_METADATA_SERVICE_ENDPOINT", "AWS_REGION", "AWS_DEFAULT_REGION")
SETTINGS = {"envelope.kms_request_timeout": "3s", "envelope.kms_retry_budget": "6s",
            "envelope.cache_entries": "16", "huge_pages": "off"}


# --------------------------------------------------------------------------- set-ups


class AwsSetup:
    """aws-kms with IRSA (web identity through STS): the credentials come from STS."""

    def __init__(self, cluster_factory, monkeypatch, tmp_path, lifetime=None):
        for v in AWS_VARS:
            monkeypatch.delenv(v, raising=False)
        home = tmp_path / "home"
        home.mkdir(exist_ok=True)
        monkeypatch.setenv("HOME", str(home))
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        self.kms = aws.start(aliases=("pg-envelope",))
        self.sts = aws_sts.start(kms=self.kms, roles={ROLE: {"web_identity_token": OIDC_TOKEN}}, lifetime=lifetime)
        token_file = tmp_path / "token"
        token_file.write_text(OIDC_TOKEN + "\n")
        token_file.chmod(0o644)
        monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token_file))
        monkeypatch.setenv("AWS_ROLE_ARN", ROLE)
        self.pg = cluster_factory.create("sharedcreds", settings=SETTINGS)
        self.pg.sql("CREATE EXTENSION pg_envelope")
        opts = {"region": "us-east-1", "endpoint": self.kms.url, "sts_endpoint": self.sts.url}
        self.pg.sql("SELECT envelope.create_kms('aws', 'aws-kms', %s::jsonb)", (json.dumps(opts),))
        self.pg.sql("SELECT envelope.create_key('k1', kms => 'aws', kek => 'alias/pg-envelope')")
        self.pg.sql("CREATE TABLE t (v envelope.encrypted_text)")
        self.pg.sql("INSERT INTO t SELECT envelope.encrypt_field(%s, 'k1')", (PLAIN,))

    def fetches(self):
        return self.sts.calls("AssumeRoleWithWebIdentity")

    def unwraps(self):
        return self.kms.calls("Decrypt")

    def secrets(self):
        return [OIDC_TOKEN] + self.sts.issuer.secrets()

    def stop(self):
        self.sts.stop()
        self.kms.stop()


class VaultSetup:
    """vault-transit with an AppRole login."""

    def __init__(self, cluster_factory, ttl=3600):
        self.emu = vault.start(keys=("pg-envelope",))
        role_id, _ = self.emu.add_approle("pg-envelope", secret_id=SECRET_ID, ttl=ttl, max_ttl=86400)
        self.pg = cluster_factory.create("sharedcreds", settings=SETTINGS)
        self.pg.sql("CREATE EXTENSION pg_envelope")
        opts = {"address": self.emu.url, "auth_method": "approle", "role_id": role_id,
                "secret_id_file": str(self.pg.write_file("vault.secret_id", SECRET_ID + "\n"))}
        self.pg.sql("SELECT envelope.create_kms('v', 'vault-transit', %s::jsonb)", (json.dumps(opts),))
        self.pg.sql("SELECT envelope.create_key('k1', kms => 'v', kek => 'pg-envelope')")
        self.pg.sql("CREATE TABLE t (v envelope.encrypted_text)")
        self.pg.sql("INSERT INTO t SELECT envelope.encrypt_field(%s, 'k1')", (PLAIN,))

    def fetches(self):
        return self.emu.calls("approle/login")

    def unwraps(self):
        return self.emu.calls("decrypt")

    def secrets(self):
        return [SECRET_ID] + self.emu.issued_tokens()

    def stop(self):
        self.emu.stop()


class CloudSetup:
    """gcp-kms with a service-account key (a JWT grant at Google's token endpoint), or
    azure-keyvault with the managed identity's token from IMDS (the metadata path)."""

    def __init__(self, cluster_factory, provider):
        self.provider = provider
        self.pg = cluster_factory.create("sharedcreds", settings=SETTINGS)
        self.pg.sql("CREATE EXTENSION pg_envelope")
        if provider == "gcp":
            self.emu = gcp.start(keys=("pg-envelope",))
            kf = self.emu.add_service_account()
            self.private_key = kf["private_key"]
            path = self.pg.write_file("sa.json", json.dumps(kf), 0o600)
            opts, kek, self.token_op = ({"endpoint": self.emu.url, "credentials_file": str(path)},
                                        self.emu.key_name("pg-envelope"), "oauth_token")
            self.pg.sql("SELECT envelope.create_kms('c', 'gcp-kms', %s::jsonb)", (json.dumps(opts),))
        else:
            self.emu = azure.start(keys=("pg-envelope",))
            self.private_key = None
            opts, kek, self.token_op = {"vault_url": self.emu.url, "imds_url": self.emu.url}, "pg-envelope", "imds_token"
            self.pg.sql("SELECT envelope.create_kms('c', 'azure-keyvault', %s::jsonb)", (json.dumps(opts),))
        self.pg.sql("SELECT envelope.create_key('k1', kms => 'c', kek => %s)", (kek,))
        self.pg.sql("CREATE TABLE t (v envelope.encrypted_text)")
        self.pg.sql("INSERT INTO t SELECT envelope.encrypt_field(%s, 'k1')", (PLAIN,))

    def fetches(self):
        return self.emu.calls(self.token_op)

    def unwraps(self):
        return self.emu.calls() - self.emu.calls(self.token_op)

    def secrets(self):
        pem = [l for l in (self.private_key or "").splitlines() if l and "-----" not in l]
        return pem + self.emu.issued_tokens()

    def stop(self):
        self.emu.stop()


@pytest.fixture
def cloud_setup(cluster_factory):
    made = []

    def make(provider):
        s = CloudSetup(cluster_factory, provider)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


def decrypt_cold(pg):
    """A new connection (a cold backend) that flushes the DEK caches first, so that its
    decrypt needs the KMS, hence a credential."""
    conn = pg.connect()
    try:
        cur = conn.cursor()
        cur.execute("SELECT envelope.cache_flush()")
        cur.execute("SELECT envelope.decrypt_field(v) FROM t")
        assert cur.fetchone()[0] == PLAIN
    finally:
        conn.close()


def stats(pg):
    conn = pg.connect()
    try:
        cur = conn.cursor()
        cur.execute("SELECT * FROM envelope.credential_cache_stats()")
        names = [d[0] for d in cur.description]
        return dict(zip(names, cur.fetchone()))
    finally:
        conn.close()


def concurrently(n, fn):
    errors = []

    def run():
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - collected and re-raised below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors


@pytest.fixture
def aws_setup(cluster_factory, monkeypatch, tmp_path):
    made = []

    def make(**kw):
        s = AwsSetup(cluster_factory, monkeypatch, tmp_path, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


@pytest.fixture
def vault_setup(cluster_factory):
    made = []

    def make(**kw):
        s = VaultSetup(cluster_factory, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("provider", ["aws", "vault", "gcp", "azure"])
def test_200_new_connections_one_fetch(provider, aws_setup, vault_setup, cloud_setup):
    """One STS call (AWS, IRSA), one AppRole login (Vault), one JWT grant (GCP service
    account) or one IMDS token (Azure managed identity) for 200 new connections."""
    s = {"aws": aws_setup, "vault": vault_setup}[provider]() if provider in ("aws", "vault") else cloud_setup(provider)
    before_fetches, before_unwraps = s.fetches(), s.unwraps()
    assert before_fetches == 1  # the set-up's backend
    for _ in range(200):
        decrypt_cold(s.pg)
    # Every connection called the KMS, with the one shared credential.
    assert s.unwraps() - before_unwraps >= 200
    assert s.fetches() == 1
    st = stats(s.pg)
    assert st["fetches"] == 1 and st["hits"] >= 200 and st["entries"] >= 1 and st["failures"] == 0, st
    assert st["capacity"] == 64 and st["core_dump_excluded"] is True, st
    if provider == "aws":
        assert s.kms.rejected() == 0
    if provider in ("gcp", "azure"):
        assert s.emu.rejected() == 0
    s.pg.assert_log_free_of(s.secrets())
    assert not any(sec in json.dumps(st, default=str) for sec in s.secrets())


def test_aws_expiry_one_refresh_for_all_backends(aws_setup):
    s = aws_setup(lifetime=6)  # refreshed halfway through: after 3 s
    assert s.fetches() == 1
    for _ in range(5):
        decrypt_cold(s.pg)
    assert s.fetches() == 1
    time.sleep(3.3)
    for _ in range(30):
        decrypt_cold(s.pg)
    assert s.fetches() == 2
    assert s.kms.rejected() == 0


def test_aws_concurrent_backends_single_flight(aws_setup):
    s = aws_setup(lifetime=6)
    time.sleep(3.3)  # due for a refresh, still valid
    # STS answers slowly: while one backend refreshes, the others use the stored
    # credentials (still valid) instead of calling STS too.
    s.sts.inject_latency(1500, count=None)
    concurrently(8, lambda: decrypt_cold(s.pg))
    assert s.fetches() == 2, s.sts.stats()
    s.sts.clear_faults()


def test_vault_concurrent_first_use_single_flight(vault_setup, cluster_factory):
    s = vault_setup()
    s.pg.restart()  # the store is empty again: nobody has a token to fall back on
    assert stats(s.pg)["entries"] == 0
    s.emu.inject_latency(1000, count=None, op="approle/login")
    concurrently(8, lambda: decrypt_cold(s.pg))
    s.emu.clear_faults()
    assert s.fetches() == 2, s.emu.stats()  # the set-up's login, then one for the 8 backends
    assert stats(s.pg)["waits"] >= 1


def test_vault_renewal_once_for_all_backends(vault_setup):
    s = vault_setup(ttl=6)  # renewed after two thirds of the lease: 4 s
    time.sleep(4.3)
    for _ in range(20):
        decrypt_cold(s.pg)
    assert s.emu.calls("renew-self") == 1 and s.fetches() == 1, s.emu.stats()
    s.pg.assert_log_free_of(s.secrets())


def test_refresh_failure_serves_until_expiry_then_clear_error(aws_setup):
    s = aws_setup(lifetime=8)  # refresh after 4 s, expiry after 8 s
    time.sleep(4.3)
    s.sts.down()
    for _ in range(10):
        decrypt_cold(s.pg)  # the stored credentials are still valid: requests keep working
    # The failure is remembered (2 s): not every backend retried STS.
    st = stats(s.pg)
    assert 1 <= st["failures"] <= 3, st
    time.sleep(max(0.0, 8.5 - 4.3 - 1.0))
    conn = s.pg.connect()
    cur = conn.cursor()
    cur.execute("SELECT envelope.cache_flush()")
    with pytest.raises(psycopg2.Error) as e:
        cur.execute("SELECT envelope.decrypt_field(v) FROM t")
    err = pg_error(e)
    assert err["sqlstate"] in ("58000", "08006"), err
    assert "aws" in err["message"], err
    assert not any(sec in json.dumps(err) for sec in s.secrets())
    conn.close()
    s.sts.up()
    time.sleep(2.1)  # the failure is remembered for 2 s, then STS is asked again
    decrypt_cold(s.pg)  # STS is back: a new fetch
    s.pg.assert_log_free_of(s.secrets())


def test_backend_terminated_during_fetch_does_not_wedge(aws_setup):
    s = aws_setup()
    s.pg.restart()  # an empty store
    s.sts.inject_hang(count=1, op="AssumeRoleWithWebIdentity")
    conn = s.pg.connect()
    pid = conn.get_backend_pid()
    failed = []

    def stuck():
        try:
            cur = conn.cursor()
            cur.execute("SELECT envelope.cache_flush()")
            cur.execute("SELECT envelope.decrypt_field(v) FROM t")
        except psycopg2.Error as e:
            failed.append(e)

    t = threading.Thread(target=stuck)
    t.start()
    assert s.sts.wait_hanging(1, timeout=10)
    assert s.pg.scalar("SELECT pg_terminate_backend(%s)", (pid,)) is True
    t.join(20)
    assert failed  # the terminated backend's statement did not complete
    s.sts.release()
    started = time.monotonic()
    decrypt_cold(s.pg)  # well before the retry budget (6 s): the claim was released
    assert time.monotonic() - started < 5
    assert stats(s.pg)["entries"] == 1
    s.pg.assert_log_free_of(s.secrets())


def test_slots_excluded_from_core_dumps(aws_setup):
    s = aws_setup()
    conn = s.pg.connect()
    cur = conn.cursor()
    cur.execute("SELECT pg_backend_pid(), core_dump_excluded FROM envelope.credential_cache_stats()")
    pid, excluded = cur.fetchone()
    assert excluded is True
    smaps = Path(f"/proc/{pid}/smaps").read_text()
    dd_kb, size_kb = 0, None
    for line in smaps.splitlines():
        if line.startswith("Size:"):
            size_kb = int(line.split()[1])
        elif line.startswith("VmFlags:") and " dd" in (" " + line.split(":", 1)[1]):
            dd_kb += size_kb or 0
    # 64 slots of 8 kB of secret bytes each (the DEK cache has only 16 entries here).
    assert dd_kb * 1024 >= 64 * 8192, dd_kb
    conn.close()


def test_stats_is_not_public(aws_setup):
    s = aws_setup()
    s.pg.sql("CREATE ROLE nobody LOGIN")
    conn = s.pg.connect(user="nobody")
    with pytest.raises(psycopg2.Error) as e:
        conn.cursor().execute("SELECT * FROM envelope.credential_cache_stats()")
    assert pg_error(e)["sqlstate"] == "42501"
    conn.close()
