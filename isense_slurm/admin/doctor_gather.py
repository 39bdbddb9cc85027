"""`isense doctor`'s reading: what Slurm says and what this host's files allow.

gather() asks Slurm through the access layer and looks at the secret, the ledger, the
job folder, the wake file's folder and the config file as the service account would;
doctor.check() then judges the Facts without any I/O.
"""

from __future__ import annotations

import glob
import os
import pwd
import stat
from dataclasses import dataclass, field
from pathlib import Path

from isense_slurm.admin.doctor_exec import check_executables
from isense_slurm.controller.act import isense_executable
from isense_slurm.errors import ConfigError, SlurmError
from isense_slurm.report.controller_state import read_controller
from isense_slurm.secrets import load_secret, secret_path
from isense_slurm.slurm import Node, Partition


@dataclass
class Facts:
    slurm_error: str | None = None  # Slurm did not answer: nothing else about it is known
    version: str = ""
    config: dict[str, str] = field(default_factory=dict)
    partitions: list[Partition] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    plugin: bool | None = None
    prolog_files: list[str] = field(default_factory=list)  # what Prolog= names, resolved here
    epilog_files: list[str] = field(default_factory=list)
    account: tuple[int, int] | None = None  # uid, gid of the service account
    secret_problem: str | None = None
    secret_mode: tuple[int, int] | None = None  # (st_mode bits, gid)
    ledger_problem: str | None = None
    job_dir_problem: str | None = None
    config_problem: str | None = None  # the service account cannot read the config file
    wake_problem: str | None = None  # [slurm] submit_wake's folder, as this host sees it
    # What a worker job starts, run as the service account (doctor_exec.py); empty: not run.
    executables: list = field(default_factory=list)  # doctor_exec.ExecCheck
    executables_skipped: str | None = None  # why they could not be run
    # The running controller's (node, model) pairs held back (GET /internal/controller);
    # None: no `isense serve` answers on this host.
    held_back: list[dict] | None = None


def is_null(text: str | None) -> bool:
    """Slurm's ways of saying a setting is not set."""
    return text is None or text.strip() in ("", "(null)", "none", "None")


def _hook_files(value: str | None) -> list[str]:
    """The scripts a Prolog=/Epilog= value names (comma lists, globs), resolved."""
    if value is None or is_null(value):
        return []
    out = []
    for part in value.split(","):
        for path in sorted(glob.glob(part.strip())) or []:
            out.append(os.path.realpath(path))
    return out


def _allowed(path: Path, uid: int, gid: int, bits: tuple[int, int, int]) -> bool:
    """Whether uid (primary group gid) has the permission bits (user, group, other) on path."""
    st = path.stat()
    if uid == 0 or st.st_uid == uid:
        return uid == 0 or bool(st.st_mode & bits[0])
    if st.st_gid in os.getgrouplist(pwd.getpwuid(uid).pw_name, gid):
        return bool(st.st_mode & bits[1])
    return bool(st.st_mode & bits[2])


def _readable_path(path: Path, uid: int, gid: int) -> bool:
    """Every folder above searchable, the file readable."""
    folders = [p for p in reversed(path.parents)]
    return all(_allowed(p, uid, gid, (stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH)) for p in folders) and _allowed(
        path, uid, gid, (stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH)
    )


def gather(cfg, slurm) -> Facts:
    facts = Facts()
    _gather_slurm(slurm, facts)
    try:
        pw = pwd.getpwnam(cfg.slurm.service_account)
        facts.account = (pw.pw_uid, pw.pw_gid)
    except KeyError:
        facts.account = None
    _gather_files(cfg, facts)
    if facts.account is not None:
        facts.executables, facts.executables_skipped = check_executables(cfg, isense_executable())
    state, _ = read_controller(cfg)
    if state is not None:
        facts.held_back = [h for h in state.get("held_back") or [] if isinstance(h, dict)]
    return facts


def _gather_slurm(slurm, facts: Facts) -> None:
    try:
        facts.version = slurm.version()
        facts.config = slurm.config()
        facts.partitions = slurm.partitions()
        facts.nodes = slurm.nodes()
    except SlurmError as err:
        facts.slurm_error = str(err)
    if not facts.slurm_error:
        try:
            facts.plugin = slurm.sbatch_supports("isense-worker")
        except SlurmError:
            facts.plugin = None
        facts.prolog_files = _hook_files(facts.config.get("Prolog"))
        facts.epilog_files = _hook_files(facts.config.get("Epilog"))


def _gather_files(cfg, facts: Facts) -> None:
    """The secret, the ledger, the job folder, the wake file's folder and the config file."""
    try:
        load_secret(cfg.secrets.dir)
        st = secret_path(cfg.secrets.dir).stat()
        facts.secret_mode = (stat.S_IMODE(st.st_mode), st.st_gid)
    except ConfigError as err:
        facts.secret_problem = str(err).split(": ", 1)[-1].split(" (run ")[0]

    ledger = Path(cfg.ledger.path)
    if ledger.exists():
        if not os.access(ledger, os.W_OK):
            facts.ledger_problem = "not writable by this user"
    else:
        parent = next((p for p in ledger.parents if p.exists()), None)
        if parent is None or not os.access(parent, os.W_OK):
            facts.ledger_problem = "missing, and its folder cannot be created here"

    job_dir = Path(cfg.slurm.job_dir)
    if not job_dir.is_dir():
        facts.job_dir_problem = "missing"
    elif facts.account is not None and not _allowed(
        job_dir, *facts.account, (stat.S_IWUSR, stat.S_IWGRP, stat.S_IWOTH)
    ):
        facts.job_dir_problem = f"not writable by {cfg.slurm.service_account}"
    wake = cfg.slurm.submit_wake
    if wake is not None and not wake.parent.is_dir():
        facts.wake_problem = "its folder does not exist on this host"
    config = Path(cfg.path).resolve()
    if facts.account is not None and config.exists() and not _readable_path(config, *facts.account):
        facts.config_problem = f"not readable by {cfg.slurm.service_account}"
