"""Rendering `isense status`: coloured columns on a terminal, plain sinfo-style columns
when piped, JSON for machines.

The table is laid out here (widths computed once) and handed to rich as one styled
Text, not as a rich Table: a Table measures every cell again and takes about 0.5 s for
1,000 rows, this takes about 10 ms.
"""

from __future__ import annotations

import json

from isense_slurm.meter.money import format_money
from isense_slurm.meter.start_queries import STEP_LABELS
from isense_slurm.periods import iso_z
from isense_slurm.report.earnings import SECONDS_PER_HOUR
from isense_slurm.report.earnings_view import decimal_text
from isense_slurm.report.status_model import Row, StatusReport

STATE_STYLES = {
    "idle": "green",
    "mixed": "yellow",
    "allocated": "yellow",
    "down": "red",
    "drain": "red",
    "fail": "red",
    "not_responding": "red",
}
WORKER_STYLES = {"serving": "green", "lent": "cyan", "draining": "magenta", "held": "red"}


def columns(report: StatusReport) -> list[tuple[str, bool]]:
    """(header, right-aligned)."""
    money = f"EARNED_TODAY({report.currency})"
    gpus = [("GPUS", True), ("TRAIN", True), ("LENT", True), ("IDLE", True)]
    traffic = [("REQ/S", True), ("TOK/S", True), ("TOKENS_TODAY", True), (money, True)]
    if report.view == "node":
        return [
            ("NODE", False),
            ("PARTITIONS", False),
            ("STATE", False),
            *gpus,
            ("MODEL", False),
            ("WORKER", False),
            *traffic,
        ]
    return [
        ("PARTITION", False),
        ("AVAIL", False),
        ("STATE", False),
        ("NODES", True),
        *gpus,
        ("MODELS", False),
        ("WORKERS", False),
        *traffic,
        ("NODELIST", False),
    ]


def cells(report: StatusReport, row: Row, thousands: bool = False) -> list[str]:
    number = (lambda n: f"{n:,}") if thousands else str
    gpus = [str(row.gpus_total), str(row.gpus_train), str(row.gpus_lent), str(row.gpus_idle)]
    t = row.last_minute
    traffic = [
        rate_text(report.rate(t.requests)),
        rate_text(report.rate(t.prompt_tokens + t.completion_tokens)),
        number(row.today.prompt_tokens + row.today.completion_tokens),
        format_money(row.today.operator_nanos, "", places=4),
    ]
    models = ",".join(row.models) or "-"
    workers = worker_text(row.worker_states())
    if report.view == "node":
        return [row.label, ",".join(row.partitions) or "-", row.state, *gpus, models, workers, *traffic]
    name = row.label + ("*" if row.is_default else "")
    avail = row.avail.lower() if row.avail else "-"
    return [name, avail, row.state, str(len(row.nodes)), *gpus, models, workers, *traffic, row.nodelist]


def rate_text(value: float) -> str:
    """'0', '0.4', '12.5', '1234'."""
    if value == 0:
        return "0"
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def worker_text(states: dict[str, int]) -> str:
    """'-', 'serving', 'serving:2,lent:1'."""
    if not states:
        return "-"
    if len(states) == 1 and next(iter(states.values())) == 1:
        return next(iter(states))
    return ",".join(f"{state}:{count}" for state, count in states.items())


def _layout(header: list[tuple[str, bool]], lines: list[list[str]]) -> list[list[str]]:
    """Cells padded to their column's width; the last column is not padded."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    last = len(header) - 1
    out = []
    for line in lines:
        out.append(
            [
                cell if i == last and not right else (cell.rjust(w) if right else cell.ljust(w))
                for i, (cell, w, (_, right)) in enumerate(zip(line, widths, header))
            ]
        )
    return out


def to_plain(report: StatusReport) -> str:
    """sinfo-style: header and rows, two spaces between columns, no colour, no totals."""
    header = columns(report)
    lines = [[h for h, _ in header]] + [cells(report, row) for row in report.rows]
    return "".join("  ".join(line).rstrip() + "\n" for line in _layout(header, lines))


def to_text(report: StatusReport):
    """The table as one rich Text: bold header, coloured states and workers."""
    from rich.text import Text  # rich loads only when a table is drawn (--json never draws)

    header = columns(report)
    names = [h for h, _ in header]
    state_at = names.index("STATE")
    worker_at = names.index("WORKER" if report.view == "node" else "WORKERS")
    lines = [[h for h, _ in header]] + [cells(report, row, thousands=True) for row in report.rows]
    text = Text(no_wrap=True, overflow="crop")
    for n, line in enumerate(_layout(header, lines)):
        if n == 0:
            text.append("  ".join(line).rstrip() + "\n", style="bold")
            continue
        for i, cell in enumerate(line):
            if i:
                text.append("  ")
            style = None
            if i == state_at:
                style = _state_style(cell)
            elif i == worker_at:
                style = WORKER_STYLES.get(cell.strip().split(":", 1)[0])
            text.append(cell, style=style)
        text.append("\n")
    return text


def _state_style(cell: str) -> str | None:
    words = cell.strip().split("+")
    for word in reversed(words):  # a flag (drain) says more than the base state
        if word in STATE_STYLES:
            return STATE_STYLES[word]
    return None


def summary(report: StatusReport) -> str:
    """The totals, as a line under the table."""
    t = report.total
    states = worker_text(t.worker_states())
    rate = report.rate
    lm = t.last_minute
    return (
        f"{len(t.nodes)} nodes, {t.gpus_total} GPUs: {t.gpus_train} training, {t.gpus_lent} lent, "
        f"{t.gpus_idle} idle; workers {states}; {rate_text(rate(lm.requests))} req/s, "
        f"{rate_text(rate(lm.prompt_tokens + lm.completion_tokens))} tok/s over {report.window_seconds:g} s; "
        f"today (UTC) {t.today.prompt_tokens + t.today.completion_tokens:,} tokens, "
        f"{format_money(t.today.operator_nanos, report.currency, places=4)} earned "
        f"(gross {format_money(t.today.gross_nanos, report.currency, places=4)})"
        f"{start_text(report)}"
    )


def starts_line(report: StatusReport) -> str | None:
    """Where today's worker starts went, as medians of seconds after the job's start:
    'starts today: 12, median seconds after the job start: worker 0.4, vllm 0.5, healthy
    33.8, probed 33.9, serving 34.0 (vLLM: weights 0.01, engine 0.05)'."""
    if not report.starts_today:
        return None
    steps = report.start_steps

    def shown(name: str) -> str:
        value = steps.get(name)
        return "-" if value is None else f"{value:.2f}" if value < 10 else f"{value:.1f}"

    labels = ", ".join(f"{label} {shown(label)}" for label in STEP_LABELS)
    return (
        f"starts today: {report.starts_today}, median seconds after the job start: {labels} "
        f"(vLLM: weights {shown('weights_s')}, engine {shown('engine_s')})"
    )


def start_text(report: StatusReport) -> str:
    """'; 12.5 GPU-h lent, 8.3 % of it starting': what starts cost today's lends."""
    share = report.start_share_today
    if share is None:
        return ""
    return f"; {report.lent_today[0] / SECONDS_PER_HOUR:.1f} GPU-h lent, {share * 100:.1f} % of it starting"


def held_lines(report: StatusReport) -> list[str]:
    """One line per (node, model) the controller holds back, and why."""
    out = []
    for h in report.held_back:
        text = (
            h.text or f"{h.failures} workers ended before serving in a row (last: job {h.last_job_id}, {h.last_reason})"
        )
        out.append(f"held back: {h.model} on {h.node}: {text}")
    return out


def print_table(report: StatusReport, console) -> None:
    if report.rows:
        console.print(to_text(report), end="", soft_wrap=True, highlight=False)
    else:
        console.print("no nodes")
    console.print(summary(report), style="dim", highlight=False, soft_wrap=True)
    starts = starts_line(report)
    if starts:
        console.print(starts, style="dim", highlight=False, soft_wrap=True)
    for line in held_lines(report):
        console.print(line, style="red", highlight=False, soft_wrap=True)


def row_dict(report: StatusReport, row: Row) -> dict:
    lm, today = row.last_minute, row.today
    out = {
        "partitions": list(row.partitions),
        "state": row.state,
        "nodes": row.nodelist,
        "node_count": len(row.nodes),
        "gpus": {"total": row.gpus_total, "train": row.gpus_train, "lent": row.gpus_lent, "idle": row.gpus_idle},
        "workers": [{"job_id": w.job_id, "model": w.model, "state": w.state, "gpus": w.gpus} for w in row.workers],
        "last_minute": {
            "requests": lm.requests,
            "prompt_tokens": lm.prompt_tokens,
            "completion_tokens": lm.completion_tokens,
            "requests_per_s": round(report.rate(lm.requests), 3),
            "tokens_per_s": round(report.rate(lm.prompt_tokens + lm.completion_tokens), 3),
        },
        "today": {
            "requests": today.requests,
            "prompt_tokens": today.prompt_tokens,
            "completion_tokens": today.completion_tokens,
            "cached_tokens": today.cached_tokens,
            "gross": decimal_text(today.gross_nanos),
            "operator_share": decimal_text(today.operator_nanos),
        },
    }
    if report.view == "node":
        return {"node": row.label, **out}
    return {"partition": row.label, "default": row.is_default, "avail": row.avail.lower() if row.avail else None, **out}


def to_json(report: StatusReport) -> str:
    total = row_dict(report, report.total)
    for key in ("partition", "node", "default", "avail", "partitions", "state"):
        total.pop(key, None)
    return json.dumps(
        {
            "time": iso_z(report.at),
            "view": report.view,
            "partition_filter": report.partition,
            "lend_partition": report.lend_partition,
            "currency": report.currency,
            "window_seconds": report.window_seconds,
            "today_since": iso_z(report.day_start),
            "lent_gpu_hours_today": round(report.lent_today[0] / SECONDS_PER_HOUR, 6),
            "start_gpu_hours_today": round(report.lent_today[1] / SECONDS_PER_HOUR, 6),
            "start_share_today": None if report.start_share_today is None else round(report.start_share_today, 4),
            "starts_today": report.starts_today,
            "start_median_seconds": {
                name: None if value is None else round(value, 3) for name, value in report.start_steps.items()
            },
            "rows": [row_dict(report, row) for row in report.rows],
            "total": total,
            "held_back": [
                {
                    "node": h.node,
                    "model": h.model,
                    "failures": h.failures,
                    "state": h.state,
                    "until": iso_z(h.until),
                    "last_job_id": h.last_job_id,
                    "last_reason": h.last_reason,
                    "text": h.text,
                }
                for h in report.held_back
            ],
        },
        indent=2,
    )
