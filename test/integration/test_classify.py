"""Data classification (docs/access.md, "Classification"): envelope.classify() stores a
column's label as a security label of provider pg_envelope, so pg_dump carries it and a
restore puts it back (through the provider's own check); pg_dump --no-security-labels
leaves it out. envelope.suggest_classification() reads samples of the caller's columns
and returns counts only: no sampled value reaches its result, a NOTICE or the server
log, even with log_statement = all and log_min_messages = debug1.

Tested as the roles themselves: the table's owner labels its columns, an ordinary
role with SELECT runs the scanner.
"""
from __future__ import annotations

import collections
import random
import uuid

import psycopg2
import pytest

from pgcluster import Cluster, pg_error

SOURCE_DB = "src"
OWNER = "cls_owner"
SCANNER = "cls_scanner"
# Everything the server may write about a statement, at the most verbose.
LOG_SETTINGS = {"log_statement": "all", "log_min_messages": "debug1", "log_min_error_statement": "debug1",
                "log_error_verbosity": "verbose", "log_duration": "on"}

LABELS_QUERY = """SELECT tbl::text, col::text, label, data_type, status FROM envelope.classified_columns
                   ORDER BY 1, 2"""
SECLABELS_QUERY = """SELECT objname, provider, label FROM pg_seclabels
                      WHERE objtype = 'column' ORDER BY 1"""

# The labels the owner sets in the source database (table, column, label).
SOURCE_LABELS = [
    ("customers", "email", "pii"),          # then protected: 'protected'
    ("customers", "card_number", "pci"),    # plaintext
    ("customers", "nickname", "public"),    # reviewed, not sensitive
    ("customers", "diagnosis", "phi"),      # renamed after labelling: the label follows
    ("vault", "token", "secret"),           # an encrypted_text column: 'encrypted'
    ("vault", "notes", "confidential"),
]


def luhn_complete(prefix: str) -> str:
    """`prefix` with the Luhn check digit appended."""
    for check in "0123456789":
        digits = [int(c) for c in prefix + check][::-1]
        total = sum(d if i % 2 == 0 else (2 * d) % 10 + (2 * d) // 10 for i, d in enumerate(digits))
        if total % 10 == 0:
            return prefix + check
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def source(module_cluster_factory, tmp_path_factory):
    cluster = module_cluster_factory.create("classify-dump")
    cluster.create_database(SOURCE_DB)
    for stmt in (
        f"CREATE ROLE {OWNER} LOGIN",
        f"GRANT CREATE ON SCHEMA public TO {OWNER}",
        "SELECT envelope.create_key('cls_key')",
        f"SELECT envelope.grant_key('cls_key', '{OWNER}', 'encrypt')",
        f"GRANT EXECUTE ON FUNCTION envelope.encrypt_field(text, text, text) TO {OWNER}",
    ):
        cluster.sql(stmt, dbname=SOURCE_DB)
    owner = cluster.connect(SOURCE_DB, user=OWNER)
    with owner.cursor() as cur:
        cur.execute("""CREATE TABLE customers (id bigint PRIMARY KEY, email text, card_number text,
                                               nickname text, diag text)""")
        cur.execute("INSERT INTO customers VALUES (1, 'ann@example.org', '4111111111111111', 'Annie', 'flu')")
        cur.execute("CREATE TABLE vault (id int, token envelope.encrypted_text, notes text)")
        cur.execute("INSERT INTO vault VALUES (1, envelope.encrypt_field('tok-1'::text, 'cls_key', '1'), 'n')")
        for tbl, col, label in SOURCE_LABELS:
            cur.execute("SELECT envelope.classify(%s, %s, %s)",
                        (tbl, "diag" if col == "diagnosis" else col, label))
        cur.execute("ALTER TABLE customers RENAME COLUMN diag TO diagnosis")
    # protect_column is the superuser's here (its EXECUTE is revoked from PUBLIC); the
    # label set by the owner before stays on the column.
    cluster.sql("SELECT envelope.protect_column('customers', 'email', 'cls_key', context_column => 'id')",
                dbname=SOURCE_DB)
    cluster.sql("CALL envelope.seal_rows('customers', 'email')", dbname=SOURCE_DB)
    labels = cluster.sql(LABELS_QUERY, dbname=SOURCE_DB)
    assert labels == [
        ("customers", "card_number", "pci", "text", "plaintext"),
        ("customers", "diagnosis", "phi", "text", "plaintext"),
        ("customers", "email", "pii", "envelope.protected_text", "protected"),
        ("customers", "nickname", "public", "text", "plaintext"),
        ("vault", "notes", "confidential", "text", "plaintext"),
        ("vault", "token", "secret", "envelope.encrypted_text", "encrypted"),
    ]
    dumps = tmp_path_factory.mktemp("classify-dumps")
    files = {"custom": dumps / "src.dump", "plain": dumps / "src.sql", "nolabels": dumps / "nolabels.sql"}
    cluster.pg_dump(SOURCE_DB, "--format=custom", "--file", files["custom"])
    cluster.pg_dump(SOURCE_DB, "--format=plain", "--file", files["plain"])
    cluster.pg_dump(SOURCE_DB, "--format=plain", "--no-security-labels", "--file", files["nolabels"])
    return cluster, labels, files


def test_dump_holds_the_labels_as_security_labels(source):
    _, _, files = source
    plain = files["plain"].read_text()
    for stmt in ("SECURITY LABEL FOR pg_envelope ON COLUMN public.customers.email IS 'pii';",
                 "SECURITY LABEL FOR pg_envelope ON COLUMN public.customers.diagnosis IS 'phi';",
                 "SECURITY LABEL FOR pg_envelope ON COLUMN public.vault.token IS 'secret';"):
        assert stmt in plain, stmt
    assert plain.count("SECURITY LABEL FOR pg_envelope") == len(SOURCE_LABELS)


@pytest.mark.parametrize("fmt", ["custom", "plain"])
def test_labels_survive_dump_and_restore(source, fmt):
    cluster, labels, files = source
    db = f"restored_{fmt}"
    cluster.create_database(db, extension=False)
    if fmt == "custom":
        cluster.pg_restore("--exit-on-error", "--dbname", db, files["custom"])
    else:
        cluster.psql(db, "--quiet", "--file", files["plain"])
    assert cluster.sql(LABELS_QUERY, dbname=db) == labels
    assert cluster.sql(SECLABELS_QUERY, dbname=db) == cluster.sql(SECLABELS_QUERY, dbname=SOURCE_DB)
    # The report agrees: only the plaintext sensitive columns.
    assert cluster.sql("SELECT tbl::text, col::text, label FROM envelope.unprotected_columns ORDER BY 1, 2",
                       dbname=db) == [("customers", "card_number", "pci"), ("customers", "diagnosis", "phi"),
                                      ("vault", "notes", "confidential")]
    # The restored labels are ordinary labels of their columns: the owner manages them.
    owner = cluster.connect(db, user=OWNER)
    with owner.cursor() as cur:
        cur.execute("SELECT envelope.classify('customers', 'card_number', 'secret')")
        cur.execute("SELECT envelope.unclassify('vault', 'notes')")
    assert ("customers", "card_number", "secret", "text", "plaintext") in cluster.sql(LABELS_QUERY, dbname=db)
    assert len(cluster.sql(LABELS_QUERY, dbname=db)) == len(labels) - 1


def test_restore_checks_the_labels_in_the_dump(source, tmp_path):
    """A dump's SECURITY LABEL goes through the provider's check like any other: a label
    outside the list (a hand-edited or foreign dump) does not restore."""
    cluster, _, files = source
    edited = tmp_path / "edited.sql"
    text = files["plain"].read_text()
    needle = "SECURITY LABEL FOR pg_envelope ON COLUMN public.customers.card_number IS 'pci';"
    assert needle in text
    edited.write_text(text.replace(needle, needle.replace("'pci'", "'top-secret'")))
    cluster.create_database("restored_edited", extension=False)
    proc = cluster.psql("restored_edited", "--quiet", "--file", edited, check=False)
    assert proc.returncode != 0
    assert "unknown classification label" in proc.stderr.decode(), proc.stderr.decode()


def test_no_security_labels_dump_drops_the_labels(source):
    """Documented: pg_dump --no-security-labels (and pg_restore --no-security-labels)
    leave the classification out; the restored columns are unlabelled."""
    cluster, _, files = source
    assert "SECURITY LABEL" not in files["nolabels"].read_text()
    cluster.create_database("restored_nolabels", extension=False)
    cluster.psql("restored_nolabels", "--quiet", "--file", files["nolabels"])
    assert cluster.scalar("SELECT count(*) FROM customers", dbname="restored_nolabels") == 1
    assert cluster.sql(LABELS_QUERY, dbname="restored_nolabels") == []
    # Same for pg_restore's option on a custom-format dump that holds them.
    cluster.create_database("restored_nolabels_custom", extension=False)
    cluster.pg_restore("--exit-on-error", "--no-security-labels", "--dbname", "restored_nolabels_custom",
                       files["custom"])
    assert cluster.sql(LABELS_QUERY, dbname="restored_nolabels_custom") == []
    # ... so the scanner suggests them again (names; the protected email is not sampled).
    suggested = cluster.sql("SELECT relation::text, column_name::text FROM envelope.suggest_classification() "
                            "ORDER BY 1, 2", dbname="restored_nolabels_custom")
    assert ("customers", "card_number") in suggested and ("customers", "diagnosis") in suggested


# ---- the scanner never shows what it samples ------------------------------------------

def marker_rows(n: int = 40):
    """Rows of unique, sensitive-looking values; every value holds a part no log line,
    plan or message could hold by chance."""
    rng = random.Random(uuid.uuid4().int)
    rows = []
    for i in range(n):
        tag = uuid.uuid4().hex[:12]
        card = luhn_complete("4" + "".join(rng.choice("0123456789") for _ in range(14)))
        ssn = f"{rng.randrange(100, 900)}-{rng.randrange(10, 99)}-{rng.randrange(1000, 9999)}"
        phone = f"+1 {rng.randrange(200, 999)} {rng.randrange(200, 999)} {rng.randrange(1000, 9999)}"
        iban = "GB" + f"{rng.randrange(10, 99)}" + "MRKR" + "".join(rng.choice("0123456789") for _ in range(14))
        rows.append((i, f"m.{tag}@marker-{tag}.example", card, ssn, phone, iban, f"free text {tag} marker"))
    return rows


@pytest.fixture
def logged(cluster_factory) -> Cluster:
    cluster = cluster_factory.create("classify-log", settings=LOG_SETTINGS)
    cluster.create_database("app")
    cluster.sql(f"CREATE ROLE {SCANNER} LOGIN", dbname="app")
    return cluster


def test_scanner_never_returns_or_logs_sampled_values(logged):
    rows = marker_rows()
    conn = logged.connect("app")
    with conn.cursor() as cur:
        cur.execute("""CREATE TABLE markers (id int, contact text, pay text, gov text, tel text,
                                             bank text, remarks text)""")
        cur.executemany("INSERT INTO markers VALUES (%s, %s, %s, %s, %s, %s, %s)", rows)
        cur.execute(f"GRANT SELECT ON markers TO {SCANNER}")
    markers = [v for r in rows for v in r[1:]]
    assert len(set(markers)) == len(markers)

    control = f"control-{uuid.uuid4().hex}"
    since = logged.log_position()
    scanner = logged.connect("app", user=SCANNER)
    scanner.notices = collections.deque()  # keep every message, not only the last 50
    with scanner.cursor() as cur:
        cur.execute("SET client_min_messages = debug5")
        cur.execute("SELECT current_user, usesuper FROM pg_user WHERE usename = current_user")
        assert cur.fetchone() == (SCANNER, False)
        cur.execute("SELECT * FROM envelope.suggest_classification()")
        whole_database = cur.fetchall()
        cur.execute("SELECT * FROM envelope.suggest_classification('markers', 5)")
        small_sample = cur.fetchall()
        # A positive control: a value the session does print reaches the client and the log.
        cur.execute("SELECT %s", (control,))
        assert cur.fetchone() == (control,)
        cur.execute(f"DO $$BEGIN RAISE NOTICE 'notice {control}'; END$$")
    scanner.close()
    log = logged.read_log(since)

    # The scans did sample the markers: every shape found, with counts.
    n = len(rows)
    assert [tuple(r[1:]) for r in whole_database] == [
        ("contact", "pii", "values look like email addresses", n, n),
        ("pay", "pci", "values look like payment card numbers (Luhn-valid)", n, n),
        ("gov", "pii", "values look like US social security numbers", n, n),
        ("tel", "pii", "values look like phone numbers", n, n),
        ("bank", "pii", "values look like IBANs", n, n),
    ]
    assert [(r[1], r[4], r[5]) for r in small_sample] == [(c, 5, 5) for c in ("contact", "pay", "gov", "tel", "bank")]
    assert "suggest_classification()" in log, "log_statement = all did not log the call"
    assert control in log, "the log would not show a logged value"

    result_text = repr(whole_database + small_sample)
    notices = "".join(scanner.notices)
    assert f"notice {control}" in notices, "messages to the client were not captured"
    for i, marker in enumerate(markers):
        assert marker not in result_text, f"marker #{i} in the scanner's result"
        assert marker not in notices, f"marker #{i} in a message to the client"
    logged.assert_log_free_of(markers, since=since)


def test_scanner_reads_only_what_the_caller_may_read(logged):
    conn = logged.connect("app")
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE contacts (id int, work text, home text)")
        cur.execute("INSERT INTO contacts SELECT g, 'w' || g || '@example.org', 'h' || g || '@example.org' "
                    "FROM generate_series(1, 10) g")
        cur.execute(f"GRANT SELECT (id, work) ON contacts TO {SCANNER}")
        # Row-level security: the scanner's sample is the rows it may see.
        cur.execute("CREATE TABLE tickets (id int, owner name, body text)")
        cur.execute("INSERT INTO tickets SELECT g, 'someone', 'x' || g || '@example.org' FROM generate_series(1, 10) g")
        cur.execute(f"INSERT INTO tickets SELECT g, '{SCANNER}', 'no address here' FROM generate_series(11, 12) g")
        cur.execute("ALTER TABLE tickets ENABLE ROW LEVEL SECURITY")
        cur.execute("CREATE POLICY own ON tickets USING (owner = current_user)")
        cur.execute(f"GRANT SELECT ON tickets TO {SCANNER}")
    as_superuser = logged.sql("SELECT relation::text, column_name::text, matched FROM envelope.suggest_classification() "
                              "ORDER BY 1, 2", dbname="app")
    assert as_superuser == [("contacts", "home", 10), ("contacts", "work", 10), ("tickets", "body", 10)]
    as_scanner = logged.sql("SELECT relation::text, column_name::text, matched FROM envelope.suggest_classification() "
                            "ORDER BY 1, 2", dbname="app", user=SCANNER)
    assert as_scanner == [("contacts", "work", 10)]


def test_scanner_skips_tables_in_schemas_the_caller_cannot_use(logged):
    conn = logged.connect("app")
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE visible (id int, email text)")
        cur.execute("INSERT INTO visible VALUES (1, 'a@example.org')")
        cur.execute("CREATE SCHEMA closed")
        cur.execute("CREATE TABLE closed.t (id int, contact text)")
        cur.execute("INSERT INTO closed.t VALUES (1, 'b@example.org')")
        cur.execute(f"GRANT SELECT ON visible, closed.t TO {SCANNER}")  # no USAGE on closed
    try:
        got = logged.sql("SELECT relation::text, column_name::text FROM envelope.suggest_classification()",
                         dbname="app", user=SCANNER)
    except psycopg2.Error as e:
        pytest.fail(f"the scan failed: {pg_error(e)['sqlstate']} {pg_error(e)['message']}")
    assert got == [("visible", "email")]
