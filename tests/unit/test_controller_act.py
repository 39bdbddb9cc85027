"""The worker job the controller submits: its script and sbatch options (controller/act.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from isense_slurm.controller.act import Outcome, worker_options, worker_script
from isense_slurm.planner import Cancel, Submit
from isense_slurm.slurm import sbatch_args

SUBMIT = Submit("n3", 4, "tiny-llama", 57, 5, "idle")


def test_script_sets_a_writable_home_and_execs_the_worker(tmp_path):
    script = worker_script(
        Path("/etc/isense/my config.toml"), Path("/var/lib/isense/jobs"), "tiny-llama", "/opt/isense/venv/bin/isense"
    )
    assert script.startswith("#!/bin/bash\n")
    assert "export HOME=/var/lib/isense/jobs/home XDG_CACHE_HOME=/var/lib/isense/jobs/home/.cache\n" in script
    last = script.rstrip("\n").splitlines()[-1]
    assert last == "exec /opt/isense/venv/bin/isense --config '/etc/isense/my config.toml' worker --model tiny-llama"
    path = tmp_path / "job.sh"
    path.write_text(script)
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0


def test_script_runs_the_command_with_the_home_it_sets(tmp_path):
    fake = tmp_path / "isense"
    fake.write_text('#!/bin/sh\necho "HOME=$HOME CACHE=$XDG_CACHE_HOME ARGS=$*"\n')
    fake.chmod(0o755)
    script = tmp_path / "job.sh"
    script.write_text(worker_script(tmp_path / "c.toml", tmp_path / "jobs", "m", str(fake)))
    out = subprocess.run(["bash", str(script)], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    home = tmp_path / "jobs" / "home"
    assert out.stdout.strip() == f"HOME={home} CACHE={home}/.cache ARGS=--config {tmp_path}/c.toml worker --model m"
    assert (home / ".cache").is_dir() and (home.stat().st_mode & 0o777) == 0o700


def test_options_pin_the_node_and_never_requeue():
    args = sbatch_args(worker_options(SUBMIT, lend_partition="inference", job_dir=Path("/jobs"), plugin=True))
    assert args == [
        "--partition=inference",
        "--job-name=isense-tiny-llama",
        "--gres=gpu:4",
        "--nodes=1",
        "--nodelist=n3",
        "--time=57",
        "--time-min=5",
        "--output=/jobs/isense-%j.out",
        "--chdir=/jobs",
        "--no-requeue",
        "--isense-worker",
    ]


def test_without_the_plugin_no_plugin_option():
    args = sbatch_args(worker_options(SUBMIT, lend_partition="inference", job_dir=Path("/jobs"), plugin=False))
    assert "--isense-worker" not in args and "--no-requeue" in args


def test_outcome_lines():
    assert Outcome(SUBMIT, "81").line() == "sbatch tiny-llama on n3 (4 GPUs, 57 min): job 81"
    assert (
        Outcome(SUBMIT, None, "sbatch: bad").line() == "sbatch tiny-llama on n3 (4 GPUs, 57 min): FAILED: sbatch: bad"
    )
    assert Outcome(Cancel("9", "why"), None).line() == "scancel 9: ok"
