"""SlurmBackend on Slurm's own commands: sinfo/squeue --json, scontrol, sbatch, scancel.

Each command runs with a timeout and a predictable environment (no SBATCH_*/SQUEUE_*
defaults, standard time format). Failures become SlurmError with one line that carries
Slurm's own message.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import subprocess
from collections.abc import Iterable, Mapping
from typing import Any

from isense_slurm.errors import SlurmError
from isense_slurm.slurm.backend import JobId, filter_jobs
from isense_slurm.slurm.models import Job, Node, Partition, Reservation
from isense_slurm.slurm.parse_json import jobs_from_json, json_errors, nodes_from_json
from isense_slurm.slurm.parse_scontrol import (
    config_from_scontrol,
    jobs_from_scontrol,
    partitions_from_scontrol,
    reservations_from_scontrol,
)
from isense_slurm.slurm.submit import Options, sbatch_args

# Environment that would change what the commands print or submit.
_DROP_ENV = re.compile(r"^(SBATCH_|SQUEUE_|SINFO_|SCANCEL_|SCONTROL_|SLURM_TIME_FORMAT$)")
_JOB_ID = re.compile(r"^\d+(_\d+)?$")
_SIGNAL = re.compile(r"^(SIG)?[A-Z0-9]+$")
_NO_OPTION = re.compile(r"unrecognized option|invalid option")  # getopt's words for an unknown flag
UNREACHABLE = "Slurm controller is not reachable"
_SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def summarize_stderr(command: str, stderr: str) -> str:
    """Slurm's stderr as one short line: "sbatch: error: X" lines become "X; Y".

    A fatal line, when there is one, says it all; the rest is retry noise.
    """
    messages: list[str] = []
    fatal: list[str] = []
    for line in stderr.splitlines():
        text = line.strip()
        if not text:
            continue
        text = re.sub(rf"^{re.escape(command)}:\s*", "", text)
        is_fatal = text.startswith("fatal:")
        text = re.sub(r"^(error|fatal):\s*", "", text)
        if text and text not in messages:
            messages.append(text)
            if is_fatal:
                fatal.append(text)
    line = "; ".join(fatal or messages)
    return line if len(line) <= 300 else line[:297] + "..."


class CliBackend:
    """Talks to Slurm through its command-line tools."""

    def __init__(self, *, timeout: float = 30.0, bin_dir: str | None = None, env: Mapping[str, str] | None = None):
        self.timeout = timeout
        self.bin_dir = bin_dir
        self.extra_env = dict(env or {})
        self._version: str | None = None
        self._sbatch_help: str | None = None
        self._scontrol_json: bool | None = None  # whether `scontrol show node --json` works here

    # --- running commands ------------------------------------------------------------

    def _env(self, as_user: str | None = None) -> dict[str, str]:
        if as_user:
            # A clean environment: sbatch exports it into the job of that user.
            home = pwd.getpwnam(as_user).pw_dir
            env = {
                "PATH": _SAFE_PATH,
                "HOME": home,
                "USER": as_user,
                "LOGNAME": as_user,
                "LANG": os.environ.get("LANG", "C.UTF-8"),
                "SHELL": "/bin/bash",
            }
            if "SLURM_CONF" in os.environ:
                env["SLURM_CONF"] = os.environ["SLURM_CONF"]
        else:
            env = {k: v for k, v in os.environ.items() if not _DROP_ENV.match(k)}
        env.update(self.extra_env)
        return env

    def _argv(self, argv: list[str], as_user: str | None) -> list[str]:
        exe = os.path.join(self.bin_dir, argv[0]) if self.bin_dir else argv[0]
        argv = [exe, *argv[1:]]
        if not as_user:
            return argv
        try:
            pwd.getpwnam(as_user)
        except KeyError:
            raise SlurmError(f"cannot run {argv[0]} as {as_user}: no such user") from None
        me = pwd.getpwuid(os.geteuid()).pw_name
        if as_user == me:
            return argv
        if os.geteuid() != 0:
            raise SlurmError(f"cannot run {argv[0]} as {as_user}: only root can (running as {me})")
        return ["runuser", "-u", as_user, "--", *argv]

    def _run(
        self, argv: list[str], *, input: str | None = None, as_user: str | None = None, ok_codes: tuple[int, ...] = (0,)
    ) -> subprocess.CompletedProcess[str]:
        command = argv[0]
        full = self._argv(argv, as_user)
        cwd = None
        if as_user:
            home = pwd.getpwnam(as_user).pw_dir
            cwd = home if os.path.isdir(home) else "/"
        env = self._env(as_user)
        conf = env.get("SLURM_CONF")
        if conf and not os.path.isfile(conf):
            # Slurm itself would retry for 60 s before saying so.
            raise SlurmError(f"SLURM_CONF={conf}: no such file")
        try:
            proc = subprocess.run(
                full, input=input, capture_output=True, text=True, timeout=self.timeout, env=env, cwd=cwd
            )
        except FileNotFoundError:
            missing = full[0]
            raise SlurmError(f"{missing}: command not found (is slurm-client installed and on PATH?)") from None
        except subprocess.TimeoutExpired:
            raise SlurmError(
                f"{command} did not answer within {self.timeout:g} s (is slurmctld up? try `scontrol ping`)"
            ) from None
        if proc.returncode not in ok_codes:
            raise self._error(command, proc)
        return proc

    def _error(self, command: str, proc: subprocess.CompletedProcess[str]) -> SlurmError:
        stderr = proc.stderr or ""
        if "Could not establish a configuration source" in stderr:
            conf = os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")
            return SlurmError(f"{command}: no Slurm configuration ({conf} not found; set SLURM_CONF)")
        message = summarize_stderr(command, stderr) or summarize_stderr(command, proc.stdout or "")
        if not message:
            message = f"exit status {proc.returncode}"
        if "Unable to contact slurm controller" in message:
            return SlurmError(f"{command}: {UNREACHABLE} ({message})")
        return SlurmError(f"{command}: {message}")

    def _json(self, argv: list[str]) -> dict[str, Any]:
        proc = self._run(argv)
        try:
            doc: dict[str, Any] = json.loads(proc.stdout)
        except json.JSONDecodeError:
            head = proc.stdout.strip().splitlines()[:1]
            raise SlurmError(f"{' '.join(argv)}: printed no JSON ({head[0][:80] if head else 'nothing'})") from None
        errors = json_errors(doc)
        if errors:
            raise self._json_error(argv[0], errors)
        return doc

    def _json_error(self, command: str, errors: list[str]) -> SlurmError:
        # 22.05 exits 0 and says only "Unspecified error" when slurmctld is down: ask ping.
        try:
            ping = self._run(["scontrol", "ping"], ok_codes=(0, 1)).stdout
        except SlurmError:
            ping = ""
        if "DOWN" in ping:
            line = next((x.strip() for x in ping.splitlines() if "DOWN" in x), "DOWN")
            return SlurmError(f"{command}: {UNREACHABLE} ({line})")
        return SlurmError(f"{command}: {'; '.join(errors)}")

    # --- reads -------------------------------------------------------------------------

    def version(self) -> str:
        if self._version is None:
            out = self._run(["sinfo", "--version"]).stdout.strip()
            self._version = out.split()[-1] if out else "unknown"
        return self._version

    def _node_json(self) -> dict[str, Any]:
        # Newer Slurm groups nodes in `sinfo --json`; `scontrol show node --json` (23.02+)
        # keeps one entry per node. Asked first: an scontrol without --json (22.05) says
        # so at once, and then this backend asks `sinfo --json` (one entry per node there).
        if self._scontrol_json is not False:
            try:
                doc = self._json(["scontrol", "show", "node", "--json"])
            except SlurmError as err:
                if self._scontrol_json or not _NO_OPTION.search(str(err)):
                    raise
                self._scontrol_json = False
            else:
                self._scontrol_json = True
                return doc
        return self._json(["sinfo", "--json"])

    def nodes(self, *, partition: str | None = None, names: Iterable[str] | None = None) -> list[Node]:
        doc = self._node_json()
        try:
            nodes = nodes_from_json(doc)
        except (KeyError, TypeError, ValueError) as err:
            raise SlurmError(f"cannot read Slurm's node list: {err}") from None
        wanted = set(names) if names is not None else None
        return [
            n
            for n in nodes
            if (partition is None or partition in n.partitions) and (wanted is None or n.name in wanted)
        ]

    def partitions(self) -> list[Partition]:
        out = self._run(["scontrol", "show", "-o", "partition"]).stdout
        return partitions_from_scontrol(out)

    def jobs(
        self,
        *,
        user: str | None = None,
        partition: str | None = None,
        states: Iterable[str] | None = None,
        job_ids: Iterable[int] | None = None,
        name: str | None = None,
    ) -> list[Job]:
        # --states=all: newer Slurm applies squeue's default state filter to --json too
        # (22.05 ignores it and always lists everything it remembers).
        doc = self._json(["squeue", "--json", "--states=all"])
        try:
            jobs = jobs_from_json(doc)
        except (KeyError, TypeError, ValueError) as err:
            raise SlurmError(f"cannot read Slurm's job list: {err}") from None
        return filter_jobs(jobs, user=user, partition=partition, states=states, job_ids=job_ids, name=name)

    def job(self, job_id: JobId) -> Job | None:
        jid = _job_id(job_id)
        proc = self._run(["scontrol", "show", "-o", "-d", "job", jid], ok_codes=(0, 1))
        if proc.returncode != 0:
            if "Invalid job id" in proc.stderr:
                return None
            raise self._error("scontrol", proc)
        jobs = jobs_from_scontrol(proc.stdout)
        return jobs[0] if jobs else None

    def reservations(self) -> list[Reservation]:
        out = self._run(["scontrol", "show", "-o", "reservation"]).stdout
        return reservations_from_scontrol(out)

    def config(self) -> dict[str, str]:
        return config_from_scontrol(self._run(["scontrol", "show", "config"]).stdout)

    def sbatch_supports(self, option: str) -> bool:
        # Plugin options show in --help; the plugstack is read afresh by each sbatch,
        # so one look per process is enough.
        if self._sbatch_help is None:
            self._sbatch_help = self._run(["sbatch", "--help"]).stdout
        name = "--" + option.lstrip("-")
        return re.search(rf"(^|\s){re.escape(name)}(\s|=|\[|$)", self._sbatch_help, re.M) is not None

    # --- actions -----------------------------------------------------------------------

    def submit(self, script: str, options: Options = None, *, as_user: str | None = None) -> int:
        try:
            args = sbatch_args(options)
        except ValueError as err:
            raise SlurmError(f"sbatch: {err}") from None
        proc = self._run(["sbatch", "--parsable", *args], input=script, as_user=as_user)
        first = proc.stdout.strip().split(";", 1)[0]
        if not first.isdigit():
            raise SlurmError(f"sbatch: printed no job id ({proc.stdout.strip()[:80] or 'nothing'})")
        return int(first)

    def cancel(self, job_id: JobId, *, signal: str | None = None) -> None:
        argv = ["scancel"]
        if signal:
            argv.append(f"--signal={_signal(signal)}")
        self._run([*argv, _job_id(job_id)])

    def signal_batch(self, job_id: JobId, signal: str = "TERM") -> None:
        self._run(["scancel", "--batch", f"--signal={_signal(signal)}", _job_id(job_id)])

    def requeue(self, job_id: JobId, *, hold: bool = False) -> None:
        self._run(["scontrol", "requeuehold" if hold else "requeue", _job_id(job_id)])

    def hold(self, job_id: JobId) -> None:
        self._run(["scontrol", "hold", _job_id(job_id)])

    def release(self, job_id: JobId) -> None:
        self._run(["scontrol", "release", _job_id(job_id)])

    def update_job(self, job_id: JobId, fields: Mapping[str, str]) -> None:
        pairs = []
        for key, value in fields.items():
            if not re.fullmatch(r"[A-Za-z]+", key) or any(c in str(value) for c in " \n\0"):
                raise SlurmError(f"scontrol update: bad field {key}={value!r}")
            pairs.append(f"{key}={value}")
        self._run(["scontrol", "update", f"JobId={_job_id(job_id)}", *pairs])


def _job_id(job_id: JobId) -> str:
    text = str(job_id).strip()
    if not _JOB_ID.match(text):
        raise SlurmError(f"not a Slurm job id: {job_id!r}")
    return text


def _signal(signal: str) -> str:
    text = str(signal).strip().upper()
    if not _SIGNAL.match(text):
        raise SlurmError(f"not a signal name: {signal!r}")
    return text
