"""What every bench in bench/ shares: figures over successful samples only, and a last
line that cannot lie.

- `percentile` / `summary`: nearest-rank percentiles of the samples handed in. Callers
  hand in successes only; a failed request or operation is counted, never timed.
- `finish(figures, errors, failures)`: prints the figures as the last line of output
  (JSON, with `errors` and the first failures in it) and returns the exit status: 0 only
  when errors is 0.
- `guarded(bench, main)`: runs a bench's main; an exception (or sys.exit with a
  message) still ends in a JSON last line with errors >= 1 and a non-zero status.

    sys.exit(guarded("export", main))
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import traceback
from collections.abc import Callable, Iterable


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank q-quantile (0 < q <= 1): the smallest sample with at least q of the
    samples at or below it. ValueError when there are none."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no samples")
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def summary(
    values: Iterable[float], *, quantiles: Iterable[float] = (0.5, 0.95), digits: int = 3, scale: float = 1.0
) -> dict:
    """{"n", "p50", "p95", ..., "max", "mean"} of the samples times `scale`, rounded to
    `digits`; just {"n": 0} when there are none (no figure made up from nothing)."""
    ordered = sorted(v * scale for v in values)
    if not ordered:
        return {"n": 0}
    out: dict = {"n": len(ordered)}
    for q in quantiles:
        out[f"p{round(q * 100, 3):g}"] = round(percentile(ordered, q), digits)
    out["max"] = round(ordered[-1], digits)
    out["mean"] = round(statistics.fmean(ordered), digits)
    return out


def finish(figures: dict, errors: int, failures: list[str] | None = None) -> int:
    """Print `figures` plus `errors` as the last line (JSON); the exit status to return.
    `failures` (what went wrong, in words) go to stderr, the first five into the JSON."""
    if errors < 0:
        raise ValueError(f"errors must be >= 0, got {errors}")
    if failures is not None:
        for failure in failures:
            print(f"FAILED: {failure}", file=sys.stderr)
        sys.stderr.flush()
        figures = {**figures, "failures": failures[:5]}
    print(json.dumps({**figures, "errors": errors}), flush=True)
    return 1 if errors else 0


def guarded(bench: str, main: Callable[[], int | None]) -> int:
    """main()'s status; if it raises instead, the traceback on stderr, then a JSON last
    line {"bench", "errors": 1, "error"} and a non-zero status. sys.exit(0) and --help
    pass through untouched."""
    try:
        return main() or 0
    except SystemExit as stop:
        if stop.code in (0, None):
            raise
        code, error = (stop.code, f"exit {stop.code}") if isinstance(stop.code, int) else (1, str(stop.code))
    except BaseException as err:  # noqa: BLE001 - reported in the last line, never swallowed
        traceback.print_exc()
        code = 130 if isinstance(err, KeyboardInterrupt) else 1
        error = f"{type(err).__name__}: {err}"
    sys.stderr.flush()
    print(f"{bench}: failed: {error}", file=sys.stderr, flush=True)
    finish({"bench": bench, "error": error[:500]}, 1)
    return code
