"""A network from weights (asid_arch.from_weights): the key layouts, clear errors, and every hyper-parameter read
back from saved weights (a sweep in the manner of spandrel's architecture tests)."""
from __future__ import annotations

import itertools

import pytest
import torch

from asid_arch import ASID, state_dict_to_reference
from asid_arch.archs.asid_arch import WINDOW_SIZE
from asid_arch.archs.asid_layouts import TEMPERATURE_KEY
from asid_arch.from_weights import detect_config, network_from_file, state_dict_from_file
from asid_arch.utils.asid_errors import PretrainedWeightsError

SCALES = (1, 2, 3, 4)
CHANNELS = ((3, 3), (1, 1), (1, 3), (3, 1), (4, 4))  # (in, out): out is read as in, 3 or 1 (or in == out)
WIDTHS = (16, 20, 24)  # num_feat: multiples of 4 (48, the released width, in the layout tests)
DEPTHS = (1, 2, 3)  # num_blocks
WINDOWS = (4, 8, 6)  # window_size
VARIANTS = ((True, 'temperature'), (False, 'temperature'), (False, 'sdpa'), (True, 'sdpa'))


def sweep():
    """Every scale with every (in, out) pair; width, depth and window cycled through them (20 networks)."""
    for i, (scale, (num_in, num_out)) in enumerate(itertools.product(SCALES, CHANNELS)):
        yield dict(upscale=scale, num_in_ch=num_in, num_out_ch=num_out, num_feat=WIDTHS[i % len(WIDTHS)],
                   num_blocks=DEPTHS[i % len(DEPTHS)], window_size=WINDOWS[(i // len(DEPTHS)) % len(WINDOWS)])


def trained(net: ASID, channel_attention: str, seed: int) -> dict:
    """``net``'s weights moved off their initial values as training would: all of them, but the channel
    temperatures of an ``sdpa`` network (that mode never reads, so never trains, them)."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in net.state_dict().items():
        untouched = channel_attention == 'sdpa' and TEMPERATURE_KEY.match(key)
        if value.is_floating_point() and not untouched:
            value = value + 0.01 * torch.randn(value.shape, generator=generator, dtype=value.dtype)
        state[key] = value
    return state


@pytest.mark.parametrize('position_bias,channel_attention', VARIANTS)
def test_every_hyper_parameter_is_read_back_from_saved_weights(tmp_path, position_bias, channel_attention):
    for seed, shape in enumerate(sweep()):
        net = ASID(**shape, position_bias=position_bias, channel_attention=channel_attention)
        state = trained(net, channel_attention, seed)
        net.load_state_dict(state)
        path = tmp_path / f'{seed}.pth'
        torch.save({'params': state_dict_to_reference(state)}, path)  # the released layout, BasicSR's wrapper
        loaded, config = network_from_file(path)
        window = shape['window_size'] if position_bias else WINDOW_SIZE  # no bias tables: the paper's assumed
        assert {k: getattr(config, k) for k in shape} == dict(shape, window_size=window), shape
        assert config.position_bias == position_bias, shape
        if position_bias and channel_attention == 'sdpa':  # bias tables and temperatures of 1.0: ambiguous
            assert config.channel_attention == 'temperature' and 'sdpa' in config.note, shape
            loaded, config = network_from_file(path, 'sdpa')  # stated by the user
        assert config.channel_attention == channel_attention, shape
        if window == shape['window_size']:
            x = torch.rand(1, shape['num_in_ch'], 13, 11)
            with torch.no_grad():
                assert torch.equal(loaded(x), net.eval()(x)), shape


@pytest.mark.slow
@pytest.mark.parametrize('layout', ['ours', 'params', 'params_ema', 'released', 'ddp'])
def test_checkpoint_layouts_detected(tmp_path, layout):
    net = ASID(upscale=3, num_blocks=8)
    sd = net.state_dict()
    content = {'ours': sd, 'params': {'params': sd}, 'params_ema': {'params_ema': sd, 'params': {}},
               'released': state_dict_to_reference(sd), 'ddp': {f'module.{k}': v for k, v in sd.items()}}[layout]
    torch.save(content, tmp_path / 'ckpt.pth')
    loaded, config = network_from_file(tmp_path / 'ckpt.pth')
    assert (config.variant, config.upscale, config.num_feat, config.window_size) == ('ASID-D8', 3, 48, 8)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x), net.eval()(x))


def test_unusable_checkpoints_have_clear_errors(tmp_path):
    torch.save({'weight': torch.zeros(3)}, tmp_path / 'other.pth')
    with pytest.raises(PretrainedWeightsError, match='does not look like ASID'):
        detect_config(state_dict_from_file(tmp_path / 'other.pth'))
    (tmp_path / 'trunc.pth').write_bytes(b'PK\x03\x04 truncated')
    with pytest.raises(PretrainedWeightsError, match='not a readable PyTorch checkpoint'):
        state_dict_from_file(tmp_path / 'trunc.pth')
    with pytest.raises(PretrainedWeightsError, match='no such file'):
        state_dict_from_file(tmp_path / 'missing.pth')
