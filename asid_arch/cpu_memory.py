"""Keep freed CPU memory in the process instead of handing it back to the kernel (glibc only).

SR activations are tens to hundreds of MB. glibc serves blocks that large with ``mmap`` and unmaps
them on ``free``, so every new activation page-faults and is zeroed by the kernel again; the
memory it does keep on the heap is trimmed back as soon as its top grows large. After
:func:`keep_freed_memory`, freed blocks are reused as they are: ASID x4 on a 320x180 input spent
a fifth of its CPU time in the kernel before and almost none after (see README, "Speed").
The price is that the process keeps its peak memory until it exits, and that blocks freed in one
size are not reused for larger ones: ``asid-sr`` on 3200x2400 at x2 with ``--max-memory 0.5`` peaked
at 0.55 GB above its fixed cost with it, 0.42 GB without. A command whose memory is bounded
(``asid-sr``) calls :func:`release_freed_memory` instead.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import platform

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
