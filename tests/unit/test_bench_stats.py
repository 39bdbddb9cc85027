"""bench/stats.py: figures over successes only, and a last line that cannot lie."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from stats import finish, guarded, percentile, summary  # noqa: E402


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))  # 1..100
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.95) == 95
    assert percentile(values, 0.99) == 99
    assert percentile(values, 1.0) == 100
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([3, 1, 2], 0.5) == 2  # unsorted input


def test_percentile_of_nothing_is_an_error_not_a_figure():
    with pytest.raises(ValueError):
        percentile([], 0.5)


def test_summary_over_the_samples_given_and_nothing_made_up_when_empty():
    assert summary([]) == {"n": 0}
    s = summary([0.001, 0.002, 0.003, 0.004], scale=1000, digits=1)
    assert s == {"n": 4, "p50": 2.0, "p95": 4.0, "max": 4.0, "mean": 2.5}
    assert set(summary([1.0], quantiles=(0.5, 0.99, 0.999))) == {"n", "p50", "p99", "p99.9", "max", "mean"}


def test_a_bench_that_keeps_failures_out_of_its_samples():
    # The pattern every bench follows: time successes, count failures.
    outcomes = [(0.010, "ok"), (30.0, "timeout"), (0.012, "ok"), (0.0, "HTTP 502")]
    ok = [t for t, what in outcomes if what == "ok"]
    s = summary(ok)
    assert s["n"] == 2 and s["max"] == 0.012  # the 30 s timeout is no latency sample


def test_finish_prints_errors_last_and_fails_the_exit_status(capsys):
    assert finish({"bench": "x", "p50": 1.0}, 0) == 0
    assert last_json(capsys.readouterr().out) == {"bench": "x", "p50": 1.0, "errors": 0}
    assert finish({"bench": "x", "errors": 0}, 3) == 1  # the count passed in wins
    assert last_json(capsys.readouterr().out)["errors"] == 3
    with pytest.raises(ValueError):
        finish({}, -1)


def test_guarded_passes_the_status_through(capsys):
    assert guarded("x", lambda: finish({"bench": "x"}, 0)) == 0
    assert guarded("x", lambda: None) == 0
    assert guarded("x", lambda: finish({"bench": "x"}, 2)) == 1


def test_guarded_turns_a_crash_into_a_json_last_line_and_a_failure(capsys):
    def crashes():
        print("half the figures")
        raise RuntimeError("worker exited 1")

    assert guarded("x", crashes) == 1
    captured = capsys.readouterr()
    last = last_json(captured.out)
    assert last["errors"] == 1 and last["bench"] == "x" and "RuntimeError: worker exited 1" in last["error"]
    assert "Traceback" in captured.err


def test_guarded_sys_exit_with_a_message_or_code_fails_but_zero_passes(capsys):
    def message():
        sys.exit("bench/worker.py: run dev/vllm-setup first")

    assert guarded("x", message) == 1
    assert "vllm-setup" in last_json(capsys.readouterr().out)["error"]
    assert guarded("x", lambda: sys.exit(2)) == 2
    assert last_json(capsys.readouterr().out)["errors"] == 1
    with pytest.raises(SystemExit):
        guarded("x", lambda: sys.exit(0))  # --help


def test_finish_names_the_first_failures(capsys):
    failures = [f"request {i}: HTTP 502" for i in range(8)]
    assert finish({"bench": "x"}, len(failures), failures) == 1
    captured = capsys.readouterr()
    last = last_json(captured.out)
    assert last["errors"] == 8 and last["failures"] == failures[:5]
    assert captured.err.count("FAILED: ") == 8
