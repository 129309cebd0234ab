"""ASID architecture: sizes, parameter counts, checkpoint layouts, ablations, BasicSR integration."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import yaml

from asid_arch import ASID, asid, asid_d8, state_dict_from_reference, state_dict_to_reference
from asid_arch.archs.asid_arch import SpatialAttention, attention_sources

from helpers import read_reference_keys, shared_path

PARAMS = {('ASID', 2): 297_516, ('ASID', 3): 304_011, ('ASID', 4): 313_104,
          ('ASID-D8', 2): 732_146, ('ASID-D8', 3): 738_641, ('ASID-D8', 4): 747_734}


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize('variant,scale', sorted(PARAMS))
def test_parameter_counts(variant, scale):
    net = (asid if variant == 'ASID' else asid_d8)(scale)
    assert n_params(net) == PARAMS[variant, scale]
    assert n_params(ASID(upscale=scale, num_blocks=3 if variant == 'ASID' else 8)) == PARAMS[variant, scale]


@pytest.mark.parametrize('keys_file,scale,blocks', [('reference_keys_asid_x2.txt', 2, 3),
                                                    ('reference_keys_asid_d8_x4.txt', 4, 8)])
def test_key_layout_matches_released_checkpoints(keys_file, scale, blocks):
    reference = read_reference_keys(shared_path('golden', keys_file))
    ours = ASID(upscale=scale, num_blocks=blocks).state_dict()
    as_reference = state_dict_to_reference(ours)
    assert {k: tuple(v.shape) for k, v in as_reference.items()} == reference
    assert set(state_dict_from_reference(as_reference)) == set(ours)


def test_key_mapping_both_ways_without_shared():
    ours = ASID(upscale=3, num_blocks=4).state_dict()
    ref = state_dict_to_reference(ours)
    expected = {
        'blocks.0.sam_meso1.attn.qkv.weight': 'block0.residual_layer.0.SLA1.attn.to_qkv.weight',
        'blocks.0.sam_global3.attn.rel_pos_bias_table': 'block0.residual_layer.0.SGA3.attn.rel_pos_bias.weight',
        'blocks.2.sam_global2.attn.v.weight': 'block2.residual_layer.SGA2.attn.to_v.weight',
        'blocks.1.lm2.se.fc1.weight': 'block1.residual_layer.LB2.net.fn.4.gate.1.weight',
        'blocks.1.cam.grid.attn.proj.weight': 'block1.residual_layer.BlockC.cttn2.project_out.weight',
        'blocks.3.cam.grid.norm_ffn.bias': 'block3.residual_layer.BlockC.cnorm2.bias',
        'blocks.0.conv_out.weight': 'block0.res_end.weight',
        'blocks.3.esa.skip.bias': 'block3.esa.conv_f.bias',
        'conv_first.weight': 'input.weight',
        'upsampler.0.bias': 'up.0.bias',
    }
    for our_key, ref_key in expected.items():
        assert ref_key in ref and ref[ref_key] is ours[our_key]
    back = state_dict_from_reference(ref)
    assert list(back) == list(ours) and all(back[k] is ours[k] for k in ours)


def test_both_layouts_load_to_the_same_network():
    torch.manual_seed(0)
    src = ASID(upscale=2).eval()
    x = torch.rand(1, 3, 20, 28)
    for layout in (src.state_dict(), state_dict_to_reference(src.state_dict())):
        dst = ASID(upscale=2).eval()
        dst.load_state_dict(layout)
        assert torch.equal(dst(x), src(x))


@pytest.mark.parametrize('convert', [False, True])
def test_strict_loading_names_the_key(convert):
    net = ASID(upscale=2)
    sd = net.state_dict()
    sd = state_dict_to_reference(sd) if convert else dict(sd)
    missing = next(iter(sd))
    sd.pop(missing)
    sd[('block0.residual_layer.0.bogus.weight' if convert else 'blocks.0.bogus.weight')] = torch.zeros(1)
    with pytest.raises(RuntimeError) as err:
        ASID(upscale=2).load_state_dict(sd)
    message = str(err.value)
    assert 'bogus' in message
    assert (missing if not convert else state_dict_from_reference({missing: None}).popitem()[0]) in message


def test_basicsr_load_network_all_layouts(tmp_path):
    """``pretrain_network_g`` with ``param_key_g: ~`` (released files), ``params`` and ``params_ema``."""
    from basicsr.models.base_model import BaseModel

    torch.manual_seed(1)
    src = ASID(upscale=2).eval()
    x = torch.rand(1, 3, 16, 16)
    loader = BaseModel.__new__(BaseModel)
    files = {
        'released.pth': (state_dict_to_reference(src.state_dict()), None),
        'basicsr.pth': ({'params': src.state_dict()}, 'params'),
        'basicsr_ema.pth': ({'params_ema': src.state_dict(), 'params': {}}, 'params_ema'),
    }
    for name, (content, param_key) in files.items():
        torch.save(content, tmp_path / name)
        dst = ASID(upscale=2).eval()
        loader.load_network(dst, str(tmp_path / name), strict=True, param_key=param_key)
        assert torch.equal(dst(x), src(x)), name


@pytest.mark.parametrize('size', [(1, 1), (3, 5), (8, 8), (9, 15), (16, 16), (17, 23), (37, 45), (8, 40)])
@pytest.mark.parametrize('scale', [2, 3, 4])
def test_any_input_size(size, scale):
    net = ASID(upscale=scale).eval()
    with torch.no_grad():
        out = net(torch.rand(1, 3, *size))
    assert out.shape == (1, 3, size[0] * scale, size[1] * scale)
    assert torch.isfinite(out).all()


def test_padding_rule():
    """Zero padding to a multiple of 8 (the reference) where that gives >= 16 px; edge padding below."""
    net = ASID(upscale=2)
    x = torch.rand(1, 3, 12, 21)
    assert torch.equal(net.pad(x), F.pad(x, (0, 3, 0, 4)))  # 16 x 24, zeros as the reference
    tiny = torch.rand(1, 3, 5, 30)
    padded = net.pad(tiny)
    assert padded.shape == (1, 3, 16, 32)
    assert torch.equal(padded[:, :, 5:, :30], tiny[:, :, 4:5, :].expand(-1, -1, 11, -1))  # edge rows
    assert torch.count_nonzero(padded[..., 30:]) == 0  # width: zeros, as the reference


def test_batch_equals_single_images():
    torch.manual_seed(0)
    net = ASID(upscale=3).double().eval()
    x = torch.rand(3, 3, 19, 26, dtype=torch.float64)
    with torch.no_grad():
        batched = net(x)
        single = torch.cat([net(x[i:i + 1]) for i in range(3)])
    assert (batched - single).abs().max().item() < 1e-12


@pytest.mark.parametrize('blocks', [3, 8])
def test_gradients_reach_every_parameter(blocks):
    torch.manual_seed(0)
    net = ASID(upscale=2, num_blocks=blocks).train()
    net(torch.rand(2, 3, 24, 24)).abs().mean().backward()
    dead = [name for name, p in net.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert dead == []


def test_build_network_from_yaml():
    from basicsr.archs import build_network

    opt = yaml.safe_load('network_g: {type: ASID, upscale: 4, num_blocks: 8}')
    net = build_network(opt['network_g'])
    assert isinstance(net, ASID) and n_params(net) == PARAMS['ASID-D8', 4]


def test_attention_sharing_schedules():
    assert attention_sources(3, 'across') == [[None] * 6, list(range(6)), list(range(6))]
    assert attention_sources(2, 'intra') == [[None, None, 0, 1, 0, 1], [None, None, 2, 3, 2, 3]]
    assert attention_sources(2, 'none') == [[None] * 6] * 2

    def computing(net):
        return sum(m.compute for m in net.modules() if isinstance(m, SpatialAttention))

    assert computing(ASID(num_blocks=3)) == 6
    assert computing(ASID(num_blocks=3, attn_sharing='intra')) == 6
    assert computing(ASID(num_blocks=3, attn_sharing='none')) == 18


def test_shared_attention_is_reused():
    """A sharing SAM multiplies its values by the attention of the SAM at its position in IDB 0."""
    torch.manual_seed(0)
    net = ASID(upscale=2, num_blocks=2).double().eval()
    seen = {}

    def record(name):
        def hook(module, args, output):
            seen[name] = output[1]
        return hook

    net.blocks[0].sam_global2.attn.register_forward_hook(record('computed'))
    net.blocks[1].sam_global2.attn.register_forward_hook(record('shared'))
    net(torch.rand(1, 3, 16, 24, dtype=torch.float64))
    assert seen['shared'] is seen['computed']
    assert seen['computed'].shape == (6, 1, 64, 64)  # 1 x (16/8 * 24/8) grid groups, one head


ABLATIONS = {
    # (attn_sharing, channel_split, distillation): parameters at x2 with 3 IDBs
    ('across', True, True): 297_516,  # ASID
    ('intra', True, True): 305_004,
    ('none', True, True): 316_344,
    ('across', False, True): 375_708,
    ('across', True, False): 477_192,  # serial LM, SAM, CAM baseline
}


@pytest.mark.parametrize('config', sorted(ABLATIONS))
def test_ablation_configurations(config):
    sharing, split, distill = config
    net = ASID(upscale=2, attn_sharing=sharing, channel_split=split, distillation=distill).eval()
    assert n_params(net) == ABLATIONS[config]
    with torch.no_grad():
        assert net(torch.rand(1, 3, 20, 20)).shape == (1, 3, 40, 40)


@pytest.mark.parametrize('kwargs,match', [({'num_feat': 50}, 'num_feat'), ({'attn_sharing': 'all'}, 'attn_sharing'),
                                          ({'upscale': 0}, 'upscale'), ({'num_blocks': 0}, 'num_blocks')])
def test_bad_arguments_are_clear(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ASID(**kwargs)


def test_bad_inputs_get_clear_errors():
    net = ASID(num_feat=16, num_blocks=1)
    with pytest.raises(ValueError, match=r'\(B, 3, H, W\) tensor, got shape \(3, 16, 16\)'):
        net(torch.rand(3, 16, 16))
    with pytest.raises(ValueError, match=r'\(B, 3, H, W\) tensor, got shape \(1, 4, 16, 16\)'):
        net(torch.rand(1, 4, 16, 16))
    with pytest.raises(TypeError, match=r'floating-point .* got torch.uint8 .* x.float\(\) / 255'):
        net(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match='empty input of shape \\(1, 3, 0, 16\\)'):
        net(torch.rand(1, 3, 0, 16))
    with pytest.raises(TypeError, match='expects a torch.Tensor'):
        net([[0.5]])
