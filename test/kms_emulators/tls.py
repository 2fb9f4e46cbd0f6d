"""Throwaway PKI for the emulators' HTTPS mode (python3-cryptography).

:func:`make_test_pki` writes into a directory:

* ``ca.pem``        - a self-signed test CA certificate (trust anchor for clients)
* ``server.pem``    - a server certificate issued by that CA for
                      DNS:localhost, IP:127.0.0.1 and IP:::1
* ``key.pem``       - the server's private key (PKCS#8, unencrypted, mode 0600)
* ``other-ca.pem``  - an unrelated CA certificate: a client that trusts only
                      this one must refuse the server

Keys are ECDSA P-256 by default (fast to generate); ``key_type="rsa"`` gives
RSA-2048 instead.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass
class TlsFiles:
    directory: Path
    ca_cert: Path
    server_cert: Path
    server_key: Path
    other_ca_cert: Path

    def as_dict(self) -> dict:
        return {k: str(v) for k, v in self.__dict__.items()}


def _new_key(key_type: str):
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError("key_type must be 'ec' or 'rsa'")


def _name(cn: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pg_envelope KMS emulator (test only)"),
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
    ])


def _make_ca(cn: str, key_type: str, now: datetime.datetime, days: int):
    key = _new_key(key_type)
    name = _name(cn)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True,
            crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def make_test_pki(directory, *, dns_names=("localhost",), ip_addresses=("127.0.0.1", "::1"),
                  days: int = 7, key_type: str = "ec") -> TlsFiles:
    """Create a test CA, a server certificate signed by it and an unrelated CA."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)

    ca_key, ca_cert = _make_ca("pg_envelope test CA", key_type, now, days)
    _other_key, other_cert = _make_ca("pg_envelope UNRELATED test CA", key_type, now, days)

    srv_key = _new_key(key_type)
    sans = [x509.DNSName(n) for n in dns_names] + \
           [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    cn = dns_names[0] if dns_names else ip_addresses[0]
    ku_enc = key_type == "rsa"
    srv_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca_cert.subject)
        .public_key(srv_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=ku_enc,
            data_encipherment=False, key_agreement=False, key_cert_sign=False,
            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(srv_key.public_key()),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    files = TlsFiles(directory=d, ca_cert=d / "ca.pem", server_cert=d / "server.pem",
                     server_key=d / "key.pem", other_ca_cert=d / "other-ca.pem")
    pem = serialization.Encoding.PEM
    _write(files.ca_cert, ca_cert.public_bytes(pem))
    _write(files.other_ca_cert, other_cert.public_bytes(pem))
    _write(files.server_cert, srv_cert.public_bytes(pem))
    _write(files.server_key, srv_key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()), 0o600)
    return files
