"""The events the node prolog/epilog send, and their validation (pure, stdlib only).

job_start   prolog, before a job that is not an isense worker:
            job_id, node, user, partition, gpus, time (when cleaning ended: the job
            starts right after), cleaned [{pid, cmd, gpus, source, sigkill}],
            clean_seconds, survivors [pid]
worker_end  epilog of an isense worker: job_id, node, gpus, time (epilog start: the
            worker's processes are gone), sigterm_time (from the worker's marker, or
            null), exit_code, exit_code2, derived_ec, restart_count, reason
gpus_free   epilog of any job: node, gpus, time, job_id (may be empty)

Times are unix seconds (floats); gpus are the node's GPU indices (SLURM_JOB_GPUS).
The hooks build events with job_start_event(), worker_end_event() and gpus_free_event();
the daemon's validate_event() returns a normalised copy holding only known fields, or
raises EventError naming the field.
"""

from __future__ import annotations

import math
import re
from enum import StrEnum
from typing import Any

from isense_slurm.contracts.states import HOOK_END_REASONS


class EventKind(StrEnum):
    JOB_START = "job_start"
    WORKER_END = "worker_end"
    GPUS_FREE = "gpus_free"


KINDS = tuple(EventKind)
REASONS = HOOK_END_REASONS
MAX_GPU_INDEX = 1023
_JOB_ID = re.compile(r"[0-9]{1,12}(_[0-9]{1,9})?")
_NODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


# --- builders (the node hooks) ---------------------------------------------------------


def cleaned_process(pid: int, cmd: str, gpus: list[int], source: str, sigkill: bool) -> dict[str, Any]:
    """One process the prolog found on the job's GPUs (job_start's `cleaned`)."""
    return {"pid": pid, "cmd": cmd, "gpus": gpus, "source": source, "sigkill": sigkill}


def job_start_event(
    *,
    job_id: str,
    node: str,
    user: str,
    partition: str,
    gpus: list[int],
    time: float,
    cleaned: list[dict[str, Any]],
    clean_seconds: float,
    survivors: list[int],
) -> dict[str, Any]:
    return {
        "kind": EventKind.JOB_START.value,
        "job_id": job_id,
        "node": node,
        "user": user,
        "partition": partition,
        "gpus": gpus,
        "time": time,
        "cleaned": cleaned,
        "clean_seconds": clean_seconds,
        "survivors": survivors,
    }


def worker_end_event(
    *,
    job_id: str,
    node: str,
    gpus: list[int],
    time: float,
    sigterm_time: float | None,
    exit_code: str | None,
    exit_code2: str | None,
    derived_ec: str | None,
    restart_count: int | None,
    reason: str,
) -> dict[str, Any]:
    return {
        "kind": EventKind.WORKER_END.value,
        "job_id": job_id,
        "node": node,
        "gpus": gpus,
        "time": time,
        "sigterm_time": sigterm_time,
        "exit_code": exit_code,
        "exit_code2": exit_code2,
        "derived_ec": derived_ec,
        "restart_count": restart_count,
        "reason": str(reason),
    }


def gpus_free_event(*, job_id: str, node: str, gpus: list[int], time: float) -> dict[str, Any]:
    return {"kind": EventKind.GPUS_FREE.value, "job_id": job_id, "node": node, "gpus": gpus, "time": time}


# --- validation (the daemon) ------------------------------------------------------------


class EventError(ValueError):
    """A bad event: the message names the field."""


def _fail(where: str, message: str) -> EventError:
    return EventError(f"{where}: {message}")


def node_of(event: object, where: str = "event") -> str:
    """The event's node (checked first: the token is per node)."""
    if not isinstance(event, dict):
        raise _fail(where, "must be a JSON object")
    node = event.get("node")
    if not isinstance(node, str) or not _NODE.fullmatch(node):
        raise _fail(f"{where}.node", "must be a node name (letters, digits, . _ -)")
    return node


def _time(event: dict[str, Any], key: str, where: str, *, required: bool = True) -> float | None:
    value = event.get(key)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise _fail(f"{where}.{key}", "must be a unix time in seconds (a positive number)")
    return float(value)


def _gpus(value: object, where: str) -> list[int]:
    if (
        not isinstance(value, list)
        or len(value) > MAX_GPU_INDEX + 1
        or not all(isinstance(g, int) and not isinstance(g, bool) and 0 <= g <= MAX_GPU_INDEX for g in value)
    ):
        raise _fail(where, f"must be a list of GPU indices (integers 0..{MAX_GPU_INDEX})")
    return sorted(set(value))


def _job_id(event: dict[str, Any], where: str, *, required: bool = True) -> str | None:
    value = event.get("job_id")
    if not required and value in (None, ""):
        return None
    if not isinstance(value, str) or not _JOB_ID.fullmatch(value):
        raise _fail(f"{where}.job_id", 'must be a Slurm job id string, e.g. "1234"')
    return value


def _text(event: dict[str, Any], key: str, where: str, limit: int = 128) -> str | None:
    value = event.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise _fail(f"{where}.{key}", f"must be a string of at most {limit} characters")
    return value


def _count(event: dict[str, Any], key: str, where: str) -> int | None:
    value = event.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _fail(f"{where}.{key}", "must be a non-negative integer")
    return value


def _cleaned(value: object, where: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > 4096:
        raise _fail(where, "must be a list of {pid, cmd, gpus, source, sigkill}")
    out: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        at = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise _fail(at, "must be an object")
        pid = item.get("pid")
        if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
            raise _fail(f"{at}.pid", "must be a positive integer")
        out.append(
            {
                "pid": pid,
                "cmd": (_text(item, "cmd", at, 400) or ""),
                "gpus": _gpus(item.get("gpus", []), f"{at}.gpus"),
                "source": _text(item, "source", at, 16) or "",
                "sigkill": bool(item.get("sigkill", False)),
            }
        )
    return out


def validate_event(event: object, where: str = "event") -> dict[str, Any]:
    node = node_of(event, where)
    assert isinstance(event, dict)  # node_of raised otherwise
    kind = event.get("kind")
    if kind not in KINDS:
        raise _fail(f"{where}.kind", f"must be one of {', '.join(KINDS)}")
    kind = EventKind(kind)
    out: dict[str, Any] = {
        "kind": kind.value,
        "node": node,
        "time": _time(event, "time", where),
        "gpus": _gpus(event.get("gpus", []), f"{where}.gpus"),
    }
    if kind is EventKind.JOB_START:
        survivors = event.get("survivors") or []
        if not isinstance(survivors, list) or not all(
            isinstance(p, int) and not isinstance(p, bool) for p in survivors
        ):
            raise _fail(f"{where}.survivors", "must be a list of pids")
        clean_seconds = event.get("clean_seconds", 0.0)
        if (
            isinstance(clean_seconds, bool)
            or not isinstance(clean_seconds, (int, float))
            or not (0 <= clean_seconds < 3600)
        ):
            raise _fail(f"{where}.clean_seconds", "must be a number of seconds")
        out.update(
            job_id=_job_id(event, where),
            user=_text(event, "user", where) or "",
            partition=_text(event, "partition", where) or "",
            cleaned=_cleaned(event.get("cleaned"), f"{where}.cleaned"),
            clean_seconds=float(clean_seconds),
            survivors=survivors,
        )
    elif kind is EventKind.WORKER_END:
        reason = event.get("reason")
        if reason is not None and reason not in REASONS:
            raise _fail(f"{where}.reason", f"must be one of {', '.join(REASONS)}")
        out.update(
            job_id=_job_id(event, where),
            sigterm_time=_time(event, "sigterm_time", where, required=False),
            exit_code=_text(event, "exit_code", where, 32),
            exit_code2=_text(event, "exit_code2", where, 32),
            derived_ec=_text(event, "derived_ec", where, 32),
            restart_count=_count(event, "restart_count", where),
            reason=reason,
        )
    else:
        out["job_id"] = _job_id(event, where, required=False)
    return out


def events_of(body: object) -> list[object]:
    """The events in a request body: {"events": [...]} or one event object."""
    if isinstance(body, dict) and "events" in body:
        events = body["events"]
        if not isinstance(events, list) or not events:
            raise _fail("events", "must be a non-empty list of event objects")
        return events
    if isinstance(body, dict):
        return [body]
    raise _fail("body", 'must be an event object or {"events": [...]}')
