"""AWS STS emulator: the Query API (``POST /`` with an
``application/x-www-form-urlencoded`` body, or the parameters in the query string)
answering in XML, for the two calls pg_envelope's aws-kms provider makes:

* ``AssumeRole``: SigV4-signed (service ``sts``), the signature recomputed with
  botocore as :mod:`aws` does for KMS; the caller's credentials come from
  ``credentials`` (access key -> secret, or (secret, session token)) or from what a
  linked issuer handed out; ``ExternalId`` checked against the role's.
* ``AssumeRoleWithWebIdentity``: unsigned; ``WebIdentityToken`` must equal the role's
  configured token (what the token file holds).

Roles are configured with :meth:`StsEmulator.add_role`. Issued credentials expire
after ``lifetime`` seconds (default: the requested DurationSeconds, else 3600) and
are registered with the linked KMS emulator (``kms``) through a
:class:`aws_temporary.CredentialIssuer`. Errors are STS's ``ErrorResponse`` XML.
Call counters per action (``calls("AssumeRole")``).
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import re
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Optional
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

from .aws import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY, SIGV4_TIMESTAMP, compute_sigv4
from .aws_temporary import CredentialIssuer
from .base import ApiError, Emulator, Request, Response

SERVICE = "sts"
NS = "https://sts.amazonaws.com/doc/2011-06-15/"
ACTIONS = ("AssumeRole", "AssumeRoleWithWebIdentity")
_SESSION_NAME = re.compile(r"[\w+=,.@-]{2,64}")


@dataclass
class Role:
    arn: str
    external_id: Optional[str] = None          # AssumeRole must send exactly this
    web_identity_token: Optional[str] = None   # AssumeRoleWithWebIdentity must send this
    max_duration: int = 43200


def _error(status: int, code: str, message: str, kind: str = "Sender") -> ApiError:
    body = (f'<ErrorResponse xmlns="{NS}">\n  <Error>\n    <Type>{kind}</Type>\n'
            f"    <Code>{escape(code)}</Code>\n    <Message>{escape(message)}</Message>\n  </Error>\n"
            f"  <RequestId>{uuid.uuid4()}</RequestId>\n</ErrorResponse>\n")
    return ApiError(Response(status, body.encode(), [("x-amzn-RequestId", str(uuid.uuid4()))], "text/xml"))


class StsEmulator(Emulator):
    provider = "aws_sts"

    def __init__(self, *, region: str = "us-east-1", account_id: str = "111122223333",
                 credentials: Optional[dict] = None, kms=None, lifetime: Optional[float] = None,
                 max_skew_seconds: int = 900, **kw):
        super().__init__(**kw)
        self.region = region
        self.account_id = account_id
        self.max_skew_seconds = max_skew_seconds
        self.lifetime = lifetime
        self.issuer = CredentialIssuer(kms, lifetime if lifetime is not None else 3600.0)
        self._lock = threading.RLock()
        self._creds: dict = {}
        self._roles: dict = {}
        #: The parameters of the last call of each action (WebIdentityToken left out).
        self.last_params: dict = {}
        if credentials is None:
            credentials = {DEFAULT_ACCESS_KEY: DEFAULT_SECRET_KEY}
        for akid, value in credentials.items():
            secret, token = (value, None) if isinstance(value, str) else (value[0], value[1] if len(value) > 1 else None)
            self.add_credentials(akid, secret, token)

    # ------------------------------------------------------------------ helpers
    def add_credentials(self, access_key: str, secret_key: str, session_token: Optional[str] = None,
                        expires_at: Optional[float] = None) -> None:
        """Callers allowed to sign AssumeRole (until ``expires_at``, Unix time, if given).
        Credentials this STS issues are added too, so roles can be chained (a web
        identity role assuming another role), as real STS allows."""
        with self._lock:
            self._creds[access_key] = (secret_key, session_token, expires_at)

    def add_role(self, arn: str, external_id: Optional[str] = None,
                 web_identity_token: Optional[str] = None, max_duration: int = 43200) -> Role:
        role = Role(arn, external_id, web_identity_token, max_duration)
        with self._lock:
            self._roles[arn] = role
        return role

    def describe(self) -> dict:
        with self._lock:
            return {"region": self.region, "service": SERVICE, "roles": sorted(self._roles),
                    "credentials": [{"access_key": a, "secret_key": s, "session_token": t}
                                    for a, (s, t, e) in self._creds.items() if e is None]}

    # ------------------------------------------------------------------ routing
    def _params(self, req: Request) -> dict:
        params = {k: v[0] for k, v in req.query.items()}
        if req.method == "POST" and req.body:
            ctype = (req.header("Content-Type") or "").split(";")[0].strip().lower()
            if ctype != "application/x-www-form-urlencoded":
                raise _error(400, "InvalidParameterValue",
                             "Content-Type must be application/x-www-form-urlencoded")
            params.update({k: v[0] for k, v in parse_qs(req.body.decode("utf-8", "replace"),
                                                         keep_blank_values=True).items()})
        return params

    def route(self, req: Request):
        if req.path != "/" or req.method not in ("POST", "GET"):
            return None
        params = self._params(req)
        action = params.get("Action")
        if action not in ACTIONS:
            raise _error(400, "InvalidAction", f"Could not find operation {action} for version "
                         f"{params.get('Version', 'NO_VERSION_SPECIFIED')}")
        if params.get("Version") != "2011-06-15":
            raise _error(400, "InvalidAction", f"Could not find operation {action} for version "
                         f"{params.get('Version', 'NO_VERSION_SPECIFIED')}")
        req._sts_params = params  # parsed once
        return action, (lambda r, a=action: self._call(a, r))

    def not_found_response(self, req: Request) -> Response:
        return _error(404, "UnknownOperation", "Not Found").response

    def throttle_response(self, req: Request, retry_after: int) -> Response:
        return _error(400, "Throttling", "Rate exceeded").response

    def http_error_response(self, req: Request, status: int) -> Response:
        return _error(status, "InternalFailure", "An internal error occurred", "Receiver").response

    # ------------------------------------------------------------------ authentication
    def authenticate(self, req: Request, op: str) -> Optional[Response]:
        if op == "AssumeRole":
            req._sts_caller = self._verify_sigv4(req)
        return None

    def _verify_sigv4(self, req: Request) -> str:
        auth = req.header("Authorization")
        if not auth:
            raise _error(403, "MissingAuthenticationToken", "Request is missing Authentication Token")
        m = re.match(r"^\s*AWS4-HMAC-SHA256\s+(.*)$", auth, re.S)
        if not m:
            raise _error(400, "IncompleteSignature", "Unsupported Authorization Type")
        fields = {}
        for part in m.group(1).split(","):
            k, sep, v = part.strip().partition("=")
            if sep:
                fields[k.strip()] = v.strip()
        if not all(fields.get(k) for k in ("Credential", "SignedHeaders", "Signature")):
            raise _error(400, "IncompleteSignature", "Authorization header requires 'Credential', "
                         "'SignedHeaders' and 'Signature' parameters.")
        scope = fields["Credential"].split("/")
        if len(scope) != 5:
            raise _error(400, "IncompleteSignature", "Credential must have exactly 5 slash-delimited elements")
        akid, scope_date, scope_region, scope_service, terminator = scope
        amz_date = (req.header("X-Amz-Date") or "").strip()
        try:
            when = datetime.datetime.strptime(amz_date, SIGV4_TIMESTAMP)
        except ValueError:
            raise _error(400, "IncompleteSignature", "X-Amz-Date is missing or not in ISO-8601 basic format")
        with self._lock:
            cred = self._creds.get(akid)
        if cred is None:
            raise _error(403, "InvalidClientTokenId", "The security token included in the request is invalid.")
        secret, session_token, expires_at = cred
        if expires_at is not None and time.time() >= expires_at:
            raise _error(400, "ExpiredToken", "The security token included in the request is expired")
        if scope_date != amz_date[:8] or scope_region != self.region or scope_service != SERVICE \
                or terminator != "aws4_request":
            raise _error(403, "SignatureDoesNotMatch", f"Credential should be scoped to a valid region "
                         f"({self.region}), service ({SERVICE}) and date.")
        now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
        if abs((now - when).total_seconds()) > self.max_skew_seconds:
            raise _error(403, "SignatureDoesNotMatch", "Signature expired or not yet current")
        token = req.header("X-Amz-Security-Token")
        if (session_token is None) != (token is None) or (
                token is not None and not hmac.compare_digest(token.encode(), session_token.encode())):
            raise _error(403, "InvalidClientTokenId", "The security token included in the request is invalid.")
        content_sha = req.header("X-Amz-Content-SHA256")
        if content_sha is not None and content_sha.strip().lower() != hashlib.sha256(req.body).hexdigest():
            raise _error(400, "SignatureDoesNotMatch", "The x-amz-content-sha256 header does not match the body.")
        signed = [h.strip().lower() for h in fields["SignedHeaders"].split(";") if h.strip()]
        if "host" not in signed:
            raise _error(400, "IncompleteSignature", "'Host' must be a 'SignedHeader' in the AWS Authorization.")
        expected, _canonical, _sts = compute_sigv4(
            method=req.method, host=req.host or self.host, path=req.path, query=req.raw_query,
            headers=[(n, v) for n in signed for v in (req.headers.get_all(n) or [])], body=req.body,
            timestamp=amz_date, access_key=akid, secret_key=secret, region=self.region, service=SERVICE,
            session_token=session_token, scheme=req.scheme)
        if not hmac.compare_digest(expected.encode(), fields["Signature"].encode()):
            raise _error(403, "SignatureDoesNotMatch", "The request signature we calculated does not match "
                         "the signature you provided. Check your AWS Secret Access Key and signing method.")
        return akid

    # ------------------------------------------------------------------ actions
    def _call(self, action: str, req: Request) -> Response:
        params = req._sts_params
        self.last_params[action] = {k: v for k, v in params.items() if k != "WebIdentityToken"}
        arn = params.get("RoleArn")
        session = params.get("RoleSessionName")
        if not arn or not session:
            raise _error(400, "ValidationError", "RoleArn and RoleSessionName are required")
        if not _SESSION_NAME.fullmatch(session):
            raise _error(400, "ValidationError", f"1 validation error detected: Value '{session}' at "
                         "'roleSessionName' failed to satisfy constraint: Member must satisfy regular "
                         "expression pattern: [\\w+=,.@-]*")
        with self._lock:
            role = self._roles.get(arn)
        duration = params.get("DurationSeconds")
        if duration is not None:
            if not duration.isdigit() or not 900 <= int(duration) <= (role.max_duration if role else 43200):
                raise _error(400, "ValidationError", "The requested DurationSeconds exceeds the "
                             "MaxSessionDuration set for this role.")
            duration = int(duration)
        if action == "AssumeRole":
            caller = f"arn:aws:iam::{self.account_id}:user/{req._sts_caller}"
            denied = f"User: {caller} is not authorized to perform: sts:AssumeRole on resource: {arn}"
            if role is None:
                raise _error(403, "AccessDenied", denied)
            if role.external_id is not None:
                given = params.get("ExternalId")
                if given is None or not hmac.compare_digest(given.encode(), role.external_id.encode()):
                    raise _error(403, "AccessDenied", denied)
        else:
            token = params.get("WebIdentityToken")
            if not token:
                raise _error(400, "ValidationError", "WebIdentityToken is required")
            if role is None or role.web_identity_token is None:
                raise _error(403, "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity")
            if not hmac.compare_digest(token.encode(), role.web_identity_token.encode()):
                raise _error(400, "InvalidIdentityToken", "The web identity token that was passed could not "
                             "be validated by AWS. Get a new identity token from the identity provider and "
                             "then retry the request.")
        life = self.lifetime if self.lifetime is not None else (duration or 3600)
        cred = self.issuer.issue(life)
        self.add_credentials(cred["AccessKeyId"], cred["SecretAccessKey"], cred["SessionToken"],
                             expires_at=cred["expires_at"])
        role_name = arn.rsplit("/", 1)[-1]
        assumed = f"arn:aws:sts::{self.account_id}:assumed-role/{role_name}/{session}"
        extra = ""
        if action == "AssumeRoleWithWebIdentity":
            extra = ("    <SubjectFromWebIdentityToken>system:serviceaccount:default:pg</SubjectFromWebIdentityToken>\n"
                     "    <Audience>sts.amazonaws.com</Audience>\n"
                     "    <Provider>arn:aws:iam::%s:oidc-provider/oidc.eks.%s.amazonaws.com/id/EXAMPLE</Provider>\n"
                     % (self.account_id, self.region))
        body = (f'<{action}Response xmlns="{NS}">\n  <{action}Result>\n{extra}'
                f"    <AssumedRoleUser>\n      <AssumedRoleId>AROA{uuid.uuid4().hex[:17].upper()}:{escape(session)}"
                f"</AssumedRoleId>\n      <Arn>{escape(assumed)}</Arn>\n    </AssumedRoleUser>\n"
                f"    <Credentials>\n      <AccessKeyId>{cred['AccessKeyId']}</AccessKeyId>\n"
                f"      <SecretAccessKey>{escape(cred['SecretAccessKey'])}</SecretAccessKey>\n"
                f"      <SessionToken>{escape(cred['SessionToken'])}</SessionToken>\n"
                f"      <Expiration>{cred['Expiration']}</Expiration>\n    </Credentials>\n"
                f"  </{action}Result>\n  <ResponseMetadata>\n    <RequestId>{uuid.uuid4()}</RequestId>\n"
                f"  </ResponseMetadata>\n</{action}Response>\n")
        return Response(200, body.encode(), [("x-amzn-RequestId", str(uuid.uuid4()))], "text/xml")


def start(**kw) -> StsEmulator:
    """Create and start an STS emulator; ``roles={arn: {"external_id": ..., "web_identity_token": ...}}``."""
    roles = kw.pop("roles", {})
    emu = StsEmulator(**kw)
    for arn, spec in roles.items():
        emu.add_role(arn, **(spec or {}))
    return emu.start()


def add_cli_args(p) -> None:
    p.add_argument("--region", default="us-east-1")
    p.add_argument("--account-id", default="111122223333")
    p.add_argument("--credentials", action="append", metavar="AKID:SECRET[:TOKEN]",
                   help=f"callers allowed to sign AssumeRole (default {DEFAULT_ACCESS_KEY}:...)")
    p.add_argument("--role", action="append", default=[], metavar="ARN[,external_id=X][,web_identity_token=T]",
                   help="a role that may be assumed (repeatable)")
    p.add_argument("--kms-url", help="register issued credentials with the AWS KMS emulator at this URL")
    p.add_argument("--lifetime", type=float, help="seconds until issued credentials expire")


def from_cli_args(args, **kw) -> StsEmulator:
    creds = None
    if args.credentials:
        creds = {}
        for c in args.credentials:
            parts = c.split(":", 2)
            if len(parts) < 2:
                raise SystemExit(f"--credentials {c!r}: expected AKID:SECRET[:TOKEN]")
            creds[parts[0]] = tuple(parts[1:])
    emu = StsEmulator(region=args.region, account_id=args.account_id, credentials=creds, kms=args.kms_url,
                      lifetime=args.lifetime, **kw)
    for r in args.role:
        arn, *opts = r.split(",")
        spec = {}
        for o in opts:
            k, _, v = o.partition("=")
            if k not in ("external_id", "web_identity_token"):
                raise SystemExit(f"--role {r!r}: unknown option {k!r}")
            spec[k] = v
        emu.add_role(arn, **spec)
    return emu
