"""Equality with the reference implementation: every golden file, float64, eval mode, 1e-8."""
from __future__ import annotations

import pytest
import torch

from asid_arch import ASID, tile_forward

from conftest import GOLDEN, shared_path

TOL = 1e-8
GOLDEN_FILES = sorted(p.name for p in GOLDEN.glob('asid*.pt')) if GOLDEN.exists() else ['asid_x2.pt']


@pytest.mark.parametrize('name', GOLDEN_FILES)
def test_golden_output_and_grad(name):
    golden = torch.load(shared_path('golden', name), weights_only=True)
    net = ASID(upscale=golden['scale'], num_feat=golden['num_feat'], num_blocks=golden['num_blocks'])
    net = net.double().eval()
    net.load_state_dict(golden['state_dict'])  # released key layout, strict
    lr = golden['input'].clone().requires_grad_(True)
    if 'tile' in golden:
        out = tile_forward(net, lr, golden['scale'], tile=golden['tile'], overlap=golden['tile_overlap'])
    else:
        out = net(lr)
    assert out.shape == golden['output'].shape
    assert (out - golden['output']).abs().max().item() < TOL
    if 'grad_input' in golden:
        (out * golden['grad_weight']).sum().backward()
        assert (lr.grad - golden['grad_input']).abs().max().item() < TOL


def test_golden_files_present():
    """The golden set this suite was written for is all there (guards against silently skipping)."""
    shared_path('golden')
    assert {'asid_x2.pt', 'asid_d8_x3.pt', 'asid_x4_tiled.pt'} <= set(GOLDEN_FILES)
