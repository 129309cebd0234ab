"""Data-loading errors in BasicSR's pipelines, named: which dataset, which LMDB key or file, and why.

BasicSR's datasets decode with ``cv2.imdecode``, which returns None for bytes that are not an
image; the next line fails with ``'NoneType' object has no attribute 'astype'``, and in a data-loader
worker that arrives wrapped in the worker's traceback. Our entry points wrap each dataset BasicSR
builds in :class:`CheckedDataset`: a sample that cannot be loaded raises :class:`DataReadError`,
whose message names the dataset, the LMDB and key (or the file) and the reason. Only the failing
sample is examined again, so the normal path costs nothing. The wrapper is a plain picklable
dataset, so it also works in data-loader workers that are spawned rather than forked.

A training sampler (:class:`asid_arch.pipeline.sampler.SeededSampler`) gives :class:`CheckedDataset` keys
``(index, seed)``: the sample is loaded with ``random``, NumPy and torch seeded from ``seed``
(:func:`asid_arch.utils.asid_random.seeded`), so its augmentation does not depend on the process that loads it.
"""
from __future__ import annotations

from typing import Mapping, Optional, Tuple, Union

import cv2
import numpy as np
from torch.utils.data import Dataset

from ..utils.asid_errors import first_line
from ..utils.asid_random import seeded

DATA_READ_ERROR_MARK = 'DataReadError: '  # how the class shows in a data-loader worker's re-raised traceback


class DataReadError(RuntimeError):
    """A sample of the training or test data cannot be loaded; the message names it."""

    def summary(self) -> str:
        """The one-line message, also when a data-loader worker re-raised this error with its traceback inside."""
        lines = [line for line in str(self).strip().splitlines() if line.strip()]
        last = lines[-1] if lines else ''
        return last.split(DATA_READ_ERROR_MARK, 1)[1] if DATA_READ_ERROR_MARK in last else last


class CheckedDataset(Dataset):
    """A BasicSR dataset whose failing samples raise :class:`DataReadError` naming what could not be read.

    Everything else (``len``, ``opt``, ``paths``, ...) is the wrapped dataset's: BasicSR's pipelines
    read ``dataset.opt['name']`` and ``len(dataset)``.
    """

    def __init__(self, dataset: Dataset, phase: str) -> None:
        self.dataset = dataset
        self.phase = phase

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str):
        if name in ('dataset', 'phase'):  # not set yet (while unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, key: Union[int, Tuple[int, int]]):
        """Sample ``key``: an index, or ``(index, seed)`` to load it with the random generators seeded from ``seed``."""
        index, seed = key if isinstance(key, tuple) else (key, None)
        try:
            if seed is None:
                return self.dataset[index]
            with seeded(seed):
                return self.dataset[index]
        except Exception as err:
            raise DataReadError(self._describe(index, err)) from None

    def _describe(self, index: int, err: BaseException) -> str:
        opt = getattr(self.dataset, 'opt', None) or {}
        where = f"datasets: {self.phase} ({opt.get('name', type(self.dataset).__name__)})"
        try:
            culprit = self._find_culprit(index)
        except Exception:  # the diagnosis must never hide the error
            culprit = None
        if culprit:
            return f'{where}: {culprit}'
        pair = self._pair(index)
        return f'{where}: sample {index}{f" ({pair})" if pair else ""}: {type(err).__name__}: {first_line(err)}'

    def _pair(self, index: int) -> Optional[str]:
        paths = getattr(self.dataset, 'paths', None)
        if not paths:
            return None
        entry = paths[index % len(paths)]
        return ', '.join(f'{k[:-len("_path")].upper()} {v}' for k, v in entry.items()) if isinstance(entry, Mapping) \
            else str(entry)

    def _find_culprit(self, index: int) -> Optional[str]:
        """Read the sample's files again, one by one: the first missing or undecodable one, named."""
        paths = getattr(self.dataset, 'paths', None)
        client = getattr(self.dataset, 'file_client', None)
        if not paths or client is None:
            return None
        entry = paths[index % len(paths)]
        if not isinstance(entry, Mapping):
            return None
        opt = getattr(self.dataset, 'opt', None) or {}
        for key, path in entry.items():
            role = key[:-len('_path')] if key.endswith('_path') else key
            if getattr(client, 'backend', None) == 'lmdb':
                what = f"LMDB {opt.get(f'dataroot_{role}', '?')}, key {path}"
            else:
                what = str(path)
            try:
                content = client.get(path, role)
            except Exception as err:
                return f'{what}: cannot be read ({type(err).__name__}: {first_line(err)})'
            if content is None:
                return f'{what}: no such key (rebuild the LMDB with asid-prepare)'
            if not content:
                return f'{what}: empty (0 bytes)'
            if cv2.imdecode(np.frombuffer(content, np.uint8), cv2.IMREAD_COLOR) is None:
                return (f'{what}: not a decodable image ({len(content)} bytes of damaged data); replace it, or '
                        'rebuild the data with asid-prepare')
        return None
