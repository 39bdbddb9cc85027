"""Which model a new worker serves: configured weights, shifted by what clients wait for.

Each model's score is weight x (1 + waiting), waiting being the requests queued at the
gateway plus the 429s since the last tick. With equal demand (none, or the same) the
lent GPUs split by weight; a model clients wait for pulls new workers toward it. The
next worker goes to the model with the fewest lent GPUs per point of score that fits
the free group and the room left under the share. Ties go to the higher score, then
to the larger model (whole free nodes suit it; small models fill the gaps), then by name.
Running workers are never moved: demand only steers new workers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from isense_slurm.planner.inputs import Demand, ModelSpec
from isense_slurm.planner.text import NaturalKey, gpus, natural_key


@dataclass
class _Skip:
    largest_group: int = 0
    where: str = ""
    room_limited: bool = False


@dataclass
class ModelChooser:
    models: tuple[ModelSpec, ...]
    demand: tuple[Demand, ...]
    lent_by_model: dict[str, int]  # GPUs held by live workers of each model
    placed: set[str] = field(default_factory=set)
    skipped: dict[str, _Skip] = field(default_factory=dict)

    def __post_init__(self) -> None:
        by_model = {d.model: d for d in self.demand}
        self.waiting = {m.name: by_model[m.name].waiting if m.name in by_model else 0 for m in self.models}
        self.score = {m.name: m.weight * (1 + self.waiting[m.name]) for m in self.models}
        for m in self.models:
            self.lent_by_model.setdefault(m.name, 0)
        self.ranked_models = [m for m in self.models if self.score[m.name] > 0]

    def _priority(self, m: ModelSpec) -> tuple[float, float, int, NaturalKey]:
        return (self.lent_by_model[m.name] / self.score[m.name], -self.score[m.name], -m.gpus, natural_key(m.name))

    def pick(self, node: str, free: int, room: int, exclude: frozenset[str] = frozenset()) -> ModelSpec | None:
        """The model for a worker on `free` GPUs of `node` with `room` GPUs left under the
        share; models in `exclude` are held back on this node."""
        ranked = sorted(self.ranked_models, key=self._priority)
        for m in ranked:
            if m.name in exclude:
                continue
            if m.gpus <= min(free, room):
                return m
            # Only a model that would have been chosen is worth a "skipped" line.
            skip = self.skipped.setdefault(m.name, _Skip())
            if m.gpus > room and m.gpus <= free:
                skip.room_limited = True
            if free > skip.largest_group:
                skip.largest_group, skip.where = free, node
        return None

    def take(self, m: ModelSpec) -> None:
        self.lent_by_model[m.name] += m.gpus
        self.placed.add(m.name)

    def gpus_of(self, name: str) -> int:
        return next(m.gpus for m in self.models if m.name == name)

    def demand_note(self, names: Iterable[str]) -> str:
        """Why these models: weight, waiting requests and GPUs they hold after this choice."""
        parts = []
        for name in names:
            weight = next(m.weight for m in self.models if m.name == name)
            text = f"{name}: weight {weight:g}"
            if self.waiting[name]:
                text += f", {self.waiting[name]} waiting"
            parts.append(f"{text}, {gpus(self.lent_by_model[name])} lent")
        return "; ".join(parts)

    def smallest(self) -> int | None:
        return min((m.gpus for m in self.ranked_models), default=None)

    def why(self, m: ModelSpec) -> str:
        """Short account of the choice for the submit line."""
        text = f"{m.name} held {gpus(self.lent_by_model[m.name] - m.gpus)}, weight {m.weight:g}"
        if self.waiting[m.name]:
            text += f", {self.waiting[m.name]} requests waiting"
        return text

    def skipped_lines(self) -> list[str]:
        lines = []
        for m in sorted(self.models, key=lambda m: natural_key(m.name)):
            skip = self.skipped.get(m.name)
            if skip is None or m.name in self.placed:
                continue
            if skip.room_limited:
                lines.append(f"model {m.name} skipped: needs {gpus(m.gpus)}, more than the room left under the share")
            else:
                lines.append(
                    f"model {m.name} skipped: needs {gpus(m.gpus)} on one node;"
                    f" largest free group was {gpus(skip.largest_group)} ({skip.where})"
                )
        for m in sorted(self.models, key=lambda m: natural_key(m.name)):
            if self.score[m.name] <= 0:
                lines.append(f"model {m.name} not lent: weight {m.weight:g}")
        return lines
