"""NVML (package nvidia-ml-py, imported as pynvml only when asked for), failure-tolerant.

Absent package, no driver or any NVML error -> None: the /proc scan in gpu.py alone
decides. Stdlib only at import: the node prolog loads this.
"""

from __future__ import annotations


class Nvml:
    """A thin, failure-tolerant view of NVML for a few GPU indices.

    Slurm's GPU index is the device file's minor number (/dev/nvidiaN), which is not
    always NVML's own order: devices are matched by minor number where NVML gives it.
    """

    def __init__(self, pynvml, handles: dict[int, object]):
        self.nv = pynvml
        self.handles = handles

    @classmethod
    def open(cls, gpu_indices) -> Nvml | None:
        try:
            import pynvml  # deferred: the package is optional
        except ImportError:
            return None
        try:
            pynvml.nvmlInit()
        except Exception:  # noqa: BLE001 - no driver, no device, library missing
            return None
        try:
            by_minor: dict[int, object] = {}
            for i in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(i)
                try:
                    minor = pynvml.nvmlDeviceGetMinorNumber(handle)
                except Exception:  # noqa: BLE001 - not on every platform
                    minor = i
                by_minor[minor] = handle
            handles = {g: by_minor[g] for g in gpu_indices if g in by_minor}
        except Exception:  # noqa: BLE001 - NVML errors have no common base we can import: treat as no NVML
            cls._shutdown(pynvml)
            return None
        return cls(pynvml, handles)

    @staticmethod
    def _shutdown(pynvml) -> None:
        try:
            pynvml.nvmlShutdown()
        except Exception:  # noqa: BLE001 - a failing shutdown leaves nothing for us to do
            pass

    def close(self) -> None:
        self._shutdown(self.nv)

    def processes(self) -> dict[int, list[tuple[int, int | None]]]:
        """GPU index -> [(pid, used bytes or None)] of its compute processes."""
        out = {}
        for gpu, handle in self.handles.items():
            procs = self.nv.nvmlDeviceGetComputeRunningProcesses(handle)
            out[gpu] = [(p.pid, getattr(p, "usedGpuMemory", None)) for p in procs]
        return out

    def memory_used(self) -> dict[int, int]:
        return {gpu: int(self.nv.nvmlDeviceGetMemoryInfo(h).used) for gpu, h in self.handles.items()}


def nvml_processes(gpu_indices) -> dict[int, list[tuple[int, int | None]]] | None:
    """GPU index -> [(pid, used bytes)] from NVML; None without NVML."""
    nvml = Nvml.open(gpu_indices)
    if nvml is None:
        return None
    try:
        return nvml.processes()
    except Exception:  # noqa: BLE001 - any NVML failure reads as "no NVML"
        return None
    finally:
        nvml.close()
