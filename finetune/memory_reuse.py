"""Keep freed memory in the process for reuse: glibc malloc settings for the training and generation processes.

PyTorch on CPU allocates and frees the activations, gradients and logits of every step (tens to hundreds of MB
each). glibc serves blocks above its mmap threshold with fresh ``mmap`` calls and returns them on ``free``, and
trims the heap top back to the kernel, so every step page-faults its working set in again: ~200,000 minor faults
and ~0.5-0.8 s of system time per training step of the demo (SmolLM2-135M, 4 x 640 tokens, 2 cores). With the
mmap threshold and the trim threshold raised, freed blocks stay in the heap and the next step reuses them: no
faults, and steps 9% faster on that CPU (bench/NOTES.md, lever 26). Numerics are untouched; the cost is that the
process keeps its peak heap until it exits.

``FINETUNE_MALLOC_REUSE=0`` turns it off. Elsewhere than glibc (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_LARGEST = 2**31 - 1  # mallopt takes a C int
_ENV = "FINETUNE_MALLOC_REUSE"


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; True if both settings were taken.

    Call it early in a long-lived process that trains or generates (it affects later allocations only).
    """
    if os.environ.get(_ENV, "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _LARGEST)) and bool(mallopt(_M_TRIM_THRESHOLD, _LARGEST))
