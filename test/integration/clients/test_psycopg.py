"""psycopg2 and psycopg 3 (text and binary formats) against protected columns (docs/orm.md).

Every test runs for three clients -- psycopg2 (Debian python3-psycopg2), psycopg 3 with
text results and parameters, psycopg 3 with `cursor(binary=True)` and every parameter
bound binary (`%b`) -- and two routes: straight to PostgreSQL and through pgbouncer in
transaction pooling mode. The application creates its table itself, an operator protects
the column (`stack.protect`), and the application's SQL is unchanged afterwards.

The configuration a client needs (and nothing else pg_envelope-specific) is in
`Client.__init__` and `register_protected_loaders_*`:
- psycopg 3 through pgbouncer (transaction pooling): `prepare_threshold=None`, because
  pgbouncer 1.x does not carry a server-side prepared statement from one transaction to the
  next and psycopg 3 prepares every query on its 5th execution
  (test_psycopg3_default_prepare_threshold_fails_through_pgbouncer shows what happens).
- psycopg 3 binary results: the driver does not know the protected types' OIDs and returns
  `bytes` for them; registering the text/jsonb/bytea loaders for those OIDs gives str/dict/
  bytes back (test_result_types_before_and_after_registering_loaders pins both).
- jsonb and bytea columns read as their text forms (str) in every client until the loaders
  are registered, as for any type a driver does not know.
"""

from __future__ import annotations

import io

import psycopg
import psycopg.errors
import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras
import pytest
from psycopg.types import TypeInfo
from psycopg.types.json import Jsonb, JsonbBinaryLoader, JsonbLoader
from psycopg.types.string import ByteaBinaryLoader, ByteaLoader, TextBinaryLoader, TextLoader

CLIENTS = ["psycopg2", "psycopg3", "psycopg3-binary"]
SHORT = {"psycopg2": "pg2", "psycopg3": "pg3t", "psycopg3-binary": "pg3b"}

NON_ASCII_EMAIL = "zoë.ærøskøbing@exämple.org"
NON_ASCII_NAME = "Zoë Ærøskøbing 日本語 ✓"


# ---- the configuration a user adds --------------------------------------------------

def register_protected_loaders_psycopg3(conn: psycopg.Connection) -> None:
    """psycopg 3: read envelope.protected_text/_jsonb/_bytea as str/dict/bytes (both formats).
    Without it, binary results of these columns are bytes and text results of the jsonb and
    bytea ones are their text forms."""
    for name, text_loader, binary_loader in (
            ("envelope.protected_text", TextLoader, TextBinaryLoader),
            ("envelope.protected_jsonb", JsonbLoader, JsonbBinaryLoader),
            ("envelope.protected_bytea", ByteaLoader, ByteaBinaryLoader)):
        info = TypeInfo.fetch(conn, name)
        conn.adapters.register_loader(info.oid, text_loader)
        conn.adapters.register_loader(info.oid, binary_loader)


def register_protected_loaders_psycopg2(conn) -> None:
    """psycopg2: read envelope.protected_jsonb as dict and envelope.protected_bytea as
    memoryview, as jsonb and bytea are (protected_text reads as str without anything)."""
    psycopg2.extras.register_json(conn, name="protected_jsonb")  # looked up by pg_type.typname
    with conn.cursor() as cur:
        cur.execute("SELECT 'envelope.protected_bytea'::regtype::oid")
        (oid,) = cur.fetchone()
    psycopg2.extensions.register_type(
        psycopg2.extensions.new_type((oid,), "PROTECTED_BYTEA", psycopg2.BINARY), conn)


# ---- one client, one route ----------------------------------------------------------

class Client:
    """The application's connection. SQL is written with %s placeholders; the binary psycopg 3
    client binds every parameter binary (%b) and asks for binary results."""

    def __init__(self, kind: str, route, *, register_loaders: bool = True):
        self.kind = kind
        self.route = route
        self.binary = kind == "psycopg3-binary"
        if kind == "psycopg2":
            self.conn = psycopg2.connect(route.url, connect_timeout=10)
            self.conn.autocommit = True
            self.errors = psycopg2.errors
        else:
            options = {}
            if route.pooled:
                # The one line psycopg 3 needs behind pgbouncer in transaction pooling mode:
                # never prepare server-side (pgbouncer 1.x hands the next transaction to
                # another server connection, which does not have the statement).
                options["prepare_threshold"] = None
            self.conn = psycopg.connect(route.url, autocommit=True, connect_timeout=10, **options)
            self.errors = psycopg.errors
            if self.binary and register_loaders:
                # Binary results: the driver does not know the protected types' OIDs.
                register_protected_loaders_psycopg3(self.conn)

    @property
    def psycopg3(self) -> bool:
        return self.kind != "psycopg2"

    def sql(self, query: str) -> str:
        return query.replace("%s", "%b") if self.binary else query

    def cursor(self):
        return self.conn.cursor(binary=True) if self.binary else self.conn.cursor()

    def q(self, query: str, params=None, **execute_options) -> list[tuple] | None:
        """Runs one statement; its rows, or None without a result. Sets self.rowcount."""
        with self.cursor() as cur:
            cur.execute(self.sql(query), params, **execute_options)
            self.rowcount = cur.rowcount
            return cur.fetchall() if cur.description is not None else None

    def one(self, query: str, params=None):
        rows = self.q(query, params)
        assert rows is not None and len(rows) == 1, rows
        return rows[0]

    def many(self, query: str, seq) -> None:
        with self.cursor() as cur:
            cur.executemany(self.sql(query), seq)

    def copy_in(self, table: str, columns: list[str], types: list[str], rows: list[tuple]) -> None:
        """COPY table (columns) FROM STDIN: psycopg2 copy_expert (text format), psycopg 3
        Copy.write_row (text format, or FORMAT BINARY for the binary client)."""
        cols = ", ".join(columns)
        if self.kind == "psycopg2":
            data = "".join("\t".join(r"\N" if v is None else v for v in row) + "\n" for row in rows)
            with self.conn.cursor() as cur:
                cur.copy_expert(f"COPY {table} ({cols}) FROM STDIN", io.StringIO(data))
            return
        fmt = " (FORMAT BINARY)" if self.binary else ""
        with self.conn.cursor() as cur, cur.copy(f"COPY {table} ({cols}) FROM STDIN{fmt}") as copy:
            if self.binary:
                copy.set_types(types)
            for row in rows:
                copy.write_row(row)

    def copy_out(self, query: str, types: list[str]) -> list[tuple]:
        """COPY (query) TO STDOUT as the application, parsed into tuples of str/None."""
        if self.kind == "psycopg2":
            buf = io.StringIO()
            with self.conn.cursor() as cur:
                cur.copy_expert(f"COPY ({query}) TO STDOUT", buf)
            return [tuple(None if v == r"\N" else v for v in line.split("\t"))
                    for line in buf.getvalue().splitlines()]
        fmt = " (FORMAT BINARY)" if self.binary else ""
        with self.conn.cursor() as cur, cur.copy(f"COPY ({query}) TO STDOUT{fmt}") as copy:
            if self.binary:
                copy.set_types(types)
            return list(copy.rows())

    def close(self) -> None:
        self.conn.close()


@pytest.fixture(params=CLIENTS)
def client(request, route):
    c = Client(request.param, route)
    yield c
    c.close()


def people_table(client: Client, stack, prefix: str) -> str:
    """The application's table, created as the application's migration would, then the
    operator's one call protecting the email column. One table per test, client and route
    (the stack is shared by the module)."""
    table = f"{prefix}_{SHORT[client.kind]}_{client.route.name[:3]}"
    client.q(f"CREATE TABLE {table} (id bigserial PRIMARY KEY, email text UNIQUE, name text)")
    stack.protect(table, "email")
    return table


def raw_email(stack, table: str, row_id: int) -> str | None:
    """The stored email as the superuser (no grant on the key) reads it."""
    return stack.raw(f"SELECT email::text FROM {table} WHERE id = %s", [row_id])[0][0]


# ---- tests ----------------------------------------------------------------------------

def test_inserts_reads_nulls_and_non_ascii(stack, client):
    t = people_table(client, stack, "people_ins")
    # single row, RETURNING the protected column gives the plaintext
    a_id, a_email = client.one(f"INSERT INTO {t} (email, name) VALUES (%s, %s) RETURNING id, email",
                               ["ada@example.org", "Ada"])
    assert a_email == "ada@example.org"
    # executemany
    client.many(f"INSERT INTO {t} (email, name) VALUES (%s, %s)",
                [("bob@example.org", "Bob"), ("cy@example.org", "Cy"), ("dee@example.org", "Dee")])
    # multi-row VALUES
    rows = client.q(f"INSERT INTO {t} (email, name) VALUES (%s, %s), (%s, %s), (%s, %s) RETURNING email",
                    ["eve@example.org", "Eve", None, "Nobody", NON_ASCII_EMAIL, NON_ASCII_NAME])
    assert rows == [("eve@example.org",), (None,), (NON_ASCII_EMAIL,)]
    # INSERT ... SELECT from a plain staging table, and from the protected table itself into
    # a second protected table (archive): the stored values are re-bound, never copied as is
    staging = f"{t}_stage"
    client.q(f"CREATE TABLE {staging} (email text, name text)")
    client.q(f"INSERT INTO {staging} VALUES (%s, %s), (%s, %s)",
             ["fay@example.org", "Fay", "gus@example.org", "Gus"])
    client.q(f"INSERT INTO {t} (email, name) SELECT email, name FROM {staging} ORDER BY email")
    assert client.rowcount == 2
    archive = f"{t}_arch"
    client.q(f"CREATE TABLE {archive} (id bigint PRIMARY KEY, email text UNIQUE, name text)")
    stack.protect(archive, "email")
    client.q(f"INSERT INTO {archive} (id, email, name) SELECT id, email, name FROM {t} WHERE email IS NOT NULL")
    assert client.rowcount == 8

    plaintexts = ["ada@example.org", "bob@example.org", "cy@example.org", "dee@example.org",
                  "eve@example.org", NON_ASCII_EMAIL, "fay@example.org", "gus@example.org"]
    # get by primary key
    assert client.one(f"SELECT id, email, name FROM {t} WHERE id = %s", [a_id]) == (a_id, "ada@example.org", "Ada")
    # filter by equality on the protected column (blind index), in both tables
    for email in plaintexts:
        (row,) = client.q(f"SELECT email, name FROM {t} WHERE email = %s", [email])
        assert row[0] == email
        assert client.q(f"SELECT email FROM {archive} WHERE email = %s", [email]) == [(email,)]
    assert client.q(f"SELECT name FROM {t} WHERE email = %s", [NON_ASCII_EMAIL]) == [(NON_ASCII_NAME,)]
    assert client.q(f"SELECT id FROM {t} WHERE email = %s", ["nobody@example.org"]) == []
    # everything the application wrote reads back, NULL stays NULL
    assert sorted(e for (e,) in client.q(f"SELECT email FROM {t} WHERE email IS NOT NULL")) == sorted(plaintexts)
    assert client.q(f"SELECT name FROM {t} WHERE email IS NULL") == [("Nobody",)]
    assert stack.raw(f"SELECT name FROM {t} WHERE email IS NULL") == [("Nobody",)]
    assert client.one(f"SELECT count(*) FROM {t}") == (9,)
    # ciphertext at rest, different in the archive than in the source table (other column)
    stack.assert_sealed(t, "email", plaintexts + ["example.org"])
    stack.assert_sealed(archive, "email", plaintexts + ["example.org"])
    assert stack.raw(f"SELECT count(*) FROM {t} a JOIN {archive} b USING (id) WHERE a.email::text = b.email::text") \
        == [(0,)]


def test_updates(stack, client):
    t = people_table(client, stack, "people_upd")
    (row_id,) = client.one(f"INSERT INTO {t} (email, name) VALUES (%s, %s) RETURNING id", ["ann@example.org", "Ann"])
    sealed = raw_email(stack, t, row_id)
    assert sealed.startswith("penv1:")

    # another column: the stored ciphertext is untouched (no re-encryption)
    client.q(f"UPDATE {t} SET name = %s WHERE id = %s", ["Ann B.", row_id])
    assert client.rowcount == 1
    assert raw_email(stack, t, row_id) == sealed
    client.q(f"UPDATE {t} SET name = name || %s WHERE email = %s", ["!", "ann@example.org"])
    assert client.rowcount == 1
    assert raw_email(stack, t, row_id) == sealed
    assert client.one(f"SELECT email, name FROM {t} WHERE id = %s", [row_id]) == ("ann@example.org", "Ann B.!")

    # the protected column itself
    assert client.one(f"UPDATE {t} SET email = %s WHERE email = %s RETURNING email",
                      [NON_ASCII_EMAIL, "ann@example.org"]) == (NON_ASCII_EMAIL,)
    resealed = raw_email(stack, t, row_id)
    assert resealed.startswith("penv1:") and resealed != sealed
    assert client.q(f"SELECT id FROM {t} WHERE email = %s", ["ann@example.org"]) == []
    assert client.q(f"SELECT id, name FROM {t} WHERE email = %s", [NON_ASCII_EMAIL]) == [(row_id, "Ann B.!")]
    # to NULL and back
    client.q(f"UPDATE {t} SET email = NULL WHERE id = %s", [row_id])
    assert client.one(f"SELECT email FROM {t} WHERE id = %s", [row_id]) == (None,)
    assert raw_email(stack, t, row_id) is None
    client.q(f"UPDATE {t} SET email = %s WHERE id = %s", ["ann@example.org", row_id])
    assert client.one(f"SELECT email FROM {t} WHERE id = %s", [row_id]) == ("ann@example.org",)
    stack.assert_sealed(t, "email", ["ann@example.org", NON_ASCII_EMAIL])


def test_upserts(stack, client):
    t = people_table(client, stack, "people_ups")
    (a_id,) = client.one(f"INSERT INTO {t} (email, name) VALUES (%s, %s) RETURNING id", ["a@example.org", "Old"])
    (b_id,) = client.one(f"INSERT INTO {t} (email, name) VALUES (%s, %s) RETURNING id", ["b@example.org", "Bee"])
    sealed_a = raw_email(stack, t, a_id)

    # ON CONFLICT (email) DO UPDATE SET name = EXCLUDED.name: the row keeps its id and email
    # (ciphertext untouched), the name is the new one
    assert client.q(f"INSERT INTO {t} (email, name) VALUES (%s, %s) "
                    f"ON CONFLICT (email) DO UPDATE SET name = EXCLUDED.name RETURNING id, email, name",
                    ["a@example.org", "New"]) == [(a_id, "a@example.org", "New")]
    assert raw_email(stack, t, a_id) == sealed_a
    # ... and inserts when there is no conflict
    (c_id, c_email) = client.one(f"INSERT INTO {t} (email, name) VALUES (%s, %s) "
                                 f"ON CONFLICT (email) DO UPDATE SET name = EXCLUDED.name RETURNING id, email",
                                 ["c@example.org", "Cee"])
    assert c_email == "c@example.org" and c_id not in (a_id, b_id)

    # ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email: the new value is stored for
    # this row and readable afterwards, by pk and by equality
    assert client.q(f"INSERT INTO {t} (id, email, name) VALUES (%s, %s, %s) "
                    f"ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email RETURNING id, email, name",
                    [b_id, "b2@example.org", "ignored"]) == [(b_id, "b2@example.org", "Bee")]
    assert raw_email(stack, t, b_id).startswith("penv1:")
    assert client.one(f"SELECT email, name FROM {t} WHERE id = %s", [b_id]) == ("b2@example.org", "Bee")
    assert client.q(f"SELECT id FROM {t} WHERE email = %s", ["b2@example.org"]) == [(b_id,)]
    assert client.q(f"SELECT id FROM {t} WHERE email = %s", ["b@example.org"]) == []

    # ON CONFLICT DO NOTHING (any constraint, and the email one): nothing changes
    assert client.q(f"INSERT INTO {t} (email, name) VALUES (%s, %s) ON CONFLICT DO NOTHING RETURNING id",
                    ["a@example.org", "Intruder"]) == []
    assert client.q(f"INSERT INTO {t} (email, name) VALUES (%s, %s) ON CONFLICT (email) DO NOTHING RETURNING id",
                    ["c@example.org", "Intruder"]) == []
    assert client.q(f"INSERT INTO {t} (email, name) VALUES (%s, %s) ON CONFLICT (email) DO NOTHING RETURNING email",
                    ["d@example.org", "Dee"]) == [("d@example.org",)]
    assert raw_email(stack, t, a_id) == sealed_a

    # nothing lost
    assert sorted(client.q(f"SELECT email, name FROM {t}")) == [
        ("a@example.org", "New"), ("b2@example.org", "Bee"), ("c@example.org", "Cee"), ("d@example.org", "Dee")]
    stack.assert_sealed(t, "email", ["a@example.org", "b@example.org", "b2@example.org", "c@example.org",
                                     "d@example.org"])


def test_unique_violation_and_delete(stack, client):
    t = people_table(client, stack, "people_del")
    client.many(f"INSERT INTO {t} (email, name) VALUES (%s, %s)",
                [("u1@example.org", "One"), ("u2@example.org", "Two"), (NON_ASCII_EMAIL, "Three")])
    # UNIQUE on the protected column is enforced (blind index): INSERT and UPDATE
    with pytest.raises(client.errors.UniqueViolation):
        client.q(f"INSERT INTO {t} (email, name) VALUES (%s, %s)", ["u1@example.org", "Dup"])
    with pytest.raises(client.errors.UniqueViolation):
        client.q(f"INSERT INTO {t} (email, name) VALUES (%s, %s)", [NON_ASCII_EMAIL, "Dup"])
    with pytest.raises(client.errors.UniqueViolation):
        client.q(f"UPDATE {t} SET email = %s WHERE email = %s", ["u1@example.org", "u2@example.org"])
    # the connection is usable afterwards and nothing was written
    assert client.one(f"SELECT count(*) FROM {t}") == (3,)
    # several NULLs are not duplicates
    client.many(f"INSERT INTO {t} (email, name) VALUES (%s, %s)", [(None, "N1"), (None, "N2")])

    # delete by email
    client.q(f"DELETE FROM {t} WHERE email = %s", ["u1@example.org"])
    assert client.rowcount == 1
    assert client.q(f"DELETE FROM {t} WHERE email = %s RETURNING email, name", [NON_ASCII_EMAIL]) \
        == [(NON_ASCII_EMAIL, "Three")]
    assert client.q(f"SELECT id FROM {t} WHERE email = %s", ["u1@example.org"]) == []
    assert sorted(client.q(f"SELECT email, name FROM {t}"), key=lambda r: r[1]) == [
        (None, "N1"), (None, "N2"), ("u2@example.org", "Two")]
    # the deleted address can be used again
    client.q(f"INSERT INTO {t} (email, name) VALUES (%s, %s)", ["u1@example.org", "Again"])
    assert client.q(f"SELECT name FROM {t} WHERE email = %s", ["u1@example.org"]) == [("Again",)]
    stack.assert_sealed(t, "email", ["u1@example.org", "u2@example.org"])


def test_prepared_statements_and_index_use(stack, client):
    t = people_table(client, stack, "people_prep")
    emails = [f"p{i}@example.org" for i in range(8)]
    client.many(f"INSERT INTO {t} (email, name) VALUES (%s, %s)", [(e, e.upper()) for e in emails])
    lookup = f"SELECT email, name FROM {t} WHERE email = %s"

    # the equality search goes through an ordinary btree index (the blind one)
    if client.psycopg3:
        with client.conn.transaction():
            client.q("SET LOCAL enable_seqscan = off")
            plan = "\n".join(r[0] for r in client.q(f"EXPLAIN {lookup}", [emails[0]]))
    else:
        client.q("BEGIN")
        client.q("SET LOCAL enable_seqscan = off")
        plan = "\n".join(r[0] for r in client.q(f"EXPLAIN {lookup}", [emails[0]]))
        client.q("COMMIT")
    assert f"Index Scan using {t}_email_key" in plan, plan

    if client.kind == "psycopg2":
        # psycopg2 has no protocol-level prepare: SQL PREPARE/EXECUTE, in one transaction so
        # that it also holds through pgbouncer's transaction pooling
        client.q("BEGIN")
        client.q(f"PREPARE by_email (text) AS SELECT email, name FROM {t} WHERE email = $1")
        for e in emails:
            assert client.q("EXECUTE by_email (%s)", [e]) == [(e, e.upper())]
        client.q("DEALLOCATE by_email")
        client.q("COMMIT")
    elif not client.route.pooled:
        # psycopg 3 direct: an explicitly prepared statement, then the automatic one
        # (prepare_threshold, 5 by default)
        for e in emails:
            assert client.q(lookup, [e], prepare=True) == [(e, e.upper())]
        auto = f"SELECT name FROM {t} WHERE email = %s"
        for e in emails:
            assert client.q(auto, [e]) == [(e.upper(),)]
        prepared = dict(client.q("SELECT statement, parameter_types::text FROM pg_prepared_statements"))
        param = "{text}" if client.binary else "{envelope.blind_text}"  # %b sends text, %s lets the server infer
        assert prepared.get(lookup.replace("%s", "$1")) == param, prepared
        assert prepared.get(auto.replace("%s", "$1")) == param, prepared
    else:
        # psycopg 3 through pgbouncer: prepare_threshold=None (see Client), so nothing is
        # prepared server-side even past the threshold or with prepare=True, and two
        # connections sharing the pool's server connections interleave without error
        assert client.conn.prepare_threshold is None
        other = Client(client.kind, client.route)
        try:
            for _ in range(2):
                for e in emails:
                    assert client.q(lookup, [e], prepare=True) == [(e, e.upper())]
                    assert other.q(lookup, [e]) == [(e, e.upper())]
        finally:
            other.close()
    stack.assert_sealed(t, "email", emails)


def test_psycopg3_default_prepare_threshold_fails_through_pgbouncer(stack):
    """Why Client sets prepare_threshold=None behind pgbouncer: with psycopg 3's default, two
    application connections sharing pgbouncer's server connections fail once their queries
    get prepared (nothing to do with protected columns; this is pgbouncer 1.x < 1.21)."""
    route = stack.pgbouncer
    setup = Client("psycopg2", route)
    t = "people_prepfail"
    setup.q(f"CREATE TABLE {t} (id bigserial PRIMARY KEY, email text UNIQUE, name text)")
    stack.protect(t, "email")
    setup.q(f"INSERT INTO {t} (email, name) VALUES (%s, %s)", ["x@example.org", "X"])
    setup.close()
    a = psycopg.connect(route.url, autocommit=True)  # default prepare_threshold=5
    b = psycopg.connect(route.url, autocommit=True)
    failures = []
    try:
        for _ in range(10):
            for conn in (a, b):
                try:
                    assert conn.execute(f"SELECT name FROM {t} WHERE email = %s",
                                        ["x@example.org"]).fetchall() == [("X",)]
                except (psycopg.errors.DuplicatePreparedStatement,
                        psycopg.errors.InvalidSqlStatementName) as e:
                    failures.append(type(e).__name__)
    finally:
        a.close()
        b.close()
    assert failures, "pgbouncer kept server-side prepared statements: prepare_threshold=None may be unneeded"


def test_copy_from_and_to(stack, client):
    t = people_table(client, stack, "people_copy")
    rows = [("c1@example.org", "C1"), (NON_ASCII_EMAIL, NON_ASCII_NAME), (None, "no email"), ("c4@example.org", None)]
    client.copy_in(t, ["email", "name"], ["text", "text"], rows)
    plaintexts = ["c1@example.org", NON_ASCII_EMAIL, "c4@example.org"]
    stack.assert_sealed(t, "email", plaintexts)
    # the blind index was filled by COPY too
    assert client.q(f"SELECT name FROM {t} WHERE email = %s", [NON_ASCII_EMAIL]) == [(NON_ASCII_NAME,)]
    with pytest.raises(client.errors.UniqueViolation):
        client.copy_in(t, ["email", "name"], ["text", "text"], [("c1@example.org", "dup")])

    # COPY TO as the application: plaintext
    copied = client.copy_out(f"SELECT email, name FROM {t} ORDER BY id", ["text", "text"])
    assert copied == rows
    # COPY TO as the superuser (psql): ciphertext, NULL stays NULL
    out = stack.cluster.psql("app", "-c", f"COPY (SELECT email FROM {t} ORDER BY id) TO STDOUT").stdout.decode()
    lines = out.splitlines()
    assert len(lines) == 4 and lines[2] == r"\N"
    assert all(line.startswith("penv1:") for i, line in enumerate(lines) if i != 2), lines
    for p in plaintexts:
        assert p not in out

    # the superuser's ciphertext loads back through the application's COPY (a restore):
    # kept as ciphertext (no double encryption) and readable as before
    client.q(f"DELETE FROM {t}")
    client.copy_in(t, ["email", "name"], ["text", "text"],
                   [(None if line == r"\N" else line, name) for line, (_, name) in zip(lines, rows)])
    assert client.copy_out(f"SELECT email, name FROM {t} ORDER BY id", ["text", "text"]) == rows
    assert client.q(f"SELECT name FROM {t} WHERE email = %s", ["c1@example.org"]) == [("C1",)]
    stack.assert_sealed(t, "email", plaintexts)


def test_result_types_before_and_after_registering_loaders(stack, client):
    """What each driver returns for the protected types' OIDs, which it does not know: without
    configuration protected_text is str except in psycopg 3 binary (bytes); protected_jsonb and
    protected_bytea come back as their text forms (or, binary, as raw wire bytes). After
    registering loaders (register_protected_loaders_*) they read as str, dict and bytes."""
    t = f"types_{SHORT[client.kind]}_{client.route.name[:3]}"
    plain = Client(client.kind, client.route, register_loaders=False)
    try:
        plain.q(f"CREATE TABLE {t} (id bigserial PRIMARY KEY, email text, doc jsonb, blob bytea)")
        for col in ("email", "doc", "blob"):
            stack.protect(t, col)
        doc = {"ssn": "123-45-6789", "tags": ["é", 1]}
        blob = b"\x00\xffsecret-bytes"
        json_param = psycopg2.extras.Json(doc) if client.kind == "psycopg2" else Jsonb(doc)
        plain.q(f"INSERT INTO {t} (email, doc, blob) VALUES (%s, %s, %s)", [NON_ASCII_EMAIL, json_param, blob])

        (email, got_doc, got_blob) = plain.one(f"SELECT email, doc, blob FROM {t}")
        if plain.binary:
            assert email == NON_ASCII_EMAIL.encode()                 # bytes, UTF-8
            assert got_doc[:1] == b"\x01"                           # jsonb binary format: version 1
            assert got_doc[1:].decode() == '{"ssn": "123-45-6789", "tags": ["é", 1]}'
            assert got_blob == blob                                  # raw bytes
        else:
            assert email == NON_ASCII_EMAIL                          # str
            assert got_doc == '{"ssn": "123-45-6789", "tags": ["é", 1]}'  # str, not dict
            assert got_blob == "\\x" + blob.hex()                    # str, bytea hex form

        if plain.kind == "psycopg2":
            register_protected_loaders_psycopg2(plain.conn)
        else:
            register_protected_loaders_psycopg3(plain.conn)
        (email, got_doc, got_blob) = plain.one(f"SELECT email, doc, blob FROM {t}")
        assert email == NON_ASCII_EMAIL and got_doc == doc and bytes(got_blob) == blob
    finally:
        plain.close()
    stack.assert_sealed(t, "email", [NON_ASCII_EMAIL])
    stack.assert_sealed(t, "doc", ["123-45-6789"])
    stack.assert_sealed(t, "blob", ["secret-bytes"])


def test_jsonb_and_bytea_parameters_without_casts(stack, client):
    """Issue item 5: psycopg2 Json / psycopg 3 Jsonb and bytes parameters, bound without any
    cast in the SQL, reach protected jsonb and bytea columns: insert, update, upsert on a
    UNIQUE bytea column, equality search, RETURNING."""
    t = f"docs_{SHORT[client.kind]}_{client.route.name[:3]}"
    if client.kind == "psycopg2":
        J = psycopg2.extras.Json
        register_protected_loaders_psycopg2(client.conn)
    else:
        J = Jsonb
        register_protected_loaders_psycopg3(client.conn)
    client.q(f"CREATE TABLE {t} (id bigserial PRIMARY KEY, doc jsonb, blob bytea UNIQUE)")
    stack.protect(t, "doc")
    stack.protect(t, "blob")
    d1 = {"ssn": "111-11-1111", "name": "Zoë"}
    d2 = {"ssn": "222-22-2222", "nested": {"a": [1, 2, None]}}
    b1, b2 = b"\x00\x01secret-one\xff", b"secret-two"

    (id1, got_doc, got_blob) = client.one(f"INSERT INTO {t} (doc, blob) VALUES (%s, %s) RETURNING id, doc, blob",
                                          [J(d1), b1])
    assert got_doc == d1 and bytes(got_blob) == b1
    client.many(f"INSERT INTO {t} (doc, blob) VALUES (%s, %s)", [(J(d2), b2), (None, None)])

    # equality on jsonb is jsonb equality (key order and whitespace do not matter), on bytea
    # the exact bytes
    assert client.q(f"SELECT id FROM {t} WHERE doc = %s", [J({"name": "Zoë", "ssn": "111-11-1111"})]) == [(id1,)]
    assert client.q(f"SELECT id FROM {t} WHERE blob = %s", [b1]) == [(id1,)]
    assert client.q(f"SELECT id FROM {t} WHERE blob = %s", [b1 + b"x"]) == []
    (id2,) = client.one(f"SELECT id FROM {t} WHERE doc = %s AND blob = %s", [J(d2), b2])

    # UPDATE with typed parameters
    d2b = {**d2, "ssn": "333-33-3333"}
    assert client.q(f"UPDATE {t} SET doc = %s WHERE blob = %s RETURNING doc", [J(d2b), b2]) == [(d2b,)]
    # UNIQUE on the bytea column, and an upsert through it with EXCLUDED
    with pytest.raises(client.errors.UniqueViolation):
        client.q(f"INSERT INTO {t} (doc, blob) VALUES (%s, %s)", [J({}), b1])
    assert client.q(f"INSERT INTO {t} (doc, blob) VALUES (%s, %s) "
                    f"ON CONFLICT (blob) DO UPDATE SET doc = EXCLUDED.doc RETURNING id, doc",
                    [J({"ssn": "444-44-4444"}), b1]) == [(id1, {"ssn": "444-44-4444"})]

    rows = sorted(client.q(f"SELECT id, doc, blob FROM {t}"))
    assert [(i, d, None if b is None else bytes(b)) for i, d, b in rows] == [
        (id1, {"ssn": "444-44-4444"}, b1), (id2, d2b, b2), (rows[2][0], None, None)]
    stack.assert_sealed(t, "doc", ["111-11-1111", "222-22-2222", "333-33-3333", "444-44-4444", "Zoë"])
    stack.assert_sealed(t, "blob", ["secret-one", "secret-two"])
