"""`isense keys create|update|group|list|usage|revoke`: client API keys for the gateway,
their limits and their usage."""

import argparse
import json
import sys
from datetime import UTC, datetime

from isense_slurm.commands import _keys_limits as keys_limits

NAME = "keys"
HELP = "create, limit, list and revoke client API keys; show their usage"
DESCRIPTION = """\
create NAME       make a new key and print it once (only its hash is stored)
update ID|NAME    change a key's group and limits
group GROUP       set the limits shared by the keys of a group
list              show the keys: id, name, prefix, group, limits, created, revoked
usage ID|NAME     a key's requests, tokens and cost per day and model; its budgets
revoke ID|NAME    revoke a key; the gateway refuses it from its next key reload
"""
EPILOG = (
    "The ledger is [ledger] path of the config, or --ledger PATH. Limits reach the "
    "gateways within a second or two; `isense keys ACTION --help` lists them."
)
FORMATTER = argparse.RawDescriptionHelpFormatter


def add_arguments(parser) -> None:
    parser.add_argument("--ledger", metavar="PATH", help="ledger file (default: [ledger] path of the config)")
    # Also accepted after the action; SUPPRESS keeps the value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--ledger", metavar="PATH", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    actions = parser.add_subparsers(dest="keys_action", metavar="ACTION", required=True)
    limited = {"parents": [common], "epilog": keys_limits.LIMITS_HELP, "formatter_class": FORMATTER}
    create = actions.add_parser("create", help="make a new key and print it once", **limited)
    create.add_argument("name", metavar="NAME", help="who the key is for (letters, digits, . _ @ + -)")
    create.add_argument("--group", metavar="GROUP", help="put the key in GROUP: it shares the group's limits")
    keys_limits.add_limit_flags(create)
    create.add_argument("--json", action="store_true", help="print the key and its info as JSON")
    update = actions.add_parser("update", help="change a key's group and limits", **limited)
    update.add_argument("key", metavar="ID|NAME")
    update.add_argument(
        "--group", metavar="GROUP", default=argparse.SUPPRESS, help='move the key to GROUP ("none": out of any group)'
    )
    keys_limits.add_limit_flags(update)
    group = actions.add_parser("group", help="set the limits shared by a group's keys", **limited)
    group.add_argument("group", metavar="GROUP", help="the group's name (keys join it with --group)")
    keys_limits.add_limit_flags(group)
    listing = actions.add_parser("list", parents=[common], help="show the keys (never hashes or plaintext)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    usage = actions.add_parser(
        "usage",
        parents=[common],
        help="a key's usage per day and model, and its budgets",
        description="Requests, tokens and cost of a key per UTC day and model (what GET /v1/usage "
        "shows the client), then its budgets and its group's: spent and left.",
    )
    usage.add_argument("key", metavar="ID|NAME")
    usage.add_argument(
        "--period",
        metavar="PERIOD",
        default="month",
        help="today, yesterday, month (this UTC month, the default), YYYY-MM-DD, YYYY-Www or YYYY-MM",
    )
    usage.add_argument("--json", action="store_true", help="print JSON")
    revoke = actions.add_parser("revoke", parents=[common], help="revoke a key by id or name")
    revoke.add_argument("key", metavar="ID|NAME")


def run(args) -> int:
    from isense_slurm.meter.ledger import Ledger

    with Ledger.open(_ledger_path(args)) as ledger:
        if args.keys_action == "create":
            return _create(ledger, args)
        if args.keys_action == "list":
            return _list(ledger, args)
        if args.keys_action in ("update", "group"):
            return _set_limits(ledger, args)
        if args.keys_action == "usage":
            from isense_slurm.commands._keys_usage import show_usage

            return show_usage(ledger, args, _currency(args))
        key = ledger.revoke_key(args.key)
        print(f"revoked key {key.id} ({key.name}, {key.prefix}...)")
        return 0


def _ledger_path(args):
    if args.ledger:
        return args.ledger
    from isense_slurm.config import load_config

    return load_config(args.config).ledger.path


def _currency(args) -> str:
    """[revenue] currency of the config; '' when there is no readable config (--ledger)."""
    try:
        from isense_slurm.config import load_config

        return load_config(args.config).revenue.currency
    except Exception:  # noqa: BLE001 - any config trouble: amounts are shown without a currency
        return ""


def _set_limits(ledger, args) -> int:
    from isense_slurm.meter import limits

    if args.keys_action == "group":
        subject = limits.group_subject(limits.check_group_name(args.group))
        new = limits.set_limits(ledger, subject, keys_limits.changes(args))
        print(f"group {args.group}: {keys_limits.limits_text(new)}")
        return 0
    key, group = limits.find_key(ledger, args.key)
    if not key.active:
        from isense_slurm.errors import UsageError

        raise UsageError(f"API key {key.id} ({key.name}) is revoked")
    if hasattr(args, "group"):
        group = None if args.group.lower() == "none" else args.group
        limits.set_key_group(ledger, key.id, group)
    new = limits.set_limits(ledger, limits.key_subject(key.id), keys_limits.changes(args))
    print(f"key {key.id} ({key.name}): group {group or '-'}; {keys_limits.limits_text(new)}")
    return 0


def _create(ledger, args) -> int:
    from isense_slurm.meter import limits

    if args.group is not None:
        limits.check_group_name(args.group)
    key, plaintext = ledger.create_key(args.name)
    if args.group is not None:
        limits.set_key_group(ledger, key.id, args.group)
    if keys_limits.changes(args):
        limits.set_limits(ledger, limits.key_subject(key.id), keys_limits.changes(args))
    warning = "isense: store this key now: it is not shown again (only its hash is kept)"
    if args.json:
        print(json.dumps({**_key_dict(key, *_limits_of(ledger, key.id)), "key": plaintext}))
    else:
        print(plaintext)
    print(warning, file=sys.stderr)
    return 0


def _limits_of(ledger, key_id: int) -> tuple:
    """(group, the key's Limits, the group's Limits or None)."""
    from isense_slurm.meter import limits

    group = limits.groups_of_all_keys(ledger).get(key_id)
    mine = limits.limits_of(ledger, limits.key_subject(key_id))
    return group, mine, limits.limits_of(ledger, limits.group_subject(group)) if group else None


def _list(ledger, args) -> int:
    from isense_slurm.meter import limits

    keys = ledger.list_keys()
    book = limits.read_book(ledger)
    groups = limits.groups_of_all_keys(ledger)

    def of(key) -> tuple:
        group = groups.get(key.id)
        mine = book.limits.get(limits.key_subject(key.id), limits.NO_LIMITS)
        return group, mine, book.limits.get(limits.group_subject(group), limits.NO_LIMITS) if group else None

    if args.json:
        print(json.dumps([_key_dict(key, *of(key)) for key in keys], indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("ID", "NAME", "PREFIX", "GROUP", "LIMITS", "GROUP LIMITS", "CREATED", "REVOKED"):
        table.add_column(column, justify="right" if column == "ID" else "left", no_wrap=True)
    for key in keys:
        group, mine, theirs = of(key)
        shown = (group or "-", keys_limits.limits_text(mine), keys_limits.limits_text(theirs) if theirs else "-")
        table.add_row(
            str(key.id), key.name, key.prefix + "...", *shown, _local(key.created_at), _local(key.revoked_at) or "-"
        )
    console = Console()
    if keys:
        console.print(table)
    else:
        console.print("no API keys yet: `isense keys create NAME`")
    return 0


def _key_dict(key, group=None, mine=None, theirs=None) -> dict:
    return {
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "group": group,
        "limits": keys_limits.limits_dict(mine) if mine is not None else None,
        "group_limits": keys_limits.limits_dict(theirs) if theirs is not None else None,
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
