"""Parse `sinfo --json`, `squeue --json` and `scontrol show node --json` by shape.

Slurm 22.05 answers with openapi v0.0.38 shapes: `job_state` is a string, numbers are
plain ints (null for unset/unlimited), `sinfo --json` has a per-node `nodes` list with
`state` plus `state_flags`. Slurm 23.11+ (data_parser v0.0.40-v0.0.45, seen in 24.11 and
26.05) wraps numbers as {"set", "infinite", "number"}, gives states as lists
(["IDLE", "DRAIN"]), and `sinfo --json` returns a `sinfo` list of node groups, while
`scontrol show node --json` keeps a per-node `nodes` list. Each field is read the way
its value looks, never by version number.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from isense_slurm.slurm.hostlist import expand
from isense_slurm.slurm.models import Job, Node
from isense_slurm.slurm.values import (
    JOB_BASE_STATES,
    NODE_BASE_STATES,
    epoch,
    gpu_count,
    gpu_indices,
    number,
    split_states,
    states,
    text_or_none,
    word_list,
)


def json_errors(doc: Any) -> list[str]:
    """The `errors` Slurm reports inside its JSON (22.05 exits 0 with them)."""
    if not isinstance(doc, dict):
        return ["not a JSON object"]
    out = []
    for err in doc.get("errors") or []:
        if isinstance(err, dict):
            parts = [str(err.get(k)) for k in ("description", "error", "source") if err.get(k)]
            out.append(": ".join(dict.fromkeys(parts)) or "unknown error")
        else:
            out.append(str(err))
    return out


def slurm_release(doc: Any) -> str | None:
    """ "22.05.8" from meta.Slurm (22.05) or meta.slurm (23.02+)."""
    meta = doc.get("meta") if isinstance(doc, dict) else None
    if not isinstance(meta, dict):
        return None
    info = meta.get("slurm") or meta.get("Slurm") or {}
    if info.get("release"):
        return str(info["release"])
    v = info.get("version") or {}
    if "major" in v:
        return f"{v.get('major')}.{int(v.get('minor', 0)):02d}.{v.get('micro', 0)}"
    return None


# --- nodes ------------------------------------------------------------------------------


def node_from_json(d: dict[str, Any]) -> Node:
    state, flags = split_states(states(d.get("state")) + states(d.get("state_flags") or []), NODE_BASE_STATES)
    alloc = gpu_count(d.get("gres_used"))
    if not alloc:
        alloc = gpu_count(d.get("tres_used"))
    features = d.get("active_features")
    if not features:
        features = d.get("features")
    return Node(
        name=str(d["name"]),
        state=state,
        flags=flags,
        gpus_total=gpu_count(d.get("gres")),
        gpus_alloc=alloc,
        partitions=word_list(d.get("partitions")),
        features=word_list(features),
        reason=text_or_none(d.get("reason")),
        reason_user=text_or_none(d.get("reason_set_by_user")),
        reason_time=epoch(d.get("reason_changed_at")),
        cpus=number(d.get("cpus")) or 0,
        cpus_alloc=number(d.get("alloc_cpus")) or 0,
        address=text_or_none(d.get("address")),
        last_busy=epoch(d.get("last_busy")),
    )


def _nodes_from_sinfo_groups(groups: list[dict[str, Any]]) -> list[Node]:
    """Newer `sinfo --json`: one entry per (partition, state, ...) group of nodes."""
    by_name: dict[str, Node] = {}
    for g in groups:
        names_field = (g.get("nodes") or {}).get("nodes")
        names = expand(names_field) if names_field else []
        part = (g.get("partition") or {}).get("name")
        state, flags = split_states(states((g.get("node") or {}).get("state")), NODE_BASE_STATES)
        gres = g.get("gres") or {}
        cpus = g.get("cpus") or {}
        features = g.get("features") or {}
        reason = g.get("reason") or {}
        for name in names:
            if name in by_name:
                old = by_name[name]
                if part and part not in old.partitions:
                    by_name[name] = replace(old, partitions=old.partitions + (part,))
                continue
            by_name[name] = Node(
                name=name,
                state=state,
                flags=flags,
                gpus_total=gpu_count(gres.get("total")),
                gpus_alloc=gpu_count(gres.get("used")),
                partitions=(part,) if part else (),
                features=word_list(features.get("active") or features.get("total")),
                reason=text_or_none(reason.get("description")),
                reason_user=text_or_none(reason.get("user") or g.get("reason_set_by_user")),
                reason_time=epoch(reason.get("time")),
                cpus=number(cpus.get("maximum")) or 0,
                # Allocation is summed over the group; exact only for one-node groups.
                cpus_alloc=(number(cpus.get("allocated")) or 0) // max(1, len(names)),
            )
    return list(by_name.values())


def nodes_from_json(doc: dict[str, Any]) -> list[Node]:
    """Nodes from `sinfo --json` (any version) or `scontrol show node --json`."""
    if isinstance(doc.get("nodes"), list):
        return [node_from_json(d) for d in doc["nodes"]]
    if isinstance(doc.get("sinfo"), list):
        return _nodes_from_sinfo_groups(doc["sinfo"])
    raise ValueError("neither a 'nodes' nor a 'sinfo' list in the JSON")


# --- jobs -------------------------------------------------------------------------------

# Epochs this far out are Slurm's "never" (start + unlimited), not real times.
_FAR_FUTURE = 4_000_000_000


def _time(value: Any) -> datetime | None:
    seconds = number(value)
    if seconds is not None and seconds >= _FAR_FUTURE:
        return None
    return epoch(value)


def _exit(d: dict[str, Any]) -> tuple[int | None, int | None]:
    value = d.get("exit_code")
    if isinstance(value, dict):  # v0.0.40+: {"status": [...], "return_code": {...}, "signal": {...}}
        code = number(value.get("return_code"))
        signal = value.get("signal") or {}
        sig = number(signal.get("id")) if isinstance(signal, dict) else None
        return code, sig or None
    raw = number(value)
    if raw is None:
        return None, None
    # 22.05 gives the raw wait status: exit code in the high byte, signal in the low bits.
    return (raw >> 8) & 0xFF, (raw & 0x7F) or None


def _comment(value: Any) -> str:
    if isinstance(value, dict):  # v0.0.40+: {"administrator", "job", "system"}
        value = value.get("job")
    return str(value or "")


def _job_gpus(d: dict[str, Any], node_count: int, details: list[str]) -> int:
    if details:
        return sum(gpu_count(x) for x in details)
    for key in ("tres_alloc_str",):
        n = gpu_count(d.get(key))
        if n:
            return n
    n = gpu_count(d.get("tres_per_job"))
    if n:
        return n
    n = gpu_count(d.get("tres_per_node"))
    if n:
        return n * max(1, node_count)
    n = gpu_count(d.get("tres_req_str"))
    if n:
        return n
    n = gpu_count(d.get("tres_per_task"))
    return n * max(1, number(d.get("tasks")) or 1)


def _expand_pattern(path: str | None, job_id: int, user: str, name: str) -> str | None:
    if not path:
        return None
    return path.replace("%j", str(job_id)).replace("%u", user).replace("%x", name)


def job_from_json(d: dict[str, Any]) -> Job:
    job_id = number(d.get("job_id"))
    if job_id is None:
        raise ValueError(f"job without job_id: {str(d)[:80]}")
    state, flags = split_states(states(d.get("job_state")), JOB_BASE_STATES)
    nodes = tuple(expand(d.get("nodes") or ""))
    node_count = number(d.get("node_count")) or len(nodes)
    details = [x for x in (d.get("gres_detail") or []) if isinstance(x, str)]
    indices: tuple[tuple[str, tuple[int, ...]], ...] = ()
    if details and len(details) == len(nodes):
        indices = tuple((n, gpu_indices(x)) for n, x in zip(nodes, details))
    pending = state == "PENDING"
    finished = state not in ("PENDING", "RUNNING", "SUSPENDED") and "COMPLETING" not in flags
    code, signal = _exit(d) if finished else (None, None)
    user = str(d.get("user_name") or d.get("user_id") or "")
    name = str(d.get("name") or "")
    return Job(
        job_id=job_id,
        name=name,
        user=user,
        state=state,
        flags=flags,
        reason=text_or_none(d.get("state_reason")),
        partition=str(d.get("partition") or ""),
        gpus=_job_gpus(d, node_count, details),
        gpus_per_node=gpu_count(d.get("tres_per_node")),
        gpu_indices=indices,
        nodes=() if pending else nodes,
        required_nodes=tuple(expand(d.get("required_nodes") or "")),
        node_count=node_count,
        cpus=number(d.get("cpus")) or 0,
        submit_time=_time(d.get("submit_time")),
        start_time=None if pending else _time(d.get("start_time")),
        expected_start=_time(d.get("start_time")) if pending else None,
        end_time=None if pending else _time(d.get("end_time")),
        time_limit=number(d.get("time_limit")),
        preempt_time=_time(d.get("preempt_time")),
        restart_count=number(d.get("restart_cnt")) or 0,
        comment=_comment(d.get("comment")),
        exit_code=code,
        exit_signal=signal,
        batch_host=text_or_none(d.get("batch_host")),
        std_out=_expand_pattern(text_or_none(d.get("standard_output")), job_id, user, name),
        work_dir=text_or_none(d.get("current_working_directory")),
    )


def jobs_from_json(doc: dict[str, Any]) -> list[Job]:
    """Jobs from `squeue --json` (any version) or `scontrol show job --json`."""
    jobs = doc.get("jobs")
    if not isinstance(jobs, list):
        raise ValueError("no 'jobs' list in the JSON")
    return [job_from_json(d) for d in jobs]
