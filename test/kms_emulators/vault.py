"""HashiCorp Vault / OpenBao Transit secrets engine emulator.

Endpoints (``{mount}`` defaults to ``transit``; several mounts can be configured):

* ``POST /v1/{mount}/keys/{name}``                   create a key ({"type", "derived"})
* ``GET  /v1/{mount}/keys/{name}``                   read key info
* ``POST /v1/{mount}/keys/{name}/rotate``            add a key version
* ``POST /v1/{mount}/keys/{name}/config``            min_decryption_version, ...
* ``POST /v1/{mount}/encrypt/{name}``                {"plaintext", "context"?, "key_version"?, "associated_data"?}
* ``POST /v1/{mount}/decrypt/{name}``                {"ciphertext", "context"?, "associated_data"?}
* ``POST /v1/{mount}/rewrap/{name}``                 {"ciphertext", "context"?, "key_version"?}
* ``POST /v1/{mount}/datakey/{plaintext|wrapped}/{name}``  {"bits"?, "context"?}
* ``GET  /v1/sys/health``                            unauthenticated health
* ``POST /v1/auth/{auth mount}/login``               AppRole {"role_id", "secret_id"},
  Kubernetes and JWT {"role", "jwt"}: a token with a TTL and a max TTL
* ``POST /v1/auth/token/renew-self``                 {"increment"?}: extends the calling token,
  capped at its max TTL (with Vault's warning)

Auth: ``X-Vault-Token: <token>`` (or ``Authorization: Bearer <token>``);
``X-Vault-Namespace`` must match the configured namespace when one is set.
Static tokens (``token=``) never expire; login tokens do: past their TTL (or max TTL)
Transit answers 403 ``permission denied`` (Vault's answer to a token it has expired),
an unknown or revoked token gets the ``permission denied`` + ``invalid token``
multierror. Counters per endpoint: ``{mount}/login`` (e.g. ``approle/login``) and
``renew-self`` beside the Transit operations.
Ciphertexts are ``vault:v<N>:<base64(nonce || AES-GCM ciphertext || tag)>``.

As in real Vault, ``context`` only matters for keys created with
``derived=true`` (it is then required and feeds HKDF); for other keys it is
ignored.  Use ``associated_data`` for AEAD binding of non-derived keys.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import secrets
import os
import re
import threading
import time
import uuid
from typing import Optional

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .base import ApiError, Emulator, Request, Response, json_response, new_request_id

KEY_TYPES = {"aes256-gcm96": 32, "aes128-gcm96": 16, "chacha20-poly1305": 32}
_CT_RE = re.compile(r"^vault:v(\d+):(.*)$", re.S)
_NAME = r"[A-Za-z0-9_.\-]+"


class _Key:
    def __init__(self, name: str, key_type: str, derived: bool):
        self.name = name
        self.type = key_type
        self.derived = derived
        self.versions: dict = {}          # version -> (key bytes, created unix time)
        self.latest = 0
        self.min_decryption_version = 1
        self.min_encryption_version = 0
        self.deletion_allowed = False
        self.disabled = False             # emulator-only: policy denies decrypt
        self.rotate()

    def rotate(self) -> int:
        self.latest += 1
        self.versions[self.latest] = (os.urandom(KEY_TYPES[self.type]), int(time.time()))
        return self.latest

    def info(self) -> dict:
        return {
            "name": self.name, "type": self.type, "derived": self.derived,
            "deletion_allowed": self.deletion_allowed, "exportable": False,
            "allow_plaintext_backup": False, "auto_rotate_period": 0, "imported_key": False,
            "keys": {str(v): t for v, (_, t) in sorted(self.versions.items())},
            "latest_version": self.latest, "min_available_version": 0,
            "min_decryption_version": self.min_decryption_version,
            "min_encryption_version": self.min_encryption_version,
            "supports_encryption": True, "supports_decryption": True,
            "supports_derivation": True, "supports_signing": False,
            **({"kdf": "hkdf_sha256"} if self.derived else {}),
        }


class _Lease:
    """A login token: valid until ``expires``, never past ``max_expires``."""

    def __init__(self, role: dict, mount: str):
        now = time.time()
        self.role, self.mount = role, mount
        self.ttl = role["ttl"]
        self.max_expires = now + role["max_ttl"]
        self.expires = min(now + self.ttl, self.max_expires)
        self.renewable = role["renewable"]
        self.accessor = secrets.token_urlsafe(18)

    def remaining(self) -> int:
        return max(0, round(self.expires - time.time()))


_DURATION = re.compile(r"^(\d+)([smh]?)$")


def _seconds(value) -> Optional[int]:
    """A Vault duration: an integer of seconds or "90", "90s", "5m", "1h"."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str):
        m = _DURATION.match(value.strip())
        if m:
            return int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]
    return None


def _b64decode(value, what: str) -> bytes:
    if not isinstance(value, str):
        raise _verr(f"failed to base64-decode {what}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _verr(f"failed to base64-decode {what}")


def _verr(msg: str, status: int = 400) -> ApiError:
    return ApiError(json_response(status, {"errors": [msg]}))


class VaultEmulator(Emulator):
    provider = "vault"

    def __init__(self, *, token: str = "emulator-root-token", namespace: Optional[str] = None,
                 mounts=("transit",), allow_upsert: bool = False, **kw):
        super().__init__(**kw)
        self.tokens = {token} if isinstance(token, str) else set(token)
        self.namespace = namespace.strip("/") if namespace else None
        self.mounts = set(mounts)
        #: Real Vault creates a missing key on encrypt when the policy allows
        #: "create"; off by default so the "key not found" path is testable.
        self.allow_upsert = allow_upsert
        self._keys: dict = {}
        self._lock = threading.RLock()
        #: auth mount -> {"method": "approle"|"kubernetes"|"jwt", "roles": {...}}
        self.auth_mounts: dict = {}
        #: issued login tokens: token -> _Lease
        self.leases: dict = {}
        #: when set, renew-self answers 403 "permission denied" (renewal refused)
        self.refuse_renewals = False

    # ----------------------------------------------------------- auth methods
    def _role(self, method: str, mount: Optional[str], name: str, ttl: int, max_ttl: int,
              renewable: bool, **extra) -> dict:
        mount = (mount or method).strip("/")
        with self._lock:
            m = self.auth_mounts.setdefault(mount, {"method": method, "roles": {}})
            if m["method"] != method:
                raise ValueError(f"auth mount {mount!r} is a {m['method']} mount")
            role = {"name": name, "ttl": int(ttl), "max_ttl": int(max_ttl), "renewable": renewable,
                    **extra}
            m["roles"][name] = role
            return role

    def add_approle(self, name: str = "pg-envelope", *, role_id: Optional[str] = None,
                    secret_id: Optional[str] = None, mount: Optional[str] = None, ttl: int = 3600,
                    max_ttl: int = 86400, renewable: bool = True) -> tuple:
        """An AppRole role; returns its (role_id, secret_id)."""
        role_id = role_id or str(uuid.uuid4())
        secret_id = secret_id or str(uuid.uuid4())
        self._role("approle", mount, name, ttl, max_ttl, renewable, role_id=role_id,
                   secret_ids={secret_id})
        return role_id, secret_id

    def add_kubernetes_role(self, name: str, expected_jwt: str, *, mount: Optional[str] = None,
                            ttl: int = 3600, max_ttl: int = 86400, renewable: bool = True) -> None:
        """A Kubernetes auth role that accepts the service-account JWT ``expected_jwt``."""
        self._role("kubernetes", mount, name, ttl, max_ttl, renewable, jwt=expected_jwt)

    def add_jwt_role(self, name: str, expected_jwt: str, *, mount: Optional[str] = None,
                     ttl: int = 3600, max_ttl: int = 86400, renewable: bool = True) -> None:
        """A JWT/OIDC auth role that accepts the JWT ``expected_jwt``."""
        self._role("jwt", mount, name, ttl, max_ttl, renewable, jwt=expected_jwt)

    def issued_tokens(self) -> list:
        with self._lock:
            return list(self.leases)

    def expire_tokens(self) -> None:
        """Let every login token expire now (they stay known: 403 "permission denied")."""
        with self._lock:
            for lease in self.leases.values():
                lease.expires = min(lease.expires, time.time() - 1)

    def revoke_tokens(self) -> None:
        """Revoke every login token (unknown from now on: "invalid token")."""
        with self._lock:
            self.leases.clear()

    # ----------------------------------------------------------- Python helpers
    def create_key(self, name: str, mount: str = "transit", key_type: str = "aes256-gcm96",
                   derived: bool = False) -> dict:
        if key_type not in KEY_TYPES:
            raise ValueError(f"unknown key type {key_type!r}")
        with self._lock:
            self.mounts.add(mount)
            k = self._keys.get((mount, name))
            if k is None:
                k = self._keys[(mount, name)] = _Key(name, key_type, derived)
            return k.info()

    def rotate_key(self, name: str, mount: str = "transit") -> int:
        with self._lock:
            return self._key(mount, name).rotate()

    def set_min_decryption_version(self, name: str, version: int, mount: str = "transit") -> None:
        with self._lock:
            self._key(mount, name).min_decryption_version = int(version)

    def disable_key(self, name: str, mount: str = "transit") -> None:
        """Deny decrypt/rewrap on the key (403 permission denied), as when the
        token's policy stops granting it. Encrypt keeps working."""
        with self._lock:
            self._key(mount, name).disabled = True

    def enable_key(self, name: str, mount: str = "transit") -> None:
        with self._lock:
            self._key(mount, name).disabled = False

    def key_info(self, name: str, mount: str = "transit") -> dict:
        with self._lock:
            return self._key(mount, name).info()

    def _key(self, mount: str, name: str) -> _Key:
        k = self._keys.get((mount, name))
        if k is None:
            raise KeyError(f"no key {mount}/{name}")
        return k

    def describe(self) -> dict:
        with self._lock:
            keys = [f"{m}/{n}" for (m, n) in sorted(self._keys)]
        return {"tokens": sorted(self.tokens), "namespace": self.namespace,
                "mounts": sorted(self.mounts), "keys": keys,
                "auth_mounts": {m: v["method"] for m, v in sorted(self.auth_mounts.items())}}

    # ----------------------------------------------------------- routing
    def route(self, req: Request):
        p = req.path
        if p == "/v1/sys/health" and req.method in ("GET", "HEAD"):
            return "health", self._health
        if not p.startswith("/v1/"):
            return None
        rest = p[4:]
        post = req.method in ("POST", "PUT")
        if rest == "auth/token/renew-self" and post:
            return "renew-self", self._renew_self
        m = re.match(r"^auth/(?P<mount>.+)/login$", rest)
        if m and post and m.group("mount") in self.auth_mounts:
            mount = m.group("mount")
            return f"{mount}/login", (lambda r, mount=mount: self._login(r, mount))
        patterns = (
            ("POST", rf"^(?P<mount>.+?)/encrypt/(?P<name>{_NAME})$", "encrypt", self._encrypt),
            ("POST", rf"^(?P<mount>.+?)/decrypt/(?P<name>{_NAME})$", "decrypt", self._decrypt),
            ("POST", rf"^(?P<mount>.+?)/rewrap/(?P<name>{_NAME})$", "rewrap", self._rewrap),
            ("POST", rf"^(?P<mount>.+?)/datakey/(?P<kind>plaintext|wrapped)/(?P<name>{_NAME})$",
             "datakey", self._datakey),
            ("POST", rf"^(?P<mount>.+?)/keys/(?P<name>{_NAME})/rotate$", "rotate", self._rotate),
            ("POST", rf"^(?P<mount>.+?)/keys/(?P<name>{_NAME})/config$", "config", self._config),
            ("POST", rf"^(?P<mount>.+?)/keys/(?P<name>{_NAME})$", "create_key", self._create),
            ("GET", rf"^(?P<mount>.+?)/keys/(?P<name>{_NAME})$", "read_key", self._read),
        )
        for method, pat, op, fn in patterns:
            # Vault treats PUT exactly like POST.
            if method != ("POST" if req.method == "PUT" else req.method):
                continue
            m = re.match(pat, rest)
            if m and m.group("mount") in self.mounts:
                params = m.groupdict()
                return op, (lambda r, fn=fn, params=params: fn(r, **params))
        return None

    def not_found_response(self, req: Request) -> Response:
        return json_response(404, {"errors": [f"no handler for route \"{req.path[4:]}\". "
                                              "route entry not found."]})

    def throttle_response(self, req: Request, retry_after: int) -> Response:
        return json_response(429, {"errors": [f"request path \"{req.path[4:]}\": "
                                              "rate limit quota exceeded"]},
                             [("Retry-After", str(retry_after))])

    def http_error_response(self, req: Request, status: int) -> Response:
        msg = "Vault is sealed" if status == 503 else "internal error"
        return json_response(status, {"errors": [msg]})

    def authenticate(self, req: Request, op: str) -> Optional[Response]:
        if op == "health":
            return None
        # As Vault 1.x answers: a token it does not know is "permission denied" plus
        # "invalid token" (a multierror); a known token outside its namespace or policy
        # is a bare "permission denied".
        invalid = json_response(403, {"errors": ["2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n"]})
        denied = json_response(403, {"errors": ["permission denied"]})
        ns = (req.header("X-Vault-Namespace") or "").strip("/")
        if ns in ("", "root"):
            ns = None
        if op.endswith("/login"):  # no token; the auth mount lives in the namespace
            return None if ns == self.namespace else denied
        token = req.header("X-Vault-Token")
        if token is None:
            auth = req.header("Authorization") or ""
            if auth[:7].lower() == "bearer ":
                token = auth[7:].strip()
        lease = self.leases.get(token) if token else None
        if not token or (token not in self.tokens and lease is None):
            return invalid
        if lease is not None and lease.expires <= time.time():
            return denied
        if ns != self.namespace:
            return denied
        return None

    # ----------------------------------------------------------- helpers
    @staticmethod
    def _wrap(data: dict) -> Response:
        return json_response(200, {
            "request_id": new_request_id(), "lease_id": "", "renewable": False,
            "lease_duration": 0, "data": data, "wrap_info": None, "warnings": None,
            "auth": None}, [("Cache-Control", "no-store")])

    @staticmethod
    def _params(req: Request) -> dict:
        if not req.body.strip():
            return {}
        try:
            data = json.loads(req.body)
        except ValueError:
            raise _verr("failed to parse JSON input")
        if not isinstance(data, dict):
            raise _verr("failed to parse JSON input")
        return data

    def _get_key(self, mount: str, name: str) -> _Key:
        k = self._keys.get((mount, name))
        if k is None:
            raise _verr("encryption key not found")
        return k

    @staticmethod
    def _derive(key: _Key, version: int, params: dict) -> bytes:
        raw = key.versions[version][0]
        if not key.derived:
            return raw
        ctx = params.get("context")
        if not ctx:
            raise _verr("missing 'context' for key derivation; the key was created using a "
                        "derived key, which means additional, per-request information must be "
                        "included in order to perform operations with the key")
        context = _b64decode(ctx, "context")
        return HKDF(algorithm=hashes.SHA256(), length=len(raw), salt=None,
                    info=context).derive(raw)

    @staticmethod
    def _aead(key: _Key, material: bytes):
        return ChaCha20Poly1305(material) if key.type == "chacha20-poly1305" else AESGCM(material)

    @staticmethod
    def _aad(params: dict) -> Optional[bytes]:
        ad = params.get("associated_data")
        return _b64decode(ad, "associated_data") if ad else None

    def _seal(self, key: _Key, params: dict, plaintext: bytes) -> tuple:
        version = int(params.get("key_version") or 0)
        if version == 0:
            version = key.latest
        if version > key.latest or version not in key.versions:
            raise _verr("invalid key version")
        if key.min_encryption_version and version < key.min_encryption_version:
            raise _verr("cannot encrypt with a key version older than min_encryption_version")
        material = self._derive(key, version, params)
        nonce = os.urandom(12)
        ct = self._aead(key, material).encrypt(nonce, plaintext, self._aad(params))
        return f"vault:v{version}:" + base64.b64encode(nonce + ct).decode(), version

    def _open(self, key: _Key, params: dict) -> bytes:
        ciphertext = params.get("ciphertext")
        if not ciphertext or not isinstance(ciphertext, str):
            raise _verr("missing ciphertext to decrypt")
        m = _CT_RE.match(ciphertext)
        if not m:
            raise _verr("invalid ciphertext: no prefix")
        version = int(m.group(1))
        try:
            blob = base64.b64decode(m.group(2), validate=True)
        except (binascii.Error, ValueError):
            raise _verr("invalid ciphertext: could not decode base64")
        if version < 1 or version > key.latest or version not in key.versions:
            raise _verr("invalid key version")
        if version < key.min_decryption_version:
            raise _verr("ciphertext or signature version is disallowed by policy (too old)")
        material = self._derive(key, version, params)
        if len(blob) < 12 + 16:
            raise _verr("invalid ciphertext: too short")
        try:
            return self._aead(key, material).decrypt(blob[:12], blob[12:], self._aad(params))
        except Exception:
            raise _verr("cipher: message authentication failed")

    # ----------------------------------------------------------- operations
    def _health(self, req: Request) -> Response:
        return json_response(200, {
            "initialized": True, "sealed": False, "standby": False,
            "performance_standby": False, "replication_performance_mode": "disabled",
            "replication_dr_mode": "disabled", "server_time_utc": int(time.time()),
            "version": "1.15.0+kms-emulator", "cluster_name": "kms-emulator",
            "cluster_id": "00000000-0000-0000-0000-000000000000"})

    def _auth_response(self, token: str, lease: _Lease, warnings=None) -> Response:
        role = lease.role
        return json_response(200, {
            "request_id": new_request_id(), "lease_id": "", "renewable": False,
            "lease_duration": 0, "data": None, "wrap_info": None, "warnings": warnings,
            "auth": {"client_token": token, "accessor": lease.accessor,
                     "policies": ["default", "pg-envelope"], "token_policies": ["default", "pg-envelope"],
                     "metadata": {"role_name": role["name"]}, "lease_duration": lease.remaining(),
                     "renewable": lease.renewable, "entity_id": str(uuid.uuid4()),
                     "token_type": "service", "orphan": True, "mfa_requirement": None,
                     "num_uses": 0}}, [("Cache-Control", "no-store")])

    def _login(self, req: Request, mount: str) -> Response:
        params = self._params(req)
        with self._lock:
            m = self.auth_mounts[mount]
            method, roles = m["method"], m["roles"]
            if method == "approle":
                role_id, secret_id = params.get("role_id"), params.get("secret_id")
                if not isinstance(role_id, str) or not role_id:
                    raise _verr("missing role_id")
                if not isinstance(secret_id, str) or not secret_id:
                    raise _verr("missing secret_id")
                role = next((r for r in roles.values()
                             if hmac.compare_digest(r["role_id"].encode(), role_id.encode())), None)
                if role is None or not any(hmac.compare_digest(s.encode(), secret_id.encode())
                                           for s in role["secret_ids"]):
                    raise _verr("invalid role or secret ID")
            else:
                name, jwt = params.get("role"), params.get("jwt")
                if not isinstance(name, str) or not name:
                    raise _verr("missing role")
                if not isinstance(jwt, str) or not jwt:
                    raise _verr("missing jwt")
                role = roles.get(name)
                if role is None:
                    raise _verr(f'invalid role name "{name}"' if method == "kubernetes"
                                else f'role "{name}" could not be found')
                if not hmac.compare_digest(role["jwt"].encode(), jwt.encode()):
                    if method == "kubernetes":
                        raise _verr("permission denied", 403)
                    raise _verr("error validating token: invalid signature")
            token = "hvs." + secrets.token_urlsafe(24)
            lease = self.leases[token] = _Lease(role, mount)
            return self._auth_response(token, lease)

    def _renew_self(self, req: Request) -> Response:
        params = self._params(req)
        token = req.header("X-Vault-Token")
        with self._lock:
            lease = self.leases.get(token)
            if lease is None:  # a static token: never expires, nothing to renew
                raise _verr("lease is not renewable")
            if self.refuse_renewals:
                raise _verr("permission denied", 403)
            if not lease.renewable:
                raise _verr("lease is not renewable")
            increment = _seconds(params.get("increment", 0))
            if increment is None:
                raise _verr("invalid increment")
            now = time.time()
            wanted = increment or lease.ttl
            lease.expires = min(now + wanted, lease.max_expires)
            warnings = None
            if now + wanted > lease.max_expires:
                warnings = [f'TTL of "{wanted}s" exceeded the effective max_ttl of '
                            f'"{lease.remaining()}s"; TTL value is capped accordingly']
            return self._auth_response(token, lease, warnings)

    def _encrypt(self, req: Request, mount: str, name: str) -> Response:
        params = self._params(req)
        if "plaintext" not in params:
            raise _verr("missing plaintext to encrypt")
        plaintext = _b64decode(params["plaintext"], "plaintext")
        with self._lock:
            key = self._keys.get((mount, name))
            if key is None and self.allow_upsert:
                key = self._keys[(mount, name)] = _Key(name, "aes256-gcm96",
                                                       bool(params.get("derived")))
            if key is None:
                raise _verr("encryption key not found")
            ct, version = self._seal(key, params, plaintext)
        return self._wrap({"ciphertext": ct, "key_version": version})

    def _decrypt(self, req: Request, mount: str, name: str) -> Response:
        params = self._params(req)
        with self._lock:
            key = self._get_key(mount, name)
            if key.disabled:
                raise _verr("permission denied", 403)
            pt = self._open(key, params)
        return self._wrap({"plaintext": base64.b64encode(pt).decode()})

    def _rewrap(self, req: Request, mount: str, name: str) -> Response:
        params = self._params(req)
        with self._lock:
            key = self._get_key(mount, name)
            if key.disabled:
                raise _verr("permission denied", 403)
            pt = self._open(key, params)
            ct, version = self._seal(key, params, pt)
        return self._wrap({"ciphertext": ct, "key_version": version})

    def _datakey(self, req: Request, mount: str, name: str, kind: str) -> Response:
        params = self._params(req)
        bits = int(params.get("bits") or 256)
        if bits not in (128, 256, 512):
            raise _verr("invalid bits; must be 128, 256, or 512")
        dk = os.urandom(bits // 8)
        with self._lock:
            key = self._get_key(mount, name)
            ct, version = self._seal(key, params, dk)
        data = {"ciphertext": ct, "key_version": version}
        if kind == "plaintext":
            data["plaintext"] = base64.b64encode(dk).decode()
        return self._wrap(data)

    def _create(self, req: Request, mount: str, name: str) -> Response:
        params = self._params(req)
        key_type = params.get("type") or "aes256-gcm96"
        if key_type not in KEY_TYPES:
            raise _verr(f"unknown key type: {key_type}")
        with self._lock:
            key = self._keys.get((mount, name))
            if key is None:
                key = self._keys[(mount, name)] = _Key(name, key_type, bool(params.get("derived")))
            return self._wrap(key.info())

    def _read(self, req: Request, mount: str, name: str) -> Response:
        with self._lock:
            key = self._keys.get((mount, name))
            if key is None:
                return json_response(404, {"errors": []})
            return self._wrap(key.info())

    def _rotate(self, req: Request, mount: str, name: str) -> Response:
        with self._lock:
            key = self._get_key(mount, name)
            key.rotate()
            return self._wrap(key.info())

    def _config(self, req: Request, mount: str, name: str) -> Response:
        params = self._params(req)
        with self._lock:
            key = self._get_key(mount, name)
            if "min_decryption_version" in params:
                v = int(params["min_decryption_version"])
                if v < 0 or v > key.latest:
                    raise _verr("cannot set min decryption version to a value greater than "
                                "the latest version")
                key.min_decryption_version = max(1, v)
            if "min_encryption_version" in params:
                v = int(params["min_encryption_version"])
                if v < 0 or v > key.latest:
                    raise _verr("cannot set min encryption version to a value greater than "
                                "the latest version")
                key.min_encryption_version = v
            if "deletion_allowed" in params:
                key.deletion_allowed = bool(params["deletion_allowed"])
            return self._wrap(key.info())


def start(**kw) -> VaultEmulator:
    """Create and start a Vault emulator (see :class:`VaultEmulator` for kwargs)."""
    keys = kw.pop("keys", ())
    emu = VaultEmulator(**kw)
    for k in keys:
        emu.create_key(k)
    return emu.start()


def add_cli_args(p) -> None:
    p.add_argument("--token", action="append", help="accepted X-Vault-Token (repeatable)")
    p.add_argument("--namespace", help="required X-Vault-Namespace")
    p.add_argument("--mount", action="append", help="transit mount path (default transit)")
    p.add_argument("--key", action="append", default=[], help="create key NAME in the first mount")
    p.add_argument("--derived-key", action="append", default=[],
                   help="create a derived (context-bound) key NAME")
    p.add_argument("--allow-upsert", action="store_true")


def from_cli_args(args, **kw) -> VaultEmulator:
    mounts = args.mount or ["transit"]
    emu = VaultEmulator(token=args.token or ["emulator-root-token"], namespace=args.namespace,
                        mounts=mounts, allow_upsert=args.allow_upsert, **kw)
    for k in args.key:
        emu.create_key(k, mount=mounts[0])
    for k in args.derived_key:
        emu.create_key(k, mount=mounts[0], derived=True)
    return emu
