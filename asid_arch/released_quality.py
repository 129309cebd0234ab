"""What released weights do, checked before they take their name: they must beat bicubic on a real picture.

A file can load strictly into the named network and still be useless: random weights of the right shapes,
all zeros (an all-black output), a damaged or swapped file. Before a download gets its name (and before a
file placed in the cache by hand is first used), the network runs on a small real picture: a 96 x 96 crop of
scikit-image's ``camera`` (the cameraman, grey, used as RGB; scikit-image is a dependency of the package),
mod-cropped, down-scaled by MATLAB's bicubic ``imresize`` (the degradation the released networks were trained
for), then up-scaled by the network and by bicubic. Y-channel PSNR, border = scale, as the paper's tables.

The released networks are far above bicubic: ASID's published Urban100 PSNR (33.35 / 29.08 / 26.89 dB at
x2 / x3 / x4, :mod:`asid_arch.bench.published`) is 3.7-6.5 dB above bicubic's standard figures (26.88 / 24.46 /
23.14 dB). The threshold is to beat bicubic (by more than :data:`MARGIN_DB`): a linear 5 x 5 filter fitted by
least squares on other pictures already does on this crop, by 0.3-0.5 dB (``tests/test_package/
test_released_quality.py`` builds one as ASID weights), while random weights (PyTorch's initialisation) and
all-zero weights fall over 15 dB below it (the same tests).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CHECK_CROP = (slice(100, 196), slice(200, 296))  # rows, columns of skimage.data.camera(): 96 x 96, LR 48/32/24
MARGIN_DB = 0.0  # the network's PSNR must exceed bicubic's by more than this
PIXEL_MAX = 255.0


@dataclass(frozen=True)
class Quality:
    """Y-channel PSNR (dB) of the network's and of bicubic's up-scaling of the check picture."""
    scale: int
    network_db: float
    bicubic_db: float

    @property
    def gain_db(self) -> float:
        return self.network_db - self.bicubic_db

    @property
    def passed(self) -> bool:
        return self.gain_db > MARGIN_DB

    def __str__(self) -> str:
        return (f'on the check picture (96x96 crop of scikit-image\'s camera, x{self.scale}) the network reaches '
                f'{self.network_db:.2f} dB, bicubic {self.bicubic_db:.2f} dB ({self.gain_db:+.2f} dB)')


def check_picture() -> np.ndarray:
    """The HR check picture: (96, 96, 3) uint8 RGB."""
    import skimage.data

    grey = skimage.data.camera()[CHECK_CROP]
    return np.repeat(grey[:, :, None], 3, axis=2)


def upscale_uint8(net, lr: np.ndarray) -> np.ndarray:
    """``net`` (a CPU network of RGB in [0, 1]) applied to an (H, W, 3) uint8 RGB image, rounded to uint8."""
    import torch

    x = torch.from_numpy(lr.astype(np.float32) / PIXEL_MAX).permute(2, 0, 1)[None]
    param = next(net.parameters(), None)
    if param is not None:
        x = x.to(device=param.device, dtype=param.dtype)
    with torch.no_grad():
        y = torch.nan_to_num(net(x)[0].float().cpu(), nan=0.0).clamp(0, 1).permute(1, 2, 0).numpy()
    return np.round(y * PIXEL_MAX).astype(np.uint8)


def measure(net, scale: int) -> Quality:
    """:class:`Quality` of ``net`` (an x``scale`` RGB network in eval mode) on the check picture."""
    from .data.prepare import bicubic_resize
    from .metrics.asid_metric import calculate_psnr_matlab

    hr = check_picture()
    hr = hr[:hr.shape[0] - hr.shape[0] % scale, :hr.shape[1] - hr.shape[1] % scale]
    lr = bicubic_resize(hr, 1 / scale)
    bicubic = bicubic_resize(lr, scale)
    out = upscale_uint8(net, lr)
    if out.shape != hr.shape:
        raise ValueError(f'the network gave a {out.shape} image for a {lr.shape} input at x{scale}')
    bgr = (slice(None), slice(None), slice(None, None, -1))  # the metric reads BGR (Y is weighted)
    return Quality(scale, calculate_psnr_matlab(out[bgr], hr[bgr], scale),
                   calculate_psnr_matlab(bicubic[bgr], hr[bgr], scale))
