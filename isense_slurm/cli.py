"""The `isense` command: parses arguments and hands over to the rooms.

Kept thin: each subcommand lives in isense_slurm/commands/ and imports its heavy
dependencies only when it runs.
"""

import argparse
import sys

from isense_slurm import __version__
from isense_slurm.errors import IsenseError

DESCRIPTION = """\
isense lends idle GPUs of a Slurm cluster to low-priority, preemptible vLLM jobs,
serves paid OpenAI-compatible traffic on them, records every token in a local
SQLite ledger and gives the GPUs back to training within seconds.
"""

EPILOG = """\
config: --config FILE, else $ISENSE_CONFIG, else /etc/isense/isense.toml.
exit status: 0 ok, 1 runtime error, 2 usage or configuration error.
See docs/ for the admin, operator and client guides.
"""


def build_parser() -> argparse.ArgumentParser:
    from isense_slurm.commands import discover

    parser = argparse.ArgumentParser(
        prog="isense",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"isense {__version__}")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="config file (default: $ISENSE_CONFIG or /etc/isense/isense.toml)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in discover():
        sub = subparsers.add_parser(
            module.NAME,
            help=module.HELP,
            description=getattr(module, "DESCRIPTION", module.HELP),
            epilog=getattr(module, "EPILOG", None),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(sub)
        sub.set_defaults(handler=module.run)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except IsenseError as err:
        print(f"isense: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
