"""Throw-away PostgreSQL clusters for pg_envelope's integration tests.

A `Cluster` is one data directory with its own unix-socket directory and server log,
never listening on TCP, so tests can run next to any other PostgreSQL on the machine.
A `ClusterFactory` makes clusters and stops all of them at teardown; the fixtures in
conftest.py wrap it. Nothing here depends on pytest.

Environment: PG_BINDIR overrides /usr/lib/postgresql/15/bin; PG_ENVELOPE_KEEP_DATA=1
keeps data directories after teardown (server logs and other files are always kept).
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import secrets
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import psycopg2
import psycopg2.extensions

PG_BINDIR = Path(os.environ.get("PG_BINDIR", "/usr/lib/postgresql/15/bin"))
KEEP_DATA = os.environ.get("PG_ENVELOPE_KEEP_DATA", "") not in ("", "0")
SUPERUSER = "postgres"
EXTENSION = "pg_envelope"

# Unix socket paths are limited to 107 bytes; the socket file adds ".s.PGSQL.NNNNN".
_MAX_SOCKET_DIR = 80
# Server log lines that mean a server process died rather than raised an error.
_CRASH_PATTERNS = re.compile(r"terminated by signal|terminated by exception|PANIC:")
# Variables a developer's shell may carry that would redirect our client programs.
_CLIENT_ENV_DROP = ("PGDATABASE", "PGSERVICE", "PGSERVICEFILE", "PGOPTIONS", "PGPASSFILE",
                    "PGSSLMODE", "PGHOSTADDR", "PGTARGETSESSIONATTRS", "PGDATA")


def new_master_key() -> str:
    """A fresh local-KMS master key: 64 lowercase hex characters."""
    return secrets.token_hex(32)


def key_spellings(key_hex: str) -> list[str]:
    """Every form in which a master key could leak: hex in both cases, base64."""
    raw = bytes.fromhex(key_hex)
    return [key_hex.lower(), key_hex.upper(), base64.b64encode(raw).decode()]


def quote_conf(value: str) -> str:
    """A postgresql.conf string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def free_port() -> int:
    """A TCP port nobody is bound to right now (the socket file name uses it too)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ClusterError(RuntimeError):
    """A PostgreSQL program failed; the message carries its output and the log's tail."""


class Cluster:
    """One PostgreSQL cluster owned by a test.

    Configuration lives in `pg_envelope_test.conf`, included from postgresql.conf and
    rewritten by every `configure()` call; it takes effect at the next (re)start.
    """

    def __init__(self, name: str, base_dir: Path, bindir: Path = PG_BINDIR, port: int | None = None):
        self.name = name
        self.base_dir = Path(base_dir)
        self.bindir = Path(bindir)
        self.data_dir = self.base_dir / "data"
        self.log_path = self.base_dir / "server.log"
        self.conf_path = self.data_dir / "pg_envelope_test.conf"
        self.port = port or free_port()  # also TCP's, with settings={"listen_addresses": "127.0.0.1"}
        self.superuser = SUPERUSER
        self.master_key_hex: str | None = None  # the key configured last, for leak checks
        self.allow_crash = False
        self.running = False
        self._connections: list[psycopg2.extensions.connection] = []
        self._own_socket_dir = False
        self.socket_dir = self.base_dir / "sock"
        if len(str(self.socket_dir)) > _MAX_SOCKET_DIR:
            self.socket_dir = Path(tempfile.mkdtemp(prefix="pgenv-", dir="/tmp"))
            self._own_socket_dir = True
        self.socket_dir.mkdir(mode=0o700, parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"<Cluster {self.name} port={self.port} {'running' if self.running else 'stopped'}>"

    # ---- programs ------------------------------------------------------------------

    def client_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _CLIENT_ENV_DROP}
        env.update(PGHOST=str(self.socket_dir), PGPORT=str(self.port), PGUSER=self.superuser,
                   LC_ALL="C", PGCONNECT_TIMEOUT="10")
        return env

    def run(self, program: str, *args: str | os.PathLike, check: bool = True,
            input: bytes | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        """Runs a PostgreSQL program from the cluster's bindir against this cluster."""
        cmd = [str(self.bindir / program), *map(str, args)]
        proc = subprocess.run(cmd, input=input, capture_output=True, env=self.client_env(),
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise ClusterError(
                f"{' '.join(cmd)} exited with {proc.returncode}\n"
                f"--- stdout ---\n{proc.stdout.decode(errors='replace')[-4000:]}\n"
                f"--- stderr ---\n{proc.stderr.decode(errors='replace')[-4000:]}\n"
                f"--- server log tail ---\n{self.log_tail()}")
        return proc

    def pg_dump(self, dbname: str, *args: str | os.PathLike, **kw) -> subprocess.CompletedProcess:
        return self.run("pg_dump", "--dbname", dbname, *args, **kw)

    def pg_restore(self, *args: str | os.PathLike, **kw) -> subprocess.CompletedProcess:
        return self.run("pg_restore", *args, **kw)

    def psql(self, dbname: str, *args: str | os.PathLike, **kw) -> subprocess.CompletedProcess:
        """psql without ~/.psqlrc, stopping at the first error."""
        return self.run("psql", "-X", "--no-psqlrc", "-v", "ON_ERROR_STOP=1", "--dbname", dbname,
                        *args, **kw)

    # ---- setup ---------------------------------------------------------------------

    def init(self, template: Path | None = None) -> "Cluster":
        """Creates the data directory: a copy of `template` (an initdb'd, never started
        data directory) or a fresh initdb."""
        if template is not None:
            shutil.copytree(template, self.data_dir, symlinks=True)
            os.chmod(self.data_dir, 0o700)
        else:
            initdb(self.data_dir, bindir=self.bindir)
        with open(self.data_dir / "postgresql.conf", "a") as f:
            f.write("\ninclude_if_exists = 'pg_envelope_test.conf'\n")
        self.configure(preload=False)
        return self

    def write_file(self, name: str, content: str | bytes, mode: int = 0o600) -> Path:
        """Writes a file next to the data directory with exactly `mode`."""
        path = self.base_dir / name
        data = content.encode() if isinstance(content, str) else content
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(path, mode)
        return path

    def write_master_key(self, key_hex: str | None = None, *, name: str = "master.key",
                         mode: int = 0o600) -> Path:
        """Writes a master key file (a new key unless one is given) and remembers the key."""
        self.master_key_hex = key_hex or new_master_key()
        return self.write_file(name, self.master_key_hex + "\n", mode)

    def configure(self, *, preload: bool = True, master_key_file: str | os.PathLike | None = None,
                  master_key_command: str | None = None,
                  settings: Mapping[str, object] | None = None) -> "Cluster":
        """Rewrites the test configuration; applies at the next start."""
        conf: dict[str, object] = {
            "listen_addresses": "",
            "port": self.port,
            "unix_socket_directories": str(self.socket_dir),
            "unix_socket_permissions": "0700",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "32MB",
            "max_connections": 30,
            "max_wal_senders": 0,
            "wal_level": "minimal",
            "lc_messages": "C",
            "log_line_prefix": "%m [%p] %e ",
            "log_timezone": "UTC",
            "logging_collector": "off",
            "shared_preload_libraries": EXTENSION if preload else "",
        }
        if master_key_file is not None:
            conf["envelope.master_key_file"] = str(master_key_file)
        if master_key_command is not None:
            conf["envelope.master_key_command"] = master_key_command
        conf.update(settings or {})
        lines = []
        for name, value in conf.items():
            if isinstance(value, bool):
                value = "on" if value else "off"
            lines.append(f"{name} = {value if isinstance(value, int) else quote_conf(str(value))}")
        self.conf_path.write_text("\n".join(lines) + "\n")
        return self

    # ---- lifecycle -----------------------------------------------------------------

    def start(self, check: bool = True) -> subprocess.CompletedProcess:
        proc = self.run("pg_ctl", "--wait", "--timeout", "60", "--pgdata", self.data_dir,
                        "--log", self.log_path, "start", check=False)
        if proc.returncode == 0:
            self.running = True
        elif check:
            raise ClusterError(f"cluster {self.name} did not start\n{proc.stderr.decode(errors='replace')}"
                               f"\n--- server log tail ---\n{self.log_tail()}")
        return proc

    def stop(self, mode: str = "fast") -> None:
        self.close_connections()
        if not (self.data_dir / "postmaster.pid").exists():
            self.running = False
            return
        self.run("pg_ctl", "--wait", "--timeout", "60", "--pgdata", self.data_dir, "--mode", mode,
                 "stop")
        self.running = False

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def teardown(self, keep_data: bool = KEEP_DATA) -> None:
        """Stops the server whatever state it is in, then removes the data directory
        (not the log); never raises."""
        try:
            self.stop("fast")
        except Exception:
            with contextlib.suppress(Exception):
                self.stop("immediate")
        finally:
            if self._own_socket_dir:
                shutil.rmtree(self.socket_dir, ignore_errors=True)
            if not keep_data and not (self.data_dir / "postmaster.pid").exists():
                shutil.rmtree(self.data_dir, ignore_errors=True)

    # ---- clients -------------------------------------------------------------------

    def connect(self, dbname: str = "postgres", user: str | None = None, autocommit: bool = True,
                **options) -> psycopg2.extensions.connection:
        """A psycopg2 connection over the cluster's unix socket; closed at stop()."""
        conn = psycopg2.connect(host=str(self.socket_dir), port=self.port, dbname=dbname,
                                user=user or self.superuser, connect_timeout=10, **options)
        conn.autocommit = autocommit
        self._connections.append(conn)
        return conn

    def close_connections(self) -> None:
        for conn in self._connections:
            with contextlib.suppress(Exception):
                conn.close()
        self._connections.clear()

    def sql(self, query: str, params: Sequence | Mapping | None = None, *, dbname: str = "postgres",
            user: str | None = None) -> list[tuple] | None:
        """Runs one statement on a new connection; returns all rows, or None without a result."""
        conn = self.connect(dbname, user)
        try:
            with conn.cursor() as cur:
                cur.execute(query, params)
                return cur.fetchall() if cur.description is not None else None
        finally:
            conn.close()
            self._connections.remove(conn)

    def scalar(self, query: str, params: Sequence | Mapping | None = None, **kw):
        rows = self.sql(query, params, **kw)
        assert rows is not None and len(rows) == 1 and len(rows[0]) == 1, rows
        return rows[0][0]

    def create_database(self, dbname: str, *, extension: bool = True) -> None:
        self.sql(f"CREATE DATABASE {quote_ident(dbname)}")
        if extension:
            self.sql(f"CREATE EXTENSION {EXTENSION}", dbname=dbname)

    # ---- server log ----------------------------------------------------------------

    def log_position(self) -> int:
        """The log's current size: pass it to read_log() to see only what came after."""
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def read_log(self, since: int = 0) -> str:
        if not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as f:
            f.seek(since)
            return f.read().decode(errors="replace")

    def log_tail(self, chars: int = 4000) -> str:
        return self.read_log()[-chars:]

    def wait_for_log(self, pattern: str, since: int = 0, timeout: float = 10) -> re.Match:
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(pattern, self.read_log(since))
            if m or time.monotonic() > deadline:
                assert m, f"{pattern!r} did not appear in the server log:\n{self.log_tail()}"
                return m
            time.sleep(0.05)

    def assert_log_free_of(self, secrets_: Iterable[str | bytes], since: int = 0) -> None:
        """Fails if any of the given strings occurs anywhere in the server log."""
        with open(self.log_path, "rb") as f:
            f.seek(since)
            log = f.read()
        for i, s in enumerate(secrets_):
            needle = s.encode() if isinstance(s, str) else s
            # The message names the secret by position only: it is not printed.
            assert needle and needle not in log, f"secret #{i} found in the server log of {self.name}"

    def assert_no_crash(self) -> None:
        crashes = [line for line in self.read_log().splitlines() if _CRASH_PATTERNS.search(line)]
        assert not crashes, f"server processes of {self.name} crashed:\n" + "\n".join(crashes)


def initdb(data_dir: Path, bindir: Path = PG_BINDIR) -> None:
    if os.geteuid() == 0:
        raise ClusterError("initdb refuses to run as root: run the tests as an unprivileged user, e.g. "
                           "runuser -u postgres -- /usr/bin/python3 -m pytest test/integration")
    subprocess.run([str(bindir / "initdb"), "--pgdata", str(data_dir), "--auth", "trust",
                    "--username", SUPERUSER, "--encoding", "UTF8", "--no-locale", "--no-sync",
                    "--no-instructions"],
                   check=True, capture_output=True, env={**os.environ, "LC_ALL": "C"})


class ClusterFactory:
    """Makes clusters under one directory and stops all of them at teardown."""

    def __init__(self, base_dir: Path, template: Path | None = None):
        self.base_dir = Path(base_dir)
        self.template = template
        self.clusters: list[Cluster] = []

    def create(self, name: str = "pg", *, start: bool = True, preload: bool = True,
               master_key: bool | str = True, settings: Mapping[str, object] | None = None,
               port: int | None = None) -> Cluster:
        """A new cluster. `master_key`: True for a fresh key file, a hex string for that
        key in a file, False for no master key setting at all. `port`: a fixed port
        instead of a free one (clients that find nodes by host:port, e.g. Citus)."""
        base = self.base_dir / f"{name}-{len(self.clusters)}"
        base.mkdir(parents=True)
        cluster = Cluster(name, base, port=port)
        self.clusters.append(cluster)
        cluster.init(self.template)
        key_file = None
        if master_key:
            key_file = cluster.write_master_key(None if master_key is True else master_key)
        cluster.configure(preload=preload, master_key_file=key_file, settings=settings)
        if start:
            cluster.start()
        return cluster

    def stop_all(self) -> None:
        for cluster in self.clusters:
            cluster.teardown()

    def check_no_crash(self) -> None:
        for cluster in self.clusters:
            if not cluster.allow_crash:
                cluster.assert_no_crash()


def pg_error(error) -> dict[str, str | None]:
    """SQLSTATE, message, detail and hint of a psycopg2 error (or a pytest.raises
    ExceptionInfo holding one), for assertions."""
    e = getattr(error, "value", error)
    diag = e.diag
    return {"sqlstate": e.pgcode, "message": diag.message_primary, "detail": diag.message_detail,
            "hint": diag.message_hint, "text": e.pgerror or ""}


def envelope_header(raw: bytes) -> dict[str, int | bytes]:
    """The header of a binary envelope (docs/format.md section 1, formats 1 and 2),
    parsed here independently of the extension: format, key_id, version, nonce and
    header_len (the ciphertext follows it; the 16-byte tag ends the value)."""
    if raw[0] == 1:
        assert raw[1] == 1, "format 1 with an unknown algorithm"
        key_id, version = struct.unpack(">II", raw[2:10])
        return {"format": 1, "key_id": key_id, "version": version, "nonce": raw[10:22], "header_len": 22}
    assert raw[0] == 2, f"unknown envelope format {raw[0]}"
    key_id = struct.unpack(">I", raw[1:5])[0]
    version, shift, p = 0, 0, 5
    while True:
        version |= (raw[p] & 0x7F) << shift
        shift += 7
        p += 1
        if not raw[p - 1] & 0x80:
            break
    return {"format": 2, "key_id": key_id, "version": version, "nonce": raw[p:p + 12], "header_len": p + 12}


def envelope_problem(raw: bytes) -> str | None:
    """Why `raw` is not a structurally valid envelope (docs/format.md section 1), or None;
    independent of the extension's parser."""
    if len(raw) < 34:
        return "length"
    if raw[0] == 1:
        if len(raw) < 38:
            return "length"
        if raw[1] != 1:
            return "algorithm"
        key_id, version = struct.unpack(">II", raw[2:10])
    elif raw[0] == 2:
        version, n = 0, 0
        while True:
            if n == 5:
                return "version encoding"
            b = raw[5 + n]
            version |= (b & 0x7F) << (7 * n)
            n += 1
            if not b & 0x80:
                break
        if (n > 1 and raw[5 + n - 1] == 0) or version > 0xFFFFFFFF:
            return "version encoding"
        if len(raw) < 5 + n + 12 + 16:
            return "length"
        key_id = struct.unpack(">I", raw[1:5])[0]
    else:
        return "format"
    return "dek" if key_id == 0 or version == 0 else None
