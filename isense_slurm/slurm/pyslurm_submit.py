"""sbatch options and scontrol update keys as pyslurm's JobSubmitDescription fields.

Each mapping returns None where an option has no field, so the caller goes through
sbatch or scontrol instead.
"""

from __future__ import annotations

import os
import re
import signal as signals
import socket
from collections.abc import Mapping
from typing import Any

from isense_slurm.errors import SlurmError
from isense_slurm.slurm.cli_backend import _DROP_ENV, _signal

# SubmitOptions fields -> JobSubmitDescription attributes; others go through sbatch.
SUBMIT_FIELDS = {
    "partition": "partitions",
    "job_name": "name",
    "gres": "gres_per_node",
    "nodes": "nodes",
    "nodelist": "required_nodes",
    "exclude": "excluded_nodes",
    "time": "time_limit",
    "time_min": "time_limit_min",
    "cpus_per_task": "cpus_per_task",
    "mem": "memory_per_node",
    "output": "standard_output",
    "error": "standard_error",
    "chdir": "working_directory",
    "comment": "comment",
    "requeue": "is_requeueable",
    "signal": "signal",
    "export": "environment",
}
# scontrol update keys -> JobSubmitDescription attributes; others go through scontrol.
UPDATE_FIELDS = {
    "StartTime": "begin_time",
    "TimeLimit": "time_limit",
    "TimeMin": "time_limit_min",
    "Comment": "comment",
    "Partition": "partitions",
    "JobName": "name",
    "Name": "name",
}


def submit_fields(mapping: Mapping[str, Any]) -> dict[str, Any] | None:
    """JobSubmitDescription attributes for sbatch options, or None when one has no field."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        key = str(key).replace("-", "_")
        if value is None or (value is False and key != "requeue"):
            continue
        if key == "no_requeue":
            key, value = "requeue", False
        if key == "hold":
            out["priority"] = 0  # sbatch --hold
            continue
        if key not in SUBMIT_FIELDS:
            return None
        if key in ("time", "time_min"):
            value = minutes_or_text(value)
        elif key == "signal":
            value = warn_signal(str(value))
            if value is None:
                return None
        elif key in ("nodelist", "exclude", "partition") and isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        out[SUBMIT_FIELDS[key]] = value
    return out


def job_environment(name: str | None) -> dict[str, str]:
    """What sbatch exports by default: this environment less its SBATCH_*-style defaults,
    plus the SLURM_* variables sbatch itself adds (pyslurm adds none of them)."""
    env = {k: v for k, v in os.environ.items() if not _DROP_ENV.match(k)}
    umask = os.umask(0)
    os.umask(umask)
    env.update(SLURM_SUBMIT_DIR=os.getcwd(), SLURM_SUBMIT_HOST=socket.gethostname(), SLURM_UMASK=f"{umask:04o}")
    if name:
        env["SLURM_JOB_NAME"] = str(name)
    return env


def minutes_or_text(value: Any) -> Any:
    """pyslurm wants minutes as an int; "1:00:00" stays text for Slurm to read."""
    text = str(value).strip()
    return int(text) if text.isdigit() else text


def signal_number(name: str) -> int:
    text = _signal(name)
    if text.isdigit():
        return int(text)
    try:
        return int(signals.Signals[text if text.startswith("SIG") else "SIG" + text])
    except KeyError:
        raise SlurmError(f"not a signal name: {name!r}") from None


def warn_signal(text: str) -> dict[str, Any] | None:
    """sbatch --signal=[B:]SIG[@secs] as pyslurm's dict (its own parser wants SIGTERM)."""
    m = re.fullmatch(r"(?:([BR]+):)?([A-Z0-9]+)(?:@(\d+))?", text.strip().upper())
    if not m:
        return None
    out: dict[str, Any] = {"signal": signal_number(m.group(2)), "time": int(m.group(3) or 60)}
    if m.group(1) and "B" in m.group(1):
        out["batch_only"] = True
    if m.group(1) and "R" in m.group(1):
        out["allow_reservation_overlap"] = True
    return out
