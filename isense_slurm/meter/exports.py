"""Exports of closed periods, one line per request, and the exports table that keeps
them honest.

run_export() is the one entry point (the `isense export` command and the daemon's
scheduled exports both call it). Its guarantees:

- Only closed periods: a period that has not ended (UTC) is refused (UsageError).
- Deterministic: rows sorted by (ts, id), formatted without floats, so exporting the
  same rows again gives the same bytes.
- Atomic: a temp file in the export folder, fsync, rename; then FILE.sha256 (sha256sum
  format) the same way; then one entry in the exports table per (period, format).
- Idempotent: a re-run finds the entry, checks the file against its recorded sha256
  and writes nothing ("already exported"). force=True writes the file again and
  updates that same entry (never a second one).
- Late rows: request rows are insert-only, so an exported period whose row count in
  the ledger no longer equals the entry's got rows after it was exported. Every run
  checks every entry and reports such periods in ExportResult.late (the command exits
  1 and names them); `--force` on that period writes a new file that includes them.
- The read is one snapshot (a read transaction), so the file and its recorded totals
  agree even while the gateway keeps writing; the write lock is only taken for the
  one-row bookkeeping at the end, never while the file is written.
"""

import json
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from isense_slurm.errors import IsenseError, UsageError
from isense_slurm.meter import export_files
from isense_slurm.meter.connection import transaction
from isense_slurm.meter.ledger import Ledger
from isense_slurm.meter.rows import RequestTotals
from isense_slurm.periods import Period, iso_z, parse_export_period

PROGRESS_EVERY = 5_000
_SUMS = (
    "COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), "
    "COALESCE(SUM(cached_tokens), 0), COALESCE(SUM(gross_nanos), 0), COALESCE(SUM(operator_nanos), 0)"
)
# Key NAMES only: the hash never leaves the api_keys table.
_ROWS = (
    "SELECT r.id, r.ts, r.key_id, k.name, r.model, r.node, r.job_id, r.status, r.prompt_tokens, "
    "r.completion_tokens, r.cached_tokens, r.currency, r.gross_nanos, r.operator_nanos "
    "FROM requests r LEFT JOIN api_keys k ON k.id = r.key_id "
    "WHERE r.ts >= ? AND r.ts < ? ORDER BY r.ts, r.id"
)


@dataclass(frozen=True)
class ExportEntry:
    period: str
    format: str
    path: str
    sha256: str
    rows: int
    totals: RequestTotals
    created_at: float  # when the recorded file was written


@dataclass(frozen=True)
class LatePeriod:
    """An exported period whose ledger rows changed after its export."""

    period: str
    format: str
    path: str
    exported: RequestTotals
    current: RequestTotals

    def message(self) -> str:
        added = self.current.requests - self.exported.requests
        if added > 0:
            what = f"{added} row{'s' * (added != 1)} arrived after the export"
        else:
            what = f"{-added} row{'s' * (added != -1)} gone from the ledger"
        return (
            f"period {self.period} ({self.format}) was exported with {self.exported.requests} requests "
            f"(gross {export_files.money_text(self.exported.gross_nanos)}) to {self.path}, but the ledger now "
            f"holds {self.current.requests} (gross {export_files.money_text(self.current.gross_nanos)}): {what}; "
            f"`isense export --period {self.period} --format {self.format} --out DIR --force` writes it again"
        )


@dataclass(frozen=True)
class ExportResult:
    period: str
    format: str
    path: Path
    sha256: str
    rows: int
    totals: RequestTotals
    action: str  # "written" | "rewritten" | "already exported" | "late" (not written: see late)
    late: list[LatePeriod] = field(default_factory=list)
    previous_sha256: str | None = None  # set when a forced rewrite changed the file

    @property
    def checksum_path(self) -> Path:
        return self.path.with_name(self.path.name + ".sha256")


def run_export(
    ledger_path: str | Path,
    period: str,
    fmt: str,
    out_dir: str | Path,
    force: bool = False,
    *,
    now: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ExportResult:
    """Export one closed period as CSV or JSON Lines into out_dir; see the module doc.

    UsageError (exit 2) for bad input, before the ledger is opened; IsenseError (exit 1)
    when a recorded export's file is missing or altered. progress(done, total) is
    called every few thousand rows.
    """
    moment = datetime.now(UTC) if now is None else datetime.fromtimestamp(now, UTC)
    if fmt not in export_files.FORMATS:
        raise UsageError(f"--format {fmt!r}: use one of {', '.join(export_files.FORMATS)}")
    span = parse_export_period(period, moment)
    if span.end > moment:
        raise UsageError(
            f"--period {span.label}: not closed yet (it ends {iso_z(span.end)}); "
            "only periods that have ended (UTC) are exported"
        )
    folder = export_files.check_out_dir(out_dir)
    with Ledger.open(ledger_path, create=False) as ledger:
        conn = ledger.db.conn
        entry = find_entry(conn, span.label, fmt)
        late = late_periods(conn, moment)
        this_late = [item for item in late if (item.period, item.format) == (span.label, fmt)]
        if entry is not None and not force:
            if this_late:
                return _from_entry(entry, "late", late)
            _verify(entry)
            return _from_entry(entry, "already exported", late)
        target = Path(os.path.abspath(folder)) / export_files.file_name(span.label, fmt)
        sha256, totals = _write(conn, span, fmt, target, force, progress)
        export_files.write_text_atomic(
            target.with_name(target.name + ".sha256"), export_files.checksum_line(sha256, target)
        )
        _record(conn, span.label, fmt, target, sha256, totals)
    late = [item for item in late if item not in this_late]  # the new file includes them
    changed = entry.sha256 if entry is not None and entry.sha256 != sha256 else None
    action = "written" if entry is None else "rewritten"
    return ExportResult(span.label, fmt, target, sha256, totals.requests, totals, action, late, changed)


def find_entry(conn: sqlite3.Connection, period: str, fmt: str) -> ExportEntry | None:
    row = conn.execute(
        "SELECT period, format, path, sha256, rows, totals, created_at FROM exports WHERE period = ? AND format = ?",
        [period, fmt],
    ).fetchone()
    return _entry(row) if row else None


def entries(conn: sqlite3.Connection) -> list[ExportEntry]:
    rows = conn.execute(
        "SELECT period, format, path, sha256, rows, totals, created_at FROM exports ORDER BY period, format"
    ).fetchall()
    return [_entry(row) for row in rows]


def late_periods(conn: sqlite3.Connection, moment: datetime) -> list[LatePeriod]:
    """Exported periods whose request count in the ledger differs from their entry's.

    Request rows are only ever inserted (never updated or deleted), so a count check,
    which the ts index answers without touching the table, finds every late row.
    """
    late: list[LatePeriod] = []
    counts: dict[str, int] = {}
    for entry in entries(conn):
        span = parse_export_period(entry.period, moment)
        if entry.period not in counts:
            counts[entry.period] = conn.execute(
                "SELECT COUNT(*) FROM requests WHERE ts >= ? AND ts < ?", [span.start_ts, span.end_ts]
            ).fetchone()[0]
        if counts[entry.period] != entry.rows:
            current = totals_for(conn, span)
            late.append(LatePeriod(entry.period, entry.format, entry.path, entry.totals, current))
    return late


def totals_for(conn: sqlite3.Connection, span: Period) -> RequestTotals:
    row = conn.execute(f"SELECT {_SUMS} FROM requests WHERE ts >= ? AND ts < ?", [span.start_ts, span.end_ts])
    return RequestTotals(*row.fetchone())


def _write(
    conn: sqlite3.Connection,
    span: Period,
    fmt: str,
    target: Path,
    force: bool,
    progress: Callable[[int, int], None] | None,
) -> tuple[str, RequestTotals]:
    """Write the period's rows to `target` from one read snapshot; (sha256, totals of the file)."""
    conn.execute("BEGIN")  # deferred: a read snapshot, no lock that would block the writer
    try:
        expected = totals_for(conn, span)
        sums = [0, 0, 0, 0, 0, 0]
        with export_files.AtomicFile(target) as out:
            writer = export_files.RecordWriter(out.file, fmt)
            for row in conn.execute(_ROWS, [span.start_ts, span.end_ts]):
                writer.write(export_files.record(row))
                sums[0] += 1
                sums[1] += row[8]
                sums[2] += row[9]
                sums[3] += row[10]
                sums[4] += row[12]
                sums[5] += row[13]
                if progress is not None and sums[0] % PROGRESS_EVERY == 0:
                    progress(sums[0], expected.requests)
            totals = RequestTotals(*sums)
            if totals != expected:  # one snapshot: cannot differ unless SQLite lies
                raise IsenseError(f"export of {span.label}: rows sum to {totals}, the ledger says {expected}")
            sha256 = writer.sha256
            existing = export_files.file_sha256(target)
            if existing is not None and existing != sha256 and not force:
                raise UsageError(
                    f"{target}: exists with other contents and is not a recorded export of "
                    f"{span.label} ({fmt}); move it away, or use --force to replace it"
                )
            out.commit()
    finally:
        conn.execute("COMMIT")
    if progress is not None:
        progress(totals.requests, totals.requests)
    return sha256, totals


def _record(conn: sqlite3.Connection, period: str, fmt: str, target: Path, sha256: str, totals: RequestTotals) -> None:
    with transaction(conn):
        conn.execute(
            "INSERT INTO exports(period, format, path, sha256, rows, totals, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(period, format) DO UPDATE SET "
            "path = excluded.path, sha256 = excluded.sha256, rows = excluded.rows, "
            "totals = excluded.totals, created_at = excluded.created_at",
            [
                period,
                fmt,
                str(target),
                sha256,
                totals.requests,
                json.dumps(asdict(totals), sort_keys=True),
                time.time(),
            ],
        )


def _verify(entry: ExportEntry) -> None:
    actual = export_files.file_sha256(Path(entry.path))
    if actual is None:
        raise IsenseError(
            f"{entry.path}: the export of {entry.period} ({entry.format}) is missing; `--force` writes it again"
        )
    if actual != entry.sha256:
        raise IsenseError(
            f"{entry.path}: changed since it was exported (sha256 {actual[:16]}..., recorded "
            f"{entry.sha256[:16]}...); `--force` writes it again from the ledger"
        )


def _entry(row: Sequence[Any]) -> ExportEntry:
    period, fmt, path, sha256, rows, totals, created_at = row
    return ExportEntry(period, fmt, path, sha256, rows, RequestTotals(**json.loads(totals)), created_at)


def _from_entry(entry: ExportEntry, action: str, late: list[LatePeriod]) -> ExportResult:
    return ExportResult(
        entry.period, entry.format, Path(entry.path), entry.sha256, entry.rows, entry.totals, action, late
    )
