"""Which processes sit on a node's GPUs, and making sure the service account's are gone.

Two sources, used together:
- NVML (package nvidia-ml-py, imported as pynvml, only when asked for): the compute
  processes and used memory per GPU, as the driver sees them. Absent package, no
  driver or any NVML error -> None, and the scan alone decides.
- A /proc scan: processes of one uid whose environment puts them on the given GPUs
  (SLURM_JOB_GPUS, else CUDA_VISIBLE_DEVICES) and, when it says so, on this node
  (SLURMD_NODENAME: several slurmd may share one host, as on the dev cluster).

clean_gpus() signals only processes of the service account, never root's nor another
user's: it re-checks the owner after pinning each process with a pidfd, so a pid
reused in between is never hit. Stdlib only at import: the node prolog loads this.
"""

from __future__ import annotations

import os
import select
import signal
import time
from dataclasses import dataclass, field

from isense_slurm.gpu_nvml import Nvml

PROC = "/proc"
TERM_WAIT_SECONDS = 0.3  # SIGTERM -> SIGKILL for stragglers: they had Slurm's SIGTERM already
POLL_SECONDS = 0.05


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    uid: int | None  # None: gone before its owner was read
    gpus: tuple[int, ...]  # the GPUs (of those asked about) it is on
    used_bytes: int | None  # GPU memory, from NVML only
    cmd: str
    source: str  # "nvml" | "scan"

    def as_dict(self) -> dict:
        return {
            "pid": self.pid,
            "uid": self.uid,
            "gpus": list(self.gpus),
            "used_bytes": self.used_bytes,
            "cmd": self.cmd,
            "source": self.source,
        }


@dataclass
class CleanReport:
    gpus: list[int]
    nvml: bool  # NVML answered
    found: list[GpuProcess] = field(default_factory=list)  # service account's, on these GPUs
    others: list[GpuProcess] = field(default_factory=list)  # other users' (left alone)
    signalled: list[int] = field(default_factory=list)  # got SIGTERM
    sigkilled: list[int] = field(default_factory=list)  # needed SIGKILL too
    survivors: list[int] = field(default_factory=list)  # still there at the deadline
    memory_used_bytes: dict[int, int] = field(default_factory=dict)  # per GPU at the end (NVML)
    find_s: float = 0.0
    kill_s: float = 0.0
    free_s: float = 0.0  # from the kill until NVML listed none of them (0 without NVML)
    total_s: float = 0.0
    error: str | None = None

    @property
    def clean(self) -> bool:
        return not self.survivors and self.error is None

    def as_dict(self) -> dict:
        return {
            "gpus": self.gpus,
            "nvml": self.nvml,
            "found": [p.as_dict() for p in self.found],
            "others": [p.as_dict() for p in self.others],
            "signalled": self.signalled,
            "sigkilled": self.sigkilled,
            "survivors": self.survivors,
            "memory_used_bytes": {str(k): v for k, v in self.memory_used_bytes.items()},
            "find_s": round(self.find_s, 4),
            "kill_s": round(self.kill_s, 4),
            "free_s": round(self.free_s, 4),
            "total_s": round(self.total_s, 4),
            "error": self.error,
        }


# ------------------------------------------------------------------------------ parsing


def parse_gpu_list(text: str | None) -> list[int]:
    """'0,1,3' or '0-2,5' -> sorted indices; UUIDs and junk are skipped (never raises)."""
    out: set[int] = set()
    for part in (text or "").split(","):
        part = part.strip()
        lo, dash, hi = part.partition("-")
        if dash and lo.isdigit() and hi.isdigit() and int(lo) <= int(hi) < int(lo) + 1024:
            out.update(range(int(lo), int(hi) + 1))
        elif part.isdigit():
            out.add(int(part))
    return sorted(out)


def _read_environ(pid: int, proc: str) -> dict[str, str] | None:
    try:
        with open(f"{proc}/{pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    env = {}
    for item in raw.split(b"\0"):
        key, eq, value = item.partition(b"=")
        if eq:
            env[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
    return env


def _cmd(pid: int, proc: str) -> str:
    try:
        with open(f"{proc}/{pid}/cmdline", "rb") as f:
            text = f.read(300).replace(b"\0", b" ").decode("utf-8", "replace").strip()
        if text:
            return text[:200]
        with open(f"{proc}/{pid}/comm") as f:
            return f"[{f.read().strip()}]"
    except OSError:
        return ""


def _owner(pid: int, proc: str) -> int | None:
    try:
        return os.stat(f"{proc}/{pid}").st_uid
    except OSError:
        return None


def _alive(pid: int, proc: str) -> bool:
    """Running and not a zombie (a zombie holds no GPU memory)."""
    try:
        with open(f"{proc}/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


# ------------------------------------------------------------------------------- finding


def env_gpus(env: dict[str, str]) -> list[int]:
    """The GPUs a process was given: SLURM_JOB_GPUS holds the node's own indices;
    CUDA_VISIBLE_DEVICES may be renumbered inside a job, so it comes second."""
    if env.get("SLURM_JOB_GPUS"):
        return parse_gpu_list(env["SLURM_JOB_GPUS"])
    return parse_gpu_list(env.get("CUDA_VISIBLE_DEVICES"))


def scan_processes(uid: int, gpu_indices, node: str | None = None, proc: str = PROC) -> list[GpuProcess]:
    """Processes of `uid` whose environment puts them on any of `gpu_indices` (and on
    `node`, when both they and the caller name one). Unreadable environments are
    skipped: without it nothing says the process is on these GPUs."""
    wanted = set(gpu_indices)
    me = os.getpid()
    found = []
    try:
        entries = os.listdir(proc)
    except OSError:
        return []
    for name in entries:
        if not name.isdigit():
            continue
        pid = int(name)
        if pid == me or _owner(pid, proc) != uid:
            continue
        env = _read_environ(pid, proc)
        if not env:  # kernel threads, gone, or not readable
            continue
        theirs = set(env_gpus(env)) & wanted
        if not theirs:
            continue
        their_node = env.get("SLURMD_NODENAME")
        if node and their_node and their_node != node:
            continue
        if not _alive(pid, proc):
            continue
        found.append(GpuProcess(pid, uid, tuple(sorted(theirs)), None, _cmd(pid, proc), "scan"))
    return found


def _from_nvml(listing, proc: str) -> list[GpuProcess]:
    merged: dict[int, GpuProcess] = {}
    for gpu, procs in listing.items():
        for pid, used in procs:
            old = merged.get(pid)
            gpus = tuple(sorted({gpu, *(old.gpus if old else ())}))
            total = (old.used_bytes or 0) + (used or 0) if old else used
            merged[pid] = GpuProcess(pid, _owner(pid, proc), gpus, total, _cmd(pid, proc), "nvml")
    return list(merged.values())


# ------------------------------------------------------------------------------- killing


def _pin(pid: int, uid: int, proc: str) -> int | None:
    """A pidfd for `pid` if it is still a live process of `uid`, else None."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return None
    if _owner(pid, proc) != uid or not _alive(pid, proc):  # checked after pinning
        os.close(fd)
        return None
    return fd


def _send(fd: int, sig: int) -> bool:
    try:
        signal.pidfd_send_signal(fd, sig)
        return True
    except OSError:  # already gone
        return False


def _wait_exit(fds: dict[int, int], deadline: float, proc: str) -> None:
    """Until every pinned process exited (its pidfd turns readable) or the deadline."""
    poller = select.poll()
    by_fd = {fd: pid for pid, fd in fds.items()}
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    waiting = set(by_fd)
    while waiting:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        for fd, _ in poller.poll(max(1, int(min(left, POLL_SECONDS) * 1000))):
            waiting.discard(fd)
            poller.unregister(fd)
        # A zombie whose parent does not reap it stays "not readable" on old kernels.
        for fd in list(waiting):
            if not _alive(by_fd[fd], proc):
                waiting.discard(fd)
                poller.unregister(fd)


def clean_gpus(
    gpu_indices,
    service_uid: int,
    timeout_s: float = 3.0,
    *,
    node: str | None = None,
    term_wait_s: float = TERM_WAIT_SECONDS,
    use_nvml: bool = True,
    proc: str = PROC,
) -> CleanReport:
    """Make sure no process of `service_uid` is left on `gpu_indices`: SIGTERM, a
    short wait, SIGKILL; with NVML, wait until the driver lists none of them.
    Never raises; never touches a process of another uid (nor root's)."""
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    gpus = sorted(set(gpu_indices))
    report = CleanReport(gpus=gpus, nvml=False)
    if service_uid == 0:
        report.error = "refusing to clean for uid 0: the service account must not be root"
        return report
    if not gpus:
        return report
    nvml = Nvml.open(gpus) if use_nvml else None
    try:
        _find(report, nvml, service_uid, node, proc)
        report.find_s = time.monotonic() - t0
        t1 = time.monotonic()
        _kill(report, service_uid, deadline, term_wait_s, proc)
        report.kill_s = time.monotonic() - t1
        if report.nvml and nvml is not None:  # report.nvml: NVML answered, so nvml is open
            t2 = time.monotonic()
            _wait_nvml_free(report, nvml, deadline)
            report.free_s = time.monotonic() - t2
    except Exception as err:  # noqa: BLE001 - the prolog must get a report, not a traceback
        report.error = f"{type(err).__name__}: {err}"
    finally:
        if nvml is not None:
            nvml.close()
    report.total_s = time.monotonic() - t0
    return report


def _find(report: CleanReport, nvml: Nvml | None, service_uid: int, node: str | None, proc: str) -> None:
    """Fills found (the service account's, NVML's then the scan's) and others (left alone)."""
    found: dict[int, GpuProcess] = {}
    if nvml is not None:
        try:
            listed = _from_nvml(nvml.processes(), proc)
            report.nvml = True
        except Exception as err:  # noqa: BLE001 - any NVML failure: the /proc scan alone decides
            listed = []
            report.error = f"NVML: {err}"
        for p in listed:
            if p.uid == service_uid:
                found[p.pid] = p
            elif p.uid is not None and _alive(p.pid, proc):
                report.others.append(p)
    for p in scan_processes(service_uid, report.gpus, node, proc):
        found.setdefault(p.pid, p)
    found.pop(os.getpid(), None)
    report.found = sorted(found.values(), key=lambda p: p.pid)


def _kill(report: CleanReport, service_uid: int, deadline: float, term_wait_s: float, proc: str) -> None:
    """SIGTERM the found (pinned by pidfd), SIGKILL after term_wait_s; wait until the deadline."""
    pinned = {}
    for p in report.found:
        fd = _pin(p.pid, service_uid, proc)
        if fd is not None:
            pinned[p.pid] = fd
    try:
        for pid, fd in pinned.items():
            if _send(fd, signal.SIGTERM):
                report.signalled.append(pid)
        _wait_exit(pinned, min(deadline, time.monotonic() + term_wait_s), proc)
        for pid, fd in pinned.items():
            if _alive(pid, proc) and _send(fd, signal.SIGKILL):
                report.sigkilled.append(pid)
        _wait_exit(pinned, deadline, proc)
        report.survivors = [pid for pid in pinned if _alive(pid, proc)]
    finally:
        for fd in pinned.values():
            os.close(fd)


def _wait_nvml_free(report: CleanReport, nvml: Nvml, deadline: float) -> None:
    """Until NVML lists none of the found processes (or the deadline); then the memory used."""
    ours = {p.pid for p in report.found}
    try:
        while True:
            listed_pids = {pid for procs in nvml.processes().values() for pid, _ in procs}
            if not listed_pids & ours or time.monotonic() >= deadline:
                report.survivors = sorted(set(report.survivors) | (listed_pids & ours))
                break
            time.sleep(POLL_SECONDS)
        report.memory_used_bytes = nvml.memory_used()
    except Exception as err:  # noqa: BLE001 - any NVML failure is reported, never raised to the prolog
        report.error = f"NVML: {err}"
