"""The audit trail and the key usage view (issue 11 parts 4 and 5).

`envelope.audit` = log | table | all records, per statement and key version (not per
value): decrypts, refused decrypts, protected reads shown as ciphertext (withheld),
authentication failures, refused key administration, and key lifecycle events of
committed transactions. `log` writes a pgaudit-style `AUDIT: ENVELOPE,...` line,
`table` a row of envelope.audit_log (written by the database's background writer,
hash-chained, checked by envelope.audit_verify(), trimmed by envelope.audit_retention).
On a standby table records go to the server log with one WARNING per backend.
envelope.key_usage counts per key and version of this database.

Everything a user does is done as the roles themselves (not as superuser): alice holds
encrypt+decrypt on tenant_a, carol decrypt on tenant_* through membership of `readers`,
bob nothing, keyadm admin on life_*. The superuser only sets up and reads the trail.
"""
from __future__ import annotations

import csv
import json
import time

import psycopg2
import pytest

from pgcluster import Cluster, pg_error

from test_replicas import REPLICATION, make_standby, wait_for, wait_for_replay

FIELDS = ["tag", "event", "key", "version", "object", "count", "session_user", "current_user", "application",
          "client", "database_oid", "pid", "statement_at", "query_id", "detail"]
N_SCAN = 10_000
SECRET = "MARKER-plaintext-Quillfeather-7731"  # every stored value starts with it
USERS = ("alice", "bob", "carol", "keyadm", "readers")

SETUP = [
    "CREATE EXTENSION pg_envelope",
    "CREATE ROLE readers NOLOGIN",
    "CREATE ROLE alice LOGIN",
    "CREATE ROLE bob LOGIN",
    "CREATE ROLE carol LOGIN IN ROLE readers",
    "CREATE ROLE keyadm LOGIN",
    f"GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA envelope TO {', '.join(USERS)}",
    "REVOKE EXECUTE ON FUNCTION envelope.create_kms(text, text, jsonb), envelope.alter_kms(text, jsonb), "
    f"envelope.audit_verify(), envelope.key_usage_reset(), envelope.key_usage_counts() FROM {', '.join(USERS)}",
    "SELECT envelope.create_key('tenant_a'), envelope.create_key('tenant_b')",
    "SELECT envelope.grant_key('tenant_a', 'alice', 'decrypt')",
    "SELECT envelope.grant_key('tenant_a', 'alice', 'encrypt')",
    "SELECT envelope.grant_key('tenant_*', 'readers', 'decrypt')",
    "SELECT envelope.grant_key('life_*', 'keyadm', 'admin')",
    "CREATE TABLE t (id int PRIMARY KEY, k text, v envelope.encrypted_text)",
    "GRANT SELECT, INSERT ON t TO PUBLIC",
    # A protected column (read as ciphertext by a role without decrypt: withheld).
    "CREATE TABLE people (id int PRIMARY KEY, email text)",
    "GRANT SELECT ON people TO PUBLIC",
]


def make_pg(factory, audit: str, name: str = "audit", **settings) -> Cluster:
    pg = factory.create(name, settings={"listen_addresses": "127.0.0.1", "envelope.audit": audit, **settings})
    setup_db(pg)
    return pg


def setup_db(pg: Cluster, dbname: str = "postgres") -> None:
    for q in SETUP:
        if q.startswith("CREATE ROLE") and dbname != "postgres":
            continue
        pg.sql(q, dbname=dbname)
    pg.sql("INSERT INTO t SELECT g, 'tenant_a', envelope.encrypt_field(%s || g, 'tenant_a', g::text) "
           "FROM generate_series(1, %s) g", (SECRET, N_SCAN), dbname=dbname)
    pg.sql("INSERT INTO t SELECT g, 'tenant_b', envelope.encrypt_field(%s || g, 'tenant_b', g::text) "
           "FROM generate_series(100001, 100003) g", (SECRET,), dbname=dbname)
    # Protected while empty: the column's trigger seals every value inserted.
    pg.sql("SELECT envelope.protect_column('people', 'email', 'tenant_a', context_column => 'id')", dbname=dbname)
    pg.sql("INSERT INTO people SELECT g, %s || '-mail-' || g FROM generate_series(1, 3) g", (SECRET,),
           dbname=dbname)


def audit_lines(pg: Cluster, since: int) -> list[dict]:
    out = []
    for line in pg.read_log(since).splitlines():
        i = line.find("AUDIT: ENVELOPE,")
        if i >= 0:
            row = next(csv.reader([line[i + len("AUDIT: "):]]))
            assert len(row) == len(FIELDS), line
            out.append(dict(zip(FIELDS, row)))
    return out


def wait_lines(pg: Cluster, since: int, pred, n: int, timeout: float = 10) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        got = [r for r in audit_lines(pg, since) if pred(r)]
        if len(got) >= n or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def rows(pg: Cluster, where: str = "true", params=(), dbname: str = "postgres") -> list[dict]:
    res = pg.sql(f"SELECT row_to_json(a) FROM envelope.audit_log a WHERE {where} ORDER BY seq", params,
                 dbname=dbname)
    return [r[0] for r in res]


def wait_rows(pg: Cluster, where: str, n: int, params=(), dbname: str = "postgres", timeout: float = 15,
              settle: float = 0.4) -> list[dict]:
    """Polls envelope.audit_log (the writer is asynchronous) until `n` rows match, then
    waits `settle` seconds more so that any extra row would show too."""
    deadline = time.monotonic() + timeout
    while True:
        got = rows(pg, where, params, dbname)
        if len(got) >= n:
            break
        assert time.monotonic() < deadline, f"only {len(got)} of {n} audit_log rows where {where}: {got}"
        time.sleep(0.05)
    time.sleep(settle)
    return rows(pg, where, params, dbname)


def one(conn, query, params=None):
    with conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchone()[0]


def fails(conn, query, params=None) -> dict:
    with conn.cursor() as cur, pytest.raises(psycopg2.Error) as e:
        cur.execute(query, params)
    if not conn.autocommit:
        conn.rollback()
    return pg_error(e)


def tcp(pg: Cluster, user: str, application_name: str = "", dbname: str = "postgres", autocommit: bool = True):
    conn = psycopg2.connect(host="127.0.0.1", port=pg.port, dbname=dbname, user=user,
                            application_name=application_name, connect_timeout=10)
    conn.autocommit = autocommit
    pg._connections.append(conn)
    return conn


SCAN = "SELECT count(envelope.decrypt_field(v, id::text)) FROM t WHERE k = %s"


# ---- log mode --------------------------------------------------------------------------

def test_log_mode_one_line_per_statement_and_key(cluster_factory):
    pg = make_pg(cluster_factory, "log")
    db_oid = pg.scalar("SELECT oid FROM pg_database WHERE datname = 'postgres'")
    alice = tcp(pg, "alice", "billing, \"nightly\"")  # a name that needs CSV quoting
    pid = one(alice, "SELECT pg_backend_pid()")
    since = pg.log_position()
    assert one(alice, SCAN, ("tenant_a",)) == N_SCAN
    lines = wait_lines(pg, since, lambda r: r["event"] == "decrypt", 1)
    time.sleep(0.3)
    lines = [r for r in audit_lines(pg, since)]
    assert len(lines) == 1, lines  # one line for 10k values, not one per value
    r = lines[0]
    assert r["tag"] == "ENVELOPE"
    assert (r["event"], r["key"], r["version"], r["object"], r["count"]) == ("decrypt", "tenant_a", "1", "",
                                                                           str(N_SCAN))
    assert (r["session_user"], r["current_user"]) == ("alice", "alice")
    assert r["application"] == "billing, \"nightly\""
    assert r["client"] == "127.0.0.1"
    assert r["database_oid"] == str(db_oid) and r["pid"] == str(pid)
    assert r["statement_at"].startswith(time.strftime("%Y-", time.gmtime()))
    assert r["detail"] == ""
    # The statement's text is never attached to the line.
    assert "decrypt_field" not in pg.read_log(since)

    # carol decrypts through the pattern grant after SET ROLE readers: session user
    # carol, current user readers. Two keys and two versions in one statement: a line each.
    pg.sql("SELECT envelope.rotate_key('tenant_b')")
    pg.sql("INSERT INTO t VALUES (100004, 'tenant_b', envelope.encrypt_field(%s, 'tenant_b', '100004'))",
           (SECRET,))
    carol = pg.connect(user="carol")  # unix socket
    with carol.cursor() as cur:
        cur.execute("SET ROLE readers")
    since = pg.log_position()
    assert one(carol, "SELECT count(envelope.decrypt_field(v, id::text)) FROM t WHERE id <= 5 OR id > 100000") == 9
    lines = wait_lines(pg, since, lambda r: True, 3)
    time.sleep(0.3)
    got = sorted((r["event"], r["key"], r["version"], r["count"], r["session_user"], r["current_user"],
                  r["client"]) for r in audit_lines(pg, since))
    assert got == [("decrypt", "tenant_a", "1", "5", "carol", "readers", "[local]"),
                   ("decrypt", "tenant_b", "1", "3", "carol", "readers", "[local]"),
                   ("decrypt", "tenant_b", "2", "1", "carol", "readers", "[local]")], got
    # Two statements of one transaction: a line each (per statement, not per transaction).
    alice2 = tcp(pg, "alice", autocommit=False)
    since = pg.log_position()
    with alice2.cursor() as cur:
        cur.execute("SELECT count(envelope.decrypt_field(v, id::text)) FROM t WHERE id <= 2")
        cur.execute("SELECT count(envelope.decrypt_field(v, id::text)) FROM t WHERE id <= 3")
    alice2.commit()
    lines = wait_lines(pg, since, lambda r: r["event"] == "decrypt", 2)
    time.sleep(0.3)
    assert sorted(r["count"] for r in audit_lines(pg, since)) == ["2", "3"]
    pg.assert_log_free_of([SECRET])


# ---- table mode ------------------------------------------------------------------------

def test_table_mode_rows(cluster_factory):
    pg = make_pg(cluster_factory, "table")
    alice = tcp(pg, "alice", "report-job")
    pid = one(alice, "SELECT pg_backend_pid()")
    since = pg.log_position()
    assert one(alice, SCAN, ("tenant_a",)) == N_SCAN
    got = wait_rows(pg, "current_user_name = 'alice'", 1)
    assert len(got) == 1, got
    r = got[0]
    assert (r["event"], r["key_name"], r["key_version"], r["object"], r["value_count"]) == (
        "decrypt", "tenant_a", 1, None, N_SCAN)
    assert (r["session_user_name"], r["application_name"], r["client_addr"], r["database_name"],
            r["backend_pid"]) == ("alice", "report-job", "127.0.0.1", "postgres", pid)
    assert r["statement_at"] is not None and r["logged_at"] >= r["statement_at"]
    assert r["hash"] and r["seq"] >= 1
    # table mode writes no AUDIT line.
    assert audit_lines(pg, since) == []
    # The writer is a background worker of its own, gone about a second after its queue emptied.
    wait_for(lambda: pg.scalar("SELECT count(*) FROM pg_stat_activity "
                               "WHERE backend_type = 'pg_envelope audit writer'") == 0,
             timeout=10, what="the audit writer to exit")


def test_all_mode_writes_both(cluster_factory):
    pg = make_pg(cluster_factory, "all")
    alice = tcp(pg, "alice")
    since = pg.log_position()
    assert one(alice, SCAN, ("tenant_a",)) == N_SCAN
    assert len(wait_rows(pg, "current_user_name = 'alice' AND event = 'decrypt'", 1)) == 1
    lines = [r for r in audit_lines(pg, since) if r["current_user"] == "alice"]
    assert [(r["event"], r["count"]) for r in lines] == [("decrypt", str(N_SCAN))]


def test_denied_failed_read_only_and_rolled_back_are_recorded(cluster_factory):
    pg = make_pg(cluster_factory, "table")
    bob = tcp(pg, "bob")
    # A refused decrypt in autocommit.
    err = fails(bob, SCAN, ("tenant_a",))
    assert err["sqlstate"] == "42501", err
    got = wait_rows(pg, "current_user_name = 'bob'", 1)
    assert [(r["event"], r["key_name"], r["key_version"], r["value_count"]) for r in got] == [
        ("decrypt_denied", "tenant_a", 1, 1)]
    # A refused decrypt inside an explicit transaction that is rolled back.
    bob_tx = tcp(pg, "bob", autocommit=False)
    with bob_tx.cursor() as cur:
        cur.execute("SELECT 1")
    err = fails(bob_tx, "SELECT envelope.decrypt_field(v, id::text) FROM t WHERE id = 100001")
    assert err["sqlstate"] == "42501"
    got = wait_rows(pg, "current_user_name = 'bob' AND key_name = 'tenant_b'", 1)
    assert [(r["event"], r["value_count"]) for r in got] == [("decrypt_denied", 1)]
    # A successful decrypt in a transaction that is rolled back: the values were read.
    alice = tcp(pg, "alice", autocommit=False)
    with alice.cursor() as cur:
        cur.execute("SELECT count(envelope.decrypt_field(v, id::text)) FROM t WHERE id <= 4")
        assert cur.fetchone()[0] == 4
    alice.rollback()
    got = wait_rows(pg, "current_user_name = 'alice'", 1)
    assert [(r["event"], r["value_count"]) for r in got] == [("decrypt", 4)]
    # A decrypt inside BEGIN READ ONLY (the worker writes in its own transaction).
    with alice.cursor() as cur:
        cur.execute("BEGIN READ ONLY")
        cur.execute("SELECT count(envelope.decrypt_field(v, id::text)) FROM t WHERE id <= 6")
        assert cur.fetchone()[0] == 6
    alice.commit()
    got = wait_rows(pg, "current_user_name = 'alice'", 2)
    assert [(r["event"], r["value_count"]) for r in got] == [("decrypt", 4), ("decrypt", 6)]
    # decrypt_failed: a wrong context, and a tampered value.
    alice.autocommit = True
    err = fails(alice, "SELECT envelope.decrypt_field(v, 'not-the-context') FROM t WHERE id = 1")
    assert err["sqlstate"] == "22000", err
    pg.sql("CREATE TABLE tampered AS SELECT id, envelope.encrypt_field(%s, 'tenant_a', id::text) AS v "
           "FROM generate_series(1, 1) id", (SECRET,))
    pg.sql("UPDATE tampered SET v = overlay(v::text PLACING (CASE WHEN substr(v::text, 40, 1) = 'A' "
           "THEN 'B' ELSE 'A' END) FROM 40 FOR 1)::envelope.encrypted_text")
    pg.sql("GRANT SELECT ON tampered TO alice")
    err = fails(alice, "SELECT envelope.decrypt_field(v, id::text) FROM tampered")
    assert err["sqlstate"] == "22000", err
    got = wait_rows(pg, "current_user_name = 'alice' AND event = 'decrypt_failed'", 2)
    assert [(r["key_name"], r["key_version"], r["value_count"]) for r in got] == [("tenant_a", 1, 1)] * 2


def test_withheld_and_protected_column_object(cluster_factory):
    pg = make_pg(cluster_factory, "table")
    bob = tcp(pg, "bob")
    with bob.cursor() as cur:
        cur.execute("SELECT email FROM people ORDER BY id")
        vals = [r[0] for r in cur.fetchall()]
    assert len(vals) == 3 and all(v.startswith("penv1:") for v in vals), vals
    got = wait_rows(pg, "current_user_name = 'bob'", 1)
    assert [(r["event"], r["key_name"], r["object"], r["value_count"]) for r in got] == [
        ("withheld", "tenant_a", "public.people.email", 3)]
    alice = tcp(pg, "alice")
    with alice.cursor() as cur:
        cur.execute("SELECT email FROM people ORDER BY id")
        assert [r[0] for r in cur.fetchall()] == [f"{SECRET}-mail-{i}" for i in (1, 2, 3)]
    got = wait_rows(pg, "current_user_name = 'alice'", 1)
    assert [(r["event"], r["key_name"], r["object"], r["value_count"]) for r in got] == [
        ("decrypt", "tenant_a", "public.people.email", 3)]


def test_lifecycle_events_and_rolled_back_rotate(cluster_factory):
    pg = make_pg(cluster_factory, "table")
    adm = tcp(pg, "keyadm")
    for q in ("SELECT envelope.create_key('life_1')",
              "SELECT envelope.rotate_key('life_1')",
              "SELECT envelope.rewrap_key('life_1')",
              "SELECT envelope.grant_key('life_1', 'alice', 'decrypt')",
              "SELECT envelope.revoke_key('life_1', 'alice', 'decrypt')",
              "SELECT envelope.disable_key('life_1')",
              "SELECT envelope.enable_key('life_1')"):
        one(adm, q)
    # A rotate_key that is rolled back is not recorded; its version number is not used.
    adm.autocommit = False
    one(adm, "SELECT envelope.rotate_key('life_1')")
    adm.rollback()
    adm.autocommit = True
    one(adm, "SELECT envelope.destroy_key('life_1')")
    # KMS configuration (superuser only).
    pg.sql("SELECT envelope.create_kms('v', 'vault-transit', '{\"address\": \"https://v.example\"}')")
    pg.sql("SELECT envelope.alter_kms('v', '{\"address\": \"https://w.example\"}')")
    pg.sql("SELECT envelope.drop_kms('v')")
    got = wait_rows(pg, "current_user_name = 'keyadm'", 8)
    events = [(r["event"], r["key_name"], r["key_version"]) for r in got]
    assert events == [("create_key", "life_1", 1), ("rotate_key", "life_1", 2), ("rewrap_key", "life_1", None),
                      ("grant_key", "life_1", None), ("revoke_key", "life_1", None),
                      ("disable_key", "life_1", None), ("enable_key", "life_1", None),
                      ("destroy_key", "life_1", None)], events
    assert all(r["session_user_name"] == "keyadm" and r["value_count"] is None for r in got)
    assert "alice" in got[3]["detail"] and "decrypt" in got[3]["detail"], got[3]
    assert "alice" in got[4]["detail"], got[4]
    kms = wait_rows(pg, "event LIKE '%%_kms'", 3)
    assert [(r["event"], r["current_user_name"]) for r in kms] == [
        ("create_kms", "postgres"), ("alter_kms", "postgres"), ("drop_kms", "postgres")]
    assert all("v" in (r["detail"] or "") for r in kms)


def test_admin_denied(cluster_factory):
    pg = make_pg(cluster_factory, "table")
    bob = tcp(pg, "bob")
    for q in ("SELECT envelope.rotate_key('tenant_a')", "SELECT envelope.destroy_key('tenant_b')",
              "SELECT envelope.grant_key('tenant_a', 'bob', 'decrypt')"):
        assert fails(bob, q)["sqlstate"] == "42501"
    got = wait_rows(pg, "current_user_name = 'bob'", 3)
    # A refused grant_key names no key (by design: the pattern given is not repeated).
    assert [(r["event"], r["key_name"]) for r in got] == [
        ("admin_denied", "tenant_a"), ("admin_denied", "tenant_b"), ("admin_denied", "")], got
    # The refused administration changed nothing and recorded no lifecycle event.
    assert pg.scalar("SELECT count(*) FROM envelope.audit_log WHERE event = 'rotate_key' "
                     "AND key_name = 'tenant_a'") == 0
    # encrypt without the privilege: encrypt_denied.
    assert fails(bob, "SELECT envelope.encrypt_field('x', 'tenant_a')")["sqlstate"] == "42501"
    got = wait_rows(pg, "current_user_name = 'bob' AND event = 'encrypt_denied'", 1)
    assert [(r["key_name"], r["value_count"]) for r in got] == [("tenant_a", 1)]


def test_plaintext_never_in_trail_or_log(cluster_factory):
    pg = make_pg(cluster_factory, "all")
    since = pg.log_position()
    alice, bob = tcp(pg, "alice"), tcp(pg, "bob")
    assert one(alice, SCAN, ("tenant_a",)) == N_SCAN
    with alice.cursor() as cur:
        cur.execute("SELECT email FROM people")
    with bob.cursor() as cur:
        cur.execute("SELECT email FROM people")
    fails(bob, SCAN, ("tenant_a",))
    fails(alice, "SELECT envelope.decrypt_field(v, 'wrong') FROM t WHERE id = 7")
    # An encrypt by alice with the marker as a bound parameter value (not in the log).
    one(alice, "SELECT envelope.encrypt_field(%s, 'tenant_a') IS NOT NULL", (SECRET + "-new",))
    got = wait_rows(pg, "current_user_name IN ('alice', 'bob')", 5)
    assert {r["event"] for r in got} == {"decrypt", "withheld", "decrypt_denied", "decrypt_failed"}
    dump = json.dumps(rows(pg))
    assert SECRET not in dump and "Quillfeather" not in dump
    assert wait_lines(pg, since, lambda r: r["current_user"] in ("alice", "bob"), 5)
    pg.assert_log_free_of([SECRET, "Quillfeather"])


# ---- the hash chain --------------------------------------------------------------------

def verify(pg: Cluster) -> dict:
    res = pg.sql("SELECT row_to_json(v) FROM envelope.audit_verify() v")
    return res[0][0]


def test_audit_verify_detects_tampering(cluster_factory):
    pg = make_pg(cluster_factory, "table")
    alice = tcp(pg, "alice")
    for i in range(1, 7):
        one(alice, "SELECT count(envelope.decrypt_field(v, id::text)) FROM t WHERE id <= %s", (i,))
    wait_rows(pg, "current_user_name = 'alice'", 6)
    n, head_seq, head_hash = pg.sql("SELECT count(*), max(seq), encode((array_agg(hash ORDER BY seq DESC))[1], "
                                    "'hex') FROM envelope.audit_log")[0]
    v = verify(pg)
    assert v["ok"] is True and v["rows_checked"] == n and v["first_bad_seq"] is None, v
    assert (v["head_seq"], v["head_hash"]) == (head_seq, head_hash)
    # Every row links to the one before.
    assert pg.scalar("SELECT count(*) FROM envelope.audit_log a JOIN envelope.audit_log b ON b.seq = a.seq + 1 "
                     "WHERE b.prev_hash IS DISTINCT FROM a.hash") == 0
    mid = pg.scalar("SELECT seq FROM envelope.audit_log WHERE current_user_name = 'alice' "
                    "ORDER BY seq OFFSET 2 LIMIT 1")

    # An UPDATE of a row.
    pg.sql("UPDATE envelope.audit_log SET value_count = value_count + 1 WHERE seq = %s", (mid,))
    v = verify(pg)
    assert (v["ok"], v["first_bad_seq"], v["problem"]) == (False, mid, "the row does not match its hash"), v
    pg.sql("UPDATE envelope.audit_log SET value_count = value_count - 1 WHERE seq = %s", (mid,))
    assert verify(pg)["ok"] is True
    # A changed attribution, even with the row's hash recomputed: the next row's link breaks.
    pg.sql("UPDATE envelope.audit_log SET current_user_name = 'bob' WHERE seq = %s", (mid,))
    pg.sql("UPDATE envelope.audit_log a SET hash = envelope.audit_hash(a) WHERE seq = %s", (mid,))
    v = verify(pg)
    assert (v["ok"], v["first_bad_seq"], v["problem"]) == (False, mid + 1, "it does not link to the row before"), v
    pg.sql("UPDATE envelope.audit_log SET current_user_name = 'alice' WHERE seq = %s", (mid,))
    pg.sql("UPDATE envelope.audit_log a SET hash = envelope.audit_hash(a) WHERE seq = %s", (mid,))
    assert verify(pg)["ok"] is True
    # A DELETE of a middle row.
    saved = pg.sql("SELECT * FROM envelope.audit_log WHERE seq = %s", (mid,))[0]
    pg.sql("DELETE FROM envelope.audit_log WHERE seq = %s", (mid,))
    v = verify(pg)
    assert (v["ok"], v["first_bad_seq"], v["problem"]) == (False, mid + 1, "rows before it are missing"), v
    pg.sql("INSERT INTO envelope.audit_log VALUES (" + ", ".join(["%s"] * len(saved)) + ")", saved)
    assert verify(pg)["ok"] is True
    # A changed prev_hash: the row no longer matches its hash...
    pg.sql("UPDATE envelope.audit_log SET prev_hash = sha256('forged') WHERE seq = %s", (mid,))
    v = verify(pg)
    assert (v["ok"], v["first_bad_seq"], v["problem"]) == (False, mid, "the row does not match its hash"), v
    # ... and with its hash recomputed, it does not link to the row before.
    pg.sql("UPDATE envelope.audit_log a SET hash = envelope.audit_hash(a) WHERE seq = %s", (mid,))
    v = verify(pg)
    assert (v["ok"], v["first_bad_seq"], v["problem"]) == (False, mid, "it does not link to the row before"), v


def test_chain_head_is_logged(cluster_factory):
    pg = make_pg(cluster_factory, "table")
    alice = tcp(pg, "alice")
    one(alice, SCAN, ("tenant_a",))
    wait_rows(pg, "current_user_name = 'alice'", 1)
    # At most once a minute per writer: the first batch after setup logged it.
    m = pg.wait_for_log(r"pg_envelope audit chain head: seq (\d+) hash ([0-9a-f]{64})")
    seq, hexhash = int(m.group(1)), m.group(2)
    assert pg.scalar("SELECT encode(hash, 'hex') FROM envelope.audit_log WHERE seq = %s", (seq,)) == hexhash


def test_retention_purges_oldest_rows_and_chain_still_verifies(cluster_factory):
    pg = make_pg(cluster_factory, "table")
    alice = tcp(pg, "alice")
    for i in range(1, 6):
        one(alice, "SELECT count(envelope.decrypt_field(v, id::text)) FROM t WHERE id <= %s", (i,))
    wait_rows(pg, "current_user_name = 'alice'", 5)
    n0, max0 = pg.sql("SELECT count(*), max(seq) FROM envelope.audit_log")[0]
    assert n0 >= 8  # setup's lifecycle rows + alice's
    aged = 4
    pg.sql("UPDATE envelope.audit_log SET logged_at = now() - interval '2 days' WHERE seq <= %s", (aged,))
    assert verify(pg)["ok"] is False  # the aged rows no longer match their hashes
    pg.sql("ALTER SYSTEM SET envelope.audit_retention = 1")
    pg.sql("SELECT pg_reload_conf()")
    wait_for(lambda: pg.scalar("SHOW envelope.audit_retention") == "1", what="reload")
    # The next batch of the writer purges rows older than a day.
    since = pg.log_position()
    one(alice, "SELECT count(envelope.decrypt_field(v, id::text)) FROM t WHERE id <= 9")
    time.sleep(1)
    assert "could not write envelope.audit_log" not in pg.read_log(since), pg.read_log(since)
    wait_for(lambda: pg.scalar("SELECT count(*) FROM envelope.audit_log WHERE seq <= %s", (aged,)) == 0,
             timeout=15, what="retention to purge the aged rows")
    remaining = pg.sql("SELECT min(seq), max(seq), count(*) FROM envelope.audit_log")[0]
    assert remaining == (aged + 1, max0 + 1, max0 + 1 - aged), remaining
    v = verify(pg)
    assert v["ok"] is True and v["rows_checked"] == max0 + 1 - aged and v["head_seq"] == max0 + 1, v


def test_only_the_extension_owner_reads_the_trail(cluster_factory):
    pg = make_pg(cluster_factory, "table")
    for user in ("alice", "keyadm", "carol"):
        conn = tcp(pg, user)
        for q in ("SELECT count(*) FROM envelope.audit_log", "SELECT * FROM envelope.audit_verify()",
                  "SELECT * FROM envelope.key_usage", "SELECT envelope.key_usage_reset()"):
            err = fails(conn, q)
            assert err["sqlstate"] == "42501", (user, q, err)
    # A database owner who installed the (trusted) extension without superuser is its
    # owner: it reads the trail and verifies it; the other roles still cannot.
    pg.sql("CREATE ROLE dbo LOGIN")
    pg.sql("CREATE DATABASE owned OWNER dbo")
    dbo = tcp(pg, "dbo", dbname="owned")
    with dbo.cursor() as cur:
        cur.execute("CREATE EXTENSION pg_envelope")
        cur.execute("SELECT envelope.create_key('dbo_key')")
    wait_rows(pg, "event = 'create_key' AND key_name = 'dbo_key'", 1, dbname="owned")
    assert one(dbo, "SELECT count(*) FROM envelope.audit_log WHERE current_user_name = 'dbo'") == 1
    assert one(dbo, "SELECT count(*) FROM envelope.key_usage WHERE key_name = 'dbo_key'") == 1
    alice = tcp(pg, "alice", dbname="owned")
    assert fails(alice, "SELECT count(*) FROM envelope.audit_log")["sqlstate"] == "42501"
    assert fails(alice, "SELECT * FROM envelope.audit_verify()")["sqlstate"] == "42501"
    # The owner verifies the chain (audit_verify is granted to it; it calls audit_hash).
    assert one(dbo, "SELECT ok FROM envelope.audit_verify()") is True


# ---- standby, DROP DATABASE ------------------------------------------------------------

def test_standby_logs_instead_of_writing_the_table(cluster_factory):
    primary = make_pg(cluster_factory, "table", name="primary", **REPLICATION)
    alice_p = tcp(primary, "alice")
    one(alice_p, "SELECT count(envelope.decrypt_field(v, id::text)) FROM t WHERE id <= 2")
    wait_rows(primary, "current_user_name = 'alice'", 1)
    standby = make_standby(cluster_factory, primary)
    standby.configure(master_key_file=standby.base_dir / "master.key",
                      settings={**REPLICATION, "envelope.audit": "table"})
    standby.restart()
    wait_for_replay(primary, standby)
    assert standby.scalar("SHOW envelope.audit") == "table"
    before = primary.sql("SELECT seq, hash FROM envelope.audit_log ORDER BY seq")
    since = standby.log_position()
    s1 = standby.connect(user="alice")
    pid1 = one(s1, "SELECT pg_backend_pid()")
    assert one(s1, SCAN, ("tenant_a",)) == N_SCAN
    assert one(s1, "SELECT count(envelope.decrypt_field(v, id::text)) FROM t WHERE id <= 3") == 3
    warnings = [n for n in s1.notices if "this server is a standby: its audit records go to the server log" in n]
    assert len(warnings) == 1, s1.notices
    lines = wait_lines(standby, since, lambda r: r["pid"] == str(pid1), 2)
    assert [(r["event"], r["key"], r["count"], r["current_user"]) for r in lines] == [
        ("decrypt", "tenant_a", str(N_SCAN), "alice"), ("decrypt", "tenant_a", "3", "alice")], lines
    # A refused decrypt on the standby is logged too.
    s2 = standby.connect(user="bob")
    pid2 = one(s2, "SELECT pg_backend_pid()")
    assert fails(s2, SCAN, ("tenant_a",))["sqlstate"] == "42501"
    assert len([n for n in s2.notices if "this server is a standby" in n]) == 1, s2.notices  # once per backend
    lines = wait_lines(standby, since, lambda r: r["pid"] == str(pid2), 1)
    assert [(r["event"], r["count"], r["current_user"]) for r in lines] == [("decrypt_denied", "1", "bob")]
    # Nothing reached the primary's table (nor, through replay, the standby's).
    time.sleep(1.5)
    assert primary.sql("SELECT seq, hash FROM envelope.audit_log ORDER BY seq") == before
    wait_for_replay(primary, standby)
    assert standby.scalar("SELECT count(*) FROM envelope.audit_log") == len(before)
    standby.assert_log_free_of([SECRET])


def test_drop_database_after_the_writer_ran(cluster_factory):
    pg = make_pg(cluster_factory, "table")
    pg.sql("CREATE DATABASE dropme")
    setup_db(pg, "dropme")
    alice = tcp(pg, "alice", dbname="dropme")
    assert one(alice, SCAN, ("tenant_a",)) == N_SCAN
    alice.close()
    wait_rows(pg, "current_user_name = 'alice'", 1, dbname="dropme", settle=0)
    t0 = time.monotonic()
    pg.sql("DROP DATABASE dropme")
    elapsed = time.monotonic() - t0
    assert elapsed < 4.5, f"DROP DATABASE took {elapsed:.1f} s"
    assert pg.scalar("SELECT count(*) FROM pg_database WHERE datname = 'dropme'") == 0


# ---- key usage -------------------------------------------------------------------------

def usage(pg: Cluster, key: str, dbname: str = "postgres") -> list[tuple]:
    return pg.sql("SELECT version, encrypts, decrypts, denials, withheld, failures, last_used "
                  "FROM envelope.key_usage WHERE key_name = %s ORDER BY version", (key,), dbname=dbname)


def test_key_usage_counts(cluster_factory):
    pg = make_pg(cluster_factory, "off")  # the counters do not depend on the audit trail
    pg.sql("SELECT envelope.key_usage_reset()")
    assert [u[1:7] for u in usage(pg, "tenant_a")] == [(0, 0, 0, 0, 0, None)]
    alice, bob, carol = tcp(pg, "alice"), tcp(pg, "bob"), tcp(pg, "carol")
    one(alice, "SELECT count(envelope.encrypt_field('x' || g, 'tenant_a')) FROM generate_series(1, 5) g")
    assert one(alice, "SELECT count(envelope.decrypt_field(v, id::text)) FROM t WHERE id <= 7") == 7
    assert one(carol, "SELECT count(envelope.decrypt_field(v, id::text)) FROM t WHERE id <= 4") == 4
    assert fails(bob, "SELECT envelope.decrypt_field(v, id::text) FROM t WHERE id = 1")["sqlstate"] == "42501"
    assert fails(bob, "SELECT envelope.encrypt_field('x', 'tenant_a')")["sqlstate"] == "42501"
    with bob.cursor() as cur:
        cur.execute("SELECT email FROM people")
        assert len(cur.fetchall()) == 3
    (ver, enc, dec, den, wh, fail, last1), = usage(pg, "tenant_a")
    assert (ver, enc, dec, den, wh, fail) == (1, 5, 11, 2, 3, 0)
    assert last1 is not None
    # An authentication failure.
    assert fails(alice, "SELECT envelope.decrypt_field(v, 'wrong') FROM t WHERE id = 1")["sqlstate"] == "22000"
    (_, _, dec2, _, _, fail, last2), = usage(pg, "tenant_a")
    assert fail == 1
    assert dec2 in (dec, dec + 1)  # see test_a_failed_value_is_not_a_decrypt
    assert last2 > last1
    # tenant_b untouched so far; a version per row.
    assert [u[1:6] for u in usage(pg, "tenant_b")] == [(0, 0, 0, 0, 0)]
    pg.sql("SELECT envelope.rotate_key('tenant_b')")
    assert one(carol, "SELECT count(envelope.decrypt_field(v, id::text)) FROM t WHERE k = 'tenant_b'") == 3
    assert [u[:6] for u in usage(pg, "tenant_b")] == [(1, 0, 3, 0, 0, 0), (2, 0, 0, 0, 0, 0)]
    # Another database's usage is its own: same key names, same key ids.
    pg.sql("CREATE DATABASE other")
    setup_db(pg, "other")
    pg.sql("SELECT envelope.key_usage_reset()", dbname="other")
    alice_o = tcp(pg, "alice", dbname="other")
    assert one(alice_o, "SELECT count(envelope.decrypt_field(v, id::text)) FROM t WHERE id <= 2") == 2
    assert [u[1:6] for u in usage(pg, "tenant_a", "other")] == [(0, 2, 0, 0, 0)]
    assert [u[1:6] for u in usage(pg, "tenant_a")] == [(5, dec2, 2, 3, 1)]
    # key_usage_reset zeroes this database's counters only.
    pg.sql("SELECT envelope.key_usage_reset()")
    assert [u[1:7] for u in usage(pg, "tenant_a")] == [(0, 0, 0, 0, 0, None)]
    assert [u[1:6] for u in usage(pg, "tenant_a", "other")] == [(0, 2, 0, 0, 0)]
    # Counts are per value even for a 10k scan (the trail aggregates; the counters add up).
    assert one(alice, SCAN, ("tenant_a",)) == N_SCAN
    assert [u[1:6] for u in usage(pg, "tenant_a")] == [(0, N_SCAN, 0, 0, 0)]


def test_a_failed_value_is_not_a_decrypt(cluster_factory):
    """A value that fails authentication released no plaintext: it is a failure, not a
    decrypt, in the counters and in the trail."""
    pg = make_pg(cluster_factory, "table")
    pg.sql("SELECT envelope.key_usage_reset()")
    alice = tcp(pg, "alice")
    assert fails(alice, "SELECT envelope.decrypt_field(v, 'wrong') FROM t WHERE id = 1")["sqlstate"] == "22000"
    got = wait_rows(pg, "current_user_name = 'alice'", 1)
    assert [(r["event"], r["value_count"]) for r in got] == [("decrypt_failed", 1)], got
    assert [u[1:6] for u in usage(pg, "tenant_a")] == [(0, 0, 0, 0, 1)]


def parallel_scan(pg: Cluster) -> tuple[int, int, list[dict]]:
    pg.sql("ANALYZE t")
    alice = tcp(pg, "alice", "par-app")
    with alice.cursor() as cur:
        for q in ("SET parallel_setup_cost = 0", "SET parallel_tuple_cost = 0", "SET min_parallel_table_scan_size = 0",
                  "SET max_parallel_workers_per_gather = 2",
                  "SET parallel_leader_participation = off"):  # the workers decrypt every value
            cur.execute(q)
        cur.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + SCAN, ("tenant_a",))
        plan = json.dumps(cur.fetchone()[0])
    assert '"Workers Launched": 2' in plan, plan
    pid = one(alice, "SELECT pg_backend_pid()")
    since = pg.log_position()
    with alice.cursor() as cur:
        cur.execute(SCAN, ("tenant_a",))
        assert cur.fetchone()[0] == N_SCAN
    time.sleep(0.5)
    return pid, since, [r for r in audit_lines(pg, since) if r["event"] == "decrypt" and r["current_user"] == "alice"]


def test_parallel_scan_counts_add_up(cluster_factory):
    pg = make_pg(cluster_factory, "log")
    pg.sql("SELECT envelope.key_usage_reset()")
    _, _, lines = parallel_scan(pg)
    # The explain analyze run counted too: two scans of N_SCAN values each.
    assert sum(int(r["count"]) for r in lines) == N_SCAN
    assert [u[2] for u in usage(pg, "tenant_a")] == [2 * N_SCAN]


def test_parallel_scan_records_carry_the_session(cluster_factory):
    """A parallel scan's workers count their own rows (docs/access.md: one record per
    process), but every record carries the session's PID, statement time, role and
    application, so that they group into the one statement."""
    pg = make_pg(cluster_factory, "log")
    pid, _, lines = parallel_scan(pg)
    assert lines, "no record of the parallel scan"
    assert {(r["pid"], r["application"], r["session_user"]) for r in lines} == {(str(pid), "par-app", "alice")}, lines
    assert len({r["statement_at"] for r in lines}) == 1, lines
    assert sum(int(r["count"]) for r in lines) == N_SCAN


def test_key_usage_table_full_is_logged_once_and_counts_what_fits(cluster_factory):
    """envelope.key_usage_entries smaller than the key versions in use: every value still
    decrypts, the versions that found a slot are counted exactly, the others are not
    counted at all (never wrongly), and each backend says so once in the server log."""
    pg = cluster_factory.create("usage_full", settings={"envelope.key_usage_entries": 64})
    pg.sql("CREATE EXTENSION pg_envelope")
    n = 200
    pg.sql("SELECT count(envelope.create_key('u_' || g)) FROM generate_series(1, %s) g", (n,))
    pg.sql("CREATE TABLE many AS SELECT g AS id, envelope.encrypt_field('v' || g, 'u_' || g) AS v "
           "FROM generate_series(1, %s) g", (n,))
    pg.sql("SELECT envelope.key_usage_reset()")
    since = pg.log_position()
    conn = pg.connect()
    with conn.cursor() as cur:
        for _ in range(2):
            cur.execute("SELECT count(*) FROM many WHERE envelope.decrypt_field(v) = 'v' || id")
            assert cur.fetchone()[0] == n
    conn.close()
    counted = pg.sql("SELECT key_name, decrypts FROM envelope.key_usage WHERE decrypts > 0")
    assert 0 < len(counted) <= 64, len(counted)
    assert all(d == 2 for _, d in counted), counted  # two scans, one value of each key per scan
    message = "envelope.key_usage_entries is too small"
    pg.wait_for_log(message, since=since, timeout=10)
    assert pg.read_log(since).count(message) == 1
