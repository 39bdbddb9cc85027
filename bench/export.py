"""Time `isense export` on 100,000 request rows (a figure, not a test).

Generates the rows for one UTC day in a temp ledger through the real RequestWriter,
then times: a CSV export, a JSON Lines export, a re-run that finds the entry (checksum
verified, late-row check), and `isense earnings` for that day grouped by node.

    .venv/bin/python bench/export.py [--rows N]

Last line of output: JSON with the figures (seconds) and `errors`: rows the ledger
lacks plus checks that failed (export row counts, the re-run finding the entry, the
earnings total matching the export's); the exit status is non-zero when errors > 0.
"""

import argparse
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from isense_slurm.meter.earnings import open_readonly
from isense_slurm.meter.exports import run_export
from isense_slurm.meter.ledger import Ledger
from isense_slurm.meter.rows import RequestRow
from isense_slurm.meter.writer import RequestWriter
from isense_slurm.periods import buckets, utc_midnight
from isense_slurm.report.earnings import build_report
from stats import finish, guarded

DAY = datetime(2025, 1, 1, tzinfo=UTC).timestamp()


@dataclass(frozen=True)
class Price:
    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float


def fill(path: Path, rows: int) -> float:
    with Ledger.open(path) as ledger:
        for name in ("alice", "bob", "carol", "dave"):
            ledger.create_key(name)
        for job in range(8):
            ledger.worker_event(
                str(job), state="serving", node=f"n{job % 4 + 1}", gpus=1, model="tiny", at=DAY + job * 600
            )
            ledger.worker_event(str(job), state="ended", reason="preempted", at=DAY + 80_000)
    started = time.perf_counter()
    prices = {"tiny": Price(0.10, 0.40, 0.05)}
    with RequestWriter(path, prices=prices, operator_share=0.7, currency="USD", batch_max=1024) as writer:
        step = 86_000 / rows
        for i in range(rows):
            writer.submit(
                RequestRow(
                    id=f"chatcmpl-{i:08d}",
                    ts=DAY + i * step,
                    key_id=1 + i % 4,
                    model="tiny",
                    job_id=str(i % 8),
                    node=f"n{i % 4 + 1}",
                    prompt_tokens=200 + i % 500,
                    completion_tokens=50 + i % 300,
                    cached_tokens=i % 3 * 64,
                    status="ok",
                    latency_ms=12.0,
                    streamed=bool(i % 2),
                )
            )
    return time.perf_counter() - started


def timed(action):
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def day_earnings(ledger: Path):
    """isense earnings for 2025-01-01 by node, as the command builds it."""
    conn = open_readonly(ledger)
    since = utc_midnight(date(2025, 1, 1))
    report = build_report(
        conn,
        buckets("day", since, utc_midnight(date(2025, 1, 2))),
        by="day",
        group="node",
        now=time.time(),
        partition="inference",
        model_gpus={},
        currency="USD",
        raw_gpu_hour_nanos=2_000_000_000,
    )
    conn.close()
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="isense-bench-export-") as tmp:
        folder = Path(tmp)
        ledger = folder / "ledger.db"
        fill_s = fill(ledger, args.rows)
        conn = sqlite3.connect(ledger)
        stored = conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
        conn.close()
        failed = []  # each check that failed, in words
        if stored != args.rows:
            failed.append(f"ledger holds {stored} of {args.rows} rows")
        csv_s, csv_result = timed(lambda: run_export(ledger, "2025-01-01", "csv", folder))
        jsonl_s, jsonl_result = timed(lambda: run_export(ledger, "2025-01-01", "jsonl", folder))
        rerun_s, rerun = timed(lambda: run_export(ledger, "2025-01-01", "csv", folder))
        for name, result in (("CSV", csv_result), ("JSON Lines", jsonl_result)):
            if result.rows != stored:
                failed.append(f"{name} export wrote {result.rows} of {stored} rows")
        if rerun.action != "already exported":
            failed.append(f"re-run: {rerun.action!r}, not 'already exported'")

        earnings_s, report = timed(lambda: day_earnings(ledger))
        if sum(r.totals.gross_nanos for r in report.rows) != csv_result.totals.gross_nanos:
            failed.append("earnings for the day differ from the export's gross")
        figures = {
            "bench": "export",
            "rows": stored,
            "fill_ledger_s": round(fill_s, 3),
            "export_csv_s": round(csv_s, 3),
            "export_jsonl_s": round(jsonl_s, 3),
            "rerun_already_exported_s": round(rerun_s, 3),
            "earnings_day_by_node_s": round(earnings_s, 3),
            "csv_bytes": csv_result.path.stat().st_size,
            "jsonl_bytes": jsonl_result.path.stat().st_size,
            "csv_rows_per_s": round(csv_result.rows / csv_s),
        }
    print(
        f"{stored:,} request rows: CSV export {csv_s:.2f} s, JSON Lines {jsonl_s:.2f} s, "
        f"re-run (verify + late check) {rerun_s:.3f} s, earnings for the day by node {earnings_s:.3f} s"
    )
    errors = abs(args.rows - stored) + sum(1 for f in failed if not f.startswith("ledger holds"))
    return finish(figures, errors, failed)


if __name__ == "__main__":
    sys.exit(guarded("export", main))
