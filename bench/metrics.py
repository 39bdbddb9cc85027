"""Time a /metrics scrape (a figure, not a test).

A ledger with REQUESTS request rows, the workers of a generated 1,000-node cluster and
200 reclaims (bench/status_world.py). Times the first scrape after the daemon starts
(it sums the whole requests table once), then scrapes with ADD new rows each (only the
rows past the last rowid are read), then a scrape with nothing new, in the text format
(curl) and in OpenMetrics (what a Prometheus server asks for); prometheus_client renders
both.

    .venv/bin/python bench/metrics.py [--requests 200000] [--add 1000] [--repeat 5]

Last line of output: JSON with the figures (milliseconds) and `errors`: request rows the
ledger fill lost, new rows not committed, and scrapes that miss the request counter; it
exits 1 when there are any.
"""

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from isense_slurm.meter.rows import RequestRow  # noqa: E402
from isense_slurm.meter.writer import RequestWriter  # noqa: E402
from isense_slurm.report.metrics import MetricsSource  # noqa: E402
from stats import finish, guarded  # noqa: E402
from status_world import PRICES, fill_ledger, generate  # noqa: E402

OPENMETRICS = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"


def timed_ms(action) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


def add_rows(ledger: Path, world, count: int, round_no: int, now: float) -> list:
    """`count` new request rows through the ledger writer; their futures."""
    with RequestWriter(ledger, prices=PRICES, operator_share=0.7, currency="USD", batch_max=4096) as w:
        pending = []
        for i in range(count):
            job, node, model, _ = world.workers[i % len(world.workers)]
            row = RequestRow(
                id=f"new-{round_no}-{i}",
                ts=now + round_no,
                key_id=1,
                model=model,
                job_id=str(job),
                node=node,
                prompt_tokens=300,
                completion_tokens=100,
                cached_tokens=0,
                status="ok",
                latency_ms=10.0,
                streamed=True,
            )
            pending.append(w.submit(row))
    return pending


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--add", type=int, default=1000, help="new rows between scrapes")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    day_start = datetime(2025, 6, 2, tzinfo=UTC).timestamp()
    now = day_start + 18 * 3600
    world = generate(1000, 8, now=int(now))
    gateway = {
        "workers": [{"model": m, "state": "serving", "outstanding": 1} for _, _, m, _ in world.workers],
        "models": {m: {"requests": 10, "rejected": 1, "retries": 0, "in_flight": 1} for m in PRICES},
    }
    with tempfile.TemporaryDirectory(prefix="isense-bench-metrics-") as tmp:
        ledger = Path(tmp) / "ledger.db"
        filled = fill_ledger(ledger, world, now=now, requests_today=args.requests, last_minute=0, day_start=day_start)
        failures = [f"ledger fill committed {filled} of {args.requests} rows"] if filled != args.requests else []
        source = MetricsSource(ledger, {m: 1 for m in PRICES}, currency="USD", clock=lambda: now)
        first = timed_ms(lambda: source.scrape(gateway))
        incremental = []
        for r in range(args.repeat):
            pending = add_rows(ledger, world, args.add, r, now)
            lost = sum(1 for f in pending if f.exception() is not None)
            if lost:
                failures.append(f"round {r}: {lost} of {args.add} new rows not committed")
            incremental.append(timed_ms(lambda: source.scrape(gateway)))
        idle = statistics.median(timed_ms(lambda: source.scrape(gateway)) for _ in range(args.repeat))
        idle_om = statistics.median(timed_ms(lambda: source.render(gateway, OPENMETRICS)) for _ in range(args.repeat))
        text = source.scrape(gateway)
        if "isense_requests_total" not in text:
            failures.append("the scrape has no isense_requests_total")
    figures = {
        "requests": args.requests,
        "first_scrape_ms": round(first, 1),
        "scrape_with_new_rows_ms": round(statistics.median(incremental), 2),
        "new_rows": args.add,
        "scrape_nothing_new_ms": round(idle, 2),
        "scrape_nothing_new_openmetrics_ms": round(idle_om, 2),
        "exposition_bytes": len(text.encode()),
    }
    print(
        f"first scrape over {args.requests} rows: {figures['first_scrape_ms']} ms; with {args.add} new rows: "
        f"{figures['scrape_with_new_rows_ms']} ms; nothing new: {figures['scrape_nothing_new_ms']} ms "
        f"({figures['scrape_nothing_new_openmetrics_ms']} ms in OpenMetrics); "
        f"{figures['exposition_bytes']} bytes"
    )
    return finish({"bench": "metrics", **figures}, len(failures), failures)


if __name__ == "__main__":
    sys.exit(guarded("metrics", main))
