"""`isense status`: the model over recorded Slurm output and a real ledger, the views,
-p, JSON and plain output through the real CLI (`--from-json` reads the recorded files).

The fixtures come from tests/fixtures/slurm/record: n4 drained; train-a (2 GPUs on n1),
the isense worker (2 GPUs on n2, comment isense:tiny-llama) and train-multi (1 GPU on n1
and n2) running; train-reclaim holds all 4 GPUs of n3 after preempting an isense job.
So: n1 3 training / 1 idle, n2 1 training / 2 lent / 1 idle, n3 4 training, n4 none idle.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from earnings_world import DAY, HOUR, cli, db_bytes, make_world, request, write_requests
from isense_slurm.meter.earnings import open_readonly
from isense_slurm.meter.ledger import Ledger
from isense_slurm.report import status_inputs, status_view
from isense_slurm.report.status_model import build_status
from isense_slurm.slurm.file_backend import FileBackend

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "slurm"
VERSIONS = sorted(p.name for p in FIXTURES.iterdir() if (p / "squeue.json").exists())
REPO = Path(__file__).resolve().parents[2]
NOW = DAY + 12 * HOUR  # 2025-01-01 12:00 UTC
ANSI = re.compile(r"\x1b\[")


def scenario(version: str) -> dict[str, int]:
    """Job ids of the recorded scenario, from the README the recorder wrote."""
    text = (FIXTURES / version / "README").read_text()
    fields = dict(part.split("=", 1) for part in text.split())
    train_a, worker, train_multi, train_reclaim = map(int, fields["running"].split(","))
    return {
        "train_a": train_a,
        "worker": worker,
        "train_multi": train_multi,
        "train_reclaim": train_reclaim,
        "preempted": int(fields["requeued"]),
    }


def traffic_world(tmp_path, worker_job: int):
    """A ledger where the fixture's worker job serves 'tiny' on n2, with requests today
    (two in the last minute), one yesterday and one today without a node."""
    config, ledger = make_world(tmp_path)
    with Ledger.open(ledger) as book:
        book.worker_event(worker_job, state="lent", node="n2", gpus=2, model="tiny", at=NOW - HOUR)
        book.worker_event(worker_job, state="serving", at=NOW - HOUR + 30)
    write_requests(
        config,
        [
            request("yesterday", NOW - 13 * HOUR, node="n2"),  # 2024-12-31 23:00
            request("morning", NOW - 6 * HOUR, node="n2", prompt=2000, completion=1000),
            request("recent-1", NOW - 30, node="n2"),
            request("recent-2", NOW - 10, node="n2", cached=200),
            request("nowhere", NOW - 5 * HOUR, node=None),
        ],
    )
    return config, ledger


def report_for(version: str, ledger: Path | None, **kwargs):
    slurm = status_inputs.read_slurm(FileBackend(FIXTURES / version))
    conn = open_readonly(ledger) if ledger else None
    try:
        figures = status_inputs.read_figures(conn, NOW)
    finally:
        if conn:
            conn.close()
    return build_status(
        slurm.nodes,
        slurm.jobs,
        slurm.partitions,
        figures,
        lend_partition="inference",
        service_account="isense",
        currency="EUR",
        at=datetime.fromtimestamp(NOW, UTC),
        day_start=status_inputs.day_start(NOW),
        **kwargs,
    )


@pytest.mark.parametrize("version", VERSIONS)
def test_gpus_split_into_training_lent_and_idle_per_node(version):
    report = report_for(version, None, view="node")
    rows = {r.label: r for r in report.rows}
    assert list(rows) == ["n1", "n2", "n3", "n4"]
    split = {name: (r.gpus_total, r.gpus_train, r.gpus_lent, r.gpus_idle) for name, r in rows.items()}
    assert split == {"n1": (4, 3, 0, 1), "n2": (4, 1, 2, 1), "n3": (4, 4, 0, 0), "n4": (4, 0, 0, 0)}
    assert rows["n4"].state == "idle+drain" and rows["n1"].state == "mixed"
    # No ledger: the worker job shows as lent, its model from the job comment.
    (worker,) = rows["n2"].workers
    assert (worker.job_id, worker.model, worker.state, worker.gpus) == (
        str(scenario(version)["worker"]),
        "tiny-llama",
        "lent",
        2,
    )
    assert (report.total.gpus_total, report.total.gpus_lent, report.total.gpus_idle) == (16, 2, 2)


def test_ledger_figures_give_worker_state_rates_and_todays_money(tmp_path):
    ids = scenario("22.05")
    _, ledger = traffic_world(tmp_path, ids["worker"])
    report = report_for("22.05", ledger, view="node")
    n2 = next(r for r in report.rows if r.label == "n2")
    assert [(w.model, w.state) for w in n2.workers] == [("tiny", "serving")]
    # Last minute: recent-1 and recent-2, 1000 in + 500 out each, over 60 s.
    assert n2.last_minute.requests == 2 and report.rate(n2.last_minute.requests) == pytest.approx(2 / 60)
    assert n2.last_minute.prompt_tokens + n2.last_minute.completion_tokens == 3000
    # Today: morning + the two recent ones (yesterday's row is not today's).
    assert (n2.today.requests, n2.today.prompt_tokens, n2.today.completion_tokens) == (3, 4000, 2000)
    # tiny: 0.10 in / 0.40 out / 0.05 cached per Mtok: 600,000 + 300,000 + 290,000 nanos; share 0.7.
    assert (n2.today.gross_nanos, n2.today.operator_nanos) == (1_190_000, 833_000)
    # The total also counts the request with no node; nodes without traffic have none.
    assert report.total.today.requests == 4
    assert all(r.today.requests == 0 for r in report.rows if r.label != "n2")
    # Lent an hour ago on 2 GPUs, serving 30 s later: 7200 GPU-s lent today, 60 of them starting.
    assert report.lent_today == pytest.approx((7200.0, 60.0))
    assert report.start_share_today == pytest.approx(60 / 7200)
    assert "2.0 GPU-h lent, 0.8 % of it starting" in status_view.summary(report)
    figures = json.loads(status_view.to_json(report))
    assert (figures["lent_gpu_hours_today"], figures["start_share_today"]) == (2.0, 0.0083)


def test_a_start_that_never_served_is_all_start_and_yesterday_does_not_count(tmp_path):
    ids = scenario("22.05")
    _, ledger = make_world(tmp_path)
    with Ledger.open(ledger) as book:
        # Yesterday's run ended before midnight: not today's.
        book.worker_event("7", state="lent", node="n1", gpus=4, model="tiny", at=NOW - 14 * HOUR)
        book.worker_event("7", state="ended", reason="preempted", at=NOW - 13 * HOUR)
        # Still starting, 10 minutes in, on 2 GPUs.
        book.worker_event(str(ids["worker"]), state="lent", node="n2", gpus=2, model="tiny", at=NOW - 600)
    report = report_for("22.05", ledger, view="node")
    assert report.lent_today == pytest.approx((1200.0, 1200.0))
    assert report.start_share_today == 1.0


def test_partition_view_groups_nodes_by_state_like_sinfo_and_p_filters():
    report = report_for("22.05", None)
    got = [
        (r.label, r.is_default, r.avail, r.state, r.nodelist, r.gpus_train, r.gpus_lent, r.gpus_idle)
        for r in report.rows
    ]
    assert got == [
        ("train", True, "UP", "mixed", "n[1-3]", 8, 2, 2),
        ("train", True, "UP", "idle+drain", "n4", 0, 0, 0),
        ("inference", False, "UP", "mixed", "n[1-3]", 8, 2, 2),
        ("inference", False, "UP", "idle+drain", "n4", 0, 0, 0),
    ]
    only = report_for("22.05", None, partition="inference")
    assert [r.label for r in only.rows] == ["inference", "inference"]
    plain = status_view.to_plain(report).splitlines()
    assert plain[0].split() == [
        "PARTITION",
        "AVAIL",
        "STATE",
        "NODES",
        "GPUS",
        "TRAIN",
        "LENT",
        "IDLE",
        "MODELS",
        "WORKERS",
        "REQ/S",
        "TOK/S",
        "TOKENS_TODAY",
        "EARNED_TODAY(EUR)",
        "NODELIST",
    ]
    assert plain[1].split()[:9] == ["train*", "up", "mixed", "3", "12", "8", "2", "2", "tiny-llama"]


def test_cli_json_from_saved_output_and_ledger_leaves_the_ledger_untouched(tmp_path, capsys):
    ids = scenario("22.05")
    config, ledger = make_world(tmp_path)
    now = time.time()
    with Ledger.open(ledger) as book:
        book.worker_event(ids["worker"], state="serving", node="n2", gpus=2, model="tiny", at=now - 60)
    midnight = status_inputs.day_start(now).timestamp()
    write_requests(config, [request("r1", max(midnight, now - 5), node="n2")])
    before = db_bytes(ledger)
    code, out, err = cli(
        capsys, "--config", config, "status", "-N", "--json", "--from-json", FIXTURES / "22.05", "--ledger", ledger
    )
    assert (code, err) == (0, "")
    doc = json.loads(out)
    assert doc["view"] == "node" and doc["currency"] == "EUR" and doc["lend_partition"] == "inference"
    n2 = next(r for r in doc["rows"] if r["node"] == "n2")
    assert n2["gpus"] == {"total": 4, "train": 1, "lent": 2, "idle": 1}
    assert n2["workers"] == [{"job_id": str(ids["worker"]), "model": "tiny", "state": "serving", "gpus": 2}]
    assert n2["today"]["requests"] == 1 and n2["today"]["gross"] == "0.000300000"
    assert n2["last_minute"]["requests"] == 1
    assert doc["total"]["gpus"] == {"total": 16, "train": 8, "lent": 2, "idle": 2}
    assert db_bytes(ledger) == before


def test_cli_prints_plain_columns_when_piped(tmp_path):
    config, ledger = make_world(tmp_path)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "isense_slurm",
            "--config",
            str(config),
            "status",
            "-p",
            "inference",
            "--from-json",
            str(FIXTURES / "22.05"),
            "--ledger",
            str(ledger),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    assert not ANSI.search(proc.stdout)
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("PARTITION  AVAIL  STATE")
    assert [line.split()[0] for line in lines[1:]] == ["inference", "inference"]
    assert lines[1].split()[-1] == "n[1-3]" and lines[2].split()[-1] == "n4"


def test_rich_terminal_output_has_colour_and_the_totals_line(tmp_path):
    from io import StringIO

    from rich.console import Console

    report = report_for("22.05", None, view="node")
    console = Console(file=StringIO(), force_terminal=True, width=200)
    status_view.print_table(report, console)
    text = console.file.getvalue()
    assert ANSI.search(text)
    assert "4 nodes, 16 GPUs: 8 training, 2 lent, 2 idle" in re.sub(r"\x1b\[[0-9;]*m", "", text)


def test_bad_partition_missing_saved_output_and_foreign_ledger_are_one_line_exit_2(tmp_path, capsys):
    config, ledger = make_world(tmp_path)
    code, out, err = cli(
        capsys, "--config", config, "status", "-p", "gpu-big", "--from-json", FIXTURES / "22.05", "--ledger", ledger
    )
    assert (code, out) == (2, "")
    assert err == "isense: -p gpu-big: no such partition (known: train, inference)\n"
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = cli(capsys, "--config", config, "status", "--from-json", empty, "--ledger", ledger)
    assert code == 2 and err.startswith(f"isense: --from-json {empty}: neither") and err.count("\n") == 1
    foreign = tmp_path / "foreign.db"
    import sqlite3

    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE t (x)")
    code, _, err = cli(capsys, "--config", config, "status", "--from-json", FIXTURES / "22.05", "--ledger", foreign)
    assert code == 2 and "not an isense ledger" in err and err.count("\n") == 1


def test_a_missing_configured_ledger_is_a_warning_not_an_error(tmp_path, capsys):
    config, ledger = make_world(tmp_path)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{ledger}{suffix}").unlink(missing_ok=True)
    code, out, err = cli(capsys, "--config", config, "status", "--json", "--from-json", FIXTURES / "22.05")
    assert code == 0 and json.loads(out)["total"]["gpus"]["lent"] == 2
    assert err.startswith("isense: warning: no ledger at") and not ledger.exists()


@pytest.mark.cluster
def test_status_on_the_dev_cluster(cluster, tmp_path, capsys):
    config, ledger = make_world(tmp_path)
    code, out, err = cli(capsys, "--config", config, "status", "-N", "--json", "--ledger", ledger)
    assert code == 0, err
    doc = json.loads(out)
    assert [r["node"] for r in doc["rows"]] == list(cluster.nodes)
    for row in doc["rows"]:
        g = row["gpus"]
        assert g["total"] == cluster.gpus_per_node and g["train"] + g["lent"] + g["idle"] <= g["total"]
    code, out, _ = cli(capsys, "--config", config, "status", "--ledger", ledger)
    assert code == 0 and out.splitlines()[0].startswith("PARTITION")
    assert {line.split()[0] for line in out.splitlines()[1:]} == {"train*", "inference"}


def test_todays_worker_starts_show_as_median_steps(tmp_path):
    ids = scenario("22.05")
    _, ledger = traffic_world(tmp_path, ids["worker"])  # lent an hour ago, serving 30 s later
    with Ledger.open(ledger) as book:
        job_start = NOW - HOUR
        book.record_start(
            ids["worker"],
            {
                "worker_up": job_start + 0.4,
                "vllm_spawned": job_start + 0.5,
                "healthy": job_start + 29.0,
                "weights_s": 2.5,
            },
        )
    report = report_for("22.05", ledger, view="node")
    assert report.starts_today == 1
    line = status_view.starts_line(report)
    assert line == (
        "starts today: 1, median seconds after the job start: worker 0.40, vllm 0.50, healthy 29.0, probed -, "
        "serving 30.0 (vLLM: weights 2.50, engine -)"
    )
    figures = json.loads(status_view.to_json(report))
    assert figures["starts_today"] == 1
    assert figures["start_median_seconds"]["healthy"] == 29.0 and figures["start_median_seconds"]["probed"] is None


def test_no_start_reported_means_no_starts_line(tmp_path):
    ids = scenario("22.05")
    _, ledger = traffic_world(tmp_path, ids["worker"])
    report = report_for("22.05", ledger, view="node")
    assert report.starts_today == 0 and status_view.starts_line(report) is None
