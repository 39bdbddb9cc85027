"""`isense export` / run_export: closed periods only, byte-identical re-exports, one
exports entry per (period, format), checksums, late rows, and bad input that leaves no
file behind and the ledger untouched."""

import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from earnings_world import DAY, HOUR, cli, db_bytes, lend, make_world, request, table_rows, write_requests
from isense_slurm.meter.exports import run_export
from isense_slurm.meter.ledger import Ledger


def day_of_traffic(tmp_path, count=40):
    """`count` requests on 2025-01-01 in shuffled order, two models, two clients, a few nodes."""
    config, ledger = make_world(tmp_path)
    rows = [
        request(
            f"req-{i:04d}",
            DAY + (i * 7919 % count) * (80_000 / count) + 0.25,
            key=1 + i % 2,
            model="big" if i % 5 == 0 else "tiny",
            node=f"n{1 + i % 3}",
            job=str(10 + i % 3),
            prompt=100 + i,
            completion=10 + i,
            cached=i % 4 * 10,
            status="partial" if i == 7 else "ok",
        )
        for i in range(count)
    ]
    rows.append(request("same-ts-b", DAY + 2 * HOUR, key=None))  # a tie on ts: id decides
    rows.append(request("same-ts-a", DAY + 2 * HOUR, key=99))
    rows.append(request("next-day", DAY + 24 * HOUR, key=1))  # first instant of 2025-01-02
    write_requests(config, rows)
    lend(ledger, "10", node="n1", gpus=1, model="tiny", start=DAY, end=DAY + 3 * HOUR)
    return config, ledger


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_csv_export_is_sorted_exact_and_checksummed(tmp_path, capsys):
    config, ledger = day_of_traffic(tmp_path)
    out = tmp_path / "exports"
    out.mkdir()
    code, stdout, err = cli(
        capsys, "--config", config, "export", "--period", "2025-01-01", "--format", "csv", "--out", out
    )
    assert (code, err) == (0, "")
    target = out / "isense-requests-2025-01-01.csv"
    assert stdout.startswith(f"written 2025-01-01 (csv): {target}: 42 requests")
    assert files_in(out) == [target.name, target.name + ".sha256"]
    text = target.read_text()
    records = list(csv.DictReader(io.StringIO(text)))
    assert len(records) == 42 and "next-day" not in text
    assert [(r["time"], r["id"]) for r in records] == sorted((r["time"], r["id"]) for r in records)
    ties = [r["id"] for r in records if r["time"] == "2025-01-01T02:00:00.000000Z"]
    assert ties[-2:] == ["same-ts-a", "same-ts-b"]
    first = next(r for r in records if r["id"] == "req-0000")
    assert first == {
        "id": "req-0000",
        "time": "2025-01-01T00:00:00.250000Z",
        "client": "alice",
        "key_id": "1",
        "model": "big",
        "node": "n1",
        "job_id": "10",
        "status": "ok",
        "prompt_tokens": "100",
        "completion_tokens": "10",
        "cached_tokens": "0",
        "currency": "EUR",
        "gross": "0.000120000",
        "operator_share": "0.000084000",  # 100 x 1.00 + 10 x 2.00 per Mtok
    }
    orphan = next(r for r in records if r["id"] == "same-ts-a")
    assert (orphan["client"], orphan["key_id"]) == ("", "99")
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    assert (out / (target.name + ".sha256")).read_text() == f"{digest}  {target.name}\n"
    if shutil.which("sha256sum"):
        check = subprocess.run(["sha256sum", "-c", target.name + ".sha256"], cwd=out, capture_output=True, text=True)
        assert check.returncode == 0 and check.stdout == f"{target.name}: OK\n"
    assert oct(target.stat().st_mode & 0o777) == "0o644"


def test_jsonl_carries_key_names_never_hashes(tmp_path, capsys):
    config, ledger = day_of_traffic(tmp_path)
    with Ledger.open(ledger) as book:
        hashes = list(book.active_key_hashes())
    result = run_export(ledger, "2025-01-01", "jsonl", tmp_path)
    lines = result.path.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert result.rows == len(records) == 42
    assert {r["client"] for r in records} == {"alice", "bob", None}
    assert all(isinstance(r["prompt_tokens"], int) and isinstance(r["gross"], str) for r in records)
    assert not any(h in result.path.read_text() for h in hashes)
    assert sum(r["prompt_tokens"] for r in records) == result.totals.prompt_tokens


def test_rerun_finds_the_entry_and_force_rewrites_the_same_bytes(tmp_path, capsys):
    config, ledger = day_of_traffic(tmp_path)
    out = tmp_path / "exports"
    out.mkdir()
    argv = ("--config", config, "export", "--period", "2025-01-01", "--format", "csv", "--out", out)
    assert cli(capsys, *argv)[0] == 0
    target = out / "isense-requests-2025-01-01.csv"
    first, first_mtime = target.read_bytes(), target.stat().st_mtime_ns
    entries = table_rows(ledger, "exports")

    code, stdout, _ = cli(capsys, *argv)
    assert code == 0 and stdout.startswith("already exported 2025-01-01 (csv)") and "verified" in stdout
    assert target.stat().st_mtime_ns == first_mtime  # not written again
    assert table_rows(ledger, "exports") == entries

    time.sleep(0.01)
    code, stdout, _ = cli(capsys, *argv, "--force")
    assert code == 0 and stdout.startswith("rewritten 2025-01-01 (csv)")
    assert target.read_bytes() == first
    after = table_rows(ledger, "exports")
    assert len(after) == 1 and after[0][:6] == entries[0][:6]  # same id, period, format, path, sha256, rows
    assert files_in(out) == [target.name, target.name + ".sha256"]  # no temp file left


def test_export_totals_reconcile_with_earnings(tmp_path, capsys):
    config, ledger = day_of_traffic(tmp_path, count=300)
    result = run_export(ledger, "2025-01-01", "csv", tmp_path)
    code, stdout, _ = cli(
        capsys, "--config", config, "earnings", "--since", "2025-01-01", "--until", "2025-01-01", "--json"
    )
    [day] = json.loads(stdout)["rows"]
    records = list(csv.DictReader(io.StringIO(result.path.read_text())))
    from_file = {
        "requests": len(records),
        "prompt_tokens": sum(int(r["prompt_tokens"]) for r in records),
        "completion_tokens": sum(int(r["completion_tokens"]) for r in records),
        "cached_tokens": sum(int(r["cached_tokens"]) for r in records),
        "gross": sum(int(r["gross"].replace(".", "")) for r in records),  # exact: 9 places each
        "operator_share": sum(int(r["operator_share"].replace(".", "")) for r in records),
    }
    from_earnings = {k: day[k] for k in ("requests", "prompt_tokens", "completion_tokens", "cached_tokens")}
    from_earnings["gross"] = int(day["gross"].replace(".", ""))
    from_earnings["operator_share"] = int(day["operator_share"].replace(".", ""))
    assert code == 0 and from_file == from_earnings
    entry_totals = json.loads(table_rows(ledger, "exports")[0][6])
    assert entry_totals["gross_nanos"] == from_earnings["gross"] and entry_totals["requests"] == 302


def test_periods_not_yet_ended_are_refused(tmp_path, capsys):
    config, ledger = day_of_traffic(tmp_path)
    today = time.strftime("%Y-%m-%d", time.gmtime())
    this_week = time.strftime("%G-W%V", time.gmtime())
    this_month = time.strftime("%Y-%m", time.gmtime())
    before = db_bytes(ledger)
    for period in (today, this_week, this_month, "2999-01-01"):
        code, out, err = cli(
            capsys, "--config", config, "export", "--period", period, "--format", "csv", "--out", tmp_path
        )
        assert code == 2 and out == "" and err.count("\n") == 1
        assert err.startswith(f"isense: --period {period}: not closed yet")
    assert db_bytes(ledger) == before
    assert not list(tmp_path.glob("isense-requests-*"))


def test_yesterday_and_week_and_month_periods(tmp_path):
    config, ledger = day_of_traffic(tmp_path)
    now = DAY + 30 * HOUR  # 2025-01-02 06:00 UTC
    assert run_export(ledger, "yesterday", "csv", tmp_path, now=now).period == "2025-01-01"
    with pytest.raises(Exception, match="not closed yet"):
        run_export(ledger, "2025-W01", "csv", tmp_path, now=now)  # runs to Sunday 2025-01-05
    week = run_export(ledger, "2025-W01", "csv", tmp_path)
    month = run_export(ledger, "2025-01", "jsonl", tmp_path)
    assert (week.rows, month.rows) == (43, 43)  # the next-day request too
    assert week.path.name == "isense-requests-2025-W01.csv"


def test_late_rows_are_named_on_the_next_run_until_re_exported(tmp_path, capsys):
    config, ledger = day_of_traffic(tmp_path)
    out = tmp_path / "exports"
    out.mkdir()
    export = ("--config", config, "export", "--format", "csv", "--out", out, "--period")
    assert cli(capsys, *export, "2025-01-01")[0] == 0
    exported = (out / "isense-requests-2025-01-01.csv").read_bytes()

    write_requests(config, [request("straggler", DAY + 23 * HOUR, key=2)])  # inserted after the export

    code, stdout, err = cli(capsys, *export, "2025-01-02")  # the next nightly run, another day
    assert code == 1 and stdout.startswith("written 2025-01-02 (csv)")
    assert "LATE ROWS: period 2025-01-01 (csv) was exported with 42 requests" in err
    assert "now holds 43" in err and "1 row arrived after the export" in err and "--force" in err

    code, stdout, err = cli(capsys, *export, "2025-01-01")  # without --force: not rewritten
    assert code == 1 and stdout == "" and "LATE ROWS: period 2025-01-01" in err
    assert (out / "isense-requests-2025-01-01.csv").read_bytes() == exported

    code, stdout, err = cli(capsys, *export, "2025-01-01", "--force")
    assert code == 0 and stdout.startswith("rewritten 2025-01-01 (csv)") and "43 requests" in stdout
    assert "the file changed" in err
    assert b"straggler" in (out / "isense-requests-2025-01-01.csv").read_bytes()
    assert [row[1] for row in table_rows(ledger, "exports")] == ["2025-01-01", "2025-01-02"]
    code, stdout, err = cli(capsys, *export, "2025-01-02")  # nothing late any more
    assert (code, err) == (0, "") and stdout.startswith("already exported 2025-01-02 (csv)")


def test_an_altered_or_missing_export_is_reported_and_force_restores_it(tmp_path, capsys):
    config, ledger = day_of_traffic(tmp_path)
    result = run_export(ledger, "2025-01-01", "csv", tmp_path)
    good = result.path.read_bytes()
    result.path.write_bytes(good.replace(b"alice", b"mallory", 1))
    argv = ("--config", config, "export", "--period", "2025-01-01", "--format", "csv", "--out", tmp_path)
    code, _, err = cli(capsys, *argv)
    assert code == 1 and "changed since it was exported" in err and err.count("\n") == 1
    result.path.unlink()
    code, _, err = cli(capsys, *argv)
    assert code == 1 and "is missing" in err
    assert cli(capsys, *argv, "--force")[0] == 0
    assert result.path.read_bytes() == good


def test_an_unrecorded_file_in_the_way_is_not_overwritten(tmp_path, capsys):
    config, ledger = day_of_traffic(tmp_path)
    target = tmp_path / "isense-requests-2025-01-01.csv"
    target.write_text("someone else's file\n")
    before = db_bytes(ledger)
    code, _, err = cli(
        capsys, "--config", config, "export", "--period", "2025-01-01", "--format", "csv", "--out", tmp_path
    )
    assert code == 2 and "exists with other contents" in err
    assert target.read_text() == "someone else's file\n"
    assert not list(tmp_path.glob(".isense-*")) and not (tmp_path / (target.name + ".sha256")).exists()
    assert db_bytes(ledger) == before


def test_an_interrupted_export_leaves_no_file_and_no_entry(tmp_path):
    config, ledger = day_of_traffic(tmp_path, count=12_000)

    def interrupt(done, total):
        assert total == 12_002
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_export(ledger, "2025-01-01", "jsonl", tmp_path, progress=interrupt)
    assert not list(tmp_path.glob("isense-requests-*")) and not list(tmp_path.glob(".isense-*"))
    assert table_rows(ledger, "exports") == []


def unwritable_folder(tmp_path) -> Path:
    if os.geteuid() != 0:
        folder = tmp_path / "locked"
        folder.mkdir(mode=0o500)
        return folder
    return Path("/sys")  # root may write anywhere but sysfs, which takes no new files


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--period", "2025-1-1", "--format", "csv"], "--period '2025-1-1': use yesterday, YYYY-MM-DD"),
        (["--period", "2025-02-30", "--format", "csv"], "--period '2025-02-30': day is out of range"),
        (["--period", "2025-W54", "--format", "csv"], "--period '2025-W54': Invalid week: 54"),
        (["--period", "2025-01-01", "--format", "xlsx"], "--format 'xlsx': use one of csv, jsonl"),
        (
            ["--period", "2025-01-01", "--format", "csv", "--out", "{tmp}/missing"],
            "--out {tmp}/missing: no such folder",
        ),
        (
            ["--period", "2025-01-01", "--format", "csv", "--out", "{tmp}/isense.toml"],
            "--out {tmp}/isense.toml: not a folder",
        ),
        (["--period", "2025-01-01", "--format", "csv", "--out", "{locked}"], "--out {locked}: "),
    ],
)
def test_bad_input_gets_one_line_exit_2_no_file_ledger_untouched(tmp_path, capsys, flags, message):
    config, ledger = day_of_traffic(tmp_path)
    locked = unwritable_folder(tmp_path)
    flags = [f.format(tmp=tmp_path, locked=locked) for f in flags]
    if "--out" not in flags:
        flags += ["--out", str(tmp_path)]
    before, listing = db_bytes(ledger), files_in(tmp_path)
    code, out, err = cli(capsys, "--config", config, "export", *flags)
    assert (code, out) == (2, "") and err.startswith("isense: " + message.format(tmp=tmp_path, locked=locked))
    assert err.count("\n") == 1
    assert files_in(tmp_path) == listing  # no export, no temp file
    if locked != Path("/sys"):
        assert files_in(locked) == []
    assert db_bytes(ledger) == before


def test_missing_or_foreign_ledger_gets_exit_2_and_is_not_created(tmp_path, capsys):
    out = tmp_path / "exports"
    out.mkdir()
    missing = tmp_path / "nope.db"
    code, _, err = cli(capsys, "export", "--ledger", missing, "--period", "2025-01-01", "--format", "csv", "--out", out)
    assert code == 2 and err == f"isense: {missing}: no ledger here (check [ledger] path)\n"
    assert not missing.exists() and files_in(out) == []
    foreign = tmp_path / "notes.db"
    foreign.write_bytes(b"SQLite format 3\x00" + b"\x00" * 84)  # a header and nothing else
    before = foreign.read_bytes()
    code, _, err = cli(capsys, "export", "--ledger", foreign, "--period", "2025-01-01", "--format", "csv", "--out", out)
    assert code == 2 and err.count("\n") == 1 and str(foreign) in err
    assert foreign.read_bytes() == before and files_in(out) == []
