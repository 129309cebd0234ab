"""The demo's picture (``make demo`` step 3): the figure writer on small arrays, no training."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from asid_arch.cli.demo import (CROP, GAP, LABEL_HEIGHT, ZOOM, Evaluated, comparison_figure, detailed_crop,
                                write_comparison)
from asid_arch.image_reader import decode_file


def panels(height: int = 20, width: int = 30) -> list:
    """Three flat panels of distinct colours, so that each panel's place in the figure can be checked."""
    colours = ((0, 0, 255), (0, 255, 0), (255, 0, 0))
    return [(np.full((height, width, 3), c, np.uint8), f'panel {i} 30.00 dB') for i, c in enumerate(colours)]


def test_three_panels_side_by_side_with_labels():
    """Width: three magnified panels and two gaps; height: a panel and the label band; each panel in its
    place, unsmoothed; each label drawn (dark pixels) in the band under its own panel."""
    figure = comparison_figure(panels(), zoom=2)
    assert figure.dtype == np.uint8 and figure.shape == (20 * 2 + LABEL_HEIGHT, 3 * 30 * 2 + 2 * GAP, 3)
    for i, (panel, _) in enumerate(panels()):
        left = i * (30 * 2 + GAP)
        assert (figure[:40, left:left + 60] == panel[0, 0]).all()  # nearest neighbour: exactly the colour
        band = figure[40:, left:left + 60]
        assert (band.min(axis=2) < 128).any(), f'no label under panel {i}'
    assert (figure[:40, 60:60 + GAP] == 255).all()  # the gap is white


def test_panels_of_different_sizes_are_refused():
    with pytest.raises(ValueError, match='one size'):
        comparison_figure([(np.zeros((8, 8, 3), np.uint8), 'a'), (np.zeros((8, 9, 3), np.uint8), 'b')])


def test_crop_where_bicubic_loses_most():
    """The crop lies on the region of largest error (here: the bottom-right quarter)."""
    gt = np.zeros((64, 64, 3), np.uint8)
    bicubic = gt.copy()
    bicubic[40:, 40:] = 200
    y, x = detailed_crop(bicubic, gt, 16)
    assert y >= 40 - 8 and x >= 40 - 8


def test_write_comparison_writes_a_png(tmp_path):
    """A validation image smaller than the crop: the whole image is shown, three panels, PNG on disk."""
    rng = np.random.default_rng(0)
    gt, bicubic, sr = (rng.integers(0, 256, (40, 50, 3), dtype=np.uint8) for _ in range(3))
    path = tmp_path / 'experiments' / 'demo' / 'visual_comparison.png'
    write_comparison(Evaluated('tiny', 25.0, 26.5, bicubic, sr, gt), path)
    figure = decode_file(path, cv2.IMREAD_COLOR)
    size = min(CROP, 40, 50) * ZOOM
    assert figure.shape == (size + LABEL_HEIGHT, 3 * size + 2 * GAP, 3)
    assert (figure[:size, 2 * (size + GAP):] == cv2.resize(gt[:40, :40], (size, size),
                                                           interpolation=cv2.INTER_NEAREST)).all()
    assert [p.name for p in path.parent.iterdir()] == ['visual_comparison.png']  # no temporary left
