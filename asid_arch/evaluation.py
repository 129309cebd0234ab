"""Whole-image evaluation helpers shared by the demo and the benchmark."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Tuple

import cv2
import numpy as np
import torch

from .utils import asid_compat  # noqa: F401  isort: skip  (first: the torchvision alias BasicSR 1.4.2 needs)
from basicsr.utils import img2tensor, tensor2img

from .image_reader import decode_file


def super_resolve(net: torch.nn.Module, lr: np.ndarray, device: str = 'cpu') -> np.ndarray:
    """A BGR uint8 image through ``net``; returns the BGR uint8 result (BasicSR's conversions)."""
    x = img2tensor(lr.astype(np.float32) / 255.0)[None].to(device)
    with torch.inference_mode():
        return tensor2img(net(x))


def paired_images(gt_dir: Path, lq_dir: Path) -> Iterator[Tuple[str, np.ndarray, np.ndarray]]:
    """``(stem, gt, lq)`` for every PNG of ``gt_dir`` and its namesake in ``lq_dir`` (BGR uint8)."""
    for gt_path in sorted(Path(gt_dir).glob('*.png')):
        lq = decode_file(Path(lq_dir) / gt_path.name, cv2.IMREAD_COLOR)
        yield gt_path.stem, decode_file(gt_path, cv2.IMREAD_COLOR), lq
