"""Atomic file writes: a reader (or a resumed run) sees the old file or the complete new one.

``atomic_write`` itself is in the kit file ``models/asid_model.py`` (checkpoints use it there).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

import cv2
import numpy as np

from .models.asid_model import atomic_write, remove_stale_temporaries  # noqa: F401  (one copy, in the kit)


def imwrite_atomic(path: Union[str, Path], img: np.ndarray, params: Sequence[int] = ()) -> memoryview:
    """``cv2.imwrite`` made atomic; the format follows the suffix of ``path``. Returns the bytes written
    (``asid-prepare`` records their hash)."""
    ok, data = cv2.imencode(Path(path).suffix, img, list(params))
    if not ok:
        raise ValueError(f'could not encode an image as {Path(path).suffix}')
    atomic_write(path, lambda f: f.write(data))
    return memoryview(data)
