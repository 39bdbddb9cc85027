"""`isense reconcile`: the pure comparison, the ledger's per-job usage, the range flags
and the command's exit statuses (sacct itself: test_accounting.py and the cluster test)."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from isense_slurm.errors import ConfigError, UsageError
from isense_slurm.meter.job_usage import JobUsage, LedgerRun, job_usage
from isense_slurm.meter.ledger import Ledger
from isense_slurm.periods import parse_range
from isense_slurm.report import reconcile_view
from isense_slurm.report.reconcile import DIFFERS, NOT_IN_LEDGER, NOT_IN_SLURM, OK, reconcile
from isense_slurm.slurm.accounting import AccountedRun

T0 = datetime(2025, 1, 5, tzinfo=UTC).timestamp()
DAY = 86400.0


def slurm_run(job_id: str, start: float | None, end: float | None, gpus: int = 2, state: str = "COMPLETED"):
    elapsed = int((end or start or 0) - (start or 0))
    return AccountedRun(job_id, "isense-tiny-llama", "inference", "isense", state, start, end, elapsed, gpus, "n1")


def usage(job_id: str, *runs: tuple[float, float | None], gpus: int = 2, requests: int = 0, tokens: int = 0):
    u = JobUsage(job_id, [LedgerRun(i, "tiny-llama", "n1", gpus, s, e) for i, (s, e) in enumerate(runs)])
    u.gpu_seconds = sum(((e if e is not None else T0 + DAY) - s) * gpus for s, e in runs)
    u.requests, u.prompt_tokens, u.completion_tokens = requests, tokens // 2, tokens - tokens // 2
    return u


def compare(ledger, runs, tolerance=30.0, now=T0 + DAY):
    return reconcile(ledger, runs, start=T0, end=T0 + DAY, now=now, tolerance=tolerance)


def test_jobs_on_both_sides_within_the_tolerance_agree():
    ledger = {"7": usage("7", (T0 + 100.4, T0 + 700.9), requests=5, tokens=300)}
    report = compare(ledger, [slurm_run("7", T0 + 101, T0 + 696)])
    assert report.agrees
    (line,) = report.jobs
    assert (line.finding, line.ledger_runs, line.slurm_runs, line.requests, line.tokens) == (OK, 1, 1, 5, 300)
    assert line.slurm_gpu_seconds == 595 * 2 and line.allowed == 60


def test_a_worker_job_slurm_ran_that_the_ledger_lacks_is_named():
    report = compare(
        {"7": usage("7", (T0 + 100, T0 + 700))}, [slurm_run("7", T0 + 100, T0 + 700), slurm_run("8", T0, T0 + 600)]
    )
    assert [(j.job_id, j.finding) for j in report.findings] == [("8", NOT_IN_LEDGER)]
    assert "job 8: not in ledger" in "\n".join(reconcile_view.summary(report))


def test_a_job_that_ended_within_the_tolerance_is_not_a_finding():
    """A worker that failed at once (or ran a second inside the range) is noise, not a difference."""
    report = compare({}, [slurm_run("9", T0 + 10, T0 + 20), slurm_run("10", T0 - 600, T0 + 1)])
    assert report.agrees and [j.finding for j in report.jobs] == [OK, OK]


def test_ledger_time_or_requests_for_a_job_slurm_does_not_know():
    ledger = {"11": usage("11", (T0, T0 + 600)), "12": usage("12", requests=3, tokens=90)}
    report = compare(ledger, [])
    assert [(j.job_id, j.finding) for j in report.jobs] == [("11", NOT_IN_SLURM), ("12", NOT_IN_SLURM)]


def test_gpu_seconds_beyond_the_tolerance_differ_and_the_tolerance_counts_runs_and_gpus():
    ledger = {"13": usage("13", (T0, T0 + 600), (T0 + 700, T0 + 1000), gpus=4)}
    runs = [slurm_run("13", T0, T0 + 600, gpus=4, state="REQUEUED"), slurm_run("13", T0 + 761, T0 + 1000, gpus=4)]
    # 61 s of the second run missing in Slurm: 244 GPU-s; allowed 30 s x 4 GPUs x 2 runs = 240.
    assert compare(ledger, runs).jobs[0].finding == DIFFERS
    assert compare(ledger, runs, tolerance=30).jobs[0].allowed == 240
    assert compare(ledger, runs, tolerance=31).agrees


def test_both_sides_are_clipped_to_the_range_and_a_running_job_counts_to_now():
    now = T0 + 1000
    ledger = job_usage_of([("14", 0, 2, T0 - 500, None)], now=now)
    report = reconcile(ledger, [slurm_run("14", T0 - 500, None, state="RUNNING")], start=T0, end=T0 + DAY, now=now)
    (line,) = report.jobs
    assert line.ledger_gpu_seconds == line.slurm_gpu_seconds == 2000 and line.finding == OK
    assert report.end == now


def test_a_run_that_never_started_counts_nothing():
    assert slurm_run("15", None, None).gpu_seconds(T0, T0 + DAY, T0 + DAY) == 0


def job_usage_of(rows, requests=(), now=T0 + DAY, start=T0, end=T0 + DAY):
    conn = ledger_conn(rows, requests)
    try:
        return job_usage(conn, start, end, now, {"tiny-llama": 1})
    finally:
        conn.close()


def ledger_conn(rows, requests=()):
    conn = sqlite3.connect(":memory:")
    conn.execute(
        "CREATE TABLE workers (job_id TEXT, run INTEGER, model TEXT, node TEXT, gpus INTEGER, "
        "started_at REAL, ended_at REAL)"
    )
    conn.execute("CREATE TABLE requests (job_id TEXT, ts REAL, prompt_tokens INTEGER, completion_tokens INTEGER)")
    for job_id, run, gpus, started, ended in rows:
        conn.execute(
            "INSERT INTO workers VALUES (?, ?, 'tiny-llama', 'n1', ?, ?, ?)", [job_id, run, gpus, started, ended]
        )
    conn.executemany("INSERT INTO requests VALUES (?, ?, ?, ?)", requests)
    return conn


def test_job_usage_sums_runs_and_requests_per_job_in_the_range():
    rows = [("20", 0, 2, T0 - 100, T0 + 100), ("20", 1, None, T0 + 200, T0 + 300), ("21", 0, 4, T0 + DAY, None)]
    requests = [("20", T0 + 50, 10, 5), ("20", T0 + 250, 1, 1), ("20", T0 - 1, 100, 100), ("22", T0 + 5, 3, 4)]
    jobs = job_usage_of(rows, requests)
    assert sorted(jobs) == ["20", "22"]  # 21 starts when the range ends
    assert jobs["20"].gpu_seconds == 100 * 2 + 100 * 1  # run 1 has no GPU count: its model's (1)
    assert (jobs["20"].requests, jobs["20"].tokens, len(jobs["20"].runs)) == (2, 17, 2)
    assert (jobs["22"].runs, jobs["22"].tokens) == ([], 7)


def test_job_usage_on_a_real_ledger(tmp_path):
    with Ledger.open(tmp_path / "ledger.db") as ledger:
        ledger.worker_event("30", state="lent", node="n1", gpus=2, model="tiny-llama", at=T0 + 10)
        ledger.worker_event("30", state="ended", reason="completed", at=T0 + 70)
    from isense_slurm.meter.earnings import open_readonly

    conn = open_readonly(tmp_path / "ledger.db")
    try:
        (job,) = job_usage(conn, T0, T0 + DAY, T0 + DAY).values()
    finally:
        conn.close()
    assert (job.job_id, job.gpu_seconds, job.model) == ("30", 120, "tiny-llama")


def test_the_range_flags():
    now = T0 + 3600
    assert parse_range(None, None, None, now) == (T0, now)
    assert parse_range("today", None, None, now) == (T0, T0 + DAY)
    assert parse_range("yesterday", None, None, now) == (T0 - DAY, T0)
    assert parse_range("2025-01-01..2025-01-03", None, None, now) == (T0 - 4 * DAY, T0 - DAY)
    assert parse_range("2024-12", None, None, now)[1] == T0 - 4 * DAY
    assert parse_range(None, "2025-01-05T00:10", "2025-01-05T00:20:30", now) == (T0 + 600, T0 + 1230.0)
    assert parse_range(None, "2025-01-04", "2025-01-04", now) == (T0 - DAY, T0)
    for period, since, until in [
        ("today", "2025-01-01", None),
        ("2025-01-03..2025-01-01", None, None),
        ("2025-02-30", None, None),
        (None, "2025-01-05 25:00", None),
        (None, "soon", None),
        ("2025-02", None, None),  # starts in the future
    ]:
        with pytest.raises(UsageError):
            parse_range(period, since, until, now)


def run_command(monkeypatch, tmp_path, runs, *flags):
    """`isense reconcile` with sacct's answer replaced (the real one: the cluster test)."""
    from isense_slurm.commands import reconcile as command

    monkeypatch.setattr("isense_slurm.slurm.accounting.accounted_runs", lambda *a, **k: runs)
    cfg = SimpleNamespace(
        ledger=SimpleNamespace(path=str(tmp_path / "ledger.db")),
        models=[SimpleNamespace(name="tiny-llama", gpus=1)],
        slurm=SimpleNamespace(service_account="isense", lend_partition="inference"),
    )
    monkeypatch.setattr("isense_slurm.config.load_config", lambda path: cfg)
    args = SimpleNamespace(config=None, period=None, since=None, until=None, tolerance="30", json=False, ledger=None)
    for flag in flags:
        key, _, value = flag.partition("=")
        setattr(args, key, value if value else True)
    return command.run(args)


def test_the_command_exits_0_when_they_agree_and_3_naming_the_job_otherwise(monkeypatch, tmp_path, capsys):
    import time

    now = time.time()
    with Ledger.open(tmp_path / "ledger.db") as ledger:
        ledger.worker_event("41", state="lent", node="n1", gpus=2, model="tiny-llama", at=now - 300)
        ledger.worker_event("41", state="ended", reason="completed", at=now - 100)
    since = datetime.fromtimestamp(now - 600, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    ours = AccountedRun(
        "41", "isense-tiny-llama", "inference", "isense", "COMPLETED", now - 299, now - 101, 198, 2, "n1"
    )
    other = AccountedRun(
        "42", "isense-tiny-llama", "inference", "isense", "COMPLETED", now - 500, now - 200, 300, 2, "n2"
    )
    admins = AccountedRun("43", "my-test", "inference", "isense", "COMPLETED", now - 500, now - 200, 300, 2, "n2")
    assert run_command(monkeypatch, tmp_path, [ours, admins], f"since={since}") == 0
    assert "agree on 1 worker job" in capsys.readouterr().out
    assert run_command(monkeypatch, tmp_path, [ours, other], f"since={since}", "json") == 3
    doc = json.loads(capsys.readouterr().out)
    assert [(j["job_id"], j["finding"]) for j in doc["jobs"]] == [("41", OK), ("42", NOT_IN_LEDGER)]
    assert doc["agrees"] is False and doc["findings"] == 1


def test_the_command_checks_flags_before_it_opens_anything(monkeypatch, tmp_path):
    with pytest.raises(UsageError, match="--tolerance"):
        run_command(monkeypatch, tmp_path, [], "tolerance=-1")
    with pytest.raises(ConfigError, match="no ledger here"):
        run_command(monkeypatch, tmp_path, [])
