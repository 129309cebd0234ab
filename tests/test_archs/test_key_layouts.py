"""Checkpoint key layouts checked by value, without the reference data.

The expected released name of every parameter is written out here, module by module, independently of
the package's own rename tables (the released checkpoints' key lists are the source).
Each test fills every tensor of one layout with its own value, loads it through the package's route
(``load_state_dict``, the converters, spandrel) and checks that every parameter received the value of
the name this file expects: a swapped pair with equal shapes (ESA's ``conv2``/``conv3``, say) fails.
With ``../shared`` present, the names are also checked against the released key lists.
"""
from __future__ import annotations

from typing import Dict

import pytest
import torch

from asid_arch import ASID
from asid_arch.archs.asid_layouts import state_dict_to_reference
from asid_arch.archs.omnisr_arch import OmniSR, omnisr_state_dict_from_reference, omnisr_state_dict_to_reference

from helpers import read_reference_keys, shared_path

# ------------------------------------------------------------------------------------------------
# The expected names (project name part -> released name part)
# ------------------------------------------------------------------------------------------------
TOP = {'conv_first.weight': 'input.weight', 'conv_first.bias': 'input.bias',
       'conv_after_body.weight': 'output.weight', 'conv_after_body.bias': 'output.bias',
       'upsampler.0.weight': 'up.0.weight', 'upsampler.0.bias': 'up.0.bias'}
LOCAL_MODULE = {'conv_in.weight': 'fn.0.weight', 'conv_in.bias': 'fn.0.bias',
                'dwconv.weight': 'fn.2.weight', 'dwconv.bias': 'fn.2.bias',
                'se.fc1.weight': 'fn.4.gate.1.weight', 'se.fc2.weight': 'fn.4.gate.3.weight',
                'conv_out.weight': 'fn.5.weight', 'conv_out.bias': 'fn.5.bias'}
ESA = {'squeeze.weight': 'conv1.weight', 'squeeze.bias': 'conv1.bias',
       'skip.weight': 'conv_f.weight', 'skip.bias': 'conv_f.bias',
       'down.weight': 'conv2.weight', 'down.bias': 'conv2.bias',
       'refine.weight': 'conv3.weight', 'refine.bias': 'conv3.bias',
       'expand.weight': 'conv4.weight', 'expand.bias': 'conv4.bias'}
GDFN = {'project_in.weight': 'project_in.weight', 'dwconv.weight': 'dwconv.weight',
        'project_out.weight': 'project_out.weight'}
# ASID's SAM (released SLA/SGA): norm, attention, cnorm, gfn
SAM_COMPUTING = {'norm_attn.weight': 'norm.weight', 'norm_attn.bias': 'norm.bias',
                 'attn.qkv.weight': 'attn.to_qkv.weight', 'attn.proj.weight': 'attn.to_out.0.weight',
                 'attn.rel_pos_bias_table': 'attn.rel_pos_bias.weight',
                 'norm_ffn.weight': 'cnorm.weight', 'norm_ffn.bias': 'cnorm.bias',
                 **{f'ffn.{k}': f'gfn.{v}' for k, v in GDFN.items()}}
SAM_SHARING = {**{k: v for k, v in SAM_COMPUTING.items() if k not in ('attn.qkv.weight', 'attn.rel_pos_bias_table')},
               'attn.v.weight': 'attn.to_v.weight'}
CHANNEL_ATTENTION = {'temperature': 'temperature', 'qkv.weight': 'qkv.weight', 'qkv_dwconv.weight': 'qkv_dwconv.weight',
                     'proj.weight': 'project_out.weight'}


def asid_expected_names(net: ASID) -> Dict[str, str]:
    """{project name: released name} for every tensor of ``net`` (an ASID with attention sharing across IDBs)."""
    expected = dict(TOP)
    for b, block in enumerate(net.blocks):
        body = f'block{b}.residual_layer.0.' if b == 0 else f'block{b}.residual_layer.'
        ours = f'blocks.{b}.'
        for u in (1, 2, 3):
            expected.update({f'{ours}lm{u}.{k}': f'{body}LB{u}.net.{v}' for k, v in LOCAL_MODULE.items()})
            for our_sam, ref_sam in ((f'sam_meso{u}', f'SLA{u}'), (f'sam_global{u}', f'SGA{u}')):
                table = SAM_COMPUTING if getattr(block, our_sam).attn.compute else SAM_SHARING
                expected.update({f'{ours}{our_sam}.{k}': f'{body}{ref_sam}.{v}' for k, v in table.items()})
            expected.update({f'{ours}fuse{u}.{w}': f'{body}pw{u}.{w}' for w in ('weight', 'bias')})
        for k, part in ((1, 'meso'), (2, 'grid')):
            cam = f'{ours}cam.{part}.'
            expected.update({f'{cam}norm_attn.weight': f'{body}BlockC.canorm{k}.weight',
                             f'{cam}norm_attn.bias': f'{body}BlockC.canorm{k}.bias',
                             f'{cam}norm_ffn.weight': f'{body}BlockC.cnorm{k}.weight',
                             f'{cam}norm_ffn.bias': f'{body}BlockC.cnorm{k}.bias'})
            expected.update({f'{cam}attn.{a}': f'{body}BlockC.cttn{k}.{r}' for a, r in CHANNEL_ATTENTION.items()})
            expected.update({f'{cam}ffn.{a}': f'{body}BlockC.gfn{k}.{r}' for a, r in GDFN.items()})
        expected.update({f'{ours}conv_out.{w}': f'block{b}.res_end.{w}' for w in ('weight', 'bias')})
        expected.update({f'{ours}esa.{k}': f'block{b}.esa.{v}' for k, v in ESA.items()})
    own = net.state_dict()
    return {k: v for k, v in expected.items() if k in own or not k.endswith('rel_pos_bias_table')}


# Omni-SR: step i of residual_layer.{g}.residual_layer.0.layer is (module, its part)
OMNISR_STEPS = {0: ('lm', None), 2: ('sam_meso', 'attn'), 4: ('sam_meso', 'ffn'), 5: ('ca_meso', 'attn'),
                6: ('ca_meso', 'ffn'), 8: ('sam_global', 'attn'), 10: ('sam_global', 'ffn'), 11: ('ca_grid', 'attn'),
                12: ('ca_grid', 'ffn')}
SAM_ATTENTION = {'qkv.weight': 'to_qkv.weight', 'proj.weight': 'to_out.0.weight',
                 'rel_pos_bias_table': 'rel_pos_bias.weight'}


def omnisr_expected_names(net: OmniSR) -> Dict[str, str]:
    """{project name: released name} for every tensor of ``net``."""
    expected = dict(TOP)
    for g in range(len(net.groups)):
        ours, ref = f'groups.{g}.', f'residual_layer.{g}.'
        for step, (module, part) in OMNISR_STEPS.items():
            layer = f'{ref}residual_layer.0.layer.{step}.'
            if module == 'lm':
                expected.update({f'{ours}block.lm.{k}': f'{layer}{v}' for k, v in LOCAL_MODULE.items()})
                continue
            norm = 'norm_attn' if part == 'attn' else 'norm_ffn'
            expected.update({f'{ours}block.{module}.{norm}.{w}': f'{layer}norm.{w}' for w in ('weight', 'bias')})
            table = GDFN if part == 'ffn' else SAM_ATTENTION if module.startswith('sam') else CHANNEL_ATTENTION
            expected.update({f'{ours}block.{module}.{part}.{k}': f'{layer}fn.{v}' for k, v in table.items()})
        expected.update({f'{ours}conv_out.weight': f'{ref}residual_layer.1.weight',
                         f'{ours}conv_out.bias': f'{ref}residual_layer.1.bias'})
        expected.update({f'{ours}esa.{k}': f'{ref}esa.{v}' for k, v in ESA.items()})
    return expected


def numbered(names, shapes: Dict[str, torch.Size]) -> Dict[str, torch.Tensor]:
    """A state dict whose i-th tensor is filled with the value i + 1 (every tensor tells where it came from)."""
    return {name: torch.full(shapes[name], float(i + 1)) for i, name in enumerate(names)}


def assert_values(state: Dict[str, torch.Tensor], source: Dict[str, torch.Tensor], mapping: Dict[str, str]) -> None:
    """``state[k]`` holds ``source[mapping[k]]`` for every k of ``mapping``, and nothing is left unchecked."""
    assert set(state) == set(mapping), sorted(set(state) ^ set(mapping))[:10]
    wrong = [k for k, ref in mapping.items() if not torch.equal(state[k], source[ref])]
    assert wrong == [], [(k, mapping[k]) for k in wrong[:10]]


ASID_CONFIGS = [dict(upscale=2, num_blocks=3), dict(upscale=4, num_blocks=8), dict(upscale=3, num_blocks=2)]


@pytest.mark.parametrize('config', ASID_CONFIGS, ids=lambda c: f"x{c['upscale']}-{c['num_blocks']}idb")
def test_released_layout_loads_each_tensor_into_its_parameter(config):
    net = ASID(**config)
    expected = asid_expected_names(net)
    shapes = {expected[k]: v.shape for k, v in net.state_dict().items()}
    released = numbered(sorted(shapes), shapes)
    net.load_state_dict(released)  # strict
    assert_values(net.state_dict(), released, expected)


@pytest.mark.parametrize('config', ASID_CONFIGS, ids=lambda c: f"x{c['upscale']}-{c['num_blocks']}idb")
def test_project_layout_converts_each_tensor_to_its_released_name(config):
    net = ASID(**config)
    expected = asid_expected_names(net)
    ours = numbered(net.state_dict(), {k: v.shape for k, v in net.state_dict().items()})
    released = state_dict_to_reference(ours)
    assert_values({k: released[v] for k, v in expected.items()}, ours, {k: k for k in expected})
    assert set(released) == set(expected.values())


@pytest.mark.parametrize('position_bias', [False, True])
def test_neosr_layout_loads_by_value(position_bias):
    """neosr saves the released layout; with pe=False (its default) the six bias tables are absent."""
    net = ASID(upscale=2, num_blocks=3, position_bias=position_bias, channel_attention='sdpa')
    expected = asid_expected_names(net)
    assert any(k.endswith('rel_pos_bias_table') for k in expected) == position_bias
    shapes = {expected[k]: v.shape for k, v in net.state_dict().items()}
    neosr = numbered(sorted(shapes), shapes)
    net.load_state_dict(neosr)
    assert_values(net.state_dict(), neosr, expected)


@pytest.mark.parametrize('groups', [1, 5])
def test_omnisr_layouts_by_value(groups):
    net = OmniSR(upscale=4, num_groups=groups)
    expected = omnisr_expected_names(net)
    shapes = {expected[k]: v.shape for k, v in net.state_dict().items()}
    released = numbered(sorted(shapes), shapes)
    net.load_state_dict(released)
    assert_values(net.state_dict(), released, expected)
    assert_values(omnisr_state_dict_from_reference(released), released, expected)
    ours = numbered(net.state_dict(), {k: v.shape for k, v in net.state_dict().items()})
    back = omnisr_state_dict_to_reference(ours)
    assert set(back) == set(expected.values())
    assert all(torch.equal(back[ref], ours[k]) for k, ref in expected.items())


def test_spandrel_routes_by_value():
    """spandrel (chaiNNer, ComfyUI): the released ASID layout, and the package's Omni-SR keys handed to
    spandrel's own Omni-SR, put every tensor where this file expects it."""
    pytest.importorskip('spandrel', reason='the optional extra asid_arch[spandrel] is not installed')
    from spandrel import ModelLoader

    import asid_arch.integrations.spandrel

    asid_arch.integrations.spandrel.install()
    net = ASID(upscale=2, num_blocks=3)
    expected = asid_expected_names(net)
    shapes = {expected[k]: v.shape for k, v in net.state_dict().items()}
    released = numbered(sorted(shapes), shapes)
    model = ModelLoader().load_from_state_dict(released).model
    assert isinstance(model, ASID)
    assert_values(model.state_dict(), released, expected)

    omni = OmniSR(upscale=2, num_groups=2)
    expected = omnisr_expected_names(omni)
    ours = numbered(omni.state_dict(), {k: v.shape for k, v in omni.state_dict().items()})
    model = ModelLoader().load_from_state_dict(ours).model  # spandrel's class, released names
    loaded = model.state_dict()
    assert {expected[k] for k in ours} <= set(loaded)
    assert all(torch.equal(loaded[expected[k]], ours[k]) for k in ours)


@pytest.mark.parametrize('keys_file,build', [
    ('reference_keys_asid_x2.txt', lambda: asid_expected_names(ASID(upscale=2, num_blocks=3))),
    ('reference_keys_asid_d8_x4.txt', lambda: asid_expected_names(ASID(upscale=4, num_blocks=8))),
    ('reference_keys_omnisr_x4.txt', lambda: omnisr_expected_names(OmniSR(upscale=4))),
])
def test_expected_names_are_the_released_ones(keys_file, build):
    """This file's tables name exactly the tensors of the released checkpoints (with ../shared)."""
    assert set(build().values()) == set(read_reference_keys(shared_path('golden', keys_file)))
