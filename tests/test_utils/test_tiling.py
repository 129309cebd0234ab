"""Tiled inference: the reference protocol (overlaps averaged) and asid-sr's blend (linear ramps).

A position-dependent "network" (its output depends on where a pixel sits inside its tile) makes every
tiling rule visible: the tiled result is compared with a hand-computed average, tile by tile, for the
protocol, and with hand-computed ramp weights for asid-sr. The protocol's defaults (64 px tiles,
overlap 24, the authors' evaluation protocol) are asserted wherever they are set.
"""
from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from asid_arch import ASID
from asid_arch.models import asid_model
from asid_arch.utils import asid_tiling
from asid_arch.utils.asid_tiling import tile_forward, tile_origins

from helpers import REPO

PROTOCOL_TILE, PROTOCOL_OVERLAP = 64, 24  # the reference evaluation protocol


def local_position_net(scale: int):
    """Output = nearest up-sampling of the input + 1000 * (row in the tile's output) + (column in it)."""
    def net(x: torch.Tensor) -> torch.Tensor:
        up = torch.nn.functional.interpolate(x, scale_factor=scale, mode='nearest')
        rows = torch.arange(up.shape[-2], dtype=x.dtype)[:, None] * 1000
        cols = torch.arange(up.shape[-1], dtype=x.dtype)[None, :]
        return up + rows + cols
    return net


def protocol_by_hand(x: torch.Tensor, scale: int, tile: int, row_origins, col_origins) -> torch.Tensor:
    """Average, over every tile covering an output pixel, of what the tile's network gives it."""
    b, c, h, w = x.shape
    total = torch.zeros(b, c, h * scale, w * scale, dtype=x.dtype)
    count = torch.zeros(h * scale, w * scale, dtype=x.dtype)
    up = torch.nn.functional.interpolate(x, scale_factor=scale, mode='nearest')
    for y0 in row_origins:
        for x0 in col_origins:
            for i in range(tile * scale):
                for j in range(tile * scale):
                    yy, xx = y0 * scale + i, x0 * scale + j
                    total[..., yy, xx] += up[..., yy, xx] + 1000 * i + j
                    count[yy, xx] += 1
    assert bool((count > 0).all())
    return total / count


@pytest.mark.parametrize('size,tile,overlap,rows,cols', [
    ((20, 30), 16, 6, [0, 4], [0, 10, 14]),  # origins written out: 0, step tile-overlap, last flush
    ((12, 17), 8, 3, [0, 4], [0, 5, 9]),
])
def test_protocol_averages_what_each_tile_gives(size, tile, overlap, rows, cols):
    torch.manual_seed(0)
    x = torch.rand(1, 2, *size, dtype=torch.float64)
    got = tile_forward(local_position_net(2), x, 2, tile, overlap)
    assert (got - protocol_by_hand(x, 2, tile, rows, cols)).abs().max().item() < 1e-9


def test_protocol_defaults_everywhere():
    """64 px tiles overlapping by 24: tile_forward's defaults, ASIDModel's, and every test option file's."""
    params = inspect.signature(tile_forward).parameters
    assert (params['tile'].default, params['overlap'].default) == (PROTOCOL_TILE, PROTOCOL_OVERLAP)
    assert (asid_tiling.PROTOCOL_TILE, asid_tiling.PROTOCOL_OVERLAP) == (PROTOCOL_TILE, PROTOCOL_OVERLAP)
    files = sorted((REPO / 'options' / 'test').rglob('*.yml'))
    assert files
    for path in files:
        tile = yaml.safe_load(path.read_text())['val']['tile']
        assert tile == {'size': PROTOCOL_TILE, 'overlap': PROTOCOL_OVERLAP}, path


class _Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, net, lr, scale, tile, overlap):
        self.calls.append((tile, overlap))
        return torch.zeros(lr.shape[0], 3, lr.shape[2] * scale, lr.shape[3] * scale)


@pytest.mark.parametrize('tile_option,expected', [({'size': 48}, (48, PROTOCOL_OVERLAP)),
                                                  ({'overlap': 8}, (PROTOCOL_TILE, 8)),
                                                  ({'size': 32, 'overlap': 4}, (32, 4))])
def test_asid_model_fills_missing_tile_keys_with_the_protocol(monkeypatch, tile_option, expected):
    from asid_arch import ASID

    recorder = _Recorder()
    monkeypatch.setattr(asid_model, 'tile_forward', recorder)
    model = asid_model.ASIDModel.__new__(asid_model.ASIDModel)
    model.opt = {'val': {'tile': tile_option}, 'scale': 2}
    model.net_g = ASID(upscale=2, num_feat=16, num_blocks=1)
    model.lq = torch.rand(1, 3, 20, 20)
    model.test()
    assert recorder.calls == [expected]


# ------------------------------------------------------------------------------------------------
# asid-sr: tiles blended with linear ramps over each overlap
# ------------------------------------------------------------------------------------------------
class LocalPositionModule(torch.nn.Module):
    """In [0, 1]: a tile's output pixel (i, j) is (i * 64 + j) / 65535 (i, j < 64 here), same for each channel."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2] * self.scale, x.shape[-1] * self.scale
        pos = torch.arange(h, dtype=x.dtype)[:, None] * 64 + torch.arange(w, dtype=x.dtype)[None, :]
        return (pos / 65535).expand(x.shape[0], 3, h, w).clone()


def ramp_by_hand(length: int, before: int, after: int) -> np.ndarray:
    """Weight of each output pixel of a tile: (k + 1/2) / n over the first n = ``before`` pixels (shared with
    the previous tile), mirrored over the last ``after`` pixels, 1 elsewhere; the smaller where both apply."""
    weights = np.ones(length)
    for k in range(length):
        if k < before:
            weights[k] = min(weights[k], (k + 0.5) / before)
        if k >= length - after:
            weights[k] = min(weights[k], (length - k - 0.5) / after)
    return weights


def test_asid_sr_blend_uses_linear_ramps():
    from asid_arch.inference import Upscaler

    scale, tile, overlap, h, w = 2, 16, 6, 20, 30
    rows, cols = [0, 4], [0, 10, 14]  # origins (as the protocol's)
    upscaler = Upscaler(LocalPositionModule(scale), scale, torch.device('cpu'), 'fp32', tile, overlap, 0, 'test')
    dest = np.zeros((h * scale, w * scale), np.uint16)
    upscaler.upscale(np.zeros((h, w), np.uint16), dest, reverse_channels=False)

    total = np.zeros((h * scale, w * scale))
    weight = np.zeros((h * scale, w * scale))
    t = tile * scale
    for a, y0 in enumerate(rows):
        above = (rows[a - 1] + tile - y0) * scale if a else 0
        below = (y0 + tile - rows[a + 1]) * scale if a + 1 < len(rows) else 0
        for b, x0 in enumerate(cols):
            left = (cols[b - 1] + tile - x0) * scale if b else 0
            right = (x0 + tile - cols[b + 1]) * scale if b + 1 < len(cols) else 0
            wt = ramp_by_hand(t, above, below)[:, None] * ramp_by_hand(t, left, right)[None, :]
            value = np.arange(t)[:, None] * 64 + np.arange(t)[None, :]
            total[y0 * scale:y0 * scale + t, x0 * scale:x0 * scale + t] += wt * value
            weight[y0 * scale:y0 * scale + t, x0 * scale:x0 * scale + t] += wt
    expected = total / weight
    assert np.abs(dest.astype(np.float64) - expected).max() <= 0.5 + 1e-6  # rounded to whole levels


def test_tile_origins():
    assert tile_origins(80, 64, 24) == [0, 16]
    assert tile_origins(100, 64, 24) == [0, 36]
    assert tile_origins(200, 64, 24) == [0, 40, 80, 120, 136]
    assert tile_origins(64, 64, 24) == [0]
    assert tile_origins(50, 20, 24) == [0, 20, 30]  # tile <= overlap: edge to edge, all covered


def test_tile_forward_single_tile_is_whole_image():
    net = ASID(upscale=2).double().eval()
    x = torch.rand(1, 3, 40, 40, dtype=torch.float64)
    with torch.no_grad():
        assert (tile_forward(net, x, 2) - net(x)).abs().max().item() < 1e-12


@pytest.mark.parametrize('size,tile,overlap', [((30, 50), 64, 24), ((100, 77), 32, 8), ((70, 90), 16, 20)])
def test_tile_forward_averages_overlaps(size, tile, overlap):
    """With a pixel-wise 'network' every tile agrees, so the averaged result equals the whole image."""
    def upsample(t):
        return F.interpolate(t, scale_factor=3, mode='nearest') * 2 + 1

    x = torch.rand(2, 3, *size, dtype=torch.float64)
    assert (tile_forward(upsample, x, 3, tile, overlap) - upsample(x)).abs().max().item() < 1e-12
