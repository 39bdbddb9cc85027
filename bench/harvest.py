#!/usr/bin/env python3
"""Harvest benchmark: how much idle GPU-time isense lends and serves, and what it costs
training, on the real dev cluster.

    .venv/bin/python bench/harvest.py [--seed 7] [--seconds 300] [--pool n1,n2,n3]

The trace (a fixed seed gives the same one every time): each pool node alternates an
idle gap of U(30, 90) s (the first one U(5, 60) s) and one whole-node training job
(4 GPUs, `sleep` U(15, 45) s), until --seconds. That is a few hours of a busy node's
life compressed ~20x: gaps long enough for a CPU vLLM worker to start, short enough
that every node is reclaimed a few times.

The trace is replayed twice on the same nodes: without isense, then with `isense
serve` lending the pool (own temp ledger and config, dwell 2 s, tick 2 s). Each job is
submitted as `trainer` pinned with -w to its node at its trace time; its start is its
own first command's clock.
  idle GPU-time      pool GPU-seconds in the window with no training job running
  lent               ... of it held by a worker job (from the controller's sbatch to
                     the worker's epilog, ledger `workers` rows)
  serving            ... of it with the worker registered at the gateway
  added delay        per trace job: (start - submit) with isense - without
  lends              worker jobs, how many never served, and sbatch -> registered per
                     worker that did (what a lend spends before it earns)
Targets (issue 13, `targets_met` in the JSON): lent >= 90 %, serving >= 75 %, added
delay mean <= 0 s and max <= 1 s.
The last line of output is JSON with every figure and `errors`: trace jobs that could
not be submitted or did not start within 120 s, in either run (not timed; the shares
then rest on a wrong trace, so the exit status is non-zero when errors > 0).
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))

from serve_harness import ServeSite  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
from on_slurm import add_slurm_argument, run_inside_if_asked, slurm_release  # noqa: E402
from stats import finish, guarded, summary  # noqa: E402

GPUS_PER_NODE = 4
# Issue 13's targets: most of the idle time serving, not starting; training never later.
TARGETS = {
    "lent_share_min": 0.90,
    "serving_share_min": 0.75,
    "mean_added_delay_s_max": 0.0,
    "max_added_delay_s_max": 1.0,
}


@dataclass(frozen=True)
class TraceJob:
    index: int
    node: str
    at: float  # seconds after the window opens
    seconds: float


def make_trace(seed: int, nodes: list[str], window: float) -> list[TraceJob]:
    rng = random.Random(seed)
    jobs = []
    for node in nodes:
        t = rng.uniform(5, 60)
        while t < window - 10:
            seconds = min(rng.uniform(15, 45), window - t)
            jobs.append((t, node, seconds))
            t += seconds + rng.uniform(30, 90)
    jobs.sort()
    return [TraceJob(i, node, round(at, 2), round(seconds, 2)) for i, (at, node, seconds) in enumerate(jobs)]


def replay(site: ServeSite, trace: list[TraceJob], window: float) -> tuple[float, dict[int, dict], list[str]]:
    """Submit each job at its time; returns (window start, {index: {submitted, started}},
    failures: one line per trace job that was not submitted or did not start)."""
    out: dict[int, dict] = {}
    failures: list[str] = []
    lock = threading.Lock()
    t0 = time.time() + 1.0

    def run(job: TraceJob) -> None:
        time.sleep(max(0.0, t0 + job.at - time.time()))
        try:
            job_id, submitted = site.train(job.node, seconds=job.seconds)
            started = site.started_at(job_id, timeout=120)
        except Exception as err:  # noqa: BLE001 - counted, not timed
            with lock:
                failures.append(f"job {job.index} on {job.node}: {type(err).__name__}: {err}"[:300])
            print(f"  job {job.index} on {job.node}: FAILED: {err}", flush=True)
            return
        with lock:
            out[job.index] = {
                "job_id": job_id,
                "submitted": submitted,
                "started": started,
                "delay": started - submitted,
            }
        print(
            f"  t={submitted - t0:6.1f} s job {job.index} ({job_id}) on {job.node} for {job.seconds:g} s:"
            f" started {started - submitted:.2f} s after sbatch",
            flush=True,
        )

    threads = [threading.Thread(target=run, args=(job,), daemon=True) for job in trace]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, t0 + window + 180 - time.time()))
    with lock:
        hung = [job for job, t in zip(trace, threads) if t.is_alive()]
        failures += [f"job {job.index} on {job.node}: still waiting at the window's end + 180 s" for job in hung]
    time.sleep(max(0.0, t0 + window - time.time()))
    return t0, dict(out), list(failures)


def idle_intervals(trace: list[TraceJob], runs: dict[int, dict], node: str, t0: float, t1: float):
    busy = sorted(
        (runs[j.index]["started"], runs[j.index]["started"] + j.seconds)
        for j in trace
        if j.node == node and j.index in runs
    )
    idle, cursor = [], t0
    for start, end in busy:
        if start > cursor:
            idle.append((cursor, min(start, t1)))
        cursor = max(cursor, end)
    if cursor < t1:
        idle.append((cursor, t1))
    return [(a, b) for a, b in idle if b > a]


def overlap(intervals_a, intervals_b) -> float:
    return sum(max(0.0, min(a1, b1) - max(a0, b0)) for a0, a1 in intervals_a for b0, b1 in intervals_b)


def worker_rows(site: ServeSite) -> list[tuple]:
    db = sqlite3.connect(site.root / "ledger.db")
    rows = db.execute("SELECT node, started_at, serving_at, draining_at, ended_at FROM workers").fetchall()
    db.close()
    return rows


def lent_and_serving(rows: list[tuple], t1: float) -> dict[str, tuple[list, list]]:
    by_node: dict[str, tuple[list, list]] = {}
    for node, started, serving, draining, ended in rows:
        lent, served = by_node.setdefault(node, ([], []))
        lent.append((started, ended or t1))
        if serving is not None:
            served.append((serving, draining or ended or t1))
    return by_node


def lends(rows: list[tuple]) -> dict:
    """Where lent time that did not serve went: each worker's sbatch -> registered, and
    the workers taken back before they ever served."""
    starts = [serving - started for _, started, serving, _, _ in rows if serving is not None]
    return {
        "workers": len(rows),
        "never_served": sum(1 for _, _, serving, _, _ in rows if serving is None),
        "sbatch_to_serving_s": summary(starts),
    }


def run_once(pool: list[str], trace: list[TraceJob], window: float, with_isense: bool) -> dict:
    site = ServeSite(pool, name="bench-harvest-" + ("isense" if with_isense else "plain"))
    try:
        if with_isense:
            site.start()
            time.sleep(1.0)  # the first tick has run: the window starts with idle nodes lent
        t0, runs, failures = replay(site, trace, window)
        t1 = t0 + window
        idle = {n: idle_intervals(trace, runs, n, t0, t1) for n in pool}
        idle_seconds = sum(b - a for n in pool for a, b in idle[n])
        figures = {
            "jobs": len(runs),
            "failed": failures,
            "idle_gpu_seconds": round(idle_seconds * GPUS_PER_NODE, 1),
            "delays": {str(i): round(r["delay"], 3) for i, r in sorted(runs.items())},
        }
        if with_isense:
            time.sleep(2.0)  # last epilogs reach the ledger
            rows = worker_rows(site)
            held = lent_and_serving(rows, t1)
            lent = sum(overlap(idle[n], held.get(n, ([], []))[0]) for n in pool)
            serving = sum(overlap(idle[n], held.get(n, ([], []))[1]) for n in pool)
            figures.update(
                lent_gpu_seconds=round(lent * GPUS_PER_NODE, 1),
                serving_gpu_seconds=round(serving * GPUS_PER_NODE, 1),
                lent_share=round(lent / idle_seconds, 4) if idle_seconds else None,
                serving_share=round(serving / idle_seconds, 4) if idle_seconds else None,
                lends=lends(rows),
            )
        return figures
    finally:
        site.close()
        site.remove()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--seconds", type=float, default=300.0, help="trace window per run")
    ap.add_argument("--pool", default="n1,n2,n3")
    add_slurm_argument(ap)
    args = ap.parse_args()
    run_inside_if_asked(args.slurm, __file__, sys.argv[1:])
    pool = args.pool.split(",")
    trace = make_trace(args.seed, pool, args.seconds)
    busy = sum(j.seconds for j in trace)
    print(
        f"trace seed {args.seed}: {len(trace)} jobs on {','.join(pool)} over {args.seconds:g} s,"
        f" {busy:.0f} node-seconds busy of {args.seconds * len(pool):.0f}",
        flush=True,
    )

    print("run 1: without isense", flush=True)
    plain = run_once(pool, trace, args.seconds, with_isense=False)
    print("run 2: with isense serve lending the pool", flush=True)
    lent = run_once(pool, trace, args.seconds, with_isense=True)

    added = [lent["delays"][k] - plain["delays"][k] for k in plain["delays"] if k in lent["delays"]]
    failures = [f"without isense: {f}" for f in plain["failed"]] + [f"with isense: {f}" for f in lent["failed"]]
    figures = {
        "bench": "harvest",
        "slurm": slurm_release(),
        "ran": (
            f"trace seed {args.seed}: {len(trace)} whole-node training jobs (sleep U(15,45) s, gaps U(30,90) s)"
            f" on {','.join(pool)} (4 fake GPUs each) over {args.seconds:g} s, replayed without and with"
            " isense serve (1 CPU vLLM tiny-llama worker per node, dwell 2 s, tick 2 s) on the dev cluster,"
            " 2 shared CPU cores"
        ),
        "idle_gpu_seconds": lent["idle_gpu_seconds"],
        "lent_share": lent["lent_share"],
        "serving_share": lent["serving_share"],
        "lends": lent.get("lends"),
        # Over the trace jobs that started (in both runs, for the added delay).
        "start_delay_without_s": summary(plain["delays"].values(), quantiles=()),
        "start_delay_with_s": summary(lent["delays"].values(), quantiles=()),
        "added_delay_s": summary(added, quantiles=()),
        "targets": TARGETS,
        "runs": {"without": plain, "with": lent},
    }
    figures["targets_met"] = {
        "lent_share": (lent["lent_share"] or 0) >= TARGETS["lent_share_min"],
        "serving_share": (lent["serving_share"] or 0) >= TARGETS["serving_share_min"],
        "mean_added_delay": bool(added) and figures["added_delay_s"]["mean"] <= TARGETS["mean_added_delay_s_max"],
        "max_added_delay": bool(added) and figures["added_delay_s"]["max"] <= TARGETS["max_added_delay_s_max"],
    }
    print(
        f"lent {figures['lent_share']}, serving {figures['serving_share']} of idle GPU-time;"
        f" added delay {figures['added_delay_s']}"
    )
    return finish(figures, len(failures), failures)


if __name__ == "__main__":
    sys.exit(guarded("harvest", main))
