"""Shared fixtures: where ../shared lives, and helpers that skip cleanly when it is absent.

Outside CI a test that needs the reference data skips with the reason when ``../shared`` (or the
folder ``ASID_SHARED`` names) lacks it. In CI (``ASID_REQUIRE_SHARED=1``, set by ``.ci/run``) the same
test fails instead: the reference checks can never pass by skipping.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import asid_arch.models  # noqa: F401  (installs the torchvision alias; registers the archs, the model and the metric)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get('ASID_SHARED', REPO.parent / 'shared'))
GOLDEN = SHARED / 'golden'
DATASETS = SHARED / 'datasets'
REQUIRE_SHARED = os.environ.get('ASID_REQUIRE_SHARED', '') not in ('', '0')
# every reference file the suite reads: the guard test (test_golden.py) and .ci/run check this list
GOLDEN_FILES = ('asid_x2.pt', 'asid_d8_x3.pt', 'asid_x4_tiled.pt', 'neosr_asid_x2_default.pt',
                'neosr_asid_d8_x3_pe_noflash.pt', 'neosr_asid_x4_noflash_nope.pt', 'omnisr_x4.pt',
                'reference_keys_asid_x2.txt', 'reference_keys_asid_d8_x4.txt', 'reference_keys_omnisr_x4.txt')

torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', min(2, os.cpu_count() or 1))))


def shared_path(*parts: str) -> Path:
    """Path under ../shared; when it is absent, skip the test with the reason (fail it in CI)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        reason = f'{path} is absent (set ASID_SHARED to the shared folder to run this test)'
        if REQUIRE_SHARED:
            pytest.fail(f'{reason}; ASID_REQUIRE_SHARED is set, so the reference data is required')
        pytest.skip(reason)
    return path


def read_reference_keys(path: Path) -> dict:
    """``reference_keys_*.txt``: ``name<TAB>(shape)`` lines -> {name: shape tuple}."""
    keys = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith('#'):
            name, shape = line.split('\t')
            keys[name] = tuple(int(v) for v in shape.strip('()').split(',') if v.strip())
    return keys
