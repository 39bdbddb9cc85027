"""The Slurm access layer: the only code in isense that runs Slurm commands or parses
their output. Typed views in (Node, Partition, Job), actions out (submit, cancel, ...).

    from isense_slurm.slurm import default_backend
    slurm = default_backend()          # or backend_for(cfg.slurm): [slurm] backend
    idle = [n for n in slurm.nodes(partition="train") if n.usable and n.gpus_idle]
"""

from isense_slurm.errors import SlurmError
from isense_slurm.slurm.backend import JobId, SlurmBackend
from isense_slurm.slurm.cli_backend import CliBackend
from isense_slurm.slurm.hostlist import compact, expand
from isense_slurm.slurm.models import Job, Node, Partition, Reservation
from isense_slurm.slurm.pyslurm_backend import PyslurmBackend  # pyslurm itself is imported on first use
from isense_slurm.slurm.pyslurm_load import load_pyslurm
from isense_slurm.slurm.submit import SubmitOptions, sbatch_args

__all__ = [
    "CliBackend",
    "Job",
    "JobId",
    "Node",
    "Partition",
    "PyslurmBackend",
    "Reservation",
    "SlurmBackend",
    "SubmitOptions",
    "backend_for",
    "backend_problem",
    "compact",
    "default_backend",
    "expand",
    "sbatch_args",
]


def default_backend(timeout: float = 30.0, *, kind: str = "cli") -> SlurmBackend:
    """A backend of `kind`: "cli" (Slurm's command-line tools) or "pyslurm" (its C API,
    imported on first use; see pyslurm_backend.py)."""
    if kind == "pyslurm":
        return PyslurmBackend(timeout=timeout)
    if kind != "cli":
        raise ValueError(f"unknown Slurm backend {kind!r}")
    return CliBackend(timeout=timeout)


def backend_for(slurm_config: object, timeout: float = 30.0) -> SlurmBackend:
    """The backend `[slurm] backend` of the config asks for."""
    return default_backend(timeout, kind=getattr(slurm_config, "backend", "cli"))


def backend_problem(kind: str) -> str | None:
    """Why backend `kind` cannot work on this host (one line), or None when it can."""
    if kind != "pyslurm":
        return None
    try:
        version = CliBackend(timeout=10).version()
    except SlurmError:
        version = None
    try:
        load_pyslurm(version)
    except SlurmError as err:
        return str(err)
    return None
