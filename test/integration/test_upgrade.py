"""Upgrades: ALTER EXTENSION pg_envelope UPDATE from every released version, with
encrypted data, keys on the local and a remote KMS (rotated, disabled, destroyed),
KMS configurations and grants in place; afterwards everything decrypts identically,
and the upgraded extension is, object for object, the same as a fresh install.

The released versions are the install scripts in extension/ other than the current
one. The data of an old version is written by the current library running with
envelope.version_check off (as Citus tests its upgrades): the envelope format and the
key tables' rows are the same in every version.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import psycopg2
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # <repo>/test
from kms_emulators import vault  # noqa: E402

from pgcluster import Cluster, pg_error  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CONTROL = (REPO / "pg_envelope.control").read_text()
CURRENT = re.search(r"default_version\s*=\s*'([^']+)'", CONTROL).group(1)
RELEASED = sorted(m.group(1) for p in (REPO / "extension").glob("pg_envelope--*.sql")
                  if (m := re.fullmatch(r"pg_envelope--([0-9.]+)\.sql", p.name)) and m.group(1) != CURRENT)
TOKEN = "upgrade-suite-token"

# A description of every object of the extension, comparable across databases.
DESCRIBE = r"""
WITH ext AS (SELECT oid, extconfig, extcondition FROM pg_extension WHERE extname = 'pg_envelope'),
members AS (
  SELECT d.classid, d.objid FROM pg_depend d, ext
   WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e')
SELECT 'member ' || pg_describe_object(classid, objid, 0) FROM members
UNION ALL
SELECT format('function %s strict=%s volatile=%s parallel=%s secdef=%s leakproof=%s cost=%s rows=%s '
              'config=%s acl=%s returns=%s args=%s src=%s lang=%s',
              p.oid::regprocedure, p.proisstrict, p.provolatile, p.proparallel, p.prosecdef, p.proleakproof,
              p.procost, p.prorows, p.proconfig, p.proacl, pg_get_function_result(p.oid),
              pg_get_function_arguments(p.oid), p.prosrc, l.lanname)
  FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang JOIN members m ON m.classid = 'pg_proc'::regclass AND m.objid = p.oid
UNION ALL
SELECT format('type %s len=%s byval=%s category=%s storage=%s align=%s in=%s out=%s recv=%s send=%s acl=%s',
              t.oid::regtype, t.typlen, t.typbyval, t.typcategory, t.typstorage, t.typalign, t.typinput::regproc,
              t.typoutput::regproc, t.typreceive::regproc, t.typsend::regproc, t.typacl)
  FROM pg_type t JOIN members m ON m.classid = 'pg_type'::regclass AND m.objid = t.oid
UNION ALL
SELECT format('relation %s kind=%s acl=%s options=%s', c.oid::regclass, c.relkind, c.relacl, c.reloptions)
  FROM pg_class c JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = c.oid
UNION ALL
SELECT format('column %s.%s %s notnull=%s default=%s attnum=%s', a.attrelid::regclass, a.attname,
              format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(ad.adbin, ad.adrelid), a.attnum)
  FROM pg_attribute a JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = a.attrelid
  LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
 WHERE a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT format('constraint %s on %s: %s', co.conname, co.conrelid::regclass, pg_get_constraintdef(co.oid))
  FROM pg_constraint co JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = co.conrelid
UNION ALL
SELECT format('index %s', pg_get_indexdef(i.indexrelid))
  FROM pg_index i JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = i.indrelid
UNION ALL
SELECT format('trigger %s enabled=%s', pg_get_triggerdef(tg.oid), tg.tgenabled)
  FROM pg_trigger tg JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = tg.tgrelid
 WHERE NOT tg.tgisinternal
UNION ALL
SELECT format('view %s: %s', c.oid::regclass, pg_get_viewdef(c.oid))
  FROM pg_class c JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = c.oid WHERE c.relkind = 'v'
UNION ALL
SELECT format('config dump %s where %s', cfg.rel::regclass, cond.c)
  FROM ext, unnest(ext.extconfig) WITH ORDINALITY AS cfg(rel, n)
  JOIN unnest((SELECT extcondition FROM ext)) WITH ORDINALITY AS cond(c, n) USING (n)
UNION ALL
SELECT format('schema %s owner-is-extension-owner=%s acl=%s', n.nspname,
              n.nspowner = (SELECT extowner FROM pg_extension WHERE extname = 'pg_envelope'), n.nspacl)
  FROM pg_namespace n WHERE n.nspname = 'envelope'
"""

GRANTS = ("GRANT EXECUTE ON FUNCTION envelope.decrypt_field(envelope.encrypted_text, text), "
          "envelope.decrypt_field(envelope.encrypted_bytea, text), "
          "envelope.decrypt_field(envelope.encrypted_jsonb, text) TO reader_app")
VALUES = ["plain ascii", "Grüße, 東京 ✓", "", "x" * 5000]


def describe(pg: Cluster, dbname: str) -> list[str]:
    return sorted(r[0] for r in pg.sql(DESCRIBE, dbname=dbname))


@pytest.fixture
def emulator():
    emu = vault.start(keys=("pg-envelope", "pg-envelope-next"), token=TOKEN)
    yield emu
    emu.stop()


def populate(pg: Cluster, db: str, options: dict) -> None:
    """Keys, KMS configs, grants and encrypted data, written at the old version."""
    q = lambda sql, params=None: pg.sql(sql, params, dbname=db)  # noqa: E731
    q("SELECT envelope.create_kms('vault', 'vault-transit', %s::jsonb)", (json.dumps(options),))
    q("SELECT envelope.create_kms('vault_unused', 'vault-transit', %s::jsonb)", (json.dumps(options),))
    q("SELECT envelope.create_key('local_a'), envelope.create_key('local_b', kek => 'tenant-kek')")
    q("SELECT envelope.create_key('remote', kms => 'vault', kek => 'pg-envelope')")
    q("SELECT envelope.create_key('doomed'), envelope.create_key('paused')")
    q("CREATE TABLE records (id int PRIMARY KEY, k text, t envelope.encrypted_text, "
      "b envelope.encrypted_bytea, j envelope.encrypted_jsonb)")
    rows = 0
    for key in ("local_a", "local_b", "remote", "doomed", "paused"):
        for v in VALUES:
            rows += 1
            q("INSERT INTO records VALUES (%s, %s, envelope.encrypt_field(%s::text, %s, %s::text), "
              "envelope.encrypt_field(%s::bytea, %s), envelope.encrypt_field(%s::jsonb, %s, 'ctx'))",
              (rows, key, v, key, str(rows), v.encode(), key, json.dumps({"v": v}), key))
        if key in ("local_a", "remote"):
            q("SELECT envelope.rotate_key(%s)", (key,))
    q("SELECT envelope.rewrap_key('remote', 'pg-envelope-next')")
    q("SELECT envelope.destroy_key('doomed')")
    q("SELECT envelope.disable_key('paused')")
    q("CREATE ROLE reader_app LOGIN" if not pg.scalar("SELECT count(*) FROM pg_roles WHERE rolname = 'reader_app'")
      else "SELECT 1")
    q("GRANT SELECT ON records TO reader_app")
    q(GRANTS)


def snapshot(pg: Cluster, db: str) -> dict:
    """What must not change: ciphertexts, plaintexts as the granted role sees them,
    refusals for destroyed/disabled keys, keys, KMS configs and grants."""
    conn = pg.connect(db, user="reader_app")
    out = {}
    with conn.cursor() as cur:
        cur.execute("SELECT id, k, t::text, b::text, j::text FROM records ORDER BY id")
        out["ciphertext"] = cur.fetchall()
        cur.execute("SELECT id, envelope.decrypt_field(t, id::text), envelope.decrypt_field(b), "
                    "envelope.decrypt_field(j, 'ctx') FROM records WHERE k NOT IN ('doomed', 'paused') ORDER BY id")
        out["plaintext"] = [(i, t, bytes(b), j) for i, t, b, j in cur.fetchall()]
        for key, state in (("doomed", "has been destroyed"), ("paused", "is disabled")):
            with pytest.raises(psycopg2.Error) as e:
                cur.execute("SELECT envelope.decrypt_field(t, id::text) FROM records WHERE k = %s", (key,))
            out[f"refused {key}"] = (pg_error(e)["sqlstate"], pg_error(e)["message"])
            assert pg_error(e)["message"] == f'key "{key}" {state}'
    conn.close()
    out["keys"] = pg.sql("SELECT key_name, kms, kek, key_state, version, version_state, is_current "
                         "FROM envelope.keys ORDER BY 1, 5", dbname=db)
    out["kms"] = pg.sql("SELECT name, provider, options, keys FROM envelope.kms_configs ORDER BY 1", dbname=db)
    out["grants"] = pg.sql("SELECT p.oid::regprocedure::text, has_function_privilege('reader_app', p.oid, 'EXECUTE') "
                           "FROM pg_proc p WHERE p.pronamespace = 'envelope'::regnamespace ORDER BY 1", dbname=db)
    return out


@pytest.mark.parametrize("old", RELEASED)
def test_update_from_release_keeps_everything(cluster_factory, emulator, old):
    assert RELEASED, "no released version to update from"
    pg = cluster_factory.create("upgrade")
    options = {"address": emulator.url, "token_file": str(pg.write_file("vault.token", TOKEN + "\n"))}
    pg.sql("CREATE DATABASE upgraded")
    pg.sql("CREATE DATABASE fresh")
    pg.sql("ALTER DATABASE upgraded SET envelope.version_check = off")
    pg.sql(f"CREATE EXTENSION pg_envelope VERSION '{old}'", dbname="upgraded")
    assert pg.scalar("SELECT extversion FROM pg_extension WHERE extname = 'pg_envelope'", dbname="upgraded") == old
    populate(pg, "upgraded", options)
    before = snapshot(pg, "upgraded")
    assert len(before["plaintext"]) == 3 * len(VALUES)
    assert before["plaintext"][1][1] == VALUES[1]

    pg.sql("ALTER DATABASE upgraded RESET envelope.version_check")
    # With the check on, the old SQL version is refused clearly, before the update.
    with pytest.raises(psycopg2.Error) as e:
        pg.sql("SELECT envelope.decrypt_field(t, id::text) FROM records WHERE id = 1", dbname="upgraded")
    err = pg_error(e)
    assert err["sqlstate"] == "55000", err
    assert err["message"] == (f"pg_envelope library version {CURRENT} does not match the extension's SQL version "
                              f"{old} in this database"), err
    assert err["hint"] == "Run ALTER EXTENSION pg_envelope UPDATE in this database."

    pg.sql("ALTER EXTENSION pg_envelope UPDATE", dbname="upgraded")
    assert pg.scalar("SELECT extversion FROM pg_extension WHERE extname = 'pg_envelope'",
                     dbname="upgraded") == CURRENT
    # 0.1.0 had no key privileges: EXECUTE held directly becomes the matching privilege
    # on every key, so reader_app decrypts as before (checked by snapshot() below).
    assert pg.sql("SELECT pattern, grantee::text, privilege FROM envelope.key_grants ORDER BY 2, 3",
                  dbname="upgraded") == [("*", "reader_app", "decrypt")]
    after = snapshot(pg, "upgraded")
    # Functions the update added have no grants; those that existed keep theirs.
    existed = {fn for fn, _ in before["grants"]}
    after["grants"] = [g for g in after["grants"] if g[0] in existed]
    assert after == before
    # Still fully usable: new values, rotation, KMS calls.
    assert pg.scalar("SELECT envelope.decrypt_field(envelope.encrypt_field('new', 'remote'))", dbname="upgraded") == "new"
    assert pg.scalar("SELECT envelope.rotate_key('local_b')", dbname="upgraded") == 2
    pg.sql("SELECT envelope.cache_flush()", dbname="upgraded")
    assert pg.scalar("SELECT count(*) FROM records WHERE k = 'remote' AND "
                     "envelope.decrypt_field(t, id::text) IS NOT NULL", dbname="upgraded") == len(VALUES)

    # Object for object, the upgraded extension is a fresh install.
    pg.sql("CREATE EXTENSION pg_envelope", dbname="fresh")
    pg.sql(GRANTS, dbname="fresh")  # the same grants as the upgraded database's
    fresh, upgraded = describe(pg, "fresh"), describe(pg, "upgraded")
    assert len(fresh) > 100
    missing = [x for x in fresh if x not in upgraded]
    extra = [x for x in upgraded if x not in fresh]
    assert not missing and not extra, f"fresh only: {missing}\nupgraded only: {extra}"


def test_catalog_comparison_detects_a_difference(cluster_factory):
    """The comparison above is not blind: a changed grant or a missing trigger shows."""
    pg = cluster_factory.create("upgrade-diff")
    for db in ("a", "b"):
        pg.sql(f"CREATE DATABASE {db}")
        pg.sql("CREATE EXTENSION pg_envelope", dbname=db)
    assert describe(pg, "a") == describe(pg, "b")
    pg.sql("GRANT EXECUTE ON FUNCTION envelope.cache_flush() TO PUBLIC", dbname="b")
    assert describe(pg, "a") != describe(pg, "b")
    pg.sql("REVOKE EXECUTE ON FUNCTION envelope.cache_flush() FROM PUBLIC", dbname="b")
    assert describe(pg, "a") == describe(pg, "b")
    pg.sql("ALTER TABLE envelope.key ENABLE TRIGGER key_changed", dbname="b")  # ALWAYS -> ORIGIN
    assert describe(pg, "a") != describe(pg, "b")
