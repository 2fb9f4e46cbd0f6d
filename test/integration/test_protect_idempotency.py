"""Protected columns are idempotent by construction (issue 12, item 2), and who reads plaintext.

One table `people` with five protected columns: `ssn` text bound to the row (context_column
=> id), `email` text with a UNIQUE constraint (blind index), `photo` bytea bound to the row,
`profile` jsonb, and `tsecret` text under a per-row key (key 'tenant_{}', key_column =>
tenant_id, blind_key). Every plaintext this module generates carries a marker, so that a
dump, a COPY or a replica holding plaintext is found by a byte search.

1. pg_dump as the superuser (who holds no grant): plain and custom format, full and
   --data-only. The dumps hold no plaintext, and each protected column's value in them is
   exactly the "penv1:" form the superuser reads. Restored (a) whole into fresh databases,
   in the same cluster and in another cluster with the same master key: the protection
   comes back (trigger ENABLE ALWAYS, CHECK, blind UNIQUE index, registry) and the stored
   bytes are the source's; (b) data-only into a database whose table is already
   protected: with the source's protection (a --schema-only restore) the bytes are kept
   as they are; with the target's own protect_column() calls (new protection ids) the
   trigger re-binds every value once, to the target's column, never encrypting a
   ciphertext. In every case: nothing unsealed, UNIQUE enforced, equality search through
   the blind index, a granted role reads the original plaintexts.
2. Logical replication (text and binary), publisher and subscriber with the same master
   key: a subscriber table protected as on the publisher receives the publisher's sealed
   bytes unchanged; one protected by its own protect_column() re-binds on apply (the
   trigger is ENABLE ALWAYS); a subscriber table with plain text columns receives the
   "penv1:" form, never plaintext.
3. Who reads what: a role without a grant reads "penv1:" (text and binary COPY), never an
   error; so does a superuser until envelope.grant_key(key, 'postgres', 'decrypt'), and
   only for the keys granted; COPY TO as the superuser writes ciphertext, and COPY FROM of
   it keeps the values (byte for byte into the same table, re-bound into another one).
"""
from __future__ import annotations

import base64
import contextlib
import io
import json
import random
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest

from pgcluster import Cluster, ClusterError, envelope_header, key_spellings, new_master_key, pg_error

REPLICATION = {"wal_level": "logical", "max_wal_senders": 10, "max_replication_slots": 10,
               "max_connections": 40}
SUBSCRIBER = {"max_logical_replication_workers": 8, "max_worker_processes": 16,
              "max_sync_workers_per_subscription": 2,
              "wal_retrieve_retry_interval": "200ms"}  # the launcher starts one worker per interval
READER = "reader"      # holds decrypt on every key the table uses
OUTSIDER = "outsider"  # may SELECT the table, holds no key privilege
PUBLIC_CANARY = "public-canary-plain-column-7f3a"
PROTECTED = ("email", "ssn", "photo", "profile", "tsecret")
TYPE_CODE = {"email": 1, "ssn": 1, "photo": 2, "profile": 3, "tsecret": 1}
ROWS = 36
LARGE_ID = 7  # values stored out of line (TOAST)

TABLE_DDL = """CREATE TABLE {tbl} (id int PRIMARY KEY, tenant_id int NOT NULL, email text UNIQUE,
                 note text NOT NULL, ssn text, photo bytea, profile jsonb, tsecret text)"""
PROTECT = [
    "SELECT envelope.protect_column('{tbl}', 'ssn', 'pk', context_column => 'id')",
    "SELECT envelope.protect_column('{tbl}', 'email', 'pk')",
    "SELECT envelope.protect_column('{tbl}', 'photo', 'pk', context_column => 'id')",
    "SELECT envelope.protect_column('{tbl}', 'profile', 'pk')",
    "SELECT envelope.protect_column('{tbl}', 'tsecret', 'tenant_{{}}', key_column => 'tenant_id', "
    "blind_key => 'tblind')",
]
KEYS = "SELECT envelope.create_key('pk'), envelope.create_key('tenant_1'), envelope.create_key('tenant_2'), " \
       "envelope.create_key('tblind')"
GRANTS = [f"SELECT envelope.grant_key('pk', '{READER}', 'decrypt')",
          f"SELECT envelope.grant_key('tenant_*', '{READER}', 'decrypt')",
          f"SELECT envelope.grant_key('tblind', '{READER}', 'decrypt')"]
STORED = "SELECT id, email::text, ssn::text, photo::text, profile::text, tsecret::text FROM {tbl} ORDER BY id"
PLAIN = "SELECT id, tenant_id, note, email, ssn, photo, profile, tsecret FROM {tbl} ORDER BY id"


# ---- generated rows ---------------------------------------------------------------------

MISSING = object()


@dataclass
class Row:
    id: int
    tenant_id: int
    email: str | None
    ssn: str | None
    photo: bytes | None
    profile: object  # JSON value, MISSING for SQL NULL
    tsecret: str | None

    @property
    def note(self) -> str:
        return f"{PUBLIC_CANARY} {self.id}"

    def plain(self) -> tuple:
        """What a granted role reads (PLAIN query): bytea in hex output, jsonb as JSON."""
        return (self.id, self.tenant_id, self.note, self.email, self.ssn,
                None if self.photo is None else "\\x" + self.photo.hex(),
                None if self.profile is MISSING else self.profile, self.tsecret)


def make_rows(first: int = 1, count: int = ROWS, seed: int = 4242) -> list[Row]:
    rng = random.Random(seed)
    specials = ["tab\there, newline\nthere, backslash \\ and \\N", "Grüße – 秘密 🔐 e\u0301", "",
                "quote ' double \" percent %"]
    rows = []
    for i in range(first, first + count):
        m = f"{i:04d}"
        ssn = f"SSNMARK-{m} {specials[i % len(specials)]} {rng.randrange(10**8):08d}"
        photo = b"BYTEAMARK-" + m.encode() + b"\x00\xff\x01" + rng.randbytes(rng.randrange(0, 40))
        profile: object = {"secret": f"JSONMARK-{m}", "n": i, "nested": [True, None, {"x": f"JSONMARK-{m}"}]}
        tsecret = f"TENANTMARK-{m} for tenant {1 + i % 2}"
        if i == LARGE_ID:
            ssn = f"SSNMARK-{m} " + "".join(rng.choice("abcdefghij KLMNOP") for _ in range(30_000))
            photo = b"BYTEAMARK-" + m.encode() + rng.randbytes(30_000)
            profile = {"secret": f"JSONMARK-{m}", "blob": "q" * 20_000}
        if i % 5 == 0:
            ssn = None
        if i % 6 == 0:
            photo = None
        if i % 7 == 0:
            profile = MISSING
        if i % 11 == 0:
            tsecret = None
        if i % 13 == 0:
            profile = [f"JSONMARK-{m}", 1.5, {}]
        rows.append(Row(i, 1 + i % 2, None if i % 9 == 0 else f"user.EMAILMARK-{m}@example.org",
                        ssn, photo, profile, tsecret))
    return rows


def text_needles(rows: list[Row]) -> list[str]:
    needles = []
    for r in rows:
        m = f"{r.id:04d}"
        needles += [f"SSNMARK-{m}", f"EMAILMARK-{m}", f"JSONMARK-{m}", f"TENANTMARK-{m}"]
    return needles


def byte_needles(rows: list[Row]) -> list[bytes]:
    out = []
    for r in rows:
        if r.photo is not None:
            out += [r.photo[:16], r.photo[:16].hex().encode()]
    return out


def insert_rows(conn, rows: list[Row], tbl: str = "people") -> None:
    with conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO {tbl} (id, tenant_id, email, note, ssn, photo, profile, tsecret) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            [(r.id, r.tenant_id, r.email, r.note, r.ssn, None if r.photo is None else psycopg2.Binary(r.photo),
              None if r.profile is MISSING else json.dumps(r.profile), r.tsecret) for r in rows])


@contextlib.contextmanager
def session(cluster: Cluster, db: str, user: str | None = None):
    """A connection closed on exit (Cluster.connect's are closed only when the cluster stops)."""
    conn = cluster.connect(db, user)
    try:
        yield conn
    finally:
        conn.close()
        cluster._connections.remove(conn)


# ---- the stored form ----------------------------------------------------------------------

@dataclass
class Sealed:
    type: int
    protection_id: int
    blind_key_id: int
    blind_len: int
    key_name: str
    context: str | None
    ciphertext_len: int  # AES-GCM: the plaintext's length


def sealed(text_form: str) -> Sealed:
    """Parses the "penv1:" form (include/pg_envelope/protected_format.hpp) without decrypting."""
    assert text_form.startswith("penv1:"), "not a sealed value"
    raw = base64.b64decode(text_form[6:], validate=True)
    assert raw[0] == 0 and raw[1] == 1
    type_, pid, bkid, blen = raw[2], *struct.unpack(">II", raw[3:11]), raw[11]
    p = 12 + blen
    klen = raw[p]
    key = raw[p + 1:p + 1 + klen].decode()
    p += 1 + klen
    has_ctx = raw[p]
    clen = struct.unpack(">H", raw[p + 1:p + 3])[0]
    ctx = raw[p + 3:p + 3 + clen].decode() if has_ctx else None
    env = raw[p + 3 + clen:]
    return Sealed(type_, pid, bkid, blen, key, ctx, len(env) - envelope_header(env)["header_len"] - 16)


def stored(cluster: Cluster, db: str, tbl: str = "people") -> dict[int, tuple]:
    """Each row's protected values as the superuser (no grant) reads them: the penv1: form."""
    return {r[0]: tuple(r[1:]) for r in cluster.sql(STORED.format(tbl=tbl), dbname=db)}


def protection_ids(cluster: Cluster, db: str, tbl: str = "people") -> dict[str, int]:
    return dict(cluster.sql("SELECT col::text, protection_id FROM envelope.protected_column "
                            "WHERE tbl = %s::regclass", (tbl,), dbname=db))


def read_as(cluster: Cluster, db: str, user: str, tbl: str = "people") -> list[tuple]:
    rows = cluster.sql(PLAIN.format(tbl=tbl), dbname=db, user=user)
    return [(*r[:6], None if r[6] is None else json.loads(r[6]), r[7]) for r in rows]


def plaintext_bytes(col: str, r: Row, profile_text: str | None) -> bytes | None:
    """The plaintext a column's ciphertext encrypts (jsonb: its canonical text, as read)."""
    if col == "photo":
        return r.photo
    if col == "profile":
        return None if profile_text is None else profile_text.encode()
    v = {"email": r.email, "ssn": r.ssn, "tsecret": r.tsecret}[col]
    return None if v is None else v.encode()


def check_bindings(values: dict[int, tuple], rows: list[Row], pids: dict[str, int],
                   profile_texts: dict[int, str | None]) -> None:
    """Every value is sealed once (ciphertext as long as the plaintext: never a ciphertext
    encrypted again), for the given column, the row's key and the row's context."""
    by_id = {r.id: r for r in rows}
    assert sorted(values) == sorted(by_id)
    for rid, vals in values.items():
        r = by_id[rid]
        for col, v in zip(PROTECTED, vals):
            plain = plaintext_bytes(col, r, profile_texts[rid])
            if plain is None:
                assert v is None, f"row {rid}.{col}: NULL became a value"
                continue
            s = sealed(v)
            where = f"row {rid}.{col}"
            assert s.type == TYPE_CODE[col], where
            assert s.protection_id == pids[col], f"{where} is sealed for another column"
            assert s.ciphertext_len == len(plain), f"{where}: ciphertext of {s.ciphertext_len} bytes for " \
                                                   f"{len(plain)} bytes of plaintext (encrypted twice?)"
            assert s.key_name == ("tenant_%d" % r.tenant_id if col == "tsecret" else "pk"), where
            assert s.context == (str(rid) if col in ("ssn", "photo") else None), where
            assert s.blind_len == 16, where


def profile_texts_of(cluster: Cluster, db: str, tbl: str = "people") -> dict[int, str | None]:
    """The canonical jsonb text of each row's profile, as the granted reader reads it."""
    return dict(cluster.sql(f"SELECT id, profile::text FROM {tbl}", dbname=db, user=READER))


def assert_nothing_unsealed(cluster: Cluster, db: str, tbl: str = "people") -> None:
    for col in PROTECTED:
        n = cluster.scalar(f"SELECT count(*) FROM {tbl} WHERE {col} IS NOT NULL AND NOT envelope.is_sealed({col})",
                           dbname=db)
        assert n == 0, f"{db}: {n} values of {tbl}.{col} are plaintext"


def assert_search_and_unique(cluster: Cluster, db: str, rows: list[Row], tbl: str = "people") -> None:
    """Equality search by plaintext (through the blind index), and UNIQUE on email, both
    for a plaintext and for a copied sealed value."""
    some = [r for r in rows if r.email is not None][:3] + [r for r in rows if r.email is not None][-2:]
    with session(cluster, db, READER) as conn, conn.cursor() as cur:
        for r in some:
            cur.execute(f"SELECT id FROM {tbl} WHERE email = %s", (r.email,))
            assert cur.fetchall() == [(r.id,)], f"{db}: search by email did not find row {r.id}"
        cur.execute(f"SELECT id FROM {tbl} WHERE email = 'nobody@example.org'")
        assert cur.fetchall() == []
        t = next(r for r in rows if r.tsecret is not None)
        cur.execute(f"SELECT id FROM {tbl} WHERE tsecret = %s", (t.tsecret,))
        assert cur.fetchall() == [(t.id,)]
        cur.execute("SET enable_seqscan = off")
        cur.execute(f"EXPLAIN SELECT id FROM {tbl} WHERE email = %s", (some[0].email,))
        plan = "\n".join(x[0] for x in cur.fetchall())
        assert f"{tbl}_email_key" in plan, plan
    dup = some[1]
    for q, params in ((f"INSERT INTO {tbl} (id, tenant_id, email, note) VALUES (100000, 1, %s, 'dup')", (dup.email,)),
                      (f"INSERT INTO {tbl} (id, tenant_id, email, note) SELECT 100001, 1, email, 'dup' "
                       f"FROM {tbl} WHERE id = %s", (dup.id,))):
        with pytest.raises(psycopg2.Error) as e:
            cluster.sql(q, params, dbname=db)
        err = pg_error(e)
        assert err["sqlstate"] == "23505", err
        assert dup.email not in err["text"], "a unique violation's message shows the plaintext"


def assert_protection_objects(cluster: Cluster, db: str, tbl: str = "people") -> dict[str, int]:
    """The column's trigger (ENABLE ALWAYS), its validated CHECK, the registry row, and the
    UNIQUE index on email using the blind-index operator class."""
    pids = protection_ids(cluster, db, tbl)
    assert sorted(pids) == sorted(PROTECTED), pids
    for col, pid in pids.items():
        trig = cluster.sql("SELECT tgenabled FROM pg_trigger WHERE tgrelid = %s::regclass AND tgname = %s",
                           (tbl, f"zz_envelope_protect_{pid}"), dbname=db)
        assert trig == [("A",)], f"{db}: trigger of {tbl}.{col}: {trig}"
        check = cluster.sql("SELECT convalidated FROM pg_constraint WHERE conrelid = %s::regclass AND conname = %s",
                            (tbl, f"envelope_protected_{pid}"), dbname=db)
        assert check == [(True,)], f"{db}: CHECK of {tbl}.{col}: {check}"
    states = cluster.sql("SELECT col::text, state FROM envelope.protected_columns WHERE tbl = %s::regclass",
                         (tbl,), dbname=db)
    assert sorted(states) == sorted((c, "protected") for c in PROTECTED)
    idx = cluster.sql("""SELECT i.indisunique, oc.opcname FROM pg_index i
                          JOIN pg_opclass oc ON oc.oid = i.indclass[0]
                         WHERE i.indexrelid = %s::regclass""", (f"{tbl}_email_key",), dbname=db)
    assert idx == [(True, "blind_text_ops")], idx
    return pids


def check_restored(cluster: Cluster, db: str, rows: list[Row], source_values: dict[int, tuple],
                   source_pids: dict[str, int], same_protection: bool) -> None:
    """A restored `people`: see the module docstring. `same_protection`: the target table
    carries the source's protection ids, so every byte must be the source's."""
    pids = assert_protection_objects(cluster, db)
    values = stored(cluster, db)
    if same_protection:
        assert pids == source_pids
        assert values == source_values, f"{db}: restore changed stored values"
    else:
        assert set(pids.values()).isdisjoint(source_pids.values())
        changed = sum(v != source_values[rid][i] for rid, vs in values.items() for i, v in enumerate(vs)
                      if v is not None)
        assert changed == sum(v is not None for vs in source_values.values() for v in vs), \
            "values sealed for the source's column were kept in another column"
    assert read_as(cluster, db, READER) == [r.plain() for r in rows], f"{db}: the granted role reads other plaintexts"
    check_bindings(values, rows, pids, profile_texts_of(cluster, db))
    assert_nothing_unsealed(cluster, db)
    assert_search_and_unique(cluster, db, rows)
    # The protection works on: a new plaintext row is sealed.
    new = make_rows(first=500, count=1)
    with session(cluster, db) as conn:
        insert_rows(conn, new)
    assert_nothing_unsealed(cluster, db)
    got = [r for r in read_as(cluster, db, READER) if r[0] == 500]
    assert got == [new[0].plain()]


def assert_absent(needles, haystack: bytes, what: str) -> None:
    """Fails, without printing the haystack, if any needle (str or bytes) occurs in it."""
    for needle in needles:
        n = needle.encode() if isinstance(needle, str) else needle
        if n in haystack:
            pytest.fail(f"{what} holds plaintext {n[:24]!r}", pytrace=False)


def copy_block(sql: str, table: str) -> tuple[list[str], list[list[str]]]:
    """The column names and the rows of a COPY ... FROM stdin block in a plain dump."""
    lines = sql.split("\n")
    head = f"COPY {table} ("
    start = next(i for i, line in enumerate(lines) if line.startswith(head))
    cols = [c.strip() for c in lines[start][len(head):lines[start].index(")")].split(",")]
    out = []
    for line in lines[start + 1:]:
        if line == "\\.":
            break
        out.append(line.split("\t"))
    return cols, out


# ---- the module's clusters ----------------------------------------------------------------

@dataclass
class Env:
    src: Cluster     # also the publisher
    other: Cluster   # another cluster, same master key; also the subscriber
    rows: list[Row]
    values: dict[int, tuple]
    pids: dict[str, int]
    dumps: dict[str, Path]


def build(cluster: Cluster, db: str, rows: list[Row], *, create_db: bool = True) -> None:
    if create_db:
        cluster.create_database(db)
    with session(cluster, db) as conn:
        with conn.cursor() as cur:
            cur.execute(KEYS)
            for g in GRANTS:
                cur.execute(g)
            cur.execute(TABLE_DDL.format(tbl="people"))
            cur.execute(f"GRANT SELECT ON people TO {READER}, {OUTSIDER}")
            for p in PROTECT:
                cur.execute(p.format(tbl="people"))
        insert_rows(conn, rows)


@pytest.fixture(scope="module")
def env(module_cluster_factory, tmp_path_factory) -> Env:
    master = new_master_key()
    src = module_cluster_factory.create("src", master_key=master, settings=REPLICATION)
    other = module_cluster_factory.create("other", master_key=master, settings=SUBSCRIBER)
    for c in (src, other):
        c.sql(f"CREATE ROLE {READER} LOGIN; CREATE ROLE {OUTSIDER} LOGIN")
    rows = make_rows()
    build(src, "src", rows)
    values = stored(src, "src")
    pids = protection_ids(src, "src")
    # The superuser holds no grant: every protected value reads as its penv1: form.
    for rid, vals in values.items():
        assert all(v is None or v.startswith("penv1:") for v in vals), rid
    assert read_as(src, "src", READER) == [r.plain() for r in rows]
    check_bindings(values, rows, pids, profile_texts_of(src, "src"))

    d = tmp_path_factory.mktemp("dumps")
    dumps = {"plain": d / "full.sql", "custom": d / "full.dump",
             "plain_data": d / "data.sql", "custom_data": d / "data.dump", "inserts": d / "inserts.sql"}
    src.pg_dump("src", "--format=plain", "--file", dumps["plain"])
    src.pg_dump("src", "--format=custom", "--compress=0", "--file", dumps["custom"])
    src.pg_dump("src", "--format=plain", "--data-only", "--file", dumps["plain_data"])
    src.pg_dump("src", "--format=custom", "--compress=0", "--data-only", "--file", dumps["custom_data"])
    src.pg_dump("src", "--format=plain", "--data-only", "--inserts", "--file", dumps["inserts"])
    return Env(src, other, rows, values, pids, dumps)


# ---- 1. pg_dump and restore ---------------------------------------------------------------

@pytest.mark.parametrize("kind", ["plain", "custom", "plain_data", "custom_data", "inserts"])
def test_dump_holds_only_ciphertext(env, kind):
    dump = env.dumps[kind]
    content = dump.read_bytes()
    # Positive controls: a plain column's text and a sealed value are found by this search.
    assert PUBLIC_CANARY.encode() in content, f"{kind}: the search would not find plaintext"
    assert env.values[1][0].encode() in content
    assert_absent(text_needles(env.rows) + byte_needles(env.rows), content, f"the {kind} dump")
    assert_absent(key_spellings(env.src.master_key_hex), content, f"the {kind} dump (master key)")
    if kind == "inserts":  # INSERT statements: each protected value as its penv1: literal
        for rid, vals in env.values.items():
            for v in vals:
                assert v is None or f"'{v}'".encode() in content, f"row {rid}: a value is not in the dump"
        assert content.count(b"INSERT INTO public.people ") == ROWS
        return
    # The people block: each protected value is exactly what the superuser reads, penv1:.
    sql = content.decode() if kind.startswith("plain") else \
        env.src.pg_restore("--file=-", dump).stdout.decode()
    cols, lines = copy_block(sql, "public.people")
    assert len(lines) == ROWS
    for line in lines:
        fields = dict(zip(cols, line))
        rid = int(fields["id"])
        for col, want in zip(PROTECTED, env.values[rid]):
            got = None if fields[col] == "\\N" else fields[col]
            assert got == want, f"{kind}: row {rid}.{col} in the dump is not its penv1: form"
            assert got is None or got.startswith("penv1:")
    if kind.endswith("_data"):
        assert "CREATE TABLE" not in sql and "CREATE TRIGGER" not in sql


def test_full_restore_custom_same_cluster_other_database(env):
    env.src.create_database("full_custom", extension=False)
    env.src.pg_restore("--exit-on-error", "--dbname", "full_custom", env.dumps["custom"])
    check_restored(env.src, "full_custom", env.rows, env.values, env.pids, same_protection=True)


def test_full_restore_plain_other_cluster_same_master_key(env):
    env.other.create_database("full_plain", extension=False)
    env.other.psql("full_plain", "--quiet", "--file", env.dumps["plain"])
    check_restored(env.other, "full_plain", env.rows, env.values, env.pids, same_protection=True)


@pytest.mark.parametrize("kind", ["plain_data", "inserts"])
def test_data_only_restore_into_schema_restored_from_the_source(env, kind):
    """--schema-only then a --data-only dump (COPY or INSERT statements; the protection is
    active during the load, with the source's protection ids): every value kept as it is."""
    db = f"data_onto_schema_{kind}"
    env.src.create_database(db, extension=False)
    env.src.pg_restore("--exit-on-error", "--schema-only", "--dbname", db, env.dumps["custom"])
    assert env.src.scalar("SELECT count(*) FROM envelope.key", dbname=db) == 0
    env.src.psql(db, "--quiet", "--file", env.dumps[kind])
    check_restored(env.src, db, env.rows, env.values, env.pids, same_protection=True)


@pytest.mark.parametrize("where", ["same_cluster", "other_cluster"])
def test_data_only_restore_into_table_protected_by_the_target(env, where):
    """The target creates the table and calls protect_column() itself (new protection ids)
    before a data-only restore; the keys come from the dump. Each value is re-bound once
    to the target's column: readable, never sealed twice, never plaintext."""
    cluster = env.src if where == "same_cluster" else env.other
    db = f"data_onto_own_{where}"
    cluster.create_database(db)
    # The key tables first (docs/sql.md: restore into a database with the right key rows).
    cluster.pg_restore("--exit-on-error", "--data-only", "--schema=envelope", "--table=key", "--table=data_key",
                       "--table=key_grant", "--dbname", db, env.dumps["custom_data"])
    with session(cluster, db) as conn, conn.cursor() as cur:
        cur.execute(TABLE_DDL.format(tbl="people"))
        cur.execute(f"GRANT SELECT ON people TO {READER}, {OUTSIDER}")
        for p in PROTECT:
            cur.execute(p.format(tbl="people"))
    # With the triggers disabled (--disable-triggers), values sealed for the source's
    # columns cannot be re-bound: the CHECK refuses them rather than storing them.
    # (--single-transaction: the failed restore's DISABLE TRIGGER ALL is rolled back too.)
    with pytest.raises(ClusterError) as e:
        cluster.pg_restore("--single-transaction", "--data-only", "--disable-triggers", "--schema=public",
                           "--table=people", "--dbname", db, env.dumps["custom_data"])
    assert "violates check constraint \"envelope_protected_" in str(e.value)
    assert cluster.scalar("SELECT count(*) FROM people", dbname=db) == 0
    cluster.pg_restore("--exit-on-error", "--data-only", "--schema=public", "--table=people", "--dbname", db,
                       env.dumps["custom_data"])
    check_restored(cluster, db, env.rows, env.values, env.pids, same_protection=False)


# ---- 2. logical replication ---------------------------------------------------------------

def wait_for(predicate, timeout: float = 40, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


SNAPSHOT = ("SELECT id, tenant_id, note, email::text, ssn::text, photo::text, profile::text, tsecret::text "
            "FROM people ORDER BY id")


def test_logical_replication_carries_sealed_values(env, tmp_path):
    pub, sub = env.src, env.other
    build(pub, "pub", [])
    # Subscribers: `sub_same` and `sub_bin` get the publisher's schema, keys and protection
    # (a full dump of the still empty table); `sub_own` gets the keys only and protects its
    # table itself; `sub_plain` has plain text columns and no extension at all.
    dump = tmp_path / "pub.dump"
    pub.pg_dump("pub", "--format=custom", "--file", dump)
    for db in ("sub_same", "sub_bin"):
        sub.create_database(db, extension=False)
        sub.pg_restore("--exit-on-error", "--dbname", db, dump)
    sub.create_database("sub_own")
    sub.pg_restore("--exit-on-error", "--data-only", "--schema=envelope", "--table=key", "--table=data_key",
                   "--table=key_grant", "--dbname", "sub_own", dump)
    with session(sub, "sub_own") as conn, conn.cursor() as cur:
        cur.execute(TABLE_DDL.format(tbl="people"))
        cur.execute(f"GRANT SELECT ON people TO {READER}")
        for p in PROTECT:
            cur.execute(p.format(tbl="people"))
    sub.create_database("sub_plain", extension=False)
    sub.sql("""CREATE TABLE people (id int PRIMARY KEY, tenant_id int NOT NULL, email text, note text NOT NULL,
                 ssn text, photo text, profile text, tsecret text)""", dbname="sub_plain")

    rows = {r.id: r for r in make_rows(count=12, seed=7)}  # before the subscriptions: initial sync
    with session(pub, "pub") as conn:
        insert_rows(conn, list(rows.values()))
    pub.sql("CREATE PUBLICATION people_pub FOR TABLE people", dbname="pub")
    conninfo = f"host={pub.socket_dir} port={pub.port} dbname=pub user={pub.superuser}"
    subs = {"sub_same": "false", "sub_bin": "true", "sub_own": "false", "sub_plain": "false"}
    try:
        for db, binary in subs.items():
            sub.sql(f"CREATE SUBSCRIPTION s_{db} CONNECTION '{conninfo}' PUBLICATION people_pub "
                    f"WITH (binary = {binary})", dbname=db)

        def converged(db: str, expected: list[tuple], compare_stored: bool) -> bool:
            got = sub.sql(SNAPSHOT, dbname=db)
            if compare_stored:
                return got == expected
            return [g[:3] for g in got] == [e[:3] for e in expected]

        # sub_own's values differ from the publisher's (re-bound): it has caught up when its
        # plain columns have (every phase ends with a change to them: the copy, the DELETE).
        def sync(phase: str) -> list[tuple]:
            expected = pub.sql(SNAPSHOT, dbname="pub")
            for db in subs:
                wait_for(lambda: converged(db, expected, db != "sub_own"), what=f"{db} to apply ({phase})")
            return expected

        sync("initial copy")
        # Streamed changes: inserts, an update of a plain column (protected values unchanged,
        # some stored out of line), updates of protected values, of the row context (id) and
        # of the key column (tenant), a delete.
        more = make_rows(first=100, count=6, seed=8)
        with session(pub, "pub") as conn:
            insert_rows(conn, more)
        rows.update({r.id: r for r in more})
        pub.sql("UPDATE people SET note = note || ' edited' WHERE id IN (1, 7, 100)", dbname="pub")
        pub.sql("UPDATE people SET ssn = 'SSNMARK-9001 changed', profile = '{\"secret\": \"JSONMARK-9001\"}' "
                "WHERE id = 2", dbname="pub")
        pub.sql("UPDATE people SET id = 200 WHERE id = 3", dbname="pub")
        assert rows[102].tenant_id == 1
        pub.sql("UPDATE people SET tenant_id = 2 WHERE id = 102", dbname="pub")
        pub.sql("DELETE FROM people WHERE id = 4", dbname="pub")
        expected = sync("streaming")

        pub_plain = read_as(pub, "pub", READER)
        assert any(r[0] == 200 for r in pub_plain) and not any(r[0] in (3, 4) for r in pub_plain)
        assert next(r for r in pub_plain if r[0] == 2)[4] == "SSNMARK-9001 changed"
        pub_values = {e[0]: e[3:] for e in expected}
        assert sealed(pub_values[102][4]).key_name == "tenant_2"  # re-keyed with its tenant
        assert sealed(pub_values[200][1]).context == "200"  # re-bound to its new id
        pub_pids = protection_ids(pub, "pub")
        for e in expected:  # the publisher's values are sealed, for its columns and rows
            assert all(v is None or v.startswith("penv1:") for v in e[3:]), e[0]
        for db in ("sub_same", "sub_bin", "sub_own"):
            assert_nothing_unsealed(sub, db)
            # The granted role reads the publisher's plaintexts on the subscriber.
            assert read_as(sub, db, READER) == pub_plain, f"{db}: the replica reads other plaintexts"
            sub_values = stored(sub, db)
            sub_pids = protection_ids(sub, db)
            for rid, vals in sub_values.items():
                for col, v, pv in zip(PROTECTED, vals, pub_values[rid]):
                    if v is None:
                        assert pv is None
                        continue
                    s, ps = sealed(v), sealed(pv)
                    assert s.protection_id == sub_pids[col] and s.ciphertext_len == ps.ciphertext_len, \
                        f"{db}: row {rid}.{col} was sealed twice or for another column"
                    assert (s.key_name, s.context) == (ps.key_name, ps.context)
            if db == "sub_own":  # its own protection: every value re-bound by the trigger on apply
                assert set(sub_pids.values()).isdisjoint(pub_pids.values())
                assert all(v != pv for rid, vals in sub_values.items()
                           for v, pv in zip(vals, pub_values[rid]) if v is not None)
            else:  # same protection: the publisher's bytes (compared in sync()), same ids
                assert sub_pids == pub_pids and sub_values == pub_values
            assert sub.scalar("SELECT id FROM people WHERE email = %s", (rows[5].email,), dbname=db,
                              user=READER) == 5
            trig = sub.sql("SELECT DISTINCT tgenabled FROM pg_trigger WHERE tgrelid = 'people'::regclass "
                           "AND tgname LIKE 'zz_envelope_protect_%'", dbname=db)
            assert trig == [("A",)]
        # Unprotected subscriber: the penv1: text, the very bytes of the publisher, no plaintext.
        plain = sub.sql(SNAPSHOT, dbname="sub_plain")
        assert plain == expected
        flat = "\n".join(str(v) for row in plain for v in row[3:] if v is not None).encode()
        assert all(v is None or v.startswith("penv1:") for row in plain for v in row[3:])
        assert_absent(text_needles(list(rows.values())) + ["SSNMARK-9001", "JSONMARK-9001"], flat,
                      "the unprotected subscriber")
        assert PUBLIC_CANARY in "\n".join(r[2] for r in plain)
    finally:
        for db in subs:
            sub.sql(f"DROP SUBSCRIPTION IF EXISTS s_{db}", dbname=db)


# ---- 3. who reads what --------------------------------------------------------------------

def copy_out(cluster: Cluster, db: str, query: str, user: str | None = None, binary: bool = False) -> bytes:
    buf = io.BytesIO()
    with session(cluster, db, user) as conn, conn.cursor() as cur:
        cur.copy_expert(f"COPY ({query}) TO STDOUT" + (" (FORMAT binary)" if binary else ""), buf)
    return buf.getvalue()


def test_who_reads_plaintext(env):
    c, db = env.src, "who"
    rows = make_rows(count=10, seed=99)
    build(c, db, rows)
    values = stored(c, db)
    penv1_only = [(r.id, r.tenant_id, r.note, *values[r.id]) for r in rows]
    # A role without a grant: the penv1: form, never an error, in text and binary COPY.
    assert c.sql(PLAIN.format(tbl="people"), dbname=db, user=OUTSIDER) == penv1_only
    for binary in (False, True):
        out = copy_out(c, db, "SELECT * FROM people", user=OUTSIDER, binary=binary)
        assert values[1][1].encode() in out
        assert_absent(text_needles(rows) + byte_needles(rows), out, f"COPY (binary={binary}) by a role without grant")
    with pytest.raises(psycopg2.Error) as e:
        c.sql("SELECT envelope.unseal(ssn) FROM people", dbname=db, user=OUTSIDER)
    assert pg_error(e)["sqlstate"] == "42501"
    # The superuser without a grant: penv1: through the column, plaintext only when asked
    # explicitly (envelope.unseal), as PostgreSQL privileges go.
    assert c.sql(PLAIN.format(tbl="people"), dbname=db) == penv1_only
    assert c.scalar("SELECT envelope.unseal(ssn) FROM people WHERE id = 1", dbname=db) == rows[0].ssn
    # COPY TO as the superuser: ciphertext only.
    copied = copy_out(c, db, "SELECT * FROM people ORDER BY id")
    copied_binary = copy_out(c, db, "SELECT * FROM people ORDER BY id", binary=True)
    for out in (copied, copied_binary):
        assert_absent(text_needles(rows) + byte_needles(rows), out, "COPY TO by the superuser")
        assert values[1][1].encode() in out and PUBLIC_CANARY.encode() in out

    # COPY FROM that output: into the same table, every byte kept (already sealed for it);
    # into another table protected the same way, re-bound to it and still readable.
    with session(c, db) as su, su.cursor() as cur:
        cur.execute("DELETE FROM people")
        cur.copy_expert("COPY people FROM STDIN (FORMAT binary)", io.BytesIO(copied_binary))
        cur.execute(STORED.format(tbl="people"))
        assert {r[0]: tuple(r[1:]) for r in cur.fetchall()} == values, "binary COPY FROM changed the values"
        cur.execute("DELETE FROM people")
        cur.copy_expert("COPY people FROM STDIN", io.BytesIO(copied))
        cur.execute(TABLE_DDL.format(tbl="people_copy"))
        cur.execute(f"GRANT SELECT ON people_copy TO {READER}")
        for p in PROTECT:
            cur.execute(p.format(tbl="people_copy"))
        cur.copy_expert("COPY people_copy FROM STDIN", io.BytesIO(copied))
    assert stored(c, db) == values
    copy_values = stored(c, db, "people_copy")
    copy_pids = protection_ids(c, db, "people_copy")
    assert all(v != values[rid][i] for rid, vs in copy_values.items() for i, v in enumerate(vs) if v is not None)
    assert read_as(c, db, READER, "people_copy") == [r.plain() for r in rows]
    check_bindings(copy_values, rows, copy_pids, profile_texts_of(c, db, "people_copy"))
    assert_nothing_unsealed(c, db, "people_copy")
    assert_search_and_unique(c, db, rows, "people_copy")

    # grant_key(key, 'postgres', 'decrypt'): the superuser reads plaintext, of that key only.
    c.sql("SELECT envelope.grant_key('pk', 'postgres', 'decrypt')", dbname=db)
    got = read_as(c, db, c.superuser)
    assert [g[:7] for g in got] == [r.plain()[:7] for r in rows]
    assert [g[7] for g in got] == [values[r.id][4] for r in rows], "tenant keys were not granted"
    c.sql("SELECT envelope.grant_key('tenant_*', 'postgres', 'decrypt')", dbname=db)
    assert [g[7] for g in c.sql(PLAIN.format(tbl="people"), dbname=db)] == [r.tsecret for r in rows]
    # The role without a grant still reads ciphertext.
    assert c.sql(PLAIN.format(tbl="people"), dbname=db, user=OUTSIDER) == penv1_only
    # The flip side, by design: a superuser granted decrypt now copies (pg_dump too: it COPYs)
    # plaintext, so dumps and replication connections should use a role without the grant.
    assert f"SSNMARK-{rows[0].id:04d}".encode() in copy_out(c, db, "SELECT * FROM people")
