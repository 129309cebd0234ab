"""Omni-SR: reference equality, parameter counts, released key layout."""
from __future__ import annotations

import pytest
import torch

from asid_arch.archs.omnisr_arch import OmniSR, omnisr_state_dict_from_reference, omnisr_state_dict_to_reference

from helpers import read_reference_keys, shared_path


@pytest.mark.slow
def test_golden_omnisr_x4():
    golden = torch.load(shared_path('golden', 'omnisr_x4.pt'), weights_only=True)
    net = OmniSR(upscale=golden['scale'], num_feat=golden['num_feat'], num_groups=golden['num_blocks'])
    net = net.double().eval()
    net.load_state_dict(golden['state_dict'])
    lr = golden['input'].clone().requires_grad_(True)
    out = net(lr)
    assert (out - golden['output']).abs().max().item() < 1e-8
    (out * golden['grad_weight']).sum().backward()
    assert (lr.grad - golden['grad_input']).abs().max().item() < 1e-8


@pytest.mark.parametrize('scale,count', [(2, 784_604), (3, 793_259), (4, 805_376)])
def test_parameter_counts(scale, count):
    assert sum(p.numel() for p in OmniSR(upscale=scale).parameters()) == count


def test_released_key_layout():
    reference = read_reference_keys(shared_path('golden', 'reference_keys_omnisr_x4.txt'))
    ours = OmniSR(upscale=4).state_dict()
    as_reference = omnisr_state_dict_to_reference(ours)
    assert {k: tuple(v.shape) for k, v in as_reference.items()} == reference
    assert list(omnisr_state_dict_from_reference(as_reference)) == list(ours)


def test_any_size_and_build_from_options():
    from basicsr.archs import build_network

    net = build_network({'type': 'OmniSR', 'upscale': 2, 'num_feat': 16, 'num_groups': 1}).eval()
    with torch.no_grad():
        for size in ((5, 7), (16, 16), (19, 30)):
            assert net(torch.rand(1, 3, *size)).shape == (1, 3, size[0] * 2, size[1] * 2)
