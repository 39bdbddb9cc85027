"""Time `isense status` on a generated 1,000-node cluster (a figure, not a test).

Generates Slurm 22.05 `sinfo --json` / `squeue --json` output for NODES nodes (shapes
copied from tests/fixtures/slurm/22.05, recorded on the dev cluster) and a ledger with
workers for every running worker job and a day of traffic. Then times what the command
does after Slurm has answered, through the same code: the access layer's JSON parsers
(json.loads included, via the --from-json backend), the ledger's read-only queries, the
model, and the rendering (rich terminal text, plain, JSON) in both views. The target:
under 0.5 s in all.

    .venv/bin/python bench/status.py [--nodes 1000] [--requests 200000] [--repeat 5]

Last line of output: JSON with the figures (milliseconds, median of the repeats that
succeeded) and `errors`: request rows the ledger fill lost plus repeats that raised;
the exit status is non-zero when errors > 0.
"""

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rich.console import Console  # noqa: E402

from isense_slurm.meter.earnings import open_readonly  # noqa: E402
from isense_slurm.report import status_inputs, status_view  # noqa: E402
from isense_slurm.report.status_model import build_status  # noqa: E402
from isense_slurm.slurm.file_backend import FileBackend  # noqa: E402
from stats import finish, guarded  # noqa: E402
from status_world import LEND, SERVICE, fill_ledger, generate  # noqa: E402

TARGET_MS = 500.0


def one_run(folder: Path, ledger: Path, now: float, view: str) -> dict:
    marks = {}
    start = time.perf_counter()
    backend = FileBackend(folder)  # fresh: nothing cached between runs
    slurm = status_inputs.read_slurm(backend)
    marks["parse_ms"] = time.perf_counter() - start
    t = time.perf_counter()
    conn = open_readonly(ledger)
    figures = status_inputs.read_figures(conn, now)
    conn.close()
    marks["ledger_ms"] = time.perf_counter() - t
    t = time.perf_counter()
    report = build_status(
        slurm.nodes,
        slurm.jobs,
        slurm.partitions,
        figures,
        lend_partition=LEND,
        service_account=SERVICE,
        currency="USD",
        at=datetime.fromtimestamp(now, UTC),
        day_start=status_inputs.day_start(now),
        view=view,
    )
    marks["model_ms"] = time.perf_counter() - t
    t = time.perf_counter()
    console = Console(file=io.StringIO(), width=220, force_terminal=True, color_system="truecolor")
    status_view.print_table(report, console)
    marks["render_terminal_ms"] = time.perf_counter() - t
    total_terminal = time.perf_counter() - start
    t = time.perf_counter()
    plain = status_view.to_plain(report)
    marks["render_plain_ms"] = time.perf_counter() - t
    t = time.perf_counter()
    status_view.to_json(report)
    marks["render_json_ms"] = time.perf_counter() - t
    marks["total_terminal_ms"] = total_terminal
    marks["rows"] = len(report.rows)
    marks["lines"] = plain.count("\n")
    marks["lent_gpus"] = report.total.gpus_lent
    return marks


def time_view(folder: Path, ledger: Path, now: float, view: str, repeat: int, failures: list[str]) -> tuple[dict, int]:
    """Median figures of the repeats that succeeded, printed; and how many failed."""
    runs = []  # successful repeats only
    errors = 0
    for _ in range(repeat):
        try:
            runs.append(one_run(folder, ledger, now, view))
        except Exception as err:  # noqa: BLE001 - any error of the code under test is counted, not timed
            traceback.print_exc()
            errors += 1
            failures.append(f"{view} view: {type(err).__name__}: {err}"[:300])
    if not runs:
        return {"ok": 0}, errors
    summary = {"ok": len(runs)}
    for key in runs[0]:
        values = [r[key] for r in runs]
        if key.endswith("_ms"):
            summary[key] = round(statistics.median(values) * 1000, 1)
            if key == "total_terminal_ms":
                summary["total_terminal_max_ms"] = round(max(values) * 1000, 1)
        else:
            summary[key] = values[0]
    print(
        f"{view:9} view: {summary['rows']:5} rows  parse {summary['parse_ms']:6.1f} ms  "
        f"ledger {summary['ledger_ms']:6.1f} ms  model {summary['model_ms']:5.1f} ms  "
        f"render {summary['render_terminal_ms']:5.1f} ms (plain {summary['render_plain_ms']:.1f}, "
        f"json {summary['render_json_ms']:.1f})  total {summary['total_terminal_ms']:6.1f} ms "
        f"(max {summary['total_terminal_max_ms']:.1f})"
    )
    return summary, errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--requests", type=int, default=200_000, help="requests served today")
    parser.add_argument("--last-minute", type=int, default=3000, help="of which in the last minute")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    day_start = datetime(2025, 6, 2, tzinfo=UTC).timestamp()
    now = day_start + 18 * 3600  # 18:00 UTC: most of a day of traffic
    world = generate(args.nodes, args.gpus_per_node, now=int(now))
    with tempfile.TemporaryDirectory(prefix="isense-bench-status-") as tmp:
        folder = Path(tmp)
        (folder / "sinfo.json").write_text(json.dumps(world.sinfo, indent=2))
        (folder / "squeue.json").write_text(json.dumps(world.squeue, indent=2))
        ledger = folder / "ledger.db"
        fill_start = time.perf_counter()
        filled = fill_ledger(
            ledger, world, now=now, requests_today=args.requests, last_minute=args.last_minute, day_start=day_start
        )
        fill_s = time.perf_counter() - fill_start
        errors = args.requests - filled
        failures = [f"ledger fill committed {filled} of {args.requests} rows"] if errors else []
        sizes = {name: (folder / name).stat().st_size for name in ("sinfo.json", "squeue.json")}
        print(
            f"cluster: {args.nodes} nodes x {args.gpus_per_node} GPUs, {len(world.squeue['jobs'])} jobs, "
            f"{len(world.workers)} worker jobs; sinfo.json {sizes['sinfo.json'] / 1e6:.1f} MB, "
            f"squeue.json {sizes['squeue.json'] / 1e6:.1f} MB"
        )
        print(f"ledger: {filled} requests today ({args.last_minute} in the last minute), filled in {fill_s:.1f} s")
        figures = {}
        for view in ("partition", "node"):
            figures[view], failed = time_view(folder, ledger, now, view, args.repeat, failures)
            errors += failed
    timed = [f["total_terminal_max_ms"] for f in figures.values() if f["ok"]]
    worst = max(timed) if timed else None
    return finish(
        {
            "bench": "status",
            "nodes": args.nodes,
            "gpus_per_node": args.gpus_per_node,
            "jobs": len(world.squeue["jobs"]),
            "requests_today": filled,
            "repeat": args.repeat,
            "target_ms": TARGET_MS,
            "worst_total_ms": worst,
            "within_target": worst is not None and worst < TARGET_MS,
            **figures,
        },
        errors,
        failures,
    )


if __name__ == "__main__":
    sys.exit(guarded("status", main))
