"""EC2 instance-metadata service (IMDS) emulator, IMDSv2 as on a real instance with
``HttpTokens=required``:

* ``PUT /latest/api/token`` with ``X-aws-ec2-metadata-token-ttl-seconds: 1..21600``
  returns a session token valid for that many seconds (``400`` without or with a bad
  TTL, ``403`` when the request carries ``X-Forwarded-For``, as IMDS refuses proxied
  token requests);
* ``GET /latest/meta-data/iam/security-credentials/`` lists the instance profile's
  role, ``GET .../<role>`` returns its credentials as JSON (``Code``, ``LastUpdated``,
  ``Type``, ``AccessKeyId``, ``SecretAccessKey``, ``Token``, ``Expiration``);
  every GET needs a live ``X-aws-ec2-metadata-token``: none, an unknown or an expired
  one is ``401 Unauthorized`` (counted as rejected);
* ``GET /latest/meta-data/instance-id`` for completeness.

``v1_only=True`` emulates an old IMDSv1-only service: no token endpoint (``PUT`` is
``404``) and GETs need no token; pg_envelope must refuse to use it. ``role=None``:
no instance profile attached (the listing is ``404``). Issued credentials expire after
``lifetime`` seconds and are registered with the linked KMS emulator (``kms``).
Counters per operation: PutToken, ListRoles, GetCredentials, Metadata.
"""

from __future__ import annotations

import base64
import datetime
import hmac
import json
import os
import threading
import time
from typing import Optional

from .aws_temporary import CredentialIssuer, iso8601
from .base import ApiError, Emulator, Request, Response

TOKEN_PATH = "/latest/api/token"
CREDS_PATH = "/latest/meta-data/iam/security-credentials/"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
DEFAULT_ROLE = "pg-envelope-instance-role"


def _text(status: int, text: str, headers=None) -> Response:
    return Response(status, text.encode(), list(headers or []), "text/plain")


def _html_error(status: int, reason: str) -> ApiError:
    # IMDS answers errors with a small XHTML page.
    body = (f'<?xml version="1.0" encoding="iso-8859-1"?>\n<html><head><title>{status} - {reason}</title>'
            f"</head><body><h1>{status} - {reason}</h1></body></html>\n")
    return ApiError(Response(status, body.encode(), [], "text/html"))


class ImdsEmulator(Emulator):
    provider = "aws_imds"

    def __init__(self, *, role: Optional[str] = DEFAULT_ROLE, kms=None, lifetime: float = 21600.0,
                 v1_only: bool = False, instance_id: str = "i-0123456789abcdef0", **kw):
        super().__init__(**kw)
        self.role = role
        self.v1_only = v1_only
        self.instance_id = instance_id
        self.issuer = CredentialIssuer(kms, lifetime)
        self._lock = threading.Lock()
        self._tokens: dict = {}     # token -> expiry (Unix time)
        self._current: Optional[dict] = None

    # ------------------------------------------------------------------ helpers
    def expire_tokens(self) -> None:
        """Every session token issued so far expires now."""
        with self._lock:
            for t in self._tokens:
                self._tokens[t] = 0.0

    def tokens_issued(self) -> int:
        with self._lock:
            return len(self._tokens)

    def describe(self) -> dict:
        return {"role": self.role, "v1_only": self.v1_only, "lifetime": self.issuer.lifetime}

    # ------------------------------------------------------------------ routing
    def route(self, req: Request):
        if req.path == TOKEN_PATH and req.method == "PUT" and not self.v1_only:
            return "PutToken", self._put_token
        if req.method != "GET":
            return None
        if req.path == CREDS_PATH:
            return "ListRoles", self._list_roles
        if req.path.startswith(CREDS_PATH):
            return "GetCredentials", self._get_credentials
        if req.path == "/latest/meta-data/instance-id":
            return "Metadata", lambda r: _text(200, self.instance_id)
        return None

    def not_found_response(self, req: Request) -> Response:
        return _html_error(404, "Not Found").response

    def throttle_response(self, req: Request, retry_after: int) -> Response:
        return _text(429, "Too Many Requests")

    def http_error_response(self, req: Request, status: int) -> Response:
        return _html_error(status, "Internal Server Error").response

    def authenticate(self, req: Request, op: str) -> Optional[Response]:
        if op == "PutToken":
            if req.header("X-Forwarded-For") is not None:
                return _html_error(403, "Forbidden").response
            ttl = req.header(TTL_HEADER)
            if ttl is None or not ttl.strip().isdigit() or not 1 <= int(ttl) <= 21600:
                return _html_error(400, "Bad Request").response
            return None
        if self.v1_only:
            return None
        token = req.header(TOKEN_HEADER)
        now = time.time()
        with self._lock:
            ok = token is not None and any(
                hmac.compare_digest(token.encode(), t.encode()) and exp > now for t, exp in self._tokens.items())
        if not ok:
            return _html_error(401, "Unauthorized").response
        return None

    # ------------------------------------------------------------------ operations
    def _put_token(self, req: Request) -> Response:
        ttl = int(req.header(TTL_HEADER))
        token = "AQAEA" + base64.b64encode(os.urandom(40)).decode()
        with self._lock:
            self._tokens[token] = time.time() + ttl
        return _text(200, token, [(TTL_HEADER, str(ttl))])

    def _list_roles(self, req: Request) -> Response:
        if self.role is None:
            raise _html_error(404, "Not Found")
        return _text(200, self.role)

    def _get_credentials(self, req: Request) -> Response:
        name = req.path[len(CREDS_PATH):]
        if self.role is None or name != self.role:
            raise _html_error(404, "Not Found")
        with self._lock:
            cur = self._current
            # Like IMDS, the same credentials until they come close to expiring.
            if cur is None or cur["expires_at"] - time.time() < min(300.0, self.issuer.lifetime / 2):
                cur = None
        if cur is None:
            cur = self.issuer.issue()
            with self._lock:
                self._current = cur
        body = {"Code": "Success", "LastUpdated": iso8601(time.time()), "Type": "AWS-HMAC",
                "AccessKeyId": cur["AccessKeyId"], "SecretAccessKey": cur["SecretAccessKey"],
                "Token": cur["SessionToken"], "Expiration": cur["Expiration"]}
        return _text(200, json.dumps(body, indent=2))


def start(**kw) -> ImdsEmulator:
    return ImdsEmulator(**kw).start()


def add_cli_args(p) -> None:
    p.add_argument("--role-name", default=DEFAULT_ROLE, help="instance profile role ('' for none)")
    p.add_argument("--kms-url", help="register issued credentials with the AWS KMS emulator at this URL")
    p.add_argument("--lifetime", type=float, default=21600.0, help="seconds until credentials expire")
    p.add_argument("--v1-only", action="store_true", help="an IMDSv1-only service (no token endpoint)")


def from_cli_args(args, **kw) -> ImdsEmulator:
    return ImdsEmulator(role=args.role_name or None, kms=args.kms_url, lifetime=args.lifetime,
                        v1_only=args.v1_only, **kw)
