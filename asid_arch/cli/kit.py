"""``asid-kit``: put ASID into a BasicSR checkout, so that BasicSR's own ``basicsr/train.py`` and
``basicsr/test.py`` run every option file of this project.

    asid-kit install /path/to/BasicSR      # copies the kit files, says what it did
    asid-kit check /path/to/BasicSR        # says whether the checkout's copies match this package

The kit is the files of this package that :data:`KIT_PATTERNS` name, each importing only the standard
library, torch, numpy, basicsr and (relatively, so they work in both trees) each other; each goes to the
same place inside the checkout's ``basicsr`` package: ``archs/asid_arch.py`` (ASID, ASID-D8) with
``archs/asid_ops.py`` (CPU fast paths) and ``archs/asid_layouts.py`` (checkpoint key layouts),
``archs/omnisr_arch.py`` (Omni-SR), ``models/asid_model.py`` (``ASIDModel``: the tiled protocol, AdamW and
every torch.optim optimizer, safe weight loading, atomic checkpoints that stop the run when they cannot be
written, the NaN stop), ``metrics/asid_metric.py`` (``calculate_psnr_matlab``) and ``utils/asid_*.py``
(files, weights, tiling, precision, and the torchvision alias that the 1.4.2 release of BasicSR needs).
BasicSR imports every ``*_arch.py`` and ``*_model.py`` it finds; those import the rest.

``install`` records what it copied (``basicsr/.asid-kit-installed.json``: the SHA-256 of each file), so
it can tell an older copy it installed itself (replaced) from a copy edited since, or one it has no
record of (kept: nothing is installed without ``--force``, which saves that copy as ``<file>.orig``).
A destination that is a link, a folder, read-only or unreadable is never written through, nor one whose
folder resolves outside the checkout (``basicsr/archs`` a symbolic link to another place).
Exit status: 0 done (or, for ``check``, all copies current), 1 copies missing or different, or a copy
could not be written, 2 nothing done: not a BasicSR checkout, or a destination asid-kit will not replace.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, FrozenSet, List, Optional, Sequence

from ..console import EXIT_FAILED, EXIT_OK, EXIT_USAGE, command, shown
from .usage import command_parser

PACKAGE = Path(__file__).resolve().parents[1]  # asid_arch/
# the kit, by one rule: these files of this package, each going to the same place in the basicsr package folder
KIT_PATTERNS = ('archs/*_arch.py', 'archs/asid_*.py', 'models/*_model.py', 'metrics/asid_*.py', 'utils/asid_*.py')


def kit_files(package: Path = PACKAGE) -> Dict[str, str]:
    """File of this package -> where it goes in the basicsr package folder (the same relative path), for every
    file :data:`KIT_PATTERNS` match."""
    found = sorted({path.relative_to(package).as_posix() for pattern in KIT_PATTERNS for path in package.glob(pattern)})
    return {rel: rel for rel in found}


KIT_FILES = kit_files()
KIT_FOLDERS = sorted({Path(dst).parent.as_posix() for dst in KIT_FILES.values()})  # archs, metrics, models, utils
# Copies from before install kept a record (and copies made by hand from a release) are recognised by content:
# the first 16 hex digits of the SHA-256 of every version each kit file had in this project's history up to
# the record's introduction. Such a copy is an old kit file nobody edited: updated without --force.
EARLIER_VERSIONS: Dict[str, FrozenSet[str]] = {  # destination -> SHA-256 prefixes of its earlier versions
    'archs/asid_arch.py': frozenset((
        '10ceef485f43eee9', '225d9baade3098ea', '388825c5fce8961b', '4ce75517ba779c04', '569cce842d5f9ca0',
        '5959f047cdd7817d', '5a8a6b7b05f33bb4', '696e982ac367621f', '76a28517a0fd45a9', '81cf1889bda42192',
        '8a7d01fe28123bcc', '9a0f0ab5ee79d773', 'c25ec714c36ee10a', 'd93fccebfaea42aa', 'da21ee1f836930e7',
        'eb9f0a1c59ffcc8a', 'f18ae9736906d344',
    )),
    'archs/omnisr_arch.py': frozenset((
        '20e564c6f1c75cfe', '2fdcbbcdf4df4e21', 'b5d6c4a369396f93', 'c1379f38f7a3ab5d',
    )),
    'models/asid_model.py': frozenset((
        '17092baecc5edb8b', '2e3fc49aaf307cdd', '36b2a3578809f0cf', '37e728de1cc7263e', '3a1f2557909e0af1',
        '4ec879a6b5ed450c', '52b7ca1bd06e70be', '5304eff6d7adf480', '5cbf96eff61443e5', '8d9ff465417a0a1c',
        '905a809ef1cc0911',
    )),
}
VERSION_PREFIX = 16  # hex digits of the SHA-256 kept in EARLIER_VERSIONS
RECORD_NAME = '.asid-kit-installed.json'  # in the basicsr package folder: {destination: sha256 installed}
BACKUP_SUFFIX = '.orig'  # a replaced user-edited copy is kept as <file>.orig (not *_arch.py: BasicSR ignores it)
MAX_BACKUPS = 100  # <file>.orig, <file>.orig.1, ... up to this many before giving up

CURRENT = 'current'  # same bytes as this package's file
MISSING = 'missing'
OUTDATED = 'outdated'  # an older copy that asid-kit installed and nobody changed since: replaced
EDITED = 'user-edited'  # differs from this package and from what asid-kit installed: kept unless --force
BLOCKED = 'unusable'  # a link, a folder, read-only or unreadable: never written


class NotBasicSR(Exception):
    """The target folder is not a BasicSR checkout."""


@dataclass
class KitFile:
    """One kit file: this package's source, its place in the checkout, its state there and why."""
    src: Path
    dst: Path
    state: str
    detail: str = ''


def basicsr_package(target: Path) -> Path:
    """The ``basicsr`` package folder of a checkout (its root, or the package folder itself)."""
    for candidate in (target / 'basicsr', target):
        if all((candidate / folder / '__init__.py').is_file() for folder in KIT_FOLDERS):
            return candidate
    folders = ', '.join(f'basicsr/{folder}/' for folder in KIT_FOLDERS)
    raise NotBasicSR(f'{shown(target)} is not a BasicSR checkout (no {folders} in it)')


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_record(package: Path) -> Dict[str, str]:
    """What asid-kit installed in ``package`` (destination relative path -> sha256). A missing, unreadable or
    damaged record counts as empty: every differing copy is then treated as the user's."""
    try:
        data = json.loads((package / RECORD_NAME).read_text(encoding='utf-8'))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if k in KIT_FILES.values() and isinstance(v, str)}


def kit_file_state(src: Path, dst: Path, installed: Optional[str], earlier: FrozenSet[str] = frozenset()) -> KitFile:
    """The state of one destination (``installed``: the sha256 asid-kit recorded there, if any; ``earlier``: the
    hash prefixes of earlier versions of the file, for copies from before the record)."""
    if os.path.islink(dst):
        if os.path.exists(dst) and os.path.samefile(dst, src):
            return KitFile(src, dst, CURRENT, 'a link to this package\'s file')
        return KitFile(src, dst, BLOCKED, f'is a symbolic link (to {shown(os.readlink(dst))}); asid-kit does not '
                                          'write through links: remove it, then install again')
    if not os.path.lexists(dst):
        if not os.access(dst.parent, os.W_OK | os.X_OK):
            return KitFile(src, dst, BLOCKED, f'its folder {shown(dst.parent)} is not writable')
        return KitFile(src, dst, MISSING)
    if dst.is_dir():
        return KitFile(src, dst, BLOCKED, 'is a folder, not a file: move it away, then install again')
    if not dst.is_file():
        return KitFile(src, dst, BLOCKED, 'is not a regular file: move it away, then install again')
    try:
        data = dst.read_bytes()
    except OSError as err:
        return KitFile(src, dst, BLOCKED, f'cannot be read ({err.strerror or err})')
    if data == src.read_bytes():
        return KitFile(src, dst, CURRENT)
    if not dst.stat().st_mode & stat.S_IWUSR or not os.access(dst, os.W_OK) or not os.access(dst.parent, os.W_OK):
        return KitFile(src, dst, BLOCKED, 'differs from this package but is read-only (or its folder is): '
                                          'asid-kit leaves it alone; make it writable to update it')
    if installed is None and sha256(data)[:VERSION_PREFIX] in earlier:
        return KitFile(src, dst, OUTDATED, 'an earlier version of the kit file, unchanged')
    if installed is None:
        return KitFile(src, dst, EDITED, 'differs from this package, and asid-kit has no record of installing it '
                                         '(your copy, or one from an asid-kit that kept no record)')
    if sha256(data) != installed:
        return KitFile(src, dst, EDITED, 'was changed since asid-kit installed it')
    return KitFile(src, dst, OUTDATED, 'an older copy asid-kit installed, unchanged since')


def outside_checkout(package: Path, folder: Path) -> str:
    """'' when ``folder`` (of the checkout whose ``basicsr`` package folder is ``package``) is really inside that
    checkout; otherwise where a symbolic link on the way sends it, in words."""
    root, real = os.path.realpath(package.parent), os.path.realpath(folder)
    if real == root or real.startswith(root.rstrip(os.sep) + os.sep):
        return ''
    return (f'its folder {shown(folder)} is {shown(real)} (a symbolic link on the way), outside the checkout '
            f'{shown(root)}: asid-kit writes inside the checkout only; replace the link by a folder')


def kit_status(package: Path) -> List[KitFile]:
    """One :class:`KitFile` per kit file of the checkout's ``basicsr`` package folder ``package``; a destination
    whose folder resolves outside the checkout is :data:`BLOCKED`."""
    record = read_record(package)
    rows = []
    for src, dst in KIT_FILES.items():
        elsewhere = outside_checkout(package, (package / dst).parent)
        rows.append(KitFile(PACKAGE / src, package / dst, BLOCKED, elsewhere) if elsewhere else
                    kit_file_state(PACKAGE / src, package / dst, record.get(dst),
                                   EARLIER_VERSIONS.get(dst, frozenset())))
    return rows


def free_backup(dst: Path) -> Path:
    """``<file>.orig``, or ``<file>.orig.N`` when that exists already (an earlier backup is never replaced)."""
    for n in range(MAX_BACKUPS):
        candidate = dst.with_name(dst.name + BACKUP_SUFFIX + (f'.{n}' if n else ''))
        if not os.path.lexists(candidate):
            return candidate
    raise OSError(f'{MAX_BACKUPS} backups of {shown(dst)} exist already; remove some')


def write_record(package: Path, record: Dict[str, str]) -> None:
    from ..utils.asid_files import atomic_write

    text = json.dumps(record, indent=1, sort_keys=True).encode('utf-8')
    atomic_write(package / RECORD_NAME, lambda f: f.write(text))


class Refused(Exception):
    """install did nothing: a destination it will not replace (without --force, or at all)."""


def install_kit(target: Path, dry_run: bool = False, force: bool = False) -> List[str]:
    """Copy the kit into the checkout at ``target``; returns one line per file saying what happened.

    Raises :class:`Refused` (nothing copied) when a destination is unusable, or is a copy asid-kit did not
    install (or that was changed since) and ``force`` is not given."""
    package = basicsr_package(target)
    record_path = package / RECORD_NAME
    elsewhere = outside_checkout(package, package)
    if elsewhere:
        raise Refused(f'{shown(record_path)}: {elsewhere}; nothing was installed')
    if os.path.lexists(record_path) and (os.path.islink(record_path) or not record_path.is_file()):
        raise Refused(f'{shown(record_path)} (where asid-kit records what it installed) is not a regular file: '
                      'move it away; nothing was installed')
    rows = kit_status(package)
    blocked = [row for row in rows if row.state == BLOCKED]
    kept = [row for row in rows if row.state == EDITED and not force]
    if blocked or kept:
        lines = [f'{shown(row.dst)} {row.detail}' for row in blocked]
        lines += [f'{shown(row.dst)} {row.detail}: kept; run with --force to replace it (your version is then '
                  f'saved as {shown(free_backup(row.dst).name)})' for row in kept]
        raise Refused('\n'.join(lines + ['nothing was installed']))
    record = {k: v for k, v in read_record(package).items() if (package / k).is_file()}
    lines = []
    verb = 'would copy' if dry_run else 'copied'
    try:
        for row in rows:
            rel = row.dst.relative_to(package).as_posix()
            data = row.src.read_bytes()
            if row.state == CURRENT:
                lines.append(f'unchanged {shown(row.dst)} (already current)')
                if not os.path.islink(row.dst):
                    record[rel] = sha256(data)
                continue
            note = {MISSING: '', OUTDATED: f' (replacing {row.detail})'}.get(row.state, '')
            if row.state == EDITED:
                backup = free_backup(row.dst)
                note = f' (your edited copy saved as {shown(backup)})'
            if not dry_run:
                from ..utils.asid_files import atomic_write

                try:
                    if row.state == EDITED:
                        shutil.copy2(row.dst, backup)
                    atomic_write(row.dst, lambda f: f.write(data))
                except OSError as err:
                    raise OSError(f'cannot write {shown(row.dst)}: {err.strerror or err}') from None
                record[rel] = sha256(data)
            lines.append(f'{verb} {shown(row.src)} -> {shown(row.dst)}{note}')
    finally:
        if not dry_run and record != read_record(package):
            write_record(package, record)
    return lines


@command('asid-kit', '; each file is written whole or not at all: run it again to finish')
def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = command_parser('asid-kit', __doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='command', required=True)
    p = sub.add_parser('install', help='copy the kit files into a BasicSR checkout')
    p.add_argument('checkout', type=Path, help='BasicSR checkout (the folder holding basicsr/)')
    p.add_argument('--dry-run', action='store_true', help='only say what would be copied')
    p.add_argument('--force', action='store_true',
                   help='also replace copies asid-kit did not install or that were edited (each is saved as .orig)')
    p = sub.add_parser('check', help="compare a checkout's kit copies with this package")
    p.add_argument('checkout', type=Path, help='BasicSR checkout (the folder holding basicsr/)')
    args = parser.parse_args(argv)
    try:
        if args.command == 'install':
            for line in install_kit(args.checkout, args.dry_run, args.force):
                print(f'asid-kit: {line}')
            print('asid-kit: now run, from the checkout: PYTHONPATH=. python basicsr/train.py -opt <option file>')
            return EXIT_OK
        rows = kit_status(basicsr_package(args.checkout))
    except (NotBasicSR, Refused) as err:
        for line in str(err).splitlines():
            print(f'asid-kit: error: {line}', file=sys.stderr)
        return EXIT_USAGE
    except OSError as err:
        print(f'asid-kit: error: {err}', file=sys.stderr)
        return EXIT_FAILED
    for row in rows:
        print(f'asid-kit: {row.state:11s} {shown(row.dst)}' + (f' ({row.detail})' if row.detail else ''))
    return EXIT_OK if all(row.state == CURRENT for row in rows) else EXIT_FAILED


if __name__ == '__main__':
    sys.exit(main())
