"""`isense config check|path`: validate the config file and show what isense will use."""

import json
import os
import re

NAME = "config"
HELP = "check the config file and print the effective settings"
DESCRIPTION = """\
check [FILE]  validate the config (FILE overrides --config and $ISENSE_CONFIG) and
              print the effective settings, defaults filled in, as TOML (or --json)
path          print which config file would be used and why
"""
EPILOG = """\
exit status: 0 valid, 2 missing or invalid (one line naming file, line and key),
1 valid but [slurm] backend cannot work on this host (one line says why)."""


def add_arguments(parser) -> None:
    actions = parser.add_subparsers(dest="config_action", metavar="ACTION", required=True)
    check = actions.add_parser("check", help="validate the config and print the effective settings")
    check.add_argument(
        "file",
        nargs="?",
        metavar="FILE",
        help="config file to check (default: --config, $ISENSE_CONFIG, /etc/isense/isense.toml)",
    )
    check.add_argument("--json", action="store_true", help="print the effective config as JSON")
    actions.add_parser("path", help="print which config file would be used and why")


def run(args) -> int:
    if args.config_action == "path":
        return _path(args)
    return _check(args)


def _check(args) -> int:
    from isense_slurm.config import config_to_dict, load_config
    from isense_slurm.controller.scheduled_exports import check_cron

    cfg = load_config(args.file or args.config)
    check_cron(cfg)  # [exports] cron in full, as `isense serve` checks it at start (exit 2 either way)
    effective = config_to_dict(cfg)
    if args.json:
        print(json.dumps({"path": str(cfg.path), "config": effective}, indent=2))
    else:
        print(f"config OK: {cfg.path}")
        print()
        print(to_toml(effective), end="")
    return _check_backend(cfg.slurm.backend)


def _check_backend(kind: str) -> int:
    """A backend other than Slurm's commands needs more than the file: say when it is missing."""
    if kind == "cli":
        return 0
    import sys

    from isense_slurm.slurm import backend_problem

    problem = backend_problem(kind)
    if problem:
        print(f"isense: {problem}", file=sys.stderr)
        return 1
    return 0


def _path(args) -> int:
    from isense_slurm.config import ENV_VAR, resolve_config_path

    file, source = resolve_config_path(args.config)
    why = {
        "--config": "given by --config",
        f"${ENV_VAR}": f"from ${ENV_VAR}",
        "default": f"the default: no --config given and ${ENV_VAR} is not set",
    }[source]
    state = (
        "a directory"
        if file.is_dir()
        else (
            "exists" if file.is_file() and os.access(file, os.R_OK) else "not readable" if file.exists() else "missing"
        )
    )
    print(file.absolute())
    print(f"  why:   {why}")
    print(f"  state: {state}")
    return 0


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def to_toml(data: dict) -> str:
    """Render the effective config (plain tables, [[models]], inline sub-tables) as TOML."""
    out: list[str] = []
    for section, body in data.items():
        entries = body if isinstance(body, list) else [body]
        for entry in entries:
            out.append(f"[[{section}]]" if isinstance(body, list) else f"[{section}]")
            out.extend(f"{_key(k)} = {_value(v)}" for k, v in entry.items())
            out.append("")
    return "\n".join(out)


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key)


def _value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot render {type(value).__name__} as TOML")
