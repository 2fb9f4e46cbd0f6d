"""KEK versions (issue 13, "rewrap when the KMS reports a new KEK version"):
envelope.kek_status() asks the key's KMS for its KEK's current version and names the
DEKs wrapped under an older one; rewrap_key() brings them onto it. Against the
loopback emulators of all four providers, each speaking its real protocol:

* Vault Transit  GET /v1/transit/keys/{name} (latest_version); a wrapped DEK says
                 "vault:vN:";
* AWS KMS        DescribeKey + ListKeyRotations (SigV4 checked by botocore); the
                 ciphertext is opaque, so DEKs wrapped before the newest rotation are behind;
* Cloud KMS      GET the CryptoKey (primary version and its createTime); opaque too;
* Azure Key Vault GET /keys/{name} (kid and attributes.created); a wrapped DEK
                 stores the kid it was wrapped under.

For each, the proof that the DEKs really moved comes from the KMS itself: the version a
ciphertext names or uses (Vault, Azure, the AWS emulator's material index), or the old
version disabled in the KMS while every value still decrypts in a new session (GCP).
The local KMS has no KEK versions (NULLs; rewrap policies refused, 22023).

Run as the postgres OS user:
    runuser -u postgres -- /usr/bin/python3 -m pytest -q -p no:cacheprovider test/integration/test_kek_versions.py
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import psycopg2
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # <repo>/test
from kms_emulators import aws, azure, gcp, vault  # noqa: E402

from pgcluster import pg_error  # noqa: E402

PLAIN = "patient 4711 has allergies"


def vault_setup(pg):
    emu = vault.start(keys=("kek",))
    tok = pg.write_file("vault.token", "emulator-root-token\n")
    return "vault-transit", {"address": emu.url, "token_file": str(tok)}, "kek", emu


def aws_setup(pg):
    emu = aws.start(aliases=("kek",))
    creds = pg.write_file("aws.credentials", f"[default]\naws_access_key_id = {aws.DEFAULT_ACCESS_KEY}\n"
                                             f"aws_secret_access_key = {aws.DEFAULT_SECRET_KEY}\n")
    return "aws-kms", {"region": "us-east-1", "endpoint": emu.url, "credentials_file": str(creds)}, "alias/kek", emu


def gcp_setup(pg):
    emu = gcp.start(keys=("kek",))
    tok = pg.write_file("gcp.token", "emulator-gcp-token\n")
    return "gcp-kms", {"endpoint": emu.url, "token_file": str(tok)}, emu.key_name("kek"), emu


def azure_setup(pg):
    emu = azure.start(keys=("kek",))
    tok = pg.write_file("azure.token", "emulator-azure-token\n")
    return "azure-keyvault", {"vault_url": emu.url, "token_file": str(tok)}, "kek", emu


SETUPS = {"vault": vault_setup, "aws": aws_setup, "gcp": gcp_setup, "azure": azure_setup}


def initial_version(provider, emu):
    return emu.versions("kek")[0] if provider == "azure" else "1"


def rotate_kek(provider, emu, kek):
    """The KMS rotates its KEK; returns the name of the new version as kek_status says it."""
    if provider == "vault":
        return str(emu.rotate_key("kek"))
    if provider == "aws":
        return str(emu.rotate_key("alias/kek"))
    if provider == "gcp":
        return str(emu.add_version(kek))
    return emu.rotate_key("kek")


@pytest.fixture
def pg(cluster_factory):
    c = cluster_factory.create("kekv", settings={"envelope.kms_request_timeout": "2s",
                                                 "envelope.kms_retry_budget": "5s"})
    c.sql("CREATE EXTENSION pg_envelope")
    c.sql("CREATE ROLE kek_admin LOGIN")
    c.sql("GRANT USAGE ON SCHEMA envelope TO kek_admin")
    c.sql("GRANT EXECUTE ON FUNCTION envelope.kek_status(text) TO kek_admin")
    return c


def status(pg, key="k1", user=None):
    cur = pg.connect(user=user).cursor() if user else pg.connect().cursor()
    cur.execute("SELECT kms, kek, kek_version, kek_version_created, data_keys, data_keys_behind, versions_behind "
                "FROM envelope.kek_status(%s)", (key,))
    names = [d[0] for d in cur.description]
    return dict(zip(names, cur.fetchone()))


def wrapped(pg, key="k1"):
    return {v: bytes(w) for v, w in pg.sql("SELECT d.version, d.wrapped FROM envelope.data_key d "
                                           "JOIN envelope.key k USING (key_id) WHERE k.name = %s "
                                           "ORDER BY d.version", (key,))}


@pytest.mark.parametrize("provider", sorted(SETUPS))
def test_kek_status_follows_kms_rotation(pg, provider):
    name, options, kek, emu = SETUPS[provider](pg)
    try:
        pg.sql("SELECT envelope.create_kms('ext', %s, %s::jsonb)", (name, json.dumps(options)))
        pg.sql("SELECT envelope.create_key('k1', kms => 'ext', kek => %s)", (kek,))
        pg.sql("CREATE TABLE t (id int, v envelope.encrypted_text)")
        pg.sql("INSERT INTO t VALUES (1, envelope.encrypt_field(%s, 'k1'))", (PLAIN,))
        assert pg.scalar("SELECT envelope.rotate_key('k1')") == 2
        pg.sql("INSERT INTO t VALUES (2, envelope.encrypt_field(%s, 'k1'))", (PLAIN,))

        s = status(pg)
        assert (s["kms"], s["kek"]) == ("ext", kek)
        assert s["kek_version"] == initial_version(provider, emu)
        assert (s["data_keys"], s["data_keys_behind"], s["versions_behind"]) == (2, 0, [])

        # Opaque ciphertexts are compared by time: the KEK's new version must be newer
        # than the DEKs' wraps (real rotations are days apart).
        time.sleep(0.05)
        new_version = rotate_kek(provider, emu, kek)
        s = status(pg)
        assert s["kek_version"] == new_version and new_version != initial_version(provider, emu)
        assert (s["data_keys"], s["data_keys_behind"], s["versions_behind"]) == (2, 2, [1, 2])
        if provider != "azure":  # Azure's kid carries the version; its creation time is in whole seconds
            assert s["kek_version_created"] is not None

        # A DEK made now is wrapped under the new KEK version: not behind.
        time.sleep(0.05)
        assert pg.scalar("SELECT envelope.rotate_key('k1')") == 3
        s = status(pg)
        assert (s["data_keys"], s["data_keys_behind"], s["versions_behind"]) == (3, 2, [1, 2])

        assert pg.scalar("SELECT envelope.rewrap_key('k1')") == 3
        s = status(pg)
        assert (s["data_keys"], s["data_keys_behind"], s["versions_behind"]) == (3, 0, [])

        # The KMS's own view of where the DEKs are now.
        w = wrapped(pg)
        if provider == "vault":
            assert all(x.startswith(f"vault:v{new_version}:".encode()) for x in w.values()), w
        elif provider == "azure":
            assert all(json.loads(x)["kid"].endswith("/" + new_version) for x in w.values())
        elif provider == "aws":
            assert [emu.material_of(x) for x in w.values()] == [2, 2, 2]
        else:  # GCP: the old version is disabled in the KMS; a new session still decrypts
            emu.set_version_state(kek, 1, False)
        pg.sql("SELECT envelope.cache_flush()")
        assert pg.sql("SELECT envelope.decrypt_field(v) FROM t ORDER BY id") == [(PLAIN,), (PLAIN,)]
    finally:
        emu.stop()


def test_kek_status_errors_and_privileges(pg):
    name, options, kek, emu = vault_setup(pg)
    try:
        pg.sql("SELECT envelope.create_kms('ext', %s, %s::jsonb)", (name, json.dumps(options)))
        pg.sql("SELECT envelope.create_key('k1', kms => 'ext', kek => %s)", (kek,))
        pg.sql("SELECT envelope.create_key('loc')")
        # The local KMS has no KEK versions.
        s = status(pg, "loc")
        assert (s["kms"], s["kek_version"], s["data_keys"], s["data_keys_behind"], s["versions_behind"]) == \
            ("local", None, 1, None, None)
        with pytest.raises(psycopg2.Error) as e:
            pg.sql("SELECT envelope.set_rotation_policy('loc', '1 day', rewrap => true)")
        assert pg_error(e)["sqlstate"] == "22023" and "no KEK versions" in pg_error(e)["message"]
        # EXECUTE alone is not enough: the admin privilege on the key is.
        with pytest.raises(psycopg2.Error) as e:
            status(pg, "k1", user="kek_admin")
        assert pg_error(e)["sqlstate"] == "42501"
        pg.sql("SELECT envelope.grant_key('k1', 'kek_admin', 'admin')")
        assert status(pg, "k1", user="kek_admin")["kek_version"] == "1"
        # Not executable by PUBLIC.
        pg.sql("CREATE ROLE kek_nobody LOGIN")
        with pytest.raises(psycopg2.Error) as e:
            status(pg, "k1", user="kek_nobody")
        assert pg_error(e)["sqlstate"] == "42501"
        # Unknown key; the KMS refusing who we are (the token file is re-read).
        with pytest.raises(psycopg2.Error) as e:
            status(pg, "nope")
        assert pg_error(e)["sqlstate"] == "42704"
        pg.write_file("vault.token", "not-the-token\n")
        with pytest.raises(psycopg2.Error) as e:
            status(pg, "k1")
        assert pg_error(e)["sqlstate"] == "28000" and "read key failed" in pg_error(e)["message"], pg_error(e)
        assert "not-the-token" not in pg.read_log()
        pg.write_file("vault.token", "emulator-root-token\n")
        assert status(pg, "k1")["kek_version"] == "1"
        # A destroyed key has nothing to report.
        pg.sql("SELECT envelope.destroy_key('k1')")
        with pytest.raises(psycopg2.Error) as e:
            status(pg, "k1")
        assert pg_error(e)["sqlstate"] in ("55000", "42704")
    finally:
        emu.stop()


def test_aws_rotation_history_is_paged(pg):
    """ListKeyRotations returns at most Limit entries a page: every page is read."""
    name, options, kek, emu = aws_setup(pg)
    try:
        pg.sql("SELECT envelope.create_kms('ext', %s, %s::jsonb)", (name, json.dumps(options)))
        pg.sql("SELECT envelope.create_key('k1', kms => 'ext', kek => %s)", (kek,))
        for _ in range(1005):
            emu.rotate_key("alias/kek")
        before = emu.calls("ListKeyRotations")
        s = status(pg)
        assert s["kek_version"] == "1006"
        assert emu.calls("ListKeyRotations") - before == 2
        assert s["data_keys_behind"] == 1
    finally:
        emu.stop()
