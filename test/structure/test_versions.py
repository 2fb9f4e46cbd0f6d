"""One version everywhere: the control file's default_version, the library's
kVersion (include/pg_envelope/version.hpp, checked against the SQL version at run
time), CMake's project version, an install script for it, and an update script from
every older install script (so that ALTER EXTENSION pg_envelope UPDATE reaches it
from every released version)."""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def current() -> str:
    control = (REPO / "pg_envelope.control").read_text()
    return re.search(r"default_version\s*=\s*'([^']+)'", control).group(1)


def test_versions_agree():
    version = current()
    library = re.search(r'kVersion = "([^"]+)"', (REPO / "include/pg_envelope/version.hpp").read_text()).group(1)
    cmake = re.search(r"project\(pg_envelope VERSION ([0-9.]+)", (REPO / "CMakeLists.txt").read_text()).group(1)
    assert library == version
    assert cmake == version
    assert (REPO / "extension" / f"pg_envelope--{version}.sql").is_file()


def test_every_release_has_an_update_path():
    version = current()
    scripts = [p.name for p in (REPO / "extension").glob("pg_envelope--*.sql")]
    installs = {m.group(1) for s in scripts if (m := re.fullmatch(r"pg_envelope--([0-9.]+)\.sql", s))}
    updates = {(m.group(1), m.group(2)) for s in scripts
               if (m := re.fullmatch(r"pg_envelope--([0-9.]+)--([0-9.]+)\.sql", s))}
    assert version in installs and len(installs) >= 2

    def reachable(start: str) -> set[str]:
        seen, todo = {start}, [start]
        while todo:
            v = todo.pop()
            for a, b in updates:
                if a == v and b not in seen:
                    seen.add(b)
                    todo.append(b)
        return seen

    for old in installs - {version}:
        assert version in reachable(old), f"no update path from {old} to {version}"
