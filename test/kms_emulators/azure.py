"""Azure Key Vault (keys, data plane) emulator, plus the IMDS token endpoint.

* ``POST /keys/{name}[/{version}]/wrapkey?api-version=7.4``    {"alg", "value"} -> {"kid", "value"}
* ``POST /keys/{name}[/{version}]/unwrapkey?api-version=7.4``  {"alg", "value"} -> {"kid", "value"}
* ``POST /keys/{name}/create?api-version=7.4``                 {"kty", "key_size"?}
* ``POST /keys/{name}/rotate?api-version=7.4``                 new version
* ``GET  /keys/{name}[/{version}]?api-version=7.4``             key bundle (public JWK)
* ``GET  /metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net``
  (header ``Metadata: true``)
* ``POST /{tenant}/oauth2/v2.0/token``  the Azure AD (Entra ID) v2.0 token endpoint,
  client credentials grant with ``scope=https://vault.azure.net/.default``: a client
  secret (``add_client_secret()``), a client certificate assertion (RS256 JWT signed
  with the registered certificate's key, header ``x5t#S256`` or ``x5t`` its
  thumbprint, ``aud`` this endpoint, ``iss`` = ``sub`` = client id;
  ``add_client_certificate()``) or a federated token (workload identity; compared with
  the expected one, ``add_federated_credential()``). Errors are AADSTS-style JSON
  (``error``, ``error_description`` "AADSTSnnn: ...", ``error_codes``, ``trace_id``...).
  Tokens live ``aad_token_ttl`` seconds; counter op ``aad_token``, per-kind counts in
  ``grants``.

``value`` is base64url without padding.  Key types: ``RSA`` / ``RSA-HSM``
(2048-bit per version; algorithms RSA-OAEP-256, RSA-OAEP, RSA1_5) and
``oct-HSM`` (AES; A256KW / A192KW / A128KW per RFC 3394, key size 256 by
default) - as in Key Vault / Managed HSM, AES key wrap needs an ``oct-HSM``
key.  Without a version in the URL the latest version is used.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import threading
import time
import uuid
from typing import Optional

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.keywrap import (InvalidUnwrap, aes_key_unwrap,
                                                    aes_key_wrap)

from . import oauth
from .base import ApiError, Emulator, Request, Response, json_response

VAULT_RESOURCE = "https://vault.azure.net"
IMDS_PATH = "/metadata/identity/oauth2/token"
AAD_TOKEN_RE = re.compile(r"^/(?P<tenant>[^/]+)/oauth2/v2\.0/token$")
VAULT_SCOPE = "https://vault.azure.net/.default"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_NAME = r"[0-9A-Za-z-]{1,127}"
_VERSION = r"[0-9A-Za-z]{1,64}"
_KEY_OP_RE = re.compile(rf"^/keys/(?P<name>{_NAME})(?:/(?P<version>{_VERSION}))?/"
                        r"(?P<op>wrapkey|unwrapkey)$", re.I)
_KEY_GET_RE = re.compile(rf"^/keys/(?P<name>{_NAME})(?:/(?P<version>{_VERSION}))?/?$")
_KEY_CREATE_RE = re.compile(rf"^/keys/(?P<name>{_NAME})/(?P<op>create|rotate)$", re.I)
_API_VERSION_RE = re.compile(r"^\d+\.\d+(-preview(\.\d+)?)?$")
_B64URL_RE = re.compile(r"^[A-Za-z0-9_-]*={0,2}$")
RSA_ALGS = ("RSA-OAEP-256", "RSA-OAEP", "RSA1_5")
AES_ALGS = {"A128KW": 16, "A192KW": 24, "A256KW": 32}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(s: str) -> bytes:
    if not isinstance(s, str) or not _B64URL_RE.match(s):
        raise ValueError("not base64url")
    s = s.rstrip("=")
    if len(s) % 4 == 1:
        raise ValueError("bad base64url length")
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def kv_error(status: int, code: str, message: str, inner: Optional[str] = None,
             headers=None) -> ApiError:
    err = {"code": code, "message": message}
    if inner:
        err["innererror"] = {"code": inner}
    return ApiError(json_response(status, {"error": err}, headers,
                                  "application/json; charset=utf-8"))


def _int_bytes(n: int) -> bytes:
    return n.to_bytes((n.bit_length() + 7) // 8, "big")


class _Version:
    def __init__(self, kty: str, key_size: int, material: Optional[bytes] = None):
        self.id = uuid.uuid4().hex
        self.kty = kty
        self.enabled = True
        self.created = int(time.time())
        self.rsa = None
        self.aes = None
        if kty.startswith("RSA"):
            self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
        else:
            self.aes = material if material is not None else os.urandom(key_size // 8)


class _Key:
    def __init__(self, name: str, kty: str, key_size: int):
        self.name = name
        self.kty = kty
        self.key_size = key_size
        self.versions: dict = {}
        self.order: list = []

    def add_version(self, material: Optional[bytes] = None) -> _Version:
        v = _Version(self.kty, self.key_size, material)
        self.versions[v.id] = v
        self.order.append(v.id)
        return v

    @property
    def latest(self) -> _Version:
        return self.versions[self.order[-1]]


class AzureKeyVaultEmulator(Emulator):
    provider = "azure"

    def __init__(self, *, tokens=("emulator-azure-token",), denied_tokens=(),
                 token_ttl: int = 86399, tenant_id: str = "00000000-0000-0000-0000-0000000000aa",
                 client_id: str = "00000000-0000-0000-0000-0000000000cc", aad_token_ttl: int = 3599, **kw):
        super().__init__(**kw)
        self._lock = threading.RLock()
        self.static_tokens = {tokens} if isinstance(tokens, str) else set(tokens)
        self.denied_tokens = set(denied_tokens)
        self.token_ttl = int(token_ttl)
        self.tenant_id = tenant_id
        self.client_id = client_id
        self._issued: dict = {}        # token -> (expiry, resource)
        self.aad_token_ttl = int(aad_token_ttl)
        self._clients: dict = {}       # client_id -> {"secrets": set, "certs": {x5t#S256: (x5t, pubkey)}, "federated": set}
        self.imds_client_ids: list = []  # the client_id of each IMDS token request (None: system-assigned)
        self.grants: dict = {}         # "client_secret" / "client_certificate" / "federated" -> count
        self.last_assertion: Optional[dict] = None
        self._keys: dict = {}

    # ----------------------------------------------------------- Python helpers
    def create_key(self, name: str, kty: str = "RSA", key_size: Optional[int] = None,
                   material: Optional[bytes] = None) -> str:
        """Create key ``name``; returns the version id.  ``material`` imports
        raw AES bytes for an ``oct-HSM`` key (e.g. an RFC 3394 test KEK)."""
        if not re.fullmatch(_NAME, name):
            raise ValueError(f"bad key name {name!r}")
        if kty not in ("RSA", "RSA-HSM", "oct-HSM"):
            raise ValueError(f"unsupported kty {kty!r}")
        if material is not None:
            if kty != "oct-HSM" or len(material) not in (16, 24, 32):
                raise ValueError("material is a 16/24/32-byte AES key for kty oct-HSM")
            key_size = len(material) * 8
        size = key_size or (2048 if kty.startswith("RSA") else 256)
        if kty.startswith("RSA") and size not in (2048, 3072, 4096):
            raise ValueError("RSA key_size must be 2048, 3072 or 4096")
        if kty == "oct-HSM" and size not in (128, 192, 256):
            raise ValueError("oct-HSM key_size must be 128, 192 or 256")
        with self._lock:
            k = self._keys.get(name)
            if k is None or k.kty != kty or k.key_size != size:
                k = self._keys[name] = _Key(name, kty, size)
            v = k.add_version(material)
            return v.id

    def rotate_key(self, name: str) -> str:
        with self._lock:
            k = self._keys[name]
            return k.add_version().id

    def set_enabled(self, name: str, enabled: bool, version: Optional[str] = None) -> None:
        with self._lock:
            k = self._keys[name]
            for v in ([k.versions[version]] if version else k.versions.values()):
                v.enabled = enabled

    def versions(self, name: str) -> list:
        with self._lock:
            return list(self._keys[name].order)

    def public_key(self, name: str, version: Optional[str] = None):
        with self._lock:
            k = self._keys[name]
            v = k.versions[version] if version else k.latest
            return v.rsa.public_key()

    def issue_token(self, resource: str = VAULT_RESOURCE, ttl: Optional[int] = None) -> str:
        tok = "eyJ0eXAiOiJKV1QiLCJhbGciOiJub25lIn0.emulator." + secrets.token_urlsafe(24)
        with self._lock:
            self._issued[tok] = (time.time() + (self.token_ttl if ttl is None else ttl),
                                 resource)
        return tok

    def _client(self, client_id: str) -> dict:
        return self._clients.setdefault(client_id, {"secrets": set(), "certs": {}, "federated": set()})

    def add_client_secret(self, client_id: str, secret: Optional[str] = None) -> str:
        secret = secret or ("Qx8~" + secrets.token_urlsafe(30))
        with self._lock:
            self._client(client_id)["secrets"].add(secret)
        return secret

    def add_client_certificate(self, client_id: str) -> str:
        """Register a new certificate for ``client_id``; returns the PEM file the
        client uses (private key, then certificate)."""
        key = oauth.new_rsa_key()
        cert = oauth.self_signed_cert(key, f"pg-envelope-{client_id[:8]}")
        with self._lock:
            self._client(client_id)["certs"][oauth.thumbprint(cert, "sha256")] = \
                (oauth.thumbprint(cert, "sha1"), cert.public_key())
        return oauth.private_pem(key) + oauth.cert_pem(cert)

    def add_federated_credential(self, client_id: str, token: str) -> None:
        with self._lock:
            self._client(client_id)["federated"].add(token)

    def token_url(self, tenant: Optional[str] = None) -> str:
        return f"{self.url}/{tenant or self.tenant_id}/oauth2/v2.0/token"

    def issued_tokens(self) -> list:
        with self._lock:
            return list(self._issued)

    def expire_tokens(self) -> None:
        with self._lock:
            for t, (_, res) in list(self._issued.items()):
                self._issued[t] = (0, res)

    def describe(self) -> dict:
        with self._lock:
            keys = {n: {"kty": k.kty, "versions": list(k.order)} for n, k in self._keys.items()}
        return {"tokens": sorted(self.static_tokens), "tenant_id": self.tenant_id,
                "keys": keys, "imds_path": IMDS_PATH}

    # ----------------------------------------------------------- routing
    def route(self, req: Request):
        p = req.path
        if req.method == "GET" and p == IMDS_PATH:
            return "imds_token", self._imds
        m = AAD_TOKEN_RE.match(p)
        if m and req.method == "POST":
            return "aad_token", (lambda r, m=m: self._aad_token(r, m.group("tenant")))
        m = _KEY_OP_RE.match(p)
        if m and req.method == "POST":
            op = m.group("op").lower()
            return op, (lambda r, m=m, op=op: self._wrap_op(r, op, m.group("name"),
                                                             m.group("version")))
        m = _KEY_CREATE_RE.match(p)
        if m and req.method == "POST":
            op = m.group("op").lower() + "_key"
            return op, (lambda r, m=m, op=op: self._create_op(r, op, m.group("name")))
        m = _KEY_GET_RE.match(p)
        if m and req.method == "GET":
            return "get_key", (lambda r, m=m: self._get_op(r, m.group("name"),
                                                           m.group("version")))
        return None

    def _challenge(self) -> list:
        return [("WWW-Authenticate",
                 f'Bearer authorization="https://login.microsoftonline.com/{self.tenant_id}", '
                 f'resource="{VAULT_RESOURCE}"')]

    def not_found_response(self, req: Request) -> Response:
        return kv_error(404, "NotFound", f"The requested resource {req.path} was not "
                                         "found.").response

    def throttle_response(self, req: Request, retry_after: int) -> Response:
        return kv_error(429, "Throttled", "Request was not allowed because of throttling. "
                                          f"Please retry after {retry_after} seconds.",
                        headers=[("Retry-After", str(retry_after))]).response

    def http_error_response(self, req: Request, status: int) -> Response:
        code = "ServiceUnavailable" if status == 503 else "InternalServerError"
        return kv_error(status, code, "The service encountered an internal error.").response

    def authenticate(self, req: Request, op: str) -> Optional[Response]:
        if op == "imds_token":
            return self._imds_check(req)
        if op == "aad_token":
            return None   # the client credential is in the form
        api = req.query_value("api-version")
        if not api or not _API_VERSION_RE.match(api):
            return kv_error(400, "BadParameter", "The request URI contains an invalid or "
                                                 "missing api-version parameter.").response
        auth = req.header("Authorization") or ""
        if not auth:
            return kv_error(401, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP "
                                                 "token.", headers=self._challenge()).response
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        if token in self.static_tokens or token in self.denied_tokens:
            pass
        else:
            with self._lock:
                exp, resource = self._issued.get(token, (0, ""))
            if exp <= time.time():
                return kv_error(401, "Unauthorized", "AKV10032: Invalid issuer or token "
                                                     "expired.", headers=self._challenge()).response
            if resource.rstrip("/") != VAULT_RESOURCE:
                return kv_error(401, "Unauthorized", f"AKV10022: Invalid audience. Expected "
                                                     f"{VAULT_RESOURCE}, found: {resource}.",
                                headers=self._challenge()).response
        if token in self.denied_tokens:
            action = {"wrapkey": "wrapKey", "unwrapkey": "unwrapKey"}.get(op, op)
            return kv_error(403, "Forbidden", f"Caller is not authorized to perform action on "
                                              f"resource.\r\nIf role assignments, deny "
                                              f"assignments or role definitions were changed "
                                              f"recently, please observe propagation time.\r\n"
                                              f"Action: 'Microsoft.KeyVault/vaults/keys/"
                                              f"{action}/action'",
                            "ForbiddenByRbac").response
        return None

    def _imds_check(self, req: Request) -> Optional[Response]:
        def bad(desc: str) -> Response:
            return json_response(400, {"error": "invalid_request", "error_description": desc})
        if req.header("X-Forwarded-For") is not None:
            return bad("Request contains X-Forwarded-For header")
        if (req.header("Metadata") or "").lower() != "true":
            return bad("Required metadata header not specified")
        if not req.query_value("api-version"):
            return bad("Required query variable 'api-version' is missing")
        if not req.query_value("resource"):
            return bad("Required audience parameter not specified")
        return None

    # ----------------------------------------------------------- operations
    def _kid(self, req: Request, name: str, version: str) -> str:
        # Key Vault identifiers are always https URLs of the vault host.
        return f"https://{req.host or f'{self.host}:{self.port}'}/keys/{name}/{version}"

    def _find(self, name: str, version: Optional[str]) -> tuple:
        k = self._keys.get(name)
        if k is None:
            raise kv_error(404, "KeyNotFound", f"A key with (name/id) {name} was not found in "
                                               "this key vault. If you recently deleted this key "
                                               "you may be able to recover it using the correct "
                                               "recovery command.")
        if version:
            v = k.versions.get(version)
            if v is None:
                raise kv_error(404, "KeyNotFound", f"A key with (name/id) {name}/{version} was "
                                                   "not found in this key vault.")
        else:
            v = k.latest
        return k, v

    @staticmethod
    def _body(req: Request) -> dict:
        try:
            data = json.loads(req.body) if req.body.strip() else {}
        except ValueError:
            raise kv_error(400, "BadParameter", "The request body is not valid JSON.")
        if not isinstance(data, dict):
            raise kv_error(400, "BadParameter", "The request body must be a JSON object.")
        return data

    def _wrap_op(self, req: Request, op: str, name: str, version: Optional[str]) -> Response:
        params = self._body(req)
        alg = params.get("alg")
        value = params.get("value")
        if not alg or not isinstance(alg, str):
            raise kv_error(400, "BadParameter", "Property 'alg' is required.")
        if value is None:
            raise kv_error(400, "BadParameter", "Property 'value' is required.")
        try:
            data = b64url_decode(value)
        except ValueError:
            raise kv_error(400, "BadParameter", "Property 'value' is not valid base64url.")
        action = "wrapKey" if op == "wrapkey" else "unwrapKey"
        with self._lock:
            k, v = self._find(name, version)
            if not v.enabled:
                raise kv_error(403, "Forbidden", f"Operation {action} is not allowed on a "
                                                 "disabled key.", "KeyDisabled")
            if k.kty.startswith("RSA"):
                if alg not in RSA_ALGS:
                    raise kv_error(400, "BadParameter", f"Invalid algorithm '{alg}' for key type "
                                                        f"{k.kty}.")
                out = self._rsa(v, alg, data, op == "wrapkey")
            else:
                if alg not in AES_ALGS:
                    raise kv_error(400, "BadParameter", f"Invalid algorithm '{alg}' for key type "
                                                        f"{k.kty}.")
                if AES_ALGS[alg] != len(v.aes):
                    raise kv_error(400, "BadParameter", f"Algorithm {alg} does not match the "
                                                        f"{len(v.aes) * 8}-bit key.")
                out = self._aeskw(v, data, op == "wrapkey")
            kid = self._kid(req, name, v.id)
        return json_response(200, {"kid": kid, "value": b64url(out)},
                             [("x-ms-request-id", str(uuid.uuid4())),
                              ("x-ms-keyvault-service-version", "1.9.0.0")],
                             "application/json; charset=utf-8")

    @staticmethod
    def _rsa(v: _Version, alg: str, data: bytes, wrap: bool) -> bytes:
        if alg == "RSA1_5":
            pad = padding.PKCS1v15()
        else:
            h = hashes.SHA256() if alg == "RSA-OAEP-256" else hashes.SHA1()
            pad = padding.OAEP(mgf=padding.MGF1(algorithm=h), algorithm=h, label=None)
        try:
            if wrap:
                return v.rsa.public_key().encrypt(data, pad)
            return v.rsa.decrypt(data, pad)
        except ValueError:
            raise kv_error(400, "BadParameter", "Wrap failed: the value is too long for the key."
                           if wrap else "Unwrap failed: the ciphertext is invalid.")

    @staticmethod
    def _aeskw(v: _Version, data: bytes, wrap: bool) -> bytes:
        try:
            if wrap:
                if len(data) < 16 or len(data) % 8:
                    raise ValueError
                return aes_key_wrap(v.aes, data)
            if len(data) < 24 or len(data) % 8:
                raise ValueError
            return aes_key_unwrap(v.aes, data)
        except (ValueError, InvalidUnwrap):
            raise kv_error(400, "BadParameter",
                           "Wrap failed: key data must be a multiple of 8 bytes, at least 16."
                           if wrap else "Unwrap failed: the ciphertext is invalid.")

    def _bundle(self, req: Request, k: _Key, v: _Version) -> dict:
        jwk = {"kid": self._kid(req, k.name, v.id), "kty": k.kty}
        if v.rsa is not None:
            pub = v.rsa.public_key().public_numbers()
            jwk.update(key_ops=["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"],
                       n=b64url(_int_bytes(pub.n)), e=b64url(_int_bytes(pub.e)))
        else:
            jwk.update(key_ops=["wrapKey", "unwrapKey", "encrypt", "decrypt"])
        return {"key": jwk, "attributes": {"enabled": v.enabled, "created": v.created,
                                           "updated": v.created,
                                           "recoveryLevel": "Recoverable+Purgeable",
                                           "recoverableDays": 90}}

    def _get_op(self, req: Request, name: str, version: Optional[str]) -> Response:
        with self._lock:
            k, v = self._find(name, version)
            return json_response(200, self._bundle(req, k, v),
                                 content_type="application/json; charset=utf-8")

    def _create_op(self, req: Request, op: str, name: str) -> Response:
        with self._lock:
            if op == "rotate_key":
                k, _ = self._find(name, None)
                v = k.add_version()
            else:
                params = self._body(req)
                kty = params.get("kty", "RSA")
                size = params.get("key_size")
                try:
                    self.create_key(name, kty, int(size) if size is not None else None)
                except (ValueError, TypeError) as e:
                    raise kv_error(400, "BadParameter", str(e))
                k = self._keys[name]
                v = k.latest
            return json_response(200, self._bundle(req, k, v),
                                 content_type="application/json; charset=utf-8")

    @staticmethod
    def _aadsts(status: int, error: str, code: int, text: str) -> Response:
        trace, corr = str(uuid.uuid4()), str(uuid.uuid4())
        stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
        return json_response(status, {
            "error": error,
            "error_description": f"AADSTS{code}: {text}\r\nTrace ID: {trace}\r\nCorrelation ID: {corr}\r\n"
                                 f"Timestamp: {stamp}",
            "error_codes": [code], "timestamp": stamp, "trace_id": trace, "correlation_id": corr,
            "error_uri": f"https://login.microsoftonline.com/error?code={code}"})

    def _aad_token(self, req: Request, tenant: str) -> Response:
        e = self._aadsts
        if tenant != self.tenant_id:
            return e(400, "invalid_tenant", 90002, f"Tenant '{tenant[:40]}' not found. Check to make sure you "
                                                   "have the correct tenant ID and are signing into the correct cloud.")
        f = oauth.form(req.body)
        if f.get("grant_type") != "client_credentials":
            return e(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.")
        client_id = f.get("client_id", "")
        if f.get("scope") != VAULT_SCOPE:
            return e(400, "invalid_scope", 1002012, f"The provided value for scope {f.get('scope', '')[:60]} is "
                                                    "not valid. Client credential flows must have a scope value "
                                                    "with /.default suffixed to the resource identifier.")
        with self._lock:
            client = self._clients.get(client_id)
            client = {k: (set(v) if isinstance(v, set) else dict(v)) for k, v in client.items()} if client else None
        if client is None:
            return e(400, "unauthorized_client", 700016,
                     f"Application with identifier '{client_id[:40]}' was not found in the directory "
                     f"'{tenant}'. This can happen if the application has not been installed by the "
                     "administrator of the tenant.")
        if "client_secret" in f:
            kind = "client_secret"
            if not any(secrets.compare_digest(f["client_secret"].encode(), s.encode()) for s in client["secrets"]):
                return e(401, "invalid_client", 7000215,
                         "Invalid client secret provided. Ensure the secret being sent in the request is the "
                         f"client secret value, not the client secret ID, for a secret added to app '{client_id}'.")
        elif "client_assertion" in f:
            if f.get("client_assertion_type") != ASSERTION_TYPE:
                return e(400, "invalid_request", 50027, "Invalid client_assertion_type.")
            assertion = f["client_assertion"]
            if client["federated"] and assertion in client["federated"]:
                kind = "federated"
            else:
                kind = "client_certificate"
                try:
                    header, claims, signed, sig = oauth.split_jwt(assertion)
                except oauth.JwtError:
                    if client["federated"]:
                        return e(400, "invalid_request", 70021, "No matching federated identity record found "
                                                                "for presented assertion.")
                    return e(401, "invalid_client", 50027, "JWT token is invalid or malformed.")
                cert = None
                if "x5t#S256" in header:
                    cert = client["certs"].get(header["x5t#S256"])
                elif "x5t" in header:
                    cert = next((c for c in client["certs"].values() if c[0] == header["x5t"]), None)
                if cert is None:
                    if client["federated"]:
                        return e(400, "invalid_request", 70021, "No matching federated identity record found "
                                                                "for presented assertion.")
                    return e(401, "invalid_client", 700027,
                             "The certificate with identifier used to sign the client assertion is not "
                             f"registered on application. [Reason - The key was not found., Thumbprint of key "
                             f"used by client: '{str(header.get('x5t#S256', header.get('x5t')))[:60]}']")
                if header.get("alg") != "RS256" or not oauth.verify_rs256(cert[1], signed, sig):
                    return e(401, "invalid_client", 700027, "Client assertion failed signature validation.")
                now = time.time()
                if claims.get("aud") != self.token_url(tenant):
                    return e(401, "invalid_client", 700212, "No matching federated identity record found for "
                                                            "presented assertion audience.")
                if claims.get("iss") != client_id or claims.get("sub") != client_id:
                    return e(401, "invalid_client", 700021, "Client assertion application identifier doesn't "
                                                            "match 'client_id' parameter.")
                exp, nbf = claims.get("exp"), claims.get("nbf", 0)
                if not isinstance(exp, int) or exp < now or (isinstance(nbf, int) and nbf > now + 300) \
                        or not claims.get("jti"):
                    return e(401, "invalid_client", 700024, "Client assertion is not within its valid time range.")
                with self._lock:
                    self.last_assertion = {"header": header, "claims": claims, "raw": assertion}
        else:
            return e(401, "invalid_client", 7000218, "The request body must contain the following parameter: "
                                                     "'client_assertion' or 'client_secret'.")
        tok = self.issue_token(VAULT_RESOURCE, self.aad_token_ttl)
        with self._lock:
            self.grants[kind] = self.grants.get(kind, 0) + 1
        return json_response(200, {"token_type": "Bearer", "expires_in": self.aad_token_ttl,
                                   "ext_expires_in": self.aad_token_ttl, "access_token": tok})

    def _imds(self, req: Request) -> Response:
        resource = req.query_value("resource")
        # a user-assigned identity is chosen by client_id (object_id / msi_res_id not used here)
        chosen = req.query_value("client_id")
        with self._lock:
            self.imds_client_ids.append(chosen)
        tok = self.issue_token(resource)
        with self._lock:
            exp = self._issued[tok][0]
        now = int(time.time())
        # IMDS returns every number as a string.
        return json_response(200, {
            "access_token": tok, "client_id": self.client_id,
            "expires_in": str(int(exp) - now), "expires_on": str(int(exp)),
            "ext_expires_in": str(int(exp) - now), "not_before": str(now),
            "resource": resource, "token_type": "Bearer"})


def start(**kw) -> AzureKeyVaultEmulator:
    """Create and start a Key Vault emulator. ``keys=("name", ...)`` creates
    RSA keys; ``oct_keys=(...)`` creates oct-HSM (AES) keys."""
    keys = kw.pop("keys", ())
    oct_keys = kw.pop("oct_keys", ())
    emu = AzureKeyVaultEmulator(**kw)
    for k in keys:
        emu.create_key(k)
    for k in oct_keys:
        emu.create_key(k, kty="oct-HSM")
    return emu.start()


def add_cli_args(p) -> None:
    p.add_argument("--token", action="append", help="accepted static bearer token (repeatable)")
    p.add_argument("--denied-token", action="append", default=[],
                   help="token that authenticates but lacks permission (403)")
    p.add_argument("--token-ttl", type=int, default=86399, help="IMDS token lifetime (s)")
    p.add_argument("--tenant-id", default="00000000-0000-0000-0000-0000000000aa")
    p.add_argument("--key", action="append", default=[], metavar="NAME[:KTY]",
                   help="create a key (KTY RSA (default), RSA-HSM or oct-HSM; repeatable)")


def from_cli_args(args, **kw) -> AzureKeyVaultEmulator:
    emu = AzureKeyVaultEmulator(tokens=args.token or ["emulator-azure-token"],
                                denied_tokens=args.denied_token, token_ttl=args.token_ttl,
                                tenant_id=args.tenant_id, **kw)
    for spec in args.key:
        name, _, kty = spec.partition(":")
        emu.create_key(name, kty or "RSA")
    return emu
