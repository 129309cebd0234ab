"""Peak memory of this process on Linux, from ``/proc``: the resident size now, and the high-water mark
since it was last reset (``clear_refs``), so that each figure's peak is its own."""
from __future__ import annotations

PROC_STATUS = '/proc/self/status'
PROC_CLEAR_REFS = '/proc/self/clear_refs'
RESET_PEAK_RSS = '5'  # what clear_refs takes to reset VmHWM (Linux >= 4.0)
KIB = 1024


def _status_bytes(field: str) -> int:
    with open(PROC_STATUS) as f:
        return next(int(line.split()[1]) * KIB for line in f if line.startswith(field + ':'))


def reset_peak_rss() -> int:
    """Reset the process's peak RSS and return the current RSS in bytes."""
    with open(PROC_CLEAR_REFS, 'w') as f:
        f.write(RESET_PEAK_RSS)
    return _status_bytes('VmRSS')


def peak_rss_since_reset() -> int:
    """The largest RSS, in bytes, since :func:`reset_peak_rss`."""
    return _status_bytes('VmHWM')
