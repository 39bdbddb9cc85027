"""The break-even rule: a worker earns only after its start, so a hole too short for a
model's measured start is not lent to that model.

A model's start is what the ledger measured: the median seconds from a worker job's
start to its registration at the gateway over its latest serving runs (the controller
fills Snapshot.starts). A lend of L seconds (the fitted time limit; the hole may end
sooner, never later) with a start of S seconds serves at most L - S seconds. It pays
back its start when L - S >= min_serving_ratio x S, i.e. L >= (1 + ratio) x S: with the
default ratio 1, at most half of a lend goes to starting. A model not measured yet is
lent (its first workers measure it).
"""

from __future__ import annotations

from isense_slurm.planner.inputs import ModelStart
from isense_slurm.planner.text import seconds


def pays_back(limit_minutes: int, start: ModelStart | None, ratio: float) -> bool:
    return start is None or limit_minutes * 60 >= (1 + ratio) * start.seconds


def _measured(start: ModelStart) -> str:
    runs = "1 start" if start.count == 1 else f"{start.count} starts"
    return f"{start.model} starts in {seconds(start.seconds)} s (median of {runs})"


def payback_note(model: str, limit_minutes: int, start: ModelStart | None) -> str:
    """How a lent worker's time splits, for its explanation line."""
    if start is None:
        return f"{model}'s start not measured yet"
    serving = limit_minutes * 60 - start.seconds
    return f"{_measured(start)}, so up to {seconds(serving)} s of the {limit_minutes} min serve"


def payback_refusal(limit_minutes: int, start: ModelStart, ratio: float) -> str:
    """Why a model is not lent in this hole (only for a start that does not pay back)."""
    serving = max(0.0, limit_minutes * 60 - start.seconds)
    return (
        f"{_measured(start)}: a {limit_minutes} min lend would serve {seconds(serving)} s"
        f" < {ratio:g} x its start (break-even)"
    )
