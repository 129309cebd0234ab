"""``asid-sr``: super-resolve your own images with a trained ASID checkpoint.

    asid-sr photo.jpg shots/ 'scans/*.png' -o upscaled/ --model ASID_x4.pth

* Inputs: files, folders (their images, not recursive) and glob patterns.
* Model: the authors' released state dicts, BasicSR checkpoints (``params_ema`` preferred, then
  ``params``) or plain state dicts of this package; variant and scale are read off the weights.
  Loading is ``torch.load(weights_only=True)``: checkpoints that could run code are refused.
* Images: 8/16-bit PNG (bit depth kept), JPEG, WebP, BMP, TIFF; grayscale stays grayscale; the
  alpha channel of RGBA images is upscaled separately (as a grayscale image) and kept.
  Outputs are PNG by default, named ``{stem}_x{scale}.png``, written atomically, never over an input.
* Tiled inference keeps memory bounded for any image size; ``--tile 0`` runs whole images.
* Exit status: 0 all done, 1 some images failed (each reported by name), 2 unusable arguments/model.
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from tqdm import tqdm

from .checkpoint import CheckpointError, load_network
from .fileio import imwrite_atomic
from .tiling import tile_forward

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.webp', '.bmp', '.tif', '.tiff', '.ppm', '.pgm')
DEFAULT_TILE, DEFAULT_OVERLAP = 256, 16  # 4K output (x4 from 960x540) stays far below 2 GB on CPU
PRECISIONS = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}


class UsageError(Exception):
    """Bad arguments: reported as one line, exit status 2."""


@dataclass
class Image:
    """An image as the network sees it: RGB float32 in [0, 1] plus what is needed to write it back."""
    rgb: np.ndarray  # (H, W, 3) float32
    alpha: Optional[np.ndarray]  # (H, W) float32 or None
    gray: bool
    max_value: float  # 255 or 65535


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


def read_image(path: Path) -> Image:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise ValueError('not a readable image (corrupt, empty or unsupported format)')
    if img.dtype == np.uint8:
        max_value = 255.0
    elif img.dtype == np.uint16:
        max_value = 65535.0
    else:
        raise ValueError(f'unsupported pixel type {img.dtype} (8-bit and 16-bit images are supported)')
    img = img.astype(np.float32) / max_value
    alpha = None
    if img.ndim == 2 or img.shape[2] == 1:
        gray = img.reshape(img.shape[0], img.shape[1])
        return Image(np.repeat(gray[:, :, None], 3, axis=2), None, True, max_value)
    if img.shape[2] == 4:
        alpha = img[:, :, 3]
    return Image(np.ascontiguousarray(img[:, :, 2::-1]), alpha, False, max_value)  # BGR(A) -> RGB


def to_pixels(img: np.ndarray, max_value: float) -> np.ndarray:
    dtype = np.uint16 if max_value > 255 else np.uint8
    return np.clip(np.round(img * max_value), 0, max_value).astype(dtype)


class Upscaler:
    """Runs the network on RGB float images with the chosen device, precision and tiling."""

    def __init__(self, net: torch.nn.Module, scale: int, device: torch.device, precision: str, tile: int,
                 overlap: int) -> None:
        self.net = net.to(device).eval()
        self.scale, self.device, self.tile, self.overlap = scale, device, tile, overlap
        self.dtype = PRECISIONS[precision]

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(rgb.transpose(2, 0, 1).copy())[None].to(self.device)
        autocast = (torch.autocast(self.device.type, dtype=self.dtype)
                    if self.dtype != torch.float32 else contextlib.nullcontext())
        with torch.inference_mode(), autocast:
            if self.tile > 0:
                y = tile_forward(self.net, x, self.scale, self.tile, self.overlap)
            else:
                y = self.net(x)
            return y[0].float().clamp_(0, 1).cpu().numpy().transpose(1, 2, 0)

    def image(self, img: Image) -> np.ndarray:
        """Super-resolved pixels in the input's layout: gray (H, W), BGR or BGRA, same bit depth."""
        sr = self(img.rgb)
        if img.gray:
            return to_pixels(sr.mean(axis=2), img.max_value)
        out = sr[:, :, ::-1]
        if img.alpha is not None:
            alpha = self(np.repeat(img.alpha[:, :, None], 3, axis=2)).mean(axis=2)
            out = np.concatenate([out, alpha[:, :, None]], axis=2)
        return to_pixels(np.ascontiguousarray(out), img.max_value)


def pick_device(name: str) -> torch.device:
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if name == 'cuda' and not torch.cuda.is_available():
        raise UsageError('--device cuda: no CUDA device is available here (use --device cpu or auto)')
    return torch.device(name)


def check_precision(precision: str, device: torch.device) -> None:
    if precision == 'fp16' and device.type != 'cuda':
        raise UsageError('--precision fp16 needs a CUDA device; on the CPU use fp32 or bf16')
    if precision == 'bf16' and device.type == 'cuda' and not torch.cuda.is_bf16_supported():
        raise UsageError('--precision bf16: this GPU does not support bfloat16; use fp16 or fp32')


def output_path(path: Path, out_dir: Path, scale: int, ext: str) -> Path:
    suffix = path.suffix.lower() if ext == 'same' else f'.{ext}'
    if suffix in ('.jpg', '.jpeg') and ext == 'same':
        suffix = '.png'  # no second lossy compression unless asked for with --ext jpg
    return out_dir / f'{path.stem}_x{scale}{suffix}'


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='asid-sr', description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('inputs', nargs='+', help='image files, folders or glob patterns')
    parser.add_argument('-o', '--output', type=Path, required=True, help='output folder (created if needed)')
    parser.add_argument('-m', '--model', type=Path, required=True, help='checkpoint (.pth) of ASID or ASID-D8')
    parser.add_argument('--tile', type=int, default=DEFAULT_TILE, help=f'LR tile size, 0 = whole image '
                        f'(default {DEFAULT_TILE})')
    parser.add_argument('--tile-overlap', type=int, default=DEFAULT_OVERLAP,
                        help=f'overlap of LR tiles (default {DEFAULT_OVERLAP})')
    parser.add_argument('--device', choices=['auto', 'cpu', 'cuda'], default='auto')
    parser.add_argument('--precision', choices=list(PRECISIONS), default='fp32',
                        help='fp32 (default); bf16 on CPUs and recent GPUs; fp16 on CUDA')
    parser.add_argument('--ext', choices=['png', 'same', 'jpg', 'webp', 'tif'], default='png',
                        help='output format (default png; "same" keeps the input format, JPEG -> PNG)')
    args = parser.parse_args(argv)

    try:
        if args.tile < 0 or args.tile_overlap < 0:
            raise UsageError('--tile and --tile-overlap must be >= 0')
        device = pick_device(args.device)
        check_precision(args.precision, device)
        net, config = load_network(args.model)
    except (UsageError, CheckpointError) as err:
        print(f'asid-sr: error: {err}', file=sys.stderr)
        return 2
    paths, problems = collect_inputs(args.inputs)
    for problem in problems:
        print(f'asid-sr: {problem}', file=sys.stderr)
    upscaler = Upscaler(net, config.upscale, device, args.precision, args.tile, args.tile_overlap)
    out_dir = args.output.resolve()
    inputs = set(paths)
    planned = {}
    failures = len(problems)
    done = 0
    start = time.time()
    print(f'asid-sr: {config.variant} x{config.upscale} on {device.type} ({args.precision}), {len(paths)} images',
          file=sys.stderr)
    for path in tqdm(paths, desc='asid-sr', unit='img', file=sys.stderr):
        target = output_path(path, out_dir, config.upscale, args.ext)
        try:
            if target in inputs:
                raise ValueError(f'output {target} would overwrite an input image; choose another --output')
            if target in planned:
                raise ValueError(f'output {target.name} already comes from {planned[target]}')
            planned[target] = path
            pixels = upscaler.image(read_image(path))
            imwrite_atomic(target, pixels)
            done += 1
        except Exception as err:  # one bad image must not stop the others
            failures += 1
            tqdm.write(f'asid-sr: failed: {path}: {err}', file=sys.stderr)
    seconds = time.time() - start
    print(f'asid-sr: {done} images written to {out_dir}, {failures} failed, {seconds:.1f} s', file=sys.stderr)
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
