"""Atomic file writes: a reader (or a resumed run) sees the old file or the complete new one."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Sequence, Union

import cv2
import numpy as np


def atomic_write(path: Union[str, Path], write: Callable[[object], None]) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, then rename it to ``path``.

    The temporary name starts with '.' and ends with '.tmp', so scanners looking for ``*.png``,
    ``*.pth`` or ``*.state`` never pick up a half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def imwrite_atomic(path: Union[str, Path], img: np.ndarray, params: Sequence[int] = ()) -> None:
    """``cv2.imwrite`` made atomic; the format follows the suffix of ``path``."""
    ok, data = cv2.imencode(Path(path).suffix, img, list(params))
    if not ok:
        raise ValueError(f'could not encode an image as {Path(path).suffix}')
    atomic_write(path, lambda f: f.write(data.tobytes()))


def torch_save_atomic(obj: object, path: Union[str, Path]) -> None:
    """``torch.save`` made atomic."""
    import torch

    atomic_write(path, lambda f: torch.save(obj, f))
