"""What a result was produced with: package versions and the machine (for manifests and benchmark records)."""

from __future__ import annotations

import ctypes
import importlib.metadata
import os
import platform

PACKAGES = ("avatar4d", "torch", "mediapipe", "opencv-contrib-python", "av", "numpy")


def package_versions() -> dict[str, str]:
    out = {}
    for package in PACKAGES:
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out


def machine_description() -> dict[str, object]:
    """CPU model, cores, memory, GPU (if any), Python and torch versions."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory_gib = None
    try:
        memory_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": memory_gib,
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }


def pick_device(requested: str = "auto") -> "torch.device":  # noqa: F821
    """``auto``: the CUDA GPU when there is one, else the CPU."""
    import torch

    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 2**20
"""glibc's largest allowed ``M_MMAP_THRESHOLD`` on 64-bit machines (``HEAP_MAX_SIZE / 2``)."""


def keep_freed_memory(trim_threshold: int = 2**30) -> bool:
    """Ask glibc to keep freed tensor buffers for reuse instead of handing each back to the kernel.

    By default glibc serves every allocation over its mmap threshold (128 KiB, adapted upwards up to 32 MiB) with a
    fresh ``mmap`` and unmaps it when freed, so every large temporary tensor of a render or a training step costs
    page faults that zero its pages again. Raising the mmap threshold to its maximum and the trim threshold to
    ``trim_threshold`` makes freed buffers stay in the heap and be reused; memory stays bounded by the largest
    working set plus ``trim_threshold``. Does nothing (returns False) where the C library is not glibc, or when the
    user set ``GLIBC_TUNABLES`` themselves.
    """
    if "GLIBC_TUNABLES" in os.environ or platform.system() != "Linux":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(
            libc.mallopt(M_TRIM_THRESHOLD, trim_threshold))
    except (OSError, AttributeError):
        return False
