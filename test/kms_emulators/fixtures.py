"""pytest fixtures for the KMS emulators.

Use them from a conftest.py::

    import sys, pathlib
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[N]))  # <repo>/test
    from kms_emulators.fixtures import *  # noqa: F401,F403

Every emulator fixture is function-scoped (fresh keys, counters and faults per
test) and stopped afterwards; ``kms_pki`` is session-scoped.
"""

from __future__ import annotations

import pytest

from . import aws, aws_ecs, aws_imds, aws_sts, azure, gcp, vault
from .tls import make_test_pki


@pytest.fixture(scope="session")
def kms_pki(tmp_path_factory):
    """A throwaway CA + server certificate (+ an unrelated CA): TlsFiles."""
    return make_test_pki(tmp_path_factory.mktemp("kms-pki"))


@pytest.fixture
def vault_emulator():
    emu = vault.start(keys=("pg-envelope",))
    yield emu
    emu.stop()


@pytest.fixture
def aws_emulator():
    emu = aws.start(aliases=("pg-envelope",))
    yield emu
    emu.stop()


@pytest.fixture
def gcp_emulator():
    emu = gcp.start(keys=("pg-envelope",))
    yield emu
    emu.stop()


@pytest.fixture
def azure_emulator():
    emu = azure.start(keys=("pg-envelope",), oct_keys=("pg-envelope-oct",))
    yield emu
    emu.stop()


@pytest.fixture
def aws_sts_emulator(aws_emulator):
    """STS whose issued credentials the ``aws_emulator`` KMS accepts."""
    emu = aws_sts.start(kms=aws_emulator)
    yield emu
    emu.stop()


@pytest.fixture
def aws_imds_emulator(aws_emulator):
    emu = aws_imds.start(kms=aws_emulator)
    yield emu
    emu.stop()


@pytest.fixture
def aws_ecs_emulator(aws_emulator):
    emu = aws_ecs.start(kms=aws_emulator, auth_token="ecs-auth-token-0001")
    yield emu
    emu.stop()


@pytest.fixture
def vault_emulator_tls(kms_pki):
    emu = vault.start(keys=("pg-envelope",), tls=kms_pki)
    yield emu
    emu.stop()


__all__ = ["kms_pki", "vault_emulator", "aws_emulator", "gcp_emulator", "azure_emulator",
           "aws_sts_emulator", "aws_imds_emulator", "aws_ecs_emulator", "vault_emulator_tls"]
