"""OAuth 2.0 helpers shared by the GCP and Azure emulators' token endpoints:
RS256 JWTs (RFC 7515/7519), x-www-form-urlencoded bodies, RSA keys and
self-signed certificates for test credentials (python3-cryptography)."""

from __future__ import annotations

import base64
import datetime
import json
from typing import Optional
from urllib.parse import parse_qs

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(s: str) -> bytes:
    if not isinstance(s, str) or any(c in s for c in "+/="):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


class JwtError(ValueError):
    pass


def split_jwt(token: str) -> tuple:
    """(header, claims, signing_input, signature) of a compact JWS; JwtError when
    it is not one."""
    parts = token.split(".") if isinstance(token, str) else []
    if len(parts) != 3:
        raise JwtError("not a compact JWS")
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
        sig = b64url_decode(parts[2])
    except (ValueError, UnicodeDecodeError) as e:
        raise JwtError(f"undecodable JWT: {e}")
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise JwtError("JWT header or claims are not objects")
    return header, claims, f"{parts[0]}.{parts[1]}".encode(), sig


def verify_rs256(public_key, signing_input: bytes, signature: bytes) -> bool:
    try:
        public_key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
        return True
    except InvalidSignature:
        return False


def sign_rs256(private_key, header: dict, claims: dict) -> str:
    """A JWT signed like pg_envelope does (for emulator tests)."""
    h = b64url(json.dumps(header, separators=(",", ":")).encode())
    c = b64url(json.dumps(claims, separators=(",", ":")).encode())
    sig = private_key.sign(f"{h}.{c}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{h}.{c}.{b64url(sig)}"


def form(body: bytes) -> dict:
    """An application/x-www-form-urlencoded body: name -> first value."""
    try:
        q = parse_qs(body.decode("ascii"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        return {}
    return {k: v[0] for k, v in q.items()}


def new_rsa_key(bits: int = 2048):
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def private_pem(key) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def self_signed_cert(key, common_name: str, days: int = 30):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .sign(key, hashes.SHA256()))


def cert_pem(cert) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def thumbprint(cert, algorithm: str = "sha256") -> str:
    """base64url of the certificate's DER digest: x5t#S256 (sha256) or x5t (sha1)."""
    h = hashes.SHA256() if algorithm == "sha256" else hashes.SHA1()
    return b64url(cert.fingerprint(h))


def bearer_of(header_value: Optional[str]) -> Optional[str]:
    if not header_value or header_value[:7].lower() != "bearer ":
        return None
    return header_value[7:].strip() or None
