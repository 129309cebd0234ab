"""Files written atomically with the permissions a plain write gives, and checkpoints saved that way.

Kit file (``basicsr/utils/asid_files.py`` in a BasicSR checkout): the standard library only (torch is
imported when a checkpoint is saved), so writing a file costs no heavy import. The ``asid_arch`` package
writes every file through :func:`atomic_write` (images, option files, ONNX models, records), BasicSR
checkpoints through :func:`save_checkpoint`.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import stat
import tempfile
import time
from pathlib import Path
from typing import Callable, List, Optional, Union

from .asid_errors import CheckpointSaveError, printable

SAVE_ATTEMPTS = 3  # as BasicSR: a transient write error is retried ...
SAVE_RETRY_DELAY_S = 1.0  # ... after this pause
TEMP_SUFFIX = '.asid.tmp'  # atomic writes go to '.{name}.XXXXXXXX.asid.tmp' beside the target (a name no one else uses)
HASH_CHUNK_BYTES = 1 << 20  # bytes read at a time when hashing a file
TEMP_END = r'\.[a-z0-9_]{8}' + re.escape(TEMP_SUFFIX)  # what an atomic write adds: tempfile.mkstemp's 8 characters
TEMP_NAME = re.compile(r'\..*' + TEMP_END, re.DOTALL)
DEFAULT_NAME_MAX = 255  # bytes in one file name, where the file system does not say (Linux, macOS, Windows)
BASICSR_LOGGER = 'basicsr'  # the logger BasicSR's get_root_logger() sets up (its log file and console)


class NotARegularFile(OSError):
    """A path the package would read or replace is not a regular file (a FIFO, a device, a folder, a symlink
    loop, ...); the message (``str(err)``, one line) names the path and what it is."""


def path_kind(path: Union[str, Path], follow_symlinks: bool = True) -> str:
    """What stands at ``path``, in words: 'regular file', 'missing', 'folder', 'FIFO', 'character device',
    'block device', 'socket', 'symbolic link' (with ``follow_symlinks=False``), 'symbolic link loop',
    'broken symbolic link' or 'unreadable path (...)'. Never opens the path, so a FIFO or a device never blocks."""
    try:
        mode = (os.stat if follow_symlinks else os.lstat)(path).st_mode
    except FileNotFoundError:
        return 'broken symbolic link' if os.path.islink(path) else 'missing'
    except OSError as err:
        if err.errno == errno.ELOOP:
            return 'symbolic link loop'
        return f'unreadable path ({err.strerror or err})'
    for test, kind in ((stat.S_ISREG, 'regular file'), (stat.S_ISDIR, 'folder'), (stat.S_ISFIFO, 'FIFO'),
                       (stat.S_ISCHR, 'character device'), (stat.S_ISBLK, 'block device'),
                       (stat.S_ISSOCK, 'socket'), (stat.S_ISLNK, 'symbolic link')):
        if test(mode):
            return kind
    return 'special file'


def check_readable_file(path: Union[str, Path], what: str = 'file') -> Path:
    """``path`` when it is (or links to) a regular file; :class:`NotARegularFile` naming its kind otherwise.

    Call before opening anything from outside: opening a FIFO blocks until a writer comes, a device such as
    ``/dev/zero`` never ends, and neither is a file the package could use."""
    kind = path_kind(path)
    if kind != 'regular file':
        raise NotARegularFile(f'{what} {printable(path)} is a {kind}, not a regular file' if kind != 'missing'
                              else f'{what} {printable(path)} does not exist')
    return Path(path)


def check_replaceable(path: Union[str, Path], what: str = 'output') -> None:
    """Nothing at ``path``, or a regular file (not a link to one) that may be replaced; otherwise
    :class:`NotARegularFile` naming what stands there. Only regular files are ever replaced by the package."""
    kind = path_kind(path, follow_symlinks=False)
    if kind not in ('missing', 'regular file'):
        raise NotARegularFile(f'{what} {printable(path)} is a {kind}: only a regular file is ever replaced; '
                              'choose another name')


def name_max(folder: Union[str, Path]) -> int:
    """The longest file name (in bytes) the file system of ``folder`` (or of the nearest folder above it that
    exists) takes."""
    folder = os.path.abspath(folder)
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    try:
        return os.pathconf(folder, 'PC_NAME_MAX')
    except (OSError, ValueError, AttributeError):  # no pathconf (Windows) or no answer
        return DEFAULT_NAME_MAX


def _temporary_prefix(path: Path) -> str:
    """``.{name}.`` for the temporary file of ``path``, the name shortened so that the whole temporary name
    fits the file system (an output whose name is near the limit is still written)."""
    room = name_max(path.parent) - len(os.fsencode(f'..XXXXXXXX{TEMP_SUFFIX}'))
    name = path.name
    while len(os.fsencode(name)) > room and name:
        name = name[:-1]
    return f'.{name}.'


def is_temporary(name: str) -> bool:
    """``name`` is that of a temporary file :func:`atomic_write` makes (``.{name}.XXXXXXXX.asid.tmp``)."""
    return bool(TEMP_NAME.fullmatch(name))


def file_sha256(path: Union[str, Path]) -> str:
    """The sha256 of a regular file's content (a FIFO or a device is refused before it is opened)."""
    import hashlib

    digest = hashlib.sha256()
    with open(check_readable_file(path), 'rb') as f:
        for chunk in iter(lambda: f.read(HASH_CHUNK_BYTES), b''):
            digest.update(chunk)
    return digest.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _rename_new(tmp: str, path: Path) -> None:
    """Give ``tmp`` the name ``path`` only where nothing has that name (FileExistsError otherwise): atomic
    where the file system has hard links, checked just before the rename where it has not."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:  # no hard links (FAT, some network file systems)
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def atomic_write(path: Union[str, Path], write: Callable[[object], None], overwrite: bool = True,
                 check: Optional[Callable[[Path], None]] = None) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, then rename it to ``path``.

    A reader (or a resumed run) sees the old file or the complete new one. The temporary name
    starts with '.' and ends with '.asid.tmp' (:func:`is_temporary`), so scanners looking for ``*.png``,
    ``*.pth`` or ``*.state`` never pick up a half-written file, and the clean-up of killed writes
    (:func:`remove_stale_temporaries`) never takes a file of someone else. The result gets the permissions
    a plain ``open(path, 'wb')`` would give (0666 less the umask), not the temporary file's 0600.
    ``overwrite=False``: a file that exists at ``path`` (also one that appeared during the write) is kept,
    and FileExistsError raised. Only a regular file is ever replaced: anything else at ``path`` (a FIFO, a
    device such as ``/dev/null``, a folder, a link) raises :class:`NotARegularFile`, before and after the
    write. ``check(temporary path)``, when given, runs on the complete file before the rename: what it
    raises leaves nothing under ``path``. Whatever happens (an error, Ctrl-C, SIGTERM as ``Interrupted``), no
    temporary file stays behind.
    """
    path = Path(path)
    check_replaceable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_temporary_prefix(path), suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        if check is not None:
            check(Path(tmp))
        if overwrite:
            check_replaceable(path)  # (what appeared there meanwhile)
            os.replace(tmp, path)
        else:
            _rename_new(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def remove_stale_temporaries(folder: Union[str, Path]) -> List[Path]:
    """Delete the temporary files that writes of :func:`atomic_write` killed mid-way (``kill -9``, power loss)
    left in ``folder`` (that folder only): regular files named as :func:`is_temporary` says, nothing else (a
    user's ``.thesis.docx.tmp`` stays)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.iterdir()
             if is_temporary(p.name) and path_kind(p, follow_symlinks=False) == 'regular file']
    for path in stale:
        with contextlib.suppress(OSError):
            path.unlink()
    return stale


def save_checkpoint(obj: object, path: Union[str, Path], attempts: int = SAVE_ATTEMPTS,
                    delay: float = SAVE_RETRY_DELAY_S) -> None:
    """``torch.save`` atomically, retried like BasicSR's save; raises :class:`CheckpointSaveError` at the end."""
    import torch

    for attempt in range(1, attempts + 1):
        try:
            atomic_write(path, lambda f: torch.save(obj, f))
            return
        except OSError as err:
            if attempt == attempts or isinstance(err, NotARegularFile):  # (no use trying again)
                raise CheckpointSaveError(
                    f'cannot write the checkpoint {path} ({err.strerror or err}; tried {attempts} times). Training '
                    'stopped: going on without checkpoints would lose the work. Free space or fix the '
                    'permissions of that folder, then resume with --auto_resume.') from None
            logging.getLogger(BASICSR_LOGGER).warning(
                f'Save error for {path}: {err}; retrying ({attempts - attempt} left)')
            time.sleep(delay)
