"""``asid-bench seams``: tiled against whole-image inference of a checkpoint on one photo.

Two tilings, each at the one tiler's defaults unless told otherwise: averaged tiles (the reference
evaluation protocol) and the blended tiles of ``asid-sr``. Figures: the largest jump between
neighbouring column/row means of the difference to the whole image, the largest pixel difference
(grey levels), and the time.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from ..console import EXIT_OK, EXIT_USAGE, shown

COFFEE_CROP = (slice(8, 392), slice(44, 556))  # a 512x384 crop of scikit-image's coffee (not a training image)
MAX_PIXELS = 1_000_000  # of --image: its whole-image pass takes about 4.5 GB at x2 (inference.network_bytes)
RESULT_COPIES = 4  # float64 copies of the result: whole, averaged, blended, their difference


class SeamsError(ValueError):
    """A user-given file the command cannot use, with a one-line reason."""


def _timed(fn: Callable[[], object]) -> Tuple[object, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def read_photo(image: Optional[Path], upscaler=None):
    """The photo as RGB uint8: the coffee crop by default, else the user's file, refused from its header above
    :data:`MAX_PIXELS` (with the memory ``upscaler``'s network and the figures would need)."""
    if image is None:
        import skimage.data

        return skimage.data.coffee()[COFFEE_CROP]
    from ..image_reader import ImageError, read_picture

    def need(pixels: int) -> float:
        return upscaler.network_bytes(pixels) + RESULT_COPIES * 3 * 8 * upscaler.scale ** 2 * pixels

    try:  # (what is no regular file, a FIFO or a device, is named by its kind and never opened)
        pic = read_picture(image, MAX_PIXELS, need=need if upscaler else None,
                           limit_hint=' for asid-bench seams, which runs the whole image through the network at once')
    except (ImageError, OSError) as err:
        raise SeamsError(f'--image {shown(image)}: {shown(str(err))}') from None
    return pic.bgr8()[:, :, ::-1].copy()


def seam_figures(checkpoint: Path, image: Optional[Path], tile: int, overlap_averaged: int,
                 overlap_blended: int) -> List[str]:
    """The report lines; a :class:`SeamsError` (or the checkpoint loader's error) for an unusable file."""
    import numpy as np
    import torch

    from ..from_weights import network_from_file
    from ..inference import Upscaler
    from ..utils.asid_tiling import tile_forward

    net, config = network_from_file(checkpoint)
    s = config.upscale
    upscaler = Upscaler(net, s, torch.device('cpu'), 'fp32', tile, overlap_blended, 0, str(checkpoint))
    rgb = read_photo(image, upscaler)
    x = torch.from_numpy(rgb.transpose(2, 0, 1).copy()).float().div(255)[None]

    def to8(t: torch.Tensor) -> np.ndarray:
        return t[0].clamp(0, 1).mul(255).round().byte().numpy().transpose(1, 2, 0).astype(np.float64)

    with torch.inference_mode():
        whole, t_whole = _timed(lambda: to8(net(x)))
        averaged, t_avg = _timed(lambda: to8(tile_forward(net, x, s, tile, overlap_averaged)))
    dest = np.empty((rgb.shape[0] * s, rgb.shape[1] * s, 3), np.uint8)
    _, t_blend = _timed(lambda: upscaler.upscale(rgb, dest, reverse_channels=False))
    lines = [f'{rgb.shape[1]}x{rgb.shape[0]} photo, {config.variant} x{s} from {shown(checkpoint)}; whole image '
             f'{t_whole:.2f} s']
    for name, out, seconds in ((f'averaged {tile} px tiles, overlap {overlap_averaged}', averaged, t_avg),
                               (f'blended {tile} px tiles, overlap {overlap_blended}', dest.astype(np.float64),
                                t_blend)):
        diff = out - whole
        jump = max(np.abs(np.diff(diff.mean(axis=(0, 2)))).max(), np.abs(np.diff(diff.mean(axis=(1, 2)))).max())
        lines.append(f'{name}: column/row-mean jump {jump:.2f} grey levels, max pixel diff '
                     f'{np.abs(diff).max():.0f}, {seconds:.2f} s')
    return lines


def seams(args: argparse.Namespace) -> int:
    """``asid-bench seams``: a checkpoint or image that cannot be used is one line and exit status 2."""
    from ..utils.asid_errors import PretrainedWeightsError
    from ..utils.asid_tiling import PROTOCOL_OVERLAP as REFERENCE_OVERLAP
    from ..utils.asid_tiling import PROTOCOL_TILE as DEFAULT_TILE
    from ..utils.asid_tiling import RAMP_OVERLAP as BLENDED_OVERLAP

    # the one tiler's defaults where not told otherwise
    args.tile = DEFAULT_TILE if args.tile is None else args.tile
    args.overlap_averaged = REFERENCE_OVERLAP if args.overlap_averaged is None else args.overlap_averaged
    args.overlap_blended = BLENDED_OVERLAP if args.overlap_blended is None else args.overlap_blended
    for option, overlap in (('--overlap-averaged', args.overlap_averaged), ('--overlap-blended', args.overlap_blended)):
        if overlap >= args.tile:
            print(f'asid-bench: {option} {overlap} must be smaller than --tile {args.tile}', file=sys.stderr)
            return EXIT_USAGE
    try:
        lines = seam_figures(args.model, args.image, args.tile, args.overlap_averaged, args.overlap_blended)
    except PretrainedWeightsError as err:
        print(f'asid-bench: -m {err}', file=sys.stderr)
        return EXIT_USAGE
    except SeamsError as err:
        print(f'asid-bench: {err}', file=sys.stderr)
        return EXIT_USAGE
    print('\n'.join(lines))
    return EXIT_OK
