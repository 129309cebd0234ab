"""The steps of ``asid-prepare`` (the command and its documentation: :mod:`asid_arch.cli.prepare`): HR images ->
mod-crop -> MATLAB-compatible bicubic LR -> sub-images -> LMDB, benchmark pairs, and the demo's embedded data set,
each step resumable through the record (:mod:`asid_arch.data.record`)."""
from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..console import bars_of, progress_bar, shown
from ..utils.asid_files import file_sha256
from .prepare_arguments import (bench_folders, bench_sets, check_crop, check_name, check_scales, check_sources_apart,
                                check_utf8_out, train_folders, user_images)
from .record import (LMDB_FILES, REDO_INPUT, REDO_ORDER, Fingerprint, Record, Report, WriteError, file_state,
                     fingerprint, note, report_foreign)

PNG_COMPRESSION = 3  # BasicSR's extract_subimages default
CROP_SIZE, STEP, THRESH = 480, 240, 0  # BasicSR's DIV2K sub-image convention (HR pixels)
DEMO_TRAIN = ('astronaut', 'rocket', 'immunohistochemistry', 'hubble_deep_field', 'retina', 'stereo_motorcycle',
              'camera', 'brick', 'grass', 'gravel', 'coins', 'moon', 'page', 'text', 'clock')
DEMO_VAL = ('chelsea', 'coffee')
DEMO_CROP, DEMO_STEP = 192, 96  # smaller crops than DIV2K's: the sample images are small
LOCK_NAME = '.asid-prepare.lock'
PARTIAL_PREFIX = '.partial-'  # an LMDB being built; never used, removed by the next run
UNSAFE_KEY_CHARS = re.compile(r'[^A-Za-z0-9_-]')  # replaced by '_' in output names (LMDB keys)
LMDB_PAGE = 4096  # an LMDB value larger than a page takes whole overflow pages
LMDB_MAP_MARGIN = 2  # PNG of noise is slightly larger than the raw pixels (+ a filter byte per row)
LMDB_MAP_BASE = 1 << 24  # bytes for the LMDB's own pages

# why an output is made again (summary categories)


# ----------------------------------------------------------------------------------------------
# Image helpers
# ----------------------------------------------------------------------------------------------


def read_rgb8(path: Path) -> Tuple[np.ndarray, str]:
    """Read an image as 3-channel uint8 BGR (grayscale replicated, alpha dropped, 16-bit scaled, EXIF
    orientation applied), with the sha256 of the bytes decoded; raises ValueError
    (:class:`~asid_arch.image_reader.ImageError`) if it is unreadable, truncated or damaged."""
    from ..image_reader import open_image, single_picture, to_depth
    from .prepare_arguments import MAX_HR_PIXELS, hr_need

    image = open_image(path)
    pic = single_picture(image, max_pixels=MAX_HR_PIXELS, need=hr_need)
    img = to_depth(pic.color, np.uint8)
    return np.repeat(img[:, :, None], 3, axis=2) if img.ndim == 2 else img, hashlib.sha256(image.data).hexdigest()


def read_png(path: Path) -> Tuple[Optional[np.ndarray], str]:
    """An image this command wrote (decoded as stored; None when it cannot be decoded) and the sha256 of the
    bytes decoded."""
    from ..utils.asid_files import check_readable_file

    data = check_readable_file(path).read_bytes()
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    return img, hashlib.sha256(data).hexdigest()


def write_png(path: Path, img: np.ndarray) -> Fingerprint:
    """Write a PNG atomically (``path`` either does not exist or holds the complete image); its fingerprint."""
    from ..image_writer import imwrite_atomic

    try:
        data = imwrite_atomic(path, img, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
        return fingerprint(path, hashlib.sha256(data).hexdigest())
    except OSError as err:
        raise WriteError(f'cannot write {shown(path)}: {err.strerror or err}') from None


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
    from ..utils import asid_compat  # noqa: F401  isort: skip  (first: the torchvision alias BasicSR 1.4.2 needs)
    from basicsr.utils.matlab_functions import imresize

    out = imresize(img.astype(np.float64) / 255.0, scale)
    return np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)


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
    for path in progress_bar(paths, desc=f'{desc}: reading sources', unit='img'):
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
    for src in (progress_bar(sources, desc=desc, unit='img') if make else sources):
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
            hr, sha = read_rgb8(src.path)
            hr = mod_crop(hr, modulus)
            if min(hr.shape[:2]) == 0:
                raise ValueError(f'smaller than {modulus} px')
            if sha != src.sha:  # what was decoded is not what was hashed when listed (and decided upon)
                raise ValueError('it changed while this run was reading it: nothing made from it; run again once '
                                 'it stays unchanged')
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
    subs: Dict[str, str] = {}
    small = f'smaller than one {crop} px sub-image: it is in no sub-image and not in the LMDB'
    for key, sha in (progress_bar(inputs.items(), desc=desc, unit='img') if make else inputs.items()):
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
            img, read = read_png(path)
        except OSError as err:
            report.fail(path, f'cannot be read ({err.strerror or err})')
            continue
        if read != sha:  # what is decoded must be what the record says this run wrote there
            report.fail(path, 'changed since this run wrote it (by another program?): no sub-images made from it; '
                              'run again')
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
    from ..utils import asid_compat  # noqa: F401  isort: skip  (first: the torchvision alias BasicSR 1.4.2 needs)
    from basicsr.utils import lmdb_util

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
        with bars_of(lmdb_util):  # BasicSR's bar redraws once per image: none in a log
            lmdb_util.make_lmdb_from_imgs(str(src), str(partial), [f'{k}.png' for k in keys], keys,
                                          multiprocessing_read=False,
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
    files = {lmdb_path / name: fingerprint(lmdb_path / name, file_sha256(lmdb_path / name)) for name in LMDB_FILES}
    record.put(unit, recipe, files)
    return True


def lmdb_map_size(first: Path, count: int) -> int:
    """An LMDB size that holds ``count`` images of the first one's shape however they compress. BasicSR's own
    estimate (10 x the first image's PNG) fails with MapFullError when that image is flat and others are not;
    the map is reserved address space, not disk space."""
    from ..image_reader import decode_file

    img = decode_file(first)
    if img is None:
        raise WriteError(f'{shown(first)} is not a readable image')
    rows = img.shape[0]
    return LMDB_MAP_MARGIN * count * (img.nbytes + rows + 2 * LMDB_PAGE) + LMDB_MAP_BASE


class FolderBusy(Exception):
    """Another asid-prepare run works in the same output folder."""


@contextlib.contextmanager
def exclusive_folder(out: Path, folders: Sequence[Path] = ()) -> Iterator[None]:
    """Hold ``{out}/.asid-prepare.lock`` for the run (it holds the holder's pid); :class:`FolderBusy` if another
    run holds it. Two runs writing the same sub-images and LMDBs would trip over each other's files.

    Once held, the temporaries that killed writes of this package left in ``out`` and in the run's output
    ``folders`` are removed: those folders only (not the tree under ``out``, which may hold anything of the
    user's), and only files named as the package's atomic writes name them."""
    import filelock

    out.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(out / LOCK_NAME, timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        holder = (out / LOCK_NAME).read_text(errors='replace').strip() or '?'
        raise FolderBusy(f'another asid-prepare run (pid {holder}) is working in {shown(out)}; wait for it to '
                         'finish or choose another --out') from None
    try:
        (out / LOCK_NAME).write_text(str(os.getpid()))
        from ..utils.asid_files import remove_stale_temporaries

        for folder in [out, *folders]:  # no other run is writing here: leftovers of killed writes go
            remove_stale_temporaries(folder)
        yield
    finally:
        lock.release()


# ----------------------------------------------------------------------------------------------
# Sub-commands
# ----------------------------------------------------------------------------------------------
def recorded_scales(record: Record, pattern: str) -> List[int]:
    """Scales of the units whose name matches ``pattern`` (a regular expression with one group: the scale)."""
    regex = re.compile(pattern)
    return sorted({int(m.group(1)) for unit in record.entries for m in [regex.match(unit)] if m})


def prepare_train(hr: Path, out: Path, name: str, scales: Sequence[int], crop: int = CROP_SIZE, step: int = STEP,
                  thresh: int = THRESH, lmdb: bool = True, paths: Optional[Sequence[Path]] = None,
                  report: Optional[Report] = None, verify: bool = False) -> Report:
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
    modulus = math.lcm(*scales)
    hr_dir, hr_sub = out / f'{name}_HR', out / f'{name}_HR_sub'
    lr_root = out / f'{name}_LR_bicubic'
    scope = re.compile(rf'^{re.escape(name)}_(HR|HR_sub|HR_sub\.lmdb|LR_bicubic|LR_bicubic_X\d+_sub\.lmdb)$')
    with Record(out, verify) as record:
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
                  report: Optional[Report] = None, verify: bool = False) -> Report:
    """Benchmark HR folders -> ``{out}/{set}/GTmod{s}`` + ``{out}/{set}/LRbicx{s}`` for each scale.

    Outputs of scales not asked for this time stay while they are still made from the same source images;
    those of sources no longer in the folder are removed."""
    check_scales(scales)
    report = Report() if report is None else report
    sets = bench_sets(hr_folders)
    images = {name: user_images(folder, '--hr') for name, folder in sets}  # every folder checked before any work
    for name, folder in sets:
        check_sources_apart(folder, bench_folders(out, name, scales)[1:])
    with Record(out, verify) as record:
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
                 report: Optional[Report] = None, verify: bool = False) -> Report:
    """The CPU demo's data: scikit-image's bundled samples -> training LMDB + validation pairs."""
    check_crop(scales, crop, step, THRESH)
    check_utf8_out(out)
    report = Report() if report is None else report
    sources = out / 'source'
    samples = None
    with Record(out, verify) as record:
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
    prepare_train(sources / 'train', out, 'demo_train', scales, crop, step, report=report, verify=verify)
    prepare_bench([sources / 'val'], out, scales, report=report, verify=verify)
    return report
