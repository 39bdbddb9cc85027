"""The node prolog/epilog on the real dev cluster (slurm.conf Prolog=/Epilog= point at
this checkout's etc-slurm/prolog.d/isense-prolog and etc-slurm/epilog.d/isense-epilog).

To aim the hooks of ONE node at this test's receiver and config, the test writes
/etc/isense/hooks.env (a root-owned shell fragment the hooks source) with a block for
that node only, and restores the file afterwards. Other nodes, and other tests' jobs,
keep the dev defaults.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from hook_receiver import EventReceiver, free_port, write_hook_config
from isense_slurm.errors import SlurmError
from isense_slurm.hooks.spool import Spool
from isense_slurm.reclaim.assembler import ReclaimAssembler
from isense_slurm.secrets import create_secret, load_secret
from isense_slurm.slurm import SubmitOptions
from waiting import wait_for

pytestmark = pytest.mark.cluster

HOOKS_ENV = Path("/etc/isense/hooks.env")


class NodeHooks:
    """One node's hooks pointed at a config, log and spool of this test."""

    def __init__(self, cluster, folder: Path):
        self.cluster = cluster
        self.folder = folder
        free = [
            n
            for n in cluster.slurm.nodes(partition=cluster.lend_partition)
            if n.usable and n.gpus_alloc == 0 and n.gpus_total == cluster.gpus_per_node
        ]
        assert free, "no node with all GPUs idle on the dev cluster"
        self.node = free[0].name
        create_secret(folder / "secrets")
        self.secret = load_secret(folder / "secrets")
        self.log = folder / "hooks.log"
        self.spool = Spool(folder / "spool", self.node)
        self.config = folder / "isense.toml"
        self.workdir = cluster.job_dir / f"itest-hooks-{uuid.uuid4().hex[:8]}"
        self.workdir.mkdir(mode=0o777)
        self.workdir.chmod(0o777)
        self.jobs: list[int] = []
        self.saved = HOOKS_ENV.read_bytes() if HOOKS_ENV.exists() else None
        self.made_etc_dir = not HOOKS_ENV.parent.exists()

    def point_at(self, url: str) -> None:
        write_hook_config(self.folder, url, self.folder / "secrets", job_dir=self.cluster.job_dir)

    def break_config(self) -> None:
        self.config.write_text("[slurm\nthis is not TOML\n")

    def install(self) -> None:
        block = (
            "\n# tests/integration/test_hooks_cluster.py (restored after the test)\n"
            f'if [ "${{SLURMD_NODENAME:-}}" = "{self.node}" ]; then\n'
            f'  ISENSE_CONFIG="{self.config}"\n  ISENSE_HOOK_LOG="{self.log}"\n'
            f'  ISENSE_HOOK_SPOOL="{self.folder / "spool"}"\nfi\n'
        )
        HOOKS_ENV.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        tmp = HOOKS_ENV.with_suffix(".tmp")
        tmp.write_bytes((self.saved or b"") + block.encode())
        tmp.chmod(0o644)
        os.replace(tmp, HOOKS_ENV)

    def restore(self) -> None:
        for job_id in self.jobs:
            try:
                self.cluster.slurm.cancel(job_id)
            except SlurmError:
                pass
        if self.saved is None:
            HOOKS_ENV.unlink(missing_ok=True)
            if self.made_etc_dir:
                try:
                    HOOKS_ENV.parent.rmdir()
                except OSError:
                    pass
        else:
            HOOKS_ENV.write_bytes(self.saved)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def submit(self, script: str, *, user: str, partition: str, name: str) -> int:
        job_id = self.cluster.slurm.submit(
            "#!/bin/bash\n" + script,
            SubmitOptions(
                partition=partition,
                job_name=name,
                nodelist=self.node,
                gres=f"gpu:{self.cluster.gpus_per_node}",
                time=2,
                output=str(self.workdir / f"{name}-%j.out"),
            ),
            as_user=user,
        )
        self.jobs.append(job_id)
        return job_id

    def train(self, script: str = "sleep 1\n") -> int:
        return self.submit(
            script, user=self.cluster.trainer, partition=self.cluster.train_partition, name="itest-hooks-train"
        )

    def finished(self, job_id: int, timeout: float = 30):
        return wait_for(
            lambda: (j := self.cluster.slurm.job(job_id)) and j.is_finished and j, timeout, f"job {job_id} to finish"
        )

    def log_lines(self, job_id: int) -> list[str]:
        if not self.log.exists():
            return []
        return [line for line in self.log.read_text().splitlines() if f" job={job_id} " in line]

    def node_state(self):
        (node,) = [n for n in self.cluster.slurm.nodes() if n.name == self.node]
        return node


@pytest.fixture
def hooks(cluster, tmp_path):
    tmp_path.chmod(0o755)
    h = NodeHooks(cluster, tmp_path)
    h.point_at(f"http://127.0.0.1:{free_port()}")
    h.install()
    try:
        yield h
    finally:
        h.restore()


@pytest.fixture
def receiver(hooks):
    rx = EventReceiver(hooks.secret)
    hooks.point_at(rx.url)
    yield rx
    rx.close()


def plant(user: str, **env) -> subprocess.Popen:
    """A `sleep` of `user` that says it is on some GPUs (as a leftover vLLM would)."""
    return subprocess.Popen(
        ["runuser", "-u", user, "--", "env", "-i", *(f"{k}={v}" for k, v in env.items()), "sleep", "300"],
        start_new_session=True,
    )


def sleep_pid(runner: subprocess.Popen) -> int:
    """The planted `sleep`: runuser's child (or runuser itself, had it exec'd)."""

    def child():
        if Path(f"/proc/{runner.pid}/comm").read_text().strip() == "sleep":
            return runner.pid
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    stat = Path(f"/proc/{entry.name}/stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == runner.pid and "(sleep)" in stat:
                    return int(entry.name)
        return None

    return wait_for(child, 10, "the planted sleep")


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_training_prolog_kills_the_service_accounts_leftover_and_reports_it(cluster, hooks, receiver):
    node = hooks.node
    others = [n for n in cluster.nodes if n != node]
    victim = plant(cluster.service_account, CUDA_VISIBLE_DEVICES="0,1", SLURMD_NODENAME=node)
    other_node = plant(cluster.service_account, CUDA_VISIBLE_DEVICES="0,1", SLURMD_NODENAME=others[0])
    other_user = plant(cluster.trainer, CUDA_VISIBLE_DEVICES="0,1", SLURMD_NODENAME=node)
    pids = []
    try:
        pids = victim_pid, other_node_pid, other_user_pid = [sleep_pid(p) for p in (victim, other_node, other_user)]
        job_id = hooks.train()
        start = receiver.wait_for(kind="job_start", job_id=str(job_id))
        assert start["node"] == node and start["gpus"] == list(range(cluster.gpus_per_node))
        assert (start["user"], start["partition"]) == (cluster.trainer, cluster.train_partition)
        (cleaned,) = [c for c in start["cleaned"] if c["pid"] == victim_pid]
        assert cleaned["cmd"] == "sleep 300" and cleaned["gpus"] == [0, 1] and start["survivors"] == []
        assert gone(victim_pid)
        assert not gone(other_node_pid) and not gone(other_user_pid)

        free = receiver.wait_for(kind="gpus_free", job_id=str(job_id))
        assert free["node"] == node and free["gpus"] == start["gpus"] and free["time"] >= start["time"]
        assert hooks.finished(job_id).state == "COMPLETED"
        prolog_line, epilog_line = hooks.log_lines(job_id)
        assert "cleaned 1 process(es)" in prolog_line and "sent 1 event(s)" in prolog_line
        assert "GPUs 0,1,2,3 free" in epilog_line and "sent 1 event(s)" in epilog_line
    finally:
        for pid in pids:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        for runner in (victim, other_node, other_user):
            if runner.poll() is None:
                runner.kill()
            runner.wait()


def test_preempted_worker_epilog_and_training_prolog_make_a_reclaim(cluster, hooks, receiver):
    # Stands for `isense worker`: writes the SIGTERM marker the epilog reads, exits at once.
    marker = f"{cluster.job_dir}/$SLURM_JOB_ID.sigterm"
    worker = hooks.submit(
        f"trap 'date +%s.%N > {marker}; exit 0' TERM\n"
        f"touch {hooks.workdir}/worker-up\nwhile true; do sleep 0.1; done\n",
        user=cluster.service_account,
        partition=cluster.lend_partition,
        name="itest-hooks-worker",
    )
    wait_for(lambda: (hooks.workdir / "worker-up").exists(), 30, "the worker job to run")
    assert not receiver.matching(job_id=str(worker))  # a worker's prolog sends nothing

    submitted = time.time()
    training = hooks.train()
    end = receiver.wait_for(kind="worker_end", job_id=str(worker))
    assert end["reason"] == "preempted" and end["node"] == hooks.node
    assert submitted - 1 < end["sigterm_time"] <= end["time"]
    start = receiver.wait_for(kind="job_start", job_id=str(training))
    assert start["time"] >= end["time"]
    assert not Path(cluster.job_dir, f"{worker}.sigterm").exists()  # the epilog took it

    assembler = ReclaimAssembler(lend_partition=cluster.lend_partition, service_account=cluster.service_account)
    reclaims = [r for e in list(receiver.events) for r in assembler.add(e)]
    (reclaim,) = [r for r in reclaims if r.training_job_id == str(training)]
    assert reclaim.worker_job_ids == (str(worker),) and reclaim.node == hooks.node
    assert reclaim.sigterm_time <= reclaim.gpus_free_time <= reclaim.start_time
    assert reclaim.start_time - submitted < 10  # sanity: the worker left at once, no KillWait


def test_daemon_down_events_wait_in_the_spool_and_go_with_the_next_run(cluster, hooks):
    port = free_port()
    hooks.point_at(f"http://127.0.0.1:{port}")  # nobody listens there yet
    first = hooks.train()
    hooks.finished(first)
    wait_for(lambda: len(hooks.log_lines(first)) == 2, 10, "both hooks of the first job")
    spooled = [(e["kind"], e["job_id"]) for e in hooks.spool.peek()]
    assert ("job_start", str(first)) in spooled and ("gpus_free", str(first)) in spooled
    assert all("spooled" in line and "cannot connect" in line for line in hooks.log_lines(first))

    rx = EventReceiver(hooks.secret, port=port)
    try:
        second = hooks.train()
        rx.wait_for(kind="job_start", job_id=str(second))
        assert rx.matching(kind="job_start", job_id=str(first))
        assert rx.matching(kind="gpus_free", job_id=str(first))
        rx.wait_for(kind="gpus_free", job_id=str(second))
    finally:
        rx.close()
    assert [e for e in hooks.spool.peek() if e.get("job_id") in (str(first), str(second))] == []


def test_broken_config_never_fails_the_job_nor_drains_the_node(cluster, hooks):
    hooks.break_config()
    job_id = hooks.train()
    job = hooks.finished(job_id)
    assert job.state == "COMPLETED"
    lines = wait_for(lambda: len(hooks.log_lines(job_id)) == 2 and hooks.log_lines(job_id), 10, "both hooks to log")
    assert all(f"config: {hooks.config}" in line for line in lines)
    node = hooks.node_state()
    assert node.usable and "DRAIN" not in node.states, node.state_text
    assert ("gpus_free", str(job_id)) in [(e["kind"], e["job_id"]) for e in hooks.spool.peek()]
