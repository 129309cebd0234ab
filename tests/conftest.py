"""Shared set-up for every test: BasicSR's registries hold this package's architectures, model and metric, torch
uses at most two threads (one per worker when the suite runs in parallel workers), and the tiny data set of the
pipeline tests (``data``) is made once per session. The reference data (``../shared``) and the helpers are in
``helpers.py``."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Dict, Tuple

import pytest
import torch

import asid_arch.models  # noqa: F401  (installs the torchvision alias; registers the archs, the model and the metric)

# at most two threads; under pytest-xdist (`-n N`) the cores are shared out among the N workers
WORKERS = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))
torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', max(1, min(2, (os.cpu_count() or 1) // WORKERS)))))

# the tiny data set's (train images, validation images) unless a test module sets TINY_DATA
DEFAULT_TINY_DATA = (3, 1)


@pytest.fixture(scope='session')
def tiny_data_sets(tmp_path_factory) -> Callable[[int, int], Path]:
    """:func:`helpers.make_tiny_data` folders, each made once per session: ``(train_images, val_images) -> root``.
    Tests read them (a test that changes data copies it first)."""
    from helpers import make_tiny_data

    made: Dict[Tuple[int, int], Path] = {}

    def get(train_images: int, val_images: int) -> Path:
        if (train_images, val_images) not in made:
            root = tmp_path_factory.mktemp(f'tiny_data_{train_images}_{val_images}')
            made[train_images, val_images] = make_tiny_data(root, train_images, val_images)
        return made[train_images, val_images]

    return get


@pytest.fixture(scope='module')
def data(request, tiny_data_sets) -> Path:
    """The tiny data set (``asid-prepare``'d: ``train/tiny_*`` x2 LMDB and folders, ``valsrc/{GTmod2,LRbicx2}``), of
    the module's ``TINY_DATA = (train images, validation images)`` or DEFAULT_TINY_DATA."""
    return tiny_data_sets(*getattr(request.module, 'TINY_DATA', DEFAULT_TINY_DATA))
