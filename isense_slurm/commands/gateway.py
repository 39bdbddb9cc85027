"""`isense gateway`: the OpenAI-compatible front door for paid traffic."""

import asyncio
import logging

from isense_slurm import daemon_logging
from isense_slurm.gateway.loop_watch import favour_the_loop
from isense_slurm.secrets import ensure_secret

NAME = "gateway"
HELP = "serve the OpenAI-compatible API, route to live workers, meter every token"
DESCRIPTION = """\
Serve /v1/models, /v1/chat/completions and /v1/completions (streamed and not) to
clients holding an API key (`isense keys create`), send each request to the live
worker of its model with the fewest requests in flight, retry or continue elsewhere
when a worker goes, answer 429 with Retry-After when a model has no worker, and commit
a ledger row for every request before its answer completes.

Workers register at /internal/workers/* with a credential derived from the secret in
[secrets] dir (created here if missing). GET /internal/workers shows the registry
and GET /metrics the Prometheus metrics (both localhost only). SIGTERM or SIGINT:
stop accepting, finish requests in flight, flush the ledger, exit 0.
"""
EPILOG = """\
One log line per worker event (serving, draining, ended) on stderr.
exit status: 0 stopped by a signal, 1 runtime error (port busy), 2 usage or config error.
"""


def add_arguments(parser) -> None:
    parser.add_argument("--listen", metavar="HOST:PORT", help="address to listen on (default: [gateway] listen)")


def run(args) -> int:
    # The config, aiohttp and the ledger (sqlite-utils) load only when it runs: `isense --help` stays light.
    from isense_slurm.config import load_config
    from isense_slurm.http.address import listen_address
    from isense_slurm.http.server import serve
    from isense_slurm.meter.ledger import Ledger

    cfg = load_config(args.config)
    host, port = listen_address(cfg, args.listen)

    daemon_logging.setup("isense-gateway")
    favour_the_loop()
    log = logging.getLogger("isense")

    with Ledger.open(cfg.ledger.path) as ledger:
        changed = ledger.sync_prices(cfg.models, cfg.revenue.currency)
    if changed:
        log.info("price book updated for %s", ", ".join(changed))
    secret = ensure_secret(cfg.secrets.dir, cfg.slurm.service_account)
    asyncio.run(serve(cfg, host=host, port=port, secret=secret))
    return 0
