"""The download's bounds (asid_arch.download, through asid_arch.released.fetch) against a hostile mirror on
127.0.0.1: headers then nothing, a trickle, a huge Content-Length, an endless body, a transient error, and a
second process waiting for the cache's lock. Every case ends in seconds (small limits given as parameters or
through the environment)."""
from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time

import cv2
import pytest

from asid_arch.download import (CHUNK_BYTES, LOCK_WAIT_ENV, TIMEOUT_ENV, DownloadError, DownloadLimits,
                                attempt_deadline, download, folder_lock, size_text)
from asid_arch.released import RELEASED, WeightsDownloadError, fetch

from helpers import run_module, synthetic_image

NAME = 'asid_x2'
ENTRY = RELEASED[NAME]
FAST = DownloadLimits(timeout_s=1.0, attempts=2, retry_pause_s=0.05, lock_wait_s=2.0)
BOUND_S = 10.0  # each refused case below ends well within this (its limits add up to 2-4 s)


def timed_fetch(**kwargs):
    start = time.monotonic()
    try:
        fetch(NAME, progress=False, **kwargs)
    except WeightsDownloadError as err:
        return str(err), time.monotonic() - start
    raise AssertionError('the download was accepted')


def test_headers_then_nothing_times_out_and_is_retried(mirror, files, tmp_path):
    mirror.serve(NAME, files[NAME], 'stall')
    message, elapsed = timed_fetch(limits=FAST)
    assert 'timed out' in message and '(2 attempts)' in message and len(mirror.requests) == 2
    assert elapsed < BOUND_S and os.listdir(tmp_path / 'cache') == []


def test_a_trickle_is_refused_below_the_minimum_rate(mirror, files, tmp_path):
    """100 bytes every 0.25 s never stalls a read (timeout 1 s), but is far below the minimum rate."""
    mirror.serve(NAME, files[NAME], 'drip')
    message, elapsed = timed_fetch(limits=DownloadLimits(timeout_s=1.0, attempts=1))
    assert 'too slow' in message and 'bytes/s' in message
    assert elapsed < BOUND_S and os.listdir(tmp_path / 'cache') == []


def test_headers_trickled_a_byte_at_a_time_end_at_the_attempt_deadline(mirror, files, tmp_path):
    """A server that sends its headers a byte at a time never lets a read time out, and reads no body: the attempt's
    wall-clock deadline (connect and headers, then the largest file at the minimum rate) ends it."""
    mirror.serve(NAME, files[NAME], 'trickle-headers')
    limits = DownloadLimits(timeout_s=1.0, min_rate=2e6, attempts=1)
    message, elapsed = timed_fetch(limits=limits)
    assert 'no complete answer within' in message, message
    assert attempt_deadline(ENTRY.size_range, limits) <= elapsed < BOUND_S and os.listdir(tmp_path / 'cache') == []


def test_a_huge_content_length_is_refused_before_reading(mirror, files, tmp_path):
    mirror.serve(NAME, files[NAME], 'huge')
    message, elapsed = timed_fetch(limits=FAST)
    assert 'announces 2.79 GiB (3000000000 bytes)' in message and 'refused before reading it' in message
    assert len(mirror.requests) == 1 and elapsed < BOUND_S and os.listdir(tmp_path / 'cache') == []


def test_an_endless_body_is_cut_at_the_largest_size(mirror, files, tmp_path):
    mirror.serve(NAME, files[NAME], 'endless')
    message, elapsed = timed_fetch(limits=FAST)
    assert f'more than {size_text(ENTRY.size_range[1])}' in message and 'nothing beyond that was written' in message
    assert len(mirror.requests) == 1 and elapsed < BOUND_S and os.listdir(tmp_path / 'cache') == []


def test_nothing_is_written_past_the_largest_size(mirror):
    """The body goes to the file chunk by chunk; the chunk that would pass the bound is not written. The bound
    is more than one read (CHUNK_BYTES) above zero, so that whatever the server has sent by the first read, the
    chunks before the one that passes it are written."""
    body = bytes(range(256)) * 40  # 10 KB per round of the server
    mirror.serve(NAME, body, 'endless')
    out = io.BytesIO()
    largest = 3 * CHUNK_BYTES
    with pytest.raises(DownloadError, match=re.escape(f'more than {size_text(largest)}')):
        download(f'{mirror.url}/{ENTRY.path}', out, (1000, largest), FAST, progress=False)
    assert largest - CHUNK_BYTES < len(out.getvalue()) <= largest


def test_a_transient_error_is_retried(mirror, files, tmp_path, capsys):
    mirror.serve(NAME, files[NAME], 'fail-once')
    assert fetch(NAME, progress=False, limits=FAST).read_bytes() == files[NAME]
    assert 'HTTP 503' in capsys.readouterr().err and len(mirror.requests) == 2


@pytest.mark.parametrize('scheme', ['http', 'https'])
def test_a_host_name_lookup_that_never_answers_fails_in_bounded_time(monkeypatch, scheme):
    """The system's resolver has no timeout: one that hangs (a stand-in here) ends each attempt after timeout_s,
    with a line naming the host; the stuck lookups are let go when the test ends."""
    import socket
    import threading

    release, asked = threading.Event(), []

    def hanging_resolver(host, *args, **kwargs):
        asked.append(host)
        release.wait(60)
        raise socket.gaierror(socket.EAI_AGAIN, 'released by the test')

    monkeypatch.setattr(socket, 'getaddrinfo', hanging_resolver)
    for name in [name for name in os.environ if name.lower().endswith('_proxy')]:  # the host itself is looked up
        monkeypatch.delenv(name)
    outcome = []

    def run() -> None:
        start = time.monotonic()
        try:
            download(f'{scheme}://weights.example.invalid/asid.pth', io.BytesIO(), (1, 100), FAST, progress=False)
            outcome.append(('accepted', time.monotonic() - start))
        except DownloadError as err:
            outcome.append((str(err), time.monotonic() - start))

    worker = threading.Thread(target=run, daemon=True)
    try:
        worker.start()
        worker.join(BOUND_S)
        assert outcome, f'the download still waits for the resolver after {BOUND_S} s'
        message, elapsed = outcome[0]
        assert message == ('cannot resolve the host name weights.example.invalid: no answer within 1 s '
                           f'({FAST.attempts} attempts)'), message
        assert asked == ['weights.example.invalid'] * FAST.attempts
        assert FAST.attempts * FAST.timeout_s <= elapsed < FAST.attempts * (FAST.timeout_s + 1)
    finally:
        release.set()


def test_a_host_with_many_addresses_that_never_answer_is_given_up_in_bounded_time(monkeypatch):
    """A name that resolves to ten addresses whose connections hang (stand-in sockets): the connections of an
    attempt share one timeout_s, not ten."""
    import socket

    class Silent:
        """A socket whose connection never answers: ``connect`` waits out its timeout."""

        def __init__(self, *args) -> None:
            self.timeout = None

        def settimeout(self, value) -> None:
            self.timeout = value

        def connect(self, address) -> None:
            time.sleep(self.timeout)
            raise socket.timeout('timed out')

        def close(self) -> None:
            pass

    import types

    from asid_arch import download as download_module

    addresses = [(socket.AF_INET, socket.SOCK_STREAM, 6, '', (f'192.0.2.{k}', 80)) for k in range(1, 11)]
    stand_in = types.SimpleNamespace(**{**vars(socket), 'socket': Silent,
                                        'getaddrinfo': lambda *args, **kwargs: addresses})
    monkeypatch.setattr(download_module, 'socket', stand_in)  # the downloader's sockets only (not the process's)
    for name in [name for name in os.environ if name.lower().endswith('_proxy')]:
        monkeypatch.delenv(name)
    start = time.monotonic()
    with pytest.raises(DownloadError) as info:
        download('http://many.example.invalid/asid.pth', io.BytesIO(), (1, 100), FAST, progress=False)
    elapsed = time.monotonic() - start
    assert str(info.value) == (f'no connection to many.example.invalid within 1 s (1 of its 10 addresses tried) '
                               f'({FAST.attempts} attempts)'), str(info.value)
    assert FAST.attempts * FAST.timeout_s <= elapsed < FAST.attempts * (FAST.timeout_s + 1)


def test_limits_from_the_environment(monkeypatch):
    monkeypatch.setenv(TIMEOUT_ENV, '1.5')
    monkeypatch.setenv(LOCK_WAIT_ENV, '3')
    limits = DownloadLimits.from_env()
    assert (limits.timeout_s, limits.lock_wait_s) == (1.5, 3.0)
    for bad in ('0', '-1', 'nan', 'inf', 'soon'):
        monkeypatch.setenv(TIMEOUT_ENV, bad)
        with pytest.raises(DownloadError, match=f'{TIMEOUT_ENV}=.* is not a positive number of seconds'):
            DownloadLimits.from_env()


HOLD_LOCK = '''import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_EX)
print('held', flush=True)
time.sleep(float(sys.argv[2]))
'''


def hold_lock(folder, seconds: float) -> subprocess.Popen:
    """Another process holding the cache folder's lock for ``seconds``."""
    holder = subprocess.Popen([sys.executable, '-c', HOLD_LOCK, str(folder), str(seconds)], stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == 'held'
    return holder


@pytest.mark.skipif(not hasattr(os, 'fork'), reason='flock is POSIX')
def test_waiting_for_another_process_is_said_and_bounded(mirror, files, tmp_path, capsys):
    mirror.serve(NAME, files[NAME])
    (tmp_path / 'cache').mkdir()
    holder = hold_lock(tmp_path / 'cache', 30)
    try:
        message, elapsed = timed_fetch(limits=DownloadLimits(lock_wait_s=1.0))
    finally:
        holder.kill()
        holder.wait()
    assert 'another process has been downloading released weights in' in message and LOCK_WAIT_ENV in message
    assert 1.0 <= elapsed < BOUND_S and not mirror.requests
    assert f'waiting for it (at most 1 s, {LOCK_WAIT_ENV})' in capsys.readouterr().err


@pytest.mark.skipif(not hasattr(os, 'fork'), reason='flock is POSIX')
def test_the_lock_released_in_time_lets_the_download_go_on(mirror, files, tmp_path, capsys):
    mirror.serve(NAME, files[NAME])
    (tmp_path / 'cache').mkdir()
    holder = hold_lock(tmp_path / 'cache', 0.5)
    try:
        assert fetch(NAME, progress=False, limits=FAST).read_bytes() == files[NAME]
    finally:
        holder.wait()
    assert 'waiting for it' in capsys.readouterr().err


def test_folder_lock_is_exclusive_between_open_files(tmp_path):
    with folder_lock(tmp_path, 'testing', 1.0):
        with pytest.raises(DownloadError, match='for over 0.3 s'):
            with folder_lock(tmp_path, 'testing', 0.3):
                pass


@pytest.mark.slow
def test_asid_sr_against_a_stalled_mirror_exits_2_in_bounded_time(mirror, files, tmp_path, monkeypatch):
    """Issue 26: headers then nothing hung ``asid-sr -m asid_x2`` forever. ASID_DOWNLOAD_TIMEOUT=1: three attempts
    (with 2 s and 4 s pauses) end the command in seconds with one line."""
    mirror.serve(NAME, files[NAME], 'stall')
    cv2.imwrite(str(tmp_path / 'tiny.png'), synthetic_image(12, 16, 0))
    monkeypatch.setenv(TIMEOUT_ENV, '1')
    done = run_module('asid_arch.cli.sr', ['tiny.png', '-o', 'out', '-m', NAME], tmp_path, timeout=120)
    assert done.returncode == 2, done.stderr
    assert re.search(r'timed out after 0 bytes \(3 attempts\)', done.stderr) and 'Traceback' not in done.stderr
    assert len(mirror.requests) == 3 and os.listdir(tmp_path / 'cache') == []
