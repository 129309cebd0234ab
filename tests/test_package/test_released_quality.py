"""The quality check of released weights (asid_arch.released_quality), measured for real: random and all-zero
weights of the released shapes fall far below bicubic on the check picture; a linear filter made of ASID
weights (linear_upscaler.py, fitted on other pictures) beats it."""
from __future__ import annotations

import pytest
import torch

from asid_arch.archs.asid_arch import asid, asid_d8
from asid_arch.released_quality import MARGIN_DB, check_picture, measure

from linear_upscaler import linear_upscaler_state

FAR_BELOW_DB = 15.0  # random and zero weights measured 16.8-22.5 dB below bicubic at x2-x4


def test_check_picture_is_a_real_detailed_picture():
    picture = check_picture()
    assert picture.shape == (96, 96, 3) and picture.dtype.name == 'uint8'
    assert picture.std() > 30  # not flat: edges and texture


@pytest.mark.slow
@pytest.mark.parametrize('scale', [2, 3, 4])
def test_random_and_zero_weights_fall_far_below_bicubic(scale):
    for seed in (0, 1):
        torch.manual_seed(seed)
        quality = measure(asid(upscale=scale).eval(), scale)
        assert not quality.passed and quality.gain_db < -FAR_BELOW_DB, quality
    zero = asid(upscale=scale).eval()
    for p in zero.parameters():
        p.data.zero_()
    quality = measure(zero, scale)
    assert not quality.passed and quality.gain_db < -FAR_BELOW_DB, quality


@pytest.mark.slow
def test_random_asid_d8_weights_fall_far_below_bicubic():
    torch.manual_seed(0)
    quality = measure(asid_d8(upscale=2).eval(), 2)
    assert not quality.passed and quality.gain_db < -FAR_BELOW_DB, quality


@pytest.mark.parametrize('scale', [2, pytest.param(3, marks=pytest.mark.slow), pytest.param(4, marks=pytest.mark.slow)])
def test_a_real_upscaler_made_of_asid_weights_passes(scale):
    net = asid(upscale=scale)
    net.load_state_dict(linear_upscaler_state(scale))
    quality = measure(net.eval(), scale)
    assert quality.passed and quality.gain_db > MARGIN_DB, quality
    assert f'x{scale}' in str(quality) and 'bicubic' in str(quality)
