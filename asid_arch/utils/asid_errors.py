"""The errors the kit raises for the user, each with a message meant to be shown as it is.

Kit file (``basicsr/utils/asid_errors.py`` in a BasicSR checkout): standard library only.
"""
import os
from pathlib import Path
from typing import Union

FIRST_LINE_CHARS = 300  # an exception's message, cut for a one-line report


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none), for one-line reports."""
    text = str(err).strip()
    return text.splitlines()[0][:FIRST_LINE_CHARS] if text else type(err).__name__


def printable(path: Union[str, bytes, os.PathLike, Path]) -> str:
    """``path`` for a message, also when its name is not valid UTF-8 (as ``asid_arch.console.shown``, which
    the kit files cannot import)."""
    return os.fsencode(path).decode('utf-8', 'backslashreplace')


class TrainingDiverged(FloatingPointError):
    """The training loss became NaN or infinite."""


class CheckpointSaveError(OSError):
    """A checkpoint could not be written: the run stops instead of training on without one."""


class PretrainedWeightsError(ValueError):
    """A weights file that cannot be used, with a message meant for the user."""
