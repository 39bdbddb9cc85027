"""The pure planner: a snapshot of the pool in, a plan out.

No I/O, no clock reads, no subprocess, no Slurm/HTTP/SQLite imports: the controller
observes, calls make_plan(snapshot, policy), acts on plan.actions and logs (or, with
--dry-run, prints) plan.explanations. Same snapshot and policy, same plan.

Rules, in the order a node is judged (each refusal is one "not lending NODE: why" line):
  node lendable, in the lend partition, has free GPUs (pending workers pinned to it
  hold theirs), idle >= dwell, not in an active reservation; inside an availability
  window; no eligible pending training job without a forecast that could land there
  (it would start at the next pass and only preempt a starting worker); the fitted
  limit min(max_job_minutes, forecast starts, reservation starts, window end, each
  less a margin) >= min_window_minutes; room under max_lend_share of all pool GPUs,
  counting pending, running and draining workers. Holes are filled longest first; a
  model whose measured start the limit cannot pay back is not lent there (payback.py).
Cancels: every non-draining worker outside the windows; pending workers whose node
training has filled (REQUEUE'd workers); pending workers stuck on a reason Slurm will
not clear; youngest workers (pending first) while over the share, with no new
submits in that tick.
No crash loops (backoff.py): a (node, model) whose workers keep ending before they serve
is held back, with an exponential back-off, and then tried with one worker.
"""

from isense_slurm.contracts.states import WorkerState
from isense_slurm.planner.backoff import Hold, WorkerEnd, note_end, note_served
from isense_slurm.planner.decide import make_plan
from isense_slurm.planner.inputs import (
    Demand,
    Failures,
    ModelSpec,
    ModelStart,
    PendingTraining,
    Policy,
    PoolNode,
    ReservedWindow,
    Snapshot,
    Worker,
)
from isense_slurm.planner.plan import Action, Cancel, Plan, Submit

__all__ = [
    "Action",
    "Cancel",
    "Demand",
    "Failures",
    "Hold",
    "ModelSpec",
    "ModelStart",
    "PendingTraining",
    "Plan",
    "Policy",
    "PoolNode",
    "ReservedWindow",
    "Snapshot",
    "Submit",
    "Worker",
    "WorkerEnd",
    "WorkerState",
    "make_plan",
    "note_end",
    "note_served",
]
