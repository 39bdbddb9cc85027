"""Killing vLLM's process group with its memory reaped by the worker
(worker/memory_release.py), on real processes."""

import os
import signal
import subprocess
import sys
import time

import pytest

from isense_slurm.worker.memory_release import kill_group_releasing_memory, release_memory
from isense_slurm.worker.vllm_process import group_members, in_group

# A parent and its child, each holding 64 MiB of touched memory, in a new session.
HOLDER = (
    "import os, sys, time\n"
    "a = bytearray(64 << 20); a[::4096] = b'x' * len(a[::4096])\n"
    "if os.fork() == 0:\n"
    "    b = bytearray(64 << 20); b[::4096] = b'y' * len(b[::4096])\n"
    "print('ready', flush=True); time.sleep(600)\n"
)


def kernel_has_mrelease() -> bool:
    major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    return (major, minor) >= (5, 15)


def start_group() -> subprocess.Popen:
    proc = subprocess.Popen(
        ["nice", "-n", "10", sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, start_new_session=True
    )
    for _ in range(2):  # parent and child each print once ready
        assert proc.stdout.readline() == b"ready\n"
    return proc


def wait_gone(pgid: int, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while group_members(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_the_whole_group_is_killed_and_its_memory_reaped_here():
    proc = start_group()
    pgid = proc.pid
    members = group_members(pgid)
    assert len(members) == 2
    reaped = kill_group_releasing_memory(pgid, members, lambda pid: in_group(pid, pgid))
    assert proc.wait(timeout=30) == -9
    assert wait_gone(pgid)
    # A member that finished dying on its own first is not counted (idle: a few ms).
    assert 0 <= reaped <= 2


def test_process_mrelease_reaps_a_dying_process():
    """The call itself: a process of 256 MiB takes tens of ms to free its memory after
    SIGKILL, while the call follows the kill within microseconds. Three tries, so that
    a host that lets the victim finish first once cannot fail the test; a wrong syscall
    fails all three."""
    if not kernel_has_mrelease():
        pytest.skip(f"kernel {os.uname().release} has no process_mrelease")
    results = []
    for _ in range(3):
        victim = subprocess.Popen(
            [sys.executable, "-c", HOLDER.replace("64 << 20", "256 << 20").replace("os.fork() == 0", "False")],
            stdout=subprocess.PIPE,
        )
        assert victim.stdout.readline() == b"ready\n"
        fd = os.pidfd_open(victim.pid)
        try:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
            results.append(release_memory(fd))
        finally:
            os.close(fd)
            victim.wait(timeout=30)
        if results[-1]:
            break
    assert True in results, results


def test_a_pid_no_longer_in_the_group_is_neither_killed_nor_reaped():
    proc = start_group()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    try:
        pgid = proc.pid
        reaped = kill_group_releasing_memory(pgid, [*group_members(pgid), other.pid], lambda pid: in_group(pid, pgid))
        assert proc.wait(timeout=30) == -9
        assert other.poll() is None  # never signalled: it is not in the group
        assert 0 <= reaped <= 2
    finally:
        other.kill()
        other.wait()


def test_a_live_process_is_not_reaped():
    """process_mrelease only acts on a process already dying of SIGKILL."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    fd = os.pidfd_open(other.pid)
    try:
        assert release_memory(fd) is False
        assert other.poll() is None
    finally:
        os.close(fd)
        other.kill()
        other.wait()


def test_a_group_already_gone_is_no_error():
    proc = start_group()
    pgid = proc.pid
    members = group_members(pgid)
    os.killpg(pgid, 9)
    proc.wait(timeout=30)
    assert wait_gone(pgid)
    assert kill_group_releasing_memory(pgid, members, lambda pid: in_group(pid, pgid)) == 0
