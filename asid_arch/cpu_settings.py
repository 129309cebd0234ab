"""CPU tuning for the package's own commands: called by their ``main`` before torch is imported, never on import.

:func:`tune_cpu` makes three process-wide settings, each left alone when the user already chose it:

- ``THP_MEM_ALLOC_ENABLE=1``: PyTorch backs its CPU allocations with transparent huge pages. SR
  activations are tens of MB each; with 2 MB pages instead of 4 KB ones most page-fault time goes.
- ``OMP_WAIT_POLICY=PASSIVE`` (unless ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` is set): OpenMP threads
  wait without spinning, so a machine busy with other work does not slow every barrier down.
- glibc's malloc keeps freed blocks for reuse (:func:`keep_freed_memory`): large blocks are served from
  the heap and never trimmed, so activations do not page-fault and get zeroed again at every pass. The
  price is that the process keeps its peak memory until it exits; ``ASID_KEEP_FREED_MEMORY=0`` opts
  out, and a command whose memory is bounded (``asid-sr --max-memory``) asks for
  :func:`release_freed_memory` instead.

The environment variables act only if they are set before torch is imported (its allocator and OpenMP
read them once). A library must not change its host: importing ``asid_arch`` does none of this.
docs/performance.md gives the before/after figures and the command that measures them.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
from typing import Dict

M_TRIM_THRESHOLD = -1  # mallopt(3) parameters
M_MMAP_MAX = -4
DISABLED = -1  # M_TRIM_THRESHOLD = -1: never trim the heap
GLIBC_MMAP_MAX = 65536  # glibc's defaults
GLIBC_TRIM_THRESHOLD = 128 * 1024


def _mallopt(mmap_max: int, trim_threshold: int) -> bool:
    if platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc':
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
        return bool(libc.mallopt(M_MMAP_MAX, mmap_max)) and bool(libc.mallopt(M_TRIM_THRESHOLD, trim_threshold))
    except (OSError, AttributeError):
        return False


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to serve every block from the heap and never trim it. True if applied."""
    return _mallopt(0, DISABLED)


def release_freed_memory() -> bool:
    """Undo :func:`keep_freed_memory`: large blocks come from ``mmap`` again and go back to the kernel when
    freed, and the heap is trimmed, so that the peak follows what is in use. True if applied."""
    return _mallopt(GLIBC_MMAP_MAX, GLIBC_TRIM_THRESHOLD)


def tune_cpu(keep_freed: bool = True, passive_wait: bool = True) -> Dict[str, str]:
    """Apply the settings above (those the user has not chosen); returns what was set, for a log line.
    Call it before torch is imported; ``keep_freed=False`` asks for :func:`release_freed_memory`: glibc's
    default raises its mmap threshold each time a large block is freed, after which blocks of up to 32 MB stay
    in the heap and the peak grows past what is in use (``asid-sr --max-memory`` would not hold).
    ``passive_wait=False`` leaves OpenMP's waiting policy at its default, as the applications that host other
    runtimes run (``asid-bench onnx``: NCNN's many short layers run about 3x slower with passive waiting)."""
    applied: Dict[str, str] = {}
    if 'THP_MEM_ALLOC_ENABLE' not in os.environ:
        os.environ['THP_MEM_ALLOC_ENABLE'] = applied['THP_MEM_ALLOC_ENABLE'] = '1'
    if passive_wait and 'OMP_WAIT_POLICY' not in os.environ and 'GOMP_SPINCOUNT' not in os.environ:
        os.environ['OMP_WAIT_POLICY'] = applied['OMP_WAIT_POLICY'] = 'PASSIVE'
    if keep_freed and os.environ.get('ASID_KEEP_FREED_MEMORY', '1') != '0' and keep_freed_memory():
        applied['malloc'] = 'keep freed memory'
    elif not keep_freed and release_freed_memory():  # also fixes the mmap threshold (glibc's grows with use)
        applied['malloc'] = 'return freed memory'
    return applied
