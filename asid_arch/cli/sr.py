"""``asid-sr``: super-resolve your own images with a trained ASID checkpoint.

    asid-sr photo.jpg shots/ 'scans/*.png' -o upscaled/ --model ASID_x4.pth
    asid-sr photo.jpg -o upscaled/ -m asid_x4      (released weights by name: asid_arch.released)

* Inputs: files, folders (their images, not recursive) and glob patterns. A file reached under two
  names (a symbolic link beside its target) is upscaled once; outputs are named after the name given.
* Model: the authors' released state dicts, BasicSR checkpoints (params_ema preferred, then
  params) or plain state dicts of this package; variant and scale are read off the weights.
  Loading is torch.load(weights_only=True): checkpoints that could run code are refused, and so are
  weights with NaN or Inf values. Models of RGB images (3 channels in and out) are run.
* Images: 8/16-bit PNG and TIFF (bit depth kept), JPEG, WebP, BMP, PPM/PGM, GIF; EXIF orientation
  applied; grayscale stays grayscale, gray + alpha stays gray + alpha; the alpha channel is upscaled
  on its own (as a grayscale image). The ICC colour profile (and a PNG's gAMA, cHRM, sRGB chunks) is
  kept in PNG, JPEG, WebP and TIFF outputs; a note says when the output format cannot hold it. A
  damaged or truncated file is an error naming it.
* Animations and pages: every frame of an animated GIF, WebP or PNG, every page of a multi-page TIFF
  is upscaled, into the same kind of file whatever --ext says (frame durations and loop count kept);
  --max-pixels counts every frame.
* Outputs: PNG by default, named {name}_x{scale}.png, written atomically, never over an input. An
  output that exists already is kept (the image is skipped and counted) unless --overwrite is given;
  a read-only output is never replaced. 16-bit results are scaled to 8 bits for formats that hold
  only 8. --ext same keeps the input's format (JPEG -> PNG: no second lossy compression).
* Memory: --max-memory bounds the memory a run uses beyond its fixed cost (Python, PyTorch, BasicSR
  and the model: about 1 GB, what a run on a tiny image takes): the file, the decoded image, the
  result, the network's working set (on a GPU: in GPU memory, held to the same figure), the tile
  accumulators and the encoder's buffer. Images that fit run whole (the exact network output);
  larger ones run in the largest tiles that fit, blended with linear ramps over the overlap (no
  visible seams). An image that does not fit even in the smallest tiles is refused before decoding,
  with what it needs; so are images above --max-pixels (output pixels).
* Exit status: 0 all done (outputs that existed are counted as skipped), 1 some images failed (each
  reported by name), 2 unusable arguments/model, 128+N stopped by signal N (130: Ctrl-C, 143: SIGTERM),
  after the summary of what was written; no temporary file is left behind (nor one of a killed run).
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import math
import os
import re
import stat
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from ..console import (EXIT_FAILED, EXIT_OK, EXIT_USAGE, command, interrupt_exit_status, interrupt_name, progress_bar,
                       shown, stop_on_signals)
from ..image_writer import CHOSEN_SUFFIXES
from ..inference import MAX_OVERLAP, MIN_TILE, MemoryNeed, Upscaler, upscale_image
from ..utils.asid_files import TEMP_END, TEMP_SUFFIX, NotARegularFile, check_replaceable, name_max, path_kind
from ..utils.asid_precision import (PRECISION_CHOICES, PRECISIONS, describe_precision, precision_problem,
                                    resolve_precision)
from ..utils.asid_tiling import RAMP_OVERLAP
from .usage import UsageError, command_parser

DEFAULT_MAX_MEMORY_GB = 2.0
GB = 1e9
DEFAULT_MAX_MEGAPIXELS = 400  # output pixels; 1.2 GB as 8-bit RGB
MIN_MAX_MEGAPIXELS = 1e-6  # one pixel
CHECK_PREFIX = '.asid-sr-check.'


# ----------------------------------------------------------------------------------------------
# Inputs and outputs
# ----------------------------------------------------------------------------------------------
def file_id(path: Path) -> Tuple[int, int]:
    """The real file behind ``path`` (symbolic links followed): device and inode."""
    st = os.stat(path)
    return st.st_dev, st.st_ino


def collect_inputs(specs: Sequence[str]) -> Tuple[List[Path], List[str], List[str]]:
    """Expand files, folders and globs into image paths, as named (input order kept); returns
    ``(paths, problems, notes)``. A file reached twice (also under another name, a symbolic link) is
    kept once, under the first name given, with a note."""
    from ..image_reader import IMAGE_SUFFIXES

    def files(candidates: Sequence[Path]) -> List[Path]:
        """The regular files (or links to one) among ``candidates``; each other (a FIFO, a device, a broken
        link, a link loop) is a problem named with its kind."""
        found = []
        for candidate in candidates:
            kind = path_kind(candidate)
            if kind == 'regular file':
                found.append(candidate)
            elif kind != 'folder':
                article = 'an' if kind[0] in 'aeiou' else 'a'  # ('an unreadable path (Permission denied)')
                problems.append(f'{shown(candidate)}: {article} {kind}, not an image file: skipped')
        return found

    paths, problems = [], []
    for spec in specs:
        path = Path(spec)
        kind = path_kind(path)
        if any(ch in spec for ch in '*?[') and kind == 'missing':
            matches = [Path(p) for p in sorted(glob.glob(spec, recursive=True))]
            if not matches:
                problems.append(f'{shown(spec)}: no file matches this pattern')
            paths += files(matches)
        elif kind == 'folder':
            try:
                found = files(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
            except OSError as err:
                problems.append(f'{shown(spec)}: cannot list this folder ({err.strerror or err})')
                continue
            if not found:
                problems.append(f'{shown(spec)}: folder has no images')
            paths += found
        elif kind == 'missing':
            problems.append(f'{shown(spec)}: no such file or folder')
        else:
            paths += files([path])
    unique: Dict[Tuple[int, int], Path] = {}
    notes = []
    for path in paths:
        path = Path(os.path.abspath(path))  # absolute, links kept: the output is named after this name
        try:
            key = file_id(path)
        except OSError as err:
            problems.append(f'{shown(path)}: {err.strerror or err}')
            continue
        first = unique.setdefault(key, path)
        if first != path:
            notes.append(f'{shown(path)} is the same file as {shown(first)}: upscaled once, under the name '
                         f'{shown(first.name)}')
    return list(unique.values()), problems, notes


def check_same_ext(paths: Sequence[Path]) -> None:
    """``--ext same``: every input must have a suffix of a format written here (before any work)."""
    from ..image_writer import WRITE_SUFFIXES

    bad = [p for p in paths if p.suffix.lower() not in WRITE_SUFFIXES]
    choices = ', '.join(s.lstrip('.') for s in CHOSEN_SUFFIXES)
    if bad:
        names = ', '.join(f'{shown(p.name)} ({"no suffix" if not p.suffix else shown(p.suffix)})' for p in bad[:3])
        more = f' and {len(bad) - 3} more' if len(bad) > 3 else ''
        raise UsageError(f'--ext same: no format to keep for {names}{more}: asid-sr writes '
                         f'{", ".join(s.lstrip(".") for s in WRITE_SUFFIXES)}; choose --ext {choices}')


def output_name(given: Path, scale: int, ext: str, image=None) -> Tuple[str, str]:
    """``(file name, note)`` of the output of ``given`` (an :class:`~asid_arch.image_reader.ImageFile` once read):
    ``{name}_x{scale}`` plus the suffix of ``--ext`` (``same``: the input's, JPEG -> PNG). A multi-frame image
    keeps its kind (GIF, WebP, PNG, TIFF), the only formats here that hold frames."""
    from ..image_reader import FRAMES_SUFFIX

    suffix = given.suffix.lower() if ext == 'same' else f'.{ext}'
    if suffix in ('.jpg', '.jpeg') and ext == 'same':
        suffix = '.png'  # no second lossy compression unless asked for with --ext jpg
    note = ''
    if image is not None and image.multi_frame:
        kind = FRAMES_SUFFIX[image.format]
        kind = given.suffix.lower() if kind == '.tif' and given.suffix.lower() == '.tiff' else kind
        if kind != suffix:
            note = f'{image.kind}: every frame upscaled, written as {kind} (--ext {ext} is for single pictures)'
        suffix = kind
    if image is not None and image.extra_pictures:
        note = (f'a JPEG with {image.extra_pictures} more picture(s) (MPO: previews or a second view): '
                'the main picture upscaled, the others not written')
    return f'{given.stem}_x{scale}{suffix}', note


def check_outputs(paths: Sequence[Path], out_dir: Path, scale: int, ext: str, overwrite: bool) -> None:
    """Before any image is read: every output name fits the output folder's file system, and (with
    ``overwrite``) nothing but a regular file stands where an output goes; :class:`UsageError` naming them."""
    limit = name_max(out_dir)
    names = [output_name(path, scale, ext)[0] for path in paths]
    long = [name for name in names if len(os.fsencode(name)) > limit]
    if long:
        raise UsageError(f'the output name {shown(long[0])} ({len(os.fsencode(long[0]))} bytes) is longer than the '
                         f'{limit} bytes a file name may have in {shown(out_dir)}'
                         + (f' (and {len(long) - 1} more)' if len(long) > 1 else '') + '; rename that input')
    blocked = []
    for name in names if overwrite else ():
        try:
            check_replaceable(out_dir / name)
        except NotARegularFile as err:
            blocked.append(str(err))
    if blocked:
        raise UsageError(blocked[0] + (f' (and {len(blocked) - 1} more)' if len(blocked) > 1 else ''))


def check_output_folder(out_dir: Path) -> None:
    """Create ``out_dir`` and make sure a file can be written there, before any image is processed."""
    import tempfile

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=CHECK_PREFIX, suffix=TEMP_SUFFIX):
            pass
    except OSError as err:
        raise UsageError(f'--output {shown(out_dir)}: cannot write there ({err.strerror or err})') from None


def stale_temporary_pattern() -> re.Pattern:
    """Names of the temporaries this command's writes leave when killed: ``.{output}.XXXXXXXX.asid.tmp`` (an
    output is ``{name}_x{scale}.{suffix}``) and the writability check's ``.asid-sr-check.XXXXXXXX.asid.tmp``."""
    from ..image_writer import WRITE_SUFFIXES

    suffixes = '|'.join(re.escape(s) for s in WRITE_SUFFIXES)
    return re.compile(rf'\.(.+_x\d+({suffixes})|{re.escape(CHECK_PREFIX[1:-1])}){TEMP_END}', re.IGNORECASE)


@contextlib.contextmanager
def output_folder_claim(out_dir: Path) -> Iterator[List[str]]:
    """Hold a shared ``flock`` on ``out_dir`` for the run; yields the names of the temporaries of killed runs
    it removed. They are removed only when no other asid-sr run holds the folder (an exclusive lock is
    granted), so a temporary being written by a run in progress is never taken for a stale one."""
    try:
        import fcntl
    except ImportError:  # no flock here: leave temporaries alone rather than risk another run's
        yield []
        return
    try:
        fd = os.open(out_dir, os.O_RDONLY)
    except OSError:  # a folder that can be written but not read: no lock, no clean-up
        yield []
        return
    try:
        removed = []
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # no other asid-sr run holds the folder
            stale = stale_temporary_pattern()
            for name in os.listdir(out_dir):
                if stale.fullmatch(name) and (out_dir / name).is_file():
                    with contextlib.suppress(OSError):
                        (out_dir / name).unlink()
                        removed.append(name)
        except OSError:  # another run is writing here (or no flock on this file system)
            pass
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_SH)
        yield removed
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------------------------
# Device, precision and model checks
# ----------------------------------------------------------------------------------------------
def pick_device(name: str):
    import torch

    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if name == 'cuda' and not torch.cuda.is_available():
        raise UsageError('--device cuda: no CUDA device is available here (use --device cpu or auto)')
    return torch.device(name)


def check_precision(precision: str, device) -> None:
    """``--precision`` on ``device``, by the one precision rule (``utils.asid_precision``; ``auto`` as resolved)."""
    problem = precision_problem(resolve_precision(precision, device), device)
    if problem:
        raise UsageError(f'--precision {problem}; use ' + ' or '.join(
            p for p in PRECISIONS if p != precision and not precision_problem(p, device)))


def check_channels(config, model: Path) -> None:
    """asid-sr feeds RGB images: a model of other channel counts is refused before any image is read."""
    if (config.num_in_ch, config.num_out_ch) != (3, 3):
        raise UsageError(f'{shown(model)}: the network takes {config.num_in_ch}-channel images and gives '
                         f'{config.num_out_ch}-channel ones; asid-sr runs RGB models (3 channels in and out)')


class OutputExists(Exception):
    """The output of an image exists and --overwrite is off: the image is skipped (and counted)."""


def existing_output(target: Path, inputs: set, overwrite: bool) -> Optional[int]:
    """None if ``target`` does not exist, else its permission bits (to keep them when it is replaced).
    Raises ValueError when it may not be replaced: an input (also through a link), a read-only file,
    a folder; :class:`OutputExists` when it exists and ``overwrite`` is off."""
    if not os.path.lexists(target):
        return None
    try:
        st = os.stat(target)
    except OSError:  # a dangling symbolic link, a link loop
        st = None
    if st is not None and (st.st_dev, st.st_ino) in inputs:
        raise ValueError(f'output {shown(target)} would overwrite an input image; choose another --output')
    if not overwrite:
        raise OutputExists(target)
    try:
        check_replaceable(target)  # only a regular file is ever replaced (not a FIFO, a device, a folder, a link)
    except NotARegularFile as err:
        raise ValueError(str(err)) from None
    if not st.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) or not os.access(target, os.W_OK):
        raise ValueError(f'output {shown(target)} is read-only: not replaced (make it writable to replace it)')
    return stat.S_IMODE(st.st_mode)


@dataclass
class Tally:
    """What a run did, for its summary line."""
    done: int = 0
    skipped: int = 0
    failed: int = 0

    def summary(self, out_dir: Path, seconds: float) -> str:
        skipped = (f', {self.skipped} skipped (their outputs exist; --overwrite replaces them)'
                   if self.skipped else '')
        return (f'{self.done} images written to {shown(out_dir)}{skipped}, {self.failed} failed, '
                f'{seconds:.1f} s')


@dataclass
class Batch:
    """What every image of a run shares: where outputs go, the settings, the inputs' real files (for the
    "never over an input" check) and the outputs planned so far (for the duplicate check)."""
    out_dir: Path
    upscaler: Upscaler
    args: argparse.Namespace
    inputs: set
    planned: Dict[str, Path]


def process(path: Path, batch: Batch) -> List[str]:
    """Read, super-resolve and write one image; returns the notes to print (after it is written). Raises
    :class:`OutputExists` (skipped), :class:`~asid_arch.image_reader.ImageError`, :class:`MemoryNeed` and other
    errors naming what went wrong (a failed image)."""
    from ..image_reader import ImageError, open_image
    from ..image_writer import write_image

    args, upscaler, s = batch.args, batch.upscaler, batch.upscaler.scale
    if os.path.getsize(path) > upscaler.max_memory:
        raise ImageError(f'the file alone ({os.path.getsize(path) / 1e9:.2f} GB) is larger than --max-memory '
                         f'{args.max_memory:g} GB')
    image = open_image(path)
    name, note = output_name(path, s, args.ext, image)
    target = batch.out_dir / name
    if len(os.fsencode(name)) > name_max(batch.out_dir):
        raise ValueError(f'the output name {shown(name)} is longer than a file name may be in {shown(batch.out_dir)}')
    if name in batch.planned:
        raise ValueError(f'output {shown(name)} already comes from {shown(batch.planned[name])}')
    batch.planned[name] = path
    existing_output(target, batch.inputs, args.overwrite)
    image.check_size(args.max_pixels * 1e6, s, ' (--max-pixels counts every frame; raise it if the memory is there)')
    pillow = image.multi_frame or image.format == 'GIF' or name.lower().endswith('.gif') or any(
        f.color_channels == 1 and f.alpha for f in image.frames)
    plan = upscaler.plan(image.frames, len(image.data), pillow)
    if plan.need > upscaler.max_memory:
        how = ('even in the smallest tiles' if args.tile is None else
               f'with --tile {args.tile}' + (' (whole image)' if args.tile == 0 else ''))
        raise MemoryNeed(f'needs about {plan.need / GB:.2f} GB {how} ({plan.describe()}), above '
                         f'--max-memory {args.max_memory:g} GB')
    results = upscale_image(image, upscaler, plan)
    mode = existing_output(target, batch.inputs, args.overwrite)  # (one that appeared meanwhile is kept too)
    notes = [note, write_image(target, results, image.color, image.loop, image.default_image)]
    if mode is not None:
        os.chmod(target, mode)
    return [f'{shown(name)}: {note}' for note in notes if note]


def run_batch(paths: Sequence[Path], out_dir: Path, upscaler: Upscaler, args, tally: Tally) -> None:
    """Every image of ``paths`` into ``out_dir``; counts in ``tally``, one line per failure or note."""
    from tqdm import tqdm

    inputs = set()
    for p in paths:
        with contextlib.suppress(OSError):  # gone meanwhile: its own failure comes below
            inputs.add(file_id(p))
    batch = Batch(out_dir, upscaler, args, inputs, {})

    def say(text: str) -> None:
        tqdm.write(f'asid-sr: {text}', file=sys.stderr)

    for path in progress_bar(paths, desc='asid-sr', unit='img'):
        try:
            for line in process(path, batch):
                say(line)
            tally.done += 1
        except OutputExists:
            tally.skipped += 1
        except MemoryError:
            tally.failed += 1
            say(f'failed: {shown(path)}: out of memory (lower --max-memory or --tile)')
        except RuntimeError as err:
            tally.failed += 1
            gpu = type(err).__name__ == 'OutOfMemoryError'  # torch.cuda.OutOfMemoryError
            say(f'failed: {shown(path)}: ' + ('out of GPU memory (lower --max-memory or --tile)' if gpu else
                                              shown(str(err))))
        except Exception as err:  # one bad image must not stop the others
            tally.failed += 1
            say(f'failed: {shown(path)}: {shown(str(err))}')


# ----------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------
def parse_tile(value: str) -> Optional[int]:
    if value == 'auto':
        return None
    try:
        tile = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'auto' or a whole number of pixels, not {value!r}") from None
    if tile != 0 and tile < MIN_TILE:
        raise argparse.ArgumentTypeError(f'0 (whole image) or at least {MIN_TILE} px, not {tile}')
    return tile


def parse_overlap(value: str) -> int:
    try:
        overlap = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f'a whole number of pixels, not {value!r}') from None
    if not 0 <= overlap <= MAX_OVERLAP:
        raise argparse.ArgumentTypeError(f'from 0 to {MAX_OVERLAP} LR pixels, not {overlap}')
    return overlap


def positive_number(minimum: float, what: str) -> Callable[[str], float]:
    """An argparse type: a finite number of at least ``minimum`` (above 0)."""
    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f'a number, not {value!r}') from None
        if not math.isfinite(number) or number < minimum or number <= 0:
            raise argparse.ArgumentTypeError(f'a finite number {what}, not {value}')
        return number
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser('asid-sr', __doc__, epilog=True)
    parser.add_argument('inputs', nargs='+', help='image files, folders or glob patterns')
    parser.add_argument('-o', '--output', type=Path, required=True, help='output folder (created if needed)')
    parser.add_argument('-m', '--model', type=Path, required=True,
                        help='checkpoint (.pth) of ASID or ASID-D8, or the name of released weights (asid_x2, asid_x3, '
                        'asid_x4, asid_d8_x2, asid_d8_x3, asid_d8_x4: downloaded once into a cache)')
    parser.add_argument('--tile', type=parse_tile, default=None, metavar='auto|0|N',
                        help='auto (default): whole image if it fits --max-memory, else the largest tiles that do; '
                        f'0: always whole; N: LR tiles of N px (>= {MIN_TILE})')
    parser.add_argument('--tile-overlap', type=parse_overlap, default=RAMP_OVERLAP, metavar='PX',
                        help=f'LR overlap of neighbouring tiles, blended (default {RAMP_OVERLAP}, at most '
                        f'{MAX_OVERLAP}, below --tile)')
    parser.add_argument('--max-memory', type=positive_number(0, 'of GB above 0'), default=DEFAULT_MAX_MEMORY_GB,
                        metavar='GB', help='memory the run may use beyond its fixed cost (Python, PyTorch and the '
                        'model, about 1 GB): the file, decoded image, result, network working set, tile accumulators '
                        'and encoder buffer of one image; tiles are chosen to fit it, an image that cannot fit is '
                        f'refused with what it needs (default {DEFAULT_MAX_MEMORY_GB})')
    parser.add_argument('--max-pixels', type=positive_number(MIN_MAX_MEGAPIXELS, 'of megapixels, at least '
                                                             f'{MIN_MAX_MEGAPIXELS:f} (one pixel)'),
                        default=DEFAULT_MAX_MEGAPIXELS, metavar='MEGAPIXELS',
                        help='refuse images whose output (every frame counted) exceeds this '
                        f'(default {DEFAULT_MAX_MEGAPIXELS})')
    parser.add_argument('--device', choices=['auto', 'cpu', 'cuda'], default='auto')
    parser.add_argument('--precision', choices=list(PRECISION_CHOICES), default='auto',
                        help='auto (default): bf16 for 8-bit images on CPUs with native bf16 (AVX512-BF16, AMX, Arm '
                        'BF16), fp32 elsewhere; fp32; bf16 (emulated and slow on other CPUs); fp16 on CUDA')
    parser.add_argument('--ext', choices=['same', *(s.lstrip('.') for s in CHOSEN_SUFFIXES)], default='png',
                        help='output format (default png; "same" keeps the input format, JPEG -> PNG); '
                        'animations and multi-page TIFFs keep their kind')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace outputs that exist already (default: keep them and skip those images); '
                        'read-only files are never replaced')
    add_channel_attention_argument(parser)
    return parser


def add_channel_attention_argument(parser: argparse.ArgumentParser) -> None:
    """``--channel-attention auto|temperature|sdpa`` (asid-sr, asid-export)."""
    parser.add_argument('--channel-attention', choices=['auto', 'temperature', 'sdpa'], default='auto',
                        help="the model's channel attention: 'temperature' (the paper's), 'sdpa' (neosr's default "
                             "flash_attn=True) or 'auto' (read off the weights: neosr's defaults are recognised by "
                             "their missing position-bias tables and temperatures of exactly 1.0)")


@command('asid-sr')
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from ..cpu_settings import tune_cpu

    tune_cpu(keep_freed=False)  # --max-memory is a bound: freed memory goes back to the system
    tally = Tally()
    start = time.time()
    out_dir = Path(os.path.abspath(args.output))
    with stop_on_signals():
        try:
            return run(args, out_dir, tally, start)
        except KeyboardInterrupt as err:
            print(f'asid-sr: stopped by {interrupt_name(err)}: {tally.summary(out_dir, time.time() - start)}',
                  file=sys.stderr)
            return interrupt_exit_status(err)


def run(args, out_dir: Path, tally: Tally, start: float) -> int:
    """The command after its arguments are parsed (``main`` turns Ctrl-C and SIGTERM into the summary)."""
    from ..from_weights import network_from_file
    from ..released import resolve_model
    from ..utils.asid_errors import PretrainedWeightsError

    try:
        if args.tile and args.tile_overlap >= args.tile:
            raise UsageError(f'--tile-overlap {args.tile_overlap} must be smaller than --tile {args.tile}')
        paths, problems, notes = collect_inputs(args.inputs)
        if args.ext == 'same':
            check_same_ext(paths)
        device = pick_device(args.device)
        check_precision(args.precision, device)
        args.model = resolve_model(args.model)  # a released name (asid_x4, ...): downloaded once, checked
        net, config = network_from_file(args.model, args.channel_attention)
        check_channels(config, args.model)
        check_output_folder(out_dir)
        check_outputs(paths, out_dir, config.upscale, args.ext, args.overwrite)
    except (UsageError, PretrainedWeightsError) as err:
        print(f'asid-sr: error: {shown(str(err))}', file=sys.stderr)
        return EXIT_USAGE
    for line in problems + notes:
        print(f'asid-sr: {line}', file=sys.stderr)
    tally.failed += len(problems)
    upscaler = Upscaler(net, config.upscale, device, args.precision, args.tile, args.tile_overlap,
                        args.max_memory * GB, str(args.model))
    print(f'asid-sr: {config.variant} x{config.upscale} from {shown(args.model)} on {device.type} '
          f'({describe_precision(args.precision, device)}), '
          f'{len(paths)} images', file=sys.stderr)
    if config.note:
        print(f'asid-sr: note: {shown(args.model)}: {config.note}', file=sys.stderr)
    with output_folder_claim(out_dir) as removed:
        if removed:
            print(f'asid-sr: removed {len(removed)} temporary file(s) left in {shown(out_dir)} by a stopped run',
                  file=sys.stderr)
        run_batch(paths, out_dir, upscaler, args, tally)
    print(f'asid-sr: {tally.summary(out_dir, time.time() - start)}', file=sys.stderr)
    return EXIT_FAILED if tally.failed else EXIT_OK


if __name__ == '__main__':
    sys.exit(main())
