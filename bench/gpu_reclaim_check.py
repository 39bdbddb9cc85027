#!/usr/bin/env python3
"""The prolog's NVML path on a real GPU: a process of the service account holding GPU
memory is found, killed, and the memory is seen free. Not run in CI (no GPU there).

Two rounds on one GPU:
- sigterm: the holder exits on SIGTERM;
- stubborn: the holder ignores SIGTERM, so clean_gpus must SIGKILL it.
Each round starts a child as the service-account stand-in (run as root: setuid to
--uid, an unused uid by default, so no real user's process is ever at risk; not root:
your own uid), which allocates --mib of GPU memory with torch if importable, else with
the CUDA driver API through ctypes (libcuda.so.1: cuInit, cuCtxCreate, cuMemAlloc).
Then isense_slurm.gpu.clean_gpus([gpu], uid) runs exactly as the prolog calls it.

Printed per round: seconds to find the process, to kill it, until NVML lists it no
more, until used memory is back to where it was before the allocation. The last line
is JSON with `errors`: the rounds that did not find the holder through NVML, kill it
and see the memory free (at least 1 when the check itself failed); exit 0 only when
errors is 0. The whole check stops itself after --timeout seconds.

    python bench/gpu_reclaim_check.py [--gpu MINOR] [--mib 2048] [--timeout 120]
    # nvidia-ml-py not installed? pip install --target DIR nvidia-ml-py elsewhere and
    # pass --pynvml-dir DIR. On a machine without GPU, --allow-no-gpu runs the /proc
    # path only (for checking the script itself).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from isense_slurm.gpu import clean_gpus  # noqa: E402
from isense_slurm.gpu_nvml import Nvml  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
from stats import finish  # noqa: E402

STAND_IN_UID = 61_001
MIB = 1 << 20

CHILD = r"""
import ctypes, os, signal, sys, time
mib = int(sys.argv[1]); ignore_term = sys.argv[2] == "1"; allow_no_gpu = sys.argv[3] == "1"
if ignore_term:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
how = None
try:
    import torch
    if torch.cuda.is_available():
        buf = torch.empty(mib * (1 << 20), dtype=torch.uint8, device="cuda")
        buf.fill_(1); torch.cuda.synchronize()
        how = "torch"
except Exception:  # torch missing, or CUDA failing in any way: the driver API is next
    pass
if how is None:
    try:
        cu = ctypes.CDLL("libcuda.so.1")
        def ok(rc, what):
            if rc != 0:
                raise RuntimeError(f"{what} returned CUDA error {rc}")
        dev, ctx, ptr = ctypes.c_int(), ctypes.c_void_p(), ctypes.c_uint64()
        ok(cu.cuInit(0), "cuInit")
        ok(cu.cuDeviceGet(ctypes.byref(dev), 0), "cuDeviceGet")
        ok(cu.cuCtxCreate_v2(ctypes.byref(ctx), 0, dev), "cuCtxCreate")
        ok(cu.cuMemAlloc_v2(ctypes.byref(ptr), ctypes.c_size_t(mib * (1 << 20))), "cuMemAlloc")
        ok(cu.cuMemsetD8_v2(ptr, ctypes.c_ubyte(1), ctypes.c_size_t(mib * (1 << 20))), "cuMemsetD8")
        ok(cu.cuCtxSynchronize(), "cuCtxSynchronize")
        how = "cuda-driver"
    except Exception as err:  # no libcuda or any CUDA error: no GPU memory held
        if not allow_no_gpu:
            print(f"error {type(err).__name__}: {err}", flush=True)
            sys.exit(3)
        how = "none"
print(f"ready {how}", flush=True)
while True:
    time.sleep(1)
"""


def log(msg: str) -> None:
    print(f"gpu_reclaim_check: {msg}", flush=True)


def mib(n: int | None) -> float | None:
    return None if n is None else round(n / MIB, 1)


def pick_gpu(requested: int | None, pynvml_ok: bool) -> tuple[int, int]:
    """(Slurm index = device minor number, NVML/CUDA index) of the GPU to use."""
    if requested is not None and not pynvml_ok:
        return requested, requested
    import pynvml

    pynvml.nvmlInit()
    try:
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            try:
                minor = pynvml.nvmlDeviceGetMinorNumber(handle)
            except Exception:  # noqa: BLE001 - not on every platform: NVML's order then
                minor = i
            if requested is None or minor == requested:
                return minor, i
    finally:
        pynvml.nvmlShutdown()
    raise SystemExit(f"no GPU with minor number {requested}")


def used_bytes(gpu: int) -> int | None:
    nvml = Nvml.open([gpu])
    if nvml is None:
        return None
    try:
        return nvml.memory_used().get(gpu)
    finally:
        nvml.close()


def nvml_pids(gpu: int) -> set[int]:
    nvml = Nvml.open([gpu])
    if nvml is None:
        return set()
    try:
        return {pid for pid, _ in nvml.processes().get(gpu, [])}
    finally:
        nvml.close()


def start_holder(mode: str, gpu: int, cuda_index: int, uid: int, size_mib: int, allow_no_gpu: bool):
    """The process that holds GPU memory, as the service account when run as root."""
    env = {
        "PATH": "/usr/bin:/bin",
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "CUDA_VISIBLE_DEVICES": str(cuda_index),
        "SLURM_JOB_GPUS": str(gpu),
        "HOME": "/tmp",
    }
    if os.environ.get("LD_LIBRARY_PATH"):
        env["LD_LIBRARY_PATH"] = os.environ["LD_LIBRARY_PATH"]
    drop = {"user": uid, "group": uid} if os.geteuid() == 0 else {}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(size_mib), "1" if mode == "stubborn" else "0", "1" if allow_no_gpu else "0"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
        cwd="/",
        **drop,
    )


def wait_memory_back(gpu: int, baseline, with_alloc, t0: float, clean_timeout: float) -> float | None:
    """Seconds from t0 until the used memory is back near the baseline (the driver frees
    it after the process is gone; NVML may list the pid a little longer), or None."""
    if baseline is None or with_alloc is None:
        return None
    slack = max(64 * MIB, (with_alloc - baseline) // 10)
    while time.monotonic() - t0 < clean_timeout + 10:
        now = used_bytes(gpu)
        if now is not None and now <= baseline + slack:
            return time.monotonic() - t0
        time.sleep(0.01)
    return None


def one_round(
    mode: str, gpu: int, cuda_index: int, uid: int, size_mib: int, allow_no_gpu: bool, clean_timeout: float
) -> dict:
    baseline = used_bytes(gpu)
    child = start_holder(mode, gpu, cuda_index, uid, size_mib, allow_no_gpu)
    try:
        line = child.stdout.readline().strip()
        if not line.startswith("ready"):
            raise RuntimeError(f"holder did not allocate: {line or f'exited {child.wait()}'}")
        how = line.split()[1]
        with_alloc = used_bytes(gpu)
        seen_by_nvml = child.pid in nvml_pids(gpu)
        log(
            f"{mode}: holder pid {child.pid} uid {uid} holds {size_mib} MiB via {how}; "
            f"NVML lists it: {seen_by_nvml}; used {mib(baseline)} -> {mib(with_alloc)} MiB"
        )

        t0 = time.monotonic()
        report = clean_gpus([gpu], uid, clean_timeout)
        clean_done = time.monotonic() - t0
        memory_free_s = wait_memory_back(gpu, baseline, with_alloc, t0, clean_timeout)
        after = used_bytes(gpu)
        exit_code = child.wait(5)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    found = {p.pid: p for p in report.found}
    result = {
        "mode": mode,
        "alloc": how,
        "holder_pid": child.pid,
        "holder_exit": exit_code,
        "nvml": report.nvml,
        "nvml_listed_holder": seen_by_nvml,
        "found": child.pid in found,
        "found_by": found[child.pid].source if child.pid in found else None,
        "sigkill_needed": child.pid in report.sigkilled,
        "survivors": report.survivors,
        "find_s": round(report.find_s, 4),
        "kill_s": round(report.kill_s, 4),
        "nvml_free_s": round(report.free_s, 4),
        "clean_total_s": round(clean_done, 4),
        "memory_free_s": None if memory_free_s is None else round(memory_free_s, 4),
        "used_mib_before": mib(baseline),
        "used_mib_with_holder": mib(with_alloc),
        "used_mib_after": mib(after),
        "error": report.error,
    }
    log(
        f"{mode}: found {result['found']} (by {result['found_by']}) in {result['find_s']} s, "
        f"killed in {result['kill_s']} s{' (SIGKILL)' if result['sigkill_needed'] else ''}, "
        f"NVML empty after {result['nvml_free_s']} s more, memory back after {result['memory_free_s']} s "
        f"(from the clean's start); used {result['used_mib_after']} MiB"
    )
    return result


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gpu", type=int, default=None, help="GPU minor number (Slurm index); default: the first")
    ap.add_argument("--mib", type=int, default=2048, help="GPU memory the holder allocates")
    ap.add_argument("--uid", type=int, default=STAND_IN_UID, help="service-account stand-in (root only)")
    ap.add_argument("--timeout", type=int, default=120, help="the whole check stops after this")
    ap.add_argument("--clean-timeout", type=float, default=3.0, help="clean_gpus timeout, as in the prolog")
    ap.add_argument("--pynvml-dir", default=None, help="folder holding pynvml.py if it is not installed")
    ap.add_argument("--allow-no-gpu", action="store_true", help="run the /proc path only when there is no GPU")
    return ap.parse_args()


def nvml_answers(args: argparse.Namespace) -> bool:
    """Whether NVML is there (pynvml importable, a driver); without it only --allow-no-gpu goes on."""
    if args.pynvml_dir:
        sys.path.insert(0, args.pynvml_dir)
    try:
        import pynvml  # noqa: F401

        pynvml_ok = True
    except ImportError:
        pynvml_ok = False
    probe = Nvml.open([]) if pynvml_ok else None
    nvml_up = probe is not None
    if probe is not None:
        probe.close()
    if not nvml_up and not args.allow_no_gpu:
        raise RuntimeError(
            "NVML unavailable (nvidia-ml-py missing or no driver); "
            "see --pynvml-dir, or --allow-no-gpu to check the script only"
        )
    return nvml_up


def describe_device(cuda_index: int, summary: dict) -> None:
    import pynvml  # deferred: optional, found through --pynvml-dir

    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(cuda_index)
    name = pynvml.nvmlDeviceGetName(handle)
    summary["device"] = name.decode() if isinstance(name, bytes) else name
    summary["driver"] = str(pynvml.nvmlSystemGetDriverVersion())
    pynvml.nvmlShutdown()


def check(args: argparse.Namespace, summary: dict) -> int:
    """Both rounds on the chosen GPU; the number that failed."""
    uid = args.uid if os.geteuid() == 0 else os.geteuid()
    if uid == 0:
        raise SystemExit("refusing uid 0 as the service account")
    nvml_up = nvml_answers(args)
    gpu, cuda_index = pick_gpu(args.gpu, nvml_up) if nvml_up else (args.gpu or 0, args.gpu or 0)
    summary.update(gpu=gpu, cuda_index=cuda_index, uid=uid, mib=args.mib, nvml=nvml_up)
    if nvml_up:
        describe_device(cuda_index, summary)
    log(f"GPU minor {gpu} (CUDA index {cuda_index}) {summary.get('device', '')}, stand-in uid {uid}")
    rounds = [
        one_round(mode, gpu, cuda_index, uid, args.mib, args.allow_no_gpu, args.clean_timeout)
        for mode in ("sigterm", "stubborn")
    ]
    for r in rounds:
        r["ok"] = bool(
            r["found"]
            and not r["survivors"]
            and r["error"] is None
            and (not nvml_up or (r["nvml_listed_holder"] and r["memory_free_s"] is not None))
        )
    summary["rounds"] = rounds
    return sum(not r["ok"] for r in rounds)


def main() -> int:
    args = parse_args()
    summary: dict = {"bench": "gpu_reclaim_check", "ok": False}
    errors = 0

    def out_of_time(signum, frame):
        raise TimeoutError(f"stopped after --timeout {args.timeout} s")

    signal.signal(signal.SIGALRM, out_of_time)
    signal.alarm(args.timeout)
    try:
        errors = check(args, summary)
        summary["ok"] = errors == 0
    except (Exception, SystemExit) as err:  # noqa: BLE001 - any failure is the check's answer, in its JSON
        summary["error"] = f"{type(err).__name__}: {err}"
        log(f"error: {summary['error']}")
        errors = max(errors, 1)
        summary["ok"] = False
    finally:
        signal.alarm(0)
    return finish(summary, errors)


if __name__ == "__main__":
    sys.exit(main())
