"""Loading the local KMS master key, and running without shared_preload_libraries.

The server must start whatever is wrong with the master key configuration; every
function that needs the key then fails with the SQLSTATE of the cause and a message
naming it, and the key never reaches the server log.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import psycopg2.extras
import pytest

from pgcluster import Cluster, key_spellings, pg_error

DB = "keys"
PLAINTEXTS = {"text": "master key config test: 4111 1111 1111 1111",
              "bytea": b"\x00binary\xffpayload",
              "jsonb": {"card": "4111 1111 1111 1111", "nested": [1, {"a": None}]}}


@dataclass
class Keyed:
    cluster: Cluster
    key_file: Path
    ciphertexts: dict[str, str]  # type name -> text form, encrypted with key "mk"


@pytest.fixture(scope="module")
def keyed(module_cluster_factory) -> Keyed:
    cluster = module_cluster_factory.create("keyed")
    key_file = cluster.base_dir / "master.key"
    cluster.create_database(DB)
    cluster.sql("SELECT envelope.create_key('mk')", dbname=DB)
    row = cluster.sql("""SELECT envelope.encrypt_field(%s::text, 'mk', 'c')::text,
                                envelope.encrypt_field(%s::bytea, 'mk', 'c')::text,
                                envelope.encrypt_field(%s::jsonb, 'mk', 'c')::text""",
                      (PLAINTEXTS["text"], psycopg2.Binary(PLAINTEXTS["bytea"]),
                       psycopg2.extras.Json(PLAINTEXTS["jsonb"])), dbname=DB)[0]
    keyed = Keyed(cluster, key_file, dict(zip(("text", "bytea", "jsonb"), row)))
    assert_decrypts(keyed)
    return keyed


def assert_decrypts(keyed: Keyed) -> None:
    ct = keyed.ciphertexts
    got = keyed.cluster.sql("""SELECT envelope.decrypt_field(%s::envelope.encrypted_text, 'c'),
                                      envelope.decrypt_field(%s::envelope.encrypted_bytea, 'c'),
                                      envelope.decrypt_field(%s::envelope.encrypted_jsonb, 'c')""",
                            (ct["text"], ct["bytea"], ct["jsonb"]), dbname=DB)[0]
    assert (got[0], bytes(got[1]), got[2]) == (PLAINTEXTS["text"], PLAINTEXTS["bytea"],
                                               PLAINTEXTS["jsonb"])


def restart(cluster: Cluster, **configuration) -> int:
    """Restarts with pg_envelope preloaded and the given master key settings; returns
    the log position before the start."""
    cluster.stop()
    cluster.configure(preload=True, **configuration)
    position = cluster.log_position()
    cluster.start()
    return position


def write_script(cluster: Cluster, name: str, body: str) -> Path:
    return cluster.write_file(name, "#!/bin/sh\n" + body + "\n", mode=0o700)


def key_functions(keyed: Keyed) -> list[tuple[str, tuple]]:
    ct = keyed.ciphertexts
    return [
        ("SELECT envelope.create_key('another')", ()),
        ("SELECT envelope.rotate_key('mk')", ()),
        ("SELECT envelope.encrypt_field('x'::text, 'mk')", ()),
        ("SELECT envelope.encrypt_field('x'::bytea, 'mk')", ()),
        ("SELECT envelope.decrypt_field(%s::envelope.encrypted_text, 'c')", (ct["text"],)),
        ("SELECT envelope.decrypt_field(%s::envelope.encrypted_bytea, 'c')", (ct["bytea"],)),
        ("SELECT envelope.decrypt_field(%s::envelope.encrypted_jsonb, 'c')", (ct["jsonb"],)),
    ]


# Each case: how to configure the server, the SQLSTATE every key function must fail
# with, and what the error (message, detail and hint together) must name, compared
# case-insensitively; the startup log must name the last of them too.
def no_setting(keyed):
    return {}


def missing_file(keyed):
    return {"master_key_file": keyed.cluster.base_dir / "absent.key"}


def world_readable_file(keyed):
    path = keyed.cluster.write_file("readable.key", keyed.key_file.read_text(), mode=0o644)
    return {"master_key_file": path}


def non_hex_content(keyed):
    bad = keyed.cluster.master_key_hex[:-1] + "g"
    return {"master_key_file": keyed.cluster.write_file("nonhex.key", bad + "\n")}


def wrong_length_content(keyed):
    bad = keyed.cluster.master_key_hex + "ab"
    return {"master_key_file": keyed.cluster.write_file("long.key", bad + "\n")}


def file_and_command(keyed):
    script = write_script(keyed.cluster, "cat-key.sh", f"cat '{keyed.key_file}'")
    return {"master_key_file": keyed.key_file, "master_key_command": str(script)}


def failing_command(keyed):
    # Prints the right key, but fails: the output must not be used.
    script = write_script(keyed.cluster, "fail.sh", f"cat '{keyed.key_file}'\nexit 1")
    return {"master_key_command": str(script)}


def hanging_command(keyed):
    # Prints the right key, then never finishes: killed at the timeout, key not used,
    # and the server starts anyway (in about the timeout, not never).
    script = write_script(keyed.cluster, "hang.sh", f"cat '{keyed.key_file}'\nsleep 600")
    return {"master_key_command": str(script), "settings": {"envelope.master_key_command_timeout": "700ms"}}


FILE, COMMAND = "envelope.master_key_file", "envelope.master_key_command"
CASES = [
    pytest.param(no_setting, "55000", ["master key", FILE, COMMAND], id="no-setting"),
    pytest.param(missing_file, "58P01", [FILE, "absent.key", "No such file or directory"],
                 id="file-missing"),
    pytest.param(world_readable_file, "F0000", [FILE, "readable.key", "group or world access"],
                 id="file-mode-0644"),
    pytest.param(non_hex_content, "22023", [FILE, "64 hexadecimal characters"], id="file-not-hex"),
    pytest.param(wrong_length_content, "22023", [FILE, "64 hexadecimal characters"],
                 id="file-wrong-length"),
    pytest.param(file_and_command, "F0000", [f"Both {FILE} and {COMMAND} are set"],
                 id="file-and-command"),
    pytest.param(failing_command, "F0000", [COMMAND, "exited with status 1"], id="command-exits-1"),
    pytest.param(hanging_command, "F0000", [COMMAND, "timed out", "within 700 ms"], id="command-hangs"),
]


@pytest.mark.parametrize("configure, sqlstate, cause", CASES)
def test_bad_master_key_configuration(keyed, configure, sqlstate, cause):
    cluster = keyed.cluster
    log_start = restart(cluster, **configure(keyed))
    for query, params in key_functions(keyed):
        with pytest.raises(psycopg2.Error) as exc:
            cluster.sql(query, params, dbname=DB)
        err = pg_error(exc)
        assert err["sqlstate"] == sqlstate, f"{query}: {err['text']}"
        said = " ".join(filter(None, (err["message"], err["detail"], err["hint"]))).lower()
        for fragment in cause:
            assert fragment.lower() in said, f"{query}: {fragment!r} not in {err['text']!r}"
        assert "restart" in (err["hint"] or "")
    # Everything that needs no key still works: ciphertext I/O and the key tables.
    assert cluster.scalar("SELECT %s::envelope.encrypted_jsonb::text", (keyed.ciphertexts["jsonb"],),
                          dbname=DB) == keyed.ciphertexts["jsonb"]
    assert cluster.scalar("SELECT count(*) FROM envelope.keys WHERE key_name = 'mk'", dbname=DB) >= 1
    # The postmaster said so at startup: a LOG line when nothing is configured, else a
    # WARNING naming the cause.
    level = "LOG" if sqlstate == "55000" else "WARNING"
    startup = [line.lower() for line in cluster.read_log(log_start).splitlines()
               if f" {level}:  pg_envelope" in line or "DETAIL:" in line or "HINT:" in line]
    assert any("master key" in line for line in startup), cluster.read_log(log_start)
    assert any(cause[-1].lower() in line for line in startup), cluster.read_log(log_start)
    secrets_ = key_spellings(cluster.master_key_hex)
    secrets_ += [cluster.master_key_hex[:-1] + "g", cluster.master_key_hex[:32]]
    cluster.assert_log_free_of(secrets_)


def test_master_key_command_works_end_to_end(keyed):
    cluster = keyed.cluster
    script = write_script(cluster, "print-key.sh", f"cat '{keyed.key_file}'")
    restart(cluster, master_key_command=str(script))
    assert_decrypts(keyed)  # data encrypted under the key file
    cluster.sql("SELECT envelope.create_key('from_command')", dbname=DB)
    ct = cluster.scalar("SELECT envelope.encrypt_field('via command'::text, 'from_command', 'z')::text",
                        dbname=DB)
    restart(cluster, master_key_command=str(script))  # the command runs again at each start
    assert cluster.scalar("SELECT envelope.decrypt_field(%s::envelope.encrypted_text, 'z')", (ct,),
                          dbname=DB) == "via command"
    restart(cluster, master_key_file=keyed.key_file)
    assert cluster.scalar("SELECT envelope.decrypt_field(%s::envelope.encrypted_text, 'z')", (ct,),
                          dbname=DB) == "via command"
    cluster.assert_log_free_of(key_spellings(cluster.master_key_hex))


def test_data_decrypts_after_restarts(keyed):
    cluster = keyed.cluster
    restart(cluster, master_key_file=keyed.key_file)
    cluster.sql("CREATE TABLE IF NOT EXISTS durable (id int, v envelope.encrypted_text)", dbname=DB)
    cluster.sql("""INSERT INTO durable SELECT g, envelope.encrypt_field('durable ' || g, 'mk', g::text)
                     FROM generate_series(1, 1000) g""", dbname=DB)
    check = ("SELECT count(*) FROM durable "
             "WHERE envelope.decrypt_field(v, id::text) = 'durable ' || id")
    cluster.restart()
    assert_decrypts(keyed)
    assert cluster.scalar(check, dbname=DB) == 1000
    # Crash (immediate shutdown) and recovery.
    cluster.stop("immediate")
    cluster.start()
    assert_decrypts(keyed)
    assert cluster.scalar(check, dbname=DB) == 1000
    cluster.assert_log_free_of(key_spellings(cluster.master_key_hex))


def test_without_shared_preload_libraries(keyed, module_cluster_factory):
    plain = module_cluster_factory.create("no-preload", preload=False, master_key=False)
    assert plain.scalar("SHOW shared_preload_libraries") == ""
    plain.create_database(DB)  # CREATE EXTENSION works
    ct = keyed.ciphertexts
    conn = plain.connect(DB)
    with conn.cursor() as cur:
        # Text I/O of all three types works without the library's shared state or a key.
        cur.execute("""CREATE TABLE held (t envelope.encrypted_text, b envelope.encrypted_bytea,
                                          j envelope.encrypted_jsonb)""")
        cur.execute("INSERT INTO held VALUES (%s, %s, %s)", (ct["text"], ct["bytea"], ct["jsonb"]))
        cur.execute("SELECT t::text, b::text, j::text FROM held")
        assert cur.fetchone() == (ct["text"], ct["bytea"], ct["jsonb"])
        # So does binary I/O (send/recv), e.g. COPY in binary format.
        buf = io.BytesIO()
        cur.copy_expert("COPY held TO STDOUT (FORMAT binary)", buf)
        cur.execute("CREATE TABLE copied (LIKE held)")
        buf.seek(0)
        cur.copy_expert("COPY copied FROM STDIN (FORMAT binary)", buf)
        cur.execute("SELECT t::text, b::text, j::text FROM copied")
        assert cur.fetchone() == (ct["text"], ct["bytea"], ct["jsonb"])

    for query, params in [
        ("SELECT envelope.encrypt_field('x'::text, 'mk')", ()),
        ("SELECT envelope.encrypt_field('x'::bytea, 'mk')", ()),
        ("SELECT envelope.encrypt_field('{}'::jsonb, 'mk')", ()),
        ("SELECT envelope.decrypt_field(t, 'c') FROM held", ()),
        ("SELECT envelope.decrypt_field(b, 'c') FROM held", ()),
        ("SELECT envelope.decrypt_field(j, 'c') FROM held", ()),
        ("SELECT envelope.create_key('k')", ()),
        ("SELECT envelope.rotate_key('k')", ()),
        ("SELECT envelope.destroy_key('k')", ()),
    ]:
        with pytest.raises(psycopg2.Error) as exc:
            plain.sql(query, params, dbname=DB)
        err = pg_error(exc)
        assert err["sqlstate"] == "55000", f"{query}: {err['text']}"
        assert "shared_preload_libraries" in err["message"] + (err["hint"] or "")
        assert "shared_preload_libraries" in (err["hint"] or ""), f"{query}: {err['text']}"

    # The same ciphertext, back in the preloaded cluster, still decrypts.
    restart(keyed.cluster, master_key_file=keyed.key_file)
    got = plain.sql("SELECT t::text, b::text, j::text FROM copied", dbname=DB)[0]
    assert_decrypts(Keyed(keyed.cluster, keyed.key_file, dict(zip(("text", "bytea", "jsonb"), got))))


def test_another_master_key_creates_no_keys(cluster_factory):
    """create_key first unwraps the newest live data key of the same KMS (read backward
    through the created_at index): with another master key configured it refuses, naming
    that key (destroyed keys are skipped), instead of creating keys only the new master
    key opens; with the right master key back, keys are created again."""
    cluster = cluster_factory.create("probe")
    right = cluster.base_dir / "master.key"
    right_hex = cluster.master_key_hex
    cluster.sql("CREATE EXTENSION pg_envelope")
    for name in ("older", "newest_live", "shredded"):
        cluster.sql("SELECT envelope.create_key(%s)", (name,))
    cluster.sql("SELECT envelope.destroy_key('shredded')")
    wrong = cluster.write_master_key(name="other.key")
    restart(cluster, master_key_file=wrong)
    with pytest.raises(psycopg2.Error) as e:
        cluster.sql("SELECT envelope.create_key('made_with_the_wrong_master_key')")
    err = pg_error(e.value)
    assert 'cannot unwrap existing key "newest_live" version 1' in err["message"], err
    assert err["sqlstate"] == "22000", err
    assert cluster.scalar("SELECT count(*) FROM envelope.key WHERE name = 'made_with_the_wrong_master_key'") == 0
    # A rotation makes "older" the newest live data key: it is the one named now.
    cluster.stop()
    cluster.configure(preload=True, master_key_file=right)
    cluster.master_key_hex = right_hex
    cluster.start()
    cluster.sql("SELECT envelope.rotate_key('older')")
    restart(cluster, master_key_file=wrong)
    with pytest.raises(psycopg2.Error) as e:
        cluster.sql("SELECT envelope.create_key('made_with_the_wrong_master_key')")
    assert 'cannot unwrap existing key "older" version 2' in pg_error(e.value)["message"]
    restart(cluster, master_key_file=right)
    cluster.master_key_hex = right_hex
    assert cluster.scalar("SELECT envelope.create_key('made_with_the_right_one')") > 0
    cluster.assert_log_free_of(key_spellings(right_hex))
