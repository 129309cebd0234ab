"""What ``asid-prepare`` made, from what, with which settings: the record that makes "done" mean done.

``{out}/.asid-prepare-record.jsonl`` holds one line per unit of work (an HR/LR image, the sub-images of one
image, an LMDB): the recipe (step, the content hash of the source or input, the settings) and the size,
modification time, hash and inode change time of every file it wrote. A re-run skips a unit only when all of
these still hold; otherwise the unit is made again and the reason is counted in the :class:`Report`. Size
and modification time are compared always; the content hash where they cannot tell: with ``--verify``,
when the file's inode changed since it was written (its change time, which no program can set back, moved:
a write followed by a reset of the modification time, a copy), and when the file was written so shortly
before the record that a later write could have kept its modification time (:data:`MTIME_RESOLUTION_NS`).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, Optional, Sequence, Tuple

from tqdm import tqdm

from ..console import shown
from ..utils.asid_files import file_sha256

LMDB_FILES = ('data.mdb', 'meta_info.txt')  # what an LMDB's record covers (lock.mdb changes when it is read)
RECORD_NAME = '.asid-prepare-record.jsonl'
RECORD_VERSION = 1  # entries of another version are ignored (their work is done again)
NAMES_SHOWN = 3  # file names listed in one message before '...'
VALUE_SHOWN = 40  # characters of a recorded setting quoted in a message
REDO_SOURCE = 'source changed'
REDO_SETTINGS = 'settings changed'
REDO_INPUT = 'input changed'
REDO_EDITED = 'output edited or deleted'
REDO_UNRECORDED = 'not in the record'
REDO_ORDER = (REDO_SOURCE, REDO_SETTINGS, REDO_INPUT, REDO_EDITED, REDO_UNRECORDED)
MTIME_RESOLUTION_NS = 2_000_000_000  # the coarsest modification-time step of a common file system (FAT: 2 s)
# size, modification time (ns), sha256 of the content ('' when not hashed), inode change time (ns; 0: not known)
Fingerprint = Tuple[int, int, str, int]


def note(message: str) -> None:
    tqdm.write(f'[asid-prepare] {message}', file=sys.stderr)


def listed(names: Sequence[str]) -> str:
    """``a, b, c`` or ``a, b, c, ... (12 in all)``."""
    head = ', '.join(names[:NAMES_SHOWN])
    return head if len(names) <= NAMES_SHOWN else f'{head}, ... ({len(names)} in all)'


def file_state(path: Path) -> Optional[Tuple[int, int]]:
    """``(size, mtime_ns)`` of a regular file (not through a link), None when there is none."""
    st = regular_stat(path)
    return (st.st_size, st.st_mtime_ns) if st else None


def regular_stat(path: Path) -> Optional[os.stat_result]:
    """``os.lstat`` of a regular file, None when there is none (or something else stands there)."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def fingerprint(path: Path, sha: str) -> Fingerprint:
    """The fingerprint of the regular file just written at ``path`` whose content has the hash ``sha``."""
    st = os.lstat(path)
    return st.st_size, st.st_mtime_ns, sha, st.st_ctime_ns


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
        if not (safe_relative(rel) and isinstance(fp, list) and len(fp) in (3, 4) and type(fp[0]) is int
                and type(fp[1]) is int and isinstance(fp[2], str) and type(fp[-1]) is int):
            return None
        checked[rel] = (fp[0], fp[1], fp[2], fp[3] if len(fp) == 4 else 0)  # (3: written before change times)
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
    An entry counts only while every file it lists still has the recorded size and modification time, and
    the recorded content where these cannot tell (:meth:`holds`; every file with ``verify``).
    """

    def __init__(self, out: Path, verify: bool = False) -> None:
        self.out = out
        self.path = out / RECORD_NAME
        self.verify = verify
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
        st = regular_stat(self.path)
        self.written_ns = st.st_mtime_ns if st else 0  # when the record was last written
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
        for rel in entry.files:
            if not self.holds(entry, rel):
                return REDO_EDITED, f'{rel} was edited or deleted since it was made'
        return None

    def holds(self, entry: Entry, rel: str) -> bool:
        """The file ``rel`` of ``entry`` is still what was written: same size and modification time, and the same
        content hash where these cannot tell (``verify``; the inode changed since; or written within
        :data:`MTIME_RESOLUTION_NS` of the record, so that a second write could have kept its time). A hash
        that matches again is recorded with the new change time (not hashed again next time)."""
        fp = entry.files[rel]
        st = regular_stat(self.out / rel)
        if st is None or (st.st_size, st.st_mtime_ns) != fp[:2]:
            return False
        if not fp[2]:  # not hashed when written (an LMDB's data.mdb, by older versions): size and time are all
            return True
        racy = fp[1] + MTIME_RESOLUTION_NS > self.written_ns
        if not (self.verify or racy or st.st_ctime_ns != fp[3]):
            return True
        try:
            same = file_sha256(self.out / rel) == fp[2]
        except OSError:
            return False
        if same:
            entry.files[rel] = (*fp[:3], st.st_ctime_ns)
        return same

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
