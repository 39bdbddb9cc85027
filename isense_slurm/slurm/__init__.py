"""The Slurm access layer: the only code in isense that runs Slurm commands or parses
their output. Typed views in (Node, Partition, Job), actions out (submit, cancel, ...).

    from isense_slurm.slurm import default_backend
    slurm = default_backend()
    idle = [n for n in slurm.nodes(partition="train") if n.usable and n.gpus_idle]
"""

from isense_slurm.slurm.backend import JobId, SlurmBackend
from isense_slurm.slurm.cli_backend import CliBackend
from isense_slurm.slurm.hostlist import compact, expand
from isense_slurm.slurm.models import Job, Node, Partition, Reservation
from isense_slurm.slurm.submit import SubmitOptions, sbatch_args

__all__ = [
    "CliBackend",
    "Job",
    "JobId",
    "Node",
    "Partition",
    "Reservation",
    "SlurmBackend",
    "SubmitOptions",
    "compact",
    "default_backend",
    "expand",
    "sbatch_args",
]


def default_backend(timeout: float = 30.0) -> SlurmBackend:
    """The backend isense uses: Slurm's command-line tools."""
    return CliBackend(timeout=timeout)
