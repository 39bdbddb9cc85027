"""The GPU process scan and clean_gpus on real processes (no GPU: the /proc path).

Processes are started under unused uids (setuid needs root), so nothing of a real user
is ever touched; each test checks what must survive as well as what must die.
"""

import os
import subprocess
import sys

import pytest

from isense_slurm.gpu import clean_gpus, parse_gpu_list, scan_processes

SERVICE_UID = 61_001  # stands for the service account
OTHER_UID = 61_002  # another cluster user

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="starting processes as other uids needs root")


def test_parse_gpu_list():
    assert parse_gpu_list("0,1,3") == [0, 1, 3]
    assert parse_gpu_list("2-4,0") == [0, 2, 3, 4]
    assert parse_gpu_list("GPU-1234abcd,1") == [1]
    assert parse_gpu_list("") == parse_gpu_list(None) == []
    assert parse_gpu_list("9-2,x-y") == []


@pytest.fixture
def spawn():
    procs = []

    def start(uid, ignore_term=False, **env):
        code = "import signal, time\n"
        if ignore_term:
            code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        code += "print('up', flush=True)\ntime.sleep(300)\n"
        proc = subprocess.Popen(
            [sys.executable, "-I", "-c", code],
            user=uid,
            group=uid,
            env=env,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        assert proc.stdout.readline() == b"up\n"
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def alive(proc) -> bool:
    return proc.poll() is None


@needs_root
def test_scan_finds_the_service_accounts_processes_on_these_gpus_only(spawn):
    on_gpu1 = spawn(SERVICE_UID, CUDA_VISIBLE_DEVICES="1,2")
    by_slurm = spawn(SERVICE_UID, SLURM_JOB_GPUS="3", CUDA_VISIBLE_DEVICES="0")  # SLURM_JOB_GPUS wins
    spawn(SERVICE_UID, CUDA_VISIBLE_DEVICES="0")  # other GPU
    spawn(SERVICE_UID)  # no GPU at all (a daemon)
    spawn(SERVICE_UID, CUDA_VISIBLE_DEVICES="1", SLURMD_NODENAME="n2")  # another node on this host
    spawn(OTHER_UID, CUDA_VISIBLE_DEVICES="1")  # another user
    found = scan_processes(SERVICE_UID, [1, 3], node="n1")
    assert sorted(p.pid for p in found) == sorted([on_gpu1.pid, by_slurm.pid])
    assert {p.pid: p.gpus for p in found} == {on_gpu1.pid: (1,), by_slurm.pid: (3,)}
    assert all(p.uid == SERVICE_UID and p.source == "scan" and "python" in p.cmd for p in found)


@needs_root
def test_clean_kills_stragglers_and_leaves_everything_else(spawn):
    polite = spawn(SERVICE_UID, CUDA_VISIBLE_DEVICES="0,1")
    stubborn = spawn(SERVICE_UID, ignore_term=True, SLURM_JOB_GPUS="1", SLURMD_NODENAME="n1")
    other_gpu = spawn(SERVICE_UID, CUDA_VISIBLE_DEVICES="2")
    other_node = spawn(SERVICE_UID, CUDA_VISIBLE_DEVICES="0", SLURMD_NODENAME="n3")
    other_user = spawn(OTHER_UID, CUDA_VISIBLE_DEVICES="0,1")
    report = clean_gpus([0, 1], SERVICE_UID, timeout_s=3.0, node="n1", use_nvml=False)
    assert report.error is None and report.clean and not report.nvml
    assert sorted(p.pid for p in report.found) == sorted([polite.pid, stubborn.pid])
    assert sorted(report.signalled) == sorted([polite.pid, stubborn.pid])
    assert report.sigkilled == [stubborn.pid]
    assert polite.wait(2) == -15 and stubborn.wait(2) == -9
    assert alive(other_gpu) and alive(other_node) and alive(other_user)
    assert 0 < report.find_s <= report.total_s and report.kill_s > 0


@needs_root
def test_clean_refuses_root_and_does_nothing_without_gpus(spawn):
    victim = spawn(SERVICE_UID, CUDA_VISIBLE_DEVICES="0")
    report = clean_gpus([0], 0, use_nvml=False)
    assert report.error and "root" in report.error and not report.signalled
    report = clean_gpus([], SERVICE_UID, use_nvml=False)
    assert report.found == [] and report.signalled == []
    assert alive(victim)


class FakeNvml:
    """Stands in for the driver only (CI has no GPU): devices list real processes.
    A device's process list shows the pids given to it that are still running, as the
    driver's does. bench/gpu_reclaim_check.py checks the real thing on a GPU."""

    class Proc:
        def __init__(self, pid, used):
            self.pid, self.usedGpuMemory = pid, used

    class Memory:
        def __init__(self, used):
            self.used = used

    def __init__(self, minors):
        self.devices = [{"minor": m, "pids": []} for m in minors]
        self.inits = 0

    def nvmlInit(self):
        self.inits += 1

    def nvmlShutdown(self):
        self.inits -= 1

    def nvmlDeviceGetCount(self):
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, i):
        return self.devices[i]

    def nvmlDeviceGetMinorNumber(self, handle):
        return handle["minor"]

    def _live(self, handle):
        return [
            pid
            for pid in handle["pids"]
            if os.path.exists(f"/proc/{pid}") and open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
        ]

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        return [self.Proc(pid, 1 << 30) for pid in self._live(handle)]

    def nvmlDeviceGetMemoryInfo(self, handle):
        return self.Memory(len(self._live(handle)) << 30)


def test_the_fake_speaks_real_nvml():
    """Every NVML call the fake stands in for exists in the real nvidia-ml-py: a wrong
    name here once hid a prolog that failed on every real GPU."""
    import pynvml

    calls = [name for name in vars(FakeNvml) if name.startswith("nvml")]
    assert calls and [name for name in calls if not hasattr(pynvml, name)] == []


@needs_root
def test_clean_with_nvml_matches_by_minor_number_and_kills_only_the_service_account(spawn, monkeypatch):
    fake = FakeNvml(minors=[1, 0])  # NVML's order differs from the device minors
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    ours = spawn(SERVICE_UID)  # no GPU variables at all: only the driver knows
    theirs = spawn(OTHER_UID)
    ours_elsewhere = spawn(SERVICE_UID)
    fake.devices[1]["pids"] += [ours.pid, theirs.pid]  # minor 0
    fake.devices[0]["pids"] += [ours_elsewhere.pid]  # minor 1
    report = clean_gpus([0], SERVICE_UID, timeout_s=3.0, node="n1")
    assert report.nvml and report.error is None and report.clean
    assert [(p.pid, p.source, p.gpus, p.used_bytes) for p in report.found] == [(ours.pid, "nvml", (0,), 1 << 30)]
    assert [p.pid for p in report.others] == [theirs.pid]
    assert report.signalled == [ours.pid] and ours.wait(2) == -15
    assert alive(theirs) and alive(ours_elsewhere)
    assert report.memory_used_bytes == {0: 1 << 30}  # the other user's process remains
    assert fake.inits == 0  # NVML shut down again


def test_nvml_absent_or_failing_means_none(monkeypatch):
    from isense_slurm.gpu_nvml import Nvml, nvml_processes

    class Broken:
        def nvmlInit(self):
            raise RuntimeError("NVML Shared Library Not Found")

    monkeypatch.setitem(sys.modules, "pynvml", Broken())
    assert Nvml.open([0]) is None and nvml_processes([0]) is None
    monkeypatch.setitem(sys.modules, "pynvml", None)  # not installed: import fails
    assert Nvml.open([0]) is None
