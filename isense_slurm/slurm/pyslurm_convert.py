"""pyslurm's records (22.5.x and 24.11.x shapes) into isense's Job, Node and Partition.

Values are read by shape (22.5.x gives GRES as {"gpu": 4}, 24.11.x TRES as
{"gres/gpu": 4}), into the same models and with the same meaning as the CLI parsers.
"""

from __future__ import annotations

import pwd
import re
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any

from isense_slurm.slurm.hostlist import expand
from isense_slurm.slurm.models import Job, Node, Partition
from isense_slurm.slurm.values import (
    JOB_BASE_STATES,
    NODE_BASE_STATES,
    epoch,
    gpu_count,
    gpu_indices,
    split_states,
    states,
    text_or_none,
)

# pyslurm ships no types: its records (Job, Node, Partition objects) are Any here.

FAR_FUTURE = 4_000_000_000  # start + unlimited: Slurm's "never"


def job_from(j: Any, per_job_gpus: Mapping[int, int]) -> Job:
    """A Job from pyslurm's job record; per_job_gpus: pending jobs' --gpus, read elsewhere."""
    job_id = int(j.id)
    state, flags = split_states(states(j.state), JOB_BASE_STATES)
    pending = state == "PENDING"
    nodes = () if pending else tuple(expand(j.allocated_nodes or ""))
    node_count = j.num_nodes or len(nodes)
    per_node = gpus_of(j.gres_per_node)
    held = [] if pending or not nodes else held_gpus(j)
    if held:
        gpus = sum(gpu_count(spec) for _, spec in held)
    else:
        gpus = (
            per_node * max(1, node_count)
            or gpus_per_task(j) * max(1, j.ntasks or 1)
            or (per_job_gpus.get(job_id, 0) if pending else 0)
        )
    finished = state not in ("PENDING", "RUNNING", "SUSPENDED", "COMPLETING") and "COMPLETING" not in flags
    user = user_name(j.user_id)
    start = time_of(j.start_time)
    return Job(
        job_id=job_id,
        name=j.name or "",
        user=user,
        state=state,
        flags=flags,
        reason=reason_of(j.state_reason),
        partition=j.partition or "",
        gpus=gpus,
        gpus_per_node=per_node,
        gpu_indices=tuple((name, gpu_indices(spec)) for name, spec in held),
        nodes=nodes,
        required_nodes=tuple(expand(j.required_nodes or "")),
        node_count=node_count,
        cpus=j.cpus or 0,
        submit_time=time_of(j.submit_time),
        start_time=None if pending else start,
        expected_start=start if pending else None,
        end_time=None if pending else time_of(j.end_time),
        time_limit=j.time_limit if isinstance(j.time_limit, int) else None,
        preempt_time=time_of(j.preempt_time),
        restart_count=j.requeue_count or 0,
        comment=j.comment or "",
        exit_code=j.exit_code if finished else None,
        exit_signal=(j.exit_code_signal or None) if finished else None,
        batch_host=text_or_none(j.batch_host),
        std_out=text_or_none(j.standard_output),
        work_dir=text_or_none(j.working_directory),
    )


def gres_spec(value: Any) -> str:
    """pyslurm's GRES/TRES dict back into the spec text gpu_count reads.

    {"gpu": 4} -> "gpu:4"; {"gpu:a100": 2} -> "gpu:a100:2"; {"gres/gpu": 2} (24.11.x TRES)
    -> "gres/gpu=2"; {"gpu": {"count": 2, "indexes": "0-1"}} -> "gpu:2(IDX:0-1)".
    """
    if not value:
        return ""
    if isinstance(value, str):
        return value
    items = []
    for key, v in dict(value).items():
        key = str(key)
        if isinstance(v, dict):
            idx = v.get("indexes")
            items.append(f"{key}:{v.get('count', 0)}" + (f"(IDX:{idx})" if idx not in (None, "") else ""))
        elif "/" in key:
            items.append(f"{key}={v}")
        else:
            items.append(f"{key}:{v}")
    return ",".join(items)


def gpus_of(value: Any) -> int:
    return gpu_count(gres_spec(value))


def names_gpus(value: Any) -> bool:
    """Whether a GRES/TRES dict has a GPU entry at all (0 GPUs or more)."""
    return any(str(k).removeprefix("gres/").split(":")[0] == "gpu" for k in dict(value or {}))


def gpus_per_task(j: Any) -> int:
    return gpus_of(getattr(j, "tres_per_task", None))  # 24.11.x only


def held_gpus(j: Any) -> list[tuple[str, str]]:
    """(node, GRES spec) of the GPUs a started job holds, from its resource layout."""
    layout = j.get_resource_layout_per_node() or {}
    specs = [(name, gres_spec(part.get("gres"))) for name, part in layout.items()]
    return [(name, spec) for name, spec in specs if gpu_count(spec)]


def time_of(value: Any) -> datetime | None:
    if isinstance(value, int) and value >= FAR_FUTURE:
        return None
    return epoch(value)


def reason_of(text: Any) -> str | None:
    """The reason as squeue or scontrol gives it. pyslurm gives Slurm's description
    when there is one: "ReqNodeNotAvail, UnavailableNodes:n1" reads as squeue's first
    word; free text ("job requeued in held state") as scontrol spells it, with _."""
    reason = text_or_none(text)
    if reason is None:
        return None
    m = re.match(r"^([A-Za-z_]+)(,|$)", reason)
    return m.group(1) if m else reason.replace(" ", "_")


@lru_cache(maxsize=4096)
def user_name(uid: Any) -> str:
    try:
        return pwd.getpwuid(int(uid)).pw_name
    except (KeyError, TypeError, ValueError):
        return str(uid if uid is not None else "")


def node_from(n: Any, held: dict[str, int] | None = None) -> Node:
    state, flags = split_states(states(n.state), NODE_BASE_STATES)
    if held is not None and not names_gpus(n.allocated_gres):
        alloc = held.get(str(n.name), 0)
    else:
        alloc = gpus_of(n.allocated_gres)
    cpus, cpus_alloc = n.total_cpus or 0, n.allocated_cpus or 0
    if state == "ALLOCATED" and 0 < cpus_alloc < cpus:
        state = "MIXED"  # 22.05 sends ALLOCATED; sinfo and scontrol print MIXED (24.11.x does too)
    return Node(
        name=str(n.name),
        state=state,
        flags=flags,
        gpus_total=gpus_of(n.configured_gres),
        gpus_alloc=alloc,
        partitions=tuple(n.partitions or ()),
        features=tuple(n.active_features or n.available_features or ()),
        reason=text_or_none(n.reason),
        reason_user=text_or_none(n.reason_user),
        reason_time=epoch(n.reason_time),
        cpus=cpus,
        cpus_alloc=cpus_alloc,
        address=text_or_none(n.address),
        last_busy=epoch(n.last_busy_time),
    )


def partition_from(p: Any) -> Partition:
    def minutes(value: object) -> int | None:
        return value if isinstance(value, int) else None  # "UNLIMITED" or unset

    return Partition(
        name=str(p.name),
        nodes=tuple(expand(p.nodes or "")),
        priority_tier=p.priority_tier if p.priority_tier is not None else 1,
        preempt_mode=str(p.preempt_mode or "OFF").upper(),
        state=str(p.state or "UP").upper(),
        is_default=bool(p.is_default),
        max_time=minutes(p.max_time),
        default_time=minutes(p.default_time),
        grace_time=p.preemption_grace_time or 0,
        total_cpus=p.total_cpus or 0,
        total_nodes=p.total_nodes or 0,
    )
