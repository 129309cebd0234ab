"""What the tests share: where the reference data lives (skipping or failing cleanly without it), small synthetic
data and option files for pipeline tests (seconds on a CPU), and child-process runners."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
# The reference data: outside CI a test that needs it skips with the reason when ``../shared`` (or the folder
# ``ASID_SHARED`` names) lacks it; in CI (``ASID_REQUIRE_SHARED=1``, set by ``.ci/run``) the same test fails.
SHARED = Path(os.environ.get('ASID_SHARED', REPO.parent / 'shared'))
GOLDEN = SHARED / 'golden'
DATASETS = SHARED / 'datasets'
REQUIRE_SHARED = os.environ.get('ASID_REQUIRE_SHARED', '') not in ('', '0')
# every reference file the suite reads: the guard test (test_golden.py) and .ci/run check this list
GOLDEN_FILES = ('asid_x2.pt', 'asid_d8_x3.pt', 'asid_x4_tiled.pt', 'neosr_asid_x2_default.pt',
                'neosr_asid_d8_x3_pe_noflash.pt', 'neosr_asid_x4_noflash_nope.pt', 'omnisr_x4.pt',
                'reference_keys_asid_x2.txt', 'reference_keys_asid_d8_x4.txt', 'reference_keys_omnisr_x4.txt')


def synthetic_image(h: int, w: int, seed: int) -> np.ndarray:
    """A structured uint8 BGR image: gradients, stripes and a disc, plus a little noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    f1, f2 = rng.uniform(0.05, 0.3, size=2)
    img = np.stack([128 + 100 * np.sin(f1 * xx + c) * np.cos(f2 * yy - c) for c in (0.0, 1.0, 2.0)], axis=2)
    cy, cx, r = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w, min(h, w) / 4
    img[(yy - cy)**2 + (xx - cx)**2 < r**2] = rng.uniform(0, 255, size=3)
    img += rng.normal(0, 4, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_images(folder: Path, count: int, size=(96, 120), seed: int = 0) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f'img{i:02d}.png'
        cv2.imwrite(str(path), synthetic_image(*size, seed + i))
        paths.append(path)
    return paths


def make_tiny_data(root: Path, train_images: int = 3, val_images: int = 1) -> Path:
    """``asid-prepare``'d tiny data in ``root``: ``train/tiny_*`` (48 px HR sub-images, x2, LMDB and folders)
    and ``valsrc/{GTmod2,LRbicx2}`` (40x56 HR validation images)."""
    from asid_arch.data.prepare import prepare_bench, prepare_train

    write_images(root / 'hr', train_images, size=(96, 120))
    report = prepare_train(root / 'hr', root / 'train', 'tiny', [2], crop=48, step=24)
    assert not report.failed, report.failed
    write_images(root / 'valsrc' / 'HR', val_images, size=(40, 56), seed=10)
    prepare_bench([root / 'valsrc' / 'HR'], root, [2])
    return root


def tiny_train_options(name: str, data: Path, val: Path, scale: int = 2, iters: int = 6, backend: str = 'lmdb',
                       **overrides) -> dict:
    """A BasicSR training option dict for a 1-IDB ASID on the data made by ``asid-prepare train``."""
    if backend == 'lmdb':
        gt, lq = data / 'tiny_HR_sub.lmdb', data / f'tiny_LR_bicubic_X{scale}_sub.lmdb'
    else:
        gt, lq = data / 'tiny_HR_sub', data / 'tiny_LR_bicubic' / f'X{scale}_sub'
    opt = {
        'name': name, 'model_type': 'ASIDModel', 'scale': scale, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {
            'train': {'name': 'tiny', 'type': 'PairedImageDataset', 'dataroot_gt': str(gt), 'dataroot_lq': str(lq),
                      'filename_tmpl': '{}', 'io_backend': {'type': backend}, 'gt_size': 16 * scale,
                      'use_hflip': True, 'use_rot': True, 'num_worker_per_gpu': 0, 'batch_size_per_gpu': 2,
                      'dataset_enlarge_ratio': 1, 'prefetch_mode': None},
            'val': {'name': 'tinyval', 'type': 'PairedImageDataset', 'dataroot_gt': str(val / f'GTmod{scale}'),
                    'dataroot_lq': str(val / f'LRbicx{scale}'), 'io_backend': {'type': 'disk'}},
        },
        'network_g': {'type': 'ASID', 'upscale': scale, 'num_feat': 16, 'num_blocks': 1},
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {'ema_decay': 0, 'optim_g': {'type': 'AdamW', 'lr': 1e-3, 'weight_decay': 1e-4, 'betas': [0.9, 0.99]},
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [1000], 'gamma': 0.5}, 'total_iter': iters,
                  'warmup_iter': -1, 'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}},
        'val': {'val_freq': iters, 'save_img': False,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': scale, 'test_y_channel': True}}},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': 2, 'use_tb_logger': False,
                   'wandb': {'project': None, 'resume_id': None}},
        'dist_params': {'backend': 'gloo', 'port': 29500},
    }
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split('.')
        node = opt
        for key in parents:
            node = node[key]
        node[leaf] = value
    return opt


def write_yaml(path: Path, opt: dict) -> Path:
    path.write_text(yaml.safe_dump(opt, sort_keys=False))
    return path


def run_module(module: str, args: list, cwd: Path, timeout: int = 600, launcher: list = None,
               threads: int = 1) -> subprocess.CompletedProcess:
    """``python -m module args`` in ``cwd`` with this checkout importable, on ``threads`` threads; output captured."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get('PYTHONPATH', ''),
               OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED='1')
    cmd = [sys.executable, *(launcher or []), '-m', module, *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


# Runs cases of the entry points in ONE process (one import of torch and BasicSR for all): each case is
# ``main(argv)`` of ``asid_arch.cli.<module>`` in its own folder; its exit status, stderr and the folder's
# listing afterwards are recorded ('escaped' when an exception escaped main)
ENTRY_POINT_DRIVER = r'''
import contextlib, io, json, os, sys, traceback
spec_file, result_file = sys.argv[1:3]  # (the entry points set sys.argv)
cases = json.loads(open(spec_file).read())
results = {}
for case in cases:
    os.chdir(case['cwd'])
    module = __import__('asid_arch.cli.' + case['module'], fromlist=['main'])
    err, out, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            module.main(case['argv'])
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 'escaped'
    results[case['id']] = {'code': code, 'stderr': err.getvalue(), 'cwd': sorted(os.listdir(case['cwd']))}
open(result_file, 'w').write(json.dumps(results))
'''


def run_entry_points(specs: list, folder: Path, timeout: int = 900) -> dict:
    """Every case of ``specs`` (``{id, module, cwd, argv}``) run by :data:`ENTRY_POINT_DRIVER` in one child
    process: ``{id: {code, stderr, cwd}}``."""
    spec_file, result_file = folder / 'cases.json', folder / 'results.json'
    spec_file.write_text(json.dumps(specs))
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + str(REPO / 'tests'), OMP_NUM_THREADS='1')
    done = subprocess.run([sys.executable, '-c', ENTRY_POINT_DRIVER, str(spec_file), str(result_file)], env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0 and result_file.exists(), (done.returncode, done.stdout[-2000:], done.stderr[-3000:])
    return json.loads(result_file.read_text())


def run_python(code: str, args: list, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -c code args`` in ``cwd`` with this checkout importable; output captured."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get('PYTHONPATH', ''),
               OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    return subprocess.run([sys.executable, '-c', code, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def shared_path(*parts: str) -> Path:
    """Path under ../shared; when it is absent, skip the test with the reason (fail it in CI)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        reason = f'{path} is absent (set ASID_SHARED to the shared folder to run this test)'
        if REQUIRE_SHARED:
            pytest.fail(f'{reason}; ASID_REQUIRE_SHARED is set, so the reference data is required')
        pytest.skip(reason)
    return path


def read_reference_keys(path: Path) -> dict:
    """``reference_keys_*.txt``: ``name<TAB>(shape)`` lines -> {name: shape tuple}."""
    keys = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith('#'):
            name, shape = line.split('\t')
            keys[name] = tuple(int(v) for v in shape.strip('()').split(',') if v.strip())
    return keys
