"""What every command of the package shares: exit statuses, signals, and printing file names.

* Exit statuses: 0 the result is complete, 1 some work failed (each failure named), 2 the command
  could not start (bad arguments, unusable model or option file), 128 + N stopped by signal N
  (130 for Ctrl-C, 143 for SIGTERM) after printing what was done; 75 (asid-train only) stopped by SIGTERM
  or SIGUSR1 after saving the iteration it was in: run it again (``--auto_resume``) to continue.
* :func:`stop_on_signals` turns SIGTERM (and SIGHUP) into :class:`Interrupted`, a ``KeyboardInterrupt``,
  so that a command stopped by ``kill`` unwinds like one stopped by Ctrl-C: temporary files are
  removed by the ``finally`` blocks of the writes in progress, and the command prints its summary.
* :func:`shown` prints any path, also one whose name is not valid UTF-8 (``x\\xff.png``), without
  raising ``UnicodeEncodeError`` on the way.

This module imports nothing heavy: the commands use it before torch is loaded.
"""
from __future__ import annotations

import contextlib
import os
import signal
from typing import Iterator, Union

EXIT_OK = 0  # everything asked for was done
EXIT_FAILED = 1  # the command ran and some of the work failed (each failure is named)
EXIT_USAGE = 2  # the command could not start: arguments, model, option file
EXIT_REQUEUE = 75  # sysexits' EX_TEMPFAIL: asid-train stopped on a signal with its state saved; run it again
SIGNAL_EXIT_BASE = 128  # shell convention: stopped by signal N -> 128 + N

STOP_SIGNALS = tuple(getattr(signal, name) for name in ('SIGTERM', 'SIGHUP') if hasattr(signal, name))


class Interrupted(KeyboardInterrupt):
    """The command was asked to stop by a signal (Ctrl-C is a plain ``KeyboardInterrupt``)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def interrupt_exit_status(err: KeyboardInterrupt) -> int:
    """130 for Ctrl-C, 128 + N for :class:`Interrupted` by signal N."""
    return SIGNAL_EXIT_BASE + (err.signum if isinstance(err, Interrupted) else signal.SIGINT)


def interrupt_name(err: KeyboardInterrupt) -> str:
    """'Ctrl-C' or the signal's name, for the summary line."""
    return signal.Signals(err.signum).name if isinstance(err, Interrupted) else 'Ctrl-C'


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Inside the block, Ctrl-C (SIGINT) raises ``KeyboardInterrupt`` and SIGTERM and SIGHUP raise
    :class:`Interrupted`, whatever handlers the process had (restored afterwards): a host that ignores
    SIGINT, or replaced its handler, still gets the command's summary and exit status.

    Only the main thread can install handlers; elsewhere (a command called from a worker thread)
    this does nothing.
    """
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    def stop(signum, frame):
        raise Interrupted(signum)

    previous = {}
    try:
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, interrupt)
        for signum in STOP_SIGNALS:
            previous[signum] = signal.signal(signum, stop)
    except ValueError:  # not the main thread
        pass
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def shown(path: Union[str, bytes, os.PathLike]) -> str:
    """``path`` as printable text on one line: bytes that are not UTF-8 and control characters (a newline in a
    file name, say) appear as ``\\xNN`` escapes."""
    text = os.fsencode(path).decode('utf-8', 'backslashreplace')
    return ''.join(f'\\x{ord(ch):02x}' if ch.isascii() and not ch.isprintable() else ch for ch in text)
