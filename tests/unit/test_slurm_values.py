"""Converters for Slurm's values across versions, sbatch options and command errors."""

from datetime import UTC, datetime

import pytest

from isense_slurm.errors import SlurmError
from isense_slurm.slurm import CliBackend, SubmitOptions, sbatch_args
from isense_slurm.slurm.cli_backend import summarize_stderr
from isense_slurm.slurm.values import duration_minutes, epoch, gpu_count, gpu_indices, number, states


@pytest.mark.parametrize(
    "spec, count",
    [
        ("gpu:4", 4),
        ("gpu:a100:2(S:0-1)", 2),
        ("gpu:3(IDX:0-2)", 3),
        ("gpu:0(IDX:N/A)", 0),
        ("gres:gpu:4", 4),
        ("gres/gpu:1", 1),
        ("gres/gpu", 1),
        ("cpu=2,mem=4G,gres/gpu=3", 3),
        ("cpu=2,gres/gpu=3,gres/gpu:a100=3", 3),
        ("gres/gpu:a100=2,gres/gpu:v100=1", 3),
        ("shard:8,gpu:4", 4),
        ("gpu:a100:1(IDX:3),gpu:v100:1(IDX:0)", 2),
        ("cpu=8,mem=7900M,billing=8", 0),
        ("(null)", 0),
        ("", 0),
        (None, 0),
    ],
)
def test_gpu_count(spec, count):
    assert gpu_count(spec) == count


def test_gpu_indices():
    assert gpu_indices("gpu:2(IDX:0-1)") == (0, 1)
    assert gpu_indices("gpu:a100:1(IDX:3),gpu:v100:2(IDX:0,5)") == (0, 3, 5)
    assert gpu_indices("gpu:0(IDX:N/A)") == ()
    assert gpu_indices("gpu:4") == ()


@pytest.mark.parametrize(
    "value, expected",
    [
        (30, 30),
        (None, None),
        ({"set": True, "infinite": False, "number": 30}, 30),
        ({"set": False, "infinite": False, "number": 0}, None),
        ({"set": True, "infinite": True, "number": 0}, None),
        ("12", 12),
    ],
)
def test_number_reads_plain_and_wrapped(value, expected):
    assert number(value) == expected


def test_epoch_zero_is_none_and_seconds_are_utc():
    assert epoch(0) is None
    assert epoch({"set": True, "infinite": False, "number": 0}) is None
    assert epoch(1700000000) == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)


@pytest.mark.parametrize(
    "text, minutes",
    [
        ("01:00:00", 60),
        ("00:30:00", 30),
        ("1-00:00:00", 1440),
        ("2-12", 3600),
        ("45", 45),
        ("10:30", 11),
        ("UNLIMITED", None),
        ("NONE", None),
        ("Partition_Limit", None),
    ],
)
def test_duration_minutes(text, minutes):
    assert duration_minutes(text) == minutes


@pytest.mark.parametrize(
    "value, words",
    [
        ("idle", ["IDLE"]),
        ("IDLE+DRAIN", ["IDLE", "DRAIN"]),
        ("MIXED*", ["MIXED", "NOT_RESPONDING"]),
        (["IDLE", "DRAIN"], ["IDLE", "DRAIN"]),
        ("down~", ["DOWN", "POWERED_DOWN"]),
    ],
)
def test_states(value, words):
    assert states(value) == words


def test_sbatch_args_from_options_and_mapping():
    opts = SubmitOptions(
        partition="inference",
        job_name="isense-worker",
        gres="gpu:1",
        nodelist=["n1", "n2"],
        time=30,
        requeue=False,
        hold=True,
        extra={"signal": "B:TERM@10", "open_mode": "append"},
    )
    assert sorted(sbatch_args(opts)) == sorted(
        [
            "--partition=inference",
            "--job-name=isense-worker",
            "--gres=gpu:1",
            "--nodelist=n1,n2",
            "--time=30",
            "--hold",
            "--no-requeue",
            "--signal=B:TERM@10",
            "--open-mode=append",
        ]
    )
    assert sbatch_args({"partition": "train", "exclusive": True, "comment": None}) == [
        "--partition=train",
        "--exclusive",
    ]
    assert sbatch_args(None) == []


@pytest.mark.parametrize("bad", [{"--partition": "x"}, {"Partition": "x"}, {"comment": "a\nb"}])
def test_sbatch_args_refuse_what_sbatch_would_misread(bad):
    with pytest.raises(ValueError):
        sbatch_args(bad)


def test_stderr_summary_prefers_fatal_lines():
    stderr = (
        "sinfo: error: resolve_ctls_from_dns_srv: res_nsearch error: Unknown host\n"
        "sinfo: fatal: Could not establish a configuration source\n"
    )
    assert summarize_stderr("sinfo", stderr) == "Could not establish a configuration source"


def test_missing_binary_is_one_clear_error(tmp_path):
    slurm = CliBackend(bin_dir=str(tmp_path))
    with pytest.raises(SlurmError, match=r"scontrol: command not found"):
        slurm.nodes()


def test_missing_slurm_conf_fails_at_once(tmp_path):
    # Slurm itself retries a missing SLURM_CONF for 60 s.
    slurm = CliBackend(env={"SLURM_CONF": str(tmp_path / "nope.conf")})
    with pytest.raises(SlurmError, match=r"SLURM_CONF=.*nope.conf: no such file"):
        slurm.partitions()


@pytest.mark.parametrize("job_id", ["12; rm", "-1", "", "--all"])
def test_job_ids_are_checked_before_any_command(job_id, tmp_path):
    slurm = CliBackend(bin_dir=str(tmp_path))  # would fail differently if it ran anything
    with pytest.raises(SlurmError, match="not a Slurm job id"):
        slurm.cancel(job_id)


def test_unknown_user_is_refused(tmp_path):
    slurm = CliBackend(bin_dir=str(tmp_path))
    with pytest.raises(SlurmError, match="no-such-user-x: no such user"):
        slurm.submit("#!/bin/sh\ntrue\n", as_user="no-such-user-x")
