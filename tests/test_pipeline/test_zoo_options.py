"""The model-zoo option files (Omni-SR, SwinIR-light with ASID's recipe; the CPU comparison triple): each parses
with BasicSR's parse_options and the package's safe reading, passes the option checks but for the data folders
(absent here), and builds its network (parameter count checked) and its model (a tiny forward pass on CPU)."""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

from asid_arch.pipeline.options_files import validate_options
from asid_arch.pipeline.options_reading import read_option_file
from asid_arch.pipeline.options_values import check_structure

from helpers import REPO

OPTIONS = REPO / 'options'
# parameters: Omni-SR from /work/shared/OMNISR_SPEC.md (its authors' released configuration); SwinIR-light as BasicSR's
# SwinIR builds the light configuration (x2: the ~910K of SwinIR's lightweight models)
PARAMETERS = {('OmniSR', 2): 784_604, ('OmniSR', 3): 793_259, ('OmniSR', 4): 805_376,
              ('SwinIR', 2): 910_152, ('SwinIR', 3): 918_267, ('SwinIR', 4): 929_628,
              ('ASID', 2): 297_516}
ZOO_FILES = sorted([*OPTIONS.glob('*/OmniSR/*.yml'), *OPTIONS.glob('*/SwinIR/*.yml'),
                    OPTIONS / 'test' / 'ASID' / 'test_ASID_SRx2_SunHays80_cpu.yml'])
CPU_TRIPLE = [OPTIONS / 'train' / folder / f'train_{stem}_SRx2_SunHays80_cpu.yml'
              for folder, stem in (('ASID', 'ASID'), ('OmniSR', 'OmniSR'), ('SwinIR', 'SwinIR_light'))]


def test_the_zoo_files_are_there():
    names = {path.name for path in ZOO_FILES}
    for scale in (2, 3, 4):
        for stem in ('OmniSR', 'SwinIR_light'):
            assert {f'train_{stem}_SRx{scale}_scratch.yml', f'test_{stem}_SRx{scale}.yml'} <= names
    assert all(path.exists() for path in CPU_TRIPLE)


def without_network(opt: dict) -> dict:
    """``opt`` less what differs between the zoo's networks: name, network_g, and SwinIR's tiled validation (BasicSR's
    SwinIR does not pad to its window)."""
    opt = {k: v for k, v in opt.items() if k not in ('name', 'network_g')}
    if 'val' in opt:
        opt['val'] = {k: v for k, v in opt['val'].items() if k != 'tile'}
    return opt


def test_cpu_triple_shares_one_recipe():
    """The three CPU runs differ in the network only: same data, patch, batch, schedule, seed, validation."""
    opts = [without_network(read_option_file(path)) for path in CPU_TRIPLE]
    assert opts[0] == opts[1] == opts[2]


def test_recipe_follows_asid():
    """The DIV2K files train with ASID's recipe: everything but name and network_g as in ASID's file."""
    for scale in (2, 3, 4):
        asid = read_option_file(OPTIONS / 'train' / 'ASID' / f'train_ASID_SRx{scale}_scratch.yml')
        for other in (f'OmniSR/train_OmniSR_SRx{scale}_scratch.yml',
                      f'SwinIR/train_SwinIR_light_SRx{scale}_scratch.yml'):
            assert without_network(read_option_file(OPTIONS / 'train' / other)) == without_network(asid), other


@pytest.mark.parametrize('path', [*ZOO_FILES, *CPU_TRIPLE[1:]], ids=lambda p: p.name)
def test_zoo_option_file_builds(path: Path, monkeypatch, tmp_path):
    from basicsr.models import build_model
    from basicsr.utils.options import parse_options
    from basicsr.utils.registry import ARCH_REGISTRY

    is_train = '/train/' in str(path)
    safe = read_option_file(path)  # the package's reading: data only, checked
    assert check_structure(safe, is_train) == []
    problems = validate_options(copy.deepcopy(safe), is_train)  # everything but the data folders is accepted
    assert problems and all(p.startswith(('datasets:', 'path: pretrain_network_g:')) for p in problems), problems

    monkeypatch.setattr(sys, 'argv', ['x', '-opt', str(path)])
    opt, _ = parse_options(str(tmp_path), is_train=is_train)  # BasicSR's own
    net_opt = dict(opt['network_g'])
    net = ARCH_REGISTRY.get(net_opt.pop('type'))(**net_opt)
    count = sum(p.numel() for p in net.parameters())
    print(f'{path.name}: {opt["network_g"]["type"]} x{opt["scale"]}: {count:,} parameters')
    assert count == PARAMETERS[opt['network_g']['type'], opt['scale']]

    opt['path']['pretrain_network_g'] = None  # a test file names the training's checkpoint, absent here
    opt['num_gpu'] = 0
    model = build_model(opt)
    assert type(model).__name__ == 'ASIDModel'
    if is_train:
        assert type(model.optimizers[0]).__name__ == opt['train']['optim_g']['type']
    model.feed_data({'lq': torch.rand(1, 3, 16, 24)})  # BasicSR's SwinIR: multiples of its window
    model.test()
    assert model.output.shape == (1, 3, 16 * opt['scale'], 24 * opt['scale'])
    assert torch.isfinite(model.output).all()


def test_swinir_test_file_runs_sides_that_are_not_multiples_of_its_window(monkeypatch, tmp_path):
    """BasicSR's SwinIR does not pad its input: ASIDModel mirrors the bottom and right to a multiple of its window
    and crops the output, so Set14's comic at x4 (LR 62 x 90, smaller than a 64 px tile on one side) is tested
    like the rest."""
    from basicsr.models import build_model
    from basicsr.utils.options import parse_options

    path = REPO / 'options' / 'test' / 'SwinIR' / 'test_SwinIR_light_SRx4.yml'
    monkeypatch.setattr(sys, 'argv', ['x', '-opt', str(path)])
    opt, _ = parse_options(str(tmp_path), is_train=False)
    opt['path']['pretrain_network_g'], opt['num_gpu'] = None, 0
    model = build_model(opt)
    assert opt['val']['tile']  # the reference protocol, as the file sets it
    model.feed_data({'lq': torch.rand(1, 3, 62, 90)})
    model.test()
    assert model.output.shape == (1, 3, 248, 360) and torch.isfinite(model.output).all()
