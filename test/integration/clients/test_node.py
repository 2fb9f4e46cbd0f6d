"""node-postgres (pg) and Sequelize v6 from npm against protected columns (docs/orm.md).

The JavaScript side is node/orm_test.js (exact versions in node/package-lock.json; install
them with `npm ci --prefix test/integration/clients/node`, which scripts/setup.sh runs). It
runs in phases: `setup` creates the tables the way the application does (Sequelize
`sync()` for the `Person` model, a plain CREATE TABLE for a bytea/jsonb table), then the
operator protects the columns here, then `run` drives the unchanged application and asserts
with node's assert; this module checks ciphertext at rest and the observations it prints.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

NODE_DIR = Path(__file__).resolve().parent / "node"
SCRIPT = NODE_DIR / "orm_test.js"
NPM_CI = "npm ci --prefix test/integration/clients/node"
PGBOUNCER = Path("/usr/sbin/pgbouncer")


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary, once the npm modules are there (fails, does not skip, without them;
    requested before `stack` so that no cluster starts for nothing)."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed (Debian package nodejs; scripts/setup.sh installs it)")
    missing = [m for m in ("pg", "sequelize", "pg-hstore") if not (NODE_DIR / "node_modules" / m).is_dir()]
    if missing:
        pytest.fail(f"npm modules {missing} are missing in {NODE_DIR}/node_modules: run `{NPM_CI}` "
                    "from the repository root (scripts/setup.sh does)")
    return node


def run_node(node: str, route, phase: str, prefix: str, *, expect_ok: bool = True) -> dict:
    """Runs one phase of orm_test.js against the route; returns its RESULT record."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGPASSWORD"] = route.password
    proc = subprocess.run(
        [node, str(SCRIPT), phase, f"--host={route.host}", f"--port={route.port}",
         f"--user={route.user}", f"--database={route.dbname}", f"--prefix={prefix}",
         f"--route={route.name}"],
        cwd=NODE_DIR, env=env, capture_output=True, text=True, timeout=120)
    output = f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, f"orm_test.js {phase} printed no RESULT (exit {proc.returncode})\n{output}"
    result = json.loads(lines[-1][len("RESULT "):])
    if expect_ok:
        assert proc.returncode == 0 and not result["failed"], \
            f"orm_test.js {phase} failed on {route.name}:\n{output}"
    print(proc.stdout)
    return result


def _pgbouncer_version() -> tuple[int, ...]:
    out = subprocess.run([str(PGBOUNCER), "--version"], capture_output=True, text=True).stdout
    return tuple(int(x) for x in re.search(r"PgBouncer (\d+)\.(\d+)", out).groups())


def _column_type(stack, table: str, column: str) -> str:
    return stack.raw("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                     "WHERE attrelid = %s::regclass AND attname = %s", [table, column])[0][0]


def test_node_postgres_and_sequelize(node, stack, route):
    prefix = f"node_{route.name}_"
    people, blobs = f"{prefix}people", f"{prefix}blobs"

    setup = run_node(node, route, "setup", prefix)
    assert len(setup["passed"]) == 2
    assert _column_type(stack, people, "email") == "character varying(255)"

    # What an operator runs once; the application below is unchanged.
    stack.protect(people, "email")
    stack.protect(blobs, "data")
    stack.protect(blobs, "doc")
    assert _column_type(stack, people, "email") == "envelope.protected_text"

    log_from = stack.cluster.log_position()
    result = run_node(node, route, "run", prefix)
    obs = result["observations"]
    assert len(result["passed"]) == 23, result["passed"]  # every check of the run phase

    # Ciphertext at rest: every email the application ever wrote, and the bytea/jsonb values.
    emails_used = obs["people_emails_used"] + obs["pg_emails_used"]
    stack.assert_sealed(people, "email", emails_used)
    assert stack.raw(f'SELECT count(*) FROM "{people}"') == [(len(obs["people_emails_final"]) + 1,)]
    stack.assert_sealed(blobs, "data", ["bytes-secret"])
    stack.assert_sealed(blobs, "doc", ["json-secret"])
    assert stack.raw(f'SELECT count(*) FROM "{blobs}"') == [(2,)]

    # A duplicate email is reported with the blind index value, never the plaintext: to the
    # client and in the server log (which logs the failed statements with their DETAIL).
    assert obs["unique_violation"]["detail"].startswith("Key (email)=(blind:")
    server_log = stack.cluster.read_log(log_from)
    assert "DETAIL:  Key (email)=(blind:" in server_log
    stack.cluster.assert_log_free_of(emails_used + ["bytes-secret", "json-secret"], since=log_from)

    # Sequelize 6 sends create/update/upsert values as bind parameters, but puts bulkCreate
    # values and every WHERE value inline in the SQL text (so in its log, console.log by
    # default, and in any server statement log).
    assert obs["plaintext_inline_in_sql_log"] == {
        "create": False, "instance.update (name)": False, "instance.update (email)": False,
        "Model.upsert": False, "findByPk": False, "sequelize.query with bind": False,
        "bulkCreate": True, "bulkCreate updateOnDuplicate": True, "findOne where email": True,
        "findAll where email": True, "count where email": True, "destroy where email": True,
    }

    # node-postgres knows the protected types' OIDs as nothing: without a cast or a type
    # parser (docs/orm.md) protected bytea reads as the '\x..' string, jsonb as a JSON string.
    assert obs["protected_bytea_read_as"] == "string"
    assert obs["protected_jsonb_read_as"] == "string"

    # Named prepared statements: fine direct; pgbouncer < 1.21 in transaction mode has no
    # prepared-statement support, so a second execution can land on another server connection.
    named = obs["named_prepared_statement"]
    if route.pooled and _pgbouncer_version() < (1, 21):
        assert not named["ok"] and named["code"] == "26000", named
        assert re.fullmatch(r'prepared statement "penv_find_\w+" does not exist', named["error"]), named
    elif not route.pooled:
        assert named["ok"], named


def test_sequelize_sync_alter_keeps_column_protected(node, stack):
    """`sequelize.sync({ alter: true })` (what many applications run at start) issues
    ALTER COLUMN "email" TYPE VARCHAR(255) on every column: on a protected column that must
    neither drop the protection nor damage what is written afterwards: it is refused (0A000)
    and the application keeps working."""
    route = stack.direct
    prefix = "node_alter_"
    people = f"{prefix}people"
    run_node(node, route, "setup", prefix)
    stack.protect(people, "email")

    result = run_node(node, route, "alter", prefix, expect_ok=False)
    print(json.dumps(result["observations"], indent=1))
    assert _column_type(stack, people, "email") == "envelope.protected_text"
    # The schema sync is refused with the event trigger's clear error, not half-applied.
    sync = result["observations"]["sync_alter"]
    assert sync["ok"] is False and "is protected: cannot change the type of it" in sync["error"], sync
    assert not result["failed"], result["failed"]
    stack.assert_sealed(people, "email", ["after-alter"])
