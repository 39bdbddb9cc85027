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
raises one SlurmError line that says how to get it (pyslurm_load.py). Records become
models in pyslurm_convert.py; options become JobSubmitDescription fields in pyslurm_submit.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ParamSpec, TypeVar

from isense_slurm.errors import SlurmError
from isense_slurm.slurm.backend import JobId, filter_jobs
from isense_slurm.slurm.cli_backend import UNREACHABLE, CliBackend, _job_id
from isense_slurm.slurm.models import ACTIVE_STATES, Job, Node, Partition, Reservation
from isense_slurm.slurm.pyslurm_convert import (
    gpus_of,
    gpus_per_task,
    held_gpus,
    job_from,
    names_gpus,
    node_from,
    partition_from,
    user_name,
)
from isense_slurm.slurm.pyslurm_load import first_line, load_pyslurm
from isense_slurm.slurm.pyslurm_submit import (
    UPDATE_FIELDS,
    job_environment,
    minutes_or_text,
    signal_number,
    submit_fields,
)
from isense_slurm.slurm.submit import Options, SubmitOptions
from isense_slurm.slurm.values import JOB_BASE_STATES, gpu_count, split_states, states

_INVALID_JOB_ID = 2017  # ESLURM_INVALID_JOB_ID

P = ParamSpec("P")
T = TypeVar("T")


class PyslurmBackend:
    """Talks to slurmctld through pyslurm; a CliBackend does the rest (see above)."""

    def __init__(self, *, timeout: float = 30.0, cli: CliBackend | None = None):
        self.cli = cli or CliBackend(timeout=timeout)
        self._pyslurm: Any = None  # the module, once loaded (pyslurm ships no types)
        self._per_job_gpus: dict[int, int] = {}  # pending jobs' --gpus, read once each

    # --- pyslurm, loaded on first use -----------------------------------------------

    def load(self) -> None:
        """Import pyslurm now (a daemon fails at start, not at each tick)."""
        self.api  # noqa: B018

    @property
    def api(self) -> Any:
        if self._pyslurm is None:
            try:
                version = self.cli.version()
            except SlurmError:
                version = None  # load_pyslurm then says what it can
            self._pyslurm = load_pyslurm(version)
        return self._pyslurm

    def _call(self, what: str, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """fn(*args) with pyslurm's exceptions as one SlurmError line."""
        api = self.api
        try:
            return fn(*args, **kwargs)
        except api.RPCError as err:
            raise self._rpc_error(what, err) from None
        except (api.PyslurmError, ValueError, TypeError, OverflowError, OSError, KeyError) as err:
            raise SlurmError(f"pyslurm {what}: {first_line(err)}") from None

    @staticmethod
    def _rpc_error(what: str, err: BaseException) -> SlurmError:
        message = first_line(err)
        if "Unable to contact slurm controller" in message:
            return SlurmError(f"pyslurm {what}: {UNREACHABLE} ({message})")
        return SlurmError(f"pyslurm {what}: {message}")

    # --- reads -------------------------------------------------------------------------

    def version(self) -> str:
        return self.cli.version()

    def nodes(self, *, partition: str | None = None, names: Iterable[str] | None = None) -> list[Node]:
        loaded = list(self._call("Nodes.load", self.api.Nodes.load).values())
        held = None
        if any(gpus_of(n.configured_gres) and not names_gpus(n.allocated_gres) for n in loaded):
            # 24.11.x reads a node's allocation from its TRES, which list GPUs only where
            # AccountingStorageTRES has gres/gpu: count the active jobs' GPUs instead.
            held = self._gpus_held()
        nodes = self._call("reading nodes", lambda: [node_from(n, held) for n in loaded])
        wanted = set(names) if names is not None else None
        return [
            n
            for n in nodes
            if (partition is None or partition in n.partitions) and (wanted is None or n.name in wanted)
        ]

    def partitions(self) -> list[Partition]:
        loaded = self._call("Partitions.load", self.api.Partitions.load)
        return self._call("reading partitions", lambda: [partition_from(p) for p in loaded.values()])

    def jobs(
        self,
        *,
        user: str | None = None,
        partition: str | None = None,
        states: Iterable[str] | None = None,
        job_ids: Iterable[int] | None = None,
        name: str | None = None,
    ) -> list[Job]:
        loaded = list(self._call("Jobs.load", self.api.Jobs.load).values())
        live = {int(j.id) for j in loaded}
        self._per_job_gpus = {k: v for k, v in self._per_job_gpus.items() if k in live}
        unknown = {int(j.id) for j in loaded if self._asks_unknown(j)}
        if unknown:
            self._read_per_job_gpus(unknown)
        jobs = self._call("reading jobs", lambda: [self._job(j) for j in loaded])
        return filter_jobs(jobs, user=user, partition=partition, states=states, job_ids=job_ids, name=name)

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
            raise SlurmError(f"pyslurm Job.load({jid}): {first_line(err)}") from None
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

    def _job(self, j: Any) -> Job:
        return job_from(j, self._per_job_gpus)

    def _asks_unknown(self, j: Any) -> bool:
        """A pending job whose GPU request pyslurm cannot read: none per node or task, so
        maybe per job (--gpus), which the object API lacks (no tres_per_job)."""
        return (
            int(j.id) not in self._per_job_gpus
            and "PENDING" in states(j.state)
            and not gpus_of(j.gres_per_node)
            and not gpus_per_task(j)
        )

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
                for name, spec in self._call("reading a job", held_gpus, j):
                    held[name] = held.get(name, 0) + gpu_count(spec)
        return held

    # --- actions -----------------------------------------------------------------------

    def submit(self, script: str, options: Options = None, *, as_user: str | None = None) -> int:
        mapping = options.as_mapping() if isinstance(options, SubmitOptions) else dict(options or {})
        fields = submit_fields(mapping)
        if fields is None or (as_user and as_user != _me()):
            return self.cli.submit(script, options, as_user=as_user)
        if not script.startswith("#!"):
            raise SlurmError("sbatch: the script must start with #! (an interpreter line)")
        if str(fields.get("environment", "ALL")).upper() == "ALL":
            fields["environment"] = job_environment(fields.get("name"))
        desc = self._call("JobSubmitDescription", lambda: self.api.JobSubmitDescription(script=script, **fields))
        return int(self._call("submit", desc.submit))

    def cancel(self, job_id: JobId, *, signal: str | None = None) -> None:
        jid = _job_id(job_id)
        if "_" in jid:
            return self.cli.cancel(jid, signal=signal)
        job = self.api.Job(int(jid))
        if signal:
            self._call(f"signal {jid}", job.send_signal, signal_number(signal), steps="children")
        else:
            self._call(f"cancel {jid}", job.cancel)

    def signal_batch(self, job_id: JobId, signal: str = "TERM") -> None:
        jid = _job_id(job_id)
        if "_" in jid:
            return self.cli.signal_batch(jid, signal)
        self._call(f"signal {jid}", self.api.Job(int(jid)).send_signal, signal_number(signal), steps="batch")

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
        if "_" in jid or any(k not in UPDATE_FIELDS for k in fields):
            return self.cli.update_job(jid, fields)
        changes = {
            UPDATE_FIELDS[k]: minutes_or_text(v) if k in ("TimeLimit", "TimeMin") else str(v) for k, v in fields.items()
        }
        desc = self._call("JobSubmitDescription", lambda: self.api.JobSubmitDescription(**changes))
        self._call(f"update {jid}", self.api.Job(int(jid)).modify, desc)


def _me() -> str:
    return user_name(os.geteuid())
