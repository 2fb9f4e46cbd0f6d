"""Container credentials endpoint emulator: the ECS agent's task-role endpoint
(``AWS_CONTAINER_CREDENTIALS_RELATIVE_URI``, served at 169.254.170.2) and the EKS Pod
Identity agent (``AWS_CONTAINER_CREDENTIALS_FULL_URI`` with
``AWS_CONTAINER_AUTHORIZATION_TOKEN[_FILE]``).

``GET <path>`` returns ``{"AccessKeyId", "SecretAccessKey", "Token", "Expiration",
"RoleArn"}``. With ``auth_token`` set, the ``Authorization`` header must equal it
(compared in constant time): missing or wrong is ``401`` (counted as rejected).
Issued credentials expire after ``lifetime`` seconds and are registered with the
linked KMS emulator (``kms``); each GET issues a fresh set. Counter: GetCredentials.
"""

from __future__ import annotations

import hmac
import json
import uuid
from typing import Optional

from .aws_temporary import CredentialIssuer
from .base import Emulator, Request, Response, json_response


class EcsCredentialsEmulator(Emulator):
    provider = "aws_ecs"

    def __init__(self, *, path: Optional[str] = None, auth_token: Optional[str] = None, kms=None,
                 lifetime: float = 3600.0, role_arn: str = "arn:aws:iam::111122223333:role/pg-envelope-task",
                 **kw):
        super().__init__(**kw)
        self.path = path or f"/v2/credentials/{uuid.uuid4()}"
        self.auth_token = auth_token
        self.role_arn = role_arn
        self.issuer = CredentialIssuer(kms, lifetime)

    @property
    def full_uri(self) -> str:
        return self.url + self.path

    def describe(self) -> dict:
        return {"path": self.path, "full_uri": self.full_uri, "auth_token": self.auth_token}

    def route(self, req: Request):
        if req.method == "GET" and req.path == self.path:
            return "GetCredentials", self._get
        return None

    def not_found_response(self, req: Request) -> Response:
        return json_response(404, {"code": "NotFound", "message": "Credentials not found"})

    def authenticate(self, req: Request, op: str) -> Optional[Response]:
        if self.auth_token is None:
            return None
        given = req.header("Authorization")
        if given is None:
            return json_response(401, {"code": "AccessDenied", "message": "Authorization header is missing"})
        if not hmac.compare_digest(given.encode(), self.auth_token.encode()):
            return json_response(401, {"code": "AccessDenied", "message": "Authorization token is invalid"})
        return None

    def _get(self, req: Request) -> Response:
        c = self.issuer.issue()
        body = {"RoleArn": self.role_arn, "AccessKeyId": c["AccessKeyId"],
                "SecretAccessKey": c["SecretAccessKey"], "Token": c["SessionToken"],
                "Expiration": c["Expiration"]}
        return Response(200, json.dumps(body).encode(), [], "application/json")


def start(**kw) -> EcsCredentialsEmulator:
    return EcsCredentialsEmulator(**kw).start()


def add_cli_args(p) -> None:
    p.add_argument("--path", help="the credentials path (default /v2/credentials/<uuid>)")
    p.add_argument("--auth-token", help="required Authorization header value")
    p.add_argument("--kms-url", help="register issued credentials with the AWS KMS emulator at this URL")
    p.add_argument("--lifetime", type=float, default=3600.0, help="seconds until credentials expire")


def from_cli_args(args, **kw) -> EcsCredentialsEmulator:
    return EcsCredentialsEmulator(path=args.path, auth_token=args.auth_token, kms=args.kms_url,
                                  lifetime=args.lifetime, **kw)
