"""The CLI: python3 -m kms_emulators <provider> --port 0 --print-url ..."""

import http.client
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pytest

import kmshttp

TEST_DIR = str(pathlib.Path(__file__).resolve().parents[2])      # <repo>/test
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
CURL = shutil.which("curl")


class Cli:
    def __init__(self, *args):
        env = dict(os.environ, PYTHONPATH=TEST_DIR, PYTHONDONTWRITEBYTECODE="1")
        self.proc = subprocess.Popen([PYTHON, "-m", "kms_emulators", *args], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.url = self.proc.stdout.readline().strip()
        line = self.proc.stdout.readline()
        self.info = json.loads(line) if line else None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                f.close()


@pytest.fixture
def cli():
    started = []

    def run(*args):
        c = Cli(*args)
        started.append(c)
        assert c.url, c.proc.stderr.read()
        return c

    yield run
    for c in started:
        c.stop()


def test_vault_cli_prints_url_and_serves(cli):
    c = cli("vault", "--port", "0", "--print-url", "--token", "t0k", "--key", "k1")
    assert c.url.startswith("http://127.0.0.1:")
    assert c.info["provider"] == "vault" and c.info["url"] == c.url
    assert c.info["keys"] == ["transit/k1"]
    r = kmshttp.request(c.url, "POST", "/v1/transit/encrypt/k1", {"plaintext": "aGk="},
                        {"X-Vault-Token": "t0k"})
    assert r.status == 200 and r.json["data"]["ciphertext"].startswith("vault:v1:")
    stats = kmshttp.request(c.url, "GET", "/__emulator/stats").json
    assert stats["calls"] == {"encrypt": 1}
    assert c.stop() == 0


def test_cli_tls_with_curl(cli, kms_pki):
    if CURL is None:
        pytest.skip("curl CLI not installed")
    c = cli("gcp", "--port", "0", "--print-url", "--tls-cert", str(kms_pki.server_cert),
            "--tls-key", str(kms_pki.server_key), "--key", "k")
    assert c.url.startswith("https://127.0.0.1:")
    out = subprocess.run([CURL, "-sS", "--max-time", "10", "--cacert", str(kms_pki.ca_cert),
                          "-H", "Metadata-Flavor: Google",
                          c.url + "/computeMetadata/v1/instance/service-accounts/default/token"],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["token_type"] == "Bearer"
    out = subprocess.run([CURL, "-sS", "--max-time", "10", "--cacert", str(kms_pki.other_ca_cert),
                          c.url + "/computeMetadata/v1/project/project-id"],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 60


def test_cli_tls_dir_creates_pki(cli, tmp_path):
    c = cli("azure", "--port", "0", "--print-url", "--tls-dir", str(tmp_path / "pki"),
            "--key", "kek:oct-HSM")
    assert (tmp_path / "pki" / "ca.pem").exists() and (tmp_path / "pki" / "other-ca.pem").exists()
    r = kmshttp.request(c.url, "GET", "/keys/kek?api-version=7.4",
                        headers={"Authorization": "Bearer emulator-azure-token"},
                        cafile=tmp_path / "pki" / "ca.pem")
    assert r.status == 200 and r.json["key"]["kty"] == "oct-HSM"


def test_aws_cli_with_credentials_and_curl_sigv4(cli):
    if CURL is None:
        pytest.skip("curl CLI not installed")
    c = cli("aws", "--port", "0", "--print-url", "--credentials", "AKIDCLI:cli-secret",
            "--key", "pg", "--region", "eu-central-1")
    assert c.info["region"] == "eu-central-1"
    assert c.info["keys"][0]["Aliases"] == ["alias/pg"]
    out = subprocess.run(
        [CURL, "-sS", "--max-time", "10", "--aws-sigv4", "aws:amz:eu-central-1:kms",
         "--user", "AKIDCLI:cli-secret", "-H", "Content-Type: application/x-amz-json-1.1",
         "-H", "X-Amz-Target: TrentService.Encrypt",
         "--data-binary", '{"KeyId": "alias/pg", "Plaintext": "aGk="}', c.url + "/"],
        capture_output=True, text=True, timeout=20)
    assert out.returncode == 0 and '"CiphertextBlob"' in out.stdout, out.stdout + out.stderr


def test_cli_signals_down_up_and_stdin_eof(cli):
    c = cli("vault", "--port", "0", "--print-url", "--exit-on-stdin-eof")
    health = lambda: kmshttp.request(c.url, "GET", "/v1/sys/health", timeout=2)  # noqa: E731
    assert health().status == 200
    c.proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            health()
        except ConnectionRefusedError:
            break
        except (ConnectionResetError, http.client.HTTPException):
            pass    # accepted into the backlog just as the listener closed
        time.sleep(0.05)
    else:
        pytest.fail("SIGUSR1 did not take the emulator down")
    c.proc.send_signal(signal.SIGUSR2)
    deadline = time.monotonic() + 5
    while True:
        try:
            assert health().status == 200
            break
        except (ConnectionRefusedError, ConnectionResetError, http.client.HTTPException):
            assert time.monotonic() < deadline, "SIGUSR2 did not bring it back"
            time.sleep(0.05)
    c.proc.stdin.close()
    assert c.proc.wait(10) == 0


def test_cli_pki_subcommand(tmp_path):
    out = subprocess.run([PYTHON, "-m", "kms_emulators", "pki", str(tmp_path)],
                         env=dict(os.environ, PYTHONPATH=TEST_DIR, PYTHONDONTWRITEBYTECODE="1"),
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    files = json.loads(out.stdout)
    for k in ("ca_cert", "server_cert", "server_key", "other_ca_cert"):
        assert pathlib.Path(files[k]).exists()
