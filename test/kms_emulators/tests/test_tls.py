import ipaddress
import os
import shutil
import ssl
import stat
import subprocess

import pytest
from cryptography import x509

from kms_emulators import vault
from kms_emulators.tls import make_test_pki

import kmshttp

CURL = shutil.which("curl")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl CLI not installed")


def test_pki_files_and_sans(kms_pki):
    for p in (kms_pki.ca_cert, kms_pki.server_cert, kms_pki.server_key, kms_pki.other_ca_cert):
        assert p.exists() and p.stat().st_size > 0
    assert stat.S_IMODE(os.stat(kms_pki.server_key).st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(kms_pki.server_cert.read_bytes())
    ca = x509.load_pem_x509_certificate(kms_pki.ca_cert.read_bytes())
    other = x509.load_pem_x509_certificate(kms_pki.other_ca_cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    assert cert.issuer == ca.subject
    assert other.subject != ca.subject
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_python_client_trusts_ca_and_refuses_other_ca(vault_emulator_tls, kms_pki):
    emu = vault_emulator_tls
    assert emu.url.startswith("https://127.0.0.1:")
    r = kmshttp.request(emu.url, "GET", "/v1/sys/health", cafile=kms_pki.ca_cert)
    assert r.status == 200 and r.json["sealed"] is False
    with pytest.raises(ssl.SSLCertVerificationError):
        kmshttp.request(emu.url, "GET", "/v1/sys/health", cafile=kms_pki.other_ca_cert)
    # The refused handshake did not count as a call.
    assert emu.calls("health") == 1


@needs_curl
def test_curl_with_ca_works_with_ip_and_localhost(vault_emulator_tls, kms_pki):
    emu = vault_emulator_tls
    for host in ("127.0.0.1", "localhost"):
        out = subprocess.run(
            [CURL, "-sS", "--max-time", "10", "--cacert", str(kms_pki.ca_cert),
             "-H", "X-Vault-Token: emulator-root-token",
             "-d", '{"plaintext": "aGVsbG8="}',
             f"https://{host}:{emu.port}/v1/transit/encrypt/pg-envelope"],
            capture_output=True, text=True, timeout=20)
        assert out.returncode == 0, out.stderr
        assert '"ciphertext":"vault:v1:' in out.stdout


@needs_curl
def test_curl_with_unrelated_ca_fails_with_certificate_error(vault_emulator_tls, kms_pki):
    emu = vault_emulator_tls
    out = subprocess.run(
        [CURL, "-sS", "--max-time", "10", "--cacert", str(kms_pki.other_ca_cert),
         f"https://127.0.0.1:{emu.port}/v1/sys/health"],
        capture_output=True, text=True, timeout=20)
    assert out.returncode == 60, (out.returncode, out.stderr)   # CURLE_PEER_FAILED_VERIFICATION
    assert "certificate" in out.stderr.lower()
    assert emu.calls() == 0


@needs_curl
def test_curl_plain_http_to_tls_port_gets_no_answer(vault_emulator_tls):
    out = subprocess.run(
        [CURL, "-sS", "--max-time", "5", f"http://127.0.0.1:{vault_emulator_tls.port}/v1/sys/health"],
        capture_output=True, text=True, timeout=20)
    assert out.returncode != 0
    assert vault_emulator_tls.calls() == 0


def test_rsa_pki_variant(tmp_path):
    files = make_test_pki(tmp_path, key_type="rsa")
    emu = vault.start(tls=files)
    try:
        r = kmshttp.request(emu.url, "GET", "/v1/sys/health", cafile=files.ca_cert)
        assert r.status == 200
    finally:
        emu.stop()


@needs_curl
def test_curl_sees_reset_and_hang_over_tls(vault_emulator_tls, kms_pki):
    """What libcurl will report: RST -> CURLE_RECV_ERROR (56); hang -> timeout (28)."""
    emu = vault_emulator_tls
    cmd = [CURL, "-sS", "--cacert", str(kms_pki.ca_cert), "-H", "X-Vault-Token: emulator-root-token",
           "-d", '{"plaintext": "aGk="}', f"{emu.url}/v1/transit/encrypt/pg-envelope"]
    emu.inject_reset()
    out = subprocess.run(cmd + ["--max-time", "10"], capture_output=True, text=True, timeout=20)
    assert out.returncode == 56 and "reset" in out.stderr.lower(), out.stderr
    emu.inject_hang()
    out = subprocess.run(cmd + ["--max-time", "0.5"], capture_output=True, text=True, timeout=20)
    assert out.returncode == 28, out.stderr
    assert emu.wait_hanging(1, 2) and emu.release() == 1
    out = subprocess.run(cmd + ["--max-time", "10"], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0 and "vault:v1:" in out.stdout
    assert emu.faulted("encrypt") == 2 and emu.calls("encrypt") == 1
