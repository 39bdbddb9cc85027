#!/usr/bin/env python3
"""Ledger writer throughput: how many request rows per second RequestWriter commits.

Two loads on a fresh ledger in a temporary folder (or --dir):
- closed: N client threads, each submits a row and waits for its commit before the next
  (what the gateway does per response); reports rows/s and submit->commit latency;
- bulk: one thread submits every row, then waits for all (the writer's ceiling).
Each load runs once per --interval value (the writer's group-commit linger).
Rates and latencies count committed rows only; a row whose commit failed, or that the
ledger does not hold afterwards, is an error. Last line: JSON with the figures and
`errors`; the exit status is non-zero when errors > 0.

    .venv/bin/python bench/ledger.py [--rows 20000] [--threads 16] [--interval 0 0.002]
"""

import argparse
import os
import platform
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from isense_slurm.config import Price  # noqa: E402
from isense_slurm.meter.rows import RequestRow  # noqa: E402
from isense_slurm.meter.writer import RequestWriter  # noqa: E402
from stats import finish, guarded, percentile  # noqa: E402

PRICES = {"tiny-llama": Price(0.10, 0.40, 0.05)}


def make_row(rid: str) -> RequestRow:
    return RequestRow(rid, time.time(), 1, "tiny-llama", "1234", "n1", 812, 187, 256, "ok", 42.0, True)


def stored(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
    finally:
        conn.close()


def closed_loop(folder: Path, rows: int, threads: int, interval: float) -> dict:
    path = folder / f"closed-{interval}.db"
    writer = RequestWriter(path, prices=PRICES, operator_share=0.7, interval_s=interval)
    latencies: list[float] = []  # committed rows only
    failures: list[str] = []
    per_thread = rows // threads
    lock = threading.Lock()

    def client(t: int) -> None:
        mine, failed = [], []
        for i in range(per_thread):
            start = time.perf_counter()
            try:
                writer.submit(make_row(f"c{t}-{i}")).result(timeout=60)
            except Exception as err:  # noqa: BLE001 - counted, not timed
                failed.append(f"{type(err).__name__}: {err}")
                continue
            mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)
            failures.extend(failed)

    workers = [threading.Thread(target=client, args=(t,)) for t in range(threads)]
    started = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - started
    writer.close()
    ok = len(latencies)
    in_ledger = stored(path)
    result = {
        "load": "closed",
        "interval_s": interval,
        "threads": threads,
        "rows": ok,
        "rows_per_s": round(ok / elapsed),
        "commits": writer.commits,
        "rows_per_commit": round(ok / writer.commits, 1) if writer.commits else None,
        "errors": len(failures) + abs(in_ledger - ok),
    }
    if latencies:
        result["commit_latency_ms_p50"] = round(percentile(latencies, 0.50) * 1000, 3)
        result["commit_latency_ms_p99"] = round(percentile(latencies, 0.99) * 1000, 3)
    if result["errors"]:
        result["first_error"] = failures[0] if failures else f"ledger holds {in_ledger} of {ok} committed rows"
    return result


def bulk(folder: Path, rows: int, interval: float) -> dict:
    path = folder / f"bulk-{interval}.db"
    writer = RequestWriter(path, prices=PRICES, operator_share=0.7, interval_s=interval)
    started = time.perf_counter()
    futures = [writer.submit(make_row(f"b{i}")) for i in range(rows)]
    failures = [f"{type(e).__name__}: {e}" for e in (f.exception(timeout=60) for f in futures) if e is not None]
    elapsed = time.perf_counter() - started
    writer.close()
    ok = rows - len(failures)
    in_ledger = stored(path)
    result = {
        "load": "bulk",
        "interval_s": interval,
        "rows": ok,
        "rows_per_s": round(ok / elapsed),
        "commits": writer.commits,
        "rows_per_commit": round(ok / writer.commits, 1) if writer.commits else None,
        "errors": len(failures) + abs(in_ledger - ok),
    }
    if result["errors"]:
        result["first_error"] = failures[0] if failures else f"ledger holds {in_ledger} of {ok} committed rows"
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--interval", type=float, nargs="+", default=[0.0, 0.002])
    parser.add_argument("--dir", help="folder for the ledgers (default: a temporary one)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        results = []
        for interval in args.interval:
            for result in (
                closed_loop(Path(tmp), args.rows, args.threads, interval),
                bulk(Path(tmp), args.rows, interval),
            ):
                results.append(result)
                print("  ".join(f"{k}={v}" for k, v in result.items()), flush=True)
    summary = {
        "bench": "ledger-writer",
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, python {platform.python_version()}",
        "rows_per_s_closed_max": max(r["rows_per_s"] for r in results if r["load"] == "closed"),
        "rows_per_s_bulk_max": max(r["rows_per_s"] for r in results if r["load"] == "bulk"),
        "results": results,
    }
    return finish(summary, sum(r["errors"] for r in results))


if __name__ == "__main__":
    sys.exit(guarded("ledger-writer", main))
