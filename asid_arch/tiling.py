"""Tiled inference: the reference evaluation protocol, with memory bounded by the tile size."""
from __future__ import annotations

from typing import Callable, List

from torch import Tensor

DEFAULT_TILE = 64
DEFAULT_OVERLAP = 24


def tile_origins(size: int, tile: int, overlap: int) -> List[int]:
    """Tile start positions along one axis: ``range(0, size - tile, tile - overlap) + [size - tile]``.

    This is the reference protocol. Where ``tile <= overlap`` (a step the reference cannot take),
    tiles are laid edge to edge instead, so that every pixel is still covered.
    """
    stride = tile - overlap if tile > overlap else tile
    return list(range(0, size - tile, stride)) + [size - tile]


def tile_forward(net: Callable[[Tensor], Tensor], lr: Tensor, scale: int, tile: int = DEFAULT_TILE,
                 overlap: int = DEFAULT_OVERLAP, progress: bool = False) -> Tensor:
    """Super-resolve ``lr`` (B, C, H, W) tile by tile; returns (B, C', H*scale, W*scale).

    LR tiles are ``t = min(tile, H, W)`` pixels square; overlapping outputs are averaged. Peak memory
    is that of one tile plus the output, whatever the image size. Gradients flow if enabled.
    """
    if lr.dim() != 4:
        raise ValueError(f'tile_forward expects a (B, C, H, W) tensor, got shape {tuple(lr.shape)}')
    if tile < 1 or overlap < 0:
        raise ValueError(f'tile must be >= 1 and overlap >= 0, got tile={tile}, overlap={overlap}')
    b, _, h, w = lr.shape
    t = min(tile, h, w)
    rows, cols = tile_origins(h, t, overlap), tile_origins(w, t, overlap)
    out = None
    weight = lr.new_zeros(1, 1, h * scale, w * scale)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(rows) * len(cols), desc='tiles', unit='tile', leave=False)
    for y in rows:
        for x in cols:
            sr = net(lr[..., y:y + t, x:x + t])
            if out is None:
                out = sr.new_zeros(b, sr.shape[1], h * scale, w * scale)
            region = (..., slice(y * scale, (y + t) * scale), slice(x * scale, (x + t) * scale))
            out[region] += sr
            weight[region] += 1
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()
    return out / weight
