#!/usr/bin/env python3
"""Wall time of one node hook run, as slurmd pays it on every job's start and end.

Runs the real wrapper scripts (etc-slurm/prolog.d/isense-prolog, etc-slurm/epilog.d/isense-epilog:
sh -> timeout -> python -I -> hook) with a training job's environment, --runs times each, in
three cases:
- up:       config valid, the daemon's stand-in (reclaim.events route) answers;
- down:     config valid, nothing listens at gateway.advertise_url (events spooled);
- broken:   config file is not TOML (logged, events spooled, exit 0).
The service account in the config is a user that does not exist, so the prolog's
/proc scan runs but can kill nothing on this shared host.
The epilog returns once its report runs detached (see docs/hooks.md); the bench waits
for those reports before the next case. Last line: JSON with p50 / p95 / max
milliseconds per hook and case (runs that exited 0 only), the "up" case's events
received (2 per run pair) and left in the spool, and `errors`: hook runs that exited
non-zero or hung (60 s), detached epilog reports missing after 30 s, and "up" events
not received. The exit status is non-zero when errors > 0.

    .venv/bin/python bench/hook_startup.py [--runs 30] [--python /usr/bin/python3]
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "integration"))

from hook_receiver import EventReceiver, free_port, write_hook_config  # noqa: E402
from isense_slurm.secrets import create_secret, load_secret  # noqa: E402
from stats import finish, guarded, summary  # noqa: E402

HOOK_TIMEOUT_S = 60  # the wrappers' own timeout is far below this


CASES = ("up", "down", "broken")


@dataclass
class Tally:
    errors: int = 0
    failures: list[str] = field(default_factory=list)
    up_ok: int = 0  # hook runs of the "up" case that exited 0: each should deliver one event

    def fail(self, count: int, what: str) -> None:
        self.errors += count
        self.failures.append(what)


def hook_env(folder: Path, config: Path, case: str, python: str) -> dict[str, str]:
    """A training job's environment for the hooks, with this case's config and spool."""
    env = {
        "SLURM_JOB_ID": "1000",
        "SLURMD_NODENAME": "bench",
        "SLURM_JOB_USER": "trainer",
        "SLURM_JOB_PARTITION": "train",
        "SLURM_JOB_GPUS": "0,1,2,3",
        "CUDA_VISIBLE_DEVICES": "0,1,2,3",
        "SLURM_JOB_EXIT_CODE2": "0:0",
        "ISENSE_CONFIG": str(config),
        "ISENSE_HOOK_LOG": str(folder / "hooks.log"),
        "ISENSE_HOOK_SPOOL": str(folder / f"spool-{case}"),
        "ISENSE_HOOK_SPOOL_MAX": "50",
        "ISENSE_HOOKS_ENV": str(folder / "no-hooks.env"),
    }
    if python:
        env["ISENSE_PYTHON"] = python
    return env


def time_runs(script: str, env: dict[str, str], case: str, runs: int, tally: Tally) -> list[float]:
    """Milliseconds of each run of `script` that exited 0."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        try:
            rc = subprocess.run(
                [str(REPO / script)], env=env, stdin=subprocess.DEVNULL, timeout=HOOK_TIMEOUT_S
            ).returncode
        except subprocess.TimeoutExpired:
            rc = f"hung > {HOOK_TIMEOUT_S} s"
        if rc != 0:
            tally.fail(1, f"{script} ({case}) exited {rc}")
            continue
        times.append((time.perf_counter() - t0) * 1000)
        tally.up_ok += case == "up"
    return times


def wait_hook_log(folder: Path, case: str, runs: int, tally: Tally) -> None:
    """The epilog reports from a detached process: wait for its log lines (one per run of
    each hook) before the next case changes the config."""
    log = folder / "hooks.log"
    want = 2 * runs * (1 + CASES.index(case))
    deadline = time.monotonic() + 30
    while (have := len(log.read_text().splitlines()) if log.exists() else 0) < want:
        if time.monotonic() > deadline:
            tally.fail(want - have, f"{want - have} hook log lines missing after the {case} case")
            break
        time.sleep(0.05)


def report(results: dict, kind: str, case: str, times: list[float], runs: int) -> None:
    figures = summary(times, quantiles=(0.5, 0.95), digits=1)
    results[f"{kind}_{case}"] = {
        "ok": figures["n"],
        **{f"{k}_ms": v for k, v in figures.items() if k not in ("n", "mean")},
    }
    line = "  ".join(
        f"{k.removesuffix('_ms')} {v:6.1f} ms" for k, v in results[f"{kind}_{case}"].items() if k.endswith("_ms")
    )
    print(f"{kind:7s} {case:7s} {line}  ({figures['n']} of {runs} ok)", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--python", default="", help="ISENSE_PYTHON for the wrapper (default: its own choice)")
    args = ap.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="isense-hook-bench-"))
    create_secret(folder / "secrets")
    receiver = EventReceiver(load_secret(folder / "secrets"))
    results = {}
    tally = Tally()
    try:
        for case in CASES:
            url = receiver.url if case == "up" else f"http://127.0.0.1:{free_port()}"
            config = write_hook_config(folder, url, folder / "secrets", service_account="isense-bench-nobody")
            if case == "broken":
                config.write_text("[slurm\n")
            env = hook_env(folder, config, case, args.python)
            for kind in ("prolog", "epilog"):
                times = time_runs(f"etc-slurm/{kind}.d/isense-{kind}", env, case, args.runs, tally)
                if kind == "epilog":
                    wait_hook_log(folder, case, args.runs, tally)
                report(results, kind, case, times, args.runs)
        received = len(receiver.events)
        if received < tally.up_ok:
            missing = tally.up_ok - received
            tally.fail(missing, f"{missing} of {tally.up_ok} events not received in the up case")
        spool = folder / "spool-up"
        spooled = sum(len(f.read_text().splitlines()) for f in spool.glob("*")) if spool.exists() else 0
    finally:
        receiver.close()
    return finish(
        {
            "bench": "hook_startup",
            "runs": args.runs,
            "python": args.python or "wrapper default",
            "cpus": os.cpu_count(),
            "events_received_up": received,
            "events_spooled_up": spooled,
            **results,
        },
        tally.errors,
        tally.failures,
    )


if __name__ == "__main__":
    sys.exit(guarded("hook_startup", main))
