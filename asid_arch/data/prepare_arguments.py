"""The checks of ``asid-prepare``'s arguments, made before any work: a bad one ends the run with one line naming
it and exit status 2 (:func:`usage_error`)."""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Iterable, List, NoReturn, Optional, Sequence, Tuple, Union

from ..console import EXIT_USAGE, shown
from ..image_reader import IMAGE_SUFFIXES, ImageError, header_size
from ..utils.asid_files import name_max, path_kind

LMDB_SUFFIX = '.lmdb'
LMDB_CONTENTS = ('data.mdb', 'lock.mdb', 'meta_info.txt')  # what an LMDB of BasicSR's make_lmdb_from_imgs holds
MAX_HR_PIXELS = 100_000_000  # an HR image larger than this is refused from its header, before any work
HR_BYTES_PER_PIXEL = 70  # peak memory per HR pixel: the file, the decoded image, the bicubic step (float copies)


def hr_need(pixels: int) -> float:
    """Bytes asid-prepare needs for an HR image of ``pixels`` (what the bicubic step holds at its peak)."""
    return HR_BYTES_PER_PIXEL * pixels


def check_hr_sizes(images: Sequence[Path], option: str) -> None:
    """Exit 2 when an image of ``option`` is larger than :data:`MAX_HR_PIXELS` (its header says), naming the
    memory it would need; unreadable files are left to the run, which names them."""
    for path in images:
        try:
            width, height = header_size(path)
        except (ImageError, OSError):
            continue
        if width * height > MAX_HR_PIXELS:
            usage_error(f'{option} {shown(path)}: {width}x{height} is {width * height / 1e6:.1f} M pixels, above '
                        f'asid-prepare\'s limit of {MAX_HR_PIXELS / 1e6:.0f} M (it would need about '
                        f'{hr_need(width * height) / 1e9:.1f} GB)')


def usage_error(message: str) -> NoReturn:
    """One line naming the argument or file, exit status 2 (before any work)."""
    print(f'asid-prepare: {message}', file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


def list_images(folder: Path) -> List[Path]:
    if not folder.is_dir():
        usage_error(f'{shown(folder)} is not a folder')
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def user_images(folder: Path, option: str) -> List[Path]:
    """The images of a folder the user named (``option``); exits with status 2 and a hint when it is not a
    folder or holds none (e.g. a data set root whose images sit in an ``HR`` subfolder)."""
    if not folder.is_dir():
        what = 'is a file, not a folder' if folder.exists() else 'is not a folder (it does not exist)'
        usage_error(f'{option} {shown(folder)} {what}')
    try:
        images = list_images(folder)
        # named like an image but not a regular file (a FIFO would block the read, a device never end): said, by kind
        odd = [(p, path_kind(p)) for p in sorted(folder.iterdir())
               if p.suffix.lower() in IMAGE_SUFFIXES and path_kind(p) != 'regular file']
    except OSError as err:
        usage_error(f'{option} {shown(folder)} cannot be read ({err.strerror or err})')
    if odd:
        names = ', '.join(f'{shown(p.name)} is a {kind}' for p, kind in odd[:3])
        more = f' (and {len(odd) - 3} more)' if len(odd) > 3 else ''
        usage_error(f'{option} {shown(folder)}: {names}{more}, not an image file: move it out of the folder')
    if not images:
        subs = []
        with contextlib.suppress(OSError):
            subs = [p for p in sorted(folder.iterdir()) if p.is_dir() and list_images(p)]
        hint = f'; did you mean {shown(subs[0])}?' if subs else ''
        usage_error(f'{option} {shown(folder)} holds no images ({", ".join(sorted(IMAGE_SUFFIXES))}){hint}')
    check_hr_sizes(images, option)
    return images


def check_scales(scales: Sequence[int]) -> None:
    for s in scales:
        if s < 1:
            usage_error(f'--scales: scales must be positive integers, got {s}')
    repeated = sorted({s for s in scales if list(scales).count(s) > 1})
    if repeated:
        usage_error(f'--scales {" ".join(map(str, scales))}: scale {repeated[0]} is given twice')


def check_crop(scales: Sequence[int], crop: int, step: int, thresh: int) -> None:
    """Sub-image settings BasicSR can use: positive crop and step, thresh >= 0, and for every scale s a crop
    and step that are multiples of s (the LR crops are crop/s with step/s)."""
    check_scales(scales)
    if crop < 1:
        usage_error(f'--crop-size must be a positive number of pixels, got {crop}')
    if step < 1:
        usage_error(f'--step must be a positive number of pixels, got {step}')
    if thresh < 0:
        usage_error(f'--thresh must be 0 or more pixels, got {thresh}')
    for s in scales:
        if crop < s:
            usage_error(f'--crop-size {crop} is smaller than scale {s}: the x{s} sub-images would be empty')
        if crop % s or step % s:
            usage_error(f'--crop-size {crop} and --step {step} must be multiples of scale {s}')


def utf8_name(path: Union[str, Path]) -> bool:
    """``path`` is valid UTF-8 (an option file can name it; OpenCV's imread does not crash on it)."""
    try:
        os.fsencode(path).decode('utf-8')
    except UnicodeDecodeError:
        return False
    return True


def writable_folder(path: Path) -> bool:
    return os.access(path, os.W_OK | os.X_OK)


def check_utf8_out(out: Path) -> None:
    """Option files (YAML) cannot name a folder whose name is not UTF-8, and BasicSR's LMDB builder reads
    with OpenCV's imread, which crashes the process on such a name."""
    if not utf8_name(out):
        usage_error(f'--out {shown(out)}: the path is not valid UTF-8 (BasicSR option files cannot name it); '
                    'choose another folder')


def check_out(out: Path, folders: Iterable[Path], files: Iterable[Path] = ()) -> None:
    """``--out`` is, or can be made as, a writable folder named in UTF-8 (:func:`check_utf8_out`); each output
    folder in ``folders`` (all under ``out``) that exists is a writable folder and no symbolic link, nor under
    one below ``out`` (:func:`link_below`): the run writes and removes its outputs only in the tree ``--out``
    names; each of ``files`` (the record, the lock) is a readable, writable regular file when it exists."""
    check_utf8_out(out)
    if os.path.lexists(out):
        if not out.is_dir():
            usage_error(f'--out {shown(out)} is a file, not a folder' if out.exists() else
                        f'--out {shown(out)} is a broken link')
        if not writable_folder(out):
            usage_error(f'--out {shown(out)} is not writable')
    else:
        parent = Path(os.path.abspath(out)).parent
        while not os.path.lexists(parent):
            parent = parent.parent
        if not parent.is_dir() or not writable_folder(parent):
            usage_error(f'--out {shown(out)} cannot be created: {shown(parent)} is not a writable folder')
    for folder in folders:
        link = link_below(out, folder)
        if link is not None:
            usage_error(f'{shown(link)} is in the way: it is a symbolic link (to {shown(os.readlink(link))}) where an '
                        'output folder goes, and asid-prepare writes only into folders under --out, never through a '
                        'link; move it away, or give its target as --out')
        if os.path.lexists(folder):
            if not folder.is_dir():
                usage_error(f'{shown(folder)} is in the way: an output folder goes there; move it away or choose '
                            'another --out')
            if not writable_folder(folder):
                usage_error(f'{shown(folder)} is not writable')
            check_folder_contents(folder)
    for path in files:
        if os.path.lexists(path):
            if os.path.islink(path) or not path.is_file():
                usage_error(f'{shown(path)} is not a regular file; move it away')
            if not os.access(path, os.R_OK | os.W_OK):
                usage_error(f'{shown(path)} cannot be read and written')


def link_below(out: Path, folder: Path) -> Optional[Path]:
    """The first symbolic link on the way from ``out`` (itself not counted: the user named it) down to ``folder``
    (under it), or None."""
    path = out
    for part in folder.relative_to(out).parts:
        path = path / part
        if os.path.islink(path):
            return path
        if not os.path.lexists(path):
            return None
    return None


def check_folder_contents(folder: Path) -> None:
    """Nothing that is not a regular file stands where an output of ``folder`` goes (an image ``*.png`` of an
    image folder; any entry of an LMDB folder, which is replaced whole): only regular files are ever replaced."""
    try:
        entries = list(os.scandir(folder))
    except OSError as err:
        usage_error(f'{shown(folder)} cannot be listed ({err.strerror or err})')
    for entry in entries:
        if folder.suffix == LMDB_SUFFIX:
            if entry.name not in LMDB_CONTENTS or not entry.is_file(follow_symlinks=False):
                usage_error(f'{shown(entry.path)} is in the way: {shown(folder)} is an LMDB this command builds (and '
                            f'replaces whole), which holds {", ".join(LMDB_CONTENTS)} only; move it away')
        elif entry.name.lower().endswith('.png') and not entry.is_file(follow_symlinks=False):
            usage_error(f'{shown(entry.path)} is a {path_kind(entry.path, follow_symlinks=False)} where an output '
                        'image goes: only a regular file is ever replaced; move it away')


def check_name(name: str) -> None:
    if not name or name.startswith('.') or '/' in name or os.sep in name or not utf8_name(name):
        usage_error(f"--name '{shown(name)}': give a plain folder-name prefix (UTF-8, no '/', not starting with '.')")


def check_name_lengths(folder: Path, names: Iterable[str], hint: str) -> None:
    """Every name a run makes in ``folder`` fits its file system (a name too long would stop the run half-way,
    after other outputs were written); ``hint`` says what to shorten."""
    limit = name_max(folder)
    for name in names:
        if len(os.fsencode(name)) > limit:
            usage_error(f'{shown(folder / name)}: this output name is {len(os.fsencode(name))} bytes long, above the '
                        f'{limit} a file name may have there; {hint}')


def check_sources_apart(hr: Path, outputs: Iterable[Path], option: str = '--hr') -> None:
    """The sources are not in a folder this run writes (they would be overwritten while read)."""
    real = os.path.realpath(hr)
    for folder in outputs:
        target = os.path.realpath(folder)
        if real == target or real.startswith(target + os.sep):
            usage_error(f'{option} {shown(hr)} is inside the output folder {shown(folder)}; '
                        'choose another --out or --name')


def train_folders(out: Path, name: str, scales: Sequence[int]) -> List[Path]:
    """Every output folder of ``train`` (image folders first, then the LMDBs)."""
    lr = out / f'{name}_LR_bicubic'
    return ([out / f'{name}_HR', out / f'{name}_HR_sub', lr] + [lr / f'X{s}' for s in scales]
            + [lr / f'X{s}_sub' for s in scales] + [out / f'{name}_HR_sub.lmdb']
            + [out / f'{name}_LR_bicubic_X{s}_sub.lmdb' for s in scales])


def set_name(hr_folder: Path) -> str:
    """``.../Set5/HR`` -> ``Set5``; any other folder -> its own name (``.`` -> the current folder's name)."""
    folder = Path(os.path.abspath(hr_folder))
    return folder.parent.name if folder.name.upper() == 'HR' else folder.name


def bench_sets(hr_folders: Sequence[Path]) -> List[Tuple[str, Path]]:
    """``(set name, folder)`` per ``--hr``; the same folder twice, or two folders giving one set name (they would
    write into one output folder), is a usage error."""
    sets: List[Tuple[str, Path]] = []
    for folder in hr_folders:
        name = set_name(folder)
        if not name or name.startswith('.') or not utf8_name(name):
            usage_error(f'--hr {shown(folder)}: its set name "{shown(name)}" cannot name an output folder '
                        '(UTF-8, not starting with "."); rename the folder')
        for other_name, other in sets:
            if os.path.realpath(other) == os.path.realpath(folder):
                usage_error(f'--hr {shown(folder)} is given twice')
            if other_name == name:
                usage_error(f'--hr {shown(other)} and {shown(folder)} are both the set {shown(name)}: they would '
                            f'write into the same folder; prepare them with different --out')
        sets.append((name, folder))
    return sets


def bench_folders(out: Path, name: str, scales: Sequence[int]) -> List[Path]:
    return [out / name] + [out / name / f'{kind}{s}' for s in scales for kind in ('GTmod', 'LRbicx')]
