"""Common machinery shared by every KMS emulator.

An :class:`Emulator` owns a loopback ``ThreadingHTTPServer`` (HTTP/1.1 with
keep-alive, optional TLS), per-operation call counters, a fault-injection
table and an ``/__emulator/*`` admin API.  A provider module subclasses it and
implements :meth:`Emulator.route` (map a request to an operation name and a
handler), :meth:`Emulator.authenticate` and the provider-specific error
shapes (:meth:`throttle_response`, :meth:`http_error_response`,
:meth:`not_found_response`, :meth:`internal_error_response`).

Request flow for a non-admin request::

    route -> (unroutable: rejected["<unrouted>"], provider 404)
          -> faults (latency adds delay and goes on; hang / reset / http_error /
             throttle end the request, counted in faulted[op])
          -> authenticate (failure: rejected[op])
          -> handler (calls[op]; a 4xx/5xx answer also counts errors[op])
"""

from __future__ import annotations

import collections
import http.client
import http.server
import ipaddress
import json
import socket
import socketserver
import ssl
import struct
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Optional
from urllib.parse import parse_qs, unquote, urlsplit

#: Largest request body accepted (bytes); larger bodies get 413.
MAX_BODY = 1 << 20
#: Upper bound for any injected hang, whatever the caller asked for.
MAX_HANG_SECONDS = 120.0
#: Upper bound for one injected latency.
MAX_LATENCY_MS = 120_000
#: Idle keep-alive connections are dropped after this many seconds.
IDLE_TIMEOUT = 60.0
#: TLS handshakes must finish within this many seconds.
HANDSHAKE_TIMEOUT = 10.0

FAULT_KINDS = ("latency", "http_error", "throttle", "reset", "hang")
_FAULT_ALIASES = {"error": "http_error", "5xx": "http_error", "status": "http_error",
                  "throttling": "throttle", "connection_reset": "reset", "rst": "reset"}
COUNTER_KINDS = ("calls", "rejected", "faulted", "errors", "delayed")
UNROUTED = "<unrouted>"


# --------------------------------------------------------------------------
# Request / response values
# --------------------------------------------------------------------------

@dataclass
class Request:
    """One parsed HTTP request as seen by a provider."""

    method: str
    target: str          # raw request-target from the request line
    raw_path: str        # path part, still percent-encoded
    path: str            # percent-decoded path
    raw_query: str
    query: dict          # name -> list of values (parse_qs, blank values kept)
    headers: http.client.HTTPMessage
    body: bytes
    scheme: str          # "http" or "https"
    client: tuple
    received_at: float = field(default_factory=time.time)

    def header(self, name: str, default: Optional[str] = None) -> Optional[str]:
        return self.headers.get(name, default)

    def query_value(self, name: str, default: Optional[str] = None) -> Optional[str]:
        values = self.query.get(name)
        return values[0] if values else default

    @property
    def host(self) -> str:
        return self.headers.get("Host", "")


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: list = field(default_factory=list)   # [(name, value)]
    content_type: Optional[str] = "application/json"


def json_response(status: int, obj: Any, headers=None,
                  content_type: str = "application/json") -> Response:
    body = b"" if obj is None else json.dumps(obj, separators=(",", ":")).encode()
    return Response(status, body, list(headers or []), content_type if body else None)


class ApiError(Exception):
    """Raised by handlers to answer with a prepared error response."""

    def __init__(self, response: Response):
        super().__init__(f"HTTP {response.status}")
        self.response = response


class _NoResponse:
    """Marker: the connection was dropped on purpose, send nothing."""


NO_RESPONSE = _NoResponse()


# --------------------------------------------------------------------------
# Counters
# --------------------------------------------------------------------------

class Counters:
    """Thread-safe counters: kind -> operation -> count."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: dict = {}
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._data = {kind: collections.Counter() for kind in COUNTER_KINDS}

    def incr(self, kind: str, op: str, n: int = 1) -> None:
        with self._lock:
            self._data[kind][op] += n

    def get(self, kind: str, op: Optional[str] = None) -> int:
        with self._lock:
            c = self._data[kind]
            return sum(c.values()) if op is None else c.get(op, 0)

    def snapshot(self) -> dict:
        with self._lock:
            out = {kind: dict(sorted(c.items())) for kind, c in self._data.items()}
            out["totals"] = {kind: sum(c.values()) for kind, c in self._data.items()}
            return out


# --------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------

@dataclass
class Fault:
    kind: str
    remaining: Optional[int]          # None: every matching request
    op: Optional[str] = None          # None: every operation
    ms: int = 0                       # latency
    status: int = 500                 # http_error
    retry_after: int = 1              # throttle
    max_seconds: float = MAX_HANG_SECONDS   # hang
    id: int = 0

    def matches(self, op: str) -> bool:
        return self.op is None or self.op.lower() == op.lower()

    def as_dict(self) -> dict:
        d = {"id": self.id, "kind": self.kind, "count": self.remaining, "op": self.op}
        if self.kind == "latency":
            d["ms"] = self.ms
        elif self.kind == "http_error":
            d["status"] = self.status
        elif self.kind == "throttle":
            d["retry_after"] = self.retry_after
        elif self.kind == "hang":
            d["max_seconds"] = self.max_seconds
        return d


def make_fault(spec: dict) -> Fault:
    """Build a :class:`Fault` from a JSON-style dict (see README)."""
    if not isinstance(spec, dict):
        raise ValueError("fault spec must be an object")
    kind = str(spec.get("kind", "")).lower()
    kind = _FAULT_ALIASES.get(kind, kind)
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {spec.get('kind')!r}; expected one of {FAULT_KINDS}")
    default_count = None if kind == "latency" else 1
    count = spec.get("count", default_count)
    if count in ("all", "*"):
        count = None
    if count is not None:
        count = int(count)
        if count < 1:
            raise ValueError("count must be >= 1 (or null for every request)")
    op = spec.get("op")
    f = Fault(kind=kind, remaining=count, op=str(op) if op else None)
    if kind == "latency":
        f.ms = int(spec.get("ms", 0))
        if not 0 <= f.ms <= MAX_LATENCY_MS:
            raise ValueError(f"ms must be within 0..{MAX_LATENCY_MS}")
    elif kind == "http_error":
        f.status = int(spec.get("status", 500))
        if not 500 <= f.status <= 599:
            raise ValueError("http_error status must be 5xx")
    elif kind == "throttle":
        f.retry_after = max(0, int(spec.get("retry_after", 1)))
    elif kind == "hang":
        f.max_seconds = float(spec.get("max_seconds", MAX_HANG_SECONDS))
        f.max_seconds = max(0.0, min(f.max_seconds, MAX_HANG_SECONDS))
    return f


class FaultTable:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list = []
        self._next_id = 1

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            fault.id = self._next_id
            self._next_id += 1
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def list(self) -> list:
        with self._lock:
            return [f.as_dict() for f in self._faults]

    def take(self, op: str):
        """Consume the faults that apply to one request of ``op``.

        Returns ``(latency_ms, terminal_fault_or_None)``: every matching
        latency fault adds its delay; the oldest matching non-latency fault
        (if any) decides how the request ends.
        """
        latency = 0
        terminal = None
        with self._lock:
            for f in self._faults:
                if not f.matches(op):
                    continue
                if f.kind == "latency":
                    latency += f.ms
                elif terminal is None:
                    terminal = f
                else:
                    continue
                if f.remaining is not None:
                    f.remaining -= 1
            self._faults = [f for f in self._faults if f.remaining is None or f.remaining > 0]
        return latency, terminal


# --------------------------------------------------------------------------
# HTTP server plumbing
# --------------------------------------------------------------------------

class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, addr, handler, emulator: "Emulator"):
        self.emulator = emulator
        super().__init__(addr, handler)

    def server_bind(self):
        # Skip HTTPServer.server_bind's reverse DNS lookup (getfqdn).
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = host
        self.server_port = port

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        self.emulator._note_connection_error(exc)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kms-emulator/1"
    sys_version = ""
    timeout = IDLE_TIMEOUT

    def setup(self):
        emu: Emulator = self.server.emulator
        self._aborted = False
        self._raw_request = self.request
        ctx = emu._ssl_context
        if ctx is not None:
            self.request.settimeout(HANDSHAKE_TIMEOUT)
            self.request = ctx.wrap_socket(self.request, server_side=True)
        super().setup()
        emu._track(self.connection)

    def finish(self):
        try:
            if not self._aborted:
                super().finish()
            else:
                for f in (self.rfile, self.wfile):
                    try:
                        f.close()
                    except Exception:
                        pass
        finally:
            self.server.emulator._untrack(self.connection)
            if self.connection is not self._raw_request:
                # TLS: the server only knows (and closes) the raw socket, which
                # wrap_socket detached; close the TLS socket ourselves.
                try:
                    self.connection.close()
                except OSError:
                    pass

    def log_message(self, fmt, *args):
        if self.server.emulator.verbose:
            sys.stderr.write("[%s] %s - %s\n" % (self.server.emulator.provider,
                                                  self.address_string(), fmt % args))

    # Every method goes through the same dispatcher.
    def do_GET(self):
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET

    # ---------------------------------------------------------------
    def _read_body(self) -> bytes:
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            out = bytearray()
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise _BodyError(400, "truncated chunked body")
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise _BodyError(400, "bad chunk size")
                if size == 0:
                    while True:  # trailers
                        t = self.rfile.readline(65537)
                        if t in (b"\r\n", b"\n", b""):
                            break
                    return bytes(out)
                if len(out) + size > MAX_BODY:
                    raise _BodyError(413, "request body too large")
                chunk = self.rfile.read(size)
                if len(chunk) != size:
                    raise _BodyError(400, "truncated chunk")
                out += chunk
                self.rfile.readline(3)
        cl = self.headers.get("Content-Length")
        if cl is None:
            return b""
        try:
            n = int(cl)
        except ValueError:
            raise _BodyError(400, "bad Content-Length")
        if n < 0:
            raise _BodyError(400, "bad Content-Length")
        if n > MAX_BODY:
            # Read (and drop) a body of moderate size first, as servers do with a
            # lingering close, so the client can finish sending and read the 413
            # instead of meeting a reset connection half-way through its request.
            if n <= 4 * MAX_BODY:
                while n > 0:
                    chunk = self.rfile.read(min(n, 1 << 16))
                    if not chunk:
                        break
                    n -= len(chunk)
            raise _BodyError(413, "request body too large")
        body = self.rfile.read(n)
        if len(body) != n:
            raise _BodyError(400, "truncated body")
        return body

    def _dispatch(self):
        emu: Emulator = self.server.emulator
        try:
            body = self._read_body()
        except _BodyError as e:
            self.close_connection = True
            self._send(json_response(e.status, {"error": e.message}), close=True)
            return
        split = urlsplit(self.path)
        raw_path = split.path or "/"
        req = Request(
            method=self.command,
            target=self.path,
            raw_path=raw_path,
            path=unquote(raw_path),
            raw_query=split.query,
            query=parse_qs(split.query, keep_blank_values=True),
            headers=self.headers,
            body=body,
            scheme="https" if emu._ssl_context is not None else "http",
            client=self.client_address,
        )
        resp = emu._handle(req, self)
        if resp is NO_RESPONSE:
            self.close_connection = True
            return
        self._send(resp)

    def _send(self, resp: Response, close: bool = False):
        try:
            self.send_response(resp.status)
            names = set()
            for name, value in resp.headers:
                names.add(name.lower())
                self.send_header(name, str(value))
            if resp.content_type and "content-type" not in names:
                self.send_header("Content-Type", resp.content_type)
            self.send_header("Content-Length", str(len(resp.body)))
            if close:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD" and resp.body:
                self.wfile.write(resp.body)
        except OSError:
            # The client went away (e.g. it timed out on an injected latency).
            self.close_connection = True

    def abort_connection(self, rst: bool) -> None:
        """Drop the connection without answering.

        ``rst=True`` sets SO_LINGER{1,0} before closing, so the kernel sends
        a TCP RST instead of a FIN; the client sees ECONNRESET.
        """
        self.close_connection = True
        self._aborted = True
        conn = self.connection
        try:
            if rst:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        # rfile holds a reference on the socket (makefile); drop it so that
        # close() really closes the descriptor now.
        try:
            self.rfile.close()
        except Exception:
            pass
        try:
            conn.close()
        except OSError:
            pass


class _BodyError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# --------------------------------------------------------------------------
# The emulator base class
# --------------------------------------------------------------------------

Handler = Callable[[Request], Response]


class Emulator:
    """Base class of the provider emulators. Subclasses set ``provider``."""

    provider = "base"

    def __init__(self, *, port: int = 0, host: str = "127.0.0.1", tls=None,
                 verbose: bool = False, log_size: int = 256):
        try:
            if not ipaddress.ip_address(host).is_loopback:
                raise ValueError
        except ValueError:
            raise ValueError(f"emulators bind to a loopback address only, not {host!r}")
        self.host = host
        self.port = int(port)
        self.verbose = verbose
        self._ssl_context = _make_ssl_context(tls) if tls is not None else None
        self.counters = Counters()
        self._faults = FaultTable()
        self._state_lock = threading.RLock()
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None
        self._conns: set = set()
        self._conns_lock = threading.Lock()
        self._hangs: set = set()
        self._hangs_lock = threading.Condition()
        self._stopping = threading.Event()
        self._timers: list = []
        self._started = False
        self.connection_errors = collections.deque(maxlen=64)
        #: The last ``log_size`` requests: dicts with method, path, op, status, headers.
        self.request_log = collections.deque(maxlen=log_size)

    # -------------------------------------------------------------- lifecycle
    @property
    def scheme(self) -> str:
        return "https" if self._ssl_context is not None else "http"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def start(self) -> "Emulator":
        with self._state_lock:
            if self._started:
                return self
            self._stopping.clear()
            self._bind()
            self._started = True
        return self

    def stop(self) -> None:
        """Stop serving: close the listener and every connection, release hangs."""
        self._stopping.set()
        for t in list(self._timers):
            t.cancel()
        self._timers.clear()
        self.release()
        self._shutdown_listener(close_existing=True)
        with self._state_lock:
            self._started = False

    close = stop

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def down(self, duration: Optional[float] = None, close_existing: bool = True,
             _exclude=None) -> None:
        """Stop accepting connections (the port then refuses them).

        With ``close_existing`` (default) open keep-alive connections are shut
        down too, as they would be if the KMS host went away.  With
        ``duration`` (seconds, at most 120) :meth:`up` is called by a timer.
        """
        self._shutdown_listener(close_existing=close_existing, exclude=_exclude)
        if duration is not None:
            duration = max(0.0, min(float(duration), MAX_HANG_SECONDS))
            t = threading.Timer(duration, self._timed_up)
            t.daemon = True
            self._timers.append(t)
            t.start()

    def _timed_up(self):
        if not self._stopping.is_set():
            self.up()

    def up(self) -> None:
        """Listen again on the same port after :meth:`down`."""
        with self._state_lock:
            if self._server is not None or self._stopping.is_set():
                return
            self._bind()

    @property
    def is_down(self) -> bool:
        return self._server is None

    def _bind(self) -> None:
        srv = _Server((self.host, self.port), _Handler, self)
        self._server = srv
        self.port = srv.server_address[1]
        t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                             name=f"{self.provider}-emulator:{self.port}", daemon=True)
        self._thread = t
        t.start()

    def _shutdown_listener(self, close_existing: bool, exclude=None) -> None:
        with self._state_lock:
            srv, self._server = self._server, None
            thread, self._thread = self._thread, None
        if srv is not None:
            srv.shutdown()
            srv.server_close()
            if thread is not None:
                thread.join(5)
        if close_existing:
            with self._conns_lock:
                conns = [c for c in self._conns if c is not exclude]
            for c in conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _track(self, conn) -> None:
        with self._conns_lock:
            self._conns.add(conn)

    def _untrack(self, conn) -> None:
        with self._conns_lock:
            self._conns.discard(conn)

    def _note_connection_error(self, exc) -> None:
        self.connection_errors.append(repr(exc))
        if self.verbose:
            sys.stderr.write(f"[{self.provider}] connection error: {exc!r}\n")

    # -------------------------------------------------------------- counters
    def stats(self) -> dict:
        snap = self.counters.snapshot()
        snap["provider"] = self.provider
        snap["hanging"] = self.hanging
        snap["down"] = self.is_down
        snap["faults"] = self._faults.list()
        return snap

    def reset_stats(self) -> None:
        self.counters.reset()

    def calls(self, op: Optional[str] = None) -> int:
        """Requests of ``op`` (all ops if None) that reached the handler."""
        return self.counters.get("calls", op)

    def rejected(self, op: Optional[str] = None) -> int:
        """Requests refused before the handler (auth, signature, bad route)."""
        return self.counters.get("rejected", op)

    def faulted(self, op: Optional[str] = None) -> int:
        """Requests ended by an injected fault (hang/reset/5xx/throttle)."""
        return self.counters.get("faulted", op)

    def errors(self, op: Optional[str] = None) -> int:
        """Requests whose handler answered with a status >= 400."""
        return self.counters.get("errors", op)

    def delayed(self, op: Optional[str] = None) -> int:
        """Requests that got injected latency."""
        return self.counters.get("delayed", op)

    # -------------------------------------------------------------- faults
    def inject(self, kind: str, **spec) -> dict:
        """Add a fault. See :func:`make_fault` / the README for the keys."""
        spec = dict(spec, kind=kind)
        return self._faults.add(make_fault(spec)).as_dict()

    def inject_spec(self, spec: dict) -> dict:
        return self._faults.add(make_fault(spec)).as_dict()

    def inject_latency(self, ms: int, count: Optional[int] = None, op: Optional[str] = None):
        return self.inject("latency", ms=ms, count=count, op=op)

    def inject_http_error(self, status: int = 500, count: Optional[int] = 1, op: Optional[str] = None):
        return self.inject("http_error", status=status, count=count, op=op)

    def inject_throttle(self, count: Optional[int] = 1, op: Optional[str] = None, retry_after: int = 1):
        return self.inject("throttle", count=count, op=op, retry_after=retry_after)

    def inject_reset(self, count: Optional[int] = 1, op: Optional[str] = None):
        return self.inject("reset", count=count, op=op)

    def inject_hang(self, count: Optional[int] = 1, op: Optional[str] = None,
                    max_seconds: float = MAX_HANG_SECONDS):
        return self.inject("hang", count=count, op=op, max_seconds=max_seconds)

    def clear_faults(self) -> None:
        self._faults.clear()

    def faults(self) -> list:
        return self._faults.list()

    @property
    def hanging(self) -> int:
        with self._hangs_lock:
            return len(self._hangs)

    def wait_hanging(self, n: int = 1, timeout: float = 5.0) -> bool:
        """Wait until at least ``n`` requests are parked by a hang fault."""
        deadline = time.monotonic() + timeout
        with self._hangs_lock:
            while len(self._hangs) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._hangs_lock.wait(left)
            return True

    def release(self) -> int:
        """Wake every hung request (its connection is then closed unanswered)."""
        with self._hangs_lock:
            evs = list(self._hangs)
        for ev in evs:
            ev.set()
        return len(evs)

    def _hang(self, max_seconds: float) -> None:
        ev = threading.Event()
        with self._hangs_lock:
            self._hangs.add(ev)
            self._hangs_lock.notify_all()
        try:
            if not self._stopping.is_set():
                ev.wait(max(0.0, min(max_seconds, MAX_HANG_SECONDS)))
        finally:
            with self._hangs_lock:
                self._hangs.discard(ev)
                self._hangs_lock.notify_all()

    # -------------------------------------------------------------- dispatch
    def _handle(self, req: Request, handler: _Handler):
        if req.path.startswith("/__emulator/"):
            return self._admin(req, handler)
        route = None
        try:
            route = self.route(req)
        except ApiError as e:
            self.counters.incr("rejected", UNROUTED)
            return self._log(req, UNROUTED, e.response)
        if route is None:
            self.counters.incr("rejected", UNROUTED)
            return self._log(req, UNROUTED, self.not_found_response(req))
        op, fn = route

        latency, fault = self._faults.take(op)
        if latency:
            self.counters.incr("delayed", op)
            self._stopping.wait(latency / 1000.0)
        if fault is not None:
            self.counters.incr("faulted", op)
            if fault.kind == "hang":
                self._log(req, op, None, note="hang")
                self._hang(fault.max_seconds)
                handler.abort_connection(rst=False)
                return NO_RESPONSE
            if fault.kind == "reset":
                self._log(req, op, None, note="reset")
                handler.abort_connection(rst=True)
                return NO_RESPONSE
            if fault.kind == "http_error":
                return self._log(req, op, self.http_error_response(req, fault.status))
            if fault.kind == "throttle":
                return self._log(req, op, self.throttle_response(req, fault.retry_after))

        try:
            rejection = self.authenticate(req, op)
        except ApiError as e:
            rejection = e.response
        if rejection is not None:
            self.counters.incr("rejected", op)
            return self._log(req, op, rejection)

        self.counters.incr("calls", op)
        try:
            resp = fn(req)
        except ApiError as e:
            resp = e.response
        except Exception:
            self._note_connection_error(traceback.format_exc())
            if self.verbose:
                traceback.print_exc()
            resp = self.internal_error_response(req)
        if resp.status >= 400:
            self.counters.incr("errors", op)
        return self._log(req, op, resp)

    def _log(self, req: Request, op: str, resp: Optional[Response], note: str = ""):
        self.request_log.append({
            "method": req.method, "path": req.path, "query": req.raw_query, "op": op,
            "status": resp.status if resp is not None else None, "note": note,
            "headers": {k.lower(): v for k, v in req.headers.items()},
            "time": req.received_at,
        })
        return resp

    # -------------------------------------------------------------- admin API
    def _admin(self, req: Request, handler: _Handler) -> Response:
        sub = req.path[len("/__emulator/"):].strip("/")
        try:
            data = json.loads(req.body) if req.body.strip() else {}
        except ValueError:
            return json_response(400, {"error": "body is not JSON"})
        try:
            if sub == "stats" and req.method == "GET":
                return json_response(200, self.stats())
            if sub == "reset" and req.method == "POST":
                self.reset_stats()
                if isinstance(data, dict) and data.get("faults"):
                    self.clear_faults()
                return json_response(200, {"ok": True})
            if sub == "faults":
                if req.method == "GET":
                    return json_response(200, {"faults": self.faults()})
                if req.method == "DELETE":
                    self.clear_faults()
                    return json_response(200, {"faults": []})
                if req.method == "POST":
                    # {"kind": ...} | {"faults": [...]} | [...] ; "clear": true empties first
                    if isinstance(data, list):
                        specs = data
                    elif isinstance(data, dict) and "kind" in data:
                        specs = [data]
                    elif isinstance(data, dict):
                        specs = data.get("faults", [])
                    else:
                        raise ValueError("expected a fault object, a list, or {\"faults\": [...]}")
                    if not isinstance(specs, list):
                        raise ValueError("'faults' must be a list")
                    faults = [make_fault(s) for s in specs]      # validate all first
                    if isinstance(data, dict) and data.get("clear"):
                        self.clear_faults()
                    added = [self._faults.add(f).as_dict() for f in faults]
                    return json_response(200, {"added": added, "faults": self.faults()})
            if sub == "release" and req.method == "POST":
                return json_response(200, {"released": self.release()})
            if sub == "down" and req.method == "POST":
                seconds = data.get("seconds") if isinstance(data, dict) else None
                if seconds is None:
                    return json_response(400, {"error": "'seconds' is required (the admin API "
                                                        "is unreachable while down)"})
                self.down(duration=float(seconds), _exclude=handler.connection)
                return Response(200, json.dumps({"down_for": float(seconds)}).encode(),
                                [("Connection", "close")])
            if sub == "info" and req.method == "GET":
                return json_response(200, {"provider": self.provider, "url": self.url,
                                           **self.describe()})
        except (ValueError, TypeError) as e:
            return json_response(400, {"error": str(e)})
        return json_response(404, {"error": f"no admin endpoint {req.method} {req.path}"})

    # -------------------------------------------------------------- provider hooks
    def route(self, req: Request):
        """Return ``(op_name, handler)`` for ``req`` or None if nothing matches."""
        raise NotImplementedError

    def authenticate(self, req: Request, op: str) -> Optional[Response]:
        """Return None if the request may proceed, else the rejection."""
        return None

    def describe(self) -> dict:
        """Provider details for the CLI's info line and /__emulator/info."""
        return {}

    def not_found_response(self, req: Request) -> Response:
        return json_response(404, {"error": "not found"})

    def throttle_response(self, req: Request, retry_after: int) -> Response:
        return json_response(429, {"error": "throttled"}, [("Retry-After", str(retry_after))])

    def http_error_response(self, req: Request, status: int) -> Response:
        return json_response(status, {"error": "emulated server error"})

    def internal_error_response(self, req: Request) -> Response:
        return self.http_error_response(req, 500)


def new_request_id() -> str:
    return str(uuid.uuid4())


def _make_ssl_context(tls) -> ssl.SSLContext:
    """``tls`` is an ssl.SSLContext, an object with ``server_cert``/``server_key``
    (e.g. :class:`kms_emulators.tls.TlsFiles`) or a ``(cert, key)`` pair."""
    if isinstance(tls, ssl.SSLContext):
        return tls
    if hasattr(tls, "server_cert") and hasattr(tls, "server_key"):
        cert, key = tls.server_cert, tls.server_key
    else:
        cert, key = tls
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    return ctx
