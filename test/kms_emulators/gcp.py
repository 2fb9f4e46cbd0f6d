"""Google Cloud KMS (REST v1) emulator, plus the GCE metadata token endpoint.

* ``POST /v1/projects/{p}/locations/{l}/keyRings/{r}/cryptoKeys/{k}:encrypt``
  (also on ``.../cryptoKeyVersions/{n}:encrypt``)
* ``POST /v1/projects/{p}/locations/{l}/keyRings/{r}/cryptoKeys/{k}:decrypt``
* ``POST /v1/projects/{p}/locations/{l}/keyRings?keyRingId=r``          create a ring
* ``POST /v1/projects/{p}/locations/{l}/keyRings/{r}/cryptoKeys?cryptoKeyId=k``  create a key
* ``GET  /v1/projects/{p}/locations/{l}/keyRings/{r}/cryptoKeys/{k}``  read a key
* ``GET  /computeMetadata/v1/instance/service-accounts/default/token``
  (header ``Metadata-Flavor: Google``)
* ``GET  /computeMetadata/v1/project/project-id``
* ``POST /token``  Google's OAuth 2.0 token endpoint (oauth2.googleapis.com/token) for
  service-account keys: ``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<JWT>``.
  The JWT is verified like Google does: RS256 signature with the public key of the
  service account's key ``kid`` (keys from ``add_service_account()``), ``iss`` a
  known account, ``aud`` this endpoint's URL, ``scope`` with cloudkms (or
  cloud-platform), ``iat``/``exp`` at most an hour apart and not expired. Errors are
  Google's ``{"error": "invalid_grant", "error_description": ...}``. Issued tokens live
  ``sa_token_ttl`` seconds; counter op ``oauth_token``.

KMS calls need ``Authorization: Bearer <token>``: a configured static token or
one issued by the metadata endpoint (those expire after ``token_ttl``).
Checksums are CRC-32C carried as decimal strings (proto3 JSON int64).

Like the real service (proto3 JSON), boolean fields that are false
(``verifiedAdditionalAuthenticatedDataCrc32c``, ``usedPrimary``, ...) are
omitted from responses unless the emulator is built with ``emit_defaults=True``.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import secrets
import struct
import threading
import time
from typing import Optional

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from . import oauth
from .base import ApiError, Emulator, Request, Response, json_response
from .crc32c import crc32c

_KEY_RE = re.compile(
    r"^/v1/(?P<key>projects/(?P<p>[^/]+)/locations/(?P<l>[^/]+)/keyRings/(?P<r>[^/]+)/"
    r"cryptoKeys/(?P<k>[^/:]+))(?:/cryptoKeyVersions/(?P<v>\d+))?:(?P<verb>encrypt|decrypt)$")
_RINGS_RE = re.compile(r"^/v1/(?P<parent>projects/[^/]+/locations/[^/]+)/keyRings$")
_KEYS_RE = re.compile(r"^/v1/(?P<parent>projects/[^/]+/locations/[^/]+/keyRings/[^/]+)/cryptoKeys$")
_GETKEY_RE = re.compile(r"^/v1/(?P<key>projects/[^/]+/locations/[^/]+/keyRings/[^/]+/"
                        r"cryptoKeys/[^/:]+)$")
_ID_RE = re.compile(r"^[a-zA-Z0-9_-]{1,63}$")
METADATA_TOKEN_PATH = "/computeMetadata/v1/instance/service-accounts/default/token"
METADATA_PROJECT_PATH = "/computeMetadata/v1/project/project-id"
OAUTH_TOKEN_PATH = "/token"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ACCEPTED_SCOPES = ("https://www.googleapis.com/auth/cloudkms",
                   "https://www.googleapis.com/auth/cloud-platform")
MAX_PLAINTEXT = 64 * 1024
MAX_AAD = 64 * 1024
MAX_CIPHERTEXT = 10 * 64 * 1024
_STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                 404: "NOT_FOUND", 409: "ALREADY_EXISTS", 429: "RESOURCE_EXHAUSTED",
                 500: "INTERNAL", 501: "NOT_IMPLEMENTED", 503: "UNAVAILABLE",
                 504: "DEADLINE_EXCEEDED"}


def gerror(status: int, message: str, status_name: Optional[str] = None, headers=None) -> ApiError:
    name = status_name or _STATUS_NAMES.get(status, "UNKNOWN")
    return ApiError(json_response(status, {"error": {"code": status, "message": message,
                                                     "status": name}},
                                  headers, "application/json; charset=UTF-8"))


def _rfc3339(t: float) -> str:
    """A Timestamp in proto3 JSON form, as Cloud KMS writes it: nanoseconds, UTC."""
    whole = int(t)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int((t - whole) * 1e9):09d}Z"


class _CryptoKey:
    def __init__(self, name: str):
        self.name = name
        self.versions: dict = {}       # n -> {"key": bytes, "state": "ENABLED"|"DISABLED"}
        self.primary = 0
        self.created = time.time()
        self.add_version(True)

    def add_version(self, make_primary: bool) -> int:
        n = max(self.versions, default=0) + 1
        self.versions[n] = {"key": os.urandom(32), "state": "ENABLED", "created": time.time()}
        if make_primary:
            self.primary = n
        return n

    def version_name(self, n: int) -> str:
        return f"{self.name}/cryptoKeyVersions/{n}"

    def resource(self) -> dict:
        return {
            "name": self.name, "purpose": "ENCRYPT_DECRYPT",
            "createTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.created)),
            "primary": {"name": self.version_name(self.primary),
                        "state": self.versions[self.primary]["state"],
                        "createTime": _rfc3339(self.versions[self.primary]["created"]),
                        "protectionLevel": "SOFTWARE",
                        "algorithm": "GOOGLE_SYMMETRIC_ENCRYPTION"},
            "versionTemplate": {"protectionLevel": "SOFTWARE",
                                "algorithm": "GOOGLE_SYMMETRIC_ENCRYPTION"},
            "destroyScheduledDuration": "86400s",
        }


def _b64(value, field: str) -> bytes:
    """proto3 JSON bytes: standard or URL-safe base64, padding optional."""
    if not isinstance(value, str):
        raise gerror(400, f"Invalid value at '{field}' (TYPE_BYTES), expected a base64 string")
    s = value.strip().replace("-", "+").replace("_", "/")
    s += "=" * (-len(s) % 4)
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        raise gerror(400, f"Invalid value at '{field}' (TYPE_BYTES), Base64 decoding failed "
                          f"for \"{value[:40]}\"")


def _int64(value, field: str) -> int:
    if isinstance(value, bool):
        raise gerror(400, f"Invalid value at '{field}' (type.googleapis.com/google.protobuf."
                          f"Int64Value), {value}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise gerror(400, f"Invalid value at '{field}' (type.googleapis.com/google.protobuf."
                          f"Int64Value), \"{value}\"")


class GcpKmsEmulator(Emulator):
    provider = "gcp"

    def __init__(self, *, tokens=("emulator-gcp-token",), denied_tokens=(),
                 token_ttl: int = 3599, project: str = "emulator-project",
                 service_account: str = "emulator@emulator-project.iam.gserviceaccount.com",
                 emit_defaults: bool = False, sa_token_ttl: int = 3599, **kw):
        super().__init__(**kw)
        self._lock = threading.RLock()
        self.static_tokens = {tokens} if isinstance(tokens, str) else set(tokens)
        self.denied_tokens = set(denied_tokens)
        self.token_ttl = int(token_ttl)
        self.project = project
        self.service_account = service_account
        self.emit_defaults = emit_defaults
        self._issued: dict = {}          # token -> expiry (epoch seconds)
        self.sa_token_ttl = int(sa_token_ttl)
        self._accounts: dict = {}        # client_email -> {key_id: public key}
        self.granted: dict = {}          # client_email -> tokens issued
        self.last_assertion: Optional[dict] = None   # header + claims of the last good JWT
        self._metadata_token: Optional[str] = None
        self._rings: set = set()
        self._keys: dict = {}

    # ----------------------------------------------------------- Python helpers
    def key_name(self, key: str, ring: str = "emulator-ring", location: str = "global",
                 project: Optional[str] = None) -> str:
        return (f"projects/{project or self.project}/locations/{location}/keyRings/{ring}/"
                f"cryptoKeys/{key}")

    def create_crypto_key(self, name_or_key: str, ring: str = "emulator-ring",
                          location: str = "global", project: Optional[str] = None) -> str:
        """Create a key (and its ring); accepts a full resource name or a short
        key id. Returns the full name. Version 1 is primary."""
        name = name_or_key if name_or_key.startswith("projects/") else \
            self.key_name(name_or_key, ring, location, project)
        if not _GETKEY_RE.match("/v1/" + name):
            raise ValueError(f"bad CryptoKey name {name!r}")
        with self._lock:
            self._rings.add(name.split("/cryptoKeys/")[0])
            if name not in self._keys:
                self._keys[name] = _CryptoKey(name)
        return name

    def add_version(self, name: str, make_primary: bool = True) -> int:
        with self._lock:
            return self._keys[name].add_version(make_primary)

    def set_primary(self, name: str, version: int) -> None:
        with self._lock:
            k = self._keys[name]
            if version not in k.versions:
                raise KeyError(version)
            k.primary = version

    def set_version_state(self, name: str, version: int, enabled: bool) -> None:
        with self._lock:
            self._keys[name].versions[version]["state"] = "ENABLED" if enabled else "DISABLED"

    def issue_token(self, ttl: Optional[int] = None) -> str:
        tok = "ya29.emulator-" + secrets.token_urlsafe(24)
        with self._lock:
            self._issued[tok] = time.time() + (self.token_ttl if ttl is None else ttl)
        return tok

    def add_service_account(self, email: Optional[str] = None, key=None) -> dict:
        """Register a service account key; returns the JSON key file content as
        Google issues it (``token_uri`` pointing at this emulator)."""
        email = email or f"pg-envelope@{self.project}.iam.gserviceaccount.com"
        key = key or oauth.new_rsa_key()
        key_id = secrets.token_hex(20)
        with self._lock:
            self._accounts.setdefault(email, {})[key_id] = key.public_key()
        return {"type": "service_account", "project_id": self.project,
                "private_key_id": key_id, "private_key": oauth.private_pem(key),
                "client_email": email, "client_id": str(secrets.randbelow(10**20)),
                "auth_uri": "https://accounts.google.com/o/oauth2/auth",
                "token_uri": self.url + OAUTH_TOKEN_PATH,
                "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
                "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/" + email,
                "universe_domain": "googleapis.com"}

    def delete_service_account_key(self, email: str, key_id: str) -> None:
        with self._lock:
            self._accounts.get(email, {}).pop(key_id, None)

    def issued_tokens(self) -> list:
        with self._lock:
            return list(self._issued)

    def expire_tokens(self) -> None:
        """Expire every token issued by the metadata endpoint / issue_token()."""
        with self._lock:
            for t in self._issued:
                self._issued[t] = 0
            self._metadata_token = None

    def describe(self) -> dict:
        with self._lock:
            return {"tokens": sorted(self.static_tokens), "project": self.project,
                    "keys": sorted(self._keys),
                    "metadata_token_path": METADATA_TOKEN_PATH}

    # ----------------------------------------------------------- routing
    def route(self, req: Request):
        p = req.path
        if req.method == "GET":
            if p == METADATA_TOKEN_PATH:
                return "metadata_token", self._metadata_token_op
            if p == METADATA_PROJECT_PATH:
                return "metadata", self._metadata_project_op
            if _GETKEY_RE.match(p):
                return "get_crypto_key", self._get_key
            return None
        if req.method != "POST":
            return None
        if p == OAUTH_TOKEN_PATH:
            return "oauth_token", self._oauth_token_op
        m = _KEY_RE.match(p)
        if m:
            if m.group("verb") == "encrypt":
                return "encrypt", (lambda r, m=m: self._encrypt(r, m.group("key"), m.group("v")))
            if m.group("v") is not None:
                return None   # decrypt is addressed to the CryptoKey, not a version
            return "decrypt", (lambda r, m=m: self._decrypt(r, m.group("key")))
        m = _RINGS_RE.match(p)
        if m:
            return "create_key_ring", (lambda r, m=m: self._create_ring(r, m.group("parent")))
        m = _KEYS_RE.match(p)
        if m:
            return "create_crypto_key", (lambda r, m=m: self._create_key(r, m.group("parent")))
        return None

    def not_found_response(self, req: Request) -> Response:
        return gerror(404, f"The requested URL {req.path} was not found on this server.").response

    def throttle_response(self, req: Request, retry_after: int) -> Response:
        return gerror(429, "Quota exceeded for quota metric 'Cryptographic requests' and limit "
                           "'Cryptographic requests per minute' of service "
                           "'cloudkms.googleapis.com'.",
                      headers=[("Retry-After", str(retry_after))]).response

    def http_error_response(self, req: Request, status: int) -> Response:
        messages = {503: "The service is currently unavailable.",
                    504: "Deadline exceeded."}
        return gerror(status, messages.get(status, "Internal error encountered.")).response

    def authenticate(self, req: Request, op: str) -> Optional[Response]:
        if op == "oauth_token":
            return None   # the assertion is the credential
        if op in ("metadata_token", "metadata"):
            if req.header("X-Forwarded-For") is not None or \
                    (req.header("Metadata-Flavor") or "") != "Google":
                return Response(403, ("Your client does not have permission to get URL "
                                      f"<code>{req.path}</code> from this server. Missing "
                                      "Metadata-Flavor:Google header.").encode(),
                                [("Metadata-Flavor", "Google")], "text/html; charset=UTF-8")
            return None
        auth = req.header("Authorization") or ""
        challenge = [("WWW-Authenticate", 'Bearer realm="https://accounts.google.com/"')]
        if not auth:
            return gerror(401, "Request is missing required authentication credential. Expected "
                               "OAuth 2 access token, login cookie or other valid authentication "
                               "credential.", headers=challenge).response
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        if not token or not self._token_valid(token):
            return gerror(401, "Request had invalid authentication credentials. Expected OAuth 2 "
                               "access token, login cookie or other valid authentication "
                               "credential.", headers=challenge).response
        if token in self.denied_tokens:
            perm = {"encrypt": "cloudkms.cryptoKeyVersions.useToEncrypt",
                    "decrypt": "cloudkms.cryptoKeyVersions.useToDecrypt"}.get(op,
                                                                          "cloudkms.cryptoKeys.get")
            resource = req.path[4:].split(":")[0]
            return gerror(403, f"Permission '{perm}' denied on resource '{resource}' (or it may "
                               "not exist).").response
        return None

    def _token_valid(self, token: str) -> bool:
        if token in self.static_tokens or token in self.denied_tokens:
            return True
        with self._lock:
            exp = self._issued.get(token)
        return exp is not None and exp > time.time()

    # ----------------------------------------------------------- helpers
    @staticmethod
    def _body(req: Request) -> dict:
        try:
            data = json.loads(req.body) if req.body.strip() else {}
        except ValueError:
            raise gerror(400, "Invalid JSON payload received.")
        if not isinstance(data, dict):
            raise gerror(400, "Invalid JSON payload received. Expected an object.")
        return data

    def _key(self, name: str) -> _CryptoKey:
        k = self._keys.get(name)
        if k is None:
            raise gerror(404, f"{name} not found.")
        return k

    @staticmethod
    def _check_crc(params: dict, crc_field: str, data: bytes, data_field: str) -> bool:
        if params.get(crc_field) is None:
            return False
        want = _int64(params[crc_field], crc_field)
        if want != crc32c(data):
            raise gerror(400, f"The checksum in field {_snake(crc_field)} did not match the data "
                              f"in field {_snake(data_field)}.")
        return True

    def _out(self, obj: dict) -> Response:
        if not self.emit_defaults:
            obj = {k: v for k, v in obj.items() if v is not False}
        return json_response(200, obj, content_type="application/json; charset=UTF-8")

    # ----------------------------------------------------------- operations
    def _metadata_token_op(self, req: Request) -> Response:
        with self._lock:
            tok = self._metadata_token
            exp = self._issued.get(tok, 0) if tok else 0
            if tok is None or exp <= time.time() + 1:
                tok = self._metadata_token = "ya29.emulator-" + secrets.token_urlsafe(24)
                exp = self._issued[tok] = time.time() + self.token_ttl
        body = {"access_token": tok, "expires_in": max(0, int(exp - time.time())),
                "token_type": "Bearer"}
        return json_response(200, body, [("Metadata-Flavor", "Google")])

    def _oauth_token_op(self, req: Request) -> Response:
        def err(error: str, desc: str, status: int = 400) -> Response:
            return json_response(status, {"error": error, "error_description": desc})
        ctype = (req.header("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            return err("invalid_request", "Invalid Content-Type; expected application/x-www-form-urlencoded.")
        f = oauth.form(req.body)
        if f.get("grant_type") != JWT_BEARER:
            return err("unsupported_grant_type", f"Invalid grant_type: {f.get('grant_type', '')[:40]}")
        try:
            header, claims, signed, sig = oauth.split_jwt(f.get("assertion", ""))
        except oauth.JwtError:
            return err("invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes) and in a "
                                        "reasonable timeframe. Check your iat and exp values in the JWT claim.")
        if header.get("alg") != "RS256":
            return err("invalid_grant", "Invalid JWT Signature.")
        with self._lock:
            keys = dict(self._accounts.get(claims.get("iss"), {}))
        if not keys:
            return err("invalid_grant", "Invalid grant: account not found")
        kid = header.get("kid")
        candidates = [keys[kid]] if kid in keys else ([] if kid is not None else list(keys.values()))
        if not any(oauth.verify_rs256(k, signed, sig) for k in candidates):
            return err("invalid_grant", "Invalid JWT Signature.")
        expected_aud = self.url + OAUTH_TOKEN_PATH
        if claims.get("aud") != expected_aud:
            return err("invalid_grant", f"Invalid JWT: Failed audience check. The expected audience is "
                                        f"{expected_aud}.")
        now = time.time()
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, int) or not isinstance(exp, int) or exp - iat > 3600 or exp <= iat \
                or exp < now or iat > now + 60:
            return err("invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes) and in a "
                                        "reasonable timeframe. Check your iat and exp values in the JWT claim.")
        scopes = str(claims.get("scope", "")).split()
        if not any(sc in ACCEPTED_SCOPES for sc in scopes):
            return err("invalid_scope", "Invalid OAuth scope or ID token audience provided.")
        tok = self.issue_token(self.sa_token_ttl)
        with self._lock:
            self.granted[claims["iss"]] = self.granted.get(claims["iss"], 0) + 1
            self.last_assertion = {"header": header, "claims": claims, "raw": f["assertion"]}
        return json_response(200, {"access_token": tok, "expires_in": self.sa_token_ttl,
                                   "token_type": "Bearer"})

    def _metadata_project_op(self, req: Request) -> Response:
        return Response(200, self.project.encode(), [("Metadata-Flavor", "Google")],
                        "application/text")

    def _get_key(self, req: Request) -> Response:
        name = req.path[4:]
        with self._lock:
            return self._out(self._key(name).resource())

    def _create_ring(self, req: Request, parent: str) -> Response:
        ring_id = req.query_value("keyRingId") or ""
        if not _ID_RE.match(ring_id):
            raise gerror(400, "Invalid value for keyRingId")
        name = f"{parent}/keyRings/{ring_id}"
        with self._lock:
            if name in self._rings:
                raise gerror(409, f"KeyRing {name} already exists.")
            self._rings.add(name)
        return self._out({"name": name, "createTime": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                    time.gmtime())})

    def _create_key(self, req: Request, parent: str) -> Response:
        key_id = req.query_value("cryptoKeyId") or ""
        if not _ID_RE.match(key_id):
            raise gerror(400, "Invalid value for cryptoKeyId")
        params = self._body(req)
        purpose = params.get("purpose", "ENCRYPT_DECRYPT")
        if purpose != "ENCRYPT_DECRYPT":
            raise gerror(400, "the emulator only supports purpose ENCRYPT_DECRYPT")
        name = f"{parent}/cryptoKeys/{key_id}"
        with self._lock:
            if parent not in self._rings:
                raise gerror(404, f"KeyRing {parent} not found.")
            if name in self._keys:
                raise gerror(409, f"CryptoKey {name} already exists.")
            self._keys[name] = _CryptoKey(name)
            return self._out(self._keys[name].resource())

    def _encrypt(self, req: Request, name: str, version: Optional[str]) -> Response:
        params = self._body(req)
        if params.get("plaintext") is None:
            raise gerror(400, "plaintext is required.")
        pt = _b64(params["plaintext"], "plaintext")
        aad = _b64(params["additionalAuthenticatedData"], "additionalAuthenticatedData") \
            if params.get("additionalAuthenticatedData") is not None else b""
        if len(pt) > MAX_PLAINTEXT:
            raise gerror(400, f"The plaintext must be at most {MAX_PLAINTEXT} bytes.")
        if len(aad) > MAX_AAD:
            raise gerror(400, f"The additional authenticated data must be at most {MAX_AAD} "
                              "bytes.")
        v_pt = self._check_crc(params, "plaintextCrc32c", pt, "plaintext")
        v_aad = self._check_crc(params, "additionalAuthenticatedDataCrc32c", aad,
                                "additionalAuthenticatedData")
        with self._lock:
            k = self._key(name)
            n = int(version) if version is not None else k.primary
            v = k.versions.get(n)
            if v is None:
                raise gerror(404, f"{k.version_name(n)} not found.")
            if v["state"] != "ENABLED":
                raise gerror(400, f"{k.version_name(n)} is not enabled, current state is: "
                                  f"{v['state']}.", "FAILED_PRECONDITION")
            nonce = os.urandom(12)
            header = struct.pack(">I", n)
            ct = header + nonce + AESGCM(v["key"]).encrypt(
                nonce, pt, header + name.encode() + b"\x00" + aad)
        return self._out({
            "name": k.version_name(n),
            "ciphertext": base64.b64encode(ct).decode(),
            "ciphertextCrc32c": str(crc32c(ct)),
            "verifiedPlaintextCrc32c": v_pt,
            "verifiedAdditionalAuthenticatedDataCrc32c": v_aad,
            "protectionLevel": "SOFTWARE",
        })

    def _decrypt(self, req: Request, name: str) -> Response:
        params = self._body(req)
        if params.get("ciphertext") is None:
            raise gerror(400, "ciphertext is required.")
        ct = _b64(params["ciphertext"], "ciphertext")
        aad = _b64(params["additionalAuthenticatedData"], "additionalAuthenticatedData") \
            if params.get("additionalAuthenticatedData") is not None else b""
        if len(ct) > MAX_CIPHERTEXT:
            raise gerror(400, "The ciphertext is too large.")
        self._check_crc(params, "ciphertextCrc32c", ct, "ciphertext")
        self._check_crc(params, "additionalAuthenticatedDataCrc32c", aad,
                        "additionalAuthenticatedData")
        invalid = gerror(400, "Decryption failed: the ciphertext is invalid.")
        with self._lock:
            k = self._key(name)
            if len(ct) < 4 + 12 + 16:
                raise invalid
            (n,) = struct.unpack(">I", ct[:4])
            v = k.versions.get(n)
            if v is None:
                raise invalid
            if v["state"] != "ENABLED":
                raise gerror(400, f"{k.version_name(n)} is not enabled, current state is: "
                                  f"{v['state']}.", "FAILED_PRECONDITION")
            try:
                pt = AESGCM(v["key"]).decrypt(ct[4:16], ct[16:],
                                              ct[:4] + name.encode() + b"\x00" + aad)
            except Exception:
                raise invalid
            primary = n == k.primary
        return self._out({
            "plaintext": base64.b64encode(pt).decode(),
            "plaintextCrc32c": str(crc32c(pt)),
            "usedPrimary": primary,
            "protectionLevel": "SOFTWARE",
        })


def _snake(name: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name).replace("32_c", "32c")


def start(**kw) -> GcpKmsEmulator:
    """Create and start a Cloud KMS emulator. ``keys=(...)`` creates keys
    (full resource names or short ids in ``emulator-ring``/``global``)."""
    keys = kw.pop("keys", ())
    emu = GcpKmsEmulator(**kw)
    for k in keys:
        emu.create_crypto_key(k)
    return emu.start()


def add_cli_args(p) -> None:
    p.add_argument("--token", action="append", help="accepted static bearer token (repeatable)")
    p.add_argument("--denied-token", action="append", default=[],
                   help="token that authenticates but lacks permission (403)")
    p.add_argument("--token-ttl", type=int, default=3599, help="metadata token lifetime (s)")
    p.add_argument("--project", default="emulator-project")
    p.add_argument("--key", action="append", default=[],
                   help="create a CryptoKey: full name or short id (repeatable)")
    p.add_argument("--emit-defaults", action="store_true",
                   help="also print false booleans in responses")


def from_cli_args(args, **kw) -> GcpKmsEmulator:
    emu = GcpKmsEmulator(tokens=args.token or ["emulator-gcp-token"],
                         denied_tokens=args.denied_token, token_ttl=args.token_ttl,
                         project=args.project, emit_defaults=args.emit_defaults, **kw)
    for k in args.key:
        emu.create_crypto_key(k)
    return emu
