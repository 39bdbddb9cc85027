"""The node hooks never fail: broken config, missing secret, odd environments -> exit 0
and one log line. Plus the epilog's reason guess and the worker's SIGTERM marker."""

import os
import subprocess
import time
from pathlib import Path

import pytest

from isense_slurm.hooks import run
from isense_slurm.hooks.epilog import guess_reason
from isense_slurm.hooks.markers import marker_path, take_marker, write_marker
from isense_slurm.hooks.spool import Spool

REPO = Path(__file__).resolve().parents[2]


def job_env(tmp_path, **over):
    env = {
        "SLURM_JOB_ID": "77",
        "SLURMD_NODENAME": "n9",
        "SLURM_JOB_USER": "trainer",
        "SLURM_JOB_PARTITION": "train",
        "SLURM_JOB_GPUS": "0,1",
        "CUDA_VISIBLE_DEVICES": "0,1",
        "ISENSE_HOOK_LOG": str(tmp_path / "log" / "hooks.log"),
        "ISENSE_HOOK_SPOOL": str(tmp_path / "spool"),
    }
    env.update(over)
    return env


def log_lines(tmp_path):
    return (tmp_path / "log" / "hooks.log").read_text().splitlines()


@pytest.mark.parametrize("content", ['[slurm\nlend_partition = "x"', "[nonsense]\nkey = 1\n"])
def test_broken_config_exits_0_logs_one_line_and_spools_gpus_free(tmp_path, content):
    bad = tmp_path / "isense.toml"
    bad.write_text(content)
    for kind in ("prolog", "epilog"):
        assert run.main(kind, job_env(tmp_path, ISENSE_CONFIG=str(bad))) == 0
    prolog_line, epilog_line = log_lines(tmp_path)
    assert "prolog job=77 node=n9" in prolog_line and f"config: {bad}" in prolog_line
    assert "no config: nothing cleaned" in prolog_line
    assert "epilog job=77" in epilog_line and "spooled 1 event(s): no config" in epilog_line
    (event,) = Spool(tmp_path / "spool", "n9").peek()
    assert event["kind"] == "gpus_free" and event["gpus"] == [0, 1]


def test_missing_config_file_and_empty_environment_still_exit_0(tmp_path):
    env = {
        "ISENSE_CONFIG": str(tmp_path / "absent.toml"),
        "ISENSE_HOOK_LOG": str(tmp_path / "log" / "hooks.log"),
        "ISENSE_HOOK_SPOOL": str(tmp_path / "spool"),
    }
    assert run.main("epilog", env) == 0
    assert run.main("sideways", env) == 0
    first, second = log_lines(tmp_path)
    assert "epilog job=-" in first and "absent.toml" in first
    assert "unknown hook kind" in second


def test_unwritable_spool_and_log_do_not_raise(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    env = job_env(
        tmp_path,
        ISENSE_CONFIG=str(tmp_path / "absent.toml"),
        ISENSE_HOOK_SPOOL=str(blocker / "spool"),
        ISENSE_HOOK_LOG=str(blocker / "hooks.log"),
    )
    assert run.main("epilog", env) == 0
    assert "events lost" in capsys.readouterr().err  # the log line fell back to stderr


def wrapper(kind: str) -> Path:
    return REPO / "etc-slurm" / f"{kind}.d" / f"isense-{kind}"


@pytest.mark.parametrize("kind", ["prolog", "epilog"])
def test_wrapper_scripts_exit_0_with_a_broken_config_and_a_broken_python(tmp_path, kind):
    bad = tmp_path / "isense.toml"
    bad.write_text("[slurm]\nlend_partition = 3\n")
    env = {**job_env(tmp_path, ISENSE_CONFIG=str(bad)), "ISENSE_HOOKS_ENV": str(tmp_path / "none.env")}
    proc = subprocess.run([str(wrapper(kind))], env=env, capture_output=True, timeout=20)
    assert proc.returncode == 0
    wait_for_lines(tmp_path, 1)  # the epilog reports from a detached process
    env["ISENSE_PYTHON"] = str(tmp_path / "no-python")
    proc = subprocess.run([str(wrapper(kind))], env=env, capture_output=True, timeout=20)
    assert proc.returncode == 0
    first, second = wait_for_lines(tmp_path, 2)
    assert f"{kind} job=77" in first and f"config: {bad}:1: slurm." in first
    assert "hook exited 127" in second


def wait_for_lines(folder: Path, count: int, timeout: float = 15) -> list[str]:
    deadline = time.monotonic() + timeout
    while len(lines := log_lines(folder) if (folder / "log" / "hooks.log").exists() else []) < count:
        assert time.monotonic() < deadline, f"{count} hook log line(s) expected, got {lines}"
        time.sleep(0.05)
    return lines


def slow_python(tmp_path: Path) -> Path:
    """An ISENSE_PYTHON that takes 2 s and then records the env it was given."""
    fake = tmp_path / "slow-python"
    fake.write_text(f"#!/bin/sh\nsleep 2\nenv > {tmp_path}/python-env\n")
    fake.chmod(0o755)
    return fake


def test_epilog_returns_before_its_report_and_stamps_its_start(tmp_path):
    env = {
        **job_env(tmp_path),
        "ISENSE_HOOKS_ENV": str(tmp_path / "none.env"),
        "ISENSE_PYTHON": str(slow_python(tmp_path)),
    }
    before = time.time()
    t0 = time.monotonic()
    assert subprocess.run([str(wrapper("epilog"))], env=env, timeout=20).returncode == 0
    assert time.monotonic() - t0 < 1.5  # did not wait for the 2 s "Python"
    reported = tmp_path / "python-env"
    deadline = time.monotonic() + 15
    while not reported.exists() or "ISENSE_HOOK_STARTED" not in reported.read_text():
        assert time.monotonic() < deadline, "the detached epilog never ran"
        time.sleep(0.05)
    started = float(
        next(line for line in reported.read_text().splitlines() if line.startswith("ISENSE_HOOK_STARTED=")).split(
            "=", 1
        )[1]
    )
    assert before - 0.5 <= started <= before + 1.5


def test_detached_epilog_survives_slurmds_kill_of_the_hooks_process_group(tmp_path):
    """slurmd SIGKILLs the epilog's process group as soon as it returns: the report must
    already be in its own session by then, every time."""
    if os.geteuid() != 0:
        pytest.skip("the env file that slows setsid down must be owned by root")
    fake = tmp_path / "quick-python"
    fake.write_text(f"#!/bin/sh\necho done >> {tmp_path}/reports\n")
    fake.chmod(0o755)
    # A slow start of the detached child (a loaded node): setsid runs 0.2 s late, so a
    # hook that returned before its child left the group would lose every report.
    env_file = tmp_path / "hooks.env"
    env_file.write_text('setsid() { sleep 0.2; command setsid "$@"; }\n')
    env_file.chmod(0o644)
    env = {**job_env(tmp_path), "ISENSE_HOOKS_ENV": str(env_file), "ISENSE_PYTHON": str(fake)}
    runs = 5
    for _ in range(runs):
        proc = subprocess.Popen([str(wrapper("epilog"))], env=env, start_new_session=True)
        assert proc.wait(timeout=20) == 0
        try:
            os.killpg(proc.pid, 9)  # what slurmd does to the hook's group
        except ProcessLookupError:
            pass
    reports = tmp_path / "reports"
    deadline = time.monotonic() + 15
    while not reports.exists() or len(reports.read_text().split()) < runs:
        assert time.monotonic() < deadline, f"reports: {reports.read_text() if reports.exists() else 'none'}"
        time.sleep(0.05)


def test_epilog_runs_to_its_end_with_detach_off_and_the_prolog_always_does(tmp_path):
    for kind, extra in (("epilog", {"ISENSE_HOOK_DETACH": "0"}), ("prolog", {})):
        env = {
            **job_env(tmp_path),
            "ISENSE_HOOKS_ENV": str(tmp_path / "none.env"),
            "ISENSE_PYTHON": str(slow_python(tmp_path)),
            **extra,
        }
        t0 = time.monotonic()
        assert subprocess.run([str(wrapper(kind))], env=env, timeout=20).returncode == 0
        assert time.monotonic() - t0 >= 2.0 and (tmp_path / "python-env").exists()
        (tmp_path / "python-env").unlink()


def test_epilog_event_time_is_the_wrappers_start():
    assert run._epilog_clock({"ISENSE_HOOK_STARTED": f"{time.time() - 0.5:.6f}"})() < time.time() - 0.4
    assert abs(run._epilog_clock({"ISENSE_HOOK_STARTED": "junk"})() - time.time()) < 1
    assert abs(run._epilog_clock({"ISENSE_HOOK_STARTED": "12.5"})() - time.time()) < 1  # absurd: ignored


def test_wrapper_found_through_a_symlink_reads_a_root_owned_env_file(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the env file must be owned by root")
    link_dir = tmp_path / "prolog.d"
    link_dir.mkdir()
    (link_dir / "50-isense").symlink_to(wrapper("prolog"))
    env_file = tmp_path / "hooks.env"
    env_file.write_text(f'ISENSE_CONFIG="{tmp_path}/from-env-file.toml"\n')
    env_file.chmod(0o644)
    env = {**job_env(tmp_path), "ISENSE_HOOKS_ENV": str(env_file)}
    assert subprocess.run([str(link_dir / "50-isense")], env=env, timeout=20).returncode == 0
    env_file.chmod(0o666)  # writable by others: refused, not sourced
    assert subprocess.run([str(link_dir / "50-isense")], env=env, timeout=20).returncode == 0
    first, refused, third = log_lines(tmp_path)
    assert "from-env-file.toml" in first
    assert "ignored" in refused and "not writable by group/others" in refused
    assert "from-env-file.toml" not in third


@pytest.mark.parametrize(
    "sigterm, code2, reason",
    [
        (1700000000.0, "0:0", "preempted"),
        (None, "0:15", "preempted"),
        (None, "0:0", "completed"),
        (None, "3:0", "failed"),
        (None, "0:9", "failed"),
        (None, None, "failed"),
    ],
)
def test_epilog_reason_guess(sigterm, code2, reason):
    assert guess_reason(sigterm, code2) == reason


def test_marker_is_read_once_and_only_from_its_owner(tmp_path):
    path = marker_path(tmp_path, "55")
    write_marker(path, 1700000000.25)
    assert take_marker(path, os.getuid()) == 1700000000.25
    assert not path.exists() and take_marker(path, os.getuid()) is None
    write_marker(path, 1700000000.25)
    assert take_marker(path, os.getuid() + 1) is None  # someone else's file: ignored (and removed)
    assert not path.exists()
    path.write_text("garbage")
    assert take_marker(path, None) is None
