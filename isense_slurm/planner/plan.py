"""What the planner decides: actions for the controller and one line per decision."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # backoff imports nothing of plan; the annotation only
    from isense_slurm.planner.backoff import Hold


@dataclass(frozen=True)
class Submit:
    """Submit one worker to `node` (sbatch -w node --gres=gpu:gpus)."""

    node: str
    gpus: int
    model: str
    time_limit_minutes: int
    time_min_minutes: int  # sbatch --time-min
    reason: str


@dataclass(frozen=True)
class Cancel:
    job_id: str
    reason: str


Action = Submit | Cancel


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...] = ()
    explanations: tuple[str, ...] = ()  # one human line per decision, in a stable order
    holds: tuple[Hold, ...] = ()  # (node, model) pairs held back after failed workers

    @property
    def submits(self) -> tuple[Submit, ...]:
        return tuple(a for a in self.actions if isinstance(a, Submit))

    @property
    def cancels(self) -> tuple[Cancel, ...]:
        return tuple(a for a in self.actions if isinstance(a, Cancel))

    def text(self) -> str:
        return "\n".join(self.explanations)
