"""Bounded downloads: a URL streamed into an open file, never waiting or writing without a limit.

What a server (or a mirror, or a proxy) can do is bounded here, whatever it sends:

* **stalls**: looking the host name up, connecting, and every read, time out after ``timeout_s`` seconds without
  an answer (the lookup runs in a thread of its own, waited on for that long: the system's resolver has no timeout
  of its own, and a thread whose lookup never ends is left behind, as a daemon; the connections to all the
  addresses a name gives share one ``timeout_s``);
* **trickles**: an attempt fails when fewer than ``min_rate`` bytes per second arrived over the last
  ``timeout_s`` seconds (a server sending 100 bytes every 2 s never stalls a read, but is refused);
* **size**: a ``Content-Length`` outside the expected range is refused before the body is read; the body is
  counted as it arrives and refused as soon as it would pass the largest size (nothing beyond it is
  written), or when it ends short of the smallest size or of its ``Content-Length``;
* **retries**: failures that may pass (a timeout, a reset connection, a short body, HTTP 408/429/5xx) are tried
  again, ``attempts`` times in all, each retry announced; the others (HTTP 404, a size out of range, a refused
  connection, an unknown host) are not;
* **waiting for another process**: :func:`folder_lock` takes an exclusive lock on a folder, says on stderr that
  (and for how long) it waits for another process holding it, and gives up after ``lock_wait_s`` seconds.

Environment (for sites with slow links or tests): ``ASID_DOWNLOAD_TIMEOUT`` (seconds, default
:data:`DEFAULT_TIMEOUT_S`), ``ASID_DOWNLOAD_LOCK_WAIT`` (seconds, default :data:`DEFAULT_LOCK_WAIT_S`).
Errors are :class:`DownloadError` with a one-line reason; writing the file (a full disk) raises OSError as is.
"""
from __future__ import annotations

import contextlib
import http.client
import math
import os
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Optional, Tuple

from .console import progress_bar, shown

TIMEOUT_ENV = 'ASID_DOWNLOAD_TIMEOUT'
LOCK_WAIT_ENV = 'ASID_DOWNLOAD_LOCK_WAIT'
DEFAULT_TIMEOUT_S = 20.0  # connect, or no byte at all, for this long: the attempt fails
DEFAULT_MIN_RATE = 4096  # bytes/s over each timeout window (a 3 MB file takes at most ~13 min at this rate)
DEFAULT_ATTEMPTS = 3
DEFAULT_RETRY_PAUSE_S = 2.0  # before the second attempt; doubled before each later one
DEFAULT_LOCK_WAIT_S = 900.0  # longer than a download that keeps the minimum rate for a few MB
LOCK_POLL_S = 0.2
LOCK_NOTE_EVERY_S = 30.0  # while waiting for another process, a line this often
CHUNK_BYTES = 64 << 10
RETRIED_HTTP_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
USER_AGENT = 'asid_arch'


class DownloadError(Exception):
    """A download that failed; ``str(err)`` is one line. ``retry``: whether another attempt may succeed."""

    def __init__(self, message: str, retry: bool = False) -> None:
        super().__init__(message)
        self.retry = retry


@dataclass(frozen=True)
class DownloadLimits:
    """The bounds of one download (see the module docstring)."""
    timeout_s: float = DEFAULT_TIMEOUT_S
    min_rate: float = DEFAULT_MIN_RATE
    attempts: int = DEFAULT_ATTEMPTS
    retry_pause_s: float = DEFAULT_RETRY_PAUSE_S
    lock_wait_s: float = DEFAULT_LOCK_WAIT_S

    @classmethod
    def from_env(cls) -> 'DownloadLimits':
        """The defaults, with ``ASID_DOWNLOAD_TIMEOUT`` / ``ASID_DOWNLOAD_LOCK_WAIT`` where set (a value that is
        not a positive number of seconds is a :class:`DownloadError` naming the variable)."""
        return cls(timeout_s=_seconds_from_env(TIMEOUT_ENV, DEFAULT_TIMEOUT_S),
                   lock_wait_s=_seconds_from_env(LOCK_WAIT_ENV, DEFAULT_LOCK_WAIT_S))


def _seconds_from_env(name: str, default: float) -> float:
    text = os.environ.get(name, '').strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise DownloadError(f'{name}={text!r} is not a positive number of seconds')
    return value


def size_text(n: float) -> str:
    """``1234567`` -> ``'1.18 MiB (1234567 bytes)'``."""
    for unit, size in (('GiB', 1 << 30), ('MiB', 1 << 20), ('KiB', 1 << 10)):
        if n >= size:
            return f'{n / size:.2f} {unit} ({int(n)} bytes)'
    return f'{int(n)} bytes'


def _reason(err: BaseException) -> Tuple[str, bool]:
    """``(one-line reason, retry?)`` for an exception raised while connecting or reading."""
    if isinstance(err, urllib.error.HTTPError):
        return f'HTTP {err.code} {err.reason}', err.code in RETRIED_HTTP_STATUS
    if isinstance(err, urllib.error.URLError) and not isinstance(err.reason, str):
        err = err.reason if isinstance(err.reason, BaseException) else err
    if isinstance(err, ConnectionStall):  # a resolver or addresses that do not answer may answer later: tried again
        return str(err), True
    if isinstance(err, (socket.timeout, TimeoutError)):
        return 'timed out', True
    if isinstance(err, socket.gaierror):  # lasting failures (offline): not tried again
        return f'cannot resolve the host name ({err.strerror or err})', False
    if isinstance(err, ConnectionRefusedError):
        return f'connection refused ({err.strerror or err})', False
    if isinstance(err, urllib.error.URLError):
        return str(err.reason), False
    if isinstance(err, (http.client.HTTPException, OSError)):
        detail = getattr(err, 'strerror', None) or str(err) or type(err).__name__
        return f'{type(err).__name__}: {detail}', True
    return f'{type(err).__name__}: {err}', False


class ConnectionStall(socket.timeout):
    """The host name lookup, or the connections to the addresses it gave, did not answer within the time allowed;
    the message says which."""


def _resolve(host: str, port: int, timeout_s: float) -> list:
    """``socket.getaddrinfo(host, port)`` for a stream socket, or :class:`ConnectionStall` after ``timeout_s``
    seconds without an answer (the lookup goes on in its daemon thread, its answer dropped)."""
    answer: dict = {}
    done = threading.Event()

    def look_up() -> None:
        try:
            answer['addresses'] = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
        except Exception as err:  # (gaierror, or anything the resolver raises): raised in the caller
            answer['error'] = err
        finally:
            done.set()

    threading.Thread(target=look_up, name=f'asid-resolve-{host}', daemon=True).start()
    if not done.wait(timeout_s):
        raise ConnectionStall(f'cannot resolve the host name {host}: no answer within {timeout_s:g} s')
    if 'error' in answer:
        raise answer['error']
    return answer['addresses']


def _bounded_connection(address: Tuple[str, int], timeout: Optional[float] = None,
                        source_address: Optional[tuple] = None) -> socket.socket:
    """``socket.create_connection`` (what http.client connects with), bounded: the host name lookup by ``timeout``
    (:func:`_resolve`), then the connections to the addresses it gives, tried in turn, by ``timeout`` in all (a
    name with many addresses that do not answer cannot add up to more); the last failure raised."""
    host, port = address
    wait = timeout if isinstance(timeout, (int, float)) and timeout > 0 else DEFAULT_TIMEOUT_S
    addresses = _resolve(host, port, wait)
    deadline = time.monotonic() + wait
    failure: Optional[OSError] = None
    for tried, (family, kind, proto, _, sockaddr) in enumerate(addresses):
        left = deadline - time.monotonic()
        if left <= 0:
            raise ConnectionStall(f'no connection to {host} within {wait:g} s ({tried} of its {len(addresses)} '
                                  'addresses tried)')
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(min(wait, left))
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
            sock.settimeout(timeout)
            return sock
        except OSError as err:
            failure = err
            sock.close()
    raise failure or OSError(f'the host name {host} resolves to no address')


class _Sockets:
    """The sockets one attempt opened (redirects included), shut down at once when its deadline passes: a server
    that trickles its headers or its chunk framing, which no read timeout catches, then ends the attempt too."""

    def __init__(self) -> None:
        self.expired = False
        self._sockets: list = []
        self._lock = threading.Lock()

    def add(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                self._shut(sock)

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                self._shut(sock)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _opener(sockets: _Sockets) -> urllib.request.OpenerDirector:
    """urllib's opener for http and https only (no ftp, file or data URL, also not by a redirect), its
    connections made by :func:`_bounded_connection` and their sockets handed to ``sockets``."""
    class Connection(http.client.HTTPConnection):
        def connect(self) -> None:
            self._create_connection = _bounded_connection
            super().connect()
            sockets.add(self.sock)

    class SecureConnection(http.client.HTTPSConnection):
        def connect(self) -> None:
            self._create_connection = _bounded_connection
            super().connect()
            sockets.add(self.sock)

    class Handler(urllib.request.HTTPHandler):
        def http_open(self, req):
            return self.do_open(Connection, req)

    class SecureHandler(urllib.request.HTTPSHandler):
        def https_open(self, req):
            return self.do_open(SecureConnection, req, context=self._context)

    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), urllib.request.UnknownHandler(), Handler(), SecureHandler(),
                    urllib.request.HTTPDefaultErrorHandler(), urllib.request.HTTPRedirectHandler(),
                    urllib.request.HTTPErrorProcessor()):
        opener.add_handler(handler)
    return opener


def attempt_deadline(size_range: Tuple[int, int], limits: DownloadLimits) -> float:
    """Seconds one attempt may take in all: connecting and the headers, then the largest file at the minimum rate."""
    return 2 * limits.timeout_s + size_range[1] / limits.min_rate


def _attempt(url: str, out: BinaryIO, size_range: Tuple[int, int], limits: DownloadLimits, bar) -> None:
    """One attempt: ``url`` -> ``out`` from its start, within ``limits`` and :func:`attempt_deadline`;
    :class:`DownloadError` otherwise."""
    sockets = _Sockets()
    deadline = attempt_deadline(size_range, limits)
    timer = threading.Timer(deadline, sockets.expire)
    timer.daemon = True
    timer.start()
    try:
        _transfer(url, out, size_range, limits, bar, _opener(sockets))
    except DownloadError as err:
        if sockets.expired:
            raise DownloadError(f'no complete answer within {deadline:.0f} s (the time the largest file takes at '
                                f'{int(limits.min_rate)} bytes/s)', retry=True) from None
        raise err from None
    finally:
        timer.cancel()
    if sockets.expired:  # (the last bytes came just as the deadline passed): not taken
        raise DownloadError(f'no complete answer within {deadline:.0f} s', retry=True)


def _transfer(url: str, out: BinaryIO, size_range: Tuple[int, int], limits: DownloadLimits, bar,
              opener: urllib.request.OpenerDirector) -> None:
    low, high = size_range
    expected = f'the file is {size_text(low)} to {size_text(high)}' if low < high else f'the file is {size_text(low)}'
    out.seek(0)
    out.truncate()
    request = urllib.request.Request(url, headers={'User-Agent': USER_AGENT})
    try:
        response = opener.open(request, timeout=limits.timeout_s)
    except Exception as err:  # everything urllib raises while connecting is the server's (or the network's)
        reason, retry = _reason(err)
        raise DownloadError(reason, retry) from None
    with response:
        length_text = response.headers.get('Content-Length')
        length = None
        if length_text is not None:
            try:
                length = int(length_text)
            except ValueError:
                raise DownloadError(f'the server sent the Content-Length {length_text[:40]!r}') from None
            if not low <= length <= high:
                raise DownloadError(f'the server announces {size_text(length)}; {expected}: refused before '
                                    'reading it')
        bar.reset(total=length)
        received = 0
        read = getattr(response, 'read1', response.read)  # one read of the socket: a trickle is seen as it comes
        window_start, window_bytes = time.monotonic(), 0
        while True:
            try:
                chunk = read(CHUNK_BYTES)
            except Exception as err:  # a reset, a timeout, a broken chunked body: the server's
                reason, retry = _reason(err)
                raise DownloadError(f'{reason} after {size_text(received)}', retry) from None
            if not chunk:
                break
            if received + len(chunk) > high:
                raise DownloadError(f'the server sent more than {size_text(high)}; {expected}: refused, nothing '
                                    'beyond that was written')
            out.write(chunk)
            received += len(chunk)
            window_bytes += len(chunk)
            bar.update(len(chunk))
            now = time.monotonic()
            if now - window_start >= limits.timeout_s:
                if window_bytes < limits.min_rate * (now - window_start):
                    raise DownloadError(f'too slow: {window_bytes} bytes in the last {now - window_start:.0f} s, '
                                        f'below {int(limits.min_rate)} bytes/s (after {size_text(received)})',
                                        retry=True)
                window_start, window_bytes = now, 0
    if length is not None and received != length:
        raise DownloadError(f'the connection closed after {size_text(received)} of the {size_text(length)} '
                            'announced', retry=True)
    if received < low:
        raise DownloadError(f'the server sent {size_text(received)}; {expected}')


def download(url: str, out: BinaryIO, size_range: Tuple[int, int], limits: Optional[DownloadLimits] = None,
             progress: bool = True, label: str = 'download') -> int:
    """Stream ``url`` into the open binary file ``out`` (rewritten from its start at each attempt) within
    ``limits`` (default :meth:`DownloadLimits.from_env`); the body must be ``size_range[0]`` to
    ``size_range[1]`` bytes. Returns the number of bytes written; raises :class:`DownloadError` (the last
    attempt's reason and the number of attempts) when it cannot, OSError when ``out`` cannot be written."""
    limits = limits or DownloadLimits.from_env()
    with progress_bar(total=None, unit='B', unit_scale=True, unit_divisor=1024, desc=label, disable=not progress,
                      leave=False) as bar:
        for attempt in range(1, limits.attempts + 1):
            try:
                _attempt(url, out, size_range, limits, bar)
                return out.tell()
            except DownloadError as err:
                if not err.retry or attempt == limits.attempts:
                    tried = f' ({attempt} attempts)' if attempt > 1 else ''
                    raise DownloadError(f'{err}{tried}', err.retry) from None
                pause = limits.retry_pause_s * 2 ** (attempt - 1)
                bar.write(f'asid_arch: {label}: {err}; trying again in {pause:g} s (attempt {attempt + 1} of '
                          f'{limits.attempts})', file=sys.stderr)  # (a line of its own, above the progress bar)
                time.sleep(pause)
    raise AssertionError('unreachable: the loop returns or raises')


@contextlib.contextmanager
def folder_lock(folder: Path, what: str, wait_s: float) -> Iterator[None]:
    """An exclusive ``flock`` on ``folder`` (where flock exists) for the duration of the block.

    When another process holds it, one line says so (``what`` it is doing, the longest wait), another every
    :data:`LOCK_NOTE_EVERY_S` seconds, and after ``wait_s`` seconds :class:`DownloadError` is raised."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): no lock
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _wait_for_lock(fd, folder, what, wait_s)
        except OSError:  # a file system without flock: go on unlocked
            pass
        yield
    finally:
        os.close(fd)


def _wait_for_lock(fd: int, folder: Path, what: str, wait_s: float) -> None:
    import fcntl

    start = time.monotonic()
    print(f'asid_arch: another process is {what} in {shown(folder)}; waiting for it (at most {wait_s:g} s, '
          f'{LOCK_WAIT_ENV})', file=sys.stderr)
    noted = start
    while True:
        time.sleep(LOCK_POLL_S)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        now = time.monotonic()
        if now - start >= wait_s:
            raise DownloadError(f'another process has been {what} in {shown(folder)} for over {wait_s:g} s; gave up '
                                f'waiting (stop that process, or raise {LOCK_WAIT_ENV})')
        if now - noted >= LOCK_NOTE_EVERY_S:
            noted = now
            print(f'asid_arch: still waiting for the other process ({now - start:.0f} s of at most {wait_s:g} s)',
                  file=sys.stderr)
