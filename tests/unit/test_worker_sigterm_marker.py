"""The worker notes where its SIGTERM marker goes (inside Slurm only), for the epilog."""

import re
from pathlib import Path

from isense_slurm.config import parse_config
from isense_slurm.hooks.markers import marker_path
from isense_slurm.secrets import create_secret
from isense_slurm.worker.plan import plan_worker

REPO = Path(__file__).resolve().parents[2]


def config(tmp_path):
    text = (REPO / "dev" / "isense.dev.toml").read_text()
    text = re.sub(r"(?m)^job_dir = .*$", f'job_dir = "{tmp_path / "jobs"}"', text)
    text = re.sub(r"(?m)^dir = .*$", f'dir = "{tmp_path / "secrets"}"', text)
    create_secret(tmp_path / "secrets")
    return parse_config(text, tmp_path / "isense.toml")


def test_marker_path_inside_slurm_and_none_outside(tmp_path, monkeypatch):
    cfg = config(tmp_path)
    monkeypatch.setenv("SLURM_JOB_ID", "812")
    plan = plan_worker(cfg, "tiny-llama", port=40001)
    assert plan.sigterm_marker == marker_path(tmp_path / "jobs", "812") == tmp_path / "jobs" / "812.sigterm"
    monkeypatch.delenv("SLURM_JOB_ID")
    assert plan_worker(cfg, "tiny-llama", port=40001).sigterm_marker is None
