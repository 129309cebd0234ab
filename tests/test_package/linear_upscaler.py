"""ASID weights that make a real (if simple) up-scaler, for the tests of released weights by name.

The released files cannot be downloaded here, and random weights are (rightly) refused by the quality check.
These weights turn ASID into a linear 5 x 5 sub-pixel filter fitted by least squares on scikit-image
pictures other than the check picture: ``conv_first`` copies each colour at the nine shifts of a 3 x 3
window, ``conv_after_body`` is zero (so the IDBs' output, from random weights, is cancelled and
``F = F0``), and the up-sampler's 3 x 3 convolution over those shifted copies applies the fitted filter,
each phase of the pixel shuffle its own. Nothing here knows the check picture.
"""
from __future__ import annotations

from typing import Dict, List

import numpy as np
import torch

from asid_arch.archs.asid_arch import asid
from asid_arch.archs.asid_layouts import state_dict_to_reference
from asid_arch.data.prepare import bicubic_resize

TAPS = 5  # the filter's support in LR pixels
HALF = TAPS // 2
FIT_CROP = 400  # px of each training picture at most (top-left)
SHIFT_OF_OFFSET = {-2: -1, -1: -1, 0: 0, 1: 0, 2: 1}  # offset d = shift k (conv_first) + tap t (upsampler)


def training_pictures() -> List[np.ndarray]:
    import skimage.data

    return [skimage.data.chelsea(), skimage.data.coffee(), skimage.data.rocket()]


def neighbourhoods(lr: np.ndarray) -> np.ndarray:
    """(H, W, C) float -> (H * W * C, TAPS * TAPS + 1): each pixel's zero-padded window, then 1 (the bias)."""
    padded = np.pad(lr, ((HALF, HALF), (HALF, HALF), (0, 0)))
    h, w, c = lr.shape
    columns = [padded[HALF + dy:HALF + dy + h, HALF + dx:HALF + dx + w]
               for dy in range(-HALF, HALF + 1) for dx in range(-HALF, HALF + 1)]
    features = np.stack(columns, -1).reshape(-1, TAPS * TAPS)
    return np.concatenate([features, np.ones((len(features), 1))], 1)


def fit_filter(scale: int) -> np.ndarray:
    """(TAPS * TAPS + 1, scale * scale): per output phase (row-major), the LR window's weights and the bias."""
    rows, targets = [], []
    for picture in training_pictures():
        h, w = (min(n, FIT_CROP) // scale * scale for n in picture.shape[:2])
        hr = picture[:h, :w, :3]
        lr = bicubic_resize(hr, 1 / scale).astype(np.float64) / 255
        h, w = lr.shape[:2]
        rows.append(neighbourhoods(lr))
        phases = hr.astype(np.float64).reshape(h, scale, w, scale, 3).transpose(0, 2, 4, 1, 3)
        targets.append(phases.reshape(h * w * 3, scale * scale) / 255)
    return np.linalg.lstsq(np.concatenate(rows), np.concatenate(targets), rcond=None)[0]


def linear_upscaler_state(scale: int) -> Dict[str, torch.Tensor]:
    """Weights of the released ASID at ``scale``, in the released key layout, making the fitted linear filter."""
    coefficients = torch.from_numpy(fit_filter(scale)).float()
    torch.manual_seed(0)
    net = asid(upscale=scale)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    first, up = state['conv_first.weight'].zero_(), state['upsampler.0.weight'].zero_()
    state['conv_first.bias'].zero_()
    state['conv_after_body.weight'].zero_()
    state['conv_after_body.bias'].zero_()
    shifts = [(ky, kx) for ky in (-1, 0, 1) for kx in (-1, 0, 1)]
    for colour in range(3):
        for index, (ky, kx) in enumerate(shifts):
            first[colour * len(shifts) + index, colour, 1 + ky, 1 + kx] = 1
    phases = scale * scale
    for colour in range(3):
        for phase in range(phases):
            out = colour * phases + phase
            state['upsampler.0.bias'][out] = coefficients[-1, phase]
            for dy in range(-HALF, HALF + 1):
                for dx in range(-HALF, HALF + 1):
                    ky, kx = SHIFT_OF_OFFSET[dy], SHIFT_OF_OFFSET[dx]
                    channel = colour * len(shifts) + shifts.index((ky, kx))
                    up[out, channel, 1 + dy - ky, 1 + dx - kx] = coefficients[(dy + HALF) * TAPS + dx + HALF, phase]
    return state_dict_to_reference(state)
