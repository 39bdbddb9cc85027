"""`isense serve`: the gateway and the lending controller in one daemon."""

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
    parser.add_argument("--dry-run", action="store_true",
                        help="print each tick's plan (one line per decision); submit and cancel nothing")
    parser.add_argument("--once", action="store_true", help="run one tick and exit (no gateway)")
    parser.add_argument("--no-gateway", action="store_true",
                        help="serve only the controller's /internal routes (hook events) and /metrics, not the API")
    parser.add_argument("--listen", metavar="HOST:PORT", help="address to listen on (default: [gateway] listen)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log debug lines too (each make-way judgement, early ticks)")


def _logging(name: str, verbose: bool = False) -> None:
    from isense_slurm import daemon_logging

    daemon_logging.setup(name, verbose)


def _print_plan(plan) -> None:
    print("\n".join(plan.explanations), flush=True)


def _dry_run(cfg, slurm, once: bool) -> int:
    import signal
    import threading
    from datetime import datetime

    from isense_slurm.controller.agent import Agent
    from isense_slurm.errors import SlurmError

    first = [True]

    def report(plan) -> None:
        if not once:
            print(("" if first[0] else "\n") + f"# {datetime.now():%Y-%m-%d %H:%M:%S}", flush=True)
            first[0] = False
        _print_plan(plan)

    agent = Agent(cfg, slurm, dry_run=True, report=report)
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


def _one_tick(cfg, slurm) -> int:
    from isense_slurm.controller.agent import Agent
    from isense_slurm.errors import SlurmError
    from isense_slurm.meter.ledger import Ledger

    with Ledger.open(cfg.ledger.path) as ledger:
        agent = Agent(cfg, slurm, ledger=ledger)
        plan = agent.tick()
    if plan is None:
        raise SlurmError(agent.last_error or "no plan made")
    _print_plan(plan)
    return 0


def run(args) -> int:
    import asyncio

    from isense_slurm.commands.gateway import _service_gid, listen_address
    from isense_slurm.config import load_config
    from isense_slurm.errors import UsageError
    from isense_slurm.slurm import backend_for

    cfg = load_config(args.config)
    host, port = listen_address(cfg, args.listen)
    if args.once and (args.no_gateway or args.listen):
        raise UsageError("--once runs one tick without the gateway: --no-gateway and --listen do not apply")
    _logging("isense-serve", args.verbose)
    slurm = backend_for(cfg.slurm)
    if hasattr(slurm, "load"):
        slurm.load()  # [slurm] backend = "pyslurm" without pyslurm: one line now, not at each tick
    if args.dry_run:
        return _dry_run(cfg, slurm, args.once)
    if args.once:
        return _one_tick(cfg, slurm)

    from isense_slurm.controller.daemon import serve
    from isense_slurm.controller.scheduled_exports import check_cron, schedule_exports
    from isense_slurm.gateway.loop_watch import favour_the_loop
    from isense_slurm.meter.ledger import Ledger
    from isense_slurm.secrets import create_secret, load_secret

    check_cron(cfg)
    export_hook = schedule_exports(cfg)

    with Ledger.open(cfg.ledger.path) as ledger:
        ledger.sync_prices(cfg.models, cfg.revenue.currency)
    create_secret(cfg.secrets.dir, _service_gid(cfg.slurm.service_account))
    secret = load_secret(cfg.secrets.dir)
    favour_the_loop()
    asyncio.run(serve(cfg, slurm, host=host, port=port, secret=secret, with_gateway=not args.no_gateway,
                      scheduled=[export_hook] if export_hook else []))
    return 0
