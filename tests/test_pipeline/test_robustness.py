"""Training robustness: option checks, a diverging loss, SIGKILL and resume, atomic checkpoints."""
from __future__ import annotations

import pytest
import torch

from asid_arch.pipeline.options_files import validate_options

from helpers import run_module, tiny_train_options, write_yaml


def parsed(opt: dict) -> dict:
    """What BasicSR's parse_options adds that the checks look at."""
    for phase, ds in opt['datasets'].items():
        ds['phase'] = phase.split('_')[0]
    return opt


def test_valid_options_pass(data):
    assert validate_options(parsed(tiny_train_options('ok', data / 'train', data / 'valsrc'))) == []


@pytest.mark.parametrize('override,message', [
    ({'network_g.upscale': 4}, 'network_g: upscale: 4 does not match scale: 2'),
    ({'datasets.train.gt_size': 40}, 'datasets: train: gt_size: 40 gives LR patches of 20 px, not a multiple of the '
                                     'window size 8'),
    ({'datasets.train.gt_size': 33}, 'datasets: train: gt_size: 33 is not a multiple of scale 2'),
    ({'network_g.num_heads': 4}, 'network_g: num_heads: not an argument of ASID'),
    ({'network_g.type': 'ASIDD'}, "network_g: type: 'ASIDD' is not a registered architecture"),
    ({'datasets.val.dataroot_gt': '/nonexistent/GTmod2'}, 'datasets: val: dataroot_gt: /nonexistent/GTmod2 does not '
                                                          'exist'),
    ({'train.optim_g.type': 'Adamm'}, "train: optim_g: type: 'Adamm' is not an optimizer"),
    ({'model_type': 'SRModelX'}, "model_type: 'SRModelX' is not a registered model"),
    ({'path.pretrain_network_g': '/nonexistent.pth'}, 'path: pretrain_network_g: /nonexistent.pth does not exist'),
    ({'datasets.train.batch_size_per_gpu': 'eight'},
     "datasets: train: batch_size_per_gpu: 'eight' is not a whole number"),
    ({'datasets.train.batch_size_per_gpu': 0}, 'datasets: train: batch_size_per_gpu: 0 must be > 0'),
    ({'train.optim_g.lr': -1e-3}, 'train: optim_g: lr: -0.001 must be > 0'),
    ({'train.optim_g.lr': 'fast'}, "train: optim_g: lr: 'fast' is not a number"),
    ({'network_g.num_feat': 50}, 'network_g: num_feat must be a positive multiple of 4, got 50'),
    ({'datasets.train.gt_size': None}, 'datasets: train: gt_size: missing'),
    ({'datasets.train.gt_size': 64}, 'datasets: train: gt_size: 64 is larger than the image'),
    ({'scale': 4, 'network_g.upscale': 4, 'datasets.train.gt_size': 32},
     'datasets: train: the data are x2 (GT 48x48, LQ 24x24 for img00_s001) but scale is 4'),
    ({'train.total_iter': 0}, 'train: total_iter: 0 must be > 0'),
    ({'trian': {'total_iter': 5}}, 'trian: not an option BasicSR reads (did you mean train?)'),
    ({'tile': {'tile_size': 256, 'tile_pad': 32}}, "tile: not an option BasicSR reads at the top level (HAT's "
                                                   "tile_size/tile_pad: did you mean val: tile: {size: 320, overlap: "
                                                   "64} (LR pixels)?)"),
    ({'tile': 'yes'}, "tile: not an option BasicSR reads at the top level (HAT's tile_size/tile_pad: did you mean "
                      "val: tile: {size: N, overlap: M} (LR pixels)?)"),
    ({'val.tile': {'tile_size': 64}}, "val: tile: tile_size: not a tile option (size, overlap); HAT's "
                                      "tile_size/tile_pad: did you mean val: tile: {size: N, overlap: M}"),
    ({'model_type': 'SRModel', 'val.tile': {'size': 16, 'overlap': 4}},
     'val: tile: only model_type: ASIDModel runs the tiled protocol; SRModel would silently evaluate whole images'),
])
def test_each_option_problem_is_named(data, override, message):
    override = dict(override)
    scale = override.pop('scale', None)  # the option, not the helper's argument (which picks the data)
    opt = tiny_train_options('bad', data / 'train', data / 'valsrc', **override)
    if scale is not None:
        opt['scale'] = scale
    opt = parsed(opt)
    problems = validate_options(opt)
    assert any(message in p for p in problems), problems


def test_incomplete_lmdb_is_named(data, tmp_path):
    fake = tmp_path / 'half.lmdb'
    fake.mkdir()
    (fake / 'data.mdb').write_bytes(b'')
    opt = parsed(tiny_train_options('bad', data / 'train', data / 'valsrc',
                                    **{'datasets.train.dataroot_gt': str(fake)}))
    assert any('dataroot_gt' in p and 'no meta_info.txt' in p for p in validate_options(opt))


def test_lmdb_whose_meta_info_lists_missing_keys(data, tmp_path):
    import shutil

    lmdb_copy = tmp_path / 'gt.lmdb'
    shutil.copytree(data / 'train' / 'tiny_HR_sub.lmdb', lmdb_copy)
    with open(lmdb_copy / 'meta_info.txt', 'a') as f:
        f.write('ghost_s001.png (48,48,3) 1\n')
    opt = parsed(tiny_train_options('bad', data / 'train', data / 'valsrc',
                                    **{'datasets.train.dataroot_gt': str(lmdb_copy)}))
    assert any('meta_info.txt lists 1 key(s) the LMDB does not hold (first: ghost_s001)' in p
               for p in validate_options(opt)), validate_options(opt)


@pytest.mark.slow
def test_option_errors_exit_with_status_2(data, tmp_path):
    opt = tiny_train_options('bad', data / 'train', data / 'valsrc', **{'train.total_iter': 0})
    result = run_module('asid_arch.cli.train', ['-opt', str(write_yaml(tmp_path / 'bad.yml', opt))], tmp_path)
    assert result.returncode == 2 and 'train: total_iter: 0 must be > 0' in result.stderr
    missing = run_module('asid_arch.cli.train', ['-opt', str(tmp_path / 'nope.yml')], tmp_path)
    assert missing.returncode == 2 and 'cannot read the option file' in missing.stderr


@pytest.mark.slow
def test_train_entry_point_reports_options_without_traceback(data, tmp_path):
    opt = tiny_train_options('bad', data / 'train', data / 'valsrc', **{'network_g.upscale': 3,
                                                                        'datasets.train.gt_size': 36})
    result = run_module('asid_arch.cli.train', ['-opt', str(write_yaml(tmp_path / 'bad.yml', opt))], tmp_path)
    assert result.returncode != 0
    assert 'Traceback' not in result.stderr
    assert 'network_g: upscale: 3 does not match scale: 2' in result.stderr
    assert 'gt_size: 36' in result.stderr
    assert not (tmp_path / 'experiments' / 'bad').exists()  # stopped before any work


@pytest.mark.slow
def test_diverging_run_exits_with_a_message(data, tmp_path):
    opt = tiny_train_options('diverge', data / 'train', data / 'valsrc', iters=20, **{'train.optim_g.lr': 1e20,
                                                                                      'logger.save_checkpoint_freq': 1})
    result = run_module('asid_arch.cli.train', ['-opt', str(write_yaml(tmp_path / 'd.yml', opt))], tmp_path)
    assert result.returncode == 1, result.stderr[-2000:]
    assert 'training stopped before the optimizer step' in result.stderr
    assert 'Traceback' not in result.stderr.split('asid-train:')[-1]
    last_state = max(int(p.stem) for p in (tmp_path / 'experiments' / 'diverge' / 'training_states').glob('*.state'))
    weights = torch.load(tmp_path / 'experiments' / 'diverge' / 'models' / f'net_g_{last_state}.pth',
                         weights_only=True)['params']
    assert last_state < 20
    assert all(torch.isfinite(v).all() for v in weights.values())  # saved before the loss broke
