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

Every step is resumable: images are written atomically, a finished step is skipped on re-run,
and an LMDB is built under a temporary name and renamed only when complete. Unreadable images
are reported by name and skipped; the exit status is then 1.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence

import cv2
import numpy as np
from tqdm import tqdm


IMG_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm')
PNG_COMPRESSION = 3  # BasicSR's extract_subimages default
CROP_SIZE, STEP, THRESH = 480, 240, 0  # BasicSR's DIV2K sub-image convention (HR pixels)
DEMO_TRAIN = ('astronaut', 'rocket', 'immunohistochemistry', 'hubble_deep_field', 'retina', 'stereo_motorcycle',
              'camera', 'brick', 'grass', 'gravel', 'coins', 'moon', 'page', 'text', 'clock')
DEMO_VAL = ('chelsea', 'coffee')
DEMO_CROP, DEMO_STEP = 192, 96  # smaller crops than DIV2K's: the sample images are small
LOCK_NAME = '.asid-prepare.lock'
MAX_HR_PIXELS = 400_000_000  # refuse, before decoding, an HR image larger than this


@dataclass
class Report:
    """What a run did: counts per step and the images that could not be used."""
    written: int = 0
    skipped: int = 0
    failed: Dict[str, str] = field(default_factory=dict)

    def fail(self, path: Path, reason: str) -> None:
        self.failed[str(path)] = reason
        tqdm.write(f'[asid-prepare] skipped {path}: {reason}', file=sys.stderr)


# ----------------------------------------------------------------------------------------------
# Image helpers
# ----------------------------------------------------------------------------------------------
def list_images(folder: Path) -> List[Path]:
    if not folder.is_dir():
        raise SystemExit(f'asid-prepare: {folder} is not a folder')
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMG_EXTENSIONS and p.is_file())


def user_images(folder: Path, option: str) -> List[Path]:
    """The images of a folder the user named (``option``); exits with status 2 and a hint when there are
    none (e.g. a data set root whose images sit in an ``HR`` subfolder)."""
    if not folder.is_dir():
        print(f'asid-prepare: {option} {folder} is not a folder', file=sys.stderr)
        raise SystemExit(2)
    images = list_images(folder)
    if not images:
        subs = [p for p in sorted(folder.iterdir()) if p.is_dir() and list_images(p)]
        hint = f'; did you mean {subs[0]}?' if subs else ''
        print(f'asid-prepare: {option} {folder} holds no images ({", ".join(sorted(IMG_EXTENSIONS))}){hint}',
              file=sys.stderr)
        raise SystemExit(2)
    return images


def read_rgb8(path: Path) -> np.ndarray:
    """Read an image as 3-channel uint8 BGR (grayscale replicated, alpha dropped, 16-bit scaled, EXIF
    orientation applied); raises ValueError (:class:`~asid_arch.images.ImageError`) if it is unreadable,
    truncated or damaged."""
    from ..images import read_picture, to_depth

    pic = read_picture(path, max_pixels=MAX_HR_PIXELS)
    img = to_depth(pic.color, np.uint8)
    return np.repeat(img[:, :, None], 3, axis=2) if img.ndim == 2 else img


def write_png_atomic(path: Path, img: np.ndarray) -> None:
    """Write a PNG so that ``path`` either does not exist or holds the complete image."""
    from ..fileio import imwrite_atomic  # (imports torch and BasicSR: not needed for --help)

    imwrite_atomic(path, img, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])


def mod_crop(img: np.ndarray, modulus: int) -> np.ndarray:
    h, w = img.shape[:2]
    return img[:h - h % modulus, :w - w % modulus]


def bicubic_resize(img: np.ndarray, scale: float) -> np.ndarray:
    """MATLAB ``imresize(img, scale, 'bicubic')`` of a uint8 image, rounded back to uint8."""
    from basicsr.utils.matlab_functions import imresize

    out = imresize(img.astype(np.float64) / 255.0, scale)
    return np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# Steps
# ----------------------------------------------------------------------------------------------
def make_hr_lr(hr_paths: Sequence[Path], hr_out: Path, lr_outs: Dict[int, Path], modulus: int, report: Report,
               desc: str) -> None:
    """Mod-crop each HR image to ``modulus`` and make its bicubic LR for every scale."""
    for path in tqdm(hr_paths, desc=desc, unit='img'):
        name = path.stem + '.png'
        targets = [hr_out / name] + [folder / name for folder in lr_outs.values()]
        if all(t.exists() for t in targets):
            report.skipped += 1
            continue
        try:
            hr = mod_crop(read_rgb8(path), modulus)
            if min(hr.shape[:2]) == 0:
                raise ValueError(f'smaller than {modulus} px')
        except ValueError as err:
            report.fail(path, str(err))
            continue
        for scale, folder in lr_outs.items():  # LR first: the HR file marks the image as done
            write_png_atomic(folder / name, bicubic_resize(hr, 1 / scale))
        write_png_atomic(hr_out / name, hr)
        report.written += 1


def crop_positions(size: int, crop: int, step: int, thresh: int) -> List[int]:
    """BasicSR's sub-image origins: ``0, step, ...`` plus a last crop flush with the border."""
    if size < crop:
        return []
    positions = list(range(0, size - crop + 1, step))
    if size - (positions[-1] + crop) > thresh:
        positions.append(size - crop)
    return positions


def extract_subimages(src: Path, dst: Path, crop: int, step: int, thresh: int, report: Report, desc: str) -> None:
    """Cut every image of ``src`` into ``{stem}_s{001..}.png`` crops in ``dst`` (row-major)."""
    from ..images import decode_file  # (imports torch and BasicSR: not needed for --help)

    for path in tqdm(list_images(src), desc=desc, unit='img'):
        img = decode_file(path)
        if img is None:
            report.fail(path, 'not a readable image')
            continue
        rows = crop_positions(img.shape[0], crop, step, thresh)
        cols = crop_positions(img.shape[1], crop, step, thresh)
        names = [f'{path.stem}_s{i + 1:03d}.png' for i in range(len(rows) * len(cols))]
        if names and (dst / names[-1]).exists():  # written in order: the last one marks completion
            report.skipped += 1
            continue
        for i, (y, x) in enumerate((y, x) for y in rows for x in cols):
            if not (dst / names[i]).exists():
                write_png_atomic(dst / names[i], np.ascontiguousarray(img[y:y + crop, x:x + crop]))
        report.written += 1


def build_lmdb(src: Path, lmdb_path: Path) -> bool:
    """LMDB of every PNG in ``src`` (keys = file stems). Skips when ``lmdb_path`` already holds them.

    Built under ``.partial-{lmdb_path.name}`` beside it and renamed when complete, so an interrupted run never
    leaves an LMDB that looks finished. Returns True if it built one.
    """
    from basicsr.utils.lmdb_util import make_lmdb_from_imgs

    names = sorted(p.name for p in src.iterdir() if p.suffix == '.png')
    keys = [Path(n).stem for n in names]
    meta = lmdb_path / 'meta_info.txt'
    if meta.exists() and (lmdb_path / 'data.mdb').exists():
        done = [line.split(' ')[0].rsplit('.', 1)[0] for line in meta.read_text().splitlines() if line.strip()]
        if sorted(done) == keys:
            return False
        shutil.rmtree(lmdb_path)  # stale: built from other images
    partial = lmdb_path.with_name(f'.partial-{lmdb_path.name}')  # BasicSR wants the '.lmdb' suffix
    if partial.exists():
        shutil.rmtree(partial)
    if not names:
        raise SystemExit(f'asid-prepare: no PNG images in {src} to put into {lmdb_path}')
    make_lmdb_from_imgs(str(src), str(partial), names, keys, multiprocessing_read=False)
    os.replace(partial, lmdb_path)
    return True


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
            raise FolderBusy(f'another asid-prepare run (pid {holder}) is working in {out}; wait for it to finish '
                             'or choose another --out') from None
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        from ..fileio import remove_stale_temporaries

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
# Sub-commands
# ----------------------------------------------------------------------------------------------
def prepare_train(hr: Path, out: Path, name: str, scales: Sequence[int], crop: int = CROP_SIZE, step: int = STEP,
                  thresh: int = THRESH, lmdb: bool = True, paths: Optional[Sequence[Path]] = None) -> Report:
    """HR folder -> ``{out}/{name}_HR``, ``{name}_LR_bicubic/X{s}``, their ``_sub`` crops and LMDBs."""
    for s in scales:
        if crop % s or step % s:
            raise SystemExit(f'asid-prepare: crop size {crop} and step {step} must be multiples of scale {s}')
    report = Report()
    hr_dir = out / f'{name}_HR'
    lr_dirs = {s: out / f'{name}_LR_bicubic' / f'X{s}' for s in scales}
    make_hr_lr(paths if paths is not None else user_images(hr, '--hr'), hr_dir, lr_dirs, lcm(scales), report,
               desc=f'{name}: HR + bicubic LR')
    extract_subimages(hr_dir, out / f'{name}_HR_sub', crop, step, thresh, report, desc=f'{name}: HR sub-images')
    for s, lr_dir in lr_dirs.items():
        extract_subimages(lr_dir, lr_dir.with_name(f'X{s}_sub'), crop // s, step // s, thresh // s, report,
                          desc=f'{name}: X{s} sub-images')
    if lmdb:
        build_lmdb(out / f'{name}_HR_sub', out / f'{name}_HR_sub.lmdb')
        for s, lr_dir in lr_dirs.items():
            build_lmdb(lr_dir.with_name(f'X{s}_sub'), out / f'{name}_LR_bicubic_X{s}_sub.lmdb')
    return report


def set_name(hr_folder: Path) -> str:
    """``.../Set5/HR`` -> ``Set5``; any other folder -> its own name."""
    return hr_folder.parent.name if hr_folder.name.upper() == 'HR' else hr_folder.name


def prepare_bench(hr_folders: Sequence[Path], out: Path, scales: Sequence[int]) -> Report:
    """Benchmark HR folders -> ``{out}/{set}/GTmod{s}`` + ``{out}/{set}/LRbicx{s}`` for each scale."""
    report = Report()
    for folder in hr_folders:
        name = set_name(folder)
        images = user_images(folder, '--hr')
        for s in scales:
            make_hr_lr(images, out / name / f'GTmod{s}', {s: out / name / f'LRbicx{s}'}, s, report,
                       desc=f'{name} x{s}')
    return report


def prepare_demo(out: Path, scales: Sequence[int] = (2, ), crop: int = DEMO_CROP, step: int = DEMO_STEP) -> Report:
    """The CPU demo's data: scikit-image's bundled samples -> training LMDB + validation pairs."""
    import skimage.data

    sources = out / 'source'
    for split, names in (('train', DEMO_TRAIN), ('val', DEMO_VAL)):
        for name in names:
            path = sources / split / f'{name}.png'
            if path.exists():
                continue
            img = getattr(skimage.data, name)()
            img = img[0] if isinstance(img, tuple) else img  # stereo pairs: the left view
            img = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]
            write_png_atomic(path, cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    report = prepare_train(sources / 'train', out, 'demo_train', scales, crop, step)
    bench = prepare_bench([sources / 'val'], out, scales)
    report.written += bench.written
    report.skipped += bench.skipped
    report.failed.update(bench.failed)
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
    for s in args.scales:
        if s < 1:
            parser.error(f'scales must be positive integers, got {s}')

    try:
        with exclusive_folder(args.out):
            if args.command == 'train':
                report = prepare_train(args.hr, args.out, args.name, args.scales, args.crop_size, args.step,
                                       args.thresh, lmdb=not args.no_lmdb)
            elif args.command == 'bench':
                report = prepare_bench(args.hr, args.out, args.scales)
            else:
                report = prepare_demo(args.out, args.scales)
    except FolderBusy as err:
        print(f'asid-prepare: {err}', file=sys.stderr)
        return 2
    print(f'asid-prepare {args.command}: {report.written} written, {report.skipped} already done, '
          f'{len(report.failed)} failed')
    for path, reason in report.failed.items():
        print(f'  failed: {path}: {reason}', file=sys.stderr)
    return 1 if report.failed else 0


if __name__ == '__main__':
    sys.exit(main())
