"""Tiny HTTP helpers for the emulator tests (plain http.client, no magic)."""

from __future__ import annotations

import http.client
import json
import ssl
from urllib.parse import urlsplit


def connect(url: str, timeout: float = 5.0, cafile=None) -> http.client.HTTPConnection:
    u = urlsplit(url)
    if u.scheme == "https":
        ctx = ssl.create_default_context(cafile=str(cafile) if cafile else None)
        return http.client.HTTPSConnection(u.hostname, u.port, timeout=timeout, context=ctx)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)


class Reply:
    def __init__(self, status: int, headers, body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def json(self):
        return json.loads(self.body) if self.body else None

    def __repr__(self):
        return f"<Reply {self.status} {self.body[:300]!r}>"


def request(url: str, method: str, path: str, body=None, headers=None, timeout: float = 5.0,
            conn: http.client.HTTPConnection = None, cafile=None) -> Reply:
    """Send one request; ``body`` may be bytes, str or a JSON-able object."""
    own = conn is None
    if own:
        conn = connect(url, timeout, cafile)
    hdrs = dict(headers or {})
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
        hdrs.setdefault("Content-Type", "application/json")
    if isinstance(body, str):
        body = body.encode()
    try:
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
        return Reply(resp.status, resp.headers, data)
    finally:
        if own:
            conn.close()
