"""`--slurm VERSION` for the cluster benches: run the bench against that Slurm release.

22.05 is the host's own dev cluster; 24.11 and 26.05 run inside their Debian roots
(dev/slurm-root), so a bench asked for one of them brings that cluster up and runs
itself again inside the root, with the same arguments less --slurm. Each bench's JSON
then carries `slurm`: the release that answered.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HOST_SLURM = "22.05"
VERSIONS = (HOST_SLURM, "24.11", "26.05")


def add_slurm_argument(parser) -> None:
    parser.add_argument(
        "--slurm",
        choices=VERSIONS,
        default=None,
        help="Slurm release to run against: 22.05 is the host's dev cluster, 24.11 and"
        " 26.05 run inside their Debian roots (dev/slurm-root); default: the"
        " cluster of the environment the bench runs in",
    )


def run_inside_if_asked(version: str | None, script: str, argv: list[str]) -> None:
    """Re-run `script` inside the root of `version` and exit with its status, unless this
    process already runs against that release (the host for 22.05, or inside the root)."""
    here = os.environ.get("ISENSE_SLURM_VERSION", HOST_SLURM)
    if version is None or version == here:
        return
    if here != HOST_SLURM:
        sys.exit(
            f"{script}: --slurm {version}: this process runs inside the Slurm {here} root; run the bench from the host"
        )
    subprocess.run([str(REPO / "dev" / "cluster"), "up", "--slurm", version], check=True, stdout=subprocess.DEVNULL)
    inner = _without_slurm(argv)
    proc = subprocess.run(
        [str(REPO / "dev" / "slurm-root"), version, "run", str(REPO / ".venv" / "bin" / "python"), script, *inner],
        cwd=REPO,
    )
    sys.exit(proc.returncode)


def _without_slurm(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--slurm":
            skip = True
        elif not arg.startswith("--slurm="):
            out.append(arg)
    return out


def slurm_release() -> str:
    """The release of the cluster the bench ran against, for its JSON."""
    from isense_slurm.errors import SlurmError
    from isense_slurm.slurm import CliBackend

    try:
        return CliBackend(timeout=10).version()
    except SlurmError as err:  # a figure label only: never fail a bench over it
        return f"unknown ({err})"
