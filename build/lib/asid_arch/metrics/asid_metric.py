"""Metrics BasicSR lacks, registered in ``METRIC_REGISTRY`` (usable as ``type:`` in option files).

Kit file (``basicsr/metrics/asid_metric.py`` in a BasicSR checkout): numpy, basicsr and the kit's
``utils/asid_compat.py``. BasicSR does not scan its metrics folder, so ``models/asid_model.py`` imports
this file: the metric is registered wherever ``ASIDModel`` is.
"""
from __future__ import annotations

import numpy as np

from ..utils.asid_compat import register_once  # isort: skip  (first: installs the torchvision alias)

from basicsr.metrics.metric_util import reorder_image  # after the alias
from basicsr.utils.color_util import bgr2ycbcr
from basicsr.utils.registry import METRIC_REGISTRY

PIXEL_MAX = 255.0


def y_channel_uint8(img: np.ndarray) -> np.ndarray:
    """Y of a BGR uint8-range image, rounded to integers as MATLAB's ``rgb2ycbcr`` does on uint8."""
    return np.round(bgr2ycbcr(img.astype(np.float32) / PIXEL_MAX, y_only=True) * PIXEL_MAX).astype(np.float64)


def calculate_psnr_matlab(img: np.ndarray, img2: np.ndarray, crop_border: int, input_order: str = 'HWC',
                          **kwargs) -> float:
    """Y-channel PSNR with MATLAB's conventions (Y rounded to uint8), as the published SR tables.

    BasicSR's ``calculate_psnr(test_y_channel=True)`` keeps Y in floating point and reads about
    0.01-0.03 dB higher (e.g. bicubic Set5 x2: 33.68 vs the published 33.66).
    """
    if img.shape != img2.shape:
        raise ValueError(f'image shapes differ: {img.shape} vs {img2.shape}')
    y1 = y_channel_uint8(reorder_image(img, input_order=input_order))
    y2 = y_channel_uint8(reorder_image(img2, input_order=input_order))
    if crop_border:
        y1, y2 = y1[crop_border:-crop_border, crop_border:-crop_border], y2[crop_border:-crop_border,
                                                                            crop_border:-crop_border]
    mse = np.mean((y1 - y2)**2)
    return float('inf') if mse == 0 else float(10.0 * np.log10(PIXEL_MAX**2 / mse))


register_once(METRIC_REGISTRY, calculate_psnr_matlab, __file__)
