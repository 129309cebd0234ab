"""What every command shares: printable file names, the exit status of an interrupted command."""
from __future__ import annotations

import os
import signal

from asid_arch.console import Interrupted, interrupt_exit_status, interrupt_name, shown


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
