"""`isense serve`: the gateway and the lending controller in one daemon."""

import asyncio
import signal
import threading
from datetime import datetime
from pathlib import Path

from isense_slurm import daemon_logging
from isense_slurm.errors import SlurmError, UsageError
from isense_slurm.gateway.loop_watch import favour_the_loop
from isense_slurm.secrets import ensure_secret

NAME = "serve"
HELP = "run the gateway and the controller that lends idle GPUs (the isense daemon)"
DESCRIPTION = """\
Every [slurm] tick_seconds, and at once when a node's epilog reports freed GPUs:
observe Slurm (sinfo, squeue), decide with the planner (dwell, availability windows,
lend share, time limits fitted to Slurm's forecasts, models by weight and demand), and
act: sbatch worker jobs into the lend partition as the service account, scancel the
ones the policy no longer allows. Slurm's preemption takes GPUs back for training; the
node hooks report each reclaim to /internal/events and the ledger records it.

The gateway (see `isense gateway`) runs on the same loop and port, and so does
GET /metrics (Prometheus, loopback only; docs/operator-guide.md, Metrics).
--dry-run: observe and print the plan, one line per decision; submit and cancel nothing.
"""
EPILOG = """\
examples:
  isense serve                      gateway + controller (the daemon)
  isense serve --dry-run --once     what would be lent now, and why
  isense serve --no-gateway         controller (and hook events) only
exit status: 0 stopped by a signal, 1 runtime error (Slurm, port busy), 2 usage or config error.
"""


def add_arguments(parser) -> None:
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print each tick's plan (one line per decision); submit and cancel nothing",
    )
    parser.add_argument("--once", action="store_true", help="run one tick and exit (no gateway)")
    parser.add_argument(
        "--no-gateway",
        action="store_true",
        help="serve only the controller's /internal routes (hook events) and /metrics, not the API",
    )
    parser.add_argument("--listen", metavar="HOST:PORT", help="address to listen on (default: [gateway] listen)")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log debug lines too (each make-way judgement, early ticks)"
    )


def _print_plan(plan) -> None:
    print("\n".join(plan.explanations), flush=True)


def _dry_run(cfg, slurm, once: bool) -> int:
    from isense_slurm.controller.agent import Agent  # APScheduler: loaded when the controller runs

    first = [True]

    def report(plan) -> None:
        if not once:
            print(("" if first[0] else "\n") + f"# {datetime.now():%Y-%m-%d %H:%M:%S}", flush=True)
            first[0] = False
        _print_plan(plan)

    agent = Agent(cfg, slurm, dry_run=True, report=report, start_times=_read_only_start_times(cfg.ledger.path))
    if once:
        if agent.tick() is None:
            raise SlurmError(agent.last_error or "no plan made")
        return 0
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.is_set():
        agent.tick()
        stop.wait(float(cfg.slurm.tick_seconds))
    return 0


def _read_only_start_times(path):
    """The models' measured starts for a dry run, which writes nothing: the ledger opened
    read-only at each read; none while there is no ledger yet."""
    from isense_slurm.meter import start_queries
    from isense_slurm.meter.earnings import open_readonly

    def read(since: float) -> dict[str, tuple[float, int]]:
        if not Path(path).exists():
            return {}
        conn = open_readonly(path)
        try:
            return start_queries.start_times(conn, since)
        finally:
            conn.close()

    return read


def _one_tick(cfg, slurm) -> int:
    from isense_slurm.controller.agent import Agent  # APScheduler and sqlite-utils: loaded when it runs
    from isense_slurm.meter.ledger import Ledger

    with Ledger.open(cfg.ledger.path) as ledger:
        agent = Agent(cfg, slurm, ledger=ledger)
        plan = agent.tick()
    if plan is None:
        raise SlurmError(agent.last_error or "no plan made")
    _print_plan(plan)
    return 0


def run(args) -> int:
    # The config and Slurm backends load only when it runs: `isense --help` stays light.
    from isense_slurm.config import load_config
    from isense_slurm.http.address import listen_address
    from isense_slurm.slurm import backend_for

    cfg = load_config(args.config)
    host, port = listen_address(cfg, args.listen)
    if args.once and (args.no_gateway or args.listen):
        raise UsageError("--once runs one tick without the gateway: --no-gateway and --listen do not apply")
    daemon_logging.setup("isense-serve", args.verbose)
    slurm = backend_for(cfg.slurm)
    if hasattr(slurm, "load"):
        slurm.load()  # [slurm] backend = "pyslurm" without pyslurm: one line now, not at each tick
    if args.dry_run:
        return _dry_run(cfg, slurm, args.once)
    if args.once:
        return _one_tick(cfg, slurm)
    return _daemon(cfg, slurm, host, port, with_gateway=not args.no_gateway)


def _daemon(cfg, slurm, host: str, port: int, *, with_gateway: bool) -> int:
    # aiohttp, APScheduler and sqlite-utils: loaded only for the daemon.
    from isense_slurm.controller.daemon import ControllerDaemon
    from isense_slurm.controller.scheduled_exports import check_cron, schedule_exports
    from isense_slurm.http.server import serve
    from isense_slurm.meter.ledger import Ledger

    check_cron(cfg)
    export_hook = schedule_exports(cfg)

    with Ledger.open(cfg.ledger.path) as ledger:
        ledger.sync_prices(cfg.models, cfg.revenue.currency)
    secret = ensure_secret(cfg.secrets.dir, cfg.slurm.service_account)
    favour_the_loop()

    async def main() -> None:
        controller = await ControllerDaemon.open(
            cfg, slurm, secret=secret, scheduled=[export_hook] if export_hook else []
        )
        await serve(cfg, host=host, port=port, secret=secret, with_gateway=with_gateway, controller=controller)

    asyncio.run(main())
    return 0
