#!/usr/bin/env python3
"""Crash loop: how many worker jobs `isense serve` submits per node when every worker
fails at once, over a window (default 10 minutes), with the config's back-off keys.

A serve site on the dev cluster (tests/integration/serve_harness.py) lends --nodes with
[worker] vllm_executable = /bin/false: each worker job starts, its vLLM exits at once,
the worker exits 3 before it ever registers. Prints the running count every 30 s.

    .venv/bin/python bench/crash_loop.py [--seconds 600] [--nodes n1,n2]

Last line: JSON with the jobs submitted per node, the holds logged (node, back-off s)
and `errors` (nodes that were never held back: the back-off did not engage), exit 1
when there are any. Needs root and the dev cluster (`dev/cluster up`).
"""

import argparse
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
sys.path.insert(0, str(REPO / "bench"))

from serve_harness import ServeSite  # noqa: E402
from stats import finish, guarded  # noqa: E402

MODEL = "tiny-llama"


def submitted(log: str, node: str) -> int:
    return len(re.findall(rf"sbatch {MODEL} on {re.escape(node)} \(", log))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--nodes", default="n1,n2")
    args = ap.parse_args()
    nodes = args.nodes.split(",")
    site = ServeSite(nodes, name="bench-crash", tick_seconds=2, min_idle_seconds=2)
    text = site.config.read_text()
    site.config.write_text(re.sub(r"(?m)^vllm_executable = .*$", 'vllm_executable = "/bin/false"', text))
    try:
        site.start()
        t0 = time.monotonic()
        while (elapsed := time.monotonic() - t0) < args.seconds:
            time.sleep(min(30.0, args.seconds - elapsed))
            log = site.log()
            print(
                f"{time.monotonic() - t0:5.0f} s: " + ", ".join(f"{n} {submitted(log, n)}" for n in nodes),
                file=sys.stderr,
                flush=True,
            )
        log = site.log()
    finally:
        site.close()
        site.remove()
    holds = [[n, int(s)] for n, s in re.findall(rf"holding back {MODEL} on (\S+):.*?back-off (\d+) s", log)]
    never_held = [n for n in nodes if n not in {h[0] for h in holds}]
    return finish(
        {
            "bench": "crash_loop",
            "seconds": args.seconds,
            "jobs_per_node": {n: submitted(log, n) for n in nodes},
            "holds": holds,
        },
        len(never_held),
        [f"{n} was never held back" for n in never_held],
    )


if __name__ == "__main__":
    sys.exit(guarded("crash_loop", main))
