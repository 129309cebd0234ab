"""BasicSR's train/test pipelines through our entry points: LMDB training, resume, testing, DDP (gloo)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from helpers import run_module, tiny_train_options, write_yaml

TINY_DATA = (4, 2)  # the shared tiny data set (tests/conftest.py: data) with 4 training, 2 validation images


def iterations_logged(log: str) -> list:
    return [int(v) for v in re.findall(r'iter:\s*(\d+),', log)]


@pytest.mark.slow
def test_train_writes_checkpoint_and_resumes(data, tmp_path):
    opt = write_yaml(tmp_path / 'tiny.yml', tiny_train_options('tiny_run', data / 'train', data / 'valsrc', iters=4))
    first = run_module('asid_arch.cli.train', ['-opt', str(opt)], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    models = tmp_path / 'experiments' / 'tiny_run' / 'models'
    states = tmp_path / 'experiments' / 'tiny_run' / 'training_states'
    assert (models / 'net_g_4.pth').exists() and (models / 'net_g_latest.pth').exists()
    assert (states / '4.state').exists()
    assert 'psnr' in first.stderr
    params = torch.load(models / 'net_g_4.pth', weights_only=True)['params']
    assert 'blocks.0.sam_meso1.attn.qkv.weight' in params

    # continue to 8 iterations from the saved state: the log starts at iteration 5
    longer = write_yaml(tmp_path / 'tiny.yml', tiny_train_options('tiny_run', data / 'train', data / 'valsrc', iters=8))
    resumed = run_module('asid_arch.cli.train', ['-opt', str(longer), '--auto_resume'], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert 'Resuming training from epoch' in resumed.stderr and 'iter: 4.' in resumed.stderr
    assert iterations_logged(resumed.stderr) == [5, 6, 7, 8]
    assert (states / '8.state').exists()


@pytest.mark.slow
def test_test_pipeline_reports_psnr_ssim(data, tmp_path):
    train_opt = tiny_train_options('tiny_for_test', data / 'train', data / 'valsrc', iters=2)
    trained = run_module('asid_arch.cli.train', ['-opt', str(write_yaml(tmp_path / 't.yml', train_opt))], tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    checkpoint = tmp_path / 'experiments' / 'tiny_for_test' / 'models' / 'net_g_latest.pth'
    for tile in (None, {'size': 16, 'overlap': 4}):
        opt = {
            'name': 'tiny_test', 'model_type': 'ASIDModel', 'scale': 2, 'num_gpu': 0, 'manual_seed': 0,
            'datasets': {'test_1': train_opt['datasets']['val'] | {'name': 'tinyset'}},
            'network_g': train_opt['network_g'],
            'path': {'pretrain_network_g': str(checkpoint), 'param_key_g': 'params', 'strict_load_g': True},
            'val': {'save_img': False, 'tile': tile,
                    'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 2, 'test_y_channel': True},
                                'psnr_matlab': {'type': 'calculate_psnr_matlab', 'crop_border': 2},
                                'ssim': {'type': 'calculate_ssim', 'crop_border': 2, 'test_y_channel': True}}},
        }
        result = run_module('asid_arch.cli.test', ['-opt', str(write_yaml(tmp_path / 'test.yml', opt))], tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        values = dict(re.findall(r'# (psnr|psnr_matlab|ssim): ([\d.]+)', result.stderr))
        assert set(values) == {'psnr', 'psnr_matlab', 'ssim'}
        expected = metrics_computed_here(checkpoint, train_opt, tile)
        assert all(abs(float(values[k]) - expected[k]) < 1e-4 for k in expected), (values, expected)


def metrics_computed_here(checkpoint, opt, tile) -> dict:
    """The test set's mean Y-channel PSNR (float and MATLAB's rounding) and SSIM, border 2, computed directly
    from the checkpoint: the network (tiled with the protocol if ``tile``), BasicSR's conversions and metrics."""
    import cv2
    import numpy as np
    import torch

    from basicsr.metrics import calculate_psnr, calculate_ssim
    from basicsr.utils import img2tensor, tensor2img

    from asid_arch import ASID, tile_forward
    from asid_arch.metrics.asid_metric import calculate_psnr_matlab

    net = ASID(**{k: v for k, v in opt['network_g'].items() if k != 'type'}).eval()
    net.load_state_dict(torch.load(checkpoint, weights_only=True)['params'])
    val = opt['datasets']['val']
    scores = {'psnr': [], 'psnr_matlab': [], 'ssim': []}
    for gt_path in sorted(Path(val['dataroot_gt']).glob('*.png')):
        gt = cv2.imread(str(gt_path))
        lq = img2tensor(cv2.imread(str(Path(val['dataroot_lq']) / gt_path.name)).astype(np.float32) / 255)[None]
        with torch.no_grad():
            out = tile_forward(net, lq, 2, tile['size'], tile['overlap']) if tile else net(lq)
        sr = tensor2img(out)
        scores['psnr'].append(calculate_psnr(sr, gt, 2, test_y_channel=True))
        scores['psnr_matlab'].append(calculate_psnr_matlab(sr, gt, 2))
        scores['ssim'].append(calculate_ssim(sr, gt, 2, test_y_channel=True))
    return {k: float(np.mean(v)) for k, v in scores.items()}


@pytest.mark.slow
def test_ddp_world_size_two_on_cpu(data, tmp_path):
    """``torchrun --nproc_per_node 2 -m asid_arch.cli.train --launcher pytorch``: gloo on a CPU machine."""
    opt = write_yaml(tmp_path / 'ddp.yml', tiny_train_options('tiny_ddp', data / 'train', data / 'valsrc', iters=4))
    launcher = ['-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2']  # picks a free port
    result = run_module('asid_arch.cli.train', ['-opt', str(opt), '--launcher', 'pytorch'], tmp_path,
                        launcher=launcher)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stderr[-5000:]
    assert 'World size (gpu number): 2' in result.stderr, log
    assert (tmp_path / 'experiments' / 'tiny_ddp' / 'models' / 'net_g_latest.pth').exists(), log
    assert iterations_logged(result.stderr) == [1, 2, 3, 4], log  # logged once, by rank 0


@pytest.mark.slow
def test_demo_trains_asid_past_bicubic(tmp_path):
    """The README's main job with its recipe, the schedule shortened to 300 iterations: data from scikit-image,
    BasicSR training, and the table, where the trained ASID must beat bicubic on every validation image."""
    import yaml

    from helpers import REPO

    iterations = 300
    opt = yaml.safe_load((REPO / 'options' / 'train' / 'ASID' / 'demo_ASID_SRx2_cpu.yml').read_text())
    opt['name'] = 'demo_short'
    opt['train']['total_iter'] = iterations
    opt['train']['scheduler']['periods'] = [iterations]
    opt['val']['val_freq'] = iterations
    opt['logger'].update(print_freq=50, save_checkpoint_freq=iterations)
    result = run_module('asid_arch.cli.demo', ['-opt', str(write_yaml(tmp_path / 'demo.yml', opt))], tmp_path,
                        threads=2, timeout=1800)  # both cores, as make demo; a generous bound for a busy machine
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {line.split()[0]: [float(v) for v in line.split()[1:3]] for line in result.stdout.splitlines()
            if line.split() and line.split()[0] in ('chelsea', 'coffee', 'mean')}
    assert set(rows) == {'chelsea', 'coffee', 'mean'}, result.stdout
    assert rows['chelsea'][0] == 35.26 and rows['coffee'][0] == 30.60  # bicubic, as in the README
    assert all(asid > bicubic for bicubic, asid in rows.values()), result.stdout
    assert (tmp_path / 'experiments' / 'demo_short' / 'models' / 'net_g_latest.pth').is_file()
    assert len(list((tmp_path / 'datasets' / 'demo' / 'demo_train_HR_sub').glob('*.png'))) == 541
