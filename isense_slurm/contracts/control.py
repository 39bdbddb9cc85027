"""The worker-control protocol: what a worker sends the gateway, defined once.

POST {gateway}/internal/workers/<action>, each with
`Authorization: Bearer worker_token(secret, job_id)`:
  register   {"job_id", "node", "gpus", "model", "url"} -> 200; 401 bad token; 404 unknown model
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

    def payload(self) -> dict[str, str]:
        return asdict(self)


def heartbeat_payload(job_id: str) -> dict[str, str]:
    return {"job_id": job_id}


def deregister_payload(job_id: str, reason: str) -> dict[str, str]:
    return {"job_id": job_id, "reason": str(reason)}
