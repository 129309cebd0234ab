"""Networks the command tests share, each saved once per test module: a random tiny ASID x2 (``model_file``) and one
whose output is its input repeated 2 x 2 (``nearest_file``: results checkable pixel by pixel)."""
from __future__ import annotations

import pytest
import torch

from asid_arch import ASID


@pytest.fixture(scope='module')
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp('model') / 'model.pth'
    torch.save({'params': ASID(upscale=2, num_feat=16, num_blocks=1).state_dict()}, path)
    return path


@pytest.fixture(scope='module')
def nearest_file(tmp_path_factory):
    """An ASID x2 whose output is its input repeated 2 x 2 (nearest neighbour)."""
    net = ASID(upscale=2, num_feat=16, num_blocks=1)
    with torch.no_grad():
        for conv in (net.conv_first, net.conv_after_body, net.upsampler[0]):
            conv.weight.zero_()
            conv.bias.zero_()
        for c in range(3):
            net.conv_first.weight[c, c, 1, 1] = 1  # feature c = colour c; the body's output is multiplied by 0
            net.upsampler[0].weight[4 * c:4 * c + 4, c, 1, 1] = 1  # the 2 x 2 sub-pixels of colour c
    path = tmp_path_factory.mktemp('nearest') / 'nearest.pth'
    torch.save({'params': net.state_dict()}, path)
    return path
