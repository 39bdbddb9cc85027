"""Shared test fixtures. Keep this light: only the dev cluster lives here.

`cluster` brings up the real Slurm dev cluster once per session (`dev/cluster up`,
idempotent and fast when it already runs) and leaves it up for later runs.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class DevCluster:
    """What tests need to know about the dev cluster that `dev/cluster up` made."""

    slurm: object  # isense_slurm.slurm.CliBackend
    job_dir: Path = Path("/var/lib/isense-dev/jobs")  # writable by trainer and isense
    nodes: tuple[str, ...] = ("n1", "n2", "n3", "n4")
    gpus_per_node: int = 4
    train_partition: str = "train"
    lend_partition: str = "inference"
    trainer: str = "trainer"
    service_account: str = "isense"
    kill_wait: int = 5


@pytest.fixture(scope="session")
def cluster() -> DevCluster:
    if os.geteuid() != 0:
        pytest.fail("cluster tests need root (dev/cluster up starts daemons); deselect with -m 'not cluster'")
    proc = subprocess.run([str(REPO / "dev" / "cluster"), "up"], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"dev/cluster up failed: {proc.stderr.strip()[-500:]}")
    from isense_slurm.slurm import CliBackend

    return DevCluster(slurm=CliBackend())
