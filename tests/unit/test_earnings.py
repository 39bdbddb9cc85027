"""`isense earnings`: sums per UTC period and group, lent GPU-hours, output forms, bad input.

Prices (config in earnings_world): tiny 0.10 in / 0.40 out / 0.05 cached per Mtok,
big 1.00 / 2.00 / 0.50; operator share 0.7; raw GPU-hour 2.5 EUR. So a tiny request
of 1000 in / 500 out is 300,000 nanos (0.0003 EUR), with 200 of its 1000 in cached
290,000; a big one 2,000,000 nanos.
"""

import csv
import io
import json
import sqlite3
import time
from datetime import date

import pytest
from rich.console import Console

from earnings_world import DAY, HOUR, cli, db_bytes, lend, make_world, request, write_requests
from isense_slurm.meter.earnings import open_readonly
from isense_slurm.meter.ledger import Ledger
from isense_slurm.periods import buckets, utc_midnight
from isense_slurm.report.earnings import build_report
from isense_slurm.report.earnings_view import print_table


def two_days(tmp_path):
    """Requests and worker runs over 2025-01-01 and 2025-01-02 (see the module doc for prices)."""
    config, ledger = make_world(tmp_path)
    write_requests(
        config,
        [
            request("a", DAY + 1 * HOUR, key=1),
            request("b", DAY + 2 * HOUR, key=2, cached=200),
            request("f", DAY + 24 * HOUR - 1e-6, key=1),  # last microsecond of day 1
            request("c", DAY + 23.5 * HOUR + 60, key=1, model="big", node="n2", job="11"),
            request("e", DAY + 24 * HOUR, key=2),  # first instant of day 2
            request("d", DAY + 24 * HOUR + 60, key=2, model="big", node="n2", job="11"),
        ],
    )
    lend(ledger, "10", node="n1", gpus=2, model="tiny", start=DAY + 1 * HOUR, end=DAY + 3 * HOUR)
    lend(ledger, "11", node="n2", gpus=4, model="big", start=DAY + 23.5 * HOUR, end=DAY + 24.5 * HOUR)
    # No GPU count recorded: the model's configured gpus (tiny: 2) count.
    lend(ledger, "12", node="n3", gpus=None, model="tiny", start=DAY + 26 * HOUR, end=DAY + 27 * HOUR)
    return config, ledger


def test_days_by_node_sum_tokens_money_and_lent_gpu_hours(tmp_path, capsys):
    config, _ = two_days(tmp_path)
    code, out, err = cli(
        capsys,
        "--config",
        config,
        "earnings",
        "--group",
        "node",
        "--since",
        "2025-01-01",
        "--until",
        "2025-01-02",
        "--json",
    )
    assert (code, err) == (0, "")
    report = json.loads(out)
    rows = {(r["period"], r["group"]): r for r in report["rows"]}
    assert list(rows) == [
        ("2025-01-01", "n1"),
        ("2025-01-01", "n2"),
        ("2025-01-02", "n1"),
        ("2025-01-02", "n2"),
        ("2025-01-02", "n3"),
    ]
    n1 = rows["2025-01-01", "n1"]
    assert (n1["requests"], n1["prompt_tokens"], n1["completion_tokens"], n1["cached_tokens"]) == (3, 3000, 1500, 200)
    assert (n1["gross"], n1["operator_share"]) == ("0.000890000", "0.000623000")
    assert n1["gpu_hours"] == 4.0  # 2 GPUs for 2 hours
    assert n1["gross_per_gpu_hour"] == "0.000222500"
    assert (n1["raw_gpu_hour_price"], n1["raw_equivalent"]) == ("2.500000000", "10.000000000")
    assert n1["currency"] == "EUR" and n1["period_start"] == "2025-01-01T00:00:00Z"
    # job 11: 4 GPUs from 23:30 to 00:30, split across midnight
    assert rows["2025-01-01", "n2"]["gpu_hours"] == 2.0 and rows["2025-01-02", "n2"]["gpu_hours"] == 2.0
    assert rows["2025-01-01", "n2"]["gross"] == "0.002000000"
    # n3 earned nothing but was lent: the row is there, 1 hour x 2 configured GPUs
    n3 = rows["2025-01-02", "n3"]
    assert (n3["requests"], n3["gross"], n3["gpu_hours"]) == (0, "0.000000000", 2.0)
    assert rows["2025-01-02", "n1"]["requests"] == 1  # the request at exactly midnight
    total = report["total"]
    assert (total["requests"], total["gross"], total["operator_share"]) == (6, "0.005190000", "0.003633000")
    assert total["gpu_hours"] == 10.0 and total["raw_equivalent"] == "25.000000000"
    assert report["timezone"] == "UTC" and report["group_by"] == "node"


def test_weeks_are_iso_monday_weeks_and_months_calendar_months(tmp_path, capsys):
    config, _ = make_world(tmp_path)
    write_requests(
        config,
        [
            request("mon", utc_midnight(date(2024, 12, 30)).timestamp() + 10 * HOUR),  # ISO 2025-W01
            request("tue", utc_midnight(date(2024, 12, 31)).timestamp() + 10 * HOUR),
            request("sun", utc_midnight(date(2025, 1, 5)).timestamp() + 23 * HOUR),
            request("next", utc_midnight(date(2025, 1, 6)).timestamp()),  # Monday: 2025-W02
        ],
    )
    span = ("--since", "2024-12-01", "--until", "2025-01-31")
    code, out, _ = cli(capsys, "--config", config, "earnings", "--by", "week", *span, "--json")
    weeks = {r["period"]: (r["requests"], r["period_start"]) for r in json.loads(out)["rows"]}
    assert code == 0 and weeks == {"2025-W01": (3, "2024-12-30T00:00:00Z"), "2025-W02": (1, "2025-01-06T00:00:00Z")}
    code, out, _ = cli(capsys, "--config", config, "earnings", "--by", "month", *span, "--json")
    months = {r["period"]: (r["requests"], r["period_end"]) for r in json.loads(out)["rows"]}
    assert code == 0 and months == {"2024-12": (2, "2025-01-01T00:00:00Z"), "2025-01": (2, "2025-02-01T00:00:00Z")}


def test_clients_are_key_names_never_hashes_and_lent_time_only_in_total(tmp_path, capsys):
    config, ledger = make_world(tmp_path)
    with Ledger.open(ledger) as book:
        book.revoke_key("alice")
        _, new_alice = book.create_key("alice")  # id 3: a rotated key, the same client
        hashes = list(book.active_key_hashes())
    write_requests(
        config,
        [
            request("k1", DAY + HOUR, key=1),
            request("k3", DAY + 2 * HOUR, key=3),
            request("k2", DAY + 3 * HOUR, key=2),
            request("k99", DAY + 4 * HOUR, key=99),
            request("none", DAY + 5 * HOUR, key=None),
        ],
    )
    lend(ledger, "10", node="n1", gpus=1, model="tiny", start=DAY, end=DAY + 6 * HOUR)
    code, out, _ = cli(
        capsys,
        "--config",
        config,
        "earnings",
        "--group",
        "client",
        "--since",
        "2025-01-01",
        "--until",
        "2025-01-01",
        "--json",
    )
    report = json.loads(out)
    clients = {r["group"]: r["requests"] for r in report["rows"]}
    assert code == 0 and clients == {"alice": 2, "bob": 1, "key#99": 1, None: 1}
    assert all(r["gpu_hours"] is None and r["raw_equivalent"] is None for r in report["rows"])
    assert report["total"]["gpu_hours"] == 6.0
    assert new_alice not in out and not any(h in out for h in hashes)


def test_partition_group_is_the_lend_partition(tmp_path, capsys):
    config, _ = two_days(tmp_path)
    code, out, _ = cli(
        capsys,
        "--config",
        config,
        "earnings",
        "--group",
        "partition",
        "--since",
        "2025-01-01",
        "--until",
        "2025-01-02",
        "--json",
    )
    rows = json.loads(out)["rows"]
    assert code == 0 and [(r["period"], r["group"], r["requests"], r["gpu_hours"]) for r in rows] == [
        ("2025-01-01", "inference", 4, 6.0),
        ("2025-01-02", "inference", 2, 4.0),
    ]


def test_a_worker_still_lent_counts_until_now(tmp_path, capsys):
    config, ledger = make_world(tmp_path)
    start = time.time() - 2 * HOUR
    lend(ledger, "20", node="n1", gpus=3, model="tiny", start=start, end=None)
    before = time.time()
    code, out, _ = cli(capsys, "--config", config, "earnings", "--by", "month", "--json")
    after = time.time()
    hours = json.loads(out)["total"]["gpu_hours"]
    assert code == 0
    assert 3 * (before - start) / HOUR - 1e-6 <= hours <= 3 * (after - start) / HOUR + 1e-6


def test_piped_output_is_plain_columns_and_csv_is_exact(tmp_path, capsys):
    config, _ = two_days(tmp_path)
    code, out, _ = cli(capsys, "--config", config, "earnings", "--since", "2025-01-01", "--until", "2025-01-02")
    lines = out.splitlines()
    assert code == 0 and "\x1b[" not in out
    assert lines[0].split() == [
        "PERIOD",
        "REQUESTS",
        "TOKENS_IN",
        "TOKENS_OUT",
        "CACHED",
        "GROSS(EUR)",
        "OPERATOR(EUR)",
        "GPU_HOURS",
        "START%",
        "EUR/GPU_HOUR",
        "RAW_EQUIV(EUR)",
    ]
    assert lines[1].split() == [
        "2025-01-01",
        "4",
        "4000",
        "2000",
        "200",
        "0.00289",
        "0.002023",
        "6.000",
        "0.8",  # 30 s of start on 2 + 4 GPUs, of 6 lent GPU-hours
        "0.000481667",
        "15.00",
    ]
    assert lines[-1].split()[:2] == ["TOTAL", "6"]
    code, out, _ = cli(
        capsys,
        "--config",
        config,
        "earnings",
        "--group",
        "model",
        "--since",
        "2025-01-01",
        "--until",
        "2025-01-02",
        "--csv",
    )
    records = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [(r["period"], r["model"], r["gross"]) for r in records] == [
        ("2025-01-01", "big", "0.002000000"),
        ("2025-01-01", "tiny", "0.000890000"),
        ("2025-01-02", "big", "0.002000000"),
        ("2025-01-02", "tiny", "0.000300000"),
    ]


def test_terminal_gets_a_rich_table(tmp_path):
    config, ledger = two_days(tmp_path)
    since, until = utc_midnight(date(2025, 1, 1)), utc_midnight(date(2025, 1, 3))
    conn = open_readonly(ledger)
    report = build_report(
        conn,
        buckets("day", since, until),
        by="day",
        group="node",
        now=time.time(),
        partition="inference",
        model_gpus={"tiny": 2},
        currency="EUR",
        raw_gpu_hour_nanos=2_500_000_000,
    )
    conn.close()
    console = Console(record=True, force_terminal=True, width=220)
    print_table(report, console)
    text = console.export_text()
    assert "Raw rental price: 2.50 EUR per GPU-hour" in text
    assert any(line.split()[:4] == ["2025-01-01", "n1", "3", "3,000"] for line in text.splitlines())


def test_rows_priced_in_another_currency_are_flagged(tmp_path, capsys):
    config, ledger = make_world(tmp_path)
    config.write_text(config.read_text().replace('currency = "EUR"', 'currency = "USD"'))
    write_requests(config, [request("u", DAY + HOUR)])
    config.write_text(config.read_text().replace('currency = "USD"', 'currency = "EUR"'))
    code, _, err = cli(capsys, "--config", config, "earnings", "--since", "2025-01-01", "--until", "2025-01-01")
    assert code == 0 and "priced in USD, the config says EUR" in err


def test_reports_never_write_the_ledger(tmp_path, capsys):
    config, ledger = two_days(tmp_path)
    before = db_bytes(ledger)
    for group in ("node", "partition", "model", "client"):
        code, _, _ = cli(capsys, "--config", config, "earnings", "--group", group, "--by", "week", "--json")
        assert code == 0
    assert db_bytes(ledger) == before


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--group", "rack"], "--group 'rack': use one of node, partition, model, client"),
        (["--by", "year"], "--by 'year': use one of day, week, month"),
        (["--since", "2025-1-5"], "--since '2025-1-5': expected a date as YYYY-MM-DD (UTC)"),
        (["--until", "2025-02-30"], "--until '2025-02-30': day is out of range for month"),
        (["--since", "2025-02-01", "--until", "2025-01-01"], "--since 2025-02-01 is after --until 2025-01-01"),
        (["--json", "--csv"], "--json and --csv: pick one"),
    ],
)
def test_bad_flags_get_one_line_and_exit_2(tmp_path, capsys, flags, message):
    config, ledger = two_days(tmp_path)
    before = db_bytes(ledger)
    code, out, err = cli(capsys, "--config", config, "earnings", *flags)
    assert (code, out, err) == (2, "", f"isense: {message}\n")
    assert db_bytes(ledger) == before


def test_missing_foreign_or_broken_ledgers_get_one_line_and_exit_2(tmp_path, capsys):
    config, _ = make_world(tmp_path)
    missing = tmp_path / "nope.db"
    code, _, err = cli(capsys, "--config", config, "earnings", "--ledger", missing)
    assert code == 2 and err == f"isense: {missing}: no ledger here (check [ledger] path or --ledger)\n"
    assert not missing.exists()

    foreign = tmp_path / "other.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, amount REAL)")
    conn.close()
    before = foreign.read_bytes()
    code, _, err = cli(capsys, "--config", config, "earnings", "--ledger", foreign)
    assert code == 2 and "not an isense ledger (tables: invoices)" in err and err.count("\n") == 1
    assert foreign.read_bytes() == before

    text = tmp_path / "notes.txt"
    text.write_text("not a database, " * 100)
    code, _, err = cli(capsys, "--config", config, "earnings", "--ledger", text)
    assert code == 2 and err == f"isense: {text}: not an SQLite database\n"
    assert text.read_text() == "not a database, " * 100

    code, _, err = cli(capsys, "--config", config, "earnings", "--ledger", tmp_path)
    assert code == 2 and "is a directory" in err


def test_start_share_is_the_lent_time_before_the_first_serve(tmp_path, capsys):
    config, ledger = make_world(tmp_path)
    # Served 30 s after its start (earnings_world.lend), 2 GPUs for 1 hour.
    lend(ledger, "20", node="n1", gpus=2, model="tiny", start=DAY + 1 * HOUR, end=DAY + 2 * HOUR)
    # Never served: its whole lent time was a start (ended 10 min in).
    with Ledger.open(ledger) as book:
        book.worker_event("21", state="lent", node="n2", gpus=4, model="tiny", at=DAY + 3 * HOUR)
        book.worker_event("21", state="ended", reason="failed", at=DAY + 3 * HOUR + 600)
    code, out, _ = cli(
        capsys, "--config", config, "earnings", "--since", "2025-01-01", "--until", "2025-01-02", "--json"
    )
    assert code == 0
    total = json.loads(out)["total"]
    starts = 30 * 2 + 600 * 4  # GPU-seconds
    lent = 3600 * 2 + 600 * 4
    assert total["gpu_hours"] == round(lent / 3600, 6)
    assert total["start_gpu_hours"] == round(starts / 3600, 6)
    assert total["start_share"] == round(starts / lent, 4)
    code, out, _ = cli(
        capsys,
        "--config",
        config,
        "earnings",
        "--since",
        "2025-01-01",
        "--until",
        "2025-01-02",
        "--group",
        "node",
        "--json",
    )
    by_node = {r["group"]: r for r in json.loads(out)["rows"]}
    assert by_node["n1"]["start_share"] == round(60 / 7200, 4)
    assert by_node["n2"]["start_share"] == 1.0


def test_a_period_that_starts_after_the_first_serve_has_no_start_time(tmp_path, capsys):
    config, ledger = make_world(tmp_path)
    lend(ledger, "30", node="n1", gpus=1, model="tiny", start=DAY + 23 * HOUR, end=DAY + 25 * HOUR)
    code, out, _ = cli(
        capsys, "--config", config, "earnings", "--since", "2025-01-01", "--until", "2025-01-03", "--json"
    )
    rows = {r["period"]: r for r in json.loads(out)["rows"]}
    assert code == 0 and rows["2025-01-01"]["start_gpu_hours"] == round(30 / 3600, 6)
    assert rows["2025-01-02"]["start_gpu_hours"] == 0.0 and rows["2025-01-02"]["gpu_hours"] == 1.0
