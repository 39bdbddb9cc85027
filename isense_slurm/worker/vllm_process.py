"""vLLM's command line, and vLLM run as its own process group with a log file.

vLLM forks an engine process (and workers); a signal to the API server alone leaves
them running, so the final stop goes to the whole group (start_new_session=True).

Facts behind the stop sequence (vLLM 0.32, default --shutdown-timeout 0, checked here):
- SIGTERM to the whole group while requests are in flight races inside vLLM: the API
  server force-kills the engine before it reports the aborted requests, the clients'
  connections stay open, and the API server waits for them until SIGKILL.
- SIGTERM to the engine first (the API server's children) makes the engine abort its
  requests and report them: every client gets an answer (finish_reason "abort", usage
  of the tokens made so far) within tens of ms; then SIGTERM to the group exits in ~0.4 s.
- Under Slurm, preemption and time limit SIGTERM every process of the job at once (its
  process tracking walks the whole tree), vLLM included: that is the racy case above,
  which no worker can prevent (a signal sent to the batch shell only, e.g.
  `--signal=B:USR1@N`, avoids it).
"""

import asyncio
import json
import os
import socket
import subprocess
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path

import aiohttp

from isense_slurm.config import WORKER_OWNED_VLLM_FLAGS
from isense_slurm.errors import ConfigError
from isense_slurm.worker.memory_release import kill_group_releasing_memory

TP_FLAGS = {"-tp", "--tensor-parallel-size"}
MAX_LEN_FLAGS = {"--max-model-len"}


def _flag_name(arg: str) -> str:
    """'--tensor_parallel_size=2' -> '--tensor-parallel-size' (vLLM accepts both spellings)."""
    name = arg.split("=", 1)[0]
    if name.startswith("--"):
        name = "--" + name[2:].replace("_", "-")
    return name


def _sets(vllm_args: Sequence[str], flags: set[str]) -> bool:
    return any(_flag_name(a) in flags for a in vllm_args)


def build_command(executable: str, model, bind_host: str, port: int) -> list[str]:
    """The `vllm serve` argv. No secret in it: argv is readable by every user in /proc;
    the API key goes through the VLLM_API_KEY environment variable (see build_env)."""
    for arg in model.vllm_args:
        if _flag_name(arg) in WORKER_OWNED_VLLM_FLAGS:
            raise ConfigError(f"models '{model.name}': vllm_args must not set {_flag_name(arg)} (the worker sets it)")
    cmd = [
        executable,
        "serve",
        str(model.path),
        "--served-model-name",
        model.name,
        "--host",
        bind_host,
        "--port",
        str(port),
        "--enable-force-include-usage",
        # GET /load: HTTP requests not yet fully answered (streams included), for the drain.
        "--enable-server-load-tracking",
    ]
    # A model's own vllm_args may set these two; no duplicate flag then.
    if not _sets(model.vllm_args, MAX_LEN_FLAGS):
        cmd += ["--max-model-len", str(model.context_length)]
    if not _sets(model.vllm_args, TP_FLAGS):
        cmd += ["--tensor-parallel-size", str(model.gpus)]
    return cmd + list(model.vllm_args)


def niced(cmd: list[str], nice: int) -> list[str]:
    """Run `cmd` at a lower CPU priority (`nice -n`; the pid stays vLLM's: nice execs).
    Under CPU contention the node's slurmd/slurmstepd and a training job starting on the
    GPUs this worker is giving back come first; with the CPU to spare it changes nothing."""
    return ["nice", "-n", str(nice), *cmd] if nice else list(cmd)


def lower_session_priority(pid: int, nice: int) -> str | None:
    """Give vLLM's whole session the niceness `nice` in the kernel's autogroup scheduler;
    None when done or not needed, else why not (for one log line).

    With kernel.sched_autogroup_enabled=1 (the default on many distributions) the CPU
    is shared between sessions first, and a process's own nice only ranks it within
    its session. vLLM runs in a session of its own, and so does each Slurm job step:
    `nice -n` alone would leave vLLM an equal share with a training job starting on the
    reclaimed node. /proc/<pid>/autogroup sets the nice of the session's group.
    """
    if nice <= 0:
        return None
    path = Path(f"/proc/{pid}/autogroup")
    try:
        path.write_text(f"{nice}\n")
    except FileNotFoundError:
        return None  # a kernel without autogroup: plain nice is enough
    except OSError as err:
        return f"cannot set {path} to {nice}: {err.strerror}"
    return None


def build_env(base: Mapping[str, str], extra: Mapping[str, str], api_key: str) -> dict[str, str]:
    """os.environ + [worker] env + the API key (vLLM reads VLLM_API_KEY when --api-key is
    absent). /proc/PID/environ is readable only by the process's own user."""
    env = dict(base)
    env.update(extra)
    env["VLLM_API_KEY"] = api_key
    return env


def free_port(host: str) -> int:
    """A port free right now on host (vLLM binds it a few seconds later; a clash makes
    vLLM exit, which the worker reports like any failed start)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def local_address(bind_host: str) -> str:
    """Where the worker itself reaches vLLM (it runs on the same node)."""
    if bind_host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if bind_host == "::":
        return "[::1]"
    return f"[{bind_host}]" if ":" in bind_host else bind_host


def parse_load(body: str) -> int | None:
    """vLLM's GET /load answer {"server_load": N} -> N; None if it is not that."""
    try:
        load = json.loads(body).get("server_load")
    except (ValueError, AttributeError):
        return None
    return load if isinstance(load, int) and not isinstance(load, bool) else None


def _proc_stat(pid: str) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name: state ppid pgrp ..."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, from /proc."""
    members = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _proc_stat(entry.name)
            if fields and int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def in_group(pid: int, pgid: int) -> bool:
    fields = _proc_stat(str(pid))
    return fields is not None and int(fields[2]) == pgid


def engine_processes(pgid: int) -> list[int]:
    """The API server's children in its group: vLLM's engine process(es) (and helpers
    such as multiprocessing's resource tracker, which ignore SIGTERM)."""
    children = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _proc_stat(entry.name)
            if fields and int(fields[1]) == pgid and int(fields[2]) == pgid and fields[0] != "Z":
                children.append(int(entry.name))
    return children


def tail_lines(path: Path, n: int = 40, start_offset: int = 0) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(start_offset)
            lines = deque(f, maxlen=n)
    except OSError:
        return []
    return [line.decode("utf-8", "replace").rstrip("\n") for line in lines]


def signal_pids(pids: Sequence[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


class VllmProcess:
    """One `vllm serve` in its own session/process group, output appended to log_path."""

    def __init__(self, proc: asyncio.subprocess.Process, log_path: Path, log_offset: int):
        self.proc = proc
        self.pgid = proc.pid  # session leader: its pid is the group id
        self.log_path = log_path
        self.log_offset = log_offset  # where this run's output starts (the log is appended)
        self.stopped = False  # the stop sequence ran (SIGTERM, then SIGKILL if needed)

    @classmethod
    async def start(cls, cmd: list[str], env: dict[str, str], log_path: Path) -> "VllmProcess":
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            offset = log.tell()
            proc = await asyncio.create_subprocess_exec(
                *cmd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return cls(proc, log_path, offset)

    @property
    def exited(self) -> bool:
        return self.proc.returncode is not None

    def tail(self, n: int = 40) -> list[str]:
        return tail_lines(self.log_path, n, self.log_offset)

    def signal_engines(self, sig: int) -> None:
        signal_pids(engine_processes(self.pgid), sig)

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.pgid, sig)
        except ProcessLookupError:
            pass

    def kill_group(self) -> int:
        """SIGKILL the whole group now, its memory reaped by this process rather than by
        the nice-10 dying ones (memory_release.py); how many were reaped here."""
        pgid = self.pgid
        return kill_group_releasing_memory(pgid, group_members(pgid), lambda pid: in_group(pid, pgid))

    def group_alive(self) -> bool:
        return bool(group_members(self.pgid))

    async def reap(self) -> None:
        """Collect our direct child's exit status (the others were reparented); briefly:
        a SIGKILLed process may take a while to free its memory, and the worker's exit
        must not wait for that."""
        try:
            await asyncio.wait_for(self.proc.wait(), timeout=0.3)
        except TimeoutError:
            pass


async def is_healthy(session: aiohttp.ClientSession, base_url: str) -> bool:
    try:
        async with session.get(f"{base_url}/health", timeout=aiohttp.ClientTimeout(total=2.0)) as resp:
            return resp.status == 200
    except (TimeoutError, OSError, aiohttp.ClientError):
        return False


class NotServing(Exception):
    """vLLM refuses connections: it is shutting down or gone."""


async def in_flight(session: aiohttp.ClientSession, base_url: str, timeout: float) -> int | None:
    """HTTP requests vLLM has not fully answered yet (GET /load; no API key needed).
    None when unknown (slow or odd answer); NotServing when nothing listens."""
    try:
        async with session.get(f"{base_url}/load", timeout=aiohttp.ClientTimeout(total=max(timeout, 0.05))) as resp:
            return parse_load(await resp.text()) if resp.status == 200 else None
    except aiohttp.ClientConnectorError as err:
        raise NotServing(str(err)) from None
    except (TimeoutError, aiohttp.ClientError, OSError):
        return None


class ProbeFailed(Exception):
    """vLLM is healthy but could not answer one real completion."""


async def probe_completion(
    session: aiohttp.ClientSession, base_url: str, model: str, api_key: str, timeout: float
) -> float:
    """One real 1-token completion through vLLM; its duration in seconds.

    `/health` only says the API server is up: a vLLM whose engine faults on its first
    forward pass (an ISA the CPU advertises but cannot run, a bad kernel, too little
    memory for the first batch) passes it and then fails every request. Only a worker
    whose vLLM answered this registers. Raises ProbeFailed naming what went wrong.
    """
    body = {"model": model, "prompt": "ping", "max_tokens": 1, "temperature": 0}
    headers = {"Authorization": f"Bearer {api_key}"}
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    try:
        async with session.post(
            f"{base_url}/v1/completions", json=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as resp:
            text = await resp.text()
            if resp.status != 200:
                raise ProbeFailed(f"HTTP {resp.status}: {text.strip()[:200]}")
            answer = json.loads(text)
    except TimeoutError:
        raise ProbeFailed(f"no answer within {timeout:g} s") from None
    except (aiohttp.ClientError, OSError) as err:
        raise ProbeFailed(f"{type(err).__name__}: {err}") from None
    except ValueError:
        raise ProbeFailed("the answer is not JSON") from None
    usage = answer.get("usage") if isinstance(answer, dict) else None
    if not answer.get("choices") or not isinstance(usage, dict) or not usage.get("completion_tokens"):
        raise ProbeFailed(f"the answer has no choice or no completion tokens: {text.strip()[:200]}")
    return loop.time() - t0
