"""What every command shares: printable file names, the exit status of an interrupted command, progress bars."""
from __future__ import annotations

import io
import os
import signal
import types

import pytest

from asid_arch.console import Interrupted, bars_of, interrupt_exit_status, interrupt_name, progress_bar, shown

from helpers import write_images


def test_shown_keeps_a_name_on_one_printable_line():
    assert shown(os.fsdecode(b'x\xff.png')) == 'x\\xff.png'  # not UTF-8: the byte, escaped
    assert shown('a\nb\r.png') == 'a\\x0ab\\x0d.png'  # control characters would split or overwrite the line
    assert shown('tab\there\x1b[31m') == 'tab\\x09here\\x1b[31m'
    assert shown('Zürich/été.png') == 'Zürich/été.png'  # readable text stays as it is
    assert shown(b'raw\xfe') == 'raw\\xfe'


def test_interrupted_commands_exit_128_plus_the_signal():
    assert interrupt_exit_status(KeyboardInterrupt()) == 130 and interrupt_name(KeyboardInterrupt()) == 'Ctrl-C'
    assert interrupt_exit_status(Interrupted(signal.SIGTERM)) == 143
    assert interrupt_name(Interrupted(signal.SIGTERM)) == 'SIGTERM'


def test_stop_on_signals_owns_the_signals_for_the_command_and_gives_them_back():
    """A host that ignores Ctrl-C (or replaced its handler) still gets a command's summary and exit status."""
    import pytest

    from asid_arch.console import stop_on_signals

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for signum, raised in ((signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, Interrupted)):
            with pytest.raises(raised) as info, stop_on_signals():
                os.kill(os.getpid(), signum)
            assert interrupt_exit_status(info.value) == 128 + signum
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # the host's choice is back
    finally:
        signal.signal(signal.SIGINT, previous)


class Stream(io.StringIO):
    """A text stream that says whether it is a terminal."""

    def __init__(self, terminal: bool) -> None:
        super().__init__()
        self.terminal = terminal

    def isatty(self) -> bool:
        return self.terminal


def test_progress_bars_are_drawn_on_terminals_only():
    for terminal in (True, False):
        stream = Stream(terminal)
        assert sum(progress_bar(range(40), file=stream, mininterval=0)) == sum(range(40))
        assert ('40/40' in stream.getvalue()) is terminal, stream.getvalue()
    stream = Stream(True)
    for _ in progress_bar(range(3), file=stream, disable=True):
        pass
    assert stream.getvalue() == ''


def test_bars_of_a_library_module_are_the_package_bars_for_the_block():
    module = types.ModuleType('library')
    module.tqdm = original = object()
    with bars_of(module):
        assert module.tqdm is progress_bar
    assert module.tqdm is original
    with pytest.raises(KeyError), bars_of(module):
        raise KeyError('the block failed')
    assert module.tqdm is original


def test_lmdb_progress_is_not_drawn_into_a_log(tmp_path, capfd):
    """BasicSR's LMDB writer redraws its bar once per image: into a file or a pipe, nothing of it is written."""
    from asid_arch.data.prepare import prepare_train

    write_images(tmp_path / 'hr', 2, size=(64, 80))
    report = prepare_train(tmp_path / 'hr', tmp_path / 'train', 'bars', [2], crop=32, step=16)
    assert not report.failed and (tmp_path / 'train' / 'bars_HR_sub.lmdb' / 'data.mdb').is_file()
    err = capfd.readouterr().err
    assert '\r' not in err and 'Write ' not in err, err[-400:]


def test_a_stream_whose_reader_went_away_drops_what_is_written():
    from asid_arch.console import SurvivingStream

    read_end, write_end = os.pipe()
    stream = SurvivingStream(os.fdopen(write_end, 'w'))
    os.close(read_end)  # the reader is gone (`| head` exited)
    assert stream.write('progress\n') == len('progress\n')
    stream.flush()  # EPIPE: from now on the descriptor leads to os.devnull
    stream.write('summary\n')
    stream.flush()
    assert os.path.samefile(f'/proc/self/fd/{write_end}', os.devnull)
    stream.close()


def test_a_command_ends_ctrl_c_with_one_line_and_130(capsys):
    import sys

    import pytest

    from asid_arch.console import command

    @command('asid-x', '; run it again')
    def main() -> int:
        raise KeyboardInterrupt

    streams = (sys.stdout, sys.stderr)
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 130 and (sys.stdout, sys.stderr) == streams
    assert capsys.readouterr().err == 'asid-x: stopped by Ctrl-C; run it again\n'


def test_a_message_that_cannot_be_encoded_is_written_with_escapes_and_the_stream_stays():
    """A path that is not valid UTF-8 in a message: escaped, and later messages still arrive (the stream is not
    taken for closed)."""
    from asid_arch.console import SurvivingStream

    buffer = io.BytesIO()
    stream = SurvivingStream(io.TextIOWrapper(buffer, encoding='utf-8', write_through=True))
    stream.write('asid-export: error: d\udcff is a folder\n')
    stream.write('next line\n')
    assert buffer.getvalue() == b'asid-export: error: d\\udcff is a folder\nnext line\n'


def test_a_second_ctrl_c_during_the_clean_up_of_the_first_is_ignored(capsys, monkeypatch):
    """Real SIGINTs: the first stops the command; one during its clean-up (a ``finally`` block) and one while the
    stop is being reported are ignored, so the clean-up ends and the command exits 130 with one line."""
    from asid_arch import console
    from asid_arch.console import command, stop_on_signals

    cleaned = []
    real_close = console.close_progress_bars

    def close_with_a_third_ctrl_c() -> None:
        os.kill(os.getpid(), signal.SIGINT)
        real_close()

    monkeypatch.setattr(console, 'close_progress_bars', close_with_a_third_ctrl_c)

    @command('asid-x')
    def main() -> int:
        with stop_on_signals():
            try:
                os.kill(os.getpid(), signal.SIGINT)
            finally:
                os.kill(os.getpid(), signal.SIGINT)  # the user presses Ctrl-C again while it cleans up
                cleaned.append('done')
        return 0

    handler = signal.getsignal(signal.SIGINT)
    for _ in range(2):  # and the next command in the same process is stopped by its first Ctrl-C again
        cleaned.clear()
        with pytest.raises(SystemExit) as exit_info:
            main()
        assert exit_info.value.code == 130 and cleaned == ['done']
        assert capsys.readouterr().err == 'asid-x: stopped by Ctrl-C\n'
        assert signal.getsignal(signal.SIGINT) is handler  # the host's handler is back


# A console script as pip writes it (asid_arch/cli/entry.py's entry function), run with a test-only
# sitecustomize that stops the process on the first import of a given module: it writes to a pipe and waits there,
# and the test sends the real SIGINT (then ten more, 10 ms apart, while it is on its way out)
SCRIPT = 'import re, sys\nfrom asid_arch.cli.entry import {entry}\nsys.exit({entry}())\n'
WAIT_ON_IMPORT = '''import os, sys, time
class WaitOnImport:
    def find_spec(self, name, path=None, target=None):
        if name == os.environ['ASID_TEST_WAIT_ON']:
            sys.meta_path.remove(self)
            os.write(int(os.environ['ASID_TEST_READY_FD']), b'.')
            time.sleep(60)
        return None
sys.meta_path.insert(0, WaitOnImport())
'''
IMPORT_MOMENTS = [  # command, arguments, the import it is interrupted in
    ('asid-prepare', ['bench', '--hr', 'hr', '--out', 'out'], 'asid_arch.cli.prepare'),
    ('asid-prepare', ['bench', '--hr', 'hr', '--out', 'out'], 'numpy'),
    ('asid-prepare', ['bench', '--hr', 'hr', '--out', 'out'], 'cv2'),
    ('asid-sr', ['a.png', '-o', 'o', '-m', 'm.pth'], 'numpy'),
    ('asid-sr', ['a.png', '-o', 'o', '-m', 'm.pth'], 'torch'),
    ('asid-export', ['-m', 'm.pth', '-o', 'x.onnx'], 'cv2'),
    ('asid-export', ['-m', 'm.pth', '-o', 'x.onnx'], 'torch'),
    ('asid-train', ['-opt', 'x.yml'], 'torch'),
]


@pytest.mark.parametrize('prog, args, moment', IMPORT_MOMENTS, ids=[f'{p}-{m}' for p, _, m in IMPORT_MOMENTS])
def test_ctrl_c_while_a_console_script_imports_is_one_line_and_130(tmp_path, prog, args, moment):
    import select
    import subprocess
    import sys
    import time

    from asid_arch.cli.entry import entry_name

    from helpers import REPO

    (tmp_path / 'hook').mkdir()
    (tmp_path / 'hook' / 'sitecustomize.py').write_text(WAIT_ON_IMPORT)
    ready, signal_end = os.pipe()
    env = {**os.environ, 'PYTHONPATH': f'{tmp_path / "hook"}{os.pathsep}{REPO}', 'ASID_TEST_WAIT_ON': moment,
           'ASID_TEST_READY_FD': str(signal_end)}
    code = SCRIPT.format(entry=entry_name(prog))
    child = subprocess.Popen([sys.executable, '-c', code, *args], cwd=tmp_path, env=env, pass_fds=(signal_end, ),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    os.close(signal_end)
    try:
        assert select.select([ready], [], [], 120)[0] and os.read(ready, 1) == b'.', f'{moment} was not imported'
        child.send_signal(signal.SIGINT)
        for _ in range(10):  # Ctrl-C pressed again and again while it stops
            time.sleep(0.01)
            if child.poll() is None:
                child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=120)
    finally:
        os.close(ready)
        if child.poll() is None:
            child.kill()
    lines = (out + err).strip().splitlines()
    assert child.returncode == 130 and len(lines) == 1, (child.returncode, lines[-12:])
    assert lines[0].startswith(f'{prog}: stopped by Ctrl-C'), lines
