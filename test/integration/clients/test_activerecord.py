"""ActiveRecord 6.1 (Debian ruby-activerecord, ruby-pg) against a protected column.

ruby/orm_test.rb is the application: a plain `Person < ActiveRecord::Base` (email string
with a unique index, name) and the migration that creates its table. The application runs
its migration, the operator protects `email` (stack.protect), then the application's CRUD
runs unchanged, direct and through pgbouncer in transaction mode, and the stored emails
are ciphertext. A second test shows what ActiveRecord makes of the column's type, with
and without the optional initializer (a require and one line; docs/orm.md).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / "ruby" / "orm_test.rb"
TIMEOUT = 90  # seconds per ruby process (each takes about a second)
UNKNOWN_OID = re.compile(r"unknown OID \d+: failed to recognize type of 'email'\. "
                         r"It will be treated as String\.")


class RubyApp:
    """Runs one phase of ruby/orm_test.rb and follows its "@@ {json}" protocol."""

    def __init__(self, route, prefix: str, workdir: Path, **extra_env: str):
        ruby = shutil.which("ruby")
        if ruby is None:
            pytest.skip("ruby is not installed (Debian packages ruby-activerecord, ruby-pg)")
        self.ruby = ruby
        self.workdir = workdir
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        self.env.update(DATABASE_URL=route.url, AR_ROUTE=route.name, AR_TABLE_PREFIX=prefix, **extra_env)

    def run(self, phase: str, on_pause=None) -> tuple[dict, str]:
        """The phase's "done" event and its stderr; `on_pause[step](event)` runs while the
        application waits."""
        stderr_path = self.workdir / f"{phase}.stderr"
        done, stdout = None, []
        with open(stderr_path, "w") as stderr:
            proc = subprocess.Popen([self.ruby, str(SCRIPT), phase], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=stderr, text=True, env=self.env,
                                    cwd=self.workdir)
        timer = threading.Timer(TIMEOUT, proc.kill)
        timer.start()
        try:
            for line in proc.stdout:
                if not line.startswith("@@ "):
                    stdout.append(line)
                    continue
                event = json.loads(line[3:])
                if event["event"] == "pause":
                    on_pause[event["step"]](event)
                    proc.stdin.write("go\n")
                    proc.stdin.flush()
                elif event["event"] == "done":
                    done = event
            rc = proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        err = stderr_path.read_text()
        if rc != 0 and "cannot load such file -- active_record" in err:
            pytest.skip("ActiveRecord is not installed (Debian packages ruby-activerecord, ruby-pg)")
        assert rc == 0, f"ruby orm_test.rb {phase} failed ({rc}):\n{err[-4000:]}\n{''.join(stdout)[-2000:]}"
        assert done is not None, f"ruby orm_test.rb {phase} ended without reporting"
        return done, err


def _stored(stack, table: str, person_id: int) -> tuple[str, str]:
    [(email, name)] = stack.raw(f'SELECT email::text, name FROM "{table}" WHERE id = %s', [person_id])
    return email, name


def test_activerecord_crud(stack, route, tmp_path):
    app = RubyApp(route, f"ar_{route.name}_", tmp_path)
    table = f"ar_{route.name}_people"

    schema, _ = app.run("schema")
    assert schema["table"] == table
    assert stack.raw("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                     "WHERE attrelid = %s::regclass AND attname = 'email'", [table]) == [("character varying",)]

    stack.protect(table, "email")  # the operator, between the migration and the application

    seen = {}

    def created(event):
        email, name = _stored(stack, table, event["id"])
        assert email.startswith("penv1:") and name == "Alice"
        seen["email"] = email

    def renamed(event):
        # The partial UPDATE of name kept the email's ciphertext byte for byte.
        assert _stored(stack, table, event["id"]) == (seen["email"], "Alice Liddell")

    def email_changed(event):
        email, _ = _stored(stack, table, event["id"])
        assert email.startswith("penv1:") and email != seen["email"]

    done, stderr = app.run("dml", {"created": created, "renamed": renamed, "email_changed": email_changed})

    assert done["count"] == 5
    assert done["emails"] == ["alice@wonderland.example", "bob@example.org", "carol@example.org",
                              "dave@example.org", "grace@example.org"]
    assert done["names"] == ["Alice Liddell", "Robert", "Caroline", "Dave", "Grace"]
    assert stack.raw(f'SELECT count(*) FROM "{table}"') == [(5,)]
    stack.assert_sealed(table, "email", done["plaintexts"])
    # Nothing on stderr but ActiveRecord 6.1's unknown-OID warning about the protected column
    # (see test_activerecord_type_of_protected_column).
    assert [line for line in stderr.splitlines() if not UNKNOWN_OID.fullmatch(line)] == []


def test_activerecord_type_of_protected_column(stack, tmp_path):
    """Without configuration ActiveRecord 6.1 warns once per connection, types the attribute
    as ActiveModel::Type::Value and cannot put the table in db/schema.rb; the
    initializer in orm_test.rb (AR_INITIALIZER=1: a require and one prepend) makes it an
    ordinary string column."""
    route = stack.direct
    table = "ar_typemap_people"
    app = RubyApp(route, "ar_typemap_", tmp_path)
    app.run("schema")
    stack.protect(table, "email")

    plain, _ = app.run("typemap")
    assert len(plain["warnings"]) == 2  # two connections
    assert all(UNKNOWN_OID.fullmatch(w) for w in plain["warnings"]), plain["warnings"]
    assert plain["sql_type"] == "envelope.protected_text"
    assert plain["attribute_type"] is None
    assert plain["cast_integer"] == 5  # not cast to a string
    assert plain["found"] == plain["email"]
    assert f'# Could not dump table "{table}" because of following StandardError' in plain["schema_rb"]
    assert "#   Unknown type 'envelope.protected_text' for column 'email'" in plain["schema_rb"]

    app = RubyApp(route, "ar_typemap_", tmp_path, AR_INITIALIZER="1")
    configured, stderr = app.run("typemap")
    assert configured["warnings"] == [] and stderr == ""
    assert configured["sql_type"] == "envelope.protected_text"
    assert configured["attribute_type"] == "string"
    assert configured["cast_integer"] == "5"
    assert configured["found"] == configured["email"]
    assert '    t.string "email", null: false' in configured["schema_rb"]
    assert f'    t.index ["email"], name: "index_{table}_on_email", unique: true' in configured["schema_rb"]

    stack.assert_sealed(table, "email", [plain["email"], configured["email"]])
