"""`isense export`: one closed period of requests to CSV or JSON Lines, for cron."""

NAME = "export"
HELP = "export a closed period (UTC) of requests as CSV or JSON Lines, with a checksum"
DESCRIPTION = """\
Writes DIR/isense-requests-PERIOD.FORMAT, one line per request (id, time, client key
name, model, node, job, status, tokens, gross and operator share as exact decimal
strings), sorted so that exporting again gives the same bytes, and beside it
FILE.sha256 in `sha256sum` format. Both are written to a temp file, fsynced and renamed.
Each (period, format) is recorded once in the ledger's exports table: a re-run checks
the file against it and prints "already exported"; --force writes it again.

Periods are UTC: yesterday, YYYY-MM-DD, YYYY-Www (ISO week, Monday start) or YYYY-MM.
A period that has not ended yet is refused. Totals per period: `isense earnings`.
"""
EPILOG = """\
late rows: every run compares each recorded export with the ledger; a period that got
rows after its export is named on stderr and the run exits 1 (re-export it with --force).
exit status: 0 exported or already exported, 1 late rows or an altered/missing exported
file, 2 bad flags, period not closed, missing or unwritable --out, missing or foreign ledger.
example (crontab, 00:15 UTC): 15 0 * * * isense export --period yesterday --format csv --out /srv/exports"""

PROGRESS_MIN_ROWS = 20_000  # below this an export takes well under a second


def add_arguments(parser) -> None:
    parser.add_argument(
        "--period", required=True, metavar="PERIOD", help="yesterday | YYYY-MM-DD | YYYY-Www | YYYY-MM (UTC)"
    )
    parser.add_argument("--format", required=True, metavar="csv|jsonl", help="file format")
    parser.add_argument("--out", required=True, metavar="DIR", help="existing, writable folder for the files")
    parser.add_argument("--force", action="store_true", help="write the file again even if already exported")
    parser.add_argument("--ledger", metavar="PATH", help="ledger file (default: [ledger] path of the config)")


def run(args) -> int:
    import sys

    from isense_slurm.meter.exports import run_export

    ledger_path = args.ledger
    if not ledger_path:
        from isense_slurm.config import load_config

        ledger_path = load_config(args.config).ledger.path
    with _progress_bar() as progress:
        result = run_export(ledger_path, args.period, args.format, args.out, args.force, progress=progress)
    t = result.totals
    if result.action == "already exported":
        print(
            f"already exported {result.period} ({result.format}): {result.path} "
            f"({result.rows} requests, sha256 {result.sha256[:16]}... verified)"
        )
    elif result.action != "late":
        print(
            f"{result.action} {result.period} ({result.format}): {result.path}: {result.rows} requests, "
            f"{t.prompt_tokens} tokens in, {t.completion_tokens} out, gross {_money(t.gross_nanos)}, "
            f"operator {_money(t.operator_nanos)}; sha256 {result.sha256[:16]}..."
        )
        if result.previous_sha256:
            print(
                f"isense: note: the file changed (was sha256 {result.previous_sha256[:16]}...): "
                "tell whoever took the old one",
                file=sys.stderr,
            )
    for late in result.late:
        print(f"isense: LATE ROWS: {late.message()}", file=sys.stderr)
    return 1 if result.late else 0


def _money(nanos: int) -> str:
    from isense_slurm.meter.export_files import money_text

    return money_text(nanos)


class _progress_bar:
    """A rich progress bar on stderr, only on a terminal and only for long exports."""

    def __enter__(self):
        import sys

        self._bar = None
        if not sys.stderr.isatty():
            return None
        return self._update

    def _update(self, done: int, total: int) -> None:
        if self._bar is None:
            if total < PROGRESS_MIN_ROWS:
                return
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

            self._bar = Progress(
                "exporting",
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task("export", total=total)
        self._bar.update(self._task, completed=done)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()
