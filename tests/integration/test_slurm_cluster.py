"""The Slurm access layer against the real dev cluster (dev/cluster up).

Submit, list and cancel as the test user; partition-priority preemption that reaches
the inference job's batch script as SIGTERM before any kill; refused submissions and an
unreachable controller as one clear SlurmError line.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import uuid
from pathlib import Path

import pytest

from isense_slurm.errors import SlurmError
from isense_slurm.slurm import CliBackend, SubmitOptions
from waiting import wait_for

pytestmark = pytest.mark.cluster


@pytest.fixture
def workdir(cluster):
    """A folder both trainer and isense can write, removed afterwards."""
    path = cluster.job_dir / f"itest-{uuid.uuid4().hex[:8]}"
    path.mkdir(mode=0o777)
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def cleanup(cluster):
    """Job ids to cancel after the test, whatever happened."""
    ids: list[int] = []
    yield ids
    for job_id in ids:
        try:
            cluster.slurm.cancel(job_id)
        except SlurmError:
            pass


def idle_node(cluster) -> str:
    """A node with all its GPUs free: others may share the cluster."""
    free = [
        n
        for n in cluster.slurm.nodes(partition=cluster.lend_partition)
        if n.usable and n.gpus_alloc == 0 and n.gpus_total == cluster.gpus_per_node
    ]
    assert free, "no node with all GPUs idle on the dev cluster"
    return free[-1].name


def test_dev_cluster_shape(cluster):
    nodes = {n.name: n for n in cluster.slurm.nodes()}
    assert set(cluster.nodes) <= set(nodes)
    for name in cluster.nodes:
        assert nodes[name].gpus_total == cluster.gpus_per_node
        assert {cluster.train_partition, cluster.lend_partition} <= set(nodes[name].partitions)
    parts = {p.name: p for p in cluster.slurm.partitions()}
    train, lend = parts[cluster.train_partition], parts[cluster.lend_partition]
    assert train.is_default and train.priority_tier > lend.priority_tier
    assert lend.preempt_mode == "REQUEUE" and lend.grace_time == 0
    assert re.match(r"^\d+\.\d+\.\d+", cluster.slurm.version())


def test_submit_list_and_cancel_as_trainer(cluster, workdir, cleanup):
    slurm = cluster.slurm
    name = f"itest-{uuid.uuid4().hex[:6]}"
    job_id = slurm.submit(
        "#!/bin/bash\nsleep 120\n",
        SubmitOptions(
            partition=cluster.train_partition, job_name=name, time=2, gres="gpu:1", output=str(workdir / "%j.out")
        ),
        as_user=cluster.trainer,
    )
    cleanup.append(job_id)

    (listed,) = slurm.jobs(user=cluster.trainer, name=name)
    assert (listed.job_id, listed.user, listed.partition) == (job_id, cluster.trainer, cluster.train_partition)
    assert listed.state in ("PENDING", "RUNNING") and listed.time_limit == 2
    assert not slurm.jobs(user=cluster.service_account, name=name)

    running = wait_for(lambda: [j for j in slurm.jobs(job_ids=[job_id]) if j.state == "RUNNING"], 15, "the job to run")[
        0
    ]
    assert running.gpus == 1 and len(running.nodes) == 1 and running.start_time

    slurm.cancel(job_id)
    ended = wait_for(lambda: (j := slurm.job(job_id)) and j.state == "CANCELLED" and j, 15, "the job to be cancelled")
    assert ended.end_time and ended.is_finished


def test_training_job_preempts_inference_job_with_sigterm_first(cluster, workdir, cleanup):
    slurm = cluster.slurm
    node = idle_node(cluster)
    marker = workdir / "marker"
    worker = slurm.submit(
        "#!/bin/bash\n"
        f"trap 'echo \"TERM $(date +%s.%N)\" >> {marker}; exit 0' TERM\n"
        f'echo "started $(date +%s.%N)" >> {marker}\n'
        "while true; do sleep 0.1; done\n",
        SubmitOptions(
            partition=cluster.lend_partition,
            job_name="itest-worker",
            nodelist=node,
            gres=f"gpu:{cluster.gpus_per_node}",
            time=5,
            output=str(workdir / "worker.out"),
        ),
        as_user=cluster.service_account,
    )
    cleanup.append(worker)
    wait_for(lambda: marker.exists() and "started" in marker.read_text(), 20, "the inference job to start")

    trainer = slurm.submit(
        "#!/bin/bash\nsleep 60\n",
        SubmitOptions(
            partition=cluster.train_partition,
            job_name="itest-train",
            nodelist=node,
            gres=f"gpu:{cluster.gpus_per_node}",
            time=2,
            output=str(workdir / "train.out"),
        ),
        as_user=cluster.trainer,
    )
    cleanup.append(trainer)

    wait_for(lambda: "TERM" in marker.read_text(), cluster.kill_wait + 5, "SIGTERM in the batch script")
    train_job = wait_for(
        lambda: (j := slurm.job(trainer)) and j.state == "RUNNING" and j, 20, "the training job to run"
    )
    assert train_job.nodes == (node,)
    assert train_job.gpu_indices == ((node, tuple(range(cluster.gpus_per_node))),)

    lines = marker.read_text().split()
    assert lines[0] == "started" and lines[2] == "TERM"
    assert float(lines[3]) >= float(lines[1])

    requeued = slurm.job(worker)
    assert requeued.restart_count >= 1 and requeued.is_pending, requeued


def test_hold_release_and_signal_batch(cluster, workdir, cleanup):
    slurm = cluster.slurm
    marker = workdir / "usr1"
    job_id = slurm.submit(
        f"#!/bin/bash\ntrap 'echo USR1 >> {marker}' USR1\necho started >> {marker}\nwhile true; do sleep 0.1; done\n",
        SubmitOptions(
            partition=cluster.lend_partition,
            job_name="itest-signal",
            time=2,
            output=str(workdir / "signal.out"),
            hold=True,
        ),
        as_user=cluster.service_account,
    )
    cleanup.append(job_id)
    held = slurm.job(job_id)
    assert held.state == "PENDING" and held.reason == "JobHeldUser"

    slurm.release(job_id)
    wait_for(lambda: marker.exists() and "started" in marker.read_text(), 20, "the released job to start")
    slurm.signal_batch(job_id, "USR1")
    wait_for(lambda: "USR1" in marker.read_text(), 10, "SIGUSR1 in the batch script")
    assert slurm.job(job_id).state == "RUNNING"


def test_unknown_partition_is_refused_with_slurms_reason(cluster):
    with pytest.raises(SlurmError) as err:
        cluster.slurm.submit("#!/bin/sh\ntrue\n", {"partition": "no-such-partition"}, as_user=cluster.trainer)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("sbatch: ") and "invalid partition specified: no-such-partition" in message


def test_unreachable_controller_is_one_line(cluster, tmp_path):
    # A copy of the real config that points at a port nobody listens on.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = Path("/etc/slurm/slurm.conf").read_text()
    conf = re.sub(r"(?m)^SlurmctldPort=.*$", f"SlurmctldPort={port}", conf) + "MessageTimeout=1\n"
    path = tmp_path / "slurm.conf"
    path.write_text(conf)
    slurm = CliBackend(env={"SLURM_CONF": str(path)})
    # 22.05 reports this inside squeue's JSON ("Unspecified error"), newer Slurm on stderr.
    with pytest.raises(SlurmError, match=r"^squeue: Slurm controller is not reachable \(.+\)$"):
        slurm.jobs()
    with pytest.raises(SlurmError, match=r"^sbatch: Slurm controller is not reachable \(.*Unable to contact"):
        slurm.submit("#!/bin/sh\ntrue\n", {"partition": "train"})


def test_isense_nodes_command(cluster, capsys):
    from isense_slurm.cli import main

    assert main(["nodes", "--json"]) == 0
    nodes = {n["name"]: n for n in json.loads(capsys.readouterr().out)}
    assert all(nodes[name]["gpus_total"] == cluster.gpus_per_node for name in cluster.nodes)

    assert main(["nodes", "-p", cluster.lend_partition]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NODE", "STATE", "PARTITIONS", "GPUS", "GPUS_ALLOC", "REASON"]
    assert {line.split()[0] for line in lines[1:]} >= set(cluster.nodes)

    assert main(["nodes", "-p", "no-such-partition"]) == 2
    assert "no such partition" in capsys.readouterr().err
