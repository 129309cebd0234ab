"""``asid-prepare``: HR images -> bicubic LR -> sub-images -> LMDB, and benchmark sets, the BasicSR way.

BasicSR's own data scripts are not in its pip package; this command does the same steps with
BasicSR's library functions:

* ``train``: a folder of HR images (e.g. DIV2K_train_HR) -> ``{name}_HR`` mod-cropped to the
  least common multiple of the scales, ``{name}_LR_bicubic/X{s}`` by MATLAB-compatible bicubic
  (``basicsr.utils.matlab_functions.imresize``, rounded to uint8) -> sub-images (480 px crops,
  step 240, thresh 0; divided by s for LR) -> LMDB with ``meta_info.txt``
  (``basicsr.utils.lmdb_util.make_lmdb_from_imgs``).
* ``bench``: benchmark HR folders -> ``{set}/GTmod{s}`` and ``{set}/LRbicx{s}``.
* ``demo``: the embedded default data set (scikit-image's bundled sample images) for the CPU demo.

Every step is resumable and knows what it made. ``{out}/.asid-prepare-record.jsonl`` holds, for
every output, what it was made from (the content hash of its source image, or of the image it was
cut from, or of every sub-image an LMDB holds), with which settings, and the size, modification
time and hash of what was written. A re-run skips an output only when all of these still hold;
otherwise it makes it again and says why (source changed, settings changed, output edited or
deleted, not in the record). Outputs of sources or scales no longer asked for are removed; other
files found in the output folders are reported (exit 1), never used silently. The record is checked
against the files, never trusted alone: a damaged or edited record only makes work be done again.
Images are written atomically and an LMDB is built under a temporary name, renamed when complete.

Output names are the source's stem with every character other than ASCII letters, digits, '_' and
'-' replaced by '_' (BasicSR's LMDB keys are ASCII, its meta_info.txt readers cut names at '.' and
' ', and OpenCV crashes on names that are not UTF-8); two sources with the same output name are an
error for the second. Unreadable images are reported by name and skipped; images too small for one
sub-image are reported by name. Exit status: 0 complete, 1 some images failed (each named), 2 unusable
arguments, 128 + N stopped by signal N (a one-line summary; a re-run finishes the work).
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, NoReturn, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
from tqdm import tqdm

from ..console import EXIT_FAILED, EXIT_OK, EXIT_USAGE, interrupt_exit_status, interrupt_name, shown, stop_on_signals

IMG_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm', '.gif')
PNG_COMPRESSION = 3  # BasicSR's extract_subimages default
CROP_SIZE, STEP, THRESH = 480, 240, 0  # BasicSR's DIV2K sub-image convention (HR pixels)
DEMO_TRAIN = ('astronaut', 'rocket', 'immunohistochemistry', 'hubble_deep_field', 'retina', 'stereo_motorcycle',
              'camera', 'brick', 'grass', 'gravel', 'coins', 'moon', 'page', 'text', 'clock')
DEMO_VAL = ('chelsea', 'coffee')
DEMO_CROP, DEMO_STEP = 192, 96  # smaller crops than DIV2K's: the sample images are small
LOCK_NAME = '.asid-prepare.lock'
RECORD_NAME = '.asid-prepare-record.jsonl'
RECORD_VERSION = 1  # entries of another version are ignored (their work is done again)
PARTIAL_PREFIX = '.partial-'  # an LMDB being built; never used, removed by the next run
MAX_HR_PIXELS = 400_000_000  # refuse, before decoding, an HR image larger than this
HASH_CHUNK = 1 << 20  # bytes read at a time when hashing a source image
UNSAFE_KEY_CHARS = re.compile(r'[^A-Za-z0-9_-]')  # replaced by '_' in output names (LMDB keys)
LMDB_FILES = ('data.mdb', 'meta_info.txt')  # what an LMDB's record covers (lock.mdb changes when it is read)
LMDB_PAGE = 4096  # an LMDB value larger than a page takes whole overflow pages
LMDB_MAP_MARGIN = 2  # PNG of noise is slightly larger than the raw pixels (+ a filter byte per row)
LMDB_MAP_BASE = 1 << 24  # bytes for the LMDB's own pages
NAMES_SHOWN = 3  # file names listed in one message before '...'
VALUE_SHOWN = 40  # characters of a recorded setting quoted in a message

# why an output is made again (summary categories)
REDO_SOURCE = 'source changed'
REDO_SETTINGS = 'settings changed'
REDO_INPUT = 'input changed'
REDO_EDITED = 'output edited or deleted'
REDO_UNRECORDED = 'not in the record'
REDO_ORDER = (REDO_SOURCE, REDO_SETTINGS, REDO_INPUT, REDO_EDITED, REDO_UNRECORDED)


def usage_error(message: str) -> NoReturn:
    """One line naming the argument or file, exit status 2 (before any work)."""
    print(f'asid-prepare: {message}', file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


def note(message: str) -> None:
    tqdm.write(f'[asid-prepare] {message}', file=sys.stderr)


def listed(names: Sequence[str]) -> str:
    """``a, b, c`` or ``a, b, c, ... (12 in all)``."""
    head = ', '.join(names[:NAMES_SHOWN])
    return head if len(names) <= NAMES_SHOWN else f'{head}, ... ({len(names)} in all)'


class WriteError(Exception):
    """An output (or the record) could not be written: disk full, permissions."""


@dataclass
class Report:
    """What a run did: counts per step, what was made again and why, and the images that could not be used."""
    written: int = 0
    skipped: int = 0
    failed: Dict[str, str] = field(default_factory=dict)
    redone: Dict[str, int] = field(default_factory=dict)  # why -> how many outputs were made again
    removed: int = 0  # outdated outputs deleted (sources or scales no longer asked for)
    too_small: Dict[str, str] = field(default_factory=dict)  # output name -> image too small for a sub-image
    renamed: Dict[str, str] = field(default_factory=dict)  # source -> output name

    told: set = field(default_factory=set)  # notes already printed (a source is redone once per scale in bench)

    def fail(self, path: object, reason: str, verb: str = 'skipped ') -> None:
        self.failed[shown(path)] = reason
        note(f'{verb}{shown(path)}: {reason}')

    def tell(self, message: str) -> None:
        """:func:`note` once per run."""
        if message not in self.told:
            self.told.add(message)
            note(message)

    def redo(self, why: str, count: int = 1) -> None:
        self.redone[why] = self.redone.get(why, 0) + count

    def small(self, key: str, image: str, reason: str) -> None:
        """``image`` (output name ``key``) gives no sub-image; said once per run (not again for its LR)."""
        if key not in self.too_small:
            self.too_small[key] = image
            note(f'{image}: {reason}')

    def merge(self, other: 'Report') -> None:
        self.written += other.written
        self.skipped += other.skipped
        self.failed.update(other.failed)
        for why, count in other.redone.items():
            self.redo(why, count)
        self.removed += other.removed
        self.too_small.update(other.too_small)
        self.renamed.update(other.renamed)

    def counts(self) -> str:
        """``3 written, 2 already done, 0 failed`` and, when any, what was redone, removed, too small, renamed."""
        parts = [f'{self.written} written', f'{self.skipped} already done', f'{len(self.failed)} failed']
        if self.redone:
            parts.append('redone: ' + ', '.join(f'{n} {why}' for why, n in sorted(self.redone.items())))
        if self.removed:
            parts.append(f'{self.removed} outdated output(s) removed')
        if self.too_small:
            parts.append(f'{len(self.too_small)} too small for a sub-image ({listed(list(self.too_small.values()))})')
        if self.renamed:
            parts.append(f'{len(self.renamed)} renamed ({listed([f"{a} -> {b}" for a, b in self.renamed.items()])})')
        return ', '.join(parts)


# ----------------------------------------------------------------------------------------------
# Image helpers
# ----------------------------------------------------------------------------------------------
def list_images(folder: Path) -> List[Path]:
    if not folder.is_dir():
        usage_error(f'{shown(folder)} is not a folder')
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMG_EXTENSIONS and p.is_file())


def user_images(folder: Path, option: str) -> List[Path]:
    """The images of a folder the user named (``option``); exits with status 2 and a hint when it is not a
    folder or holds none (e.g. a data set root whose images sit in an ``HR`` subfolder)."""
    if not folder.is_dir():
        what = 'is a file, not a folder' if folder.exists() else 'is not a folder (it does not exist)'
        usage_error(f'{option} {shown(folder)} {what}')
    try:
        images = list_images(folder)
    except OSError as err:
        usage_error(f'{option} {shown(folder)} cannot be read ({err.strerror or err})')
    if not images:
        subs = []
        with contextlib.suppress(OSError):
            subs = [p for p in sorted(folder.iterdir()) if p.is_dir() and list_images(p)]
        hint = f'; did you mean {shown(subs[0])}?' if subs else ''
        usage_error(f'{option} {shown(folder)} holds no images ({", ".join(sorted(IMG_EXTENSIONS))}){hint}')
    return images


def read_rgb8(path: Path) -> np.ndarray:
    """Read an image as 3-channel uint8 BGR (grayscale replicated, alpha dropped, 16-bit scaled, EXIF
    orientation applied); raises ValueError (:class:`~asid_arch.images.ImageError`) if it is unreadable,
    truncated or damaged."""
    from ..images import read_picture, to_depth

    pic = read_picture(path, max_pixels=MAX_HR_PIXELS)
    img = to_depth(pic.color, np.uint8)
    return np.repeat(img[:, :, None], 3, axis=2) if img.ndim == 2 else img


Fingerprint = Tuple[int, int, str]  # size, modification time (ns), sha256 of the content ('' when not hashed)


def file_state(path: Path) -> Optional[Tuple[int, int]]:
    """``(size, mtime_ns)`` of a regular file (not through a link), None when there is none."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns) if stat.S_ISREG(st.st_mode) else None


def write_png(path: Path, img: np.ndarray) -> Fingerprint:
    """Write a PNG atomically (``path`` either does not exist or holds the complete image); its fingerprint."""
    from ..images import imwrite_atomic

    try:
        data = imwrite_atomic(path, img, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
        st = os.lstat(path)
    except OSError as err:
        raise WriteError(f'cannot write {shown(path)}: {err.strerror or err}') from None
    return st.st_size, st.st_mtime_ns, hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(HASH_CHUNK), b''):
            digest.update(chunk)
    return digest.hexdigest()


def output_key(stem: str) -> str:
    """The name an image's outputs get (and their LMDB key prefix): ``stem`` with every character other than
    ASCII letters, digits, '_' and '-' replaced by '_'. BasicSR encodes LMDB keys as ASCII, reads
    ``meta_info.txt`` names up to the first '.' or ' ', and builds LMDBs with OpenCV's ``imread``, which
    crashes the process on a name that is not UTF-8 (``x\\xff``)."""
    return UNSAFE_KEY_CHARS.sub('_', stem)


def mod_crop(img: np.ndarray, modulus: int) -> np.ndarray:
    h, w = img.shape[:2]
    return img[:h - h % modulus, :w - w % modulus]


def bicubic_resize(img: np.ndarray, scale: float) -> np.ndarray:
    """MATLAB ``imresize(img, scale, 'bicubic')`` of a uint8 image, rounded back to uint8."""
    from basicsr.utils.matlab_functions import imresize

    out = imresize(img.astype(np.float64) / 255.0, scale)
    return np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# The record: what was made, from what, with which settings
# ----------------------------------------------------------------------------------------------
@dataclass
class Entry:
    """One unit of work: the recipe (step, source hash or input hash, settings) and the files it wrote."""
    recipe: Dict[str, object]
    files: Dict[str, Fingerprint]  # path relative to the output root -> fingerprint when written


def safe_relative(rel: object) -> bool:
    """A relative path inside the output root (a hand-edited record must not point elsewhere)."""
    return (isinstance(rel, str) and bool(rel) and not rel.startswith('/') and '\\' not in rel and '\0' not in rel
            and all(part not in ('', '.', '..') for part in rel.split('/')))


def parse_entry(line: bytes) -> Optional[Tuple[str, Optional[Entry]]]:
    """``(unit, entry)`` of a record line (entry None: the unit was removed); None for a damaged line."""
    try:
        obj = json.loads(line.decode('utf-8'))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(obj, dict) or obj.get('v') != RECORD_VERSION or not safe_relative(obj.get('unit')):
        return None
    if obj.get('removed') is True:
        return obj['unit'], None
    recipe, files = obj.get('recipe'), obj.get('files')
    if not isinstance(recipe, dict) or not isinstance(files, dict):
        return None
    checked = {}
    for rel, fp in files.items():
        if not (safe_relative(rel) and isinstance(fp, list) and len(fp) == 3 and type(fp[0]) is int
                and type(fp[1]) is int and isinstance(fp[2], str)):
            return None
        checked[rel] = (fp[0], fp[1], fp[2])
    return obj['unit'], Entry(recipe, checked)


def describe_change(old: Dict[str, object], new: Dict[str, object]) -> Tuple[str, str]:
    """``(category, detail)`` of why a recorded recipe no longer matches."""
    if old.get('source') != new.get('source'):
        return REDO_SOURCE, 'the source image changed since it was made'
    if old.get('input') != new.get('input'):
        return REDO_INPUT, 'the image it is cut from was made again'
    if old.get('inputs') != new.get('inputs'):
        return REDO_INPUT, (f'the sub-images it holds changed ({str(old.get("count"))[:VALUE_SHOWN]} before, '
                            f'{new.get("count")} now)')
    changed = [f'{key} {str(old.get(key))[:VALUE_SHOWN]} -> {new.get(key)}'
               for key in sorted(set(old) | set(new), key=str) if old.get(key) != new.get(key)]
    return REDO_SETTINGS, f'the settings changed ({", ".join(changed)})'


class Record:
    """``{out}/.asid-prepare-record.jsonl``: an append-only journal of :class:`Entry` per unit of work.

    One JSON line per finished unit, appended as soon as its files are written, so an interrupted run
    loses at most the unit in progress; the file is rewritten (atomically) without old lines at the end
    of a run. A line that is not a well-formed entry is ignored and counted (its unit is made again).
    An entry counts only while every file it lists still has the recorded size and modification time.
    """

    def __init__(self, out: Path) -> None:
        self.out = out
        self.path = out / RECORD_NAME
        self.entries: Dict[str, Entry] = {}
        self.used: set = set()  # units this run checked or made: the others in its scope are outdated
        self.ignored = 0
        self._journal = None
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            data = b''
        except OSError as err:
            raise WriteError(f'cannot read the record {shown(self.path)}: {err.strerror or err}') from None
        for line in data.split(b'\n'):
            if not line.strip():
                continue
            parsed = parse_entry(line)
            if parsed is None:
                self.ignored += 1
            elif parsed[1] is None:
                self.entries.pop(parsed[0], None)
            else:
                self.entries[parsed[0]] = parsed[1]
        if self.ignored:
            note(f'{shown(self.path)}: {self.ignored} damaged or unknown line(s) ignored; what they described '
                 'is checked and made again')

    def __enter__(self) -> 'Record':
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self.close(compact=kind is None)

    def rel(self, path: Path) -> str:
        return path.relative_to(self.out).as_posix()

    def check(self, unit: str, recipe: Dict[str, object], outputs: Sequence[Path] = (),
              fits: Optional['re.Pattern[str]'] = None) -> Optional[Tuple[str, str]]:
        """None when ``unit`` is done with this recipe and its files are as written; otherwise
        ``(category, detail)`` saying why it must be made, category '' when it was never made.

        ``outputs``: the files the unit makes, when known (the entry must list exactly these); ``fits``: a
        pattern every file of the entry must match otherwise. An entry that does not fit (a hand-edited
        record) counts as no entry."""
        entry = self.entries.get(unit)
        if entry is not None and (set(entry.files) != {self.rel(p) for p in outputs} if outputs else
                                  fits is not None and not all(fits.fullmatch(rel) for rel in entry.files)):
            entry = None
        if entry is None:
            existing = [p for p in outputs if os.path.lexists(p)]
            if existing:
                return REDO_UNRECORDED, (f'{shown(self.rel(existing[0]))} exists but is not in the record (made by '
                                         'an older asid-prepare, by hand, or the record lost it)')
            return '', ''
        if entry.recipe != recipe:
            return describe_change(entry.recipe, recipe)
        for rel, fp in entry.files.items():
            if file_state(self.out / rel) != fp[:2]:
                return REDO_EDITED, f'{rel} was edited or deleted since it was made'
        return None

    def use(self, unit: str) -> None:
        self.used.add(unit)

    def files_of(self, unit: str) -> Dict[str, Fingerprint]:
        return self.entries[unit].files

    def _append(self, obj: dict) -> None:
        try:
            if self._journal is None:
                self.out.mkdir(parents=True, exist_ok=True)
                self._journal = open(self.path, 'a+b')
                end = self._journal.tell()
                if end:  # a line cut by a kill: end it, so that it stays one damaged line
                    self._journal.seek(end - 1)
                    if self._journal.read(1) != b'\n':
                        self._journal.write(b'\n')
            self._journal.write(json.dumps(obj, sort_keys=True).encode('utf-8') + b'\n')
            self._journal.flush()
        except OSError as err:
            raise WriteError(f'cannot write the record {shown(self.path)}: {err.strerror or err}') from None

    def put(self, unit: str, recipe: Dict[str, object], files: Dict[Path, Fingerprint]) -> None:
        entry = Entry(recipe, {self.rel(p): fp for p, fp in files.items()})
        self._append({'v': RECORD_VERSION, 'unit': unit, 'recipe': recipe,
                      'files': {rel: list(fp) for rel, fp in entry.files.items()}})
        self.entries[unit] = entry
        self.used.add(unit)

    def forget(self, unit: str) -> None:
        if self.entries.pop(unit, None) is not None:
            self._append({'v': RECORD_VERSION, 'unit': unit, 'removed': True})

    def close(self, compact: bool = True) -> None:
        """Close the journal; with ``compact``, rewrite it with the live entries only."""
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        if not compact or not (self.ignored or self.path.exists() or self.entries):
            return
        from ..utils.asid_files import atomic_write

        lines = [json.dumps({'v': RECORD_VERSION, 'unit': unit, 'recipe': e.recipe,
                             'files': {rel: list(fp) for rel, fp in e.files.items()}}, sort_keys=True)
                 for unit, e in sorted(self.entries.items())]
        text = ''.join(line + '\n' for line in lines).encode('utf-8')
        try:
            atomic_write(self.path, lambda f: f.write(text))
        except OSError as err:
            raise WriteError(f'cannot write the record {shown(self.path)}: {err.strerror or err}') from None

    def sweep(self, in_scope: Callable[[str], bool], report: Report) -> None:
        """Delete the outputs of recorded units in scope that this run did not check or make (sources, scales or
        settings no longer asked for), when they are still as written; a file changed since is left for
        :func:`report_foreign` to name."""
        emptied, removed = set(), []
        for unit in sorted(u for u in self.entries if u not in self.used and in_scope(u)):
            entry = self.entries[unit]
            if entry.recipe.get('made') == 'lmdb':
                lmdb_files = {f'{unit}/{name}' for name in LMDB_FILES}
                whole = '/' not in unit and unit.endswith('.lmdb') and set(entry.files) == lmdb_files
                if whole and all(file_state(self.out / rel) == fp[:2] for rel, fp in entry.files.items()):
                    shutil.rmtree(self.out / unit, ignore_errors=True)
                    report.removed += 1
                    removed.append(unit)
            else:
                for rel, fp in entry.files.items():
                    if in_scope(rel) and file_state(self.out / rel) == fp[:2]:
                        (self.out / rel).unlink()
                        report.removed += 1
                        emptied.add((self.out / rel).parent)
                removed += [unit] if entry.files else []
            self.forget(unit)
        if removed:
            note(f'removed outputs no longer asked for (of sources no longer given, or of other scales or settings): '
                 f'{listed([shown(u) for u in removed])}')
        for folder in sorted(emptied, reverse=True):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty (a scale no longer asked for)


def report_foreign(folders: Iterable[Path], record: Record, report: Report) -> None:
    """Name the files in this run's output folders that it did not make or check: BasicSR's folder datasets
    and asid-bench would use them as if they belonged to the set."""
    made = {rel for unit in record.used if unit in record.entries for rel in record.entries[unit].files}
    for folder in folders:
        if not folder.is_dir():
            continue
        foreign = sorted(p.name for p in folder.iterdir()
                         if not p.name.startswith('.') and record.rel(p) not in made)
        if foreign:
            report.fail(folder, f'{len(foreign)} file(s) not made by this run from the current sources and settings '
                                f'({listed([shown(n) for n in foreign])}): delete them, or BasicSR and asid-bench '
                                'will use them as part of this data set', verb='')


# ----------------------------------------------------------------------------------------------
# Steps
# ----------------------------------------------------------------------------------------------
@dataclass
class Source:
    """A source image: where it is, its output name and the hash of its content."""
    path: Path
    key: str
    sha: str


def collect_sources(paths: Sequence[Path], report: Report, desc: str) -> List[Source]:
    """Output names and content hashes of the source images; an image whose output name another one already
    has, or that cannot be read, is a named failure."""
    sources, taken = [], {}
    for path in tqdm(paths, desc=f'{desc}: reading sources', unit='img'):
        key = output_key(path.stem)
        if key in taken:
            report.fail(path, f'its outputs would be named {key}.png like those of {shown(taken[key].name)}; '
                              'rename one of them')
            continue
        try:
            sha = file_sha256(path)
        except OSError as err:
            report.fail(path, f'cannot be read ({err.strerror or err})')
            continue
        taken[key] = path
        if key != path.stem:
            report.renamed[shown(path.name)] = f'{key}.png'
            report.tell(f'{shown(path)}: outputs named {key}.png (BasicSR data names take ASCII letters, digits, '
                        "'_' and '-' only)")
        sources.append(Source(path, key, sha))
    return sources


def make_hr_lr(sources: Sequence[Source], record: Record, targets: Dict[Path, Optional[int]], modulus: int,
               report: Report, desc: str, make: bool = True) -> Optional[Dict[Path, Dict[str, str]]]:
    """Mod-crop each source to ``modulus`` into every target folder whose scale is None, and its bicubic LR
    into every target folder with a scale. Returns ``{folder: {key: sha256 of the file}}``.

    With ``make`` False nothing is written or marked as used: the result is None as soon as one output is
    not done (used to decide whether outputs of a scale no longer asked for are still consistent)."""
    made: Dict[Path, Dict[str, str]] = {folder: {} for folder in targets}
    for src in (tqdm(sources, desc=desc, unit='img') if make else sources):
        plans = []
        for folder, scale in targets.items():
            path = folder / f'{src.key}.png'
            recipe = {'made': 'hr' if scale is None else 'lr', 'source': src.sha, 'modulus': modulus}
            if scale is not None:
                recipe['scale'] = scale
            unit = record.rel(path)
            plans.append((folder, scale, path, unit, recipe, record.check(unit, recipe, [path])))
        todo = [plan for plan in plans if plan[5] is not None]
        if not make:
            if todo:
                return None
            for folder, _, _, unit, _, _ in plans:
                made[folder][src.key] = record.files_of(unit)[unit][2]
            continue
        for folder, _, _, unit, _, why in plans:
            if why is None:
                record.use(unit)
                made[folder][src.key] = record.files_of(unit)[unit][2]
        if not todo:
            report.skipped += 1
            continue
        try:
            hr = mod_crop(read_rgb8(src.path), modulus)
            if min(hr.shape[:2]) == 0:
                raise ValueError(f'smaller than {modulus} px')
        except ValueError as err:
            report.fail(src.path, str(err))
            continue
        except OSError as err:
            report.fail(src.path, f'cannot be read ({err.strerror or err})')
            continue
        reasons = sorted((why for *_, why in todo if why[0]), key=lambda why: REDO_ORDER.index(why[0]))
        if reasons:  # said and counted once per source image, with the weightiest reason
            report.tell(f'{shown(src.path)}: made again ({reasons[0][1]})')
            report.redo(reasons[0][0])
        for folder, scale, path, unit, recipe, why in todo:
            fp = write_png(path, hr if scale is None else bicubic_resize(hr, 1 / scale))
            record.put(unit, recipe, {path: fp})
            made[folder][src.key] = fp[2]
        report.written += 1
    return made


def crop_positions(size: int, crop: int, step: int, thresh: int) -> List[int]:
    """BasicSR's sub-image origins: ``0, step, ...`` plus a last crop flush with the border."""
    if size < crop:
        return []
    positions = list(range(0, size - crop + 1, step))
    if size - (positions[-1] + crop) > thresh:
        positions.append(size - crop)
    return positions


def extract_subimages(inputs: Dict[str, str], src: Path, dst: Path, crop: int, step: int, thresh: int,
                      record: Record, report: Report, desc: str, make: bool = True) -> Optional[Dict[str, str]]:
    """Cut every image ``{src}/{key}.png`` of ``inputs`` (key -> sha256 of that file) into ``{key}_s{001..}.png``
    crops in ``dst`` (row-major). Returns ``{crop stem: sha256}``; ``make`` as in :func:`make_hr_lr`."""
    from ..images import decode_file  # (imports torch and BasicSR: not needed for --help)

    subs: Dict[str, str] = {}
    small = f'smaller than one {crop} px sub-image: it is in no sub-image and not in the LMDB'
    for key, sha in (tqdm(inputs.items(), desc=desc, unit='img') if make else inputs.items()):
        unit = f'{record.rel(dst)}/{key}'
        recipe = {'made': 'sub', 'input': sha, 'crop': crop, 'step': step, 'thresh': thresh}
        crop_name = re.compile(rf'{re.escape(unit)}_s\d{{3,}}\.png')
        why = record.check(unit, recipe, fits=crop_name)
        if why is None:
            files = record.files_of(unit)
            subs.update({Path(rel).stem: fp[2] for rel, fp in files.items()})
            if make:
                record.use(unit)
                report.skipped += 1
                if not files:
                    report.small(key, f'{record.rel(src)}/{key}.png', small)
            continue
        if not make:
            return None
        path = src / f'{key}.png'
        try:
            img = decode_file(path)
        except OSError as err:
            report.fail(path, f'cannot be read ({err.strerror or err})')
            continue
        if img is None:
            report.fail(path, 'not a readable image')
            continue
        if why[0] and why[0] != REDO_INPUT:
            note(f'{shown(dst)}/{key}_s*.png: made again ({why[1]})')
        if why[0]:
            report.redo(why[0])
        rows = crop_positions(img.shape[0], crop, step, thresh)
        cols = crop_positions(img.shape[1], crop, step, thresh)
        files = {}
        for i, (y, x) in enumerate((y, x) for y in rows for x in cols):
            out = dst / f'{key}_s{i + 1:03d}.png'
            files[out] = write_png(out, np.ascontiguousarray(img[y:y + crop, x:x + crop]))
            subs[out.stem] = files[out][2]
        old = record.entries.get(unit)
        for rel, fp in (old.files.items() if old else ()):  # crops of an earlier run that are not made now
            if crop_name.fullmatch(rel) and self_made(record, rel, fp) and record.out / rel not in files:
                (record.out / rel).unlink()
                report.removed += 1
        record.put(unit, recipe, files)
        if not files:
            report.small(key, f'{record.rel(src)}/{key}.png', f'{img.shape[1]}x{img.shape[0]} is {small}')
        report.written += 1
    return subs


def self_made(record: Record, rel: str, fp: Fingerprint) -> bool:
    """The file ``rel`` is still what this command wrote there (so it may delete it)."""
    return file_state(record.out / rel) == fp[:2]


def build_lmdb(subs: Dict[str, str], src: Path, lmdb_path: Path, record: Record, report: Report,
               make: bool = True) -> bool:
    """LMDB of the sub-images ``subs`` (crop stem -> sha256) of ``src`` (keys = stems). Skipped when the record
    shows that ``lmdb_path`` holds exactly these images, byte for byte; built again when any of them was
    made again, even under the same name. Built under ``.partial-{name}`` beside it and renamed when
    complete, so an interrupted run never leaves an LMDB that looks finished (nor a partial one).
    Returns True when the LMDB is (now) as asked; with ``make`` False, only whether it already is.
    """
    from basicsr.utils.lmdb_util import make_lmdb_from_imgs

    partial = lmdb_path.with_name(f'{PARTIAL_PREFIX}{lmdb_path.name}')  # BasicSR wants the '.lmdb' suffix
    keys = sorted(subs)
    unit = record.rel(lmdb_path)
    recipe = {'made': 'lmdb', 'count': len(keys),
              'inputs': hashlib.sha256(''.join(f'{k} {subs[k]}\n' for k in keys).encode()).hexdigest()}
    if os.path.lexists(partial):  # left by an interrupted run: never trusted
        shutil.rmtree(partial, ignore_errors=True)
    why = record.check(unit, recipe, [lmdb_path / name for name in LMDB_FILES])
    if not make:
        return why is None
    if why is None:
        record.use(unit)
        return True
    if not keys:
        report.fail(lmdb_path, f'no sub-images to put in it (every image of {shown(src)} failed or is too small)')
        return False
    if why[0]:
        report.redo(why[0])
        note(f'{shown(lmdb_path)}: built again ({why[1]})')
    try:
        make_lmdb_from_imgs(str(src), str(partial), [f'{k}.png' for k in keys], keys, multiprocessing_read=False,
                            map_size=lmdb_map_size(src / f'{keys[0]}.png', len(keys)))
        if os.path.isdir(lmdb_path) and not os.path.islink(lmdb_path):
            shutil.rmtree(lmdb_path)
        elif os.path.lexists(lmdb_path):
            os.unlink(lmdb_path)
        os.replace(partial, lmdb_path)
    except BaseException as err:
        shutil.rmtree(partial, ignore_errors=True)
        if isinstance(err, OSError):
            raise WriteError(f'cannot build {shown(lmdb_path)}: {err.strerror or err}') from None
        raise
    files = {}
    for name in LMDB_FILES:
        size, mtime = file_state(lmdb_path / name)
        files[lmdb_path / name] = (size, mtime, file_sha256(lmdb_path / name) if name == 'meta_info.txt' else '')
    record.put(unit, recipe, files)
    return True


def lmdb_map_size(first: Path, count: int) -> int:
    """An LMDB size that holds ``count`` images of the first one's shape however they compress. BasicSR's own
    estimate (10 x the first image's PNG) fails with MapFullError when that image is flat and others are not;
    the map is reserved address space, not disk space."""
    from ..images import decode_file

    img = decode_file(first)
    if img is None:
        raise WriteError(f'{shown(first)} is not a readable image')
    rows = img.shape[0]
    return LMDB_MAP_MARGIN * count * (img.nbytes + rows + 2 * LMDB_PAGE) + LMDB_MAP_BASE


class FolderBusy(Exception):
    """Another asid-prepare run works in the same output folder."""


@contextlib.contextmanager
def exclusive_folder(out: Path) -> Iterator[None]:
    """Hold ``{out}/.asid-prepare.lock`` (an advisory ``flock``) for the run; :class:`FolderBusy` if another
    run holds it. Two runs writing the same sub-images and LMDBs would trip over each other's files."""
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOCK_NAME, 'a+') as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or '?'
            raise FolderBusy(f'another asid-prepare run (pid {holder}) is working in {shown(out)}; wait for it to '
                             'finish or choose another --out') from None
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        from ..utils.asid_files import remove_stale_temporaries

        for folder, _, _ in os.walk(out):  # no other run is writing here: leftovers of killed writes go
            remove_stale_temporaries(folder)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def lcm(values: Iterable[int]) -> int:
    out = 1
    for v in values:
        out = out * v // math.gcd(out, v)
    return out


# ----------------------------------------------------------------------------------------------
# Checks of the arguments (exit 2 before any work)
# ----------------------------------------------------------------------------------------------
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
    folder in ``folders`` that exists is a writable folder, each of ``files`` (the record, the lock) is a
    readable, writable regular file when it exists."""
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
        if os.path.lexists(folder):
            if not folder.is_dir():
                usage_error(f'{shown(folder)} is in the way: an output folder goes there; move it away or choose '
                            'another --out')
            if not writable_folder(folder):
                usage_error(f'{shown(folder)} is not writable')
    for path in files:
        if os.path.lexists(path):
            if os.path.islink(path) or not path.is_file():
                usage_error(f'{shown(path)} is not a regular file; move it away')
            if not os.access(path, os.R_OK | os.W_OK):
                usage_error(f'{shown(path)} cannot be read and written')


def check_name(name: str) -> None:
    if not name or name.startswith('.') or '/' in name or os.sep in name or not utf8_name(name):
        usage_error(f"--name '{shown(name)}': give a plain folder-name prefix (UTF-8, no '/', not starting with '.')")


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


# ----------------------------------------------------------------------------------------------
# Sub-commands
# ----------------------------------------------------------------------------------------------
def recorded_scales(record: Record, pattern: str) -> List[int]:
    """Scales of the units whose name matches ``pattern`` (a regular expression with one group: the scale)."""
    regex = re.compile(pattern)
    return sorted({int(m.group(1)) for unit in record.entries for m in [regex.match(unit)] if m})


def prepare_train(hr: Path, out: Path, name: str, scales: Sequence[int], crop: int = CROP_SIZE, step: int = STEP,
                  thresh: int = THRESH, lmdb: bool = True, paths: Optional[Sequence[Path]] = None,
                  report: Optional[Report] = None) -> Report:
    """HR folder -> ``{out}/{name}_HR``, ``{name}_LR_bicubic/X{s}``, their ``_sub`` crops and LMDBs.

    Outputs of scales not asked for this time are kept only while they are exactly what this run would make
    for them (same sources, modulus and crops); otherwise they are removed, as are the outputs of sources
    no longer in ``hr``. So every ``{name}_*`` folder always describes the same images."""
    check_crop(scales, crop, step, thresh)
    check_name(name)
    check_utf8_out(out)
    report = Report() if report is None else report
    images = paths if paths is not None else user_images(hr, '--hr')
    check_sources_apart(hr, train_folders(out, name, scales))
    modulus = lcm(scales)
    hr_dir, hr_sub = out / f'{name}_HR', out / f'{name}_HR_sub'
    lr_root = out / f'{name}_LR_bicubic'
    scope = re.compile(rf'^{re.escape(name)}_(HR|HR_sub|HR_sub\.lmdb|LR_bicubic|LR_bicubic_X\d+_sub\.lmdb)$')
    with Record(out) as record:
        sources = collect_sources(images, report, name)
        targets: Dict[Path, Optional[int]] = {hr_dir: None, **{lr_root / f'X{s}': s for s in scales}}
        made = make_hr_lr(sources, record, targets, modulus, report, desc=f'{name}: HR + bicubic LR')
        subs = {hr_sub: extract_subimages(made[hr_dir], hr_dir, hr_sub, crop, step, thresh, record, report,
                                          desc=f'{name}: HR sub-images')}
        for s in scales:
            subs[lr_root / f'X{s}_sub'] = extract_subimages(made[lr_root / f'X{s}'], lr_root / f'X{s}',
                                                            lr_root / f'X{s}_sub', crop // s, step // s, thresh // s,
                                                            record, report, desc=f'{name}: X{s} sub-images')
        lmdbs = {hr_sub: out / f'{name}_HR_sub.lmdb',
                 **{lr_root / f'X{s}_sub': out / f'{name}_LR_bicubic_X{s}_sub.lmdb' for s in scales}}
        for folder, lmdb_path in lmdbs.items():
            if lmdb:
                build_lmdb(subs[folder], folder, lmdb_path, record, report)
            elif build_lmdb(subs[folder], folder, lmdb_path, record, report, make=False):
                record.use(record.rel(lmdb_path))  # still holds exactly these sub-images: kept
        # scales made before and not asked for now: kept while consistent with this run's HR images
        others = [t for t in recorded_scales(record, rf'^{re.escape(name)}_LR_bicubic/X(\d+)/') if t not in scales]
        for t in others:
            keep_scale(record, sources, lr_root, out / f'{name}_LR_bicubic_X{t}_sub.lmdb', t, modulus, crop, step,
                       thresh)
        record.sweep(lambda unit: bool(scope.match(unit.split('/', 1)[0])), report)
        report_foreign([hr_dir, hr_sub] + [lr_root / f'X{s}' for s in scales] + [lr_root / f'X{s}_sub' for s in scales],
                       record, report)
    return report


def keep_scale(record: Record, sources: Sequence[Source], lr_root: Path, lmdb_path: Path, t: int, modulus: int,
               crop: int, step: int, thresh: int) -> None:
    """Mark the recorded outputs of scale ``t`` (not asked for by this run) as used when they are exactly what
    this run would make for ``t``; otherwise they stay unused and the sweep removes them."""
    if modulus % t or crop % t or step % t:
        return
    lr_dir, sub_dir = lr_root / f'X{t}', lr_root / f'X{t}_sub'
    made = make_hr_lr(sources, record, {lr_dir: t}, modulus, Report(), '', make=False)
    if made is None:
        return
    subs = extract_subimages(made[lr_dir], lr_dir, sub_dir, crop // t, step // t, thresh // t, record, Report(), '',
                             make=False)
    if subs is None:
        return
    units = [record.rel(lr_dir / f'{k}.png') for k in made[lr_dir]]
    units += [f'{record.rel(sub_dir)}/{k}' for k in made[lr_dir]]
    if build_lmdb(subs, sub_dir, lmdb_path, record, Report(), make=False):
        units.append(record.rel(lmdb_path))
    for unit in units:
        record.use(unit)


def prepare_bench(hr_folders: Sequence[Path], out: Path, scales: Sequence[int],
                  report: Optional[Report] = None) -> Report:
    """Benchmark HR folders -> ``{out}/{set}/GTmod{s}`` + ``{out}/{set}/LRbicx{s}`` for each scale.

    Outputs of scales not asked for this time stay while they are still made from the same source images;
    those of sources no longer in the folder are removed."""
    check_scales(scales)
    report = Report() if report is None else report
    sets = bench_sets(hr_folders)
    images = {name: user_images(folder, '--hr') for name, folder in sets}  # every folder checked before any work
    for name, folder in sets:
        check_sources_apart(folder, bench_folders(out, name, scales)[1:])
    with Record(out) as record:
        for name, folder in sets:
            sources = collect_sources(images[name], report, name)
            for s in scales:
                make_hr_lr(sources, record, {out / name / f'GTmod{s}': None, out / name / f'LRbicx{s}': s}, s, report,
                           desc=f'{name} x{s}')
            for t in recorded_scales(record, rf'^{re.escape(name)}/GTmod(\d+)/'):
                if t not in scales:
                    targets = {out / name / f'GTmod{t}': None, out / name / f'LRbicx{t}': t}
                    made = make_hr_lr(sources, record, targets, t, Report(), '', make=False)
                    for folder, keys in (made or {}).items():
                        for key in keys:
                            record.use(record.rel(folder / f'{key}.png'))
            record.sweep(lambda unit, name=name: unit.split('/', 1)[0] == name, report)
            report_foreign(bench_folders(out, name, scales)[1:], record, report)
    return report


def prepare_demo(out: Path, scales: Sequence[int] = (2, ), crop: int = DEMO_CROP, step: int = DEMO_STEP,
                 report: Optional[Report] = None) -> Report:
    """The CPU demo's data: scikit-image's bundled samples -> training LMDB + validation pairs."""
    check_crop(scales, crop, step, THRESH)
    check_utf8_out(out)
    report = Report() if report is None else report
    sources = out / 'source'
    samples = None
    with Record(out) as record:
        for split, names in (('train', DEMO_TRAIN), ('val', DEMO_VAL)):
            for name in names:
                path = sources / split / f'{name}.png'
                unit, recipe = record.rel(path), {'made': 'sample', 'name': name}
                if record.check(unit, recipe, [path]) is None:
                    record.use(unit)
                    continue
                if samples is None:
                    import skimage.data as samples

                img = getattr(samples, name)()
                img = img[0] if isinstance(img, tuple) else img  # stereo pairs: the left view
                img = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]
                record.put(unit, recipe, {path: write_png(path, cv2.cvtColor(img, cv2.COLOR_RGB2BGR))})
        record.sweep(lambda unit: unit.split('/', 1)[0] == 'source', report)
        report_foreign([sources / 'train', sources / 'val'], record, report)
    prepare_train(sources / 'train', out, 'demo_train', scales, crop, step, report=report)
    prepare_bench([sources / 'val'], out, scales, report=report)
    return report


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='asid-prepare', description=__doc__.split('\n\n')[0].replace('``', "'"))
    sub = parser.add_subparsers(dest='command', required=True)
    p = sub.add_parser('train', help='training set: HR folder -> HR/LR, sub-images, LMDB (BasicSR DIV2K layout)')
    p.add_argument('--hr', type=Path, required=True, help='folder of HR images (e.g. DIV2K/DIV2K_train_HR)')
    p.add_argument('--out', type=Path, required=True, help='output folder (e.g. datasets/DIV2K)')
    p.add_argument('--name', default='DIV2K_train', help='prefix of the outputs (default: DIV2K_train)')
    p.add_argument('--scales', type=int, nargs='+', default=[2, 3, 4])
    p.add_argument('--crop-size', type=int, default=CROP_SIZE, help='HR sub-image size (default 480)')
    p.add_argument('--step', type=int, default=STEP, help='HR sub-image step (default 240)')
    p.add_argument('--thresh', type=int, default=THRESH, help='keep a last crop if this many px remain (default 0)')
    p.add_argument('--no-lmdb', action='store_true', help='stop after the sub-images (disk-folder training)')
    p = sub.add_parser('bench', help='benchmark sets: HR folders -> {set}/GTmod{s} + {set}/LRbicx{s}')
    p.add_argument('--hr', type=Path, nargs='+', required=True, help='HR folders, e.g. Set5/HR Set14/HR')
    p.add_argument('--out', type=Path, default=Path('datasets'), help='output root (default: datasets)')
    p.add_argument('--scales', type=int, nargs='+', default=[2, 3, 4])
    p = sub.add_parser('demo', help="the CPU demo's data from scikit-image's bundled sample images")
    p.add_argument('--out', type=Path, default=Path('datasets/demo'))
    p.add_argument('--scales', type=int, nargs='+', default=[2])
    args = parser.parse_args(argv)

    # every argument is checked before anything is written
    own_files = [args.out / RECORD_NAME, args.out / LOCK_NAME]
    if args.command == 'train':
        check_crop(args.scales, args.crop_size, args.step, args.thresh)
        check_name(args.name)
        check_out(args.out, train_folders(args.out, args.name, args.scales), own_files)
        user_images(args.hr, '--hr')
        check_sources_apart(args.hr, train_folders(args.out, args.name, args.scales))
    elif args.command == 'bench':
        check_scales(args.scales)
        sets = bench_sets(args.hr)
        check_out(args.out, [f for name, _ in sets for f in bench_folders(args.out, name, args.scales)], own_files)
        for name, folder in sets:
            user_images(folder, '--hr')
            check_sources_apart(folder, bench_folders(args.out, name, args.scales)[1:])
    else:
        check_crop(args.scales, DEMO_CROP, DEMO_STEP, THRESH)
        check_out(args.out, [args.out / 'source'] + train_folders(args.out, 'demo_train', args.scales)
                  + bench_folders(args.out, 'val', args.scales), own_files)

    report = Report()
    try:
        with stop_on_signals(), exclusive_folder(args.out):
            if args.command == 'train':
                prepare_train(args.hr, args.out, args.name, args.scales, args.crop_size, args.step, args.thresh,
                              lmdb=not args.no_lmdb, report=report)
            elif args.command == 'bench':
                prepare_bench(args.hr, args.out, args.scales, report=report)
            else:
                prepare_demo(args.out, args.scales, report=report)
    except FolderBusy as err:
        print(f'asid-prepare: {err}', file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as err:
        print(f'asid-prepare {args.command}: stopped by {interrupt_name(err)} ({report.counts()}); what was '
              'finished is kept and nothing half-written is left: run the same command again to finish',
              file=sys.stderr)
        return interrupt_exit_status(err)
    except (WriteError, OSError) as err:
        print(f'asid-prepare: {err}', file=sys.stderr)
        print(f'asid-prepare {args.command}: stopped ({report.counts()}); run it again once this is fixed',
              file=sys.stderr)
        return EXIT_FAILED
    print(f'asid-prepare {args.command}: {report.counts()}')
    for path, reason in report.failed.items():
        print(f'  failed: {path}: {reason}', file=sys.stderr)
    return EXIT_FAILED if report.failed else EXIT_OK


if __name__ == '__main__':
    sys.exit(main())
