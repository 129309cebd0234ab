"""neosr-trained ASID: its two variants (no position bias; SDPA channel attention), detection from the
weights, asid-sr / asid-export / pretrain_network_g on neosr checkpoints, and spandrel loading."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from asid_arch import ASID
from asid_arch.archs.asid_layouts import detect_variant, state_dict_to_reference
from asid_arch.cli.sr import main as asid_sr
from asid_arch.from_weights import network_from_file
from asid_arch.utils.asid_weights_loading import match_weights

from helpers import shared_path, synthetic_image

TOL = 1e-8
NEOSR_FILES = ['neosr_asid_x2_default.pt', 'neosr_asid_d8_x3_pe_noflash.pt', 'neosr_asid_x4_noflash_nope.pt']
NEOSR_OPTIONS = {  # neosr's flags -> ASID options
    (False, True): {'position_bias': False, 'channel_attention': 'sdpa'},
    (True, False): {'position_bias': True, 'channel_attention': 'temperature'},
    (False, False): {'position_bias': False, 'channel_attention': 'temperature'},
}


def golden(name: str) -> dict:
    return torch.load(shared_path('golden', name), weights_only=True)


def options_of(g: dict) -> dict:
    return NEOSR_OPTIONS[(g['neosr_kwargs']['pe'], g['neosr_kwargs']['flash_attn'])]


def build(g: dict, **variant) -> ASID:
    return ASID(upscale=g['scale'], num_feat=g['num_feat'], num_blocks=g['num_blocks'], **variant).double().eval()


@pytest.mark.slow
@pytest.mark.parametrize('name', NEOSR_FILES)
def test_neosr_golden_output_and_grad(name):
    g = golden(name)
    net = build(g, **options_of(g))
    net.load_state_dict(g['state_dict'])  # neosr's own state dict, strict
    for x_key, y_key in (('input', 'output'), ('input2', 'output2')):
        if x_key not in g:
            continue
        lr = g[x_key].clone().requires_grad_(True)
        out = net(lr)
        assert (out - g[y_key]).abs().max().item() < TOL, x_key
        if x_key == 'input' and 'grad_input' in g:
            (out * g['grad_weight']).sum().backward()
            assert (lr.grad - g['grad_input']).abs().max().item() < TOL


def test_sdpa_scale_depends_on_the_image_size():
    """The default neosr file: both sizes need their own grid scale; a learned-temperature network with
    any fixed temperature cannot match both (the check that the variant is really computed)."""
    g = golden('neosr_asid_x2_default.pt')
    wrong = build(g, position_bias=False, channel_attention='temperature')
    wrong.load_state_dict(g['state_dict'])
    with torch.no_grad():
        assert (wrong(g['input']) - g['output']).abs().max().item() > 1e-4


def test_sdpa_channel_attention_trains_only_its_projection():
    """As in neosr: no gradient reaches qkv, its depth-wise conv, the temperature or the norm before it."""
    torch.manual_seed(0)
    net = ASID(upscale=2, num_feat=16, num_blocks=1, position_bias=False, channel_attention='sdpa')
    net(torch.rand(1, 3, 16, 16)).sum().backward()
    cam = net.blocks[0].cam.meso
    assert cam.attn.qkv.weight.grad is None and cam.attn.temperature.grad is None
    assert cam.norm_attn.weight.grad is None
    assert cam.attn.proj.weight.grad is not None and cam.ffn.project_in.weight.grad is not None


@pytest.mark.parametrize('name', NEOSR_FILES)
def test_variant_detected_from_weights(name):
    g = golden(name)
    expected = options_of(g)
    if expected == {'position_bias': True, 'channel_attention': 'temperature'}:
        assert detect_variant(g['state_dict']) == expected
    else:  # pe=False files are recognised in both layouts
        assert detect_variant(g['state_dict']) == expected
        assert detect_variant(ASID.convert_state_dict(g['state_dict'])) == expected


def test_untrained_temperatures_with_bias_tables_stay_the_paper_variant():
    net = ASID(upscale=2, num_feat=16, num_blocks=1)  # temperatures exactly 1.0, tables present
    assert detect_variant(net.state_dict()) == {'position_bias': True, 'channel_attention': 'temperature'}
    assert detect_variant(state_dict_to_reference(net.state_dict()))['channel_attention'] == 'temperature'


def test_pretrain_hint_names_the_neosr_options():
    g = golden('neosr_asid_x2_default.pt')
    problems = match_weights(ASID(upscale=2), ASID.convert_state_dict(g['state_dict']), 'neosr.pth')
    assert any('position_bias: false' in p and 'channel_attention: sdpa' in p for p in problems), problems


def neosr_checkpoint(tmp_path, name: str):
    g = golden(name)
    path = tmp_path / 'neosr.pth'
    torch.save({'params': {k: v.float() for k, v in g['state_dict'].items()}}, path)  # neosr's format
    return g, path


def test_asid_sr_on_a_neosr_checkpoint(tmp_path, capsys):
    g, path = neosr_checkpoint(tmp_path, 'neosr_asid_x2_default.pt')
    rgb = synthetic_image(37, 45, 3)[:, :, ::-1]
    cv2.imwrite(str(tmp_path / 'in.png'), rgb[:, :, ::-1])
    assert asid_sr([str(tmp_path / 'in.png'), '-o', str(tmp_path / 'out'), '-m', str(path)]) == 0
    err = capsys.readouterr().err
    assert 'neosr defaults (no position bias, SDPA channel attention)' in err, err
    net = build(g, **options_of(g)).float()
    net.load_state_dict(g['state_dict'])
    with torch.no_grad():
        expected = net(torch.from_numpy(rgb.transpose(2, 0, 1).copy()).float()[None] / 255)
    expected = (expected[0].clamp(0, 1) * 255).round().byte().numpy().transpose(1, 2, 0)
    got = cv2.imread(str(tmp_path / 'out' / 'in_x2.png'))[:, :, ::-1]
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


def test_channel_attention_flag_overrides_the_weights(tmp_path, capsys):
    torch.manual_seed(0)
    net = ASID(upscale=2, num_feat=16, num_blocks=1)  # tables present, temperatures 1.0: ambiguous
    torch.save({'params': net.state_dict()}, tmp_path / 'm.pth')
    _, config = network_from_file(tmp_path / 'm.pth')
    assert config.channel_attention == 'temperature' and 'state the channel attention as sdpa' in config.note
    _, config = network_from_file(tmp_path / 'm.pth', 'sdpa')
    assert config.channel_attention == 'sdpa' and config.position_bias
    cv2.imwrite(str(tmp_path / 'in.png'), synthetic_image(20, 24, 1))
    assert asid_sr([str(tmp_path / 'in.png'), '-o', str(tmp_path / 'o'), '-m', str(tmp_path / 'm.pth')]) == 0
    assert '--channel-attention sdpa' in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# spandrel
# ----------------------------------------------------------------------------------------------
@pytest.fixture()
def spandrel_loader():
    spandrel = pytest.importorskip('spandrel', reason='the optional extra asid_arch[spandrel] is not installed')
    import asid_arch.integrations.spandrel

    asid_arch.integrations.spandrel.install()
    return spandrel.ModelLoader()


def layouts(net: ASID) -> dict:
    """Every checkpoint layout users have: authors' release, BasicSR, this package, neosr."""
    state = net.state_dict()
    return {'released': state_dict_to_reference(state), 'basicsr': {'params_ema': state, 'params': state},
            'package': state, 'neosr': {'params': state_dict_to_reference(state)}}


@pytest.mark.slow
@pytest.mark.parametrize('blocks,scale', [(3, 2), (8, 3)], ids=['ASID-x2', 'ASID-D8-x3'])
def test_spandrel_loads_every_layout(spandrel_loader, tmp_path, blocks, scale):
    torch.manual_seed(blocks)
    net = ASID(upscale=scale, num_blocks=blocks).eval()
    x = torch.rand(1, 3, 20, 27)
    with torch.no_grad():
        expected = net(x).clamp(0, 1)
    for name, content in layouts(net).items():
        torch.save(content, tmp_path / f'{name}.pth')
        model = spandrel_loader.load_from_file(tmp_path / f'{name}.pth')
        assert model.architecture.id == 'ASID' and model.scale == scale, name
        assert f'{blocks}idb' in model.tags
        assert (model(x) - expected).abs().max().item() < 1e-5, name


@pytest.mark.slow
def test_spandrel_loads_neosr_golden_variants(spandrel_loader, tmp_path):
    for name in NEOSR_FILES:
        g, path = neosr_checkpoint(tmp_path, name)
        model = spandrel_loader.load_from_file(path)
        assert model.scale == g['scale']
        assert ('sdpa-ca' in model.tags) == g['neosr_kwargs']['flash_attn'], name
        assert ('no-pe' in model.tags) == (not g['neosr_kwargs']['pe']), name
        got = model(g['input'].float()).double()
        assert (got - g['output'].clamp(0, 1)).abs().max().item() < 1e-5, name


def test_spandrel_loads_the_package_omnisr_keys(spandrel_loader, tmp_path):
    from asid_arch.archs.omnisr_arch import OmniSR

    torch.manual_seed(0)
    net = OmniSR(upscale=4).eval()
    torch.save({'params': net.state_dict()}, tmp_path / 'omni.pth')
    model = spandrel_loader.load_from_file(tmp_path / 'omni.pth')
    assert model.scale == 4
    x = torch.rand(1, 3, 20, 28)
    with torch.no_grad():
        assert (model(x) - net(x).clamp(0, 1)).abs().max().item() < 1e-5


def test_spandrel_install_is_idempotent(spandrel_loader):
    import asid_arch.integrations.spandrel

    assert asid_arch.integrations.spandrel.install() == []


def test_neosr_finetune_option_file(tmp_path):
    """options/train/ASID/train_ASID_SRx2_finetune_neosr.yml: its network loads a neosr default-trained
    checkpoint strictly (the option check passes) and reproduces neosr's output."""
    import yaml

    from asid_arch.pipeline.options_files import _check_pretrained

    from helpers import REPO

    opt = yaml.safe_load((REPO / 'options' / 'train' / 'ASID' / 'train_ASID_SRx2_finetune_neosr.yml').read_text())
    g, path = neosr_checkpoint(tmp_path, 'neosr_asid_x2_default.pt')
    opt['path']['pretrain_network_g'] = str(path)
    problems: list = []
    _check_pretrained(opt, problems)
    assert problems == []
    net_opt = dict(opt['network_g'])
    net = ASID(**{k: v for k, v in net_opt.items() if k != 'type'}).double().eval()
    net.load_state_dict(g['state_dict'])
    with torch.no_grad():
        assert (net(g['input']) - g['output']).abs().max().item() < TOL


@pytest.mark.parametrize('name', NEOSR_FILES)
def test_auto_variant_options_follow_the_pretrained_weights(tmp_path, name):
    """network_g: position_bias/channel_attention: auto -> what pretrain_network_g's weights tell, so the
    strict load and the option check pass for every neosr variant."""
    from asid_arch.archs.asid_layouts import resolve_variant_options
    from asid_arch.pipeline.options_files import _check_pretrained

    g, path = neosr_checkpoint(tmp_path, name)
    opt = {'network_g': {'type': 'ASID', 'upscale': g['scale'], 'num_blocks': g['num_blocks'],
                         'position_bias': 'auto', 'channel_attention': 'auto'},
           'path': {'pretrain_network_g': str(path), 'param_key_g': 'params', 'strict_load_g': True}}
    assert 'read off' in resolve_variant_options(opt)
    assert {k: opt['network_g'][k] for k in ('position_bias', 'channel_attention')} == options_of(g)
    problems: list = []
    _check_pretrained(opt, problems)
    assert problems == []


def test_auto_without_pretrained_weights_is_the_paper_and_plain_asid_refuses_it():
    from asid_arch.archs.asid_layouts import resolve_variant_options

    opt = {'network_g': {'type': 'ASID', 'position_bias': 'auto', 'channel_attention': 'auto'}, 'path': {}}
    resolve_variant_options(opt)
    assert opt['network_g']['position_bias'] is True and opt['network_g']['channel_attention'] == 'temperature'
    with pytest.raises(ValueError, match='needs model_type: ASIDModel'):
        ASID(position_bias='auto')


@pytest.mark.slow
def test_finetune_a_neosr_checkpoint_through_the_pipeline(tmp_path):
    """asid-train with network_g: ... auto and a neosr default-trained checkpoint: loads strictly, trains,
    and says which variant it built."""
    from helpers import make_tiny_data, run_module, tiny_train_options, write_yaml

    data = make_tiny_data(tmp_path / 'data', train_images=2, val_images=1)
    _, path = neosr_checkpoint(tmp_path, 'neosr_asid_x2_default.pt')
    opt = tiny_train_options('neosr_ft', data / 'train', data / 'valsrc', iters=2,
                             **{'network_g': {'type': 'ASID', 'upscale': 2, 'num_feat': 48, 'num_blocks': 3,
                                              'position_bias': 'auto', 'channel_attention': 'auto'},
                                'path.pretrain_network_g': str(path), 'path.param_key_g': 'params'})
    run = run_module('asid_arch.cli.train', ['-opt', str(write_yaml(tmp_path / 'ft.yml', opt))], tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert 'position_bias: False, channel_attention: sdpa (read off' in run.stderr
    assert (tmp_path / 'experiments' / 'neosr_ft' / 'models' / 'net_g_2.pth').exists()
