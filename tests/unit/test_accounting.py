"""The sacct parser (isense_slurm/slurm/accounting.py) over output recorded on the dev
cluster (tests/fixtures/slurm/record-sacct), and its errors."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from isense_slurm.errors import ConfigError, SlurmError
from isense_slurm.slurm.accounting import FIELDS, accounted_runs, gpus_of, parse_sacct, parse_time, sacct_argv

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "slurm"
RECORDED = sorted(p for p in FIXTURES.glob("*/sacct.txt"))


def readme(path: Path) -> dict[str, str]:
    text = (path.parent / "sacct.README").read_text().split()
    return dict(item.split("=", 1) for item in text)


@pytest.mark.parametrize("path", RECORDED, ids=lambda p: p.parent.name)
def test_recorded_sacct_output(path):
    ids = readme(path)
    runs = parse_sacct(path.read_text())
    by_id: dict[str, list] = {}
    for run in runs:
        by_id.setdefault(run.job_id, []).append(run)
    (done,) = by_id[ids["completed"]]
    assert (done.state, done.gpus, done.name, done.user, done.partition) == (
        "COMPLETED",
        2,
        "isense-tiny-llama",
        "isense",
        "inference",
    )
    assert done.start is not None and done.end is not None and done.elapsed == done.end - done.start >= 3
    (running,) = by_id[ids["running"]]
    assert (running.state, running.end, running.gpus) == ("RUNNING", None, 1)
    assert running.start is not None and running.nodes == ids["nodes"].split(",")[1]
    # The preempted job: its first run ended REQUEUED (or PREEMPTED), 4 GPUs, on the node;
    # --duplicates lists its later run (running, or pending with no start) under the same id.
    preempted = by_id[ids["preempted-requeued"]]
    assert len(preempted) >= 2
    first = preempted[0]
    assert first.state in ("REQUEUED", "PREEMPTED") and first.gpus == 4 and first.end is not None
    assert first.gpu_seconds(0, 2**40, 2**40) == (first.end - first.start) * 4
    (train,) = by_id[ids["training"]]
    assert train.user == "trainer" and train.partition == "train"


def test_the_parser_reads_columns_by_name_not_position():
    text = (
        "State|JobName|JobIDRaw|End|Start|AllocTRES|Extra\n"
        "CANCELLED by 0|isense-m|17|2025-01-05T10:00:30|2025-01-05T10:00:00|cpu=1,gres/gpu:a100=2,node=1|x\n"
        "PENDING|isense-m|18|Unknown|Unknown||y\n"
    )
    a, b = parse_sacct(text)
    assert (a.job_id, a.state, a.gpus, a.end - a.start, a.user, a.elapsed) == ("17", "CANCELLED", 2, 30, None, 0)
    assert (b.start, b.end, b.gpus, b.gpu_seconds(0, 1e12, 1e12)) == (None, None, 0, 0)
    with pytest.raises(SlurmError, match="AllocTRES"):
        parse_sacct("JobIDRaw|JobName|State|Start|End\n1|a|RUNNING|Unknown|Unknown\n")
    assert parse_sacct("") == []


def test_gpus_and_times():
    assert gpus_of("billing=4,cpu=4,gres/gpu=2,gres/gpu:a100=2,mem=1G,node=1") == 2
    assert gpus_of("gres/gpu:a100=2,gres/gpu:h100=1") == 3
    assert gpus_of("cpu=1,mem=100M,node=1") == 0 and gpus_of("") == 0
    assert parse_time("1970-01-02T00:00:00") == 86400 and parse_time("Unknown") is None
    with pytest.raises(SlurmError):
        parse_time("Jan 5 10:00")


def test_the_command_line():
    argv = sacct_argv(10.5, 20.2, user="isense", partition="inference")
    assert argv[:4] == ["sacct", "--parsable2", "--allocations", "--duplicates"]
    assert f"--format={','.join(FIELDS)}" in argv
    assert argv[argv.index("--starttime") + 1] == "1970-01-01T00:00:10"
    assert argv[argv.index("--endtime") + 1] == "1970-01-01T00:00:21"
    assert argv[-4:] == ["--user", "isense", "--partition", "inference"]
    assert "--allusers" in sacct_argv(0, 1)


def fake_sacct(tmp_path, monkeypatch, body: str) -> None:
    script = tmp_path / "sacct"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")


def test_errors_are_one_line_with_the_right_exit(tmp_path, monkeypatch):
    disabled = (FIXTURES / "22.05" / "sacct-disabled.stderr").read_text().strip()  # exit 1, recorded
    fake_sacct(tmp_path, monkeypatch, f"echo '{disabled}' >&2; exit 1")
    with pytest.raises(ConfigError, match="accounting storage is disabled.*slurmdbd"):
        accounted_runs(0, 1)
    fake_sacct(
        tmp_path, monkeypatch, "echo 'sacct: error: Problem talking to the database: Connection refused' >&2; exit 1"
    )
    with pytest.raises(SlurmError, match="^sacct: Problem talking to the database") as err:
        accounted_runs(0, 1)
    assert not isinstance(err.value, ConfigError)
    fake_sacct(
        tmp_path, monkeypatch, 'echo "TZ=$TZ $SLURM_TIME_FORMAT" >&2; echo "JobIDRaw|JobName|State|Start|End|AllocTRES"'
    )
    assert accounted_runs(0, 1) == []
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="sacct: command not found"):
        accounted_runs(0, 1)


def test_sacct_runs_in_utc(tmp_path, monkeypatch):
    fake_sacct(
        tmp_path, monkeypatch, 'echo "JobIDRaw|JobName|State|Start|End|AllocTRES"; echo "1|$TZ|$SLURM_TIME_FORMAT|x|x|"'
    )
    monkeypatch.setenv("TZ", "America/New_York")
    monkeypatch.setenv("SLURM_TIME_FORMAT", "relative")
    (run,) = parse_sacct_via(tmp_path, monkeypatch)
    assert (run.name, run.state) == ("UTC", "standard")


def parse_sacct_via(tmp_path, monkeypatch):
    # Start 'x' is not a time: the fake prints it only to show the environment.
    import isense_slurm.slurm.accounting as accounting

    monkeypatch.setattr(accounting, "parse_time", lambda text: None)
    return accounting.accounted_runs(0, 1)
