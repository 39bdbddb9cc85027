"""SlurmBackend on pyslurm, Slurm's C API from Python: `[slurm] backend = "pyslurm"`.

Reads and job actions call slurmctld directly, with no subprocess per call (a few ms
for jobs + nodes instead of tens). Only pyslurm's object API that 22.5.x and 24.11.x
both have is used: Jobs.load, Job.load, Nodes.load, Partitions.load,
JobSubmitDescription.submit and Job(id).send_signal/cancel/requeue/hold/release/modify.
Values are read by shape (22.5.x gives GRES as {"gpu": 4}, 24.11.x TRES as
{"gres/gpu": 4}), into the same models and with the same meaning as CliBackend.

A composed CliBackend does what pyslurm cannot do, or not as safely:
- submit as another user (pyslurm submits as this process: sbatch under runuser gives
  the job that user's environment and folder), and submits with an option pyslurm has
  no field for (a SPANK plugin's --isense-worker, or anything in `extra`);
- array task ids ("123_4"), job fields other than StartTime, TimeLimit, TimeMin,
  Comment, Partition, JobName;
- version(), reservations(), config() and sbatch_supports(): 22.5.x has no
  reservations API, neither prints the config as scontrol does, and plugin options
  show only in `sbatch --help`.
- a pending job's GPUs asked per job (--gpus=N): the object API has no tres_per_job
  (and 24.11.x's older dict API cannot load one job), so one squeue read fills in the
  pending jobs that ask for no GPUs per node or task, once per job.

Where 24.11.x's node TRES carry no GPUs (no gres/gpu in AccountingStorageTRES), a
node's allocated GPUs are summed from its active jobs (one Jobs.load more).

Differences left: a normal exit of 128 + N reads as exit code N (pyslurm folds it);
a job's state is one word as 22.05 prints it ("COMPLETING", not COMPLETED+COMPLETING);
cancel() of a job Slurm no longer knows is no error (scancel says so); a job submitted
here gets sbatch's SLURM_SUBMIT_DIR/HOST, SLURM_UMASK and SLURM_JOB_NAME, not its
SLURM_RLIMIT_* (PropagateResourceLimits) or SLURM_PRIO_PROCESS.
pyslurm waits for slurmctld with the GIL held (MessageTimeout of slurm.conf, not this
backend's timeout): with slurmctld down, other threads of the process stall meanwhile.
pyslurm is imported on first use; without it, or built for another Slurm, every call
raises one SlurmError line that says how to get it.
"""

from __future__ import annotations

import os
import pwd
import re
import signal as signals
import socket
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from isense_slurm.errors import SlurmError
from isense_slurm.slurm.backend import JobId, filter_jobs
from isense_slurm.slurm.cli_backend import _DROP_ENV, UNREACHABLE, CliBackend, _job_id, _signal
from isense_slurm.slurm.hostlist import expand
from isense_slurm.slurm.models import ACTIVE_STATES, Job, Node, Partition, Reservation
from isense_slurm.slurm.submit import Options, SubmitOptions
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

SETUP_HINT = "build it for this Slurm (in a checkout: dev/pyslurm-setup; see docs/admin-guide.md)"
_INVALID_JOB_ID = 2017  # ESLURM_INVALID_JOB_ID
_FAR_FUTURE = 4_000_000_000  # start + unlimited: Slurm's "never"
# SubmitOptions fields -> JobSubmitDescription attributes; others go through sbatch.
_SUBMIT_FIELDS = {
    "partition": "partitions", "job_name": "name", "gres": "gres_per_node", "nodes": "nodes",
    "nodelist": "required_nodes", "exclude": "excluded_nodes", "time": "time_limit",
    "time_min": "time_limit_min", "cpus_per_task": "cpus_per_task", "mem": "memory_per_node",
    "output": "standard_output", "error": "standard_error", "chdir": "working_directory",
    "comment": "comment", "requeue": "is_requeueable", "signal": "signal", "export": "environment",
}
# scontrol update keys -> JobSubmitDescription attributes; others go through scontrol.
_UPDATE_FIELDS = {"StartTime": "begin_time", "TimeLimit": "time_limit", "TimeMin": "time_limit_min",
                  "Comment": "comment", "Partition": "partitions", "JobName": "name", "Name": "name"}


def pyslurm_series(slurm_version: str) -> str | None:
    """"22.05.8" -> "22.5": the pyslurm release line for that Slurm."""
    m = re.match(r"(\d+)\.(\d+)", slurm_version or "")
    return f"{int(m.group(1))}.{int(m.group(2))}" if m else None


def load_pyslurm(slurm_version: str | None):
    """pyslurm, imported and checked against this Slurm, or SlurmError with one line."""
    release = slurm_version or "unknown"
    head = f'[slurm] backend = "pyslurm" (Slurm {release})'
    if release.startswith("26."):
        # Its C API takes a step id struct where older ones took a job id: pyslurm stops at 25.11.
        raise SlurmError(f'{head}: no pyslurm exists for Slurm {release}; use backend = "cli"')
    conf = os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")
    if not os.path.isfile(conf):
        # libslurm would end the whole process on a missing config.
        raise SlurmError(f"{head}: SLURM_CONF={conf}: no such file")
    try:
        import pyslurm
    except ImportError as err:
        raise SlurmError(f"{head}: pyslurm is not importable ({_first_line(err)}); {SETUP_HINT}") from None
    except Exception as err:  # noqa: BLE001 - a build for another libslurm fails oddly
        raise SlurmError(f"{head}: pyslurm refuses to load ({_first_line(err)}); {SETUP_HINT}") from None
    built = getattr(pyslurm, "__version__", "")
    if slurm_version and pyslurm_series(built) != pyslurm_series(slurm_version):
        raise SlurmError(f"{head}: pyslurm {built} is for another Slurm; {SETUP_HINT}")
    return pyslurm


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:200]


class PyslurmBackend:
    """Talks to slurmctld through pyslurm; a CliBackend does the rest (see above)."""

    def __init__(self, *, timeout: float = 30.0, cli: CliBackend | None = None):
        self.cli = cli or CliBackend(timeout=timeout)
        self._pyslurm = None
        self._per_job_gpus: dict[int, int] = {}  # pending jobs' --gpus, read once each

    # --- pyslurm, loaded on first use -----------------------------------------------

    def load(self) -> None:
        """Import pyslurm now (a daemon fails at start, not at each tick)."""
        self.api  # noqa: B018

    @property
    def api(self):
        if self._pyslurm is None:
            try:
                version = self.cli.version()
            except SlurmError:
                version = None  # load_pyslurm then says what it can
            self._pyslurm = load_pyslurm(version)
        return self._pyslurm

    def _call(self, what: str, fn, *args, **kwargs):
        """fn(*args) with pyslurm's exceptions as one SlurmError line."""
        api = self.api
        try:
            return fn(*args, **kwargs)
        except api.RPCError as err:
            raise self._rpc_error(what, err) from None
        except (api.PyslurmError, ValueError, TypeError, OverflowError, OSError, KeyError) as err:
            raise SlurmError(f"pyslurm {what}: {_first_line(err)}") from None

    @staticmethod
    def _rpc_error(what: str, err) -> SlurmError:
        message = _first_line(err)
        if "Unable to contact slurm controller" in message:
            return SlurmError(f"pyslurm {what}: {UNREACHABLE} ({message})")
        return SlurmError(f"pyslurm {what}: {message}")

    # --- reads -------------------------------------------------------------------------

    def version(self) -> str:
        return self.cli.version()

    def nodes(self, *, partition: str | None = None,
              names: Iterable[str] | None = None) -> list[Node]:
        loaded = list(self._call("Nodes.load", self.api.Nodes.load).values())
        held = None
        if any(_gpus(n.configured_gres) and not _names_gpus(n.allocated_gres) for n in loaded):
            # 24.11.x reads a node's allocation from its TRES, which list GPUs only where
            # AccountingStorageTRES has gres/gpu: count the active jobs' GPUs instead.
            held = self._gpus_held()
        nodes = self._call("reading nodes", lambda: [_node(n, held) for n in loaded])
        wanted = set(names) if names is not None else None
        return [
            n for n in nodes
            if (partition is None or partition in n.partitions)
            and (wanted is None or n.name in wanted)
        ]

    def partitions(self) -> list[Partition]:
        loaded = self._call("Partitions.load", self.api.Partitions.load)
        return self._call("reading partitions", lambda: [_partition(p) for p in loaded.values()])

    def jobs(self, *, user: str | None = None, partition: str | None = None,
             states: Iterable[str] | None = None, job_ids: Iterable[int] | None = None,
             name: str | None = None) -> list[Job]:
        loaded = list(self._call("Jobs.load", self.api.Jobs.load).values())
        live = {int(j.id) for j in loaded}
        self._per_job_gpus = {k: v for k, v in self._per_job_gpus.items() if k in live}
        unknown = {int(j.id) for j in loaded if self._asks_unknown(j)}
        if unknown:
            self._read_per_job_gpus(unknown)
        jobs = self._call("reading jobs", lambda: [self._job(j) for j in loaded])
        return filter_jobs(jobs, user=user, partition=partition, states=states,
                           job_ids=job_ids, name=name)

    def job(self, job_id: JobId) -> Job | None:
        jid = _job_id(job_id)
        if "_" in jid:
            return self.cli.job(jid)
        api = self.api
        try:
            loaded = api.Job.load(int(jid))
        except api.RPCError as err:
            if getattr(err, "errno", None) == _INVALID_JOB_ID or "Invalid job id" in str(err):
                return None
            raise self._rpc_error(f"Job.load({jid})", err) from None
        except (api.PyslurmError, ValueError, TypeError) as err:
            raise SlurmError(f"pyslurm Job.load({jid}): {_first_line(err)}") from None
        if self._asks_unknown(loaded):
            known = self.cli.job(jid)
            self._per_job_gpus[int(jid)] = known.gpus if known else 0
        return self._call("reading a job", self._job, loaded)

    def reservations(self) -> list[Reservation]:
        return self.cli.reservations()

    def config(self) -> dict[str, str]:
        return self.cli.config()

    def sbatch_supports(self, option: str) -> bool:
        return self.cli.sbatch_supports(option)

    def _job(self, j) -> Job:
        job_id = int(j.id)
        state, flags = split_states(states(j.state), JOB_BASE_STATES)
        pending = state == "PENDING"
        nodes = () if pending else tuple(expand(j.allocated_nodes or ""))
        node_count = j.num_nodes or len(nodes)
        per_node = _gpus(j.gres_per_node)
        held = [] if pending or not nodes else _held(j)
        if held:
            gpus = sum(gpu_count(spec) for _, spec in held)
        else:
            gpus = (per_node * max(1, node_count) or _per_task(j) * max(1, j.ntasks or 1)
                    or (self._per_job_gpus.get(job_id, 0) if pending else 0))
        finished = state not in ("PENDING", "RUNNING", "SUSPENDED", "COMPLETING") and "COMPLETING" not in flags
        user = _user_name(j.user_id)
        start = _time(j.start_time)
        return Job(
            job_id=job_id,
            name=j.name or "",
            user=user,
            state=state,
            flags=flags,
            reason=_reason(j.state_reason),
            partition=j.partition or "",
            gpus=gpus,
            gpus_per_node=per_node,
            gpu_indices=tuple((name, gpu_indices(spec)) for name, spec in held),
            nodes=nodes,
            required_nodes=tuple(expand(j.required_nodes or "")),
            node_count=node_count,
            cpus=j.cpus or 0,
            submit_time=_time(j.submit_time),
            start_time=None if pending else start,
            expected_start=start if pending else None,
            end_time=None if pending else _time(j.end_time),
            time_limit=j.time_limit if isinstance(j.time_limit, int) else None,
            preempt_time=_time(j.preempt_time),
            restart_count=j.requeue_count or 0,
            comment=j.comment or "",
            exit_code=j.exit_code if finished else None,
            exit_signal=(j.exit_code_signal or None) if finished else None,
            batch_host=text_or_none(j.batch_host),
            std_out=text_or_none(j.standard_output),
            work_dir=text_or_none(j.working_directory),
        )

    def _asks_unknown(self, j) -> bool:
        """A pending job whose GPU request pyslurm cannot read: none per node or task, so
        maybe per job (--gpus), which the object API lacks (no tres_per_job)."""
        return (int(j.id) not in self._per_job_gpus and "PENDING" in states(j.state)
                and not _gpus(j.gres_per_node) and not _per_task(j))

    def _read_per_job_gpus(self, job_ids: set[int]) -> None:
        """Those jobs' GPUs from one squeue read (the CLI backend's), kept per job: a
        pass pays it only when jobs of that kind are new."""
        try:
            listed = self.cli.jobs()
        except SlurmError:
            return  # they read as 0 GPUs this pass
        for job in listed:
            if job.job_id in job_ids:
                self._per_job_gpus[job.job_id] = job.gpus

    def _gpus_held(self) -> dict[str, int]:
        """node -> GPUs held by the jobs active on it."""
        loaded = self._call("Jobs.load", self.api.Jobs.load)
        held: dict[str, int] = {}
        for j in loaded.values():
            state, flags = split_states(states(j.state), JOB_BASE_STATES)
            if state in ACTIVE_STATES or "COMPLETING" in flags:
                for name, spec in self._call("reading a job", _held, j):
                    held[name] = held.get(name, 0) + gpu_count(spec)
        return held

    # --- actions -----------------------------------------------------------------------

    def submit(self, script: str, options: Options = None, *, as_user: str | None = None) -> int:
        mapping = options.as_mapping() if isinstance(options, SubmitOptions) else dict(options or {})
        fields = _submit_fields(mapping)
        if fields is None or (as_user and as_user != _me()):
            return self.cli.submit(script, options, as_user=as_user)
        if not script.startswith("#!"):
            raise SlurmError("sbatch: the script must start with #! (an interpreter line)")
        if str(fields.get("environment", "ALL")).upper() == "ALL":
            fields["environment"] = _job_environment(fields.get("name"))
        desc = self._call("JobSubmitDescription", lambda: self.api.JobSubmitDescription(script=script, **fields))
        return int(self._call("submit", desc.submit))

    def cancel(self, job_id: JobId, *, signal: str | None = None) -> None:
        jid = _job_id(job_id)
        if "_" in jid:
            return self.cli.cancel(jid, signal=signal)
        job = self.api.Job(int(jid))
        if signal:
            self._call(f"signal {jid}", job.send_signal, _signal_number(signal), steps="children")
        else:
            self._call(f"cancel {jid}", job.cancel)

    def signal_batch(self, job_id: JobId, signal: str = "TERM") -> None:
        jid = _job_id(job_id)
        if "_" in jid:
            return self.cli.signal_batch(jid, signal)
        self._call(f"signal {jid}", self.api.Job(int(jid)).send_signal, _signal_number(signal), steps="batch")

    def requeue(self, job_id: JobId, *, hold: bool = False) -> None:
        jid = _job_id(job_id)
        if "_" in jid:
            return self.cli.requeue(jid, hold=hold)
        self._call(f"requeue {jid}", self.api.Job(int(jid)).requeue, hold=hold)

    def hold(self, job_id: JobId) -> None:
        jid = _job_id(job_id)
        if "_" in jid:
            return self.cli.hold(jid)
        self._call(f"hold {jid}", self.api.Job(int(jid)).hold)

    def release(self, job_id: JobId) -> None:
        jid = _job_id(job_id)
        if "_" in jid:
            return self.cli.release(jid)
        self._call(f"release {jid}", self.api.Job(int(jid)).release)

    def update_job(self, job_id: JobId, fields: Mapping[str, str]) -> None:
        jid = _job_id(job_id)
        if "_" in jid or any(k not in _UPDATE_FIELDS for k in fields):
            return self.cli.update_job(jid, fields)
        changes = {_UPDATE_FIELDS[k]: _minutes_or_text(v) if k in ("TimeLimit", "TimeMin") else str(v)
                   for k, v in fields.items()}
        desc = self._call("JobSubmitDescription", lambda: self.api.JobSubmitDescription(**changes))
        self._call(f"update {jid}", self.api.Job(int(jid)).modify, desc)


# --- conversions ------------------------------------------------------------------------

def _gres_spec(value: Any) -> str:
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


def _gpus(value: Any) -> int:
    return gpu_count(_gres_spec(value))


def _names_gpus(value: Any) -> bool:
    """Whether a GRES/TRES dict has a GPU entry at all (0 GPUs or more)."""
    return any(str(k).removeprefix("gres/").split(":")[0] == "gpu" for k in dict(value or {}))


def _per_task(j) -> int:
    return _gpus(getattr(j, "tres_per_task", None))  # 24.11.x only


def _held(j) -> list[tuple[str, str]]:
    """(node, GRES spec) of the GPUs a started job holds, from its resource layout."""
    layout = j.get_resource_layout_per_node() or {}
    specs = [(name, _gres_spec(part.get("gres"))) for name, part in layout.items()]
    return [(name, spec) for name, spec in specs if gpu_count(spec)]


def _time(value: Any):
    if isinstance(value, int) and value >= _FAR_FUTURE:
        return None
    return epoch(value)


def _reason(text: Any) -> str | None:
    """The reason as squeue or scontrol gives it. pyslurm gives Slurm's description
    when there is one: "ReqNodeNotAvail, UnavailableNodes:n1" reads as squeue's first
    word; free text ("job requeued in held state") as scontrol spells it, with _."""
    reason = text_or_none(text)
    if reason is None:
        return None
    m = re.match(r"^([A-Za-z_]+)(,|$)", reason)
    return m.group(1) if m else reason.replace(" ", "_")


@lru_cache(maxsize=4096)
def _user_name(uid: Any) -> str:
    try:
        return pwd.getpwuid(int(uid)).pw_name
    except (KeyError, TypeError, ValueError):
        return str(uid if uid is not None else "")


def _me() -> str:
    return _user_name(os.geteuid())


def _node(n, held: dict[str, int] | None = None) -> Node:
    state, flags = split_states(states(n.state), NODE_BASE_STATES)
    if held is not None and not _names_gpus(n.allocated_gres):
        alloc = held.get(str(n.name), 0)
    else:
        alloc = _gpus(n.allocated_gres)
    cpus, cpus_alloc = n.total_cpus or 0, n.allocated_cpus or 0
    if state == "ALLOCATED" and 0 < cpus_alloc < cpus:
        state = "MIXED"  # 22.05 sends ALLOCATED; sinfo and scontrol print MIXED (24.11.x does too)
    return Node(
        name=str(n.name),
        state=state,
        flags=flags,
        gpus_total=_gpus(n.configured_gres),
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


def _partition(p) -> Partition:
    def minutes(value):
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


def _submit_fields(mapping: Mapping[str, Any]) -> dict[str, Any] | None:
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
        if key not in _SUBMIT_FIELDS:
            return None
        if key in ("time", "time_min"):
            value = _minutes_or_text(value)
        elif key == "signal":
            value = _warn_signal(str(value))
            if value is None:
                return None
        elif key in ("nodelist", "exclude", "partition") and isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        out[_SUBMIT_FIELDS[key]] = value
    return out


def _job_environment(name: str | None) -> dict[str, str]:
    """What sbatch exports by default: this environment less its SBATCH_*-style defaults,
    plus the SLURM_* variables sbatch itself adds (pyslurm adds none of them)."""
    env = {k: v for k, v in os.environ.items() if not _DROP_ENV.match(k)}
    umask = os.umask(0)
    os.umask(umask)
    env.update(SLURM_SUBMIT_DIR=os.getcwd(), SLURM_SUBMIT_HOST=socket.gethostname(), SLURM_UMASK=f"{umask:04o}")
    if name:
        env["SLURM_JOB_NAME"] = str(name)
    return env


def _minutes_or_text(value: Any) -> Any:
    """pyslurm wants minutes as an int; "1:00:00" stays text for Slurm to read."""
    text = str(value).strip()
    return int(text) if text.isdigit() else text


def _signal_number(name: str) -> int:
    text = _signal(name)
    if text.isdigit():
        return int(text)
    try:
        return int(signals.Signals[text if text.startswith("SIG") else "SIG" + text])
    except KeyError:
        raise SlurmError(f"not a signal name: {name!r}") from None


def _warn_signal(text: str) -> dict | None:
    """sbatch --signal=[B:]SIG[@secs] as pyslurm's dict (its own parser wants SIGTERM)."""
    m = re.fullmatch(r"(?:([BR]+):)?([A-Z0-9]+)(?:@(\d+))?", text.strip().upper())
    if not m:
        return None
    out: dict[str, Any] = {"signal": _signal_number(m.group(2)), "time": int(m.group(3) or 60)}
    if m.group(1) and "B" in m.group(1):
        out["batch_only"] = True
    if m.group(1) and "R" in m.group(1):
        out["allow_reservation_overlap"] = True
    return out
