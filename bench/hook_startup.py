#!/usr/bin/env python3
"""Wall time of one node hook run, as slurmd pays it on every job's start and end.

Runs the real wrapper scripts (prolog/isense-prolog, epilog/isense-epilog: sh ->
timeout -> python -I -> hook) with a training job's environment, --runs times each, in
three cases:
- up:       config valid, the daemon's stand-in (controller.events route) answers;
- down:     config valid, nothing listens at gateway.advertise_url (events spooled);
- broken:   config file is not TOML (logged, events spooled, exit 0).
The service account in the config is a user that does not exist, so the prolog's
/proc scan runs but can kill nothing on this shared host.
The epilog returns once its report runs detached (see docs/hooks.md); the bench waits
for those reports before the next case. Last line: JSON with p50 / p95 / max
milliseconds per hook and case, and the "up" case's events received (2 per run pair)
and left in the spool.

    .venv/bin/python bench/hook_startup.py [--runs 30] [--python /usr/bin/python3]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "integration"))

from hook_receiver import EventReceiver, free_port, write_hook_config  # noqa: E402
from isense_slurm.secrets import create_secret, load_secret  # noqa: E402


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--python", default="", help="ISENSE_PYTHON for the wrapper (default: its own choice)")
    args = ap.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="isense-hook-bench-"))
    create_secret(folder / "secrets")
    receiver = EventReceiver(load_secret(folder / "secrets"))
    results = {}
    try:
        for case in ("up", "down", "broken"):
            url = receiver.url if case == "up" else f"http://127.0.0.1:{free_port()}"
            config = write_hook_config(folder, url, folder / "secrets", service_account="isense-bench-nobody")
            if case == "broken":
                config.write_text("[slurm\n")
            env = {
                "SLURM_JOB_ID": "1000", "SLURMD_NODENAME": "bench", "SLURM_JOB_USER": "trainer",
                "SLURM_JOB_PARTITION": "train", "SLURM_JOB_GPUS": "0,1,2,3", "CUDA_VISIBLE_DEVICES": "0,1,2,3",
                "SLURM_JOB_EXIT_CODE2": "0:0", "ISENSE_CONFIG": str(config),
                "ISENSE_HOOK_LOG": str(folder / "hooks.log"), "ISENSE_HOOK_SPOOL": str(folder / f"spool-{case}"),
                "ISENSE_HOOK_SPOOL_MAX": "50", "ISENSE_HOOKS_ENV": str(folder / "no-hooks.env"),
            }
            if args.python:
                env["ISENSE_PYTHON"] = args.python
            for kind, script in (("prolog", "prolog/isense-prolog"), ("epilog", "epilog/isense-epilog")):
                times = []
                for _ in range(args.runs):
                    t0 = time.perf_counter()
                    rc = subprocess.run([str(REPO / script)], env=env, stdin=subprocess.DEVNULL).returncode
                    times.append((time.perf_counter() - t0) * 1000)
                    assert rc == 0, f"{script} exited {rc}"
                if kind == "epilog":
                    # The epilog reports from a detached process: wait for its log lines
                    # (one per run of each hook) before the next case changes the config.
                    log = folder / "hooks.log"
                    want = 2 * args.runs * (1 + ("up", "down", "broken").index(case))
                    deadline = time.monotonic() + 30
                    while (len(log.read_text().splitlines()) if log.exists() else 0) < want:
                        assert time.monotonic() < deadline, "detached epilog reports missing"
                        time.sleep(0.05)
                results[f"{kind}_{case}"] = {"p50_ms": round(statistics.median(times), 1),
                                             "p95_ms": round(pct(times, 0.95), 1),
                                             "max_ms": round(max(times), 1)}
                print(f"{kind:7s} {case:7s} p50 {results[f'{kind}_{case}']['p50_ms']:6.1f} ms  "
                      f"p95 {results[f'{kind}_{case}']['p95_ms']:6.1f} ms  "
                      f"max {results[f'{kind}_{case}']['max_ms']:6.1f} ms", flush=True)
        received = len(receiver.events)
        spool = folder / "spool-up"
        spooled = sum(len(f.read_text().splitlines()) for f in spool.glob("*")) if spool.exists() else 0
    finally:
        receiver.close()
    print(json.dumps({"bench": "hook_startup", "runs": args.runs, "python": args.python or "wrapper default",
                      "cpus": os.cpu_count(), "events_received_up": received,
                      "events_spooled_up": spooled, **results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
