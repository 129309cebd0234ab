"""Shared set-up for every test: BasicSR's registries hold this package's architectures, model and metric, and
torch uses at most two threads. The reference data (``../shared``) and the helpers are in ``helpers.py``."""
from __future__ import annotations

import os

import torch

import asid_arch.models  # noqa: F401  (installs the torchvision alias; registers the archs, the model and the metric)

torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', min(2, os.cpu_count() or 1))))
