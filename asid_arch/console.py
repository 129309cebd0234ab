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
* :func:`progress_bar` is every progress bar of the package (and, through :func:`bars_of`, BasicSR's LMDB
  writer's): drawn on stderr when it is a terminal, not at all when it is a file or a pipe (a log, CI),
  where each redraw would add to one ever longer line.
* :func:`command_session` wraps every command: a closed stdout or stderr (``asid-sr dir/ 2>&1 | head``)
  never stops the work (what cannot be shown is dropped), and a Ctrl-C (or SIGTERM/SIGHUP inside
  :func:`stop_on_signals`) that no inner summary handles ends the command with one line, never a traceback.
* Only the first signal stops a command: once it is on its way out (clean-up, summary), a second Ctrl-C is
  ignored (:func:`_stop_once`), so that it cannot break the clean-up of the first.
* :func:`run_entry` is every console script (``asid_arch/cli/entry.py``): Ctrl-C is answered from its first line
  on, also while the command still imports NumPy, OpenCV or torch, and after the first signal the process ignores
  the later ones until it has exited.

This module imports nothing heavy: the commands use it before torch is loaded.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import importlib
import os
import signal
import sys
from types import ModuleType
from typing import Callable, ContextManager, Iterable, Iterator, Optional, TextIO, TypeVar, Union

Main = TypeVar('Main', bound=Callable)

EXIT_OK = 0  # everything asked for was done
EXIT_FAILED = 1  # the command ran and some of the work failed (each failure is named)
EXIT_USAGE = 2  # the command could not start: arguments, model, option file
GONE_ERRNOS = (errno.EPIPE, errno.EBADF, errno.ECONNRESET)  # the reader of an output stream is gone
STREAM_FDS = (1, 2)  # the descriptors of stdout and stderr
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


class _Stopping:
    """The signal that set the running command on its way out (None while it works)."""
    signum: Optional[int] = None


def _stop_once(signum: int, frame) -> None:
    """The handler of the signals that stop a command: the first raises ``KeyboardInterrupt`` (Ctrl-C) or
    :class:`Interrupted`; a later one is ignored, the command being already on its way out."""
    if _Stopping.signum is not None:
        return
    _Stopping.signum = signum
    raise KeyboardInterrupt if signum == signal.SIGINT else Interrupted(signum)


@contextlib.contextmanager
def _stopping_on(signums: Iterable[int]) -> Iterator[None]:
    """Inside the block, ``signums`` are handled by :func:`_stop_once` (the handlers are restored afterwards);
    the outermost such block starts with no signal received."""
    previous = {}
    try:
        if signal.getsignal(signal.SIGINT) is not _stop_once:
            _Stopping.signum = None
        for signum in signums:
            previous[signum] = signal.signal(signum, _stop_once)
    except ValueError:  # not the main thread
        pass
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def stop_on_signals() -> ContextManager[None]:
    """Inside the block, Ctrl-C (SIGINT) raises ``KeyboardInterrupt`` and SIGTERM and SIGHUP raise
    :class:`Interrupted`, whatever handlers the process had (restored afterwards): a host that ignores
    SIGINT, or replaced its handler, still gets the command's summary and exit status. Only the first signal
    is raised; later ones are ignored while the command cleans up.

    Only the main thread can install handlers; elsewhere (a command called from a worker thread)
    this does nothing.
    """
    return _stopping_on((signal.SIGINT, *STOP_SIGNALS))


def shown(path: Union[str, bytes, os.PathLike]) -> str:
    """``path`` as printable text on one line: bytes that are not UTF-8 and control characters (a newline in a
    file name, say) appear as ``\\xNN`` escapes."""
    text = os.fsencode(path).decode('utf-8', 'backslashreplace')
    return ''.join(f'\\x{ord(ch):02x}' if ch.isascii() and not ch.isprintable() else ch for ch in text)


def progress_bar(iterable: Optional[Iterable] = None, **kwargs):
    """A tqdm progress bar on stderr (``kwargs``: tqdm's), drawn only where stderr is a terminal.

    Where it is not (a file, a pipe: logs and CI), tqdm's carriage-return redraws would pile up on a single
    line (one per item), so the bar is off (tqdm's ``disable=None``); the commands' summaries say what was done.
    ``disable=True`` turns it off on a terminal too."""
    from tqdm import tqdm

    kwargs.setdefault('file', sys.stderr)
    if not kwargs.get('disable'):
        kwargs['disable'] = None  # tqdm: off unless `file` is a terminal
    return tqdm(iterable, **kwargs)


@contextlib.contextmanager
def bars_of(module: ModuleType) -> Iterator[None]:
    """Inside the block, ``module``'s bars (a library module that did ``from tqdm import tqdm``, such as
    ``basicsr.utils.lmdb_util``) are :func:`progress_bar`\\ s; put back as they were after it."""
    saved = module.tqdm
    module.tqdm = progress_bar
    try:
        yield
    finally:
        module.tqdm = saved


class SurvivingStream:
    """A text stream (stdout, stderr) whose reader may go away: once a write or flush fails because the pipe
    is closed (``| head``), the stream's file descriptor is pointed at ``os.devnull`` and everything later is
    dropped, so that the work goes on and the interpreter's final flush does not fail either."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def _gone(self) -> None:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, self._stream.fileno())
            finally:
                os.close(devnull)

    def _guarded(self, call, *args):
        try:
            return call(*args)
        except OSError as err:
            if err.errno not in GONE_ERRNOS:
                raise
        except ValueError:
            if not getattr(self._stream, 'closed', False):  # an encoding error is no closed stream
                raise
        self._gone()
        return None

    def write(self, text: str) -> int:
        try:
            self._guarded(self._stream.write, text)
        except UnicodeEncodeError:  # (a file name that is not valid UTF-8): written with escapes, never dropped
            encoding = getattr(self._stream, 'encoding', None) or 'utf-8'
            self._guarded(self._stream.write, text.encode(encoding, 'backslashreplace').decode(encoding))
        return len(text)

    def flush(self) -> None:
        self._guarded(self._stream.flush)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def close_progress_bars() -> None:
    """Close the tqdm progress bars still open (the work they showed was interrupted), so that their last state
    ends its line before the command's last message, and is not drawn again after it when they are collected."""
    module = sys.modules.get('tqdm')
    for bar in list(getattr(getattr(module, 'tqdm', None), '_instances', ())):
        with contextlib.suppress(Exception):
            bar.close()


def surviving(stream: Optional[TextIO], fd: int) -> SurvivingStream:
    """``stream`` as a :class:`SurvivingStream`. None (descriptor ``fd`` was closed when the process started,
    ``2>&-``): ``fd`` is opened on ``os.devnull`` first, so that no file the command opens later takes that number
    and receives what is written to it."""
    if isinstance(stream, SurvivingStream):
        return stream
    if stream is None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        if devnull != fd:
            os.dup2(devnull, fd)
            os.close(devnull)
        stream = open(fd, 'w', closefd=False)
    return SurvivingStream(stream)


@contextlib.contextmanager
def command_session(prog: str, stopped: str = '') -> Iterator[None]:
    """The frame of a command's ``main``: stdout and stderr survive a reader that goes away
    (:class:`SurvivingStream`), and a ``KeyboardInterrupt`` that reaches this level (Ctrl-C during the imports,
    or in a command without a summary of its own) prints ``{prog}: stopped by Ctrl-C{stopped}`` and exits
    with 130 (128 + N for a signal N that :func:`stop_on_signals` turned into :class:`Interrupted`); a second
    Ctrl-C meanwhile is ignored. The process's streams and its SIGINT handler are restored on the way out."""
    saved: Optional[tuple] = (sys.stdout, sys.stderr)
    sys.stdout, sys.stderr = (surviving(stream, fd) for stream, fd in zip(saved, STREAM_FDS))
    try:
        with _stopping_on((signal.SIGINT, )):  # (the report below included: a second Ctrl-C is ignored there)
            try:
                yield
            except KeyboardInterrupt as err:
                close_progress_bars()
                print(f'{prog}: stopped by {interrupt_name(err)}{stopped}', file=sys.stderr)
                raise SystemExit(interrupt_exit_status(err)) from None
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
    finally:
        sys.stdout, sys.stderr = saved


def command(prog: str, stopped: str = '') -> Callable[[Main], Main]:
    """Decorator of a command's ``main``: it runs inside :func:`command_session` (``prog``, ``stopped``)."""
    def decorate(main: Main) -> Main:
        @functools.wraps(main)
        def run(*args, **kwargs):
            with command_session(prog, stopped):
                return main(*args, **kwargs)
        return run  # type: ignore[return-value]
    return decorate


def run_entry(prog: str, target: str) -> object:
    """A console script: ``target`` (``module:function``, a command's ``main``: ``asid_arch.cli.sr:main``), imported
    and run with Ctrl-C answered from the start: one line ``{prog}: stopped by Ctrl-C`` and exit status 130 also
    while the module still imports NumPy, OpenCV or torch (then its ``main`` has not taken over yet). After the
    first signal the process ignores Ctrl-C, SIGTERM and SIGHUP (at the system level, so also through the
    interpreter's shutdown): it is already on its way out, and a second Ctrl-C would break its clean-up."""
    try:
        _Stopping.signum = None
        signal.signal(signal.SIGINT, _stop_once)
        with command_session(prog):
            module, _, function = target.partition(':')
            return getattr(importlib.import_module(module), function)()
    finally:
        if _Stopping.signum is not None:
            for signum in (signal.SIGINT, *STOP_SIGNALS):
                signal.signal(signum, signal.SIG_IGN)
