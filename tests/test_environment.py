"""The allocator setting the tool makes at start-up."""

from __future__ import annotations

import subprocess
import sys

import pytest


def run(code: str, **env: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={"PATH": "/usr/bin:/bin", **env}).stdout.strip()


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's mallopt")
def test_keep_freed_memory_lets_large_buffers_be_reused_without_new_page_faults():
    """A step that holds a dozen 8 MiB buffers and frees them (as a render chunk or a training step does): by default
    glibc hands the freed memory back to the kernel and the next step faults every page in again; with the setting
    the pages are reused."""
    code = """
import resource, numpy as np
from avatar4d.environment import keep_freed_memory
if {keep}:
    assert keep_freed_memory()
def step():
    buffers = [np.ones(2 * 2**20, np.float32) for _ in range(12)]
    return sum(float(b[::4096].sum()) for b in buffers)
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
    kept = int(run(code.format(keep=True)))
    default = int(run(code.format(keep=False)))
    assert default > 10 * 2000  # by default thousands of pages fault in again every step
    assert kept < default / 20


def test_keep_freed_memory_leaves_a_users_own_tunables_alone():
    code = "from avatar4d.environment import keep_freed_memory; print(keep_freed_memory())"
    assert run(code, GLIBC_TUNABLES="glibc.malloc.trim_threshold=1") == "False"
