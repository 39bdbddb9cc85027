"""`isense keys create|list|revoke`: client API keys for the gateway."""

import argparse
import json
import sys
from datetime import UTC, datetime

NAME = "keys"
HELP = "create, list and revoke client API keys"
DESCRIPTION = """\
create NAME       make a new key and print it once (only its hash is stored)
list              show the keys: id, name, prefix, created, revoked
revoke ID|NAME    revoke a key; the gateway refuses it from its next key reload
"""
EPILOG = "The ledger is [ledger] path of the config, or --ledger PATH."


def add_arguments(parser) -> None:
    parser.add_argument("--ledger", metavar="PATH", help="ledger file (default: [ledger] path of the config)")
    # Also accepted after the action; SUPPRESS keeps the value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--ledger", metavar="PATH", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    actions = parser.add_subparsers(dest="keys_action", metavar="ACTION", required=True)
    create = actions.add_parser("create", parents=[common], help="make a new key and print it once")
    create.add_argument("name", metavar="NAME", help="who the key is for (letters, digits, . _ @ + -)")
    create.add_argument("--json", action="store_true", help="print the key and its info as JSON")
    listing = actions.add_parser("list", parents=[common], help="show the keys (never hashes or plaintext)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    revoke = actions.add_parser("revoke", parents=[common], help="revoke a key by id or name")
    revoke.add_argument("key", metavar="ID|NAME")


def run(args) -> int:
    from isense_slurm.meter.ledger import Ledger

    with Ledger.open(_ledger_path(args)) as ledger:
        if args.keys_action == "create":
            return _create(ledger, args)
        if args.keys_action == "list":
            return _list(ledger, args)
        key = ledger.revoke_key(args.key)
        print(f"revoked key {key.id} ({key.name}, {key.prefix}...)")
        return 0


def _ledger_path(args):
    if args.ledger:
        return args.ledger
    from isense_slurm.config import load_config

    return load_config(args.config).ledger.path


def _create(ledger, args) -> int:
    key, plaintext = ledger.create_key(args.name)
    warning = "isense: store this key now: it is not shown again (only its hash is kept)"
    if args.json:
        print(json.dumps({**_key_dict(key), "key": plaintext}))
    else:
        print(plaintext)
    print(warning, file=sys.stderr)
    return 0


def _list(ledger, args) -> int:
    keys = ledger.list_keys()
    if args.json:
        print(json.dumps([_key_dict(key) for key in keys], indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("ID", "NAME", "PREFIX", "CREATED", "REVOKED"):
        table.add_column(column, justify="right" if column == "ID" else "left", no_wrap=True)
    for key in keys:
        table.add_row(str(key.id), key.name, key.prefix + "...", _local(key.created_at), _local(key.revoked_at) or "-")
    console = Console()
    if keys:
        console.print(table)
    else:
        console.print("no API keys yet: `isense keys create NAME`")
    return 0


def _key_dict(key) -> dict:
    return {
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "created_at": _iso(key.created_at),
        "revoked_at": _iso(key.revoked_at),
        "active": key.active,
    }


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _local(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")
