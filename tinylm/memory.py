"""Keep freed memory in the process for the next training step (glibc's malloc).

A training step allocates and frees the same arrays every step: activations, gradients,
temporaries of a few megabytes each. glibc serves a request above its mmap threshold
(128 KiB at first; it rises as such blocks are freed, to at most 32 MiB) with fresh pages
from the kernel, and hands freed memory at the top of its heap back to the kernel above a
trim threshold. A fresh page costs a page fault, and the kernel zeroes it, the first time
it is written: thousands of faults and a good part of a training step in system time
(benchmarks/NOTES.md). With both thresholds raised the freed blocks stay in the heap and
are reused: a handful of faults a step.

This is a setting of the whole process, so tinylm does not make it on import:
``python -m tinylm.train`` and ``python -m tinylm.bench`` call ``keep_freed_memory()`` (the
benchmark in every worker, PyTorch's too, so both run on the same allocator), and a
script of your own can call it once at the start. The price is memory: the process keeps
up to ``trim_bytes`` of freed memory instead of returning it. Set
``TINYLM_KEEP_FREED_MEMORY=0`` to leave the allocator alone.
"""

from __future__ import annotations

import ctypes
import os
import sys

# mallopt's parameter numbers, from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_memory(mmap_bytes: int = 256 << 20, trim_bytes: int = 1 << 30) -> bool:
    """Serve blocks below ``mmap_bytes`` from the heap and keep up to ``trim_bytes`` of freed
    heap memory. True if the allocator took the setting: only glibc's does (on another
    C library, or with ``TINYLM_KEEP_FREED_MEMORY=0``, nothing changes and it is False)."""
    if os.environ.get("TINYLM_KEEP_FREED_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already runs on
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, int(mmap_bytes))) and bool(mallopt(_M_TRIM_THRESHOLD, int(trim_bytes)))
