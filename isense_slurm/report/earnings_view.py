"""Rendering the earnings report: a rich table on a terminal, plain columns when piped,
JSON and CSV for machines. Money is exact: amounts are integer nanos shown in full
(decimal strings with 9 places in JSON and CSV)."""

import csv
import io
import json

from isense_slurm.meter.money import format_money
from isense_slurm.periods import iso_z
from isense_slurm.report.earnings import SECONDS_PER_HOUR, EarningsReport, EarningsRow
from isense_slurm.report.plain_table import plain_table


def decimal_text(nanos: int | None) -> str | None:
    """Nanos -> exact decimal string with 9 places ('0.000042000'), no float in between."""
    if nanos is None:
        return None
    sign = "-" if nanos < 0 else ""
    whole, frac = divmod(abs(nanos), 1_000_000_000)
    return f"{sign}{whole}.{frac:09d}"


def row_dict(report: EarningsReport, row: EarningsRow) -> dict:
    """One row as JSON/CSV see it: tokens as integers, money as exact decimal strings."""
    t = row.totals
    hours = row.gpu_hours
    starting = row.start_gpu_seconds
    return {
        "period": row.period,
        "period_start": iso_z(row.start),
        "period_end": iso_z(row.end),
        "group": row.group,
        "requests": t.requests,
        "prompt_tokens": t.prompt_tokens,
        "completion_tokens": t.completion_tokens,
        "cached_tokens": t.cached_tokens,
        "currency": report.currency,
        "gross": decimal_text(t.gross_nanos),
        "operator_share": decimal_text(t.operator_nanos),
        "gpu_hours": None if hours is None else round(hours, 6),
        "gross_per_gpu_hour": decimal_text(row.gross_per_gpu_hour_nanos()),
        "raw_gpu_hour_price": decimal_text(report.raw_gpu_hour_nanos),
        "raw_equivalent": decimal_text(row.raw_equivalent_nanos(report.raw_gpu_hour_nanos)),
        # Last, so that CSV columns before them keep their places.
        "start_gpu_hours": None if starting is None else round(starting / SECONDS_PER_HOUR, 6),
        "start_share": None if row.start_share is None else round(row.start_share, 4),
    }


def to_json(report: EarningsReport) -> str:
    return json.dumps(
        {
            "timezone": "UTC",
            "by": report.by,
            "group_by": report.group,
            "since": iso_z(report.since),
            "until": iso_z(report.until),
            "currency": report.currency,
            "raw_gpu_hour_price": decimal_text(report.raw_gpu_hour_nanos),
            "rows": [row_dict(report, row) for row in report.rows],
            "total": row_dict(report, report.total),
            "warnings": report.warnings,
        },
        indent=2,
    )


def to_csv(report: EarningsReport) -> str:
    """One line per row (no TOTAL line: spreadsheets sum themselves); the group column
    is named after the grouping (node, partition, model, client). A header even when empty."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(_csv_record(report, report.total)), lineterminator="\n")
    writer.writeheader()
    for row in report.rows:
        writer.writerow(_csv_record(report, row))
    return out.getvalue()


def _csv_record(report: EarningsReport, row: EarningsRow) -> dict:
    record = row_dict(report, row)
    group = record.pop("group")
    if report.group:
        record = {"period": record.pop("period"), report.group: group, **record}
    return record


def _columns(report: EarningsReport) -> list[tuple[str, bool]]:
    """(header, right-aligned)."""
    cur = report.currency
    group = [(report.group.upper(), False)] if report.group else []
    return [
        ("PERIOD", False),
        *group,
        ("REQUESTS", True),
        ("TOKENS_IN", True),
        ("TOKENS_OUT", True),
        ("CACHED", True),
        (f"GROSS({cur})", True),
        (f"OPERATOR({cur})", True),
        ("GPU_HOURS", True),
        ("START%", True),
        (f"{cur}/GPU_HOUR", True),
        (f"RAW_EQUIV({cur})", True),
    ]


def _cells(report: EarningsReport, row: EarningsRow, thousands: bool) -> list[str]:
    t = row.totals
    number = (lambda n: f"{n:,}") if thousands else str
    money = lambda nanos: "-" if nanos is None else format_money(nanos, "")  # noqa: E731
    hours = row.gpu_hours
    group = [row.group if row.group is not None else "-"] if report.group else []
    return [
        row.period,
        *group,
        number(t.requests),
        number(t.prompt_tokens),
        number(t.completion_tokens),
        number(t.cached_tokens),
        money(t.gross_nanos),
        money(t.operator_nanos),
        "-" if hours is None else f"{hours:.3f}",
        "-" if row.start_share is None else f"{row.start_share * 100:.1f}",
        money(row.gross_per_gpu_hour_nanos()),
        money(row.raw_equivalent_nanos(report.raw_gpu_hour_nanos)),
    ]


def _rows(report: EarningsReport) -> list[EarningsRow]:
    return report.rows + ([report.total] if len(report.rows) != 1 else [])


def to_plain(report: EarningsReport) -> str:
    """sinfo-style columns: no colour, no wrapping, no thousands separators (easy to cut/awk)."""
    return plain_table(_columns(report), [_cells(report, row, False) for row in _rows(report)])


def print_table(report: EarningsReport, console) -> None:
    from rich.table import Table  # rich loads only when a table is drawn (--json never draws)

    price = format_money(report.raw_gpu_hour_nanos, report.currency)
    table = Table(
        box=None,
        header_style="bold",
        pad_edge=False,
        caption=(
            f"UTC periods {iso_z(report.since)} to {iso_z(report.until)}. Raw rental price: {price} per "
            f"GPU-hour; RAW_EQUIV is what renting the lent GPU-hours raw would have earned; "
            f"START% is the share of lent GPU-hours spent starting workers, before they served."
        ),
        caption_justify="left",
    )
    for header, right in _columns(report):
        table.add_column(header, justify="right" if right else "left", no_wrap=True)
    rows = _rows(report)
    for row in rows:
        table.add_row(
            *_cells(report, row, True),
            style="bold" if row is report.total else None,
            end_section=row is not report.total and rows[-1] is report.total and row is rows[-2],
        )
    console.print(table)
