"""THE tiler: super-resolution of an image tile by tile, with the tiles' outputs blended where they overlap.

Kit file (``basicsr/utils/asid_tiling.py`` in a BasicSR checkout): numpy, the standard library, and torch
where a tensor is tiled.

Every tiling of this project places its tiles with :func:`tile_origins` and weighs each output pixel of a
tile with :func:`tile_weights`, in one of two modes:

* ``'average'``, the reference evaluation protocol (what published tables measure): 64 px LR tiles
  overlapping by 24 px (:data:`PROTOCOL_TILE`, :data:`PROTOCOL_OVERLAP`), overlapping outputs averaged.
  ``ASIDModel``'s validation (``val: tile:``) and the golden checks use it through :func:`tile_forward`.
* ``'ramp'``, ``asid-sr``'s blend: each tile's weight ramps linearly up over the pixels it shares with the
  previous tile and down over those it shares with the next (no visible seams); its default overlap is
  :data:`RAMP_OVERLAP` and its tile is chosen from a memory budget (``asid_arch.inference``).
  :func:`tile_rows` streams it over integer images with one tile row of float accumulators.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, List, Optional, Sequence, Tuple

import numpy as np

if TYPE_CHECKING:  # torch is imported where a tensor is tiled: asid-sr's --help lists RAMP_OVERLAP without it
    from torch import Tensor

AVERAGE, RAMP = 'average', 'ramp'  # the blend modes
BLEND_MODES = (AVERAGE, RAMP)
PROTOCOL_TILE = 64  # the reference evaluation protocol ('average'): 64 px LR tiles ...
PROTOCOL_OVERLAP = 24  # ... overlapping by 24 px, averaged
RAMP_OVERLAP = 32  # asid-sr ('ramp'): LR overlap of neighbouring tiles, blended with linear ramps


def tile_origins(size: int, tile: int, overlap: int) -> List[int]:
    """Tile start positions along one axis: ``range(0, size - tile, tile - overlap) + [size - tile]``.

    This is the reference protocol. Where ``tile <= overlap`` (a step the reference cannot take),
    tiles are laid edge to edge instead, so that every pixel is still covered.
    """
    stride = tile - overlap if tile > overlap else tile
    return list(range(0, size - tile, stride)) + [size - tile]


def shared_pixels(origins: Sequence[int], k: int, tile: int, scale: int) -> Tuple[int, int]:
    """``(before, after)``: the output pixels tile ``k`` of ``origins`` shares with the previous and the next tile."""
    before = (origins[k - 1] + tile - origins[k]) * scale if k else 0
    after = (origins[k] + tile - origins[k + 1]) * scale if k + 1 < len(origins) else 0
    return before, after


def blend_ramp(length: int, before: int, after: int) -> np.ndarray:
    """1-D weights of a tile of ``length`` output px: a linear ramp up over the ``before`` px it shares with
    the previous tile, down over the ``after`` px it shares with the next one, 1 elsewhere (never 0)."""
    w = np.ones(length, np.float32)
    if before > 0:
        w[:before] = (np.arange(before, dtype=np.float32) + 0.5) / before
    if after > 0:
        w[length - after:] = np.minimum(w[length - after:], (np.arange(after, 0, -1, dtype=np.float32) - 0.5) / after)
    return w


def tile_weights(blend: str, origins: Sequence[int], k: int, tile: int, scale: int) -> np.ndarray:
    """1-D weights of the output pixels of tile ``k`` along one axis: all 1 for ``'average'``, linear ramps over
    the shared pixels for ``'ramp'``."""
    if blend not in BLEND_MODES:
        raise ValueError(f'blend must be one of {BLEND_MODES}, got {blend!r}')
    if blend == AVERAGE:
        return np.ones(tile * scale, np.float32)
    return blend_ramp(tile * scale, *shared_pixels(origins, k, tile, scale))


def tile_forward(net: Callable[[Tensor], Tensor], lr: Tensor, scale: int, tile: int = PROTOCOL_TILE,
                 overlap: int = PROTOCOL_OVERLAP, blend: str = AVERAGE) -> Tensor:
    """Super-resolve ``lr`` (B, C, H, W) tile by tile; returns (B, C', H*scale, W*scale).

    LR tiles are ``t = min(tile, H, W)`` pixels square. ``blend='average'`` (the default, with the
    protocol's defaults): overlapping outputs are averaged, the reference protocol. ``'ramp'``: weighted
    by :func:`tile_weights`. Gradients flow if enabled.
    """
    if lr.dim() != 4:
        raise ValueError(f'tile_forward expects a (B, C, H, W) tensor, got shape {tuple(lr.shape)}')
    if tile < 1 or overlap < 0:
        raise ValueError(f'tile must be >= 1 and overlap >= 0, got tile={tile}, overlap={overlap}')
    if blend not in BLEND_MODES:
        raise ValueError(f'blend must be one of {BLEND_MODES}, got {blend!r}')
    import torch

    b, _, h, w = lr.shape
    t = min(tile, h, w)
    rows, cols = tile_origins(h, t, overlap), tile_origins(w, t, overlap)
    out = None
    weight = lr.new_zeros(1, 1, h * scale, w * scale)
    for i, y in enumerate(rows):
        for j, x in enumerate(cols):
            sr = net(lr[..., y:y + t, x:x + t])
            if out is None:
                out = sr.new_zeros(b, sr.shape[1], h * scale, w * scale)
            region = (..., slice(y * scale, (y + t) * scale), slice(x * scale, (x + t) * scale))
            if blend == AVERAGE:
                out[region] += sr
                weight[region] += 1
            else:
                ramp = np.outer(tile_weights(blend, rows, i, t, scale), tile_weights(blend, cols, j, t, scale))
                ramp = torch.from_numpy(ramp).to(sr)
                out[region] += ramp * sr
                weight[region] += ramp
    return out / weight


def shift_up(a: np.ndarray, rows: int) -> None:
    """Move ``a[rows:]`` to the top of ``a`` and zero the rows freed at the bottom, in place. Copied in blocks
    of ``rows`` that do not overlap: ``a[:-rows] = a[rows:]`` would first copy the whole source to a
    temporary as large as the accumulator."""
    n = len(a)
    for start in range(0, n - rows, rows):
        stop = min(start + rows, n - rows)
        a[start:stop] = a[start + rows:stop + rows]
    a[max(n - rows, 0):] = 0


def tile_rows(run: Callable[[int, int, int, int], np.ndarray], size: Tuple[int, int], scale: int, tile: int,
              overlap: int, store: Callable[[slice, np.ndarray], None], channels: int = 3, blend: str = RAMP,
              done: Optional[Callable[[], None]] = None) -> None:
    """The tiler over numpy images, streamed: the output of an ``(H, W)`` image comes out row band by row band.

    ``run(y, x, th, tw)`` gives the network's output for the LR tile at ``(y, x)`` of ``th x tw`` px, a float32
    ``(th*s, tw*s, channels)`` array this function may change. ``store(rows, values)`` receives each band of
    finished output rows (``values``: float32 ``(len(rows), W*s, channels)``, its own array) as soon as no later
    tile touches them: only one tile row of accumulators is held. ``done()`` is called after each tile
    (a progress bar). Tiles are ``min(tile, H) x min(tile, W)``, weighted by :func:`tile_weights`.
    """
    h, w = size
    s = scale
    th, tw = min(tile, h), min(tile, w)  # a tile is never larger than the image (a wide strip, say)
    ys, xs = tile_origins(h, th, overlap), tile_origins(w, tw, overlap)
    # a float accumulator for the output rows of one tile row only; finished rows go to ``store``
    acc = np.zeros((th * s, w * s, channels), np.float32)
    wsum = np.zeros((th * s, w * s), np.float32)
    acc_top = 0  # output row held in acc[0]
    for i, y in enumerate(ys):
        finished = y * s - acc_top  # rows above this tile row are final
        if finished > 0:
            store(slice(acc_top, acc_top + finished), acc[:finished] / wsum[:finished, :, None])
            shift_up(acc, finished)
            shift_up(wsum, finished)
            acc_top += finished
        wy = tile_weights(blend, ys, i, th, s)
        for j, x in enumerate(xs):
            weight = wy[:, None] * tile_weights(blend, xs, j, tw, s)[None, :]
            out = run(y, x, th, tw)
            out *= weight[:, :, None]
            cols = slice(x * s, (x + tw) * s)
            acc[:, cols] += out
            wsum[:, cols] += weight
            del out
            if done is not None:
                done()
    store(slice(acc_top, h * s), acc[:h * s - acc_top] / wsum[:h * s - acc_top, :, None])
