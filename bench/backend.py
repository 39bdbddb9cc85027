#!/usr/bin/env python3
"""Slurm backend benchmark: Slurm's commands against pyslurm, on the running dev cluster.

    .venv/bin/python bench/backend.py [--repeat 200] [--make-way 5] [--backends cli,pyslurm]
                                      [--slurm 22.05|24.11|26.05]

observe   one observe pass (jobs() + nodes()) `--repeat` times per backend, the backends
          taking turns so that both see the same cluster: p50/p95/max in ms.
make way  `--make-way N` times per backend (0: off): a stand-in worker (the service
          account's job in the lend partition, 4 GPUs, its batch script notes when
          SIGTERM arrives) on an idle node, then a training job pinned there; the
          job_submit wake runs make way (SubmitWatcher + WayMaker on that backend), which
          SIGTERMs the worker. Timed: sbatch -> SIGTERM in the worker's trap, and the make
          way pass itself.
Default backends: both, less pyslurm on Slurm 26.05 (none exists; said in the output).
Errors (counted, never timed): a call that raised, a worker make way did not stop, a
job that did not start in time. The last line is JSON; the exit status is non-zero
on any error.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
sys.path.insert(0, str(REPO / "bench"))

from isense_slurm.config import load_config  # noqa: E402
from isense_slurm.errors import SlurmError  # noqa: E402
from isense_slurm.slurm import CliBackend, SubmitOptions, default_backend  # noqa: E402
from on_slurm import add_slurm_argument, run_inside_if_asked, slurm_release  # noqa: E402
from stats import finish, guarded, summary  # noqa: E402
from waiting import wait_for  # noqa: E402

DEV_CONFIG = REPO / "dev" / "isense.dev.toml"
JOBS = Path("/var/lib/isense-dev/jobs")
TRAINER, SERVICE = "trainer", "isense"


def backends(wanted: str, cli: CliBackend) -> tuple[dict, list[str]]:
    """{kind: backend} to run, and notes on the ones left out."""
    release = cli.version()
    kinds = wanted.split(",") if wanted else ["cli", "pyslurm"]
    out, notes = {}, []
    for kind in kinds:
        if kind == "pyslurm" and release.startswith("26.") and not wanted:
            notes.append(f"pyslurm left out: no pyslurm exists for Slurm {release}")
            continue
        backend = default_backend(kind=kind)
        if hasattr(backend, "load"):
            backend.load()  # SlurmError: one line, the bench fails (guarded)
        out[kind] = backend
    return out, notes


def observe(runs: dict, repeat: int, failures: list[str]) -> dict:
    times: dict[str, list[float]] = {k: [] for k in runs}
    sizes: dict[str, tuple[int, int]] = {}
    for _ in range(repeat):
        for kind, slurm in runs.items():
            t0 = time.perf_counter()
            try:
                jobs, nodes = slurm.jobs(), slurm.nodes()
            except SlurmError as err:
                failures.append(f"{kind} observe: {err}")
                continue
            times[kind].append(time.perf_counter() - t0)
            sizes[kind] = (len(jobs), len(nodes))
    for kind, ms in times.items():
        s = summary(ms, scale=1000)
        print(
            f"observe {kind:8s} jobs+nodes ({sizes.get(kind, (0, 0))[0]} jobs, {sizes.get(kind, (0, 0))[1]} nodes):"
            f" p50 {s.get('p50', '-')} ms, p95 {s.get('p95', '-')} ms, max {s.get('max', '-')} ms",
            flush=True,
        )
    return {kind: summary(ms, scale=1000) for kind, ms in times.items()}


def idle_node(cli: CliBackend) -> str | None:
    free = [n.name for n in cli.nodes(partition="inference") if n.usable and n.gpus_alloc == 0 and n.gpus_total == 4]
    return free[-1] if free else None


def start_trapping_worker(cli: CliBackend, workdir: Path, jobs: list[int]) -> tuple[str, int, Path]:
    """A worker-like job on an idle node that writes the time of its SIGTERM to a marker:
    (node, job id, marker), once its trap is set."""
    node = wait_for(lambda: idle_node(cli), 60, "an idle node")
    marker = workdir / f"term-{uuid.uuid4().hex[:6]}"
    ready = marker.with_suffix(".ready")
    worker = cli.submit(
        f"#!/bin/bash\ntrap 'date +%s.%N > {marker}; exit 0' TERM\ntouch {ready}\nwhile :; do sleep 0.05; done\n",
        SubmitOptions(
            partition="inference",
            job_name="isense-bench",
            nodelist=node,
            gres="gpu:4",
            time=5,
            requeue=False,
            output=str(workdir / "w-%j.out"),
            chdir=str(workdir),
        ),
        as_user=SERVICE,
    )
    jobs.append(worker)
    wait_for(ready.exists, 30, f"worker {worker} to run and set its trap")
    return node, worker, marker


def make_way_once(cli: CliBackend, slurm, cfg, workdir: Path, jobs: list[int]) -> tuple[float, float]:
    """(sbatch -> SIGTERM at the worker, the make way pass) in seconds; AssertionError or
    SlurmError when something did not happen."""
    from isense_slurm.controller.memory import Memory
    from isense_slurm.controller.observe import Scope
    from isense_slurm.reclaim.make_way import WayMaker
    from isense_slurm.reclaim.submit_watch import SubmitWatcher

    node, worker, marker = start_trapping_worker(cli, workdir, jobs)
    way = WayMaker(Scope.from_config(cfg), slurm, Memory())
    way.nodes()  # the tick's node list, as in the daemon
    way.preempting()
    passes: list[float] = []
    decided: list = []

    def on_submit(mtime: float) -> None:
        t0 = time.perf_counter()
        decided.extend(way.run(mtime))
        passes.append(time.perf_counter() - t0)

    watcher = SubmitWatcher(cfg.slurm.submit_wake, on_submit)
    watcher.start()
    try:
        submitted = time.time()
        train = cli.submit(
            "#!/bin/bash\nsleep 1\n",
            SubmitOptions(
                partition="train",
                job_name="bench-train",
                nodelist=node,
                gres="gpu:4",
                time=1,
                output=str(workdir / "t-%j.out"),
                chdir=str(workdir),
            ),
            as_user=TRAINER,
        )
        jobs.append(train)
        wait_for(lambda: marker.exists() and marker.read_text().strip(), 30, f"SIGTERM at worker {worker}")
    finally:
        watcher.stop()
    if not any(r.worker_job_id == str(worker) for r in decided):
        raise AssertionError(f"make way did not stop worker {worker} (Slurm did)")
    wait_for(lambda: (j := cli.job(train)) and j.is_finished, 60, f"training job {train} to end")
    return float(marker.read_text()) - submitted, max(passes)


def make_way(runs: dict, cli: CliBackend, count: int, failures: list[str]) -> dict:
    cfg = load_config(DEV_CONFIG)
    if cfg.slurm.submit_wake is None:
        failures.append("make way: dev/isense.dev.toml sets no [slurm] submit_wake")
        return {}
    workdir = JOBS / f"bench-backend-{uuid.uuid4().hex[:8]}"
    workdir.mkdir(mode=0o777, parents=True)
    workdir.chmod(0o777)
    jobs: list[int] = []
    term: dict[str, list[float]] = {k: [] for k in runs}
    passes: dict[str, list[float]] = {k: [] for k in runs}
    try:
        for i in range(count):
            for kind, slurm in runs.items():
                try:
                    seconds, one_pass = make_way_once(cli, slurm, cfg, workdir, jobs)
                except (AssertionError, SlurmError) as err:
                    failures.append(f"make way {kind} {i + 1}: {err}")
                    print(f"make way {kind} {i + 1}/{count}: FAILED: {err}", flush=True)
                    continue
                term[kind].append(seconds)
                passes[kind].append(one_pass)
                print(
                    f"make way {kind:8s} {i + 1}/{count}: sbatch -> SIGTERM {seconds * 1000:.0f} ms"
                    f" (pass {one_pass * 1000:.1f} ms)",
                    flush=True,
                )
    finally:
        for job_id in jobs:
            try:
                cli.cancel(job_id)
            except SlurmError:
                pass
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        kind: {"sbatch_to_sigterm_ms": summary(term[kind], scale=1000), "pass_ms": summary(passes[kind], scale=1000)}
        for kind in runs
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=200, help="observe passes per backend")
    ap.add_argument("--make-way", type=int, default=5, help="make way runs per backend (0: off)")
    ap.add_argument("--backends", default="", help="comma list of cli,pyslurm (default: both where pyslurm exists)")
    add_slurm_argument(ap)
    args = ap.parse_args()
    run_inside_if_asked(args.slurm, __file__, sys.argv[1:])
    cli = CliBackend()
    runs, notes = backends(args.backends, cli)
    for note in notes:
        print(note, flush=True)
    failures: list[str] = []
    figures: dict = {"bench": "backend", "slurm": slurm_release(), "backends": list(runs), "notes": notes}
    figures["observe_ms"] = observe(runs, args.repeat, failures)
    if args.make_way > 0:
        figures["make_way"] = make_way(runs, cli, args.make_way, failures)
    return finish(figures, len(failures), failures)


if __name__ == "__main__":
    sys.exit(guarded("backend", main))
