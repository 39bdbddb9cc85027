"""One module per `isense` subcommand, found by discovery so each room adds its own.

Each module defines NAME, HELP, `add_arguments(parser)` and `run(args) -> int`.
Modules here must stay light at import time: heavy imports (vLLM, torch, NVML,
aiohttp servers) go inside `run`, so `isense --help` works on a login node.
"""

import importlib
import pkgutil


def discover():
    """Yield the command modules of this package, in name order."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        yield importlib.import_module(f"{__name__}.{info.name}")
