#!/usr/bin/env python3
"""Ledger writer throughput: how many request rows per second RequestWriter commits.

Two loads on a fresh ledger in a temporary folder (or --dir):
- closed: N client threads, each submits a row and waits for its commit before the next
  (what the gateway does per response); reports rows/s and submit->commit latency;
- bulk: one thread submits every row, then waits for all (the writer's ceiling).
Each load runs once per --interval value (the writer's group-commit linger).
Last line: JSON with the figures.

    .venv/bin/python bench/ledger.py [--rows 20000] [--threads 16] [--interval 0 0.002]
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from isense_slurm.config import Price  # noqa: E402
from isense_slurm.meter.rows import RequestRow  # noqa: E402
from isense_slurm.meter.writer import RequestWriter  # noqa: E402

PRICES = {"tiny-llama": Price(0.10, 0.40, 0.05)}


def make_row(rid: str) -> RequestRow:
    return RequestRow(rid, time.time(), 1, "tiny-llama", "1234", "n1", 812, 187, 256, "ok", 42.0, True)


def closed_loop(folder: Path, rows: int, threads: int, interval: float) -> dict:
    path = folder / f"closed-{interval}.db"
    writer = RequestWriter(path, prices=PRICES, operator_share=0.7, interval_s=interval)
    latencies: list[float] = []
    per_thread = rows // threads
    lock = threading.Lock()

    def client(t: int) -> None:
        mine = []
        for i in range(per_thread):
            start = time.perf_counter()
            writer.submit(make_row(f"c{t}-{i}")).result()
            mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=client, args=(t,)) for t in range(threads)]
    started = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - started
    writer.close()
    latencies.sort()
    total = per_thread * threads
    return {
        "load": "closed", "interval_s": interval, "threads": threads, "rows": total,
        "rows_per_s": round(total / elapsed), "commits": writer.commits,
        "rows_per_commit": round(total / writer.commits, 1),
        "commit_latency_ms_p50": round(statistics.median(latencies) * 1000, 3),
        "commit_latency_ms_p99": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 3),
    }


def bulk(folder: Path, rows: int, interval: float) -> dict:
    path = folder / f"bulk-{interval}.db"
    writer = RequestWriter(path, prices=PRICES, operator_share=0.7, interval_s=interval)
    started = time.perf_counter()
    futures = [writer.submit(make_row(f"b{i}")) for i in range(rows)]
    for f in futures:
        f.result()
    elapsed = time.perf_counter() - started
    writer.close()
    return {
        "load": "bulk", "interval_s": interval, "rows": rows, "rows_per_s": round(rows / elapsed),
        "commits": writer.commits, "rows_per_commit": round(rows / writer.commits, 1),
    }


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
            for result in (closed_loop(Path(tmp), args.rows, args.threads, interval),
                           bulk(Path(tmp), args.rows, interval)):
                results.append(result)
                print("  ".join(f"{k}={v}" for k, v in result.items()), flush=True)
    summary = {
        "bench": "ledger-writer",
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, python {platform.python_version()}",
        "rows_per_s_closed_max": max(r["rows_per_s"] for r in results if r["load"] == "closed"),
        "rows_per_s_bulk_max": max(r["rows_per_s"] for r in results if r["load"] == "bulk"),
        "results": results,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
