"""The application stack every client/ORM test runs against (docs/orm.md).

One cluster per test module with pg_envelope preloaded, listening on loopback TCP and
its unix socket; a database `app` with the extension; a login role `app` (password
`app-secret`, md5/scram over TCP) that owns the application's tables, as an
application's migration role does, and holds encrypt + decrypt on the key `orm_key`;
and a pgbouncer 1.x in **transaction** pooling mode in front of it on loopback.

A client test creates its table with its own model/migration as `app`, calls
`stack.protect(table, column)` (what an operator runs once: envelope.protect_column),
then drives the ORM unchanged, `direct` and through `pgbouncer` (the `route` fixture).
`stack.raw(...)` reads the stored column as the superuser, who holds no grant and
therefore sees the dump-safe ciphertext form.

A test that needs more login roles behind pgbouncer (e.g. the Supabase-style
`authenticator`) creates the role and calls `stack.add_pgbouncer_user(user, password)`;
`stack.add_pgbouncer_database(alias, pool_size=1)` adds another pgbouncer database name
for `app` with its own (small) pool. Both rewrite pgbouncer's files and reload it.
"""

from __future__ import annotations

import dataclasses
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest

from pgcluster import free_port

APP_USER = "app"
APP_PASSWORD = "app-secret"
APP_DB = "app"
KEY = "orm_key"
PGBOUNCER = Path("/usr/sbin/pgbouncer")


@dataclass
class Endpoint:
    """Where a client connects: loopback TCP host and port, user, password, database."""
    name: str  # "direct" or "pgbouncer"
    host: str
    port: int
    user: str = APP_USER
    password: str = APP_PASSWORD
    dbname: str = APP_DB

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{self.dbname}"

    @property
    def pooled(self) -> bool:
        return self.name == "pgbouncer"


class AppStack:
    def __init__(self, cluster, bouncer_port: int, bouncer: "PgBouncer | None" = None):
        self.cluster = cluster
        self.direct = Endpoint("direct", "127.0.0.1", cluster.port)
        self.pgbouncer = Endpoint("pgbouncer", "127.0.0.1", bouncer_port)
        self.bouncer = bouncer

    def endpoint(self, name: str) -> Endpoint:
        return self.direct if name == "direct" else self.pgbouncer

    def endpoint_as(self, name: str, user: str, password: str, dbname: str | None = None) -> Endpoint:
        """The endpoint `name` ("direct" or "pgbouncer") for another login role (and,
        through pgbouncer, optionally a database alias added by add_pgbouncer_database)."""
        base = self.endpoint(name)
        return dataclasses.replace(base, user=user, password=password, dbname=dbname or base.dbname)

    def add_pgbouncer_user(self, user: str, password: str) -> None:
        """Lets a login role (created by the caller, md5 password) connect through pgbouncer."""
        assert self.bouncer is not None
        self.bouncer.users[user] = password
        self.bouncer.reload()
        self.bouncer.wait_until_connectable(user, password, APP_DB)

    def add_pgbouncer_database(self, alias: str, *, pool_size: int) -> None:
        """A pgbouncer database name `alias` for the database `app` with its own pool of
        `pool_size` server connections per user (pool_size=1: every transaction of a user
        through this alias runs on the same server backend)."""
        assert self.bouncer is not None
        self.bouncer.databases[alias] = f"dbname={APP_DB} pool_size={pool_size}"
        self.bouncer.reload()
        self.bouncer.wait_until_connectable(APP_USER, APP_PASSWORD, alias)

    def protect(self, table: str, column: str, **options) -> None:
        """envelope.protect_column(table, column, 'orm_key', ...) as the table's owner."""
        args = "".join(f", {k} => %s" for k in options)
        self.cluster.sql(f"SELECT envelope.protect_column(%s::regclass, %s, %s{args})",
                         [table, column, KEY, *options.values()], dbname=APP_DB, user=APP_USER)

    def raw(self, query: str, params=None) -> list[tuple]:
        """A query as the superuser (no grant on the key: protected columns read as ciphertext)."""
        return self.cluster.sql(query, params, dbname=APP_DB)

    def assert_sealed(self, table: str, column: str, plaintexts) -> None:
        """Every stored value of the column is ciphertext ("penv1:...") and no plaintext
        given appears in it, read as the superuser and as the column's raw bytes."""
        rows = self.raw(f'SELECT "{column}"::text FROM "{table}" WHERE "{column}" IS NOT NULL')
        assert rows, f"{table}.{column} holds no value"
        for (v,) in rows:
            assert v.startswith("penv1:"), f"{table}.{column} holds a value that is not sealed"
        stored = "\n".join(v for (v,) in rows)
        for p in plaintexts:
            assert str(p) not in stored
        unsealed = self.raw(f'SELECT count(*) FROM "{table}" WHERE NOT envelope.is_sealed("{column}")')
        assert unsealed == [(0,)]


class PgBouncer:
    """pgbouncer in transaction pooling mode in front of one cluster, on loopback."""

    def __init__(self, cluster, workdir: Path):
        self.cluster = cluster
        self.workdir = workdir
        self.port = free_port()
        self.users: dict[str, str] = {APP_USER: APP_PASSWORD}
        self.databases: dict[str, str] = {APP_DB: f"dbname={APP_DB}"}
        self.proc: subprocess.Popen | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self.auth = workdir / "userlist.txt"
        self.ini = workdir / "pgbouncer.ini"
        self.log = workdir / "pgbouncer.log"

    def write_config(self) -> None:
        self.auth.write_text("".join(f'"{u}" "{p}"\n' for u, p in self.users.items()))
        dbs = "".join(f"{alias} = host=127.0.0.1 port={self.cluster.port} {spec}\n"
                      for alias, spec in self.databases.items())
        self.ini.write_text(
            "[databases]\n"
            f"{dbs}"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = md5\nauth_file = {self.auth}\n"
            "pool_mode = transaction\ndefault_pool_size = 4\nmax_client_conn = 100\n"
            "server_reset_query =\nignore_startup_parameters = extra_float_digits,options\n"
            f"logfile = {self.log}\npidfile = {self.workdir / 'pgbouncer.pid'}\n")

    def start(self) -> None:
        self.write_config()
        self.proc = subprocess.Popen([str(PGBOUNCER), str(self.ini)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pgbouncer exited: {self.log.read_text()[-2000:]}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        self.proc.kill()
        raise RuntimeError("pgbouncer did not start listening")

    def reload(self) -> None:
        """Rewrites the files and makes pgbouncer re-read them (SIGHUP)."""
        assert self.proc is not None and self.proc.poll() is None, "pgbouncer is not running"
        self.write_config()
        self.proc.send_signal(signal.SIGHUP)

    def wait_until_connectable(self, user: str, password: str, dbname: str, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg2.connect(host="127.0.0.1", port=self.port, user=user, password=password,
                                 dbname=dbname, connect_timeout=5).close()
                return
            except psycopg2.OperationalError as e:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"pgbouncer does not let {user} into {dbname}: {e}\n"
                                       f"{self.log.read_text()[-2000:]}") from e
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def stack(module_cluster_factory, tmp_path_factory):
    if not PGBOUNCER.exists():
        pytest.skip("pgbouncer is not installed (Debian package pgbouncer; scripts/setup.sh installs it)")
    cluster = module_cluster_factory.create(
        "app", settings={"listen_addresses": "127.0.0.1", "password_encryption": "md5",
                         "max_connections": 60})
    hba = cluster.data_dir / "pg_hba.conf"
    hba.write_text("local all all trust\nhost all postgres 127.0.0.1/32 trust\n"
                   "host all all 127.0.0.1/32 md5\n")
    cluster.restart()
    cluster.create_database(APP_DB)
    cluster.sql(f"CREATE ROLE {APP_USER} LOGIN PASSWORD '{APP_PASSWORD}'")
    cluster.sql(f"GRANT CREATE ON SCHEMA public TO {APP_USER}", dbname=APP_DB)
    cluster.sql(f"ALTER DATABASE {APP_DB} OWNER TO {APP_USER}")
    cluster.sql("SELECT envelope.create_key(%s)", [KEY], dbname=APP_DB)
    # protect_column is not PUBLIC: an operator grants it to the migration role.
    cluster.sql(f"GRANT EXECUTE ON FUNCTION envelope.protect_column(regclass, name, text, name, name, boolean, "
                f"integer, text) TO {APP_USER}", dbname=APP_DB)
    for privilege in ("encrypt", "decrypt"):
        cluster.sql("SELECT envelope.grant_key(%s, %s, %s)", [KEY, APP_USER, privilege], dbname=APP_DB)
    bouncer = PgBouncer(cluster, tmp_path_factory.mktemp("pgbouncer"))
    bouncer.start()
    try:
        yield AppStack(cluster, bouncer.port, bouncer)
    finally:
        bouncer.stop()


@pytest.fixture(params=["direct", "pgbouncer"])
def route(request, stack) -> Endpoint:
    """Each client test runs twice: straight to PostgreSQL and through pgbouncer
    (transaction pooling)."""
    return stack.endpoint(request.param)


def require_program(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (scripts/setup.sh installs it)")
    return path
