"""The limit flags of `isense keys create|update|group`, and how limits are shown."""

import argparse
from decimal import Decimal, InvalidOperation

LIMITS_HELP = """\
A key in a group is held to its own limits and to its group's; "none" clears a limit.
Rates are counted per gateway process. A rate limit over: 429 rate_limit_exceeded with
Retry-After. A budget used up: 429 insufficient_quota until it renews (UTC midnight,
the 1st of the month, never for total). Budgets count the spend of every gateway on the
ledger, streamed and cut streams included; a request admitted before the budget ran
out is served and billed, so spend may pass a budget by the requests in flight at that
moment (see the operator guide, "Plans and limits")."""

CLEAR = None  # what "none" stands for


def count(text: str) -> int | None:
    if text.strip().lower() == "none":
        return CLEAR
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number >= 0, or none") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number >= 0, or none")
    return value


def amount(text: str) -> int | None:
    """An amount of money in currency units -> nanos (exact, through its decimal text)."""
    from isense_slurm.meter.money import to_nanos

    if text.strip().lower() == "none":
        return CLEAR
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{text!r}: an amount such as 5 or 0.25, or none") from None
    if not value.is_finite() or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: an amount >= 0, or none")
    return to_nanos(value)


FLAGS = {
    "rpm": ("--rpm", count, "N", "requests per minute (a sliding minute)"),
    "tpm": ("--tpm", count, "N", "tokens per minute, prompt + completion"),
    "concurrent": ("--concurrent", count, "N", "requests at once"),
    "budget_day_nanos": ("--budget-day", amount, "AMOUNT", "spend per UTC day, in [revenue] currency (5, 0.25)"),
    "budget_month_nanos": ("--budget-month", amount, "AMOUNT", "spend per UTC month"),
    "budget_total_nanos": ("--budget-total", amount, "AMOUNT", "spend over the key's (or group's) whole life"),
}


def add_limit_flags(parser: argparse.ArgumentParser) -> None:
    """The flags (absent: unchanged); LIMITS_HELP is the action's epilog."""
    for field, (flag, parse, metavar, text) in FLAGS.items():
        parser.add_argument(flag, dest=field, type=parse, metavar=metavar, default=argparse.SUPPRESS, help=text)


def changes(args) -> dict[str, int | None]:
    """The limits given on the command line (None: clear it)."""
    return {field: getattr(args, field) for field in FLAGS if hasattr(args, field)}


def limits_dict(limits, currency: str = "") -> dict:
    """JSON: rates as numbers, budgets as decimal strings of currency units (None: no limit)."""
    from isense_slurm.meter.money import from_nanos

    out: dict = {"rpm": limits.rpm, "tpm": limits.tpm, "concurrent": limits.concurrent}
    budgets = limits.budgets()
    for period in ("day", "month", "total"):
        value = budgets.get(period)
        out[f"budget_{period}"] = None if value is None else format(from_nanos(value).normalize(), "f")
    return out


def limits_text(limits) -> str:
    """'60 rpm, 4 at once, 5.00/day' (only what is set), or '-'."""
    from isense_slurm.meter.money import format_money

    parts = []
    if limits.rpm is not None:
        parts.append(f"{limits.rpm} rpm")
    if limits.tpm is not None:
        parts.append(f"{limits.tpm} tpm")
    if limits.concurrent is not None:
        parts.append(f"{limits.concurrent} at once")
    for period, value in limits.budgets().items():
        parts.append(f"{format_money(value, '')}/{period}")
    return ", ".join(parts) or "-"
