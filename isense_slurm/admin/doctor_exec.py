"""`isense doctor`: can the service account start what a worker job starts?

A worker job runs `isense --config FILE worker --model M`, which runs
`<[worker] vllm_executable> serve ...`, both as [slurm] service_account. When either
cannot start (a virtualenv under a private home, a mode 0700 folder, a missing package),
every worker fails at once. These checks run each one cheaply AS THE SERVICE ACCOUNT
(runuser when doctor runs as root), with a timeout:
    isense --config FILE worker --help
    vLLM: a Python script -> its interpreter checks that it may run the script and
          finds the vllm package (importlib.util.find_spec: no heavy import);
          anything else -> `<vllm_executable> --version`.
Each gives one line: what was run, and why it cannot start.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

TIMEOUT_SECONDS = 30.0
VLLM_CHECK = (
    "import importlib.util, os, sys\n"
    "if not os.access(sys.argv[1], os.X_OK): sys.exit(sys.argv[1] + ' is not executable')\n"
    "if importlib.util.find_spec('vllm') is None: sys.exit('no vllm package for ' + sys.executable)\n"
)


@dataclass(frozen=True)
class ExecCheck:
    what: str  # "worker executable", "vLLM executable"
    command: str  # as run, for the finding
    problem: str | None = None  # None: it starts


def as_account(account: str) -> list[str] | str:
    """The argv prefix that runs a command as `account`, or why there is none."""
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            return "runuser is not installed"
        return ["runuser", "-u", account, "--"]
    try:
        me = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        me = f"uid {os.geteuid()}"
    if me == account:
        return []
    return f"doctor runs as {me}, not root or {account}"


def _one_line(text: str, last: bool = True) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line = (lines[-1] if last else lines[0]) if lines else ""
    return line if len(line) <= 200 else line[:197] + "..."


def run_check(
    what: str, prefix: list[str], argv: list[str], *, cwd: Path | None = None, timeout: float = TIMEOUT_SECONDS
) -> ExecCheck:
    command = " ".join(argv)
    try:
        proc = subprocess.run(
            [*prefix, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            cwd=str(cwd) if cwd and cwd.is_dir() else "/",
        )
    except subprocess.TimeoutExpired:
        return ExecCheck(what, command, f"no answer within {timeout:g} s")
    except OSError as err:
        return ExecCheck(what, command, f"{prefix[0] if prefix else argv[0]}: {err.strerror or err}")
    if proc.returncode == 0:
        return ExecCheck(what, command)
    why = _one_line(proc.stderr) or _one_line(proc.stdout, last=False) or "no output"
    return ExecCheck(what, command, f"exit {proc.returncode}: {why}")


def _interpreter(path: Path) -> str | None:
    """The Python a script's #! line names, or None (not a Python script, or unreadable here)."""
    try:
        with open(path, "rb") as f:
            first = f.readline(512).decode("utf-8", errors="replace").strip()
    except OSError:
        return None
    if not first.startswith("#!"):
        return None
    words = first[2:].split()
    if not words:
        return None
    if Path(words[0]).name == "env" and len(words) > 1:
        words = words[1:]
        found = shutil.which(words[0])
        if found is None:
            return None
        words[0] = found
    return words[0] if "python" in Path(words[0]).name else None


def check_executables(cfg, isense: str) -> tuple[list[ExecCheck], str | None]:
    """(the checks, None) or ([], why they could not run)."""
    account = cfg.slurm.service_account
    prefix = as_account(account)
    if isinstance(prefix, str):
        return [], prefix
    job_dir = Path(cfg.slurm.job_dir)
    checks = [
        run_check(
            "worker executable",
            prefix,
            [isense, "--config", str(Path(cfg.path).resolve()), "worker", "--help"],
            cwd=job_dir,
        )
    ]
    exe = cfg.worker.vllm_executable
    path = exe if "/" in exe else shutil.which(exe)
    if path is None:
        checks.append(
            ExecCheck("vLLM executable", exe, "not found in PATH (set [worker] vllm_executable to its full path)")
        )
        return checks, None
    python = _interpreter(Path(path))
    if python is not None:
        checks.append(run_check("vLLM executable", prefix, [python, "-c", VLLM_CHECK, path], cwd=job_dir))
        checks[-1] = ExecCheck("vLLM executable", f"{path} (with {python})", checks[-1].problem)
    else:
        checks.append(run_check("vLLM executable", prefix, [path, "--version"], cwd=job_dir))
    return checks, None
