"""Temporary AWS credentials as STS, IMDS and the ECS/EKS container endpoints issue
them, shared by the credential emulators (aws_sts, aws_imds, aws_ecs).

A :class:`CredentialIssuer` mints an access key id (``ASIA`` + 16 characters), a
secret access key, a session token and an Expiration ``lifetime`` seconds ahead,
and registers them with an AWS KMS emulator so that KMS accepts them until then
(and answers ``ExpiredTokenException`` afterwards): ``kms`` is an
:class:`aws.AwsKmsEmulator` in the same process, or its URL (registered through its
``POST /__emulator/credentials``).
"""

from __future__ import annotations

import base64
import datetime
import json
import math
import os
import secrets
import string
import threading
import time
import urllib.request
from typing import Optional

_ALNUM = string.ascii_uppercase + string.digits


def iso8601(t: float) -> str:
    """``2026-12-03T17:00:00Z`` (whole seconds, UTC), as STS and IMDS write it."""
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class CredentialIssuer:
    def __init__(self, kms=None, lifetime: float = 3600.0):
        self.kms = kms
        self.lifetime = float(lifetime)
        self._lock = threading.Lock()
        #: Every set issued, oldest first: dicts with AccessKeyId, SecretAccessKey,
        #: SessionToken, Expiration (text) and expires_at (Unix time).
        self.issued: list = []

    def issue(self, lifetime: Optional[float] = None) -> dict:
        life = self.lifetime if lifetime is None else float(lifetime)
        # Whole seconds: the Expiration text and the moment KMS starts refusing agree.
        expires_at = float(math.floor(time.time() + life))
        cred = {
            "AccessKeyId": "ASIA" + "".join(secrets.choice(_ALNUM) for _ in range(16)),
            "SecretAccessKey": base64.b64encode(os.urandom(30)).decode(),
            "SessionToken": "IQoJb3JpZ2luX2VjE" + base64.b64encode(os.urandom(180)).decode(),
            "Expiration": iso8601(expires_at),
            "expires_at": expires_at,
        }
        self._register(cred)
        with self._lock:
            self.issued.append(cred)
        return cred

    def secrets(self) -> list:
        """Every secret access key and session token issued (for log checks)."""
        with self._lock:
            return [v for c in self.issued for v in (c["SecretAccessKey"], c["SessionToken"])]

    def _register(self, cred: dict) -> None:
        if self.kms is None:
            return
        if hasattr(self.kms, "add_credentials"):
            self.kms.add_credentials(cred["AccessKeyId"], cred["SecretAccessKey"], cred["SessionToken"],
                                     expires_at=cred["expires_at"])
            return
        body = json.dumps({"access_key": cred["AccessKeyId"], "secret_key": cred["SecretAccessKey"],
                           "session_token": cred["SessionToken"],
                           "expires_at": cred["expires_at"]}).encode()
        rq = urllib.request.Request(str(self.kms).rstrip("/") + "/__emulator/credentials", data=body,
                                    method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(rq, timeout=5) as r:  # noqa: S310 (loopback emulator)
            r.read()
