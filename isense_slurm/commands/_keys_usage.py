"""`isense keys usage ID|NAME`: a key's usage per UTC day and model, and its budgets
(the operator's view of what GET /v1/usage shows the client)."""

import json
import time
from datetime import UTC, datetime

from isense_slurm.gateway.budgets import period_starts, remaining
from isense_slurm.meter import limits, usage
from isense_slurm.meter.limits import BUDGET_PERIODS
from isense_slurm.meter.money import format_money, from_nanos
from isense_slurm.periods import Period, iso_z, parse_export_period, period_of


def parse_period(text: str, now: datetime) -> Period:
    """today, yesterday, month (this UTC month), YYYY-MM-DD, YYYY-Www or YYYY-MM."""
    value = text.strip()
    if value == "today":
        return period_of("day", now.astimezone(UTC).date())
    if value == "month":
        return period_of("month", now.astimezone(UTC).date())
    return parse_export_period(value, now)


def budgets_of(ledger, key_id: int, group: str | None, now: float) -> dict:
    """'key' and 'group' (None when the key has none) -> limits, spent, remaining."""
    day, month = period_starts(now)
    spent = usage.spend(ledger, [key_id], [group] if group else [], day_start=day, month_start=month)
    out: dict = {"key": None, "group": None}
    subjects = [("key", limits.key_subject(key_id))]
    if group:
        subjects.append(("group", limits.group_subject(group)))
    for kind, subject in subjects:
        lim = limits.limits_of(ledger, subject)
        amounts = spent.get(subject, (0, 0, 0))
        budgets = lim.budgets()
        left = remaining(lim, amounts)
        out[kind] = {
            "name": group if kind == "group" else None,
            "rpm": lim.rpm,
            "tpm": lim.tpm,
            "concurrent": lim.concurrent,
            "budgets": {
                period: {
                    "budget_nanos": budgets.get(period),
                    "spent_nanos": amount,
                    "remaining_nanos": left[period],
                }
                for period, amount in zip(BUDGET_PERIODS, amounts)
            },
        }
    return out


def show_usage(ledger, args, currency: str) -> int:
    key, group = limits.find_key(ledger, args.key)
    now = time.time()
    period = parse_period(args.period, datetime.fromtimestamp(now, UTC))
    rows = usage.usage_rows(ledger, [key.id], period.start_ts, period.end_ts)
    budgets = budgets_of(ledger, key.id, group, now)
    if args.json:
        print(json.dumps(_as_json(key, group, period, rows, budgets, currency), indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"key {key.id} ({key.name}), group {group or '-'}, {period.label} (UTC)")
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("DAY", "MODEL", "REQUESTS", "PROMPT", "COMPLETION", "CACHED", "COST"):
        table.add_column(column, justify="left" if column in ("DAY", "MODEL") else "right", no_wrap=True)
    for row in rows:
        day = datetime.fromtimestamp(row.day_start, UTC).date().isoformat()
        counts = (row.requests, row.prompt_tokens, row.completion_tokens, row.cached_tokens)
        table.add_row(day, row.model, *map(str, counts), format_money(row.gross_nanos, currency))
    console.print(table if rows else "no requests in this period")
    for kind in ("key", "group"):
        view = budgets[kind]
        if view is None:
            continue
        for period_name, figures in view["budgets"].items():
            if figures["budget_nanos"] is None:
                continue
            console.print(
                f"{kind} {period_name} budget {format_money(figures['budget_nanos'], currency)}: "
                f"spent {format_money(figures['spent_nanos'], currency)}, "
                f"left {format_money(figures['remaining_nanos'], currency)}"
            )
    return 0


def _as_json(key, group, period: Period, rows, budgets: dict, currency: str) -> dict:
    def amount(nanos: int | None) -> str | None:
        return None if nanos is None else format(from_nanos(nanos).normalize(), "f")

    for view in budgets.values():
        if view is not None:
            view["budgets"] = {
                p: {name.removesuffix("_nanos"): amount(v) for name, v in figures.items()}
                for p, figures in view["budgets"].items()
            }
    return {
        "key": {"id": key.id, "name": key.name, "group": group, "active": key.active},
        "period": {"label": period.label, "start": iso_z(period.start), "end": iso_z(period.end)},
        "currency": currency,
        "usage": [
            {
                "day": datetime.fromtimestamp(row.day_start, UTC).date().isoformat(),
                "model": row.model,
                "requests": row.requests,
                "prompt_tokens": row.prompt_tokens,
                "completion_tokens": row.completion_tokens,
                "cached_tokens": row.cached_tokens,
                "cost": amount(row.gross_nanos),
            }
            for row in rows
        ],
        "budgets": budgets,
    }
