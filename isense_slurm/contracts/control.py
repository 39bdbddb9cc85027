"""The worker-control protocol: what a worker sends the gateway, defined once.

POST {gateway}/internal/workers/<action>, each with
`Authorization: Bearer worker_token(secret, job_id)`:
  register   {"job_id", "node", "gpus", "model", "url"[, "start"]} -> 200; 401 bad token; 404 unknown model
             "start": how the worker's start went (START_PHASES), for the ledger
  heartbeat  {"job_id"} -> 200; 404 the gateway does not know the worker (register again)
  deregister {"job_id", "reason"} -> 200; no new request goes to it
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum

CONTROL_PATH = "/internal/workers"


class ControlAction(StrEnum):
    REGISTER = "register"
    HEARTBEAT = "heartbeat"
    DEREGISTER = "deregister"


def action_path(action: ControlAction) -> str:
    return f"{CONTROL_PATH}/{action.value}"


# The fields each action must carry as non-empty strings (the gateway checks them).
REQUIRED_FIELDS = {
    ControlAction.REGISTER: ("job_id", "model", "url"),
    ControlAction.HEARTBEAT: ("job_id",),
    ControlAction.DEREGISTER: ("job_id",),
}


# A worker's start, as it reports it on registering: wall times (unix seconds) of its
# steps, and vLLM's own durations of two of them (seconds, from vLLM's log; absent when
# that vLLM does not print them). Job start and registration the ledger has already.
START_PHASES = ("worker_up", "vllm_spawned", "healthy", "probed", "weights_s", "engine_s")


def check_start(value: object) -> dict[str, float] | str:
    """A register payload's "start", checked: the known phases as floats, or what is
    wrong with it (one line naming the field). Unknown keys are dropped (newer workers)."""
    if not isinstance(value, dict):
        return "'start' must be an object"
    out: dict[str, float] = {}
    for name in START_PHASES:
        if name not in value:
            continue
        number = value[name]
        if isinstance(number, bool) or not isinstance(number, int | float) or not 0 <= number < 1e12:
            return f"'start.{name}' must be a non-negative number"
        out[name] = float(number)
    return out


class LeaveReason(StrEnum):
    """Why a worker deregisters."""

    SIGTERM = "sigterm"  # Slurm (or make way) asked it to go: it drains
    FAILED = "failed"  # vLLM died or would not start


@dataclass(frozen=True)
class Registration:
    job_id: str
    node: str
    gpus: str
    model: str
    url: str  # where the gateway reaches this worker's vLLM
    start: dict[str, float] | None = None  # START_PHASES this worker measured

    def payload(self) -> dict[str, object]:
        out: dict[str, object] = asdict(self)
        if self.start is None:
            del out["start"]
        return out


def heartbeat_payload(job_id: str) -> dict[str, str]:
    return {"job_id": job_id}


def deregister_payload(job_id: str, reason: str) -> dict[str, str]:
    return {"job_id": job_id, "reason": str(reason)}
