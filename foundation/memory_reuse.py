"""Keep freed memory in the process for reuse: glibc malloc settings while training or generating.

PyTorch on CPU allocates and frees the activations, gradients and logits of every step (tens to hundreds of MB
each). glibc serves blocks above its mmap threshold with fresh ``mmap`` calls and returns them on ``free``, and
trims the heap top back to the kernel, so every step page-faults its working set in again: ~200,000 minor faults
and 0.5-1.6 s of system time per training step of the demo (SmolLM2-135M, 4 x 640 tokens, 2 cores). With the mmap
and trim thresholds raised, freed blocks stay in the heap and the next step reuses them: no faults, and steps
9-18% faster on that CPU in paired runs (bench/NOTES.md, lever 26). Numerics are untouched.

The cost is memory the heap keeps: with the setting on for the demo's whole flow process, its largest process
peaked at 17.8 GB where it had peaked at 9.9 GB. A process that does one job until it exits (a DeepSpeed rank)
calls :func:`keep_freed_memory`; the flow's own process wraps each training or generation job in
:func:`reusing_freed_memory`, which hands the heap back to the kernel when the job ends. That scope did not lower
the demo's peak (17.6 GB).

So the setting is chosen at start from the machine's memory (:func:`reuse_decision`): on where the RAM this
process may use (physical memory, or the cgroup's limit in a container) is at least :data:`REUSE_NEEDS_GB`, off
(slower, leaner) below; ``FINETUNE_MALLOC_REUSE=1`` or ``=0`` decides instead. The run's summary states which.
Elsewhere than glibc (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import sys
from contextlib import contextmanager
from typing import Iterator

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_LARGEST = 2**31 - 1  # mallopt takes a C int
_GLIBC_START = 128 * 1024  # glibc's initial mmap and trim thresholds
_ENV = "FINETUNE_MALLOC_REUSE"
REUSE_NEEDS_GB = 20.0  # the CPU demo peaked at 17.8 GB with the setting on (9.9 GB off), plus room for the system
_CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def usable_ram_gb() -> float | None:
    """The RAM this process may use, in GB: physical memory, or a container's (cgroup) limit where lower."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
    for limit_file in _CGROUP_LIMITS:
        try:
            text = open(limit_file).read().strip()
        except OSError:
            continue
        if text.isdigit():
            ram = min(ram, int(text))
    return ram / 1e9


def reuse_decision(env: dict[str, str] | None = None, ram_gb: float | None = None) -> tuple[bool, str]:
    """Whether to keep freed memory for reuse, and why (one line for the run's summary and log)."""
    value = (os.environ if env is None else env).get(_ENV, "").strip()
    if value in ("0", "1"):
        return value == "1", f"{'on' if value == '1' else 'off'}: set by {_ENV}={value}"
    ram = usable_ram_gb() if ram_gb is None else ram_gb
    if ram is None:
        return True, f"on: RAM size unknown; {_ENV}=0 gives the leaner, slower setting"
    if ram >= REUSE_NEEDS_GB:
        return True, (f"on (faster steps): {ram:.0f} GB RAM >= the {REUSE_NEEDS_GB:.0f} GB it needs; "
                      f"{_ENV}=0 for the leaner setting")
    return False, (f"off (leaner, slower steps): {ram:.0f} GB RAM < the {REUSE_NEEDS_GB:.0f} GB the faster setting "
                   f"needs; {_ENV}=1 forces it")


def _glibc() -> ctypes.CDLL | None:
    """glibc, with ``mallopt`` and ``malloc_trim`` typed; None where reuse is off or the C library is not glibc."""
    if not reuse_decision()[0] or not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def _set_thresholds(libc: ctypes.CDLL, value: int) -> bool:
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, value)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, value))


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for the rest of this process; True if both settings were taken.

    For a process that trains or generates until it exits; it affects later allocations only.
    """
    libc = _glibc()
    return libc is not None and _set_thresholds(libc, _LARGEST)


@contextmanager
def reusing_freed_memory() -> Iterator[bool]:
    """Keep freed memory for reuse inside the block; at its end collect garbage, set glibc's initial thresholds
    back (fixed, as glibc's dynamic mmap threshold cannot be turned back on) and return the free heap to the
    kernel. Yields whether the settings were taken."""
    libc = _glibc()
    taken = libc is not None and _set_thresholds(libc, _LARGEST)
    try:
        yield taken
    finally:
        if libc is not None:
            gc.collect()
            _set_thresholds(libc, _GLIBC_START)
            libc.malloc_trim(0)
