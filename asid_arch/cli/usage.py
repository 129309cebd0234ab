"""What every command shares for its arguments: the one-line usage error, the parser that reports argparse's
errors that way, and a command's parser described by its module docstring.

A user mistake in the arguments is one line on stderr and exit status 2 (``EXIT_USAGE``), before any work.
"""
from __future__ import annotations

import argparse
from typing import NoReturn

from ..console import EXIT_USAGE

PARAGRAPH = '\n\n'


class UsageError(Exception):
    """Bad arguments, found before any work: reported as one line, exit status 2."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with its errors as one line (not the usage block) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f'{self.prog}: error: {message} (see {self.prog} --help)\n')


def plain(text: str) -> str:
    """reST's double back-quotes as plain quotes, for ``--help``."""
    return text.replace('``', "'")


def command_parser(prog: str, doc: str, epilog: bool = False, **kwargs) -> ArgumentParser:
    """The parser of the command ``prog`` whose module docstring is ``doc``: its first paragraph the description,
    and, with ``epilog``, its paragraphs from the third on after the options (as written: no re-wrapping)."""
    paragraphs = doc.split(PARAGRAPH)
    if epilog:
        kwargs.update(epilog=PARAGRAPH.join(paragraphs[2:]), formatter_class=argparse.RawDescriptionHelpFormatter)
    return ArgumentParser(prog=prog, description=plain(paragraphs[0]), **kwargs)
