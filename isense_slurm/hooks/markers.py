"""The marker a worker leaves when it gets SIGTERM: `<job_dir>/<job_id>.sigterm`.

Slurm tells the epilog no reason for a job's end, and the epilog must not ask
squeue/scontrol. The worker writes the time of its SIGTERM here; the worker's epilog
reads it (only if the service account owns it: job_dir may be world-writable) and
removes it, so a requeued run of the same job id starts without one.
"""

from __future__ import annotations

import os
from pathlib import Path

SUFFIX = ".sigterm"


def marker_path(job_dir, job_id: str) -> Path:
    return Path(job_dir) / f"{job_id}{SUFFIX}"


def write_marker(path: Path, at: float) -> None:
    """Called by the worker on SIGTERM; raises OSError (the caller logs and goes on)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(f"{at:.6f}\n")


def take_marker(path: Path, owner_uid: int | None) -> float | None:
    """The SIGTERM time in the marker (None if absent, foreign or unreadable); removes it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        text = os.read(fd, 64).decode("ascii", "replace").strip()
    finally:
        os.close(fd)
    try:
        os.unlink(path)
    except OSError:
        pass
    if owner_uid is not None and st.st_uid != owner_uid:
        return None
    try:
        at = float(text)
    except ValueError:
        return None
    return at if at > 0 else None


def drop_marker(path: Path) -> None:
    """A new run of a worker job starts without a stale marker."""
    try:
        os.unlink(path)
    except OSError:
        pass
