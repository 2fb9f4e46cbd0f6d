"""AWS KMS emulator: the JSON 1.1 protocol with SigV4 request signing.

Every request is ``POST /`` with ``Content-Type: application/x-amz-json-1.1``
and ``X-Amz-Target: TrentService.<Operation>``.  Operations: GenerateDataKey,
GenerateDataKeyWithoutPlaintext, Encrypt, Decrypt, ReEncrypt, DescribeKey,
CreateKey, CreateAlias, EnableKey, DisableKey.

Each request's SigV4 signature is recomputed with botocore's own
``SigV4Auth`` over exactly the headers listed in ``SignedHeaders`` (from the
configured access key -> secret map, the emulator's region and service
``kms``) and compared in constant time with the one in ``Authorization``.

Errors are ``{"__type": "<Type>", "message": "..."}`` with HTTP 400 (500 for
KMSInternalException).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import email.utils
import hashlib
import hmac
import json
import os
import re
import struct
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Optional

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.compat import HTTPHeaders
from botocore.credentials import Credentials
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .base import ApiError, Emulator, Request, Response, json_response

CONTENT_TYPE = "application/x-amz-json-1.1"
TARGET_PREFIX = "TrentService."
SERVICE = "kms"
SIGV4_TIMESTAMP = "%Y%m%dT%H%M%SZ"
DEFAULT_ACCESS_KEY = "AKIDEMULATOR00000001"
DEFAULT_SECRET_KEY = "emulator/secret/key/0000000000000000000000"
ALGORITHM = "SYMMETRIC_DEFAULT"

_BLOB_MAGIC = b"KMSE"
_BLOB_VERSION = 1
_UUID_LEN = 36


@dataclass
class _Cred:
    secret_key: str
    session_token: Optional[str] = None
    allowed_ops: Optional[frozenset] = None   # None: every operation
    expires_at: Optional[float] = None        # temporary credentials: refused from then on


@dataclass
class _Key:
    key_id: str
    arn: str
    description: str = ""
    enabled: bool = True
    created: float = field(default_factory=time.time)
    materials: list = field(default_factory=lambda: [os.urandom(32)])
    rotations: list = field(default_factory=list)   # RotationDate of each rotation, oldest first


def _err(type_name: str, message: Optional[str] = None, status: int = 400) -> ApiError:
    body = {"__type": type_name}
    if message is not None:
        body["message"] = message
    return ApiError(json_response(status, body, [("x-amzn-RequestId", str(uuid.uuid4()))],
                                  CONTENT_TYPE))


class _SignedHeadersSigV4(SigV4Auth):
    """botocore's SigV4 canonicalisation, applied to exactly the headers the
    client listed in SignedHeaders (botocore would otherwise add ``host`` or
    drop ``user-agent``/``expect`` on its own)."""

    def headers_to_sign(self, request):
        headers = HTTPHeaders()
        for name, value in request.headers.items():
            headers[name.lower()] = value
        return headers


def compute_sigv4(*, method: str, host: str, path: str, query: str, headers, body: bytes,
                  timestamp: str, access_key: str, secret_key: str, region: str,
                  service: str, session_token: Optional[str] = None,
                  scheme: str = "https") -> tuple:
    """SigV4 signature of a received request, computed by botocore.

    ``headers`` are the (name, value) pairs of the *signed* headers only;
    ``path`` is percent-decoded (botocore re-encodes it); ``query`` is the raw
    query string.  Returns ``(signature_hex, canonical_request, string_to_sign)``.
    """
    url = f"{scheme}://{host}{path}" + (f"?{query}" if query else "")
    areq = AWSRequest(method=method, url=url, data=body)
    for name, value in headers:
        areq.headers[name.lower()] = value
    areq.context["timestamp"] = timestamp
    signer = _SignedHeadersSigV4(Credentials(access_key, secret_key, session_token),
                                 service, region)
    canonical = signer.canonical_request(areq)
    string_to_sign = signer.string_to_sign(areq, canonical)
    return signer.signature(string_to_sign, areq), canonical, string_to_sign


class AwsKmsEmulator(Emulator):
    provider = "aws"

    OPERATIONS = ("GenerateDataKey", "GenerateDataKeyWithoutPlaintext", "Encrypt", "Decrypt",
                  "ReEncrypt", "DescribeKey", "CreateKey", "CreateAlias", "EnableKey",
                  "DisableKey", "ListKeyRotations")

    def __init__(self, *, region: str = "us-east-1", account_id: str = "111122223333",
                 credentials: Optional[dict] = None, max_skew_seconds: int = 900, **kw):
        super().__init__(**kw)
        self.region = region
        self.account_id = account_id
        self.max_skew_seconds = max_skew_seconds
        self._lock = threading.RLock()
        self._creds: dict = {}
        self._keys: dict = {}
        self._aliases: dict = {}
        #: (canonical request, string to sign) of the last signature mismatch.
        self.last_signature_mismatch: Optional[tuple] = None
        if credentials is None:
            credentials = {DEFAULT_ACCESS_KEY: DEFAULT_SECRET_KEY}
        for akid, value in credentials.items():
            if isinstance(value, str):
                self.add_credentials(akid, value)
            else:
                self.add_credentials(akid, *value)

    # ----------------------------------------------------------- Python helpers
    def add_credentials(self, access_key: str, secret_key: str, session_token: Optional[str] = None,
                        allowed_ops=None, expires_at: Optional[float] = None) -> None:
        """Accept ``access_key``; with ``session_token`` requests must carry
        X-Amz-Security-Token; ``allowed_ops`` limits the operations (others get
        AccessDeniedException); from ``expires_at`` (Unix time) on, requests signed
        with them get ``400 ExpiredTokenException`` as from real KMS (temporary
        credentials from STS, IMDS or a container endpoint)."""
        with self._lock:
            self._creds[access_key] = _Cred(secret_key, session_token,
                                            frozenset(allowed_ops) if allowed_ops else None,
                                            expires_at)

    def expire_credentials(self, access_key: Optional[str] = None) -> int:
        """Make temporary credentials expire now (all of them without ``access_key``),
        as when they are revoked or the clock passed their Expiration; returns how many."""
        n = 0
        with self._lock:
            for akid, c in self._creds.items():
                if c.expires_at is not None and (access_key is None or akid == access_key):
                    c.expires_at = min(c.expires_at, time.time())
                    n += 1
        return n

    def _admin(self, req: Request, handler) -> Response:
        # POST /__emulator/credentials {"access_key", "secret_key", "session_token",
        # "expires_at"}: how the credential emulators of other processes register what
        # they issue (aws_sts, aws_imds, aws_ecs with --kms-url).
        if req.path.strip("/") == "__emulator/credentials" and req.method == "POST":
            try:
                d = json.loads(req.body)
                self.add_credentials(str(d["access_key"]), str(d["secret_key"]), d.get("session_token"),
                                     expires_at=d.get("expires_at"))
            except (ValueError, KeyError, TypeError) as e:
                return json_response(400, {"error": f"bad credentials: {e}"})
            return json_response(200, {"ok": True})
        return super()._admin(req, handler)

    def remove_credentials(self, access_key: str) -> None:
        with self._lock:
            self._creds.pop(access_key, None)

    def key_arn(self, key_id: str) -> str:
        return f"arn:aws:kms:{self.region}:{self.account_id}:key/{key_id}"

    def alias_arn(self, alias_name: str) -> str:
        return f"arn:aws:kms:{self.region}:{self.account_id}:{alias_name}"

    def create_key(self, description: str = "", alias: Optional[str] = None,
                   key_id: Optional[str] = None) -> str:
        """Create a symmetric key; returns its key id (a UUID)."""
        kid = key_id or str(uuid.uuid4())
        with self._lock:
            self._keys[kid] = _Key(kid, self.key_arn(kid), description)
        if alias:
            self.create_alias(alias, kid)
        return kid

    def create_alias(self, alias_name: str, key_id: str) -> None:
        if not alias_name.startswith("alias/"):
            alias_name = "alias/" + alias_name
        with self._lock:
            self._resolve(key_id)
            self._aliases[alias_name] = self._resolve(key_id).key_id

    def disable_key(self, key_id: str) -> None:
        with self._lock:
            self._resolve(key_id).enabled = False

    def enable_key(self, key_id: str) -> None:
        with self._lock:
            self._resolve(key_id).enabled = True

    def rotate_key(self, key_id: str) -> int:
        """Add new backing key material (as automatic rotation does); old blobs still decrypt."""
        with self._lock:
            k = self._resolve(key_id)
            k.materials.append(os.urandom(32))
            k.rotations.append(time.time())
            return len(k.materials)

    def material_of(self, blob: bytes) -> int:
        """Which backing key material (1 = the key's first) a ciphertext blob is under."""
        hlen = len(_BLOB_MAGIC) + 1 + _UUID_LEN + 2
        (index,) = struct.unpack(">H", blob[5 + _UUID_LEN:hlen])
        return index + 1

    def describe(self) -> dict:
        with self._lock:
            creds = [{"access_key": a, "secret_key": c.secret_key, "session_token": c.session_token}
                     for a, c in self._creds.items()]
            keys = [{"KeyId": k.key_id, "Arn": k.arn,
                     "Aliases": sorted(a for a, t in self._aliases.items() if t == k.key_id)}
                    for k in self._keys.values()]
        return {"region": self.region, "account_id": self.account_id, "service": SERVICE,
                "credentials": creds, "keys": keys}

    # ----------------------------------------------------------- routing
    def route(self, req: Request):
        if req.method != "POST" or req.path != "/":
            return None
        target = req.header("X-Amz-Target") or ""
        if not target.startswith(TARGET_PREFIX):
            return None
        op = target[len(TARGET_PREFIX):]
        if op not in self.OPERATIONS:
            return None
        return op, (lambda r, op=op: self._call(op, r))

    def not_found_response(self, req: Request) -> Response:
        return _err("UnknownOperationException").response

    def throttle_response(self, req: Request, retry_after: int) -> Response:
        return _err("ThrottlingException", "Rate exceeded").response

    def http_error_response(self, req: Request, status: int) -> Response:
        if status == 503:
            return _err("ServiceUnavailableException", "Service unavailable", 503).response
        return _err("KMSInternalException", "An internal error occurred", status).response

    def internal_error_response(self, req: Request) -> Response:
        return _err("KMSInternalException", "An internal error occurred", 500).response

    # ----------------------------------------------------------- authentication
    def authenticate(self, req: Request, op: str) -> Optional[Response]:
        ctype = (req.header("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != CONTENT_TYPE:
            return _err("UnknownOperationException",
                        f"Content-Type must be {CONTENT_TYPE}").response
        akid = self._verify_sigv4(req)
        cred = self._creds[akid]
        if cred.allowed_ops is not None and op not in cred.allowed_ops:
            return _err("AccessDeniedException",
                        f"User: arn:aws:iam::{self.account_id}:user/{akid} is not authorized to "
                        f"perform: kms:{op} on resource: arn:aws:kms:{self.region}:"
                        f"{self.account_id}:key/* because no identity-based policy allows the "
                        f"kms:{op} action").response
        return None

    def _verify_sigv4(self, req: Request) -> str:
        """Check the request's SigV4 signature; return the access key id."""
        auth = req.header("Authorization")
        if not auth:
            raise _err("MissingAuthenticationTokenException", "Missing Authentication Token")
        m = re.match(r"^\s*AWS4-HMAC-SHA256\s+(.*)$", auth, re.S)
        if not m:
            raise _err("IncompleteSignatureException",
                       f"Unsupported Authorization Type. Authorization={auth}")
        fields = {}
        for part in m.group(1).split(","):
            k, sep, v = part.strip().partition("=")
            if sep:
                fields[k.strip()] = v.strip()
        missing = [k for k in ("Credential", "SignedHeaders", "Signature") if not fields.get(k)]
        if missing:
            raise _err("IncompleteSignatureException",
                       " ".join(f"Authorization header requires '{k}' parameter." for k in missing)
                       + f" Authorization={auth}")
        scope = fields["Credential"].split("/")
        if len(scope) != 5:
            raise _err("IncompleteSignatureException",
                       f"Credential must have exactly 5 slash-delimited elements, e.g. "
                       f"keyid/date/region/service/term, got '{fields['Credential']}'")
        akid, scope_date, scope_region, scope_service, terminator = scope

        # Request time: X-Amz-Date (ISO 8601 basic) or Date (RFC 7231).
        amz_date = req.header("X-Amz-Date")
        if amz_date is not None:
            try:
                when = datetime.datetime.strptime(amz_date.strip(), SIGV4_TIMESTAMP)
            except ValueError:
                raise _err("IncompleteSignatureException",
                           f"Date must be in ISO-8601 'basic format'. Got '{amz_date}'.")
            timestamp = amz_date.strip()
        elif req.header("Date"):
            try:
                when = email.utils.parsedate_to_datetime(req.header("Date"))
                when = when.astimezone(datetime.timezone.utc).replace(tzinfo=None)
            except (TypeError, ValueError):
                raise _err("IncompleteSignatureException", "Date header is not a valid HTTP date")
            timestamp = when.strftime(SIGV4_TIMESTAMP)
        else:
            raise _err("IncompleteSignatureException",
                       "Authorization header requires existence of either a 'X-Amz-Date' or a "
                       f"'Date' header. Authorization={auth}")

        with self._lock:
            cred = self._creds.get(akid)
        if cred is None:
            raise _err("UnrecognizedClientException",
                       "The security token included in the request is invalid.")
        if scope_date != timestamp[:8]:
            raise _err("InvalidSignatureException",
                       "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of "
                       f"date from HTTP: '{scope_date}' != '{timestamp[:8]}', from '{timestamp}'.")
        if scope_region != self.region:
            raise _err("InvalidSignatureException",
                       f"Credential should be scoped to a valid region, not '{scope_region}'. ")
        if scope_service != SERVICE:
            raise _err("InvalidSignatureException",
                       f"Credential should be scoped to correct service: '{SERVICE}'. ")
        if terminator != "aws4_request":
            raise _err("InvalidSignatureException",
                       "Credential should be scoped with a valid terminator: 'aws4_request', "
                       f"not '{terminator}'. ")
        now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
        skew = datetime.timedelta(seconds=self.max_skew_seconds)
        minutes = self.max_skew_seconds // 60
        fmt = lambda d: d.strftime(SIGV4_TIMESTAMP)  # noqa: E731
        if when < now - skew:
            raise _err("InvalidSignatureException",
                       f"Signature expired: {timestamp} is now earlier than {fmt(now - skew)} "
                       f"({fmt(now)} - {minutes} min.)")
        if when > now + skew:
            raise _err("InvalidSignatureException",
                       f"Signature not yet current: {timestamp} is still later than "
                       f"{fmt(now + skew)} ({fmt(now)} + {minutes} min.)")

        signed = [h.strip().lower() for h in fields["SignedHeaders"].split(";") if h.strip()]
        if "host" not in signed and ":authority" not in signed:
            raise _err("IncompleteSignatureException",
                       "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.")

        token = req.header("X-Amz-Security-Token")
        if cred.expires_at is not None and time.time() >= cred.expires_at:
            raise _err("ExpiredTokenException", "The security token included in the request is expired")
        if cred.session_token is not None:
            if token is None or not hmac.compare_digest(token.encode(), cred.session_token.encode()):
                raise _err("UnrecognizedClientException",
                           "The security token included in the request is invalid.")
        elif token is not None:
            raise _err("UnrecognizedClientException",
                       "The security token included in the request is invalid.")

        content_sha = req.header("X-Amz-Content-SHA256")
        if content_sha is not None and content_sha.strip().lower() != \
                hashlib.sha256(req.body).hexdigest():
            raise _err("InvalidSignatureException",
                       "The provided 'x-amz-content-sha256' header does not match what was "
                       "computed.")

        # Recompute with botocore over exactly the signed headers.
        expected, canonical, string_to_sign = compute_sigv4(
            method=req.method, host=req.host or self.host, path=req.path, query=req.raw_query,
            headers=[(n, v) for n in signed for v in (req.headers.get_all(n) or [])],
            body=req.body, timestamp=timestamp, access_key=akid, secret_key=cred.secret_key,
            region=self.region, service=SERVICE, session_token=cred.session_token,
            scheme=req.scheme)
        if not hmac.compare_digest(expected.encode(), fields["Signature"].encode()):
            self.last_signature_mismatch = (canonical, string_to_sign)
            raise _err("InvalidSignatureException",
                       "The request signature we calculated does not match the signature you "
                       "provided. Check your AWS Secret Access Key and signing method. Consult "
                       "the service documentation for details.\n\nThe Canonical String for this "
                       f"request should have been\n'{canonical}'\n\nThe String-to-Sign should "
                       f"have been\n'{string_to_sign}'\n")
        return akid

    # ----------------------------------------------------------- key lookup / blobs
    def _resolve(self, key_id) -> _Key:
        if not isinstance(key_id, str) or not key_id:
            raise _err("ValidationException", "1 validation error detected: Value null at "
                       "'keyId' failed to satisfy constraint: Member must not be null")
        ident = key_id
        if key_id.startswith("arn:"):
            parts = key_id.split(":", 5)
            if len(parts) != 6 or parts[1] != "aws" or parts[2] != "kms":
                raise _err("NotFoundException", f"Invalid arn {key_id}")
            if parts[3] != self.region or parts[4] != self.account_id:
                raise _err("NotFoundException", f"Key '{key_id}' does not exist")
            ident = parts[5]
            if ident.startswith("key/"):
                ident = ident[4:]
            elif not ident.startswith("alias/"):
                raise _err("NotFoundException", f"Invalid arn {key_id}")
        if ident.startswith("alias/"):
            target = self._aliases.get(ident)
            if target is None:
                raise _err("NotFoundException", f"Alias {self.alias_arn(ident)} is not found.")
            return self._keys[target]
        k = self._keys.get(ident)
        if k is None:
            try:
                uuid.UUID(ident)
            except ValueError:
                raise _err("NotFoundException", f"Invalid keyId '{key_id}'")
            raise _err("NotFoundException", f"Key '{self.key_arn(ident)}' does not exist")
        return k

    def _usable(self, k: _Key) -> _Key:
        if not k.enabled:
            raise _err("DisabledException", f"{k.arn} is disabled.")
        return k

    @staticmethod
    def _context(params: dict, name: str) -> bytes:
        ctx = params.get(name)
        if ctx is None:
            ctx = {}
        if not isinstance(ctx, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in ctx.items()):
            raise _err("SerializationException", f"{name} must be a map of strings to strings")
        return json.dumps(ctx, sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False).encode()

    def _seal(self, k: _Key, plaintext: bytes, context: bytes) -> bytes:
        index = len(k.materials) - 1
        header = _BLOB_MAGIC + bytes([_BLOB_VERSION]) + k.key_id.encode() + struct.pack(">H", index)
        nonce = os.urandom(12)
        ct = AESGCM(k.materials[index]).encrypt(nonce, plaintext, header + context)
        return header + nonce + ct

    def _open(self, blob: bytes, context: bytes, expected: Optional[_Key]) -> tuple:
        hlen = len(_BLOB_MAGIC) + 1 + _UUID_LEN + 2
        if len(blob) < hlen + 12 + 16 or not blob.startswith(_BLOB_MAGIC) \
                or blob[4] != _BLOB_VERSION:
            raise _err("InvalidCiphertextException")
        try:
            key_id = blob[5:5 + _UUID_LEN].decode("ascii")
        except UnicodeDecodeError:
            raise _err("InvalidCiphertextException")
        (index,) = struct.unpack(">H", blob[5 + _UUID_LEN:hlen])
        k = self._keys.get(key_id)
        if k is None or index >= len(k.materials):
            raise _err("InvalidCiphertextException")
        if expected is not None and expected.key_id != k.key_id:
            raise _err("IncorrectKeyException",
                       "The key ID in the request does not identify a CMK that can perform "
                       "this operation.")
        self._usable(k)
        try:
            pt = AESGCM(k.materials[index]).decrypt(blob[hlen:hlen + 12], blob[hlen + 12:],
                                                    blob[:hlen] + context)
        except Exception:
            raise _err("InvalidCiphertextException")
        return k, pt

    @staticmethod
    def _blob_param(params: dict, name: str, max_len: int) -> bytes:
        value = params.get(name)
        if value is None:
            raise _err("ValidationException", f"1 validation error detected: Value null at "
                       f"'{name[0].lower() + name[1:]}' failed to satisfy constraint: Member must "
                       "not be null")
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise _err("SerializationException", f"{name} is not valid base64")
        if not 1 <= len(raw) <= max_len:
            raise _err("ValidationException", f"1 validation error detected: Value at "
                       f"'{name[0].lower() + name[1:]}' failed to satisfy constraint: Member must "
                       f"have length between 1 and {max_len}")
        return raw

    @staticmethod
    def _check_algorithm(params: dict, *names: str) -> None:
        for n in names:
            alg = params.get(n)
            if alg is not None and alg != ALGORITHM:
                raise _err("InvalidKeyUsageException",
                           f"{alg} is not a supported encryption algorithm for this key")

    def _metadata(self, k: _Key) -> dict:
        return {
            "AWSAccountId": self.account_id, "KeyId": k.key_id, "Arn": k.arn,
            "CreationDate": k.created, "Enabled": k.enabled, "Description": k.description,
            "KeyUsage": "ENCRYPT_DECRYPT", "KeyState": "Enabled" if k.enabled else "Disabled",
            "Origin": "AWS_KMS", "KeyManager": "CUSTOMER",
            "CustomerMasterKeySpec": "SYMMETRIC_DEFAULT", "KeySpec": "SYMMETRIC_DEFAULT",
            "EncryptionAlgorithms": [ALGORITHM], "MultiRegion": False,
        }

    # ----------------------------------------------------------- operations
    def _call(self, op: str, req: Request) -> Response:
        try:
            params = json.loads(req.body) if req.body.strip() else {}
        except ValueError:
            raise _err("SerializationException", "Start of structure or map found where not "
                       "expected.")
        if not isinstance(params, dict):
            raise _err("SerializationException", "request body must be a JSON object")
        with self._lock:
            result = getattr(self, "_op_" + op)(params)
        body = b"" if result is None else json.dumps(result).encode()
        return Response(200, body, [("x-amzn-RequestId", str(uuid.uuid4()))], CONTENT_TYPE)

    def _data_key(self, params: dict) -> tuple:
        k = self._usable(self._resolve(params.get("KeyId")))
        spec, nbytes = params.get("KeySpec"), params.get("NumberOfBytes")
        if (spec is None) == (nbytes is None):
            raise _err("ValidationException",
                       "Please specify either number of bytes or key spec.")
        if spec is not None:
            sizes = {"AES_256": 32, "AES_128": 16}
            if spec not in sizes:
                raise _err("ValidationException", f"1 validation error detected: Value '{spec}' "
                           "at 'keySpec' failed to satisfy constraint: Member must satisfy enum "
                           "value set: [AES_256, AES_128]")
            n = sizes[spec]
        else:
            if not isinstance(nbytes, int) or not 1 <= nbytes <= 1024:
                raise _err("ValidationException", "1 validation error detected: Value at "
                           "'numberOfBytes' failed to satisfy constraint: Member must have value "
                           "between 1 and 1024")
            n = nbytes
        pt = os.urandom(n)
        blob = self._seal(k, pt, self._context(params, "EncryptionContext"))
        return k, pt, blob

    def _op_GenerateDataKey(self, params: dict) -> dict:
        k, pt, blob = self._data_key(params)
        return {"CiphertextBlob": base64.b64encode(blob).decode(),
                "Plaintext": base64.b64encode(pt).decode(), "KeyId": k.arn}

    def _op_GenerateDataKeyWithoutPlaintext(self, params: dict) -> dict:
        k, _pt, blob = self._data_key(params)
        return {"CiphertextBlob": base64.b64encode(blob).decode(), "KeyId": k.arn}

    def _op_Encrypt(self, params: dict) -> dict:
        self._check_algorithm(params, "EncryptionAlgorithm")
        k = self._usable(self._resolve(params.get("KeyId")))
        pt = self._blob_param(params, "Plaintext", 4096)
        blob = self._seal(k, pt, self._context(params, "EncryptionContext"))
        return {"CiphertextBlob": base64.b64encode(blob).decode(), "KeyId": k.arn,
                "EncryptionAlgorithm": ALGORITHM}

    def _op_Decrypt(self, params: dict) -> dict:
        self._check_algorithm(params, "EncryptionAlgorithm")
        blob = self._blob_param(params, "CiphertextBlob", 6144)
        expected = self._resolve(params["KeyId"]) if params.get("KeyId") is not None else None
        k, pt = self._open(blob, self._context(params, "EncryptionContext"), expected)
        return {"KeyId": k.arn, "Plaintext": base64.b64encode(pt).decode(),
                "EncryptionAlgorithm": ALGORITHM}

    def _op_ReEncrypt(self, params: dict) -> dict:
        self._check_algorithm(params, "SourceEncryptionAlgorithm",
                              "DestinationEncryptionAlgorithm")
        blob = self._blob_param(params, "CiphertextBlob", 6144)
        dest = self._resolve(params.get("DestinationKeyId"))
        source = self._resolve(params["SourceKeyId"]) if params.get("SourceKeyId") else None
        src, pt = self._open(blob, self._context(params, "SourceEncryptionContext"), source)
        self._usable(dest)
        new = self._seal(dest, pt, self._context(params, "DestinationEncryptionContext"))
        return {"CiphertextBlob": base64.b64encode(new).decode(), "SourceKeyId": src.arn,
                "KeyId": dest.arn, "SourceEncryptionAlgorithm": ALGORITHM,
                "DestinationEncryptionAlgorithm": ALGORITHM}

    def _op_DescribeKey(self, params: dict) -> dict:
        return {"KeyMetadata": self._metadata(self._resolve(params.get("KeyId")))}

    def _op_ListKeyRotations(self, params: dict) -> dict:
        # Key id or key ARN only: KMS does not accept an alias here.
        key_id = params.get("KeyId")
        if isinstance(key_id, str) and (key_id.startswith("alias/") or ":alias/" in key_id):
            raise _err("NotFoundException", f"Invalid keyId {key_id}")
        k = self._resolve(key_id)
        limit = params.get("Limit", 100)
        if not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise _err("ValidationException", "1 validation error detected: Value at 'limit' failed "
                       "to satisfy constraint: Member must have value between 1 and 1000")
        marker = params.get("Marker")
        start = 0
        if marker is not None:
            if not isinstance(marker, str) or not marker.isdigit() or int(marker) > len(k.rotations):
                raise _err("InvalidMarkerException", "Invalid marker")
            start = int(marker)
        page = k.rotations[start:start + limit]
        out = {"Rotations": [{"KeyId": k.key_id, "RotationDate": d, "RotationType": "AUTOMATIC"}
                             for d in page],
               "Truncated": start + limit < len(k.rotations)}
        if out["Truncated"]:
            out["NextMarker"] = str(start + limit)
        return out

    def _op_CreateKey(self, params: dict) -> dict:
        usage = params.get("KeyUsage", "ENCRYPT_DECRYPT")
        spec = params.get("KeySpec", params.get("CustomerMasterKeySpec", "SYMMETRIC_DEFAULT"))
        if usage != "ENCRYPT_DECRYPT" or spec != "SYMMETRIC_DEFAULT":
            raise _err("ValidationException", "the emulator only supports SYMMETRIC_DEFAULT "
                       "ENCRYPT_DECRYPT keys")
        kid = self.create_key(str(params.get("Description", "")))
        return {"KeyMetadata": self._metadata(self._keys[kid])}

    def _op_CreateAlias(self, params: dict) -> None:
        name = params.get("AliasName")
        if not isinstance(name, str) or not re.fullmatch(r"alias/[a-zA-Z0-9/_-]{1,250}", name) \
                or name.startswith("alias/aws/"):
            raise _err("ValidationException", f"Alias must start with the prefix \"alias/\" and "
                       f"not use the reserved prefix \"alias/aws/\": {name!r}")
        target = params.get("TargetKeyId")
        if isinstance(target, str) and (target.startswith("alias/") or ":alias/" in target):
            raise _err("ValidationException", "TargetKeyId must be a key id or key ARN")
        k = self._resolve(target)
        if name in self._aliases:
            raise _err("AlreadyExistsException", f"An alias with the name {self.alias_arn(name)} "
                       "already exists")
        self._aliases[name] = k.key_id
        return None

    def _op_EnableKey(self, params: dict) -> None:
        self._resolve(params.get("KeyId")).enabled = True
        return None

    def _op_DisableKey(self, params: dict) -> None:
        self._resolve(params.get("KeyId")).enabled = False
        return None


def start(**kw) -> AwsKmsEmulator:
    """Create and start an AWS KMS emulator. ``aliases=("name", ...)`` creates
    one key per alias (``alias/name``)."""
    aliases = kw.pop("aliases", ())
    emu = AwsKmsEmulator(**kw)
    for a in aliases:
        emu.create_key(description=a, alias=a)
    return emu.start()


def add_cli_args(p) -> None:
    p.add_argument("--region", default="us-east-1")
    p.add_argument("--account-id", default="111122223333")
    p.add_argument("--credentials", action="append", metavar="AKID:SECRET[:TOKEN]",
                   help=f"accepted credentials (repeatable; default {DEFAULT_ACCESS_KEY}:"
                        f"{DEFAULT_SECRET_KEY})")
    p.add_argument("--key", action="append", default=[], metavar="ALIAS",
                   help="create a key with alias/ALIAS (repeatable)")
    p.add_argument("--max-skew", type=int, default=900, help="allowed X-Amz-Date skew (s)")


def from_cli_args(args, **kw) -> AwsKmsEmulator:
    creds = None
    if args.credentials:
        creds = {}
        for c in args.credentials:
            parts = c.split(":", 2)
            if len(parts) < 2:
                raise SystemExit(f"--credentials {c!r}: expected AKID:SECRET[:TOKEN]")
            creds[parts[0]] = tuple(parts[1:])
    emu = AwsKmsEmulator(region=args.region, account_id=args.account_id, credentials=creds,
                         max_skew_seconds=args.max_skew, **kw)
    for a in args.key:
        emu.create_key(description=a, alias=a)
    return emu
