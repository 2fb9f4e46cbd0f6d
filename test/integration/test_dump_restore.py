"""pg_dump / pg_restore of encrypted columns and their keys.

A source database holds two keys, one rotated, so three DEK versions are in use, and a
table with encrypted_text, encrypted_bytea and encrypted_jsonb columns whose plaintexts
this module generates. Dumps in custom and plain format are restored into new databases
and every value must decrypt to the generated plaintext. The dumps must hold no
plaintext, and under a different master key the restored ciphertext must be intact but
refuse to decrypt (SQLSTATE 22000) instead of yielding wrong plaintext.
"""

from __future__ import annotations

import base64
import json
import random
import struct
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
import pytest

from pgcluster import Cluster, envelope_header, key_spellings, pg_error

SOURCE_DB = "src"
ROWS = 300
ROTATE_AFTER = 150  # rows 1..150 use k1 version 1, later rows k1 version 2
PUBLIC_CANARY = "public-canary-not-encrypted-5c1d"  # a plain column; must be in the dumps

# Distinctive plaintexts that a dump must never contain.
TEXT_MARKERS = ["SSN 123-45-6789 belongs to Tautochrone Quillfeather",
                "秘密のメッセージ Geheimnis Ünïcödé marker 🔐",
                "Confidential-payroll-line-Zyxwvut-4471"]
BYTEA_MARKER = b"BYTEA-SECRET-\x00\x01\x02-Marsupial-Quokka-\xff\xfe"
JSON_MARKER = "jsonb-secret-Axolotl-Ballad-9931"

SELECT_DECRYPTED = """
    SELECT id, note,
           envelope.decrypt_field(t, ctx), envelope.decrypt_field(b, ctx),
           envelope.decrypt_field(j, ctx)::text,
           t::text, b::text, j::text
      FROM secrets, LATERAL (SELECT CASE WHEN id % 2 = 1 THEN id::text END AS ctx) c
     ORDER BY id"""


@dataclass
class Row:
    id: int
    key: str
    text: str | None
    data: bytes | None
    doc: object  # a JSON value; MISSING for SQL NULL
    context: str | None = field(init=False)

    def __post_init__(self):
        self.context = str(self.id) if self.id % 2 == 1 else None


MISSING = object()


def random_text(rng: random.Random, n: int) -> str:
    alphabet = ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 "
                "äöüßéñçø漢字仮名한국어Ωπ🔐🙂–—'\"\\\t\n,;{}[]%_")
    return "".join(rng.choice(alphabet) for _ in range(n))


def random_json(rng: random.Random, depth: int = 0):
    kind = rng.randrange(7 if depth < 3 else 4)
    if kind == 0:
        return random_text(rng, rng.randrange(0, 20))
    if kind == 1:
        return rng.randrange(-10**12, 10**12)
    if kind == 2:
        return rng.choice([True, False, None, 1.5, -0.25, 3.0e20])
    if kind == 3:
        return rng.randrange(-1000, 1000) / 8
    if kind in (4, 5):
        return {random_text(rng, rng.randrange(1, 8)): random_json(rng, depth + 1)
                for _ in range(rng.randrange(0, 5))}
    return [random_json(rng, depth + 1) for _ in range(rng.randrange(0, 5))]


def make_rows() -> list[Row]:
    rng = random.Random(20240611)
    special_texts = ["", " ", "a", "tab\tnewline\ncarriage\rreturn", "quote ' double \" backslash \\",
                     "COPY escapes \\N \\. \\x00", "Grüße aus Köln – naïve café", "日本語のテキスト",
                     "emoji 🔐🗝️👩‍💻 and combining e\u0301", *TEXT_MARKERS]
    special_bytes = [b"", b"\x00", bytes(range(256)), BYTEA_MARKER, "ünïcode".encode()]
    special_docs = [{}, [], None, "", 0, "秘密", {"a": {"b": {"c": [1, 2, {"d": [True, None]}]}}},
                    {"secret": JSON_MARKER, "nested": {"list": [JSON_MARKER, 1, 2.5]}}]
    rows = []
    for i in range(1, ROWS + 1):
        text = random_text(rng, rng.randrange(0, 120))
        data = rng.randbytes(rng.randrange(0, 200))
        doc = random_json(rng, depth=rng.choice([0, 2]))  # many nested documents
        if i <= len(special_texts):
            text = special_texts[i - 1]
        if i <= len(special_bytes):
            data = special_bytes[i - 1]
        if i <= len(special_docs):
            doc = special_docs[i - 1]
        if i % 17 == 0:
            text = None
        if i % 19 == 0:
            data = None
        if i % 23 == 0:
            doc = MISSING
        if i == 42:  # one large value per type, stored out of line
            text = random_text(random.Random(42), 100_000)
            data = random.Random(43).randbytes(100_000)
            doc = {"blob": random_text(random.Random(44), 100_000), "n": list(range(100))}
        rows.append(Row(i, "k2" if i % 3 == 0 else "k1", text, data, doc))
    return rows


def dek_of(ciphertext_text: str) -> tuple[int, int]:
    """(key id, DEK version) from an envelope's header (docs/format.md)."""
    assert ciphertext_text.startswith("env1:")
    h = envelope_header(base64.b64decode(ciphertext_text[5:], validate=True))
    return h["key_id"], h["version"]


def insert_rows(conn, rows: list[Row]) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO secrets (id, note, t, b, j) VALUES (
                 %(id)s, %(note)s,
                 envelope.encrypt_field(%(text)s::text, %(key)s, %(ctx)s),
                 envelope.encrypt_field(%(data)s::bytea, %(key)s, %(ctx)s),
                 envelope.encrypt_field(%(doc)s::jsonb, %(key)s, %(ctx)s))""",
            [{"id": r.id, "note": f"{PUBLIC_CANARY} row {r.id}", "key": r.key, "ctx": r.context,
              "text": r.text, "data": None if r.data is None else psycopg2.Binary(r.data),
              "doc": None if r.doc is MISSING else json.dumps(r.doc)} for r in rows])


def check_decrypts_to_generated(cluster: Cluster, dbname: str, rows: list[Row],
                                source_ciphertexts: dict[int, tuple] | None = None) -> dict[int, tuple]:
    """Decrypts every row of `dbname` and compares with the generated plaintexts; returns
    the ciphertexts (text form) by id."""
    got = cluster.sql(SELECT_DECRYPTED, dbname=dbname)
    assert [g[0] for g in got] == [r.id for r in rows]
    for r, (rid, note, text, data, doc, *_) in zip(rows, got):
        assert note == f"{PUBLIC_CANARY} row {r.id}"
        assert text == r.text, f"row {rid}: encrypted_text decrypted to a different value"
        assert (None if data is None else bytes(data)) == r.data, f"row {rid}: bytea differs"
        if r.doc is MISSING:
            assert doc is None, f"row {rid}: SQL NULL jsonb came back as {doc!r}"
        else:
            assert doc is not None and json.loads(doc) == r.doc, f"row {rid}: jsonb differs"
    ciphertexts = {g[0]: tuple(g[5:]) for g in got}
    if source_ciphertexts is not None:
        assert ciphertexts == source_ciphertexts, "restore changed stored ciphertext"
    return ciphertexts


@dataclass
class Source:
    cluster: Cluster
    rows: list[Row]
    ciphertexts: dict[int, tuple]
    custom_dump: Path
    plain_dump: Path


@pytest.fixture(scope="module")
def source(module_cluster_factory, tmp_path_factory) -> Source:
    cluster = module_cluster_factory.create("source")
    cluster.create_database(SOURCE_DB)
    conn = cluster.connect(SOURCE_DB)
    rows = make_rows()
    with conn.cursor() as cur:
        cur.execute("SELECT envelope.create_key('k1'), envelope.create_key('k2')")
        cur.execute("""CREATE TABLE secrets (id int PRIMARY KEY, note text NOT NULL,
                         t envelope.encrypted_text, b envelope.encrypted_bytea,
                         j envelope.encrypted_jsonb)""")
    insert_rows(conn, rows[:ROTATE_AFTER])
    with conn.cursor() as cur:
        cur.execute("SELECT envelope.rotate_key('k1')")
        assert cur.fetchone() == (2,)
    insert_rows(conn, rows[ROTATE_AFTER:])

    ciphertexts = check_decrypts_to_generated(cluster, SOURCE_DB, rows)
    # Three DEKs are really in use: k1 versions 1 and 2, k2 version 1.
    key_ids = dict(cluster.sql("SELECT name, key_id FROM envelope.key", dbname=SOURCE_DB))
    used = {dek_of(ct) for cts in ciphertexts.values() for ct in cts if ct is not None}
    assert used == {(key_ids["k1"], 1), (key_ids["k1"], 2), (key_ids["k2"], 1)}

    dump_dir = tmp_path_factory.mktemp("dumps")
    custom_dump, plain_dump = dump_dir / "src.dump", dump_dir / "src.sql"
    # Uncompressed, so that the plaintext check below would see plaintext if it were there.
    cluster.pg_dump(SOURCE_DB, "--format=custom", "--compress=0", "--file", custom_dump)
    cluster.pg_dump(SOURCE_DB, "--format=plain", "--file", plain_dump)
    return Source(cluster, rows, ciphertexts, custom_dump, plain_dump)


def keys_listing(cluster: Cluster, dbname: str) -> list[tuple]:
    return cluster.sql("""SELECT k.name, k.key_id, k.kms, k.kek, k.state, k.current_version,
                                 d.version, d.state, d.wrapped
                            FROM envelope.key k JOIN envelope.data_key d USING (key_id)
                           ORDER BY 1, 7""", dbname=dbname)


def check_new_encryption_uses_current_version(cluster: Cluster, dbname: str) -> None:
    ct = cluster.scalar("SELECT envelope.encrypt_field('after restore'::text, 'k1')::text",
                        dbname=dbname)
    key_id = cluster.scalar("SELECT key_id FROM envelope.key WHERE name = 'k1'", dbname=dbname)
    assert dek_of(ct) == (key_id, 2)
    assert cluster.scalar("SELECT envelope.decrypt_field(%s::envelope.encrypted_text)", (ct,),
                          dbname=dbname) == "after restore"


def test_custom_format_restore_decrypts_every_row(source):
    cluster = source.cluster
    cluster.create_database("restored_custom", extension=False)
    cluster.pg_restore("--exit-on-error", "--dbname", "restored_custom", source.custom_dump)
    assert keys_listing(cluster, "restored_custom") == keys_listing(cluster, SOURCE_DB)
    check_decrypts_to_generated(cluster, "restored_custom", source.rows, source.ciphertexts)
    check_new_encryption_uses_current_version(cluster, "restored_custom")


def test_plain_format_restore_decrypts_every_row(source):
    cluster = source.cluster
    cluster.create_database("restored_plain", extension=False)
    cluster.psql("restored_plain", "--quiet", "--file", source.plain_dump)
    assert keys_listing(cluster, "restored_plain") == keys_listing(cluster, SOURCE_DB)
    check_decrypts_to_generated(cluster, "restored_plain", source.rows, source.ciphertexts)
    check_new_encryption_uses_current_version(cluster, "restored_plain")


def test_restored_context_binding_still_holds(source):
    """Restored rows are bound to their row: another row's context does not open them."""
    cluster = source.cluster
    cluster.create_database("restored_ctx", extension=False)
    cluster.pg_restore("--exit-on-error", "--dbname", "restored_ctx", source.custom_dump)
    for query in ("SELECT envelope.decrypt_field(t, '2') FROM secrets WHERE id = 1",
                  "SELECT envelope.decrypt_field(t) FROM secrets WHERE id = 1",
                  "SELECT envelope.decrypt_field(t, '1') FROM secrets WHERE id = 2",
                  "SELECT envelope.decrypt_field(t::text::envelope.encrypted_bytea, '1') "
                  "FROM secrets WHERE id = 1"):
        with pytest.raises(psycopg2.Error) as exc:
            cluster.sql(query, dbname="restored_ctx")
        assert pg_error(exc)["sqlstate"] == "22000", query


def test_dump_files_contain_no_plaintext(source):
    rows = {r.id: r for r in source.rows}
    large = rows[42]
    text_needles = [*TEXT_MARKERS, JSON_MARKER, large.text[50_000:50_064], large.doc["blob"][:64]]
    text_needles += [r.text for r in source.rows if r.text and len(r.text) >= 40 and "\\" not in r.text
                     and "\t" not in r.text and "\n" not in r.text][:10]
    byte_needles = [BYTEA_MARKER, large.data[1000:1032]]
    for dump in (source.custom_dump, source.plain_dump):
        content = dump.read_bytes()
        # Positive controls: the dump holds the plain column and the ciphertext.
        assert PUBLIC_CANARY.encode() in content, f"{dump.name}: the grep would not find plaintext"
        assert source.ciphertexts[1][0].encode() in content
        for needle in text_needles:
            assert needle.encode() not in content, f"{dump.name} contains plaintext {needle[:30]!r}"
        for needle in byte_needles:
            assert needle not in content, f"{dump.name} contains bytea plaintext"
            assert needle.hex().encode() not in content, f"{dump.name} contains bytea plaintext (hex)"
        for spelling in key_spellings(source.cluster.master_key_hex):
            assert spelling.encode() not in content, f"{dump.name} contains the master key"


TRY_DECRYPT = """
CREATE FUNCTION try_decrypt(v {type}, ctx text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  IF v IS NULL THEN
    RETURN NULL;
  END IF;
  PERFORM envelope.decrypt_field(v, ctx);
  RETURN 'decrypted';
EXCEPTION WHEN OTHERS THEN
  RETURN SQLSTATE;
END $$"""


def test_restore_under_other_master_key_keeps_data_but_refuses_to_decrypt(source,
                                                                           module_cluster_factory):
    other = module_cluster_factory.create("other-key")
    assert other.master_key_hex != source.cluster.master_key_hex
    other.create_database("restored", extension=False)
    other.pg_restore("--exit-on-error", "--dbname", "restored", source.custom_dump)

    assert other.scalar("SELECT count(*) FROM secrets", dbname="restored") == ROWS
    got = other.sql("SELECT id, t::text, b::text, j::text FROM secrets ORDER BY id", dbname="restored")
    assert {g[0]: tuple(g[1:]) for g in got} == source.ciphertexts

    # Every non-NULL value of every type and DEK version fails with 22000; none decrypts.
    conn = other.connect("restored")
    with conn.cursor() as cur:
        for type_ in ("envelope.encrypted_text", "envelope.encrypted_bytea", "envelope.encrypted_jsonb"):
            cur.execute(TRY_DECRYPT.format(type=type_))
        cur.execute("""SELECT o.outcome, count(*)
                         FROM secrets,
                              LATERAL (SELECT CASE WHEN id % 2 = 1 THEN id::text END AS ctx) c,
                              LATERAL (VALUES (try_decrypt(t, c.ctx)), (try_decrypt(b, c.ctx)),
                                              (try_decrypt(j, c.ctx))) AS o(outcome)
                        WHERE o.outcome IS NOT NULL GROUP BY 1""")
        outcomes = dict(cur.fetchall())
    non_null = sum(v is not None for cts in source.ciphertexts.values() for v in cts)
    assert outcomes == {"22000": non_null}

    with pytest.raises(psycopg2.Error) as exc:
        other.sql("SELECT envelope.decrypt_field(t, '1') FROM secrets WHERE id = 1", dbname="restored")
    err = pg_error(exc)
    assert err["sqlstate"] == "22000"
    # It names the key and version, and points at the master key.
    assert '"k1"' in err["message"] and "version 1" in err["message"], err["text"]
    assert "master key" in f"{err['detail']} {err['hint']}".lower(), err["text"]
    # Encrypting with a restored key needs the same DEK: refused the same way.
    with pytest.raises(psycopg2.Error) as exc:
        other.sql("SELECT envelope.encrypt_field('x'::text, 'k2')", dbname="restored")
    assert pg_error(exc)["sqlstate"] == "22000"
    for cluster in (source.cluster, other):
        cluster.assert_log_free_of(key_spellings(source.cluster.master_key_hex)
                                   + key_spellings(other.master_key_hex))
