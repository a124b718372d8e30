"""tinylm.memory.keep_freed_memory: freed arrays are reused instead of fresh pages.

Property: in a process that called it, allocating and freeing the same 40 MiB array
again and again costs (almost) no page faults; in one that did not, every allocation
above glibc's largest automatic mmap threshold (32 MiB) comes as fresh pages, at least one
fault per allocation (one per 4 KiB page, or per 2 MiB page where NumPy's transparent huge
pages are granted). Each case runs in its own Python process, since the setting is the
process's.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from tinylm.memory import keep_freed_memory

PROGRAM = """
import resource, sys
import numpy as np
from tinylm.memory import keep_freed_memory
took = keep_freed_memory() if sys.argv[1] == "keep" else False
np.ones(10 << 20, np.float32)  # the first time the heap grows (or a block is mapped)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    block = np.ones(10 << 20, np.float32)  # 40 MiB, written: every page touched
    del block
print(took, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode, **env):
    import os

    out = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, check=True,
                         env={**os.environ, **env}).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.fixture(scope="module")
def glibc():
    if not sys.platform.startswith("linux") or not faults("keep")[0]:
        pytest.skip("keep_freed_memory needs glibc's mallopt (Linux)")


def test_freed_blocks_are_reused_instead_of_fresh_pages(glibc):
    took, kept = faults("keep")
    _, default = faults("default")
    assert took
    assert default >= 10 * 10  # without it: fresh pages, 20 (huge) to 10,240 faults per allocation
    assert kept <= 20          # with it: the heap's pages are reused


def test_the_environment_can_leave_the_allocator_alone(glibc, monkeypatch):
    took, count = faults("keep", TINYLM_KEEP_FREED_MEMORY="0")
    assert not took and count >= 10 * 10
    monkeypatch.setenv("TINYLM_KEEP_FREED_MEMORY", "0")
    assert keep_freed_memory() is False


def test_a_long_run_keeps_its_memory_flat():
    """benchmarks/memory_flat.py trains through evaluations, samples, checkpoints and
    loss.png (ten of each here) and fails when RSS grew by more than 5% between the 30th
    and the 300th step; drawing loss.png in the training process grew it ~1 MiB a picture."""
    script = Path(__file__).parents[1] / "benchmarks" / "memory_flat.py"
    result = subprocess.run(
        [sys.executable, str(script), "--early", "30", "--late", "300", "--eval-every", "30", "--max-growth", "5",
         "--", "--embedding-dim", "16", "--hidden-dim", "32", "--n-layers", "1", "--batch-size", "8",
         "--seq-len", "16", "--sample-tokens", "20"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "RSS after 30 steps" in result.stdout
