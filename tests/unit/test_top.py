"""`isense top`: one frame (--once) through the real CLI, the sparkline, and q on a real
pseudo-terminal leaving the live view with exit 0."""

from __future__ import annotations

import os
import select
import sys
import time
from pathlib import Path

import pytest

from earnings_world import cli, make_world, request, write_requests
from isense_slurm.meter.ledger import Ledger
from isense_slurm.report.top_view import BLOCKS, sparkline

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "slurm" / "22.05"
REPO = Path(__file__).resolve().parents[2]


def test_sparkline_scales_to_the_peak_and_keeps_idle_slots_blank():
    assert sparkline([0, 1, 2, 4]) == " ▂▄█"
    assert sparkline([0.01, 100]) == "▁█"  # any traffic shows
    assert sparkline([0, 0, 0]) == "   " and sparkline([]) == ""
    assert set(sparkline(list(range(50)))) <= set(BLOCKS)


def test_once_prints_status_sparkline_and_recent_reclaims(tmp_path, capsys):
    config, ledger = make_world(tmp_path)
    now = time.time()
    slot = 10.0  # 10 minutes in 60 slots
    done = (now // slot) * slot  # requests in whole slots only are drawn
    write_requests(
        config,
        [
            request("a", done - 95, node="n2", prompt=3000, completion=1000),  # 4000 tokens in a 10 s slot: 400/s
            request("b", done - 305, node="n2", prompt=1500, completion=500),  # 200/s
        ],
    )
    with Ledger.open(ledger) as book:
        book.record_reclaim("501", node="n3", worker_job_id="34", submit_time=now - 400, start_time=now - 398.25)
        book.record_reclaim("502", node="n1", worker_job_id="35", submit_time=now - 100)  # not started yet
    code, out, err = cli(capsys, "--config", config, "top", "--once", "-N", "--from-json", FIXTURES, "--ledger", ledger)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith("isense top  ") and lines[0].endswith(" UTC")
    assert lines[1].split()[:3] == ["NODE", "PARTITIONS", "STATE"]
    assert [line.split()[0] for line in lines[2:6]] == ["n1", "n2", "n3", "n4"]
    spark = next(line for line in lines if line.startswith("tokens/s, last 10 min (10 s slots): "))
    drawn = spark.split(": ", 1)[1].split("  last")[0]
    assert len(drawn) == 60 and drawn.count("█") == 1 and drawn.count("▄") == 1
    assert drawn.index("▄") < drawn.index("█")  # the older, smaller slot first
    assert spark.endswith("peak 400")
    reclaims = lines[lines.index(next(x for x in lines if x.startswith("TIME_UTC"))) + 1 :]
    assert [r.split()[1:] for r in reclaims] == [["502", "n1", "35", "-"], ["501", "n3", "34", "1.75"]]


def test_once_with_a_bad_flag_is_one_line_exit_2(tmp_path, capsys):
    config, ledger = make_world(tmp_path)
    code, out, err = cli(capsys, "--config", config, "top", "--once", "--interval", "0", "--ledger", ledger)
    assert (code, out, err) == (2, "", "isense: --interval 0: use 0.2 to 3600 seconds\n")


@pytest.mark.skipif(sys.platform != "linux", reason="pty")
def test_q_leaves_the_live_view_with_exit_0(tmp_path):
    import pty

    config, ledger = make_world(tmp_path)
    argv = [
        sys.executable,
        "-m",
        "isense_slurm",
        "--config",
        str(config),
        "top",
        "--interval",
        "0.5",
        "--from-json",
        str(FIXTURES),
        "--ledger",
        str(ledger),
    ]
    pid, fd = pty.fork()
    if pid == 0:  # the child: the real command on a real terminal
        os.chdir(REPO)
        os.execv(sys.executable, argv)
    output = b""
    deadline = time.monotonic() + 60
    try:
        while b"PARTITION" not in output and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.2)[0]:
                output += os.read(fd, 65536)
        assert b"PARTITION" in output, output[-500:]
        os.write(fd, b"q")
        while time.monotonic() < deadline:
            if select.select([fd], [], [], 0.2)[0]:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
        else:
            os.kill(pid, 9)  # it did not quit: fail below, leave nothing running
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0
    assert output.endswith(b"\x1b[?1049l")  # the alternate screen was left
