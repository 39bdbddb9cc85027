"""Plan -> Slurm: sbatch one worker job per Submit, scancel per Cancel.

The worker job, as the service account:
    sbatch -p <lend_partition> -w <node> --gres=gpu:<n> -t <limit> --time-min=<min>
           -J isense-<model> -o <job_dir>/isense-%j.out --chdir=<job_dir>
           --no-requeue [--isense-worker]
Why these:
- --no-requeue: with the lend partition's PreemptMode=REQUEUE a preempted worker would
  come back pending, pinned by -w to the node training now holds, with its old time
  limit, and wait out Slurm's requeue delay while holding lent share and a model slot.
  Slurm cancels a job that may not requeue instead (state PREEMPTED), with the same
  SIGTERM at the same moment; the planner lends again by its rules with a fresh limit.
- no --signal: GraceTime=0 on the lend partition sends SIGTERM to the batch shell (our
  `exec`'d worker) at once, and SIGKILL KillWait seconds later; nothing more is needed.
- --isense-worker when the SPANK plugin is loaded: it contains the job (masked site
  paths, no_new_privs). Under it /home is masked read-only, so the script gives vLLM a
  writable HOME and cache in the job dir (shared by workers: caches survive jobs).
"""

from __future__ import annotations

import logging
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from isense_slurm.contracts.workers import worker_job_name
from isense_slurm.controller.memory import Memory, Submitted
from isense_slurm.errors import SlurmError
from isense_slurm.planner import Cancel, Plan, Submit
from isense_slurm.slurm import SubmitOptions

log = logging.getLogger("isense.controller")

PLUGIN_OPTION = "isense-worker"
HOME_DIR = "home"  # under job_dir


def isense_executable() -> str:
    """The `isense` of this installation (next to the running Python)."""
    return str(Path(sys.executable).with_name("isense"))


def worker_script(config_path: Path, job_dir: Path, model: str, isense: str) -> str:
    home = Path(job_dir) / HOME_DIR
    q = shlex.quote
    return (
        "#!/bin/bash\n"
        f"# isense inference worker for {model}, submitted by the isense controller (isense serve).\n"
        "# /home may be masked read-only in worker jobs: vLLM gets a writable home and cache.\n"
        f"export HOME={q(str(home))} XDG_CACHE_HOME={q(str(home / '.cache'))}\n"
        'mkdir -p -m 0700 "$HOME" "$XDG_CACHE_HOME"\n'
        f"exec {q(isense)} --config {q(str(config_path))} worker --model {q(model)}\n"
    )


def worker_options(submit: Submit, *, lend_partition: str, job_dir: Path, plugin: bool) -> SubmitOptions:
    return SubmitOptions(
        partition=lend_partition,
        job_name=worker_job_name(submit.model),
        nodes=1,
        nodelist=submit.node,
        gres=f"gpu:{submit.gpus}",
        time=submit.time_limit_minutes,
        time_min=submit.time_min_minutes,
        output=str(Path(job_dir) / "isense-%j.out"),
        chdir=str(job_dir),
        requeue=False,
        extra={PLUGIN_OPTION: True} if plugin else {},
    )


@dataclass(frozen=True)
class Outcome:
    action: Submit | Cancel
    job_id: str | None  # the new job's id for a submit
    error: str | None = None

    def line(self) -> str:
        a = self.action
        if isinstance(a, Submit):
            what = f"sbatch {a.model} on {a.node} ({a.gpus} GPUs, {a.time_limit_minutes} min)"
            return f"{what}: {f'job {self.job_id}' if self.error is None else 'FAILED: ' + self.error}"
        return f"scancel {a.job_id}: {'ok' if self.error is None else 'FAILED: ' + self.error}"


class Actor:
    """Applies plans. `on_lent(job_id, submit)` records a new worker (the ledger)."""

    def __init__(
        self,
        cfg,
        slurm,
        memory: Memory,
        *,
        plugin: bool | None = None,
        isense: str | None = None,
        on_lent: Callable[[str, Submit], None] | None = None,
    ):
        self.slurm = slurm
        self.memory = memory
        self.account = cfg.slurm.service_account
        self.partition = cfg.slurm.lend_partition
        self.job_dir = Path(cfg.slurm.job_dir)
        self.config_path = Path(cfg.path).resolve()
        self.isense = isense or isense_executable()
        self.on_lent = on_lent
        self._plugin = plugin

    @property
    def plugin(self) -> bool:
        if self._plugin is None:
            try:
                self._plugin = self.slurm.sbatch_supports(PLUGIN_OPTION)
            except SlurmError as err:
                log.warning("could not ask sbatch for --%s: %s", PLUGIN_OPTION, err)
                return False
            if not self._plugin:
                log.warning(
                    "sbatch has no --%s: the SPANK plugin is not loaded, workers run without"
                    " its containment (see docs/spank.md)",
                    PLUGIN_OPTION,
                )
        return self._plugin

    def apply(self, plan: Plan, now: datetime) -> list[Outcome]:
        # Cancels first: they give back GPUs the submits may count on.
        return [self._cancel(c, now) for c in plan.cancels] + [self._submit(s, now) for s in plan.submits]

    def _cancel(self, cancel: Cancel, now: datetime) -> Outcome:
        try:
            self.slurm.cancel(cancel.job_id)
        except SlurmError as err:
            return Outcome(cancel, None, str(err))
        self.memory.cancelled(cancel.job_id, now)
        return Outcome(cancel, None)

    def _submit(self, submit: Submit, now: datetime) -> Outcome:
        script = worker_script(self.config_path, self.job_dir, submit.model, self.isense)
        options = worker_options(submit, lend_partition=self.partition, job_dir=self.job_dir, plugin=self.plugin)
        try:
            job_id = str(self.slurm.submit(script, options, as_user=self.account))
        except SlurmError as err:
            self.memory.failed_submit(submit.node, str(err), now)
            return Outcome(submit, None, str(err))
        self.memory.submitted(Submitted(job_id, submit.node, submit.gpus, submit.model, now))
        if self.on_lent is not None:
            try:
                self.on_lent(job_id, submit)
            except Exception as err:  # noqa: BLE001 - the worker runs; the ledger catches up
                log.error("ledger: worker %s not recorded as lent: %s", job_id, err)
        return Outcome(submit, job_id)
