"""Remote KMS providers against the loopback emulators (test/kms_emulators): the
real wire protocols (Vault Transit, AWS KMS JSON 1.1 with SigV4 checked by
botocore), call counters as the oracle, and fault injection: throttling, 5xx,
hangs, cancels, timeouts, a KMS that is down, TLS with the right and a wrong CA.
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
from kms_emulators import aws, azure, gcp, vault  # noqa: E402
from kms_emulators.fixtures import kms_pki  # noqa: E402,F401

from pgcluster import pg_error  # noqa: E402

SECRET_PLAIN = "patient 4711 has allergies"


# ---------------------------------------------------------------------------------
# Provider set-ups: each returns (provider name, options, kek, emulator, secrets that
# must never reach the server log, the emulator op that unwraps).


class Setup:
    def __init__(self, provider, options, kek, emu, secrets, unwrap_op, wrap_op):
        self.provider, self.options, self.kek, self.emu = provider, options, kek, emu
        self.secrets, self.unwrap_op, self.wrap_op = secrets, unwrap_op, wrap_op


def vault_setup(cluster, tls=None, ca_file=None):
    emu = vault.start(keys=("pg-envelope",), tls=tls)
    token = "emulator-root-token"
    token_file = cluster.write_file("vault.token", token + "\n")
    options = {"address": emu.url, "token_file": str(token_file)}
    if ca_file:
        options["ca_file"] = str(ca_file)
    return Setup("vault-transit", options, "pg-envelope", emu, [token], "decrypt", "encrypt")


def aws_setup(cluster):
    emu = aws.start(aliases=("pg-envelope",))
    creds = cluster.write_file(
        "aws.credentials",
        f"[default]\naws_access_key_id = {aws.DEFAULT_ACCESS_KEY}\n"
        f"aws_secret_access_key = {aws.DEFAULT_SECRET_KEY}\n")
    options = {"region": "us-east-1", "endpoint": emu.url, "credentials_file": str(creds)}
    return Setup("aws-kms", options, "alias/pg-envelope", emu, [aws.DEFAULT_SECRET_KEY], "Decrypt", "Encrypt")


def gcp_setup(cluster):
    emu = gcp.start(keys=("pg-envelope",))
    token = "emulator-gcp-token"
    token_file = cluster.write_file("gcp.token", token + "\n")
    options = {"endpoint": emu.url, "token_file": str(token_file)}
    return Setup("gcp-kms", options, emu.key_name("pg-envelope"), emu, [token], "decrypt", "encrypt")


def azure_setup(cluster):
    emu = azure.start(keys=("pg-envelope",))
    token = "emulator-azure-token"
    token_file = cluster.write_file("azure.token", token + "\n")
    options = {"vault_url": emu.url, "token_file": str(token_file)}
    return Setup("azure-keyvault", options, "pg-envelope", emu, [token], "unwrapkey", "wrapkey")


SETUPS = {"vault": vault_setup, "aws": aws_setup, "gcp": gcp_setup, "azure": azure_setup}


def bad_credentials(pg, s):
    """Points the KMS at wrong credentials; returns (SQLSTATE, text in the message)."""
    if s.provider == "aws-kms":
        bad = pg.write_file("bad.credentials", f"[default]\naws_access_key_id = {aws.DEFAULT_ACCESS_KEY}\n"
                                               "aws_secret_access_key = wrong-secret\n")
        s.options["credentials_file"] = str(bad)
        return "28000", "InvalidSignatureException"
    s.options["token_file"] = str(pg.write_file("bad.token", "not-the-token\n"))
    if s.provider == "vault-transit":
        return "28000", "invalid token"   # Vault: 403 "permission denied" + "invalid token"
    return "28000", {"gcp-kms": "UNAUTHENTICATED", "azure-keyvault": "Unauthorized"}[s.provider]


def unknown_kek(s):
    if s.provider == "gcp-kms":
        return s.emu.key_name("no-such-key")
    return {"vault-transit": "no-such-key", "aws-kms": "alias/no-such-key", "azure-keyvault": "no-such-key"}[s.provider]


def disable_kek(s):
    """Disables the KEK in the KMS; returns the SQLSTATE a decrypt then gives."""
    if s.provider == "vault-transit":
        s.emu.disable_key("pg-envelope")
        return "42501"  # Vault expresses a disabled key as a policy denial (403)
    if s.provider == "aws-kms":
        s.emu.disable_key("alias/pg-envelope")
        return "55000"  # DisabledException
    if s.provider == "gcp-kms":
        s.emu.set_version_state(s.kek, 1, False)
        return "55000"  # FAILED_PRECONDITION: version not enabled
    s.emu.set_enabled("pg-envelope", False)
    return "55000"      # KeyDisabled


@pytest.fixture
def pg(cluster_factory):
    c = cluster_factory.create("kms", settings={"envelope.kms_request_timeout": "2s",
                                                "envelope.kms_retry_budget": "5s"})
    c.sql("CREATE EXTENSION pg_envelope")
    return c


@pytest.fixture(params=sorted(SETUPS))
def kms(request, pg):
    s = SETUPS[request.param](pg)
    yield s
    s.emu.stop()


def configure(pg, s, name="ext", key="k1"):
    pg.sql("SELECT envelope.create_kms(%s, %s, %s::jsonb)", (name, s.provider, json.dumps(s.options)))
    pg.sql("SELECT envelope.create_key(%s, kms => %s, kek => %s)", (key, name, s.kek))


def expect_error(pg, query, params=None, conn=None):
    cur = (conn or pg.connect()).cursor()
    with pytest.raises(psycopg2.Error) as e:
        cur.execute(query, params)
    return pg_error(e)


# ---------------------------------------------------------------------------------


def test_round_trip_and_unwrap_counts(pg, kms):
    configure(pg, kms)
    assert kms.emu.calls(kms.wrap_op) == 1
    # create_key proves the wrapped DEK opens: one unwrap already.
    assert kms.emu.calls(kms.unwrap_op) == 1
    pg.sql("CREATE TABLE t (id int, v envelope.encrypted_text)")
    pg.sql("INSERT INTO t SELECT g, envelope.encrypt_field(%s || g, 'k1', g::text) FROM generate_series(1, 50) g",
           (SECRET_PLAIN,))
    rows = pg.sql("SELECT id, envelope.decrypt_field(v, id::text) FROM t ORDER BY id")
    assert rows == [(i, f"{SECRET_PLAIN}{i}") for i in range(1, 51)]
    # A new backend finds the DEK in the shared-memory cache: no KMS call at all...
    before = kms.emu.calls(kms.unwrap_op)
    cur = pg.connect().cursor()
    cur.execute("SELECT count(*) FROM t WHERE envelope.decrypt_field(v, id::text) = %s || id", (SECRET_PLAIN,))
    assert cur.fetchone()[0] == 50
    assert kms.emu.calls(kms.unwrap_op) == before
    # ...and after a flush, exactly one unwrap for its 50 rows.
    pg.sql("SELECT envelope.cache_flush()")
    cur = pg.connect().cursor()
    cur.execute("SELECT count(*) FROM t WHERE envelope.decrypt_field(v, id::text) = %s || id", (SECRET_PLAIN,))
    assert cur.fetchone()[0] == 50
    assert kms.emu.calls(kms.unwrap_op) == before + 1
    # Rotation wraps a new DEK; old values still decrypt.
    assert pg.scalar("SELECT envelope.rotate_key('k1')") == 2
    assert pg.scalar("SELECT envelope.decrypt_field(envelope.encrypt_field('v2', 'k1'))") == "v2"
    assert pg.scalar("SELECT envelope.decrypt_field(v, '7') FROM t WHERE id = 7") == f"{SECRET_PLAIN}7"
    # The stored wrapped DEK is the KMS's ciphertext, never the raw 32 bytes.
    sizes = [r[0] for r in pg.sql("SELECT octet_length(wrapped) FROM envelope.data_key d "
                                  "JOIN envelope.key k USING (key_id) WHERE k.name = 'k1'")]
    assert all(s > 48 for s in sizes)
    pg.assert_log_free_of(kms.secrets + [SECRET_PLAIN])


def test_wrong_credentials(pg, kms):
    expected = bad_credentials(pg, kms)
    pg.sql("SELECT envelope.create_kms('ext', %s, %s::jsonb)", (kms.provider, json.dumps(kms.options)))
    err = expect_error(pg, "SELECT envelope.create_key('k1', kms => 'ext', kek => %s)", (kms.kek,))
    assert err["sqlstate"] == expected[0], err
    assert 'KMS "ext"' in err["message"] and expected[1] in err["message"], err
    assert pg.scalar("SELECT count(*) FROM envelope.key WHERE name = 'k1'") == 0
    pg.assert_log_free_of(kms.secrets + ["wrong-secret", "not-the-token"])


def test_unknown_and_disabled_kek(pg, kms):
    pg.sql("SELECT envelope.create_kms('ext', %s, %s::jsonb)", (kms.provider, json.dumps(kms.options)))
    err = expect_error(pg, "SELECT envelope.create_key('k0', kms => 'ext', kek => %s)", (unknown_kek(kms),))
    assert err["sqlstate"] == "42704", err
    # Disable the KEK after data was written: decrypting in a new backend fails clearly.
    pg.sql("SELECT envelope.create_key('k1', kms => 'ext', kek => %s)", (kms.kek,))
    pg.sql("CREATE TABLE t AS SELECT envelope.encrypt_field('x', 'k1') AS v")
    expected = disable_kek(kms)
    pg.sql("SELECT envelope.cache_flush()")  # so the KMS is asked again
    err = expect_error(pg, "SELECT envelope.decrypt_field(v) FROM t")
    assert err["sqlstate"] == expected, err
    assert 'KMS "ext"' in err["message"]


def test_throttling_then_success(pg, kms):
    pg.sql("SELECT envelope.create_kms('ext', %s, %s::jsonb)", (kms.provider, json.dumps(kms.options)))
    kms.emu.inject_throttle(count=2, op=kms.wrap_op, retry_after=0)
    pg.sql("SELECT envelope.create_key('k1', kms => 'ext', kek => %s)", (kms.kek,))
    assert kms.emu.faulted(kms.wrap_op) == 2   # two throttled attempts...
    assert kms.emu.calls(kms.wrap_op) == 1     # ...then one that reached the KMS
    kms.emu.inject_http_error(status=503, count=1, op=kms.unwrap_op)
    conn = pg.connect()
    cur = conn.cursor()
    cur.execute("SELECT envelope.decrypt_field(envelope.encrypt_field('ok', 'k1'))")
    assert cur.fetchone()[0] == "ok"


def test_retries_exhausted_is_a_clear_error(pg, kms):
    pg.sql("SELECT envelope.create_kms('ext', %s, %s::jsonb)", (kms.provider, json.dumps(kms.options)))
    kms.emu.inject_http_error(status=500, count=None, op=kms.wrap_op)
    conn = pg.connect()
    conn.cursor().execute("SET envelope.kms_retry_budget = '1500ms'")
    t0 = time.monotonic()
    err = expect_error(pg, "SELECT envelope.create_key('k1', kms => 'ext', kek => %s)", (kms.kek,), conn=conn)
    assert time.monotonic() - t0 < 5
    assert err["sqlstate"] == "58000", err
    assert kms.emu.faulted(kms.wrap_op) >= 2  # it did retry


def test_hang_times_out_within_bound(pg, kms):
    configure(pg, kms)
    pg.sql("CREATE TABLE t AS SELECT envelope.encrypt_field('x', 'k1') AS v")
    pg.sql("SELECT envelope.cache_flush()")  # the next backend must ask the KMS
    kms.emu.inject_hang(count=None, op=kms.unwrap_op, max_seconds=30)
    conn = pg.connect()
    cur = conn.cursor()
    cur.execute("SET envelope.kms_request_timeout = '1s'; SET envelope.kms_retry_budget = '2s'")
    t0 = time.monotonic()
    err = expect_error(pg, "SELECT envelope.decrypt_field(v) FROM t", conn=conn)
    elapsed = time.monotonic() - t0
    assert err["sqlstate"] == "58000" and "timeout" in err["message"], err
    assert 0.9 < elapsed < 4.0, elapsed
    kms.emu.release()
    kms.emu.clear_faults()
    cur.execute("SELECT 1")  # the backend is healthy
    assert cur.fetchone() == (1,)


def test_timeout_settings_apply_after_first_use(pg, kms):
    """SET envelope.kms_* takes effect at the next KMS call of a backend that has
    already used the KMS (settings are read per call, not when the client was built)."""
    pg.sql("SELECT envelope.create_kms('ext', %s, %s::jsonb)", (kms.provider, json.dumps(kms.options)))
    conn = pg.connect()
    cur = conn.cursor()
    cur.execute("SELECT envelope.create_key('k1', kms => 'ext', kek => %s)", (kms.kek,))
    cur.execute("SET envelope.kms_request_timeout = '1s'; SET envelope.kms_retry_budget = '2s'")
    kms.emu.inject_hang(count=None, op=kms.wrap_op, max_seconds=30)
    t0 = time.monotonic()
    err = expect_error(pg, "SELECT envelope.create_key('k2', kms => 'ext', kek => %s)", (kms.kek,), conn=conn)
    assert err["sqlstate"] == "58000", err
    assert time.monotonic() - t0 < 4.0
    kms.emu.release()
    kms.emu.clear_faults()


@pytest.mark.parametrize("how", ["pg_cancel_backend", "statement_timeout"])
def test_cancel_during_hung_call(pg, kms, how):
    configure(pg, kms)
    pg.sql("CREATE TABLE t AS SELECT envelope.encrypt_field('x', 'k1') AS v")
    pg.sql("SELECT envelope.cache_flush()")  # the next backend must ask the KMS
    kms.emu.inject_hang(count=None, op=kms.unwrap_op, max_seconds=30)
    conn = pg.connect()
    cur = conn.cursor()
    cur.execute("SET envelope.kms_request_timeout = '60s'; SET envelope.kms_retry_budget = '60s'")
    pid = conn.get_backend_pid()
    if how == "statement_timeout":
        cur.execute("SET statement_timeout = '1s'")
    else:
        def cancel():
            kms.emu.wait_hanging(1, timeout=10)
            time.sleep(0.3)
            pg.sql("SELECT pg_cancel_backend(%s)", (pid,))
        threading.Thread(target=cancel, daemon=True).start()
    t0 = time.monotonic()
    err = expect_error(pg, "SELECT envelope.decrypt_field(v) FROM t", conn=conn)
    elapsed = time.monotonic() - t0
    assert err["sqlstate"] == "57014", err
    # PostgreSQL's own error, which says which kind of cancel it was.
    assert err["message"] == ("canceling statement due to statement timeout" if how == "statement_timeout"
                              else "canceling statement due to user request"), err
    assert elapsed < 4.0, elapsed  # within ~1 s of the cancel, not the 60 s timeouts
    kms.emu.release()
    kms.emu.clear_faults()
    cur.execute("RESET statement_timeout; SELECT 2")
    assert cur.fetchone() == (2,)


def test_kms_down(pg, kms):
    configure(pg, kms)
    pg.sql("CREATE TABLE t AS SELECT envelope.encrypt_field('x', 'k1') AS v")
    pg.sql("SELECT envelope.cache_flush()")  # the next backend must ask the KMS
    kms.emu.down()
    conn = pg.connect()
    cur = conn.cursor()
    cur.execute("SET envelope.kms_retry_budget = '1s'")
    err = expect_error(pg, "SELECT envelope.decrypt_field(v) FROM t", conn=conn)
    assert err["sqlstate"] == "58000" and "unreachable" in err["message"], err
    cur.execute("SELECT 3")
    assert cur.fetchone() == (3,)
    kms.emu.up()
    # A failed unwrap is remembered for ~2 s so an outage is not hammered; a flush
    # forgets it at once.
    cur.execute("SELECT envelope.cache_flush()")
    cur.execute("SELECT envelope.decrypt_field(v) FROM t")
    assert cur.fetchone() == ("x",)


def test_rewrap_key_any_provider(pg, kms):
    configure(pg, kms)
    pg.sql("CREATE TABLE t AS SELECT envelope.encrypt_field(%s, 'k1') AS v", (SECRET_PLAIN,))
    assert pg.scalar("SELECT envelope.rotate_key('k1')") == 2
    assert pg.scalar("SELECT envelope.rewrap_key('k1')") == 2
    cur = pg.connect().cursor()
    cur.execute("SELECT envelope.decrypt_field(v) FROM t")
    assert cur.fetchone() == (SECRET_PLAIN,)


def test_tampered_wrapped_dek(pg, kms):
    configure(pg, kms)
    pg.sql("CREATE TABLE t AS SELECT envelope.encrypt_field('x', 'k1') AS v")
    # Flip a byte in the middle of the stored wrapped DEK.
    pg.sql("UPDATE envelope.data_key SET wrapped = set_byte(wrapped, octet_length(wrapped) / 2, "
           "get_byte(wrapped, octet_length(wrapped) / 2) # 1)")
    pg.sql("SELECT envelope.cache_flush()")
    err = expect_error(pg, "SELECT envelope.decrypt_field(v) FROM t")
    assert err["sqlstate"] in ("22000", "22023"), err
    assert 'KMS "ext"' in err["message"], err


def test_wrapped_dek_swapped_between_keys(pg, kms):
    configure(pg, kms, key="k1")
    pg.sql("SELECT envelope.create_key('k2', kms => 'ext', kek => %s)", (kms.kek,))
    pg.sql("CREATE TABLE t AS SELECT envelope.encrypt_field('x', 'k1') AS v")
    pg.sql("UPDATE envelope.data_key d SET wrapped = (SELECT wrapped FROM envelope.data_key d2 "
           "JOIN envelope.key k USING (key_id) WHERE k.name = 'k2') "
           "FROM envelope.key k WHERE k.key_id = d.key_id AND k.name = 'k1'")
    pg.sql("SELECT envelope.cache_flush()")
    err = expect_error(pg, "SELECT envelope.decrypt_field(v) FROM t")
    assert err["sqlstate"] == "22000", err


def test_drop_kms_refused_while_used(pg, kms):
    configure(pg, kms)
    err = expect_error(pg, "SELECT envelope.drop_kms('ext')")
    assert err["sqlstate"] == "2BP01", err


def test_dump_restore_keeps_kms_configuration(pg, kms, tmp_path):
    configure(pg, kms)
    pg.sql("CREATE TABLE t AS SELECT envelope.encrypt_field(%s, 'k1') AS v", (SECRET_PLAIN,))
    dump = tmp_path / "db.sql"
    pg.pg_dump("postgres", "--file", dump)
    text = dump.read_text()
    assert SECRET_PLAIN not in text and all(s not in text for s in kms.secrets)
    pg.sql("CREATE DATABASE restored")
    pg.psql("restored", "--file", dump)
    assert pg.sql("SELECT name, provider FROM envelope.kms_configs ORDER BY name", dbname="restored") == \
        [("ext", kms.provider), ("local", "local")]
    assert pg.scalar("SELECT envelope.decrypt_field(v) FROM t", dbname="restored") == SECRET_PLAIN


def test_vault_token_file_is_reread(pg):
    s = vault_setup(pg)
    try:
        configure(pg, s)
        s.emu.tokens.add("second-token")
        s.emu.tokens.discard("emulator-root-token")
        conn = pg.connect()
        cur = conn.cursor()
        err = expect_error(pg, "SELECT envelope.rotate_key('k1')", conn=conn)
        assert err["sqlstate"] == "28000", err
        time.sleep(0.01)
        pg.write_file("vault.token", "second-token\n")
        cur.execute("SELECT envelope.rotate_key('k1')")
        assert cur.fetchone() == (2,)
    finally:
        s.emu.stop()


def test_vault_namespace_header(pg):
    emu = vault.start(keys=("pg-envelope",), namespace="team-a")
    try:
        token_file = pg.write_file("vault.token", "emulator-root-token\n")
        base = {"address": emu.url, "token_file": str(token_file)}
        pg.sql("SELECT envelope.create_kms('nons', 'vault-transit', %s::jsonb)", (json.dumps(base),))
        err = expect_error(pg, "SELECT envelope.create_key('k0', kms => 'nons', kek => 'pg-envelope')")
        assert err["sqlstate"] in ("42501", "22023", "42704"), err
        pg.sql("SELECT envelope.create_kms('ns', 'vault-transit', %s::jsonb)",
               (json.dumps(dict(base, namespace="team-a")),))
        pg.sql("SELECT envelope.create_key('k1', kms => 'ns', kek => 'pg-envelope')")
        assert pg.scalar("SELECT envelope.decrypt_field(envelope.encrypt_field('ns', 'k1'))") == "ns"
    finally:
        emu.stop()


def test_aws_credentials_from_server_environment(cluster_factory, monkeypatch):
    emu = aws.start(aliases=("pg-envelope",))
    try:
        emu.add_credentials("AKIDSESSION000000001", "session/secret", "session-token-value")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDSESSION000000001")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "session/secret")
        monkeypatch.setenv("AWS_SESSION_TOKEN", "session-token-value")
        pg = cluster_factory.create("awsenv")  # the postmaster inherits this environment
        pg.sql("CREATE EXTENSION pg_envelope")
        pg.sql("SELECT envelope.create_kms('aws', 'aws-kms', %s::jsonb)",
               (json.dumps({"region": "us-east-1", "endpoint": emu.url}),))
        pg.sql("SELECT envelope.create_key('k1', kms => 'aws', kek => 'alias/pg-envelope')")
        assert pg.scalar("SELECT envelope.decrypt_field(envelope.encrypt_field('env', 'k1'))") == "env"
        assert emu.rejected() == 0
        pg.assert_log_free_of(["session/secret", "session-token-value"])
    finally:
        emu.stop()


def test_tls_verification(pg, kms_pki):
    s = vault_setup(pg, tls=kms_pki)
    try:
        ca, other = kms_pki.ca_cert, kms_pki.other_ca_cert
        good = dict(s.options, ca_file=str(ca))
        bad = dict(s.options, ca_file=str(other))
        pg.sql("SELECT envelope.create_kms('tls_good', 'vault-transit', %s::jsonb)", (json.dumps(good),))
        pg.sql("SELECT envelope.create_kms('tls_bad', 'vault-transit', %s::jsonb)", (json.dumps(bad),))
        assert s.options["address"].startswith("https://")
        pg.sql("SELECT envelope.create_key('k_good', kms => 'tls_good', kek => 'pg-envelope')")
        err = expect_error(pg, "SELECT envelope.create_key('k_bad', kms => 'tls_bad', kek => 'pg-envelope')")
        assert err["sqlstate"] == "08006" and "TLS" in err["message"], err
        # Without any CA option the system store does not trust the throwaway CA either.
        pg.sql("SELECT envelope.create_kms('tls_none', 'vault-transit', %s::jsonb)",
               (json.dumps({k: v for k, v in s.options.items() if k != "ca_file"}),))
        err = expect_error(pg, "SELECT envelope.create_key('k_none', kms => 'tls_none', kek => 'pg-envelope')")
        assert err["sqlstate"] == "08006", err
    finally:
        s.emu.stop()


@pytest.mark.parametrize("provider", ["vault", "aws"])  # the KMSs with a server-side re-encrypt
def test_rewrap_key_server_side(pg, provider):
    kms = SETUPS[provider](pg)
    try:
        configure(pg, kms)
        pg.sql("CREATE TABLE t AS SELECT envelope.encrypt_field(%s, 'k1') AS v", (SECRET_PLAIN,))
        before = pg.sql("SELECT wrapped FROM envelope.data_key")
        rewrap_op = "rewrap" if kms.provider == "vault-transit" else "ReEncrypt"
        if kms.provider == "vault-transit":
            kms.emu.rotate_key("pg-envelope")  # rewrap moves the DEK to the newest key version
        assert pg.scalar("SELECT envelope.rewrap_key('k1')") == 1
        assert kms.emu.calls(rewrap_op) == 1  # done by the KMS, not by unwrap + wrap here
        after = pg.sql("SELECT wrapped FROM envelope.data_key")
        assert bytes(after[0][0]) != bytes(before[0][0])
        if kms.provider == "vault-transit":
            assert bytes(after[0][0]).startswith(b"vault:v2:")
        cur = pg.connect().cursor()  # a new backend unwraps the re-wrapped DEK
        cur.execute("SELECT envelope.decrypt_field(v) FROM t")
        assert cur.fetchone() == (SECRET_PLAIN,)
    finally:
        kms.emu.stop()


@pytest.mark.parametrize("provider", ["gcp", "azure"])
def test_bearer_token_from_metadata_service(pg, provider):
    """No token file or environment token: the provider fetches a token from the
    platform's metadata service (GCE metadata / Azure IMDS, here the emulator),
    caches it, and uses it for the KMS calls."""
    if provider == "gcp":
        emu = gcp.start(keys=("pg-envelope",))
        options = {"endpoint": emu.url, "metadata_url": emu.url}
        kek, token_op = emu.key_name("pg-envelope"), "metadata_token"
    else:
        emu = azure.start(keys=("pg-envelope",))
        options = {"vault_url": emu.url, "imds_url": emu.url}
        kek, token_op = "pg-envelope", "imds_token"
    try:
        pg.sql("SELECT envelope.create_kms('md', %s, %s::jsonb)",
               ("gcp-kms" if provider == "gcp" else "azure-keyvault", json.dumps(options)))
        cur = pg.connect().cursor()  # one backend: one token, cached across its KMS calls
        cur.execute("SELECT envelope.create_key('k1', kms => 'md', kek => %s)", (kek,))
        cur.execute("SELECT envelope.rotate_key('k1')")
        cur.execute("SELECT envelope.decrypt_field(envelope.encrypt_field('md', 'k1'))")
        assert cur.fetchone() == ("md",)
        assert emu.calls(token_op) == 1
        assert emu.calls() - emu.calls(token_op) >= 4  # wrap + check unwrap, twice
        assert emu.rejected() == 0
        if provider == "azure":
            assert emu.imds_client_ids == [None]  # the system-assigned identity
            # a user-assigned managed identity: chosen by the option client_id
            uami = "11111111-2222-3333-4444-555555555555"
            pg.sql("SELECT envelope.create_kms('md_user', 'azure-keyvault', %s::jsonb)",
                   (json.dumps({**options, "client_id": uami}),))
            cur = pg.connect().cursor()
            cur.execute("SELECT envelope.create_key('k2', kms => 'md_user', kek => %s)", (kek,))
            assert emu.imds_client_ids == [None, uami]
    finally:
        emu.stop()
