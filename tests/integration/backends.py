"""The Slurm backends the cluster tests run over: "cli" and "pyslurm".

pyslurm skips only where it cannot exist (Slurm 26.05). On 22.05 and 24.11 a missing
or mismatched build fails the test: the dev set-up (dev/pyslurm-setup) makes one.
"""

from __future__ import annotations

import os

import pytest

from isense_slurm.errors import SlurmError
from isense_slurm.slurm import CliBackend

KINDS = ["cli", "pyslurm"]
_cache: dict[str, object] = {}


def make_backend(kind: str):
    if kind in _cache:
        return _cache[kind]
    if kind == "cli":
        backend = CliBackend()
    else:
        from isense_slurm.slurm.pyslurm_backend import PyslurmBackend

        version = CliBackend().version()
        if version.startswith("26."):
            pytest.skip(f"no pyslurm exists for Slurm {version} (its C API changed)")
        backend = PyslurmBackend()
        try:
            backend.load()
        except SlurmError as err:
            where = os.environ.get("ISENSE_SLURM_VERSION")
            setup = f"dev/pyslurm-setup --slurm {where}" if where else "dev/pyslurm-setup"
            pytest.fail(f"pyslurm must load on Slurm {version}: run {setup} ({err})", pytrace=False)
    _cache[kind] = backend
    return backend
