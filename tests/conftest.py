"""Shared set-up for every test: BasicSR's registries hold this package's architectures, model and metric, and
torch uses at most two threads (one per worker when the suite runs in parallel workers). The reference data
(``../shared``) and the helpers are in ``helpers.py``."""
from __future__ import annotations

import os

import torch

import asid_arch.models  # noqa: F401  (installs the torchvision alias; registers the archs, the model and the metric)

# at most two threads; under pytest-xdist (`-n N`) the cores are shared out among the N workers
WORKERS = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))
torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', max(1, min(2, (os.cpu_count() or 1) // WORKERS)))))
