"""`isense serve --dry-run --once`, `isense doctor` and `isense slurm-conf` on the real dev
cluster."""

from __future__ import annotations

import subprocess

import pytest

from serve_harness import ISENSE, REPO, ServeSite

pytestmark = pytest.mark.cluster


def test_dry_run_once_prints_one_line_per_decision_and_submits_nothing(cluster):
    s = ServeSite(["n1", "n2"], name="itest-dry")
    try:
        before = {j.job_id for j in cluster.slurm.jobs(user="isense")}
        proc = subprocess.run(
            [str(ISENSE), "--config", str(s.config), "serve", "--dry-run", "--once"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.splitlines()
        assert lines[0].startswith("pool: 8 GPUs on 2 nodes;")
        node_lines = [line for line in lines if line.startswith(("lend n", "not lending n"))]
        assert sorted(line.split(":")[0].split()[-1] for line in node_lines) == ["n1", "n2"]
        assert all(line.startswith(("pool:", "lend ", "not lending ", "cancel ", "model ")) for line in lines)
        assert {j.job_id for j in cluster.slurm.jobs(user="isense")} == before
    finally:
        s.close()
        s.remove()


def test_doctor_on_the_dev_cluster(cluster):
    s = ServeSite(["n1", "n2"], name="itest-doctor")
    try:
        proc = subprocess.run(
            [str(ISENSE), "--config", str(s.config), "doctor"], capture_output=True, text=True, timeout=60
        )
        lines = proc.stdout.splitlines()
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert not [line for line in lines[:-1] if not line.startswith(("OK ", "WARN "))]
        for expected in (
            "OK   PreemptType=preempt/partition_prio",
            "OK   partition train (PriorityTier 10) preempts inference",
            "OK   KillWait=5 s covers drain_seconds 2 (+ vLLM stop)",
            "OK   Prolog runs isense-prolog",
            "OK   SPANK plugin loaded (sbatch --isense-worker)",
        ):
            assert any(line.startswith(expected) for line in lines), expected
        assert lines[-1].endswith("0 FAIL, 0 WARN")

        # A drain budget longer than the cluster's KillWait: one FAIL, exit 1.
        s.config.write_text(s.config.read_text().replace("drain_seconds = 2", "drain_seconds = 8"))
        proc = subprocess.run(
            [str(ISENSE), "--config", str(s.config), "doctor"], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 1
        fails = [line for line in proc.stdout.splitlines() if line.startswith("FAIL")]
        assert fails == [
            "FAIL KillWait=5 s <= drain_seconds 8: Slurm kills workers mid-drain -> set KillWait=11"
            " (or lower [slurm] drain_seconds)"
        ]
    finally:
        s.close()
        s.remove()


def test_slurm_conf_is_written_for_the_release_the_cluster_runs(cluster):
    proc = subprocess.run(
        [str(ISENSE), "--config", str(REPO / "dev" / "isense.dev.toml"), "slurm-conf"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    release = cluster.slurm.version()
    assert f"# For Slurm {release} (as Slurm here reports it; for another: --slurm-version X.Y)." in lines
    assert f"PartitionName={cluster.lend_partition} Nodes=n[1-4] PriorityTier=1" in proc.stdout
    newer = tuple(int(x) for x in release.split(".")[:2]) >= (24, 5)
    assert any("PrologFlags=RunInJob" in line for line in lines) == newer
