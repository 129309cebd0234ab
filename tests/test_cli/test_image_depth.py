"""16-bit images keep their 16 bits through asid-sr: the network sees the full values and the result is
written with 65535 levels, not an 8-bit image scaled by 257."""
from __future__ import annotations

import cv2
import numpy as np
import torch

from asid_arch import ASID
from asid_arch.cli.sr import main as asid_sr

UINT16_MAX = 65535


def test_16bit_input_reaches_the_network_and_the_file(tmp_path):
    torch.manual_seed(0)
    net = ASID(upscale=2, num_feat=16, num_blocks=1).eval()
    torch.save({'params': net.state_dict()}, tmp_path / 'm.pth')
    # a smooth 16-bit picture: neighbouring values differ by less than one 8-bit step
    yy, xx = np.mgrid[0:24, 0:32]
    gray16 = (20000 + 37 * yy + 11 * xx).astype(np.uint16)
    bgr16 = np.dstack([gray16, gray16 + 1234, gray16 + 2345])
    assert np.count_nonzero(bgr16 % 257) > bgr16.size * 0.9  # not 8-bit data times 257
    cv2.imwrite(str(tmp_path / 'deep.png'), bgr16)

    assert asid_sr([str(tmp_path / 'deep.png'), '-o', str(tmp_path / 'o'), '-m', str(tmp_path / 'm.pth')]) == 0
    got = cv2.imread(str(tmp_path / 'o' / 'deep_x2.png'), cv2.IMREAD_UNCHANGED)
    assert got.dtype == np.uint16 and got.shape == (48, 64, 3)

    def expected(bgr: np.ndarray, levels: int) -> np.ndarray:
        x = torch.from_numpy(bgr[:, :, ::-1].astype(np.float32).transpose(2, 0, 1).copy())[None] / levels
        with torch.no_grad():
            y = net(x)[0].clamp(0, 1).numpy().transpose(1, 2, 0)[:, :, ::-1]
        return np.rint(y * UINT16_MAX)

    full = expected(bgr16, UINT16_MAX)
    assert np.abs(got.astype(np.float64) - full).max() <= 1  # the network saw every 16-bit value
    eight_bit = expected((bgr16.astype(np.float64) / 257).round().astype(np.uint8), 255)
    assert np.abs(got.astype(np.float64) - eight_bit).max() > 8  # ... which an 8-bit reading would not give


def test_depth_conversion_scales_the_full_range():
    """8 <-> 16 bits by scaling by 65535 / 255 = 257, never by 256 (which leaves 255 at 65280, short of white) or by
    clipping: every 8-bit value maps to v * 257 and back, 16-bit values round to the nearest 8-bit one."""
    from asid_arch.image_reader import to_depth

    eight = np.arange(256, dtype=np.uint8)
    sixteen = to_depth(eight, np.uint16)
    assert sixteen.dtype == np.uint16 and sixteen.tolist() == [v * 257 for v in range(256)]
    assert to_depth(sixteen, np.uint8).tolist() == eight.tolist()
    assert to_depth(np.array([0, 128, 65535, 32767, 32896], np.uint16), np.uint8).tolist() == [0, 0, 255, 127, 128]
