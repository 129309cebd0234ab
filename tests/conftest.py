"""Shared fixtures: where ../shared lives, and helpers to skip cleanly when it is absent."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import asid_arch  # noqa: F401  (installs the torchvision alias and registers the archs)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get('ASID_SHARED', REPO.parent / 'shared'))
GOLDEN = SHARED / 'golden'
DATASETS = SHARED / 'datasets'

torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', min(2, os.cpu_count() or 1))))


def shared_path(*parts: str) -> Path:
    """Path under ../shared, or skip the test with the reason when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f'{path} is absent (set ASID_SHARED to the shared folder to run this test)')
    return path


def read_reference_keys(path: Path) -> dict:
    """``reference_keys_*.txt``: ``name<TAB>(shape)`` lines -> {name: shape tuple}."""
    keys = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith('#'):
            name, shape = line.split('\t')
            keys[name] = tuple(int(v) for v in shape.strip('()').split(',') if v.strip())
    return keys
