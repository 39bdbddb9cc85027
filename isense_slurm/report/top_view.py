"""One frame of `isense top`: the status table, a tokens/s sparkline and recent reclaims."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from isense_slurm.meter.rows import ReclaimInfo
from isense_slurm.report import status_view
from isense_slurm.report.status_model import StatusReport

# Index 0 (a blank) is kept for slots with no traffic at all, so idle time shows as gaps.
BLOCKS = " ▁▂▃▄▅▆▇█"


@dataclass(frozen=True)
class Frame:
    report: StatusReport | None
    series: list[int]  # tokens per slot, oldest first
    step: float  # seconds per slot
    reclaims: list[ReclaimInfo]  # newest first
    error: str | None = None  # the last failure to read Slurm or the ledger


def sparkline(values: list[float]) -> str:
    """One character per value, scaled to the largest; zero is a blank."""
    peak = max(values, default=0)
    if peak <= 0:
        return BLOCKS[0] * len(values)
    top = len(BLOCKS) - 1
    return "".join(BLOCKS[0] if v <= 0 else BLOCKS[max(1, min(top, round(v / peak * top)))] for v in values)


def rates(frame: Frame) -> list[float]:
    return [tokens / frame.step for tokens in frame.series]


def sparkline_line(frame: Frame) -> str:
    per_second = rates(frame)
    span = len(per_second) * frame.step / 60
    last = per_second[-1] if per_second else 0.0
    peak = max(per_second, default=0.0)
    if peak <= 0:
        return f"tokens/s, last {span:g} min: no traffic"
    return (
        f"tokens/s, last {span:g} min ({frame.step:g} s slots): {sparkline(per_second)}  "
        f"last {status_view.rate_text(last)}  peak {status_view.rate_text(peak)}"
    )


def reclaim_rows(reclaims: list[ReclaimInfo]) -> list[list[str]]:
    rows = []
    for r in reclaims:
        when = r.start_time or r.created_at
        wait = r.submit_to_start
        rows.append(
            [
                datetime.fromtimestamp(when, UTC).strftime("%H:%M:%S"),
                r.training_job_id,
                r.node or "-",
                r.worker_job_id or "-",
                "-" if wait is None else f"{wait:.2f}",
            ]
        )
    return rows


RECLAIM_COLUMNS = ("TIME_UTC", "TRAINING_JOB", "NODE", "WORKER_JOBS", "SUBMIT_TO_START_S")


def reclaims_table(reclaims: list[ReclaimInfo]):
    from rich.table import Table  # rich loads only when a table is drawn (--json never draws)

    table = Table(
        box=None, header_style="bold", pad_edge=False, title="recent reclaims", title_justify="left", title_style="bold"
    )
    for name in RECLAIM_COLUMNS:
        table.add_column(name, justify="right" if name.endswith("_S") else "left", no_wrap=True)
    for row in reclaim_rows(reclaims):
        table.add_row(*row)
    if not reclaims:
        table.add_row("-", "none yet", "", "", "")
    return table


def header_line(frame: Frame, interval: float | None) -> str:
    """interval None: a single frame (--once)."""
    at = frame.report.at if frame.report else datetime.now(UTC)
    line = f"isense top  {at:%Y-%m-%d %H:%M:%S} UTC"
    return line if interval is None else f"{line}  every {interval:g} s  (q or Ctrl-C quits)"


def renderable(frame: Frame, interval: float):
    """The whole frame for rich.live: lines are cropped to the terminal, not wrapped."""
    from rich.console import Group
    from rich.text import Text

    parts = [Text(header_line(frame, interval), style="bold", no_wrap=True, overflow="crop")]
    if frame.error:
        parts.append(Text(f"error: {frame.error}", style="red", no_wrap=True, overflow="crop"))
    if frame.report is not None:
        parts.append(status_view.to_text(frame.report) if frame.report.rows else Text("no nodes"))
        parts.append(Text(status_view.summary(frame.report), style="dim", no_wrap=True, overflow="crop"))
        starts = status_view.starts_line(frame.report)
        if starts:
            parts.append(Text(starts, style="dim", no_wrap=True, overflow="crop"))
    parts.append(Text(sparkline_line(frame), no_wrap=True, overflow="crop"))
    parts.append(reclaims_table(frame.reclaims))
    return Group(*parts)


def print_once(frame: Frame, console) -> None:
    """One frame for a pipe or a log: the status table in full (wrapped, never cropped)."""
    console.print(header_line(frame, None), highlight=False)
    if frame.error:
        console.print(f"error: {frame.error}", highlight=False)
    if frame.report is not None:
        if console.is_terminal:
            status_view.print_table(frame.report, console)
        else:
            console.file.write(status_view.to_plain(frame.report))
            console.print(status_view.summary(frame.report), highlight=False, soft_wrap=True)
            starts = status_view.starts_line(frame.report)
            if starts:
                console.print(starts, highlight=False, soft_wrap=True)
    console.print(sparkline_line(frame), highlight=False, soft_wrap=True)
    console.print(reclaims_table(frame.reclaims))
