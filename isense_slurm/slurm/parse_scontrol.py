"""Parse `scontrol show -o [-d] node|job|partition`: one `Key=Value ...` line per object.

Values may hold spaces in a few keys (OS=, Reason=, Comment=, JobName=, Command=): a
word that does not start a new `Key=` (scontrol keys are CamelCase and begin with an
upper-case letter) belongs to the value before it. Keys may repeat (`-d` prints
`Nodes= CPU_IDs= Mem= GRES=` once per node), so a record keeps every pair in order.
"""

from __future__ import annotations

import re
from datetime import datetime

from isense_slurm.slurm.hostlist import expand
from isense_slurm.slurm.models import Job, Node, Partition, Reservation
from isense_slurm.slurm.values import (
    JOB_BASE_STATES,
    NODE_BASE_STATES,
    duration_minutes,
    gpu_count,
    gpu_indices,
    local_time,
    split_states,
    states,
    text_or_none,
    word_list,
)

_KEY = re.compile(r"^([A-Z][A-Za-z0-9_:/]*)=(.*)$", re.S)
_REASON_STAMP = re.compile(r"^(.*?)\s*\[([^@\]]*)@([0-9T:-]+)\]\s*$")


class Record:
    """One object's pairs in order, with dict-like access to the first of each key."""

    def __init__(self, pairs: list[tuple[str, str]]):
        self.pairs = pairs
        self._first: dict[str, str] = {}
        for k, v in pairs:
            self._first.setdefault(k, v)

    def get(self, key: str, default: str | None = None) -> str | None:
        return self._first.get(key, default)

    def __getitem__(self, key: str) -> str:
        return self._first[key]

    def __contains__(self, key: str) -> bool:
        return key in self._first

    def all(self, key: str) -> list[str]:
        return [v for k, v in self.pairs if k == key]

    def text(self, key: str) -> str | None:
        return text_or_none(self.get(key))

    def int(self, key: str, default: int = 0) -> int:
        m = re.match(r"\d+", self.get(key) or "")
        return int(m.group(0)) if m else default


def parse_line(line: str) -> Record:
    pairs: list[tuple[str, str]] = []
    for word in line.strip().split(" "):
        m = _KEY.match(word)
        if m:
            pairs.append((m.group(1), m.group(2)))
        elif pairs:
            key, value = pairs[-1]
            pairs[-1] = (key, f"{value} {word}" if word or value else value)
        # a leading word without '=' (e.g. "No jobs in the system") is dropped
    return Record([(k, v.strip()) for k, v in pairs])


def parse_records(text: str) -> list[Record]:
    """All `Key=Value` lines of scontrol's -o output; other lines are ignored."""
    out = []
    for line in text.splitlines():
        if "=" in line and _KEY.match(line.strip().split(" ", 1)[0]):
            out.append(parse_line(line))
    return out


def _user_name(value: str | None) -> str:
    """ "trainer(1001)" -> "trainer"."""
    return (value or "").split("(", 1)[0]


def _reason(value: str | None) -> tuple[str | None, str | None, datetime | None]:
    """ "fan swap [root@2026-11-27T23:50:29]" -> ("fan swap", "root", time)."""
    text = text_or_none(value)
    if text is None:
        return None, None, None
    m = _REASON_STAMP.match(text)
    if not m:
        return text, None, None
    return text_or_none(m.group(1)), text_or_none(m.group(2)), local_time(m.group(3))


def node_from_record(r: Record) -> Node:
    state, flags = split_states(states(r.get("State")), NODE_BASE_STATES)
    reason, reason_user, reason_time = _reason(r.get("Reason"))
    alloc = gpu_count(r.get("GresUsed"))
    if not alloc:
        alloc = gpu_count(r.get("AllocTRES"))
    return Node(
        name=r["NodeName"],
        state=state,
        flags=flags,
        gpus_total=gpu_count(r.get("Gres")),
        gpus_alloc=alloc,
        partitions=word_list(r.get("Partitions")),
        features=word_list(r.get("ActiveFeatures") or r.get("AvailableFeatures")),
        reason=reason,
        reason_user=reason_user,
        reason_time=reason_time,
        cpus=r.int("CPUTot"),
        cpus_alloc=r.int("CPUAlloc"),
        address=r.text("NodeAddr"),
        last_busy=local_time(r.get("LastBusyTime")),
    )


def partition_from_record(r: Record) -> Partition:
    return Partition(
        name=r["PartitionName"],
        nodes=tuple(expand(r.get("Nodes") or "")),
        priority_tier=r.int("PriorityTier", 1),
        preempt_mode=(r.get("PreemptMode") or "OFF").upper(),
        state=(r.get("State") or "UP").upper(),
        is_default=(r.get("Default") or "").upper() == "YES",
        max_time=duration_minutes(r.get("MaxTime")),
        default_time=duration_minutes(r.get("DefaultTime")),
        grace_time=r.int("GraceTime"),
        total_cpus=r.int("TotalCPUs"),
        total_nodes=r.int("TotalNodes"),
    )


def job_from_record(r: Record) -> Job:
    job_id = r.int("JobId", -1)
    if job_id < 0:
        raise ValueError(f"job line without JobId: {r.pairs[:3]}")
    state, flags = split_states(states(r.get("JobState")), JOB_BASE_STATES)
    pending = state == "PENDING"
    nodes = () if pending else tuple(expand(r.get("NodeList") or ""))
    alloc_gpus, indices = _detail_gpus(r)
    node_count = r.int("NumNodes") or len(nodes)
    per_node = gpu_count(r.get("TresPerNode"))
    if not pending and gpu_count(r.get("JOB_GRES")):
        gpus = gpu_count(r.get("JOB_GRES"))  # `-d`: the job's allocated GRES in total
    elif alloc_gpus and not pending:
        gpus = alloc_gpus
    else:
        gpus = (
            gpu_count(r.get("TRES"))
            or gpu_count(r.get("TresPerJob"))
            or per_node * max(1, node_count)
            or gpu_count(r.get("TresPerTask")) * max(1, r.int("NumTasks", 1))
        )
    finished = state not in ("PENDING", "RUNNING", "SUSPENDED") and "COMPLETING" not in flags
    code, signal = _exit_status(r) if finished else (None, None)
    start = local_time(r.get("StartTime"))
    return Job(
        job_id=job_id,
        name=r.get("JobName") or "",
        user=_user_name(r.get("UserId")),
        state=state,
        flags=flags,
        reason=r.text("Reason"),
        partition=r.get("Partition") or "",
        gpus=gpus,
        gpus_per_node=per_node,
        gpu_indices=tuple(indices) if not pending else (),
        nodes=nodes,
        required_nodes=tuple(expand(r.text("ReqNodeList") or "")),
        node_count=node_count,
        cpus=r.int("NumCPUs"),
        submit_time=local_time(r.get("SubmitTime")),
        start_time=None if pending else start,
        expected_start=start if pending else None,
        end_time=None if pending else local_time(r.get("EndTime")),
        time_limit=duration_minutes(r.get("TimeLimit")),
        preempt_time=local_time(r.get("PreemptTime")),
        restart_count=r.int("Restarts"),
        comment=r.text("Comment") or "",
        exit_code=code,
        exit_signal=signal,
        batch_host=r.text("BatchHost"),
        std_out=r.text("StdOut"),
        work_dir=r.text("WorkDir"),
    )


def _detail_gpus(r: Record) -> tuple[int, list[tuple[str, tuple[int, ...]]]]:
    """GPUs allocated in all, and (node, GPU indices) per node, from `-d` detail:
    Nodes=n[1-2] CPU_IDs=... GRES=gpu:1(IDX:0) per node group."""
    indices: list[tuple[str, tuple[int, ...]]] = []
    alloc_gpus = 0
    for group, gres in zip(r.all("Nodes"), r.all("GRES")):
        names = expand(group)
        alloc_gpus += gpu_count(gres) * len(names)
        if gpu_count(gres):
            indices.extend((n, gpu_indices(gres)) for n in names)
    return alloc_gpus, indices


def _exit_status(r: Record) -> tuple[int | None, int | None]:
    """A finished job's (exit code, signal or None) from ExitCode=CODE:SIGNAL."""
    exit_text = r.get("ExitCode") or ""
    if not re.fullmatch(r"\d+:\d+", exit_text):
        return None, None
    code, sig = (int(x) for x in exit_text.split(":"))
    return code, sig or None


def nodes_from_scontrol(text: str) -> list[Node]:
    return [node_from_record(r) for r in parse_records(text) if "NodeName" in r]


def partitions_from_scontrol(text: str) -> list[Partition]:
    return [partition_from_record(r) for r in parse_records(text) if "PartitionName" in r]


def jobs_from_scontrol(text: str) -> list[Job]:
    return [job_from_record(r) for r in parse_records(text) if "JobId" in r]


def reservation_from_record(r: Record) -> Reservation:
    return Reservation(
        name=r["ReservationName"],
        nodes=tuple(expand(r.text("Nodes") or "")),
        start=local_time(r.get("StartTime")),
        end=local_time(r.get("EndTime")),
        state=(r.get("State") or "").upper(),
        flags=frozenset(word_list(r.get("Flags"))),
    )


def reservations_from_scontrol(text: str) -> list[Reservation]:
    """`scontrol show -o reservation` ("No reservations in the system" gives [])."""
    return [reservation_from_record(r) for r in parse_records(text) if "ReservationName" in r]


_CONFIG_LINE = re.compile(r"^([A-Za-z][A-Za-z0-9_]*(?:\[\d+\])?)\s*=\s?(.*)$")
_INDEXED_KEY = re.compile(r"^(.*)\[\d+\]$")


def config_from_scontrol(text: str) -> dict[str, str]:
    """`scontrol show config`: "Key = Value" lines as a dict (the first of each key wins;
    the plugin sections at the end repeat a few names). "(null)" stays as printed.

    Newer Slurm (seen on 24.11) prints list-valued keys one per line as "Prolog[0] = a",
    "Prolog[1] = b"; those are joined as "a,b" under the plain key, the way slurm.conf
    and 22.05 write them."""
    out: dict[str, str] = {}
    indexed: dict[str, list[str]] = {}
    for line in text.splitlines():
        m = _CONFIG_LINE.match(line.strip())
        if not m:
            continue
        key, value = m.group(1), m.group(2).strip()
        item = _INDEXED_KEY.match(key)
        if item:
            indexed.setdefault(item.group(1), []).append(value)
        else:
            out.setdefault(key, value)
    for key, values in indexed.items():
        out.setdefault(key, ",".join(values))
    return out
