"""Fixtures for pg_envelope's integration tests (helpers live in pgcluster.py).

Run as an unprivileged OS user (initdb refuses root), with Debian's Python:

    runuser -u postgres -- /usr/bin/python3 -m pytest test/integration

Every cluster a fixture makes is stopped at teardown, also when the test failed; then
the test errors if any server process of a cluster crashed (unless the test set
`cluster.allow_crash`).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from pgcluster import EXTENSION, PG_BINDIR, Cluster, ClusterFactory, initdb


def _check_environment() -> None:
    if not (PG_BINDIR / "postgres").exists():
        pytest.exit(f"PostgreSQL binaries not found in {PG_BINDIR} (set PG_BINDIR)", returncode=4)
    pkglibdir = subprocess.run([str(PG_BINDIR / "pg_config"), "--pkglibdir"], check=True,
                               capture_output=True, text=True).stdout.strip()
    if not (Path(pkglibdir) / f"{EXTENSION}.so").exists():
        pytest.exit(f"{EXTENSION} is not installed in {pkglibdir}: run `make install` first",
                    returncode=4)
    if os.geteuid() == 0:
        pytest.exit("run the integration tests as an unprivileged user (initdb refuses root), e.g. "
                    "runuser -u postgres -- /usr/bin/python3 -m pytest test/integration",
                    returncode=4)


@pytest.fixture(scope="session")
def initdb_template(tmp_path_factory) -> Path:
    """One initdb per session; every cluster starts as a copy of it."""
    _check_environment()
    template = tmp_path_factory.mktemp("template") / "data"
    initdb(template)
    return template


@contextlib.contextmanager
def _factory(base_dir: Path, template: Path) -> Iterator[ClusterFactory]:
    factory = ClusterFactory(base_dir, template)
    try:
        yield factory
    finally:
        factory.stop_all()
    factory.check_no_crash()


@pytest.fixture
def cluster_factory(tmp_path, initdb_template) -> Iterator[ClusterFactory]:
    """Clusters that live for one test."""
    with _factory(tmp_path / "clusters", initdb_template) as factory:
        yield factory


@pytest.fixture(scope="module")
def module_cluster_factory(tmp_path_factory, initdb_template) -> Iterator[ClusterFactory]:
    """Clusters shared by the tests of one module."""
    with _factory(tmp_path_factory.mktemp("clusters"), initdb_template) as factory:
        yield factory


@pytest.fixture
def cluster(cluster_factory) -> Cluster:
    """A running cluster with pg_envelope preloaded and a fresh master key file."""
    return cluster_factory.create()
