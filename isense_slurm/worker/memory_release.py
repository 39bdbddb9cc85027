"""Kill a process group and free its memory from the caller, not from the dying processes.

A SIGKILLed process frees its address space in its own exit, at its own priority. vLLM
runs at nice 10 (training first), so on a busy node a killed vLLM of 1-2 GiB can take
a second or more to be gone, and the reclaiming training job waits for it. Linux's
process_mrelease(2) (5.15+; what Android's low-memory killer uses) lets the killer
reap a dying process's memory itself, at the killer's priority. It needs no privilege:
the target must already be dying of SIGKILL, which only its owner could send.

Measured here (2 shared cores, three nice-0 busy loops): a nice-10 process of 1.5 GiB
was reaped 1.8 s after SIGKILL alone, and 0.23-0.33 s with process_mrelease.
Where the call is missing (older kernels, seccomp), the kill still happens as before.
"""

import ctypes
import os
import signal
from collections.abc import Callable, Sequence

# The same number on every architecture (the generic syscall table, Linux 5.15).
SYS_PROCESS_MRELEASE = 448

_libc: ctypes.CDLL | None = None


def _syscall():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc.syscall


def release_memory(pidfd: int) -> bool:
    """process_mrelease on a SIGKILLed process: True when its memory was reaped here."""
    try:
        rc = _syscall()(SYS_PROCESS_MRELEASE, pidfd, 0)
    except (OSError, AttributeError):
        return False
    # Otherwise ESRCH: gone already; EINVAL: not dying, or reaped; ENOSYS/EPERM: not here.
    return rc == 0


def kill_group_releasing_memory(pgid: int, members: Sequence[int], in_group: Callable[[int], bool]) -> int:
    """SIGKILL process group `pgid`, then reap the memory of its `members` from here.

    Each member is pinned with a pidfd and checked to still be in the group before the
    kill, so a pid reused meanwhile is never touched. Returns how many were reaped."""
    pidfds = []
    for pid in members:
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            continue
        if in_group(pid):
            pidfds.append(fd)
        else:
            os.close(fd)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    released = 0
    try:
        for fd in pidfds:
            released += release_memory(fd)
    finally:
        for fd in pidfds:
            os.close(fd)
    return released
