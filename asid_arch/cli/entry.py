"""The console scripts: ``COMMANDS`` (the one list of the package's commands and their ``main``; setup.py makes a
script of each) and their entry functions, ``asid_prepare`` for ``asid-prepare`` and so on.

A script imports this module only (nothing heavy) and calls its entry function, which imports the command's module
inside :func:`asid_arch.console.run_entry`: a Ctrl-C while NumPy, OpenCV or torch are still being imported is
answered like one during the work, with one line and exit status 130.
"""
from __future__ import annotations

import functools
from typing import Callable

from ..console import run_entry

COMMANDS = {  # command -> its main (module:function)
    'asid-prepare': 'asid_arch.cli.prepare:main',
    'asid-train': 'asid_arch.cli.train:main',
    'asid-test': 'asid_arch.cli.test:main',
    'asid-sr': 'asid_arch.cli.sr:main',
    'asid-export': 'asid_arch.cli.export:main',
    'asid-bench': 'asid_arch.bench.main:main',
    'asid-kit': 'asid_arch.cli.kit:main',
}


def entry_name(command: str) -> str:
    """The entry function of a command: ``asid-prepare`` -> ``asid_prepare``."""
    return command.replace('-', '_')


def __getattr__(name: str) -> Callable[[], object]:
    """The entry function ``name`` (:func:`entry_name` of a command): runs that command's ``main``."""
    for command, target in COMMANDS.items():
        if entry_name(command) == name:
            return functools.partial(run_entry, command, target)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
