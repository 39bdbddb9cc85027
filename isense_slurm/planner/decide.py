"""make_plan: one tick's decisions from one snapshot. Pure and deterministic.

Order of a plan: a summary line, the cancels (by job id), then one line per node in
natural name order (with its submits), then models that could not be placed, then the
(node, model) pairs held back after workers that ended before serving (backoff.py).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from isense_slurm.availability import available_at, available_until
from isense_slurm.contracts.states import WorkerState
from isense_slurm.planner.backoff import Hold, clock_s, hold_line, holds
from isense_slurm.planner.cancel import (
    cancels_blocked,
    cancels_outside_window,
    cancels_over_share,
    cancels_stuck,
    describe,
)
from isense_slurm.planner.inputs import ModelStart, Policy, Snapshot
from isense_slurm.planner.lend import Hole, fit_hole, node_block, training_hold
from isense_slurm.planner.models import ModelChooser
from isense_slurm.planner.occupancy import NodeUse, lent_gpus, node_uses, share_cap
from isense_slurm.planner.payback import payback_note, payback_refusal, pays_back
from isense_slurm.planner.plan import Action, Cancel, Plan, Submit
from isense_slurm.planner.text import clock, gpus, natural_key, seconds


def make_plan(snapshot: Snapshot, policy: Policy) -> Plan:
    uses = node_uses(snapshot)
    held = holds(snapshot.failures, snapshot.workers, policy)
    held_by_node: dict[str, dict[str, Hold]] = {}
    for h in held:
        held_by_node.setdefault(h.node, {})[h.model] = h
    cap, total = share_cap(snapshot, policy.max_lend_share)
    lent = lent_gpus(snapshot.workers, uses)
    available = available_at(list(policy.availability), snapshot.now)
    window_end = _window_end(policy, snapshot) if available else None

    lines = [_summary(snapshot, policy, total, cap, lent, available, window_end)]
    cancels, over_share = _cancels(snapshot, policy, uses, available, lent, cap)
    workers = {w.job_id: w for w in snapshot.workers}
    lines += [describe(workers[c.job_id], c) for c in cancels]
    actions: list[Action] = list(cancels)

    cancelled = {c.job_id for c in cancels}
    lent_by_model: dict[str, int] = {}
    for w in snapshot.workers:
        if w.job_id not in cancelled:
            lent_by_model[w.model] = lent_by_model.get(w.model, 0) + w.gpus
    chooser = ModelChooser(policy.models, snapshot.demand, lent_by_model)
    starts = {s.model: s for s in snapshot.starts}
    # Cancelled workers still hold their GPUs until they exit: room counts them (safe side).
    planned = lent
    node_lines: dict[str, str] = {}
    holes: list[Hole] = []
    for use in uses.values():
        hole = _hole(use, snapshot, policy, available, window_end)
        if isinstance(hole, Hole):
            holes.append(hole)
        else:
            node_lines[use.node.name] = f"not lending {use.node.name}: {hole}"

    # Longest holes first: a worker's vLLM start-up pays off best there.
    for hole in sorted(holes, key=lambda h: (-h.limit_minutes, natural_key(h.node))):
        if over_share:
            node_lines[hole.node] = f"not lending {hole.node}: cancelling workers down to the share cap this tick"
            continue
        if planned >= cap:
            node_lines[hole.node] = (
                f"not lending {hole.node}: share cap reached ({planned} of {cap} GPUs lent or planned,"
                f" max_lend_share {policy.max_lend_share:g})"
            )
            continue
        here = held_by_node.get(hole.node, {})
        blocked = [h for h in here.values() if h.blocks(snapshot.now)]
        trial = frozenset(m for m, h in here.items() if not h.blocks(snapshot.now))
        excluded = frozenset(h.model for h in blocked) | frozenset(_slow_starts(hole, policy, starts))
        submits = _fill(hole, policy, chooser, cap - planned, excluded, trial, starts)
        planned += sum(s.gpus for s in submits)
        actions += submits
        node_lines[hole.node] = _lend_line(hole, submits, cap - planned, chooser, policy, blocked, snapshot.now, starts)

    lines += [node_lines[name] for name in sorted(node_lines, key=natural_key)]
    lines += chooser.skipped_lines()
    lines += [hold_line(h, snapshot.now) for h in held]
    return Plan(tuple(actions), tuple(lines), tuple(held))


def _hole(use: NodeUse, snapshot: Snapshot, policy: Policy, available: bool, window_end: datetime | None) -> Hole | str:
    """The node's hole, or why it is not lent (node reasons before global ones)."""
    reason = node_block(use, snapshot, policy)
    if reason is None and not available:
        reason = f"{gpus(use.free)} free, but outside availability windows"
    if reason is None:
        reason = training_hold(use, snapshot)
    return reason if reason is not None else fit_hole(use, snapshot, policy, window_end)


def _slow_starts(hole: Hole, policy: Policy, starts: dict[str, ModelStart]) -> dict[str, str]:
    """The models whose measured start this hole cannot pay back, with why."""
    ratio = policy.min_serving_ratio
    return {
        m.name: payback_refusal(hole.limit_minutes, start, ratio)
        for m in policy.models
        if (start := starts.get(m.name)) is not None and not pays_back(hole.limit_minutes, start, ratio)
    }


def _lend_line(
    hole: Hole,
    submits: list[Submit],
    room: int,
    chooser: ModelChooser,
    policy: Policy,
    blocked: list[Hold],
    now: datetime,
    starts: dict[str, ModelStart],
) -> str:
    left = hole.free - sum(s.gpus for s in submits)
    held = _held_note(blocked, now)
    if not submits:
        slow = _slow_starts(hole, policy, starts)
        if slow and chooser.smallest() is not None:
            return f"not lending {hole.node}: " + "; ".join(slow[name] for name in sorted(slow, key=natural_key))
        if held and chooser.smallest() is not None:
            return f"not lending {hole.node}: {gpus(left)} free, but {held}"
        return f"not lending {hole.node}: {_unfit(left, room, chooser)}"
    counts: dict[str, int] = {}
    for s in submits:
        counts[s.model] = counts.get(s.model, 0) + 1
    workers = ", ".join(f"{n} x {model} ({gpus(chooser.gpus_of(model))})" for model, n in counts.items())
    first = submits[0]
    line = (
        f"lend {hole.node}: {workers} for {first.time_limit_minutes} min (time-min {first.time_min_minutes}):"
        f" idle {seconds(hole.idle_seconds)} s >= dwell {seconds(policy.min_idle_seconds)} s;"
        f" limit by {hole.limit_reason};"
        f" {chooser.demand_note(counts)}; "
        + "; ".join(payback_note(model, hole.limit_minutes, starts.get(model)) for model in counts)
    )
    if left:
        line += f"; {_unfit(left, room, chooser)}"
    if held:
        line += f"; {held}"
    return line


def _held_note(blocked: list[Hold], now: datetime) -> str:
    """'tiny-llama held back after 3 failed workers, until 14:05:00' (hold lines say more)."""
    parts = []
    for h in sorted(blocked, key=lambda h: natural_key(h.model)):
        if h.waiting(now):
            parts.append(f"{h.model} held back after {h.failures} failed workers, until {clock_s(h.until, now)}")
        else:
            parts.append(f"{h.model} held back while worker {h.trying} tries")
    return "; ".join(parts)


def _window_end(policy: Policy, snapshot: Snapshot) -> datetime | None:
    """When lending stops being allowed; None when always, or not within a week."""
    if not policy.availability:
        return None
    horizon = timedelta(days=8)
    end = available_until(list(policy.availability), snapshot.now, horizon)
    return None if end is None or end >= snapshot.now + horizon else end


def _cancels(
    snapshot: Snapshot, policy: Policy, uses: dict[str, NodeUse], available: bool, lent: int, cap: int
) -> tuple[list[Cancel], bool]:
    """The cancels, and whether some are for the share (then nothing is submitted)."""
    if not available:
        return cancels_outside_window(snapshot), False
    cancels: list[Cancel] = []
    for c in cancels_blocked(snapshot, uses) + cancels_stuck(snapshot, policy):
        if all(c.job_id != seen.job_id for seen in cancels):
            cancels.append(c)
    gone = {c.job_id for c in cancels}
    kept = [w for w in snapshot.workers if w.job_id not in gone]
    kept_lent = lent - sum(w.gpus for w in snapshot.workers if w.job_id in gone)
    over = cancels_over_share(kept, kept_lent, cap, policy.max_lend_share)
    return cancels + over, bool(over)


def _fill(
    hole: Hole,
    policy: Policy,
    chooser: ModelChooser,
    room: int,
    blocked: frozenset[str] = frozenset(),
    trial: frozenset[str] = frozenset(),
    starts: dict[str, ModelStart] | None = None,
) -> list[Submit]:
    """Workers for this node's free GPUs, in groups of each chosen model's size. Models in
    `blocked` are held back here; of each model in `trial`, one worker may try."""
    submits, free = [], hole.free
    time_min = min(policy.time_min_minutes, hole.limit_minutes)
    exclude = set(blocked)
    while free > 0 and room > 0 and (model := chooser.pick(hole.node, free, room, frozenset(exclude))) is not None:
        chooser.take(model)
        if model.name in trial:
            exclude.add(model.name)
        free -= model.gpus
        room -= model.gpus
        reason = (
            f"idle {seconds(hole.idle_seconds)} s >= dwell {seconds(policy.min_idle_seconds)} s;"
            f" limit by {hole.limit_reason}; {chooser.why(model)};"
            f" {payback_note(model.name, hole.limit_minutes, (starts or {}).get(model.name))}"
            + ("; one worker tries after the back-off" if model.name in trial else "")
        )
        submits.append(Submit(hole.node, model.gpus, model.name, hole.limit_minutes, time_min, reason))
    return submits


def _unfit(left: int, room: int, chooser: ModelChooser) -> str:
    smallest = chooser.smallest()
    if smallest is None:
        return f"{gpus(left)} free, but no model may be lent"
    if room < smallest and room < left:
        return f"{gpus(left)} free, but {gpus(max(room, 0))} left under the share cap; smallest model needs {smallest}"
    return f"{gpus(left)} free, but the smallest model needs {smallest}"


def _summary(
    snapshot: Snapshot, policy: Policy, total: int, cap: int, lent: int, available: bool, window_end: datetime | None
) -> str:
    counts = {state: 0 for state in WorkerState}
    for w in snapshot.workers:
        counts[WorkerState(w.state)] += w.gpus
    held = ", ".join(f"{state} {n}" for state, n in counts.items())
    unlisted = lent - sum(counts.values())
    if unlisted:
        held += f", unlisted {unlisted}"  # Slurm shows worker GPUs the worker list lacks
    if not policy.availability:
        window = "always available"
    elif available and window_end is None:
        window = "in availability windows for the next week"
    elif available and window_end is not None:
        window = f"in availability window until {clock(window_end, snapshot.now)}"
    else:
        window = "outside availability windows"
    return (
        f"pool: {gpus(total)} on {len(snapshot.nodes)} nodes; lent {lent} ({held});"
        f" cap {cap} (max_lend_share {policy.max_lend_share:g}); {window}"
    )
