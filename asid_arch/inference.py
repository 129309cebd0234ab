"""``asid-sr``: super-resolve your own images with a trained ASID checkpoint.

    asid-sr photo.jpg shots/ 'scans/*.png' -o upscaled/ --model ASID_x4.pth

* Inputs: files, folders (their images, not recursive) and glob patterns.
* Model: the authors' released state dicts, BasicSR checkpoints (params_ema preferred, then
  params) or plain state dicts of this package; variant and scale are read off the weights.
  Loading is torch.load(weights_only=True): checkpoints that could run code are refused, and so are
  weights with NaN or Inf values.
* Images: 8/16-bit PNG and TIFF (bit depth kept), JPEG, WebP, BMP; EXIF orientation applied;
  grayscale stays grayscale, gray + alpha stays gray + alpha; the alpha channel is upscaled on its
  own (as a grayscale image). A damaged or truncated file is an error naming it. Outputs are PNG by
  default, named {stem}_x{scale}.png, written atomically, never over an input; 16-bit results are
  scaled to 8 bits for formats that hold only 8.
* Memory: images whose working set fits --max-memory run whole (the exact network output); larger
  ones run in tiles blended with linear ramps over the overlap (no visible seams), the result kept
  in its final pixel type. Images above --max-pixels (output pixels) are refused before decoding.
* Exit status: 0 all done, 1 some images failed (each reported by name), 2 unusable arguments/model.
"""
from __future__ import annotations

import argparse
import glob
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.webp', '.bmp', '.tif', '.tiff', '.ppm', '.pgm')
PRECISIONS = ('fp32', 'bf16', 'fp16')
DEFAULT_TILE = 256  # LR tile side when an image does not fit the memory budget
DEFAULT_OVERLAP = 32  # LR overlap of neighbouring tiles, blended with linear ramps
MIN_TILE = 32
DEFAULT_MAX_MEMORY_GB = 2.0  # working-set budget for running an image whole
# Measured working set of ASID inference per LR pixel (float32, CPU; x2 with 3 IDBs is the largest
# of the released configurations per LR pixel: 640x360 -> 1.85 GB): used to decide whole vs tiles.
WORKING_BYTES_PER_LR_PIXEL = 8_000
DEFAULT_MAX_MEGAPIXELS = 400  # output pixels; 1.2 GB as 8-bit RGB
PROGRESS_MIN_TILES = 16  # a tile progress bar for images of at least this many tiles


class UsageError(Exception):
    """Bad arguments: reported as one line, exit status 2."""


def collect_inputs(specs: Sequence[str]) -> Tuple[List[Path], List[str]]:
    """Expand files, folders and globs into image paths (input order kept, duplicates dropped)."""
    paths, problems = [], []
    for spec in specs:
        path = Path(spec)
        if any(ch in spec for ch in '*?['):
            matches = [Path(p) for p in sorted(glob.glob(spec, recursive=True)) if Path(p).is_file()]
            if not matches:
                problems.append(f'{spec}: no file matches this pattern')
            paths += matches
        elif path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                problems.append(f'{spec}: folder has no images')
            paths += found
        elif path.is_file():
            paths.append(path)
        else:
            problems.append(f'{spec}: no such file or folder')
    unique = list(dict.fromkeys(p.resolve() for p in paths))
    return unique, problems


def blend_ramp(length: int, before: int, after: int):
    """1-D weights of a tile of ``length`` output px: a linear ramp up over the ``before`` px it shares with
    the previous tile, down over the ``after`` px it shares with the next one, 1 elsewhere (never 0)."""
    w = np.ones(length, np.float32)
    if before > 0:
        w[:before] = (np.arange(before, dtype=np.float32) + 0.5) / before
    if after > 0:
        w[length - after:] = np.minimum(w[length - after:], (np.arange(after, 0, -1, dtype=np.float32) - 0.5) / after)
    return w


class Upscaler:
    """Runs the network on integer images, whole or in blended tiles, into arrays of the final pixel type."""

    def __init__(self, net, scale: int, device, precision: str, tile: Optional[int], overlap: int,
                 max_memory_bytes: float, source: str) -> None:
        import torch

        self.torch = torch
        self.net = net.to(device).eval()
        self.scale, self.device, self.overlap, self.source = scale, device, overlap, source
        self.tile = tile  # None: automatic (whole if it fits the memory budget), 0: whole, >0: that tile
        self.max_memory = max_memory_bytes
        self.dtype = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}[precision]

    def tile_size(self, h: int, w: int) -> int:
        """0 (whole image) or the LR tile side for an ``h`` x ``w`` input."""
        if self.tile is not None:
            return 0 if self.tile == 0 or self.tile >= max(h, w) else self.tile
        if h * w * WORKING_BYTES_PER_LR_PIXEL <= self.max_memory:
            return 0
        side = int((self.max_memory / WORKING_BYTES_PER_LR_PIXEL)**0.5)
        return max(MIN_TILE, min(DEFAULT_TILE, side))

    def _run(self, lr: np.ndarray, max_value: int):
        """Network output (h*s, w*s, 3) float32 numpy in [0, 1] for an integer (h, w, 3) RGB tile."""
        torch = self.torch
        x = torch.from_numpy(np.ascontiguousarray(lr.transpose(2, 0, 1))).to(self.device, torch.float32)
        x = x.div_(max_value)[None]
        autocast = torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32)
        with torch.inference_mode(), autocast:
            y = self.net(x)[0].float()
            if not torch.isfinite(y).all():
                raise ValueError(f'the network produced NaN or Inf values with the weights of {self.source}: '
                                 'the checkpoint is unusable')
            return y.clamp_(0, 1).permute(1, 2, 0).cpu().numpy()

    def upscale(self, src: np.ndarray, dest: np.ndarray, reverse_channels: bool) -> None:
        """Super-resolve ``src`` ((H, W, 3) RGB or (H, W) gray, integer) into ``dest`` ((H*s, W*s, 3) or
        (H*s, W*s), integer, written in place). ``reverse_channels`` writes RGB results as BGR."""
        s = self.scale
        h, w = src.shape[:2]
        max_in, max_out = np.iinfo(src.dtype).max, np.iinfo(dest.dtype).max
        gray = src.ndim == 2
        rgb = (lambda a: np.repeat(a[:, :, None], 3, axis=2)) if gray else (lambda a: a)

        def store(rows: slice, values: np.ndarray) -> None:
            values = values.mean(axis=2) if dest.ndim == 2 else values[:, :, ::-1] if reverse_channels else values
            dest[rows] = np.clip(np.rint(values * max_out), 0, max_out).astype(dest.dtype)

        t = self.tile_size(h, w)
        if t == 0:
            store(slice(0, h * s), self._run(rgb(src), max_in))
            return
        from tqdm import tqdm

        from .tiling import tile_origins  # the reference protocol's origins (the kit file needs torch)

        th, tw = min(t, h), min(t, w)  # a tile is never larger than the image (a wide strip, say)
        ys, xs = tile_origins(h, th, self.overlap), tile_origins(w, tw, self.overlap)

        bar = tqdm(total=len(ys) * len(xs), desc='tiles', unit='tile', leave=False, file=sys.stderr,
                   disable=len(ys) * len(xs) < PROGRESS_MIN_TILES)
        # a float accumulator for the output rows of one tile row only; finished rows go to ``dest``
        acc = np.zeros((th * s, w * s, 3), np.float32)
        wsum = np.zeros((th * s, w * s), np.float32)
        acc_top = 0  # output row held in acc[0]
        for i, y in enumerate(ys):
            done = y * s - acc_top  # rows above this tile row are final
            if done > 0:
                store(slice(acc_top, acc_top + done), acc[:done] / wsum[:done, :, None])
                acc[:-done], wsum[:-done] = acc[done:], wsum[done:]  # shift up in place (numpy handles overlap)
                acc[-done:], wsum[-done:] = 0, 0
                acc_top += done
            above = (ys[i - 1] + th - y) * s if i else 0
            below = (y + th - ys[i + 1]) * s if i + 1 < len(ys) else 0
            wy = blend_ramp(th * s, above, below)
            for j, x in enumerate(xs):
                left = (xs[j - 1] + tw - x) * s if j else 0
                right = (x + tw - xs[j + 1]) * s if j + 1 < len(xs) else 0
                weight = wy[:, None] * blend_ramp(tw * s, left, right)[None, :]
                out = self._run(rgb(src[y:y + th, x:x + tw]), max_in)
                cols = slice(x * s, (x + tw) * s)
                acc[:, cols] += out * weight[:, :, None]
                wsum[:, cols] += weight
                bar.update()
        store(slice(acc_top, h * s), acc[:h * s - acc_top] / wsum[:h * s - acc_top, :, None])
        bar.close()


def pick_device(name: str):
    import torch

    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if name == 'cuda' and not torch.cuda.is_available():
        raise UsageError('--device cuda: no CUDA device is available here (use --device cpu or auto)')
    return torch.device(name)


def check_precision(precision: str, device) -> None:
    import torch

    if precision == 'fp16' and device.type != 'cuda':
        raise UsageError('--precision fp16 needs a CUDA device; on the CPU use fp32 or bf16')
    if precision == 'bf16' and device.type == 'cuda' and not torch.cuda.is_bf16_supported():
        raise UsageError('--precision bf16: this GPU does not support bfloat16; use fp16 or fp32')


def output_path(path: Path, out_dir: Path, scale: int, ext: str) -> Path:
    suffix = path.suffix.lower() if ext == 'same' else f'.{ext}'
    if suffix in ('.jpg', '.jpeg') and ext == 'same':
        suffix = '.png'  # no second lossy compression unless asked for with --ext jpg
    return out_dir / f'{path.stem}_x{scale}{suffix}'


def check_output_folder(out_dir: Path) -> None:
    """Create ``out_dir`` and make sure a file can be written there, before any image is processed."""
    import tempfile

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix='.asid-sr-check.', suffix='.tmp'):
            pass
    except OSError as err:
        raise UsageError(f'--output {out_dir}: cannot write there ({err.strerror or err})') from None


def process(path: Path, target: Path, upscaler: Upscaler, max_pixels: float) -> str:
    """Read, super-resolve and write one image; returns a conversion note ('' if none)."""
    from .images import read_picture, write_picture

    s = upscaler.scale
    pic = read_picture(path, max_pixels=int(max_pixels), scale=s,
                       limit_hint=' (raise it with --max-pixels if the memory is there)')
    h, w = pic.size
    color = np.empty((h * s, w * s) + (() if pic.gray else (3, )), pic.color.dtype)
    upscaler.upscale(pic.color if pic.gray else pic.color[:, :, ::-1], color, reverse_channels=True)
    alpha = None
    if pic.alpha is not None:
        alpha = np.empty((h * s, w * s), pic.alpha.dtype)
        upscaler.upscale(pic.alpha, alpha, reverse_channels=False)
    return write_picture(target, color, alpha)


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='asid-sr', description=__doc__.split('\n\n')[0].replace('``', "'"),
                                     epilog='\n\n'.join(__doc__.split('\n\n')[2:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('inputs', nargs='+', help='image files, folders or glob patterns')
    parser.add_argument('-o', '--output', type=Path, required=True, help='output folder (created if needed)')
    parser.add_argument('-m', '--model', type=Path, required=True, help='checkpoint (.pth) of ASID or ASID-D8')
    parser.add_argument('--tile', type=parse_tile, default=None, metavar='auto|0|N',
                        help='auto (default): whole image if it fits --max-memory, else tiles; 0: always whole; '
                        f'N: LR tiles of N px (>= {MIN_TILE})')
    parser.add_argument('--tile-overlap', type=int, default=DEFAULT_OVERLAP,
                        help=f'LR overlap of neighbouring tiles, blended (default {DEFAULT_OVERLAP})')
    parser.add_argument('--max-memory', type=float, default=DEFAULT_MAX_MEMORY_GB, metavar='GB',
                        help=f'working-set budget that decides whole image vs tiles (default {DEFAULT_MAX_MEMORY_GB})')
    parser.add_argument('--max-pixels', type=float, default=DEFAULT_MAX_MEGAPIXELS, metavar='MEGAPIXELS',
                        help=f'refuse images whose output exceeds this (default {DEFAULT_MAX_MEGAPIXELS})')
    parser.add_argument('--device', choices=['auto', 'cpu', 'cuda'], default='auto')
    parser.add_argument('--precision', choices=list(PRECISIONS), default='fp32',
                        help='fp32 (default); bf16 on CPUs and recent GPUs; fp16 on CUDA')
    parser.add_argument('--ext', choices=['png', 'same', 'jpg', 'webp', 'tif'], default='png',
                        help='output format (default png; "same" keeps the input format, JPEG -> PNG)')
    add_channel_attention_argument(parser)
    return parser


def add_channel_attention_argument(parser: argparse.ArgumentParser) -> None:
    """``--channel-attention auto|temperature|sdpa`` (asid-sr, asid-export)."""
    parser.add_argument('--channel-attention', choices=['auto', 'temperature', 'sdpa'], default='auto',
                        help="the model's channel attention: 'temperature' (the paper's), 'sdpa' (neosr's default "
                             "flash_attn=True) or 'auto' (read off the weights: neosr's defaults are recognised by "
                             "their missing position-bias tables and temperatures of exactly 1.0)")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from tqdm import tqdm

    from .checkpoint import CheckpointError, load_network

    out_dir = args.output.resolve()
    try:
        if args.tile_overlap < 0:
            raise UsageError('--tile-overlap must be >= 0')
        if args.tile and args.tile_overlap >= args.tile:
            raise UsageError(f'--tile-overlap {args.tile_overlap} must be smaller than --tile {args.tile}')
        if args.max_memory <= 0 or args.max_pixels <= 0:
            raise UsageError('--max-memory and --max-pixels must be positive')
        device = pick_device(args.device)
        check_precision(args.precision, device)
        net, config = load_network(args.model, args.channel_attention)
        check_output_folder(out_dir)
    except (UsageError, CheckpointError) as err:
        print(f'asid-sr: error: {err}', file=sys.stderr)
        return 2
    paths, problems = collect_inputs(args.inputs)
    for problem in problems:
        print(f'asid-sr: {problem}', file=sys.stderr)
    upscaler = Upscaler(net, config.upscale, device, args.precision, args.tile, args.tile_overlap,
                        args.max_memory * 1e9, str(args.model))
    inputs = set(paths)
    planned = {}
    failures = len(problems)
    done = 0
    start = time.time()
    print(f'asid-sr: {config.variant} x{config.upscale} from {args.model} on {device.type} ({args.precision}), '
          f'{len(paths)} images', file=sys.stderr)
    if config.note:
        print(f'asid-sr: note: {args.model}: {config.note}', file=sys.stderr)
    for path in tqdm(paths, desc='asid-sr', unit='img', file=sys.stderr):
        target = output_path(path, out_dir, config.upscale, args.ext)
        try:
            if target in inputs:
                raise ValueError(f'output {target} would overwrite an input image; choose another --output')
            if target in planned:
                raise ValueError(f'output {target.name} already comes from {planned[target]}')
            planned[target] = path
            note = process(path, target, upscaler, args.max_pixels * 1e6)
            if note:
                tqdm.write(f'asid-sr: {target.name}: {note}', file=sys.stderr)
            done += 1
        except MemoryError:
            failures += 1
            tqdm.write(f'asid-sr: failed: {path}: out of memory (lower --max-memory or --tile)', file=sys.stderr)
        except Exception as err:  # one bad image must not stop the others
            failures += 1
            tqdm.write(f'asid-sr: failed: {path}: {err}', file=sys.stderr)
    seconds = time.time() - start
    print(f'asid-sr: {done} images written to {out_dir}, {failures} failed, {seconds:.1f} s', file=sys.stderr)
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
