"""`isense top`: `isense status` live, with a tokens/s sparkline and recent reclaims."""

NAME = "top"
HELP = "live view: status every 2 s, a tokens/s sparkline and the latest reclaims"
DESCRIPTION = """\
The `isense status` table, refreshed every --interval seconds on the terminal's
alternate screen, with a sparkline of tokens/s (in + out) over the last --minutes and
the latest reclaims (training job, node, the worker jobs it took the GPUs from, and
seconds from the training job's submit to its start). q or Ctrl-C quits.
--once prints a single frame and exits (for a pipe, a log or a test).
The ledger is only read, never written.
"""
EPILOG = """\
examples:
  isense top
  isense top -N -p inference --interval 5
  isense top --once > frame.txt
exit status: 0 ok (also on q / Ctrl-C), 1 Slurm error (--once), 2 bad flags, config or ledger."""

SLOTS = 60  # sparkline width in characters


def add_arguments(parser) -> None:
    from isense_slurm.commands.status import add_view_arguments

    add_view_arguments(parser)
    parser.add_argument(
        "--interval", type=float, default=2.0, metavar="SECONDS", help="seconds between refreshes (default 2)"
    )
    parser.add_argument(
        "--minutes", type=float, default=10.0, metavar="N", help="sparkline span in minutes (default 10)"
    )
    parser.add_argument("--reclaims", type=int, default=5, metavar="N", help="recent reclaims shown (default 5)")
    parser.add_argument("--once", action="store_true", help="print one frame and exit")


def run(args) -> int:
    import time

    from rich.console import Console

    from isense_slurm.config import load_config
    from isense_slurm.errors import UsageError
    from isense_slurm.report.status_inputs import open_ledger

    if not 0.2 <= args.interval <= 3600:
        raise UsageError(f"--interval {args.interval:g}: use 0.2 to 3600 seconds")
    if not 1 <= args.minutes <= 24 * 60:
        raise UsageError(f"--minutes {args.minutes:g}: use 1 to 1440")
    if not 0 <= args.reclaims <= 100:
        raise UsageError(f"--reclaims {args.reclaims}: use 0 to 100")
    cfg = load_config(args.config)
    from isense_slurm.commands.status import backend_for

    backend = backend_for(args, cfg)
    conn, warning = open_ledger(args.ledger, cfg.ledger.path)
    console = Console()
    try:
        if args.once:
            # Errors end the command (exit 1 or 2), as `isense status` does.
            frame = read_frame(args, cfg, backend, conn, time.time(), strict=True)
            if warning:
                import sys

                print(f"isense: warning: {warning}", file=sys.stderr)
            from isense_slurm.report.top_view import print_once

            print_once(frame, console)
            return 0
        return live(args, cfg, backend, conn, console)
    finally:
        if conn is not None:
            conn.close()


def read_frame(args, cfg, backend, conn, now: float, *, strict: bool, last=None):
    """A Frame; with strict=False a failure keeps the last good status and says why."""
    from isense_slurm.commands.status import collect
    from isense_slurm.errors import IsenseError
    from isense_slurm.meter import status_queries
    from isense_slurm.report.top_view import Frame

    step = args.minutes * 60 / SLOTS
    end = (now // step) * step  # whole slots only: the current one is still filling
    try:
        report = collect(args, cfg, backend, conn, now)
        series = status_queries.token_series(conn, end - step * SLOTS, step, SLOTS) if conn else [0] * SLOTS
        reclaims = status_queries.recent_reclaims(conn, args.reclaims) if conn and args.reclaims else []
        return Frame(report, series, step, reclaims)
    except IsenseError as err:
        if strict:
            raise
        if last is None:
            return Frame(None, [0] * SLOTS, step, [], error=str(err))
        return Frame(last.report, last.series, last.step, last.reclaims, error=str(err))


def live(args, cfg, backend, conn, console) -> int:
    import time

    from rich.live import Live

    from isense_slurm.report.status_inputs import open_ledger
    from isense_slurm.report.top_view import renderable

    # The first frame strictly: a bad -p or a Slurm that does not answer ends it here,
    # with one line, before the screen is taken; later failures stay on screen.
    frame = read_frame(args, cfg, backend, conn, time.time(), strict=True)
    try:
        with (
            keypresses() as pressed,
            Live(renderable(frame, args.interval), console=console, screen=True, auto_refresh=False) as view,
        ):
            while True:
                deadline = time.monotonic() + args.interval
                while (left := deadline - time.monotonic()) > 0:
                    if pressed(left) in ("q", "Q"):
                        return 0
                if conn is None:  # the ledger may appear once the daemon has started
                    conn, _ = open_ledger(args.ledger, cfg.ledger.path)
                frame = read_frame(args, cfg, backend, conn, time.time(), strict=False, last=frame)
                view.update(renderable(frame, args.interval), refresh=True)
    except KeyboardInterrupt:
        return 0
    finally:
        if conn is not None:
            conn.close()


class keypresses:
    """Single keys from a terminal stdin without Enter (cbreak mode), restored on exit.

    `pressed(timeout)` returns a key or None after timeout; without a terminal it only waits.
    """

    def __enter__(self):
        import sys

        self.fd: int | None = None  # None: nothing (more) to read
        self.saved = None  # (the terminal's fd, its settings): restored on exit
        if sys.stdin.isatty():
            import termios
            import tty

            self.fd = sys.stdin.fileno()
            self.saved = (self.fd, termios.tcgetattr(self.fd))
            tty.setcbreak(self.fd)
        return self.pressed

    def pressed(self, timeout: float) -> str | None:
        import os
        import select
        import time

        if self.fd is None:
            time.sleep(timeout)
            return None
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return None
        data = os.read(self.fd, 32)
        if not data:  # end of input: stop reading, keep refreshing
            self.fd = None
            return None
        return data.decode(errors="replace")[:1]

    def __exit__(self, *exc):
        if self.saved is not None:
            import termios

            fd, settings = self.saved
            termios.tcsetattr(fd, termios.TCSADRAIN, settings)
        return False
