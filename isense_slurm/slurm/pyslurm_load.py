"""Importing pyslurm on first use, checked against this Slurm's release: one SlurmError line if it cannot.

pyslurm is built per Slurm release line (22.5.x for 22.05, 24.11.x for 24.11); none
exists for 26.05, whose C API changed.
"""

from __future__ import annotations

import os
import re
from typing import Any

from isense_slurm.errors import SlurmError

SETUP_HINT = "build it for this Slurm (in a checkout: dev/pyslurm-setup; see docs/admin-guide.md)"


def pyslurm_series(slurm_version: str) -> str | None:
    """ "22.05.8" -> "22.5": the pyslurm release line for that Slurm."""
    m = re.match(r"(\d+)\.(\d+)", slurm_version or "")
    return f"{int(m.group(1))}.{int(m.group(2))}" if m else None


def load_pyslurm(slurm_version: str | None) -> Any:  # the pyslurm module: it ships no types
    """pyslurm, imported and checked against this Slurm, or SlurmError with one line."""
    release = slurm_version or "unknown"
    head = f'[slurm] backend = "pyslurm" (Slurm {release})'
    if release.startswith("26."):
        # Its C API takes a step id struct where older ones took a job id: pyslurm stops at 25.11.
        raise SlurmError(f'{head}: no pyslurm exists for Slurm {release}; use backend = "cli"')
    conf = os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")
    if not os.path.isfile(conf):
        # libslurm would end the whole process on a missing config.
        raise SlurmError(f"{head}: SLURM_CONF={conf}: no such file")
    try:
        import pyslurm  # heavy and optional: only `backend = "pyslurm"` loads it
    except ImportError as err:
        raise SlurmError(f"{head}: pyslurm is not importable ({first_line(err)}); {SETUP_HINT}") from None
    except Exception as err:  # noqa: BLE001 - a build for another libslurm fails oddly
        raise SlurmError(f"{head}: pyslurm refuses to load ({first_line(err)}); {SETUP_HINT}") from None
    built = getattr(pyslurm, "__version__", "")
    if slurm_version and pyslurm_series(built) != pyslurm_series(slurm_version):
        raise SlurmError(f"{head}: pyslurm {built} is for another Slurm; {SETUP_HINT}")
    return pyslurm


def first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:200]
