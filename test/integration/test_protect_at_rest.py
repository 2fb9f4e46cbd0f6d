"""Protected columns at rest (issue 12, item 1): the heap, TOAST and WAL hold only
ciphertext of what the application writes through a protected column.

The application's writes (INSERT with bind parameters, a large value stored out of line,
an UPDATE of the protected column, an upsert, COPY FROM) go through a protected column;
after a CHECKPOINT and a WAL switch, no byte of the data directory's relation files or
WAL segments contains a plaintext, while a control value written to an ordinary column
in the same rows is found there (so the search itself works). A migrated column is
checked the same way after VACUUM, with the documented caveat that WAL written before
the migration still holds the old plaintext.
"""
from __future__ import annotations

import io
import secrets
from pathlib import Path

import pytest


def files_containing(root: Path, needles: list[bytes]) -> dict[bytes, list[str]]:
    found: dict[bytes, list[str]] = {n: [] for n in needles}
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        for n in needles:
            if n in data:
                found[n].append(str(path.relative_to(root)))
    return found


@pytest.fixture
def app(cluster):
    cluster.sql("CREATE EXTENSION pg_envelope")
    cluster.sql("SELECT envelope.create_key('rest')")
    cluster.sql("CREATE ROLE rest_app LOGIN")
    cluster.sql("SELECT envelope.grant_key('rest', 'rest_app', 'encrypt'), envelope.grant_key('rest', 'rest_app', 'decrypt')")
    cluster.sql("CREATE TABLE people (id int PRIMARY KEY, email text UNIQUE, doc jsonb, canary text)")
    cluster.sql("GRANT SELECT, INSERT, UPDATE, DELETE ON people TO rest_app")
    cluster.sql("SELECT envelope.protect_column('people', 'email', 'rest', context_column => 'id')")
    cluster.sql("SELECT envelope.protect_column('people', 'doc', 'rest', context_column => 'id', blind_index => false)")
    return cluster


def test_heap_toast_and_wal_hold_only_ciphertext(app):
    tag = secrets.token_hex(6)
    plain = [f"secret-{tag}-{i}@example.org" for i in range(6)]
    large = f"large-{tag}-" + secrets.token_hex(6000)  # far beyond the TOAST threshold
    canary = f"canary-{tag}"
    conn = app.connect(user="rest_app")
    with conn.cursor() as cur:
        cur.execute("INSERT INTO people VALUES (1, %s, %s, %s)", [plain[0], f'{{"note": "{plain[1]}"}}', canary])
        # A large value goes out of line (TOAST); in the column without a blind index, since a
        # btree entry cannot hold it (docs/protect.md, Limits).
        cur.execute("INSERT INTO people VALUES (2, %s, %s, %s)", [f"two-{tag}@example.org", f'{{"big": "{large}"}}', canary])
        cur.execute("INSERT INTO people VALUES (3, %s, NULL, NULL)", [plain[2]])
        cur.execute("UPDATE people SET email = %s WHERE id = 3", [plain[3]])
        cur.execute("INSERT INTO people VALUES (4, %s, NULL, NULL) ON CONFLICT (id) DO NOTHING", [plain[4]])
        cur.execute("INSERT INTO people VALUES (4, %s, NULL, NULL) ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email",
                    [plain[5]])
        cur.copy_expert("COPY people (id, email) FROM STDIN", io.StringIO(f"5\tcopy-{tag}@example.org\n"))
        cur.execute("SELECT doc::jsonb->>'big' FROM people WHERE id = 2")
        assert cur.fetchone()[0] == large
        cur.execute("SELECT id FROM people WHERE email = %s", [plain[5]])
        assert cur.fetchone()[0] == 4
    conn.close()
    app.sql("CHECKPOINT")
    app.sql("SELECT pg_switch_wal()")
    app.sql("CHECKPOINT")
    needles = [p.encode() for p in plain] + [large[:40].encode(), large[-40:].encode(), f"copy-{tag}".encode(),
                                             f"two-{tag}".encode()]
    data = app.data_dir
    found = files_containing(data / "base", needles + [canary.encode()])
    found_wal = files_containing(data / "pg_wal", needles + [canary.encode()])
    assert found[canary.encode()], "the control value was not found in the relation files: the search is broken"
    assert found_wal[canary.encode()], "the control value was not found in the WAL: the search is broken"
    for n in needles:
        assert found[n] == [] and found_wal[n] == [], f"a plaintext is stored at rest: {found[n] + found_wal[n]}"


def test_migrated_column_after_vacuum_full(app):
    """A column protected when populated: after seal_rows and VACUUM FULL (the purge step
    of docs/protect.md), the table's files hold no plaintext; before the purge, the dead
    row versions still do (which is why the runbook has that step)."""
    tag = secrets.token_hex(6)
    app.sql("CREATE TABLE legacy (id int PRIMARY KEY, ssn text, canary text)")
    app.sql("INSERT INTO legacy SELECT g, %s || g, %s FROM generate_series(1, 2000) g",
            [f"ssn-{tag}-", f"canary-{tag}"])
    app.sql("SELECT envelope.protect_column('legacy', 'ssn', 'rest')")
    app.sql("CALL envelope.seal_rows('legacy', 'ssn')")
    assert app.scalar("SELECT count(*) FROM legacy WHERE NOT envelope.is_sealed(ssn)") == 0
    app.sql("CHECKPOINT")
    rel = app.scalar("SELECT pg_relation_filepath('legacy')")
    before = files_containing(app.data_dir / Path(rel).parent, [f"ssn-{tag}-".encode()])
    assert any(Path(f).name.split(".")[0] == Path(rel).name for f in before[f"ssn-{tag}-".encode()]), \
        "the dead row versions should still hold the old plaintext before the purge"
    app.sql("VACUUM (FULL) legacy")
    app.sql("CHECKPOINT")
    rel = app.scalar("SELECT pg_relation_filepath('legacy')")
    found = files_containing(app.data_dir / Path(rel).parent, [f"ssn-{tag}-".encode(), f"canary-{tag}".encode()])
    assert found[f"canary-{tag}".encode()], "the control value was not found: the search is broken"
    holders = [f for f in found[f"ssn-{tag}-".encode()] if Path(f).name.split(".")[0] == Path(rel).name]
    assert holders == [], f"plaintext left in the table's files after VACUUM: {holders}"
