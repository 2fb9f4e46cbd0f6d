"""Large values (issue 13, item 5): envelope.encrypted_bytea from 1 KB to PostgreSQL's 1 GB limit.

An envelope is the plaintext + 34 bytes (docs/format.md: format 2, written by default,
with a DEK version below 128), stored as a varlena whose size (4-byte header included)
may not exceed MaxAllocSize = 2^30 - 1 bytes. So the largest plaintext encrypt_field can
take is 2^30 - 1 - 4 - 34 = 1,073,741,785 bytes; one byte
more must fail with SQLSTATE 54000 (program_limit_exceeded), not crash the backend or
have it killed. These tests check, on a real server with a 16 MB shared_buffers:

1. round trips at 1 KB, 1 MB and 64 MB: a plaintext (SHA-256 blocks, not a repeated
   pattern) in a plain table, INSERT ... encrypt_field(p, key, context), then
   decrypt_field in another connection; identity by sha256() in SQL (nothing large goes
   through Python). At 64 MB, the backend's peak RSS (VmHWM) of the encrypting INSERT and
   of the decrypting SELECT, each in a fresh connection, stays within 2 x the value size
   + 32 MB: the input and the output, no extra copy (shared buffers are 16 MB);
2. tampering with a 64 MB value: one byte flipped in the middle of its ciphertext (through
   the text form env1:base64) -> 22000 "could not decrypt ..."; the same path without the
   flip decrypts to the original (so the flip is what fails);
3. the limit: encrypt_field of 2^30 - 42 bytes -> 54000 "value too large for pg_envelope",
   raised before the output is allocated (peak RSS below 1 x value + 64 MB), the same
   backend answers afterwards, the postmaster did not restart, a new connection works;
   encrypt_field of 2^30 - 43 bytes works (a 2^30 - 1 byte varlena) and decrypts to a
   value of the original length.

The 1 GB plaintexts are built in SQL as repeat(repeat('x', d), k), with d * k = n, from a
sub-select (no constant folding, which would copy the value), and made bytea by a
binary-coercible cast text -> bytea created in the test database (no copy either).

Run as the postgres OS user:
    runuser -u postgres -- /usr/bin/python3 -m pytest -q -p no:cacheprovider test/integration/test_large_values.py
"""

from __future__ import annotations

import time

import psycopg2
import pytest

from pgcluster import Cluster, pg_error

DB = "large"
APP = "large_app"      # encrypt + decrypt on the key, owns the tables
KEY = "lv"
KB, MB = 1 << 10, 1 << 20
MAX_ALLOC = (1 << 30) - 1          # MaxAllocSize: the largest varlena, header included
ENVELOPE_OVERHEAD = 34             # format 2: 18-byte header (DEK version < 128) + 16-byte tag
N_MAX = MAX_ALLOC - 4 - ENVELOPE_OVERHEAD   # 1_073_741_785: the largest plaintext that fits
SHARED_BUFFERS_MB = 16
SIZES = {1: 1 * KB, 2: 1 * MB, 3: 64 * MB}  # row id -> plaintext size


# ---- helpers --------------------------------------------------------------------------

def status_kb(pid: int, field: str) -> int:
    """A field of /proc/<pid>/status in kB (the tests run as the server's OS user)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


def fresh(pg: Cluster, user: str = APP):
    """A new connection as `user` that has already encrypted and decrypted one byte (the
    connection's one-time costs are paid), and its backend's VmHWM at that point."""
    conn = pg.connect(DB, user=user)
    with conn.cursor() as cur:
        cur.execute("SELECT pg_column_size(envelope.decrypt_field(envelope.encrypt_field('\\x00'::bytea, %s)))",
                    [KEY])
    pid = conn.get_backend_pid()
    return conn, pid, status_kb(pid, "VmHWM")


def one(conn, query: str, params=None):
    with conn.cursor() as cur:
        cur.execute(query, params)
        rows = cur.fetchall()
    assert len(rows) == 1, rows
    return rows[0] if len(rows[0]) > 1 else rows[0][0]


def divisor(n: int, limit: int = 65536) -> int:
    """The largest divisor of n up to `limit` (the chunk length for repeat())."""
    return max(d for d in range(1, limit + 1) if n % d == 0)


def blob_from(n: int) -> tuple[str, list[int]]:
    """A FROM clause whose row has b.x = n bytes of 'x' as a bytea, built at execution."""
    d = divisor(n)
    return ("FROM (SELECT repeat(repeat('x', v.d), v.k)::bytea AS x "
            "FROM (SELECT %s::integer AS d, %s::integer AS k OFFSET 0) v OFFSET 0) b", [d, n // d])


# ---- set-up ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pg(module_cluster_factory) -> Cluster:
    cluster = module_cluster_factory.create("large", settings={"shared_buffers": f"{SHARED_BUFFERS_MB}MB"})
    cluster.create_database(DB)
    cluster.sql(f"CREATE ROLE {APP} LOGIN")
    cluster.sql(f"GRANT CREATE ON SCHEMA public TO {APP}", dbname=DB)
    cluster.sql(f"GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA envelope TO {APP}", dbname=DB)
    cluster.sql("SELECT envelope.create_key(%s)", [KEY], dbname=DB)   # the local KMS
    for privilege in ("encrypt", "decrypt"):
        cluster.sql("SELECT envelope.grant_key(%s, %s, %s)", [KEY, APP, privilege], dbname=DB)
    # text and bytea are both varlenas: lets repeat() build a 1 GB bytea without a copy.
    cluster.sql("CREATE CAST (text AS bytea) WITHOUT FUNCTION", dbname=DB)
    # src: the plaintexts, stored uncompressed; big: their encryptions, context = id.
    cluster.sql("CREATE TABLE src (id integer PRIMARY KEY, p bytea NOT NULL)", dbname=DB, user=APP)
    cluster.sql("ALTER TABLE src ALTER COLUMN p SET STORAGE EXTERNAL", dbname=DB, user=APP)
    cluster.sql("CREATE TABLE big (id integer PRIMARY KEY, c envelope.encrypted_bytea NOT NULL)", dbname=DB, user=APP)
    for row_id, size in SIZES.items():
        # Concatenated SHA-256 digests of (row id, block number): no two blocks alike.
        cluster.sql("INSERT INTO src SELECT %s, substr(string_agg(sha256(int4send(%s) || int4send(g)), '' ORDER BY g), "
                    "1, %s) FROM generate_series(0, (%s - 1) / 32) g", [row_id, row_id, size, size],
                    dbname=DB, user=APP)
    assert dict(cluster.sql("SELECT id, octet_length(p) FROM src", dbname=DB)) == SIZES
    return cluster


# ---- 1. round trips -------------------------------------------------------------------

@pytest.mark.parametrize("row_id", sorted(SIZES), ids=lambda i: f"{SIZES[i] // KB}KB")
def test_round_trip(pg, row_id):
    size = SIZES[row_id]
    conn, pid, base = fresh(pg)
    with conn.cursor() as cur:
        cur.execute("INSERT INTO big SELECT id, envelope.encrypt_field(p, %s, id::text) FROM src WHERE id = %s",
                    [KEY, row_id])
        assert cur.rowcount == 1
    insert_kb = status_kb(pid, "VmHWM") - base
    conn.close()

    # Read back in another connection: from the table (TOAST), not a value in memory.
    conn, pid, base = fresh(pg)
    same, length, stored = one(conn, "SELECT sha256(envelope.decrypt_field(b.c, b.id::text)) = sha256(s.p), "
                                     "octet_length(envelope.decrypt_field(b.c, b.id::text)), pg_column_size(b.c) "
                                     "FROM big b JOIN src s USING (id) WHERE id = %s", [row_id])
    assert length == size
    assert same is True, f"the {size}-byte value does not decrypt to its plaintext"
    # Stored: the plaintext + 34 bytes (+ a varlena header when the value is stored in line).
    assert stored in (size + ENVELOPE_OVERHEAD, size + ENVELOPE_OVERHEAD + 4), stored
    conn.close()

    # The context is bound: another row's context does not decrypt it.
    conn = pg.connect(DB, user=APP)
    with pytest.raises(psycopg2.Error) as err:
        one(conn, "SELECT octet_length(envelope.decrypt_field(c, 'another row')) FROM big WHERE id = %s", [row_id])
    assert pg_error(err)["sqlstate"] == "22000"
    conn.close()

    if size >= 64 * MB:
        # Memory: one decrypting SELECT, each in a fresh connection, peaks at the stored
        # value (detoasted) + the plaintext; the INSERT at the plaintext (detoasted) + the
        # envelope; plus the shared buffers it touched. An extra copy would add 64 MB.
        expected = pg.scalar("SELECT get_byte(p, %s) FROM src WHERE id = %s", [size - 1, row_id], dbname=DB)
        conn, pid, base = fresh(pg)
        assert one(conn, "SELECT get_byte(envelope.decrypt_field(c, id::text), %s) FROM big WHERE id = %s",
                   [size - 1, row_id]) == expected
        select_kb = status_kb(pid, "VmHWM") - base
        conn.close()
        bound_kb = (2 * size + 32 * MB) // KB
        print(f"\n[measure] {size}-byte value: INSERT peak +{insert_kb // 1024} MB, SELECT peak +{select_kb // 1024} MB")
        assert insert_kb <= bound_kb, f"INSERT peak +{insert_kb} kB for a {size}-byte value (bound {bound_kb} kB)"
        assert select_kb <= bound_kb, f"SELECT peak +{select_kb} kB for a {size}-byte value (bound {bound_kb} kB)"


# ---- 2. tampering ---------------------------------------------------------------------

def test_tampered_large_value_fails_authentication(pg):
    row_id = 3
    size = SIZES[row_id]
    if pg.scalar("SELECT count(*) FROM big WHERE id = %s", [row_id], dbname=DB) == 0:
        pg.sql("INSERT INTO big SELECT id, envelope.encrypt_field(p, %s, id::text) FROM src WHERE id = %s",
               [KEY, row_id], dbname=DB, user=APP)
    # The envelope's bytes through its text form; `flip` is XORed into the middle byte,
    # which lies in the ciphertext (header: bytes 0-21, tag: the last 16).
    rebuilt = ("SELECT {expr} FROM (SELECT b.id, set_byte(b.e, b.mid, get_byte(b.e, b.mid) # %s) AS e FROM "
               "(SELECT id, e, octet_length(e) / 2 AS mid FROM "
               "(SELECT id, decode(substr(c::text, 6), 'base64') AS e FROM big WHERE id = %s OFFSET 0) x OFFSET 0) b "
               "OFFSET 0) t, LATERAL (SELECT ('env1:' || replace(encode(t.e, 'base64'), E'\\n', ''))"
               "::envelope.encrypted_bytea AS c) r")
    conn = pg.connect(DB, user=APP)
    assert one(conn, f"SELECT octet_length(e) FROM big, LATERAL (SELECT decode(substr(c::text, 6), 'base64') AS e) d "
                     f"WHERE id = %s", [row_id]) == size + ENVELOPE_OVERHEAD
    # Control: the same path without a flip gives back a value that decrypts to the original.
    assert one(conn, rebuilt.format(expr="sha256(envelope.decrypt_field(r.c, t.id::text)) = "
                                         "(SELECT sha256(p) FROM src WHERE id = t.id)"), [0, row_id]) is True
    with pytest.raises(psycopg2.Error) as err:
        one(conn, rebuilt.format(expr="octet_length(envelope.decrypt_field(r.c, t.id::text))"), [1, row_id])
    e = pg_error(err)
    assert e["sqlstate"] == "22000", e
    assert e["message"] == f'could not decrypt value encrypted with key "{KEY}" version 1', e
    assert "failed authentication" in (e["detail"] or ""), e
    assert one(conn, "SELECT 1") == 1


# ---- 3. the 1 GB limit ----------------------------------------------------------------

def test_limit_over_1gb_is_a_clean_54000(pg):
    started = pg.scalar("SELECT pg_postmaster_start_time()")
    n = N_MAX + 1
    from_clause, params = blob_from(n)
    conn, pid, base = fresh(pg)
    t0 = time.monotonic()
    with pytest.raises(psycopg2.Error) as err:
        one(conn, f"SELECT pg_column_size(envelope.encrypt_field(b.x, %s)) {from_clause}", [KEY, *params])
    elapsed = time.monotonic() - t0
    e = pg_error(err)
    assert e["sqlstate"] == "54000", e
    assert e["message"] == "value too large for pg_envelope", e
    assert e["detail"] == "A value may be at most 1 GB after encryption.", e
    # The same backend answers: it raised an error, it did not die.
    assert conn.get_backend_pid() == pid and one(conn, "SELECT pg_backend_pid()") == pid
    # Refused before the envelope was allocated: the peak is the plaintext, not twice it.
    peak_kb = status_kb(pid, "VmHWM") - base
    assert peak_kb <= (n + 64 * MB) // KB, f"peak +{peak_kb} kB for a refused {n}-byte value"
    assert peak_kb >= n // KB // 2, f"peak +{peak_kb} kB: was the {n}-byte plaintext built at all?"
    conn.close()
    assert pg.scalar("SELECT pg_postmaster_start_time()") == started, "the postmaster restarted"
    assert pg.scalar("SELECT current_user", dbname=DB, user=APP) == APP   # a new connection works
    print(f"\n[measure] refused {n}-byte plaintext in {elapsed:.1f} s, peak +{peak_kb // 1024} MB")


def test_limit_largest_value_encrypts_and_decrypts(pg):
    from_clause, params = blob_from(N_MAX)
    conn, pid, base = fresh(pg)
    stored, length, last = one(conn, "SELECT pg_column_size(e.c), octet_length(d.p), get_byte(d.p, %s) FROM "
                                     f"(SELECT envelope.encrypt_field(b.x, %s) AS c {from_clause} OFFSET 0) e, "
                                     "LATERAL (SELECT envelope.decrypt_field(e.c) AS p OFFSET 0) d",
                               [N_MAX - 1, KEY, *params])
    assert stored == MAX_ALLOC, stored      # a varlena of exactly MaxAllocSize bytes
    assert length == N_MAX
    assert last == ord("x")
    peak_kb = status_kb(pid, "VmHWM") - base
    # The plaintext, the envelope and the decrypted copy: 3 x 1 GB at most, plus slack.
    assert peak_kb <= (3 * N_MAX + 64 * MB) // KB, f"peak +{peak_kb} kB"
    assert one(conn, "SELECT pg_backend_pid()") == pid
    conn.close()
    print(f"\n[measure] {N_MAX}-byte plaintext encrypted and decrypted, peak +{peak_kb // 1024} MB")


def test_text_form_over_1gb_is_a_clean_54000(pg):
    """The text form (env1: + base64) of an envelope over about 768 MB would exceed 1 GB:
    its output (text COPY, pg_dump, a text-format result) says so with 54000 and points
    to binary I/O. Server-side COPY to /dev/null runs just the output function."""
    n = 805_306_329  # the smallest plaintext whose text form no longer fits (format 2: 34 bytes added)
    pg.sql(f"GRANT pg_write_server_files TO {APP}")
    conn, pid, _ = fresh(pg)
    from_clause, params = blob_from(n)
    with conn.cursor() as cur:
        with pytest.raises(psycopg2.Error) as err:
            cur.execute(f"COPY (SELECT envelope.encrypt_field(b.x, %s) {from_clause}) TO '/dev/null'", [KEY, *params])
    e = pg_error(err)
    assert e["sqlstate"] == "54000", e
    assert e["message"] == "the text form of this encrypted value is too large", e
    assert "FORMAT binary" in (e["hint"] or ""), e
    assert one(conn, "SELECT pg_backend_pid()") == pid
    # One byte less still has a text form; binary COPY has no such limit.
    from_clause, params = blob_from(n - 1)
    with conn.cursor() as cur:
        cur.execute(f"COPY (SELECT envelope.encrypt_field(b.x, %s) {from_clause}) TO '/dev/null'", [KEY, *params])
        assert cur.rowcount == 1
    from_clause, params = blob_from(n)
    with conn.cursor() as cur:
        cur.execute(f"COPY (SELECT envelope.encrypt_field(b.x, %s) {from_clause}) TO '/dev/null' (FORMAT binary)",
                    [KEY, *params])
        assert cur.rowcount == 1
    conn.close()
