"""Make way on the real dev cluster: slurmctld's job_submit.lua rewrites the wake file on
each submit, and the controller's WayMaker stops the worker a pinned training job
would preempt, so the job starts on the worker's epilog (reclaim/make_way.py).

The "worker" here is a stand-in batch job with a worker's identity (the service
account, the lend partition, an isense- name) that exits on SIGTERM: no vLLM needed.
The pinned-job case runs with each Slurm backend ([slurm] backend = "cli" | "pyslurm").
"""

from __future__ import annotations

import pwd
import shutil
import uuid
from pathlib import Path

import pytest

from backends import KINDS, make_backend
from isense_slurm.config import load_config
from isense_slurm.controller.memory import Memory
from isense_slurm.controller.observe import Scope
from isense_slurm.errors import SlurmError
from isense_slurm.reclaim.make_way import WayMaker
from isense_slurm.reclaim.submit_watch import SubmitWatcher
from isense_slurm.slurm import SubmitOptions
from waiting import wait_for

pytestmark = pytest.mark.cluster

DEV_CONFIG = Path(__file__).resolve().parents[2] / "dev" / "isense.dev.toml"


@pytest.fixture
def site(cluster):
    cfg = load_config(DEV_CONFIG)
    workdir = cluster.job_dir / f"itest-{uuid.uuid4().hex[:8]}"
    workdir.mkdir(mode=0o777)
    workdir.chmod(0o777)
    jobs: list[int] = []
    yield cfg, workdir, jobs
    for job_id in jobs:
        try:
            cluster.slurm.cancel(job_id)
        except SlurmError:
            pass
    shutil.rmtree(workdir, ignore_errors=True)


def free_nodes(cluster) -> list[str]:
    return [
        n.name
        for n in cluster.slurm.nodes(partition=cluster.lend_partition)
        if n.usable and n.gpus_alloc == 0 and n.gpus_total == cluster.gpus_per_node
    ]


def stand_in_worker(cluster, workdir: Path, node: str, jobs: list[int]) -> int:
    job_id = cluster.slurm.submit(
        "#!/bin/bash\ntrap 'exit 0' TERM\nwhile :; do sleep 0.05; done\n",
        SubmitOptions(
            partition=cluster.lend_partition,
            job_name="isense-itest",
            nodelist=node,
            gres=f"gpu:{cluster.gpus_per_node}",
            time=5,
            requeue=False,
            output=str(workdir / "worker-%j.out"),
            chdir=str(workdir),
        ),
        as_user=cluster.service_account,
    )
    jobs.append(job_id)
    wait_for(lambda: (j := cluster.slurm.job(job_id)) and j.state == "RUNNING", 30, f"stand-in {job_id} to run")
    return job_id


def train(cluster, workdir: Path, node: str, jobs: list[int]) -> tuple[int, Path]:
    started = workdir / f"started-{uuid.uuid4().hex[:6]}"
    job_id = cluster.slurm.submit(
        f"#!/bin/bash\ndate +%s.%N > {started}\nsleep 2\n",
        SubmitOptions(
            partition=cluster.train_partition,
            job_name="itest-train",
            nodelist=node,
            gres=f"gpu:{cluster.gpus_per_node}",
            time=1,
            output=str(workdir / "train-%j.out"),
            chdir=str(workdir),
        ),
        as_user=cluster.trainer,
    )
    jobs.append(job_id)
    return job_id, started


def test_job_submit_lua_rewrites_the_wake_file_and_leaves_the_job_alone(cluster, site):
    cfg, workdir, jobs = site
    wake = cfg.slurm.submit_wake
    before = wake.stat().st_mtime_ns if wake.exists() else 0
    job_id, _ = train(cluster, workdir, free_nodes(cluster)[0], jobs)
    assert wake.stat().st_mtime_ns > before
    assert f"uid={pwd.getpwnam(cluster.trainer).pw_uid}" in wake.read_text()  # the submitter
    job = cluster.slurm.job(job_id)
    assert job is not None and job.partition == cluster.train_partition and job.name == "itest-train"


@pytest.mark.parametrize("kind", KINDS)
def test_a_pinned_training_job_gets_its_worker_stopped_before_slurms_pass(cluster, site, kind):
    cfg, workdir, jobs = site
    slurm = make_backend(kind)
    nodes = free_nodes(cluster)
    assert len(nodes) >= 2, "two idle nodes needed"
    target, other = nodes[-1], nodes[-2]
    victim = stand_in_worker(cluster, workdir, target, jobs)
    bystander = stand_in_worker(cluster, workdir, other, jobs)

    way = WayMaker(Scope.from_config(cfg), slurm, Memory())
    decided = []
    watcher = SubmitWatcher(cfg.slurm.submit_wake, lambda mtime: decided.extend(way.run(mtime)))
    watcher.start()
    try:
        job_id, started = train(cluster, workdir, target, jobs)
        wait_for(lambda: started.exists() and started.read_text().strip(), 30, "the training job to start")
    finally:
        watcher.stop()
    assert [(r.worker_job_id, r.node, r.for_job_id) for r in decided] == [(str(victim), target, str(job_id))]
    # The submit time to the ms: inside Slurm's whole second, before the job started.
    second = cluster.slurm.job(job_id).submit_time.timestamp()
    assert second <= way.book.submitted_at(str(job_id)) < min(second + 1, float(started.read_text()))
    assert cluster.slurm.job(victim).is_finished or "COMPLETING" in cluster.slurm.job(victim).states
    assert cluster.slurm.job(bystander).state == "RUNNING"  # only the worker in the way


def test_a_training_job_that_fits_elsewhere_stops_no_worker(cluster, site):
    cfg, workdir, jobs = site
    nodes = free_nodes(cluster)
    assert len(nodes) >= 2, "two idle nodes needed"
    worker = stand_in_worker(cluster, workdir, nodes[-1], jobs)
    way = WayMaker(Scope.from_config(cfg), cluster.slurm, Memory())
    job_id, started = train(cluster, workdir, nodes[-2], jobs)
    assert way.run() == []
    wait_for(lambda: started.exists() and started.read_text().strip(), 30, "the training job to start")
    assert cluster.slurm.job(worker).state == "RUNNING"
