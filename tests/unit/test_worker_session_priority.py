"""vLLM's session gets the worker's niceness in the kernel's autogroup scheduler."""

import subprocess
from pathlib import Path

from isense_slurm.worker.vllm_process import lower_session_priority


def test_a_new_session_gets_the_nice_of_its_autogroup():
    proc = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        path = Path(f"/proc/{proc.pid}/autogroup")
        assert lower_session_priority(proc.pid, 10) is None
        if path.exists():  # kernels built without autogroup have no such file: nothing to do
            assert path.read_text().split()[-1] == "10"
        assert lower_session_priority(proc.pid, 0) is None  # nice 0: left alone
    finally:
        proc.kill()
        proc.wait()


def test_a_process_already_gone_raises_nothing():
    proc = subprocess.Popen(["true"])
    proc.wait()
    assert lower_session_priority(proc.pid, 10) is None
