"""Loopback KMS emulators for pg_envelope's tests.

One module per provider (``vault``, ``aws``, ``gcp``, ``azure``; the AWS credential
sources ``aws_sts``, ``aws_imds``, ``aws_ecs``), a shared
base (:mod:`kms_emulators.base`), a TLS helper (:mod:`kms_emulators.tls`) and
a CLI (``python3 -m kms_emulators <provider> ...``).  See README.md.
"""

from __future__ import annotations

import importlib

PROVIDERS = ("vault", "aws", "gcp", "azure", "aws_sts", "aws_imds", "aws_ecs")


def provider_module(name: str):
    if name not in PROVIDERS:
        raise ValueError(f"unknown provider {name!r}; expected one of {PROVIDERS}")
    return importlib.import_module(f"{__name__}.{name}")


def start(provider: str, **kwargs):
    """Start an emulator in-process: ``start("vault", tls=pki, token="t")``.

    Returns the running emulator (``.url``, ``.stop()``, counters, faults).
    """
    return provider_module(provider).start(**kwargs)


__all__ = ["PROVIDERS", "provider_module", "start"]
