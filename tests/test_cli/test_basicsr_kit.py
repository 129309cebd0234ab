"""The drop-in kit in a BasicSR tree: BasicSR's own basicsr/train.py and basicsr/test.py, unchanged.

The tree is a copy of the installed basicsr package (the 1.4.2 release, whose import needs the
torchvision alias: the kit's utils/asid_compat.py brings it). The kit goes in with ``asid-kit install``, as the
README says; the processes run with the checkout alone on PYTHONPATH and never import ``asid_arch``.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from asid_arch.cli.kit import KIT_FILES

from helpers import REPO, run_module, write_yaml

OPTIONS = REPO / 'options'
NO_PACKAGE = "import sys; sys.modules['asid_arch'] = None; "  # any import of the package would fail


def run_in_tree(tree: Path, args: list, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python <args>`` in the checkout, BasicSR's way (``PYTHONPATH=.``), without the asid_arch package."""
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    script = args[0]
    code = NO_PACKAGE + (f"sys.argv = {[script, *args[1:]]!r}; import runpy; "
                         f"runpy.run_path({script!r}, run_name='__main__')")
    return subprocess.run([sys.executable, '-c', code], cwd=tree, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope='module')
def tree(tmp_path_factory):
    """A BasicSR tree with the kit installed by ``asid-kit install``."""
    import basicsr

    root = tmp_path_factory.mktemp('BasicSR')
    shutil.copytree(Path(basicsr.__file__).parent, root / 'basicsr', ignore=shutil.ignore_patterns('__pycache__'))
    result = run_module('asid_arch.cli.kit', ['install', str(root)], root)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count('copied') == len(KIT_FILES), result.stdout
    return root


TINY_DATA = (4, 2)  # the shared tiny data set (tests/conftest.py: data) with 4 training, 2 validation images


def shortened_demo_options(data: Path, name: str) -> dict:
    """The demo option file, shortened: 4 iterations on tiny data, one tiled validation at the end."""
    opt = yaml.safe_load((OPTIONS / 'train' / 'ASID' / 'demo_ASID_SRx2_cpu.yml').read_text())
    opt['name'] = name
    train = opt['datasets']['train']
    train.update(dataroot_gt=str(data / 'train' / 'tiny_HR_sub.lmdb'),
                 dataroot_lq=str(data / 'train' / 'tiny_LR_bicubic_X2_sub.lmdb'), gt_size=32, batch_size_per_gpu=2,
                 num_worker_per_gpu=0, dataset_enlarge_ratio=1)
    opt['datasets']['val'].update(dataroot_gt=str(data / 'valsrc' / 'GTmod2'),
                                  dataroot_lq=str(data / 'valsrc' / 'LRbicx2'))
    opt['train'].update(total_iter=4, warmup_iter=-1)
    opt['train']['scheduler']['periods'] = [4]
    opt['val'].update(val_freq=4, tile={'size': 16, 'overlap': 4})
    opt['logger'].update(print_freq=1, save_checkpoint_freq=4)
    return opt


def kit_test_options(data: Path, checkpoint: Path, param_key) -> dict:
    """The x2 test option file with the tiny validation set as its only set."""
    opt = yaml.safe_load((OPTIONS / 'test' / 'ASID' / 'test_ASID_SRx2.yml').read_text())
    opt['datasets'] = {'test_1': {'name': 'tinyset', 'type': 'PairedImageDataset',
                                  'dataroot_gt': str(data / 'valsrc' / 'GTmod2'),
                                  'dataroot_lq': str(data / 'valsrc' / 'LRbicx2'), 'io_backend': {'type': 'disk'}}}
    opt['path'].update(pretrain_network_g=str(checkpoint), param_key_g=param_key)
    opt['val']['tile'] = {'size': 16, 'overlap': 4}
    return opt


def metrics_logged(log: str) -> dict:
    return dict(re.findall(r'# (psnr|psnr_matlab|ssim): ([\d.]+)', log))


@pytest.mark.slow
def test_basicsr_train_and_test_scripts_with_the_kit(tree, data, tmp_path):
    train_yml = write_yaml(tmp_path / 'demo_short.yml', shortened_demo_options(data, 'kit_demo'))
    trained = run_in_tree(tree, ['basicsr/train.py', '-opt', str(train_yml)])
    assert trained.returncode == 0, trained.stderr[-4000:]
    log = trained.stderr + trained.stdout
    assert 'Model [ASIDModel] is created.' in log
    assert 'Network [ASID] is created.' in log
    assert {'psnr', 'psnr_matlab'} <= set(metrics_logged(log)), log[-3000:]  # the one validation ran
    checkpoint = tree / 'experiments' / 'kit_demo' / 'models' / 'net_g_latest.pth'
    assert checkpoint.is_file() and (tree / 'experiments' / 'kit_demo' / 'training_states' / '4.state').is_file()

    test_yml = write_yaml(tmp_path / 'test.yml', kit_test_options(data, checkpoint, 'params'))
    plain = run_in_tree(tree, ['basicsr/test.py', '-opt', str(test_yml)])
    assert plain.returncode == 0, plain.stderr[-4000:]
    ours = run_module('asid_arch.cli.test', ['-opt', str(test_yml)], tmp_path)
    assert ours.returncode == 0, ours.stderr[-4000:]
    plain_metrics, our_metrics = metrics_logged(plain.stderr + plain.stdout), metrics_logged(ours.stderr + ours.stdout)
    assert set(plain_metrics) == {'psnr', 'psnr_matlab', 'ssim'}
    assert plain_metrics == our_metrics  # same tiled protocol, same figures to the last logged digit

    # whole-image inference really is a different protocol: the tiled figure is not what it would give
    whole = kit_test_options(data, checkpoint, 'params')
    del whole['val']['tile']
    untiled = run_in_tree(tree, ['basicsr/test.py', '-opt', str(write_yaml(tmp_path / 'whole.yml', whole))])
    assert untiled.returncode == 0, untiled.stderr[-3000:]
    assert metrics_logged(untiled.stderr + untiled.stdout)['psnr'] != plain_metrics['psnr']

    # the released key layout loads through pretrain_network_g without key-mismatch warnings
    from asid_arch import state_dict_to_reference

    released = tmp_path / 'released_layout.pth'
    torch.save(state_dict_to_reference(torch.load(checkpoint, weights_only=True)['params']), released)
    from_released = run_in_tree(tree, ['basicsr/test.py', '-opt',
                                       str(write_yaml(tmp_path / 'rel.yml', kit_test_options(data, released, None)))])
    assert from_released.returncode == 0, from_released.stderr[-3000:]
    log = from_released.stderr + from_released.stdout
    assert 'Current net - loaded net' not in log and 'Loaded net - current net' not in log
    assert metrics_logged(log) == plain_metrics


@pytest.mark.slow
def test_every_option_file_resolves_with_only_the_kit(tree):
    """BasicSR's parse_options reads every option file; every `type:` is in BasicSR's registries."""
    files = sorted(str(p) for p in OPTIONS.rglob('*.yml'))
    assert len(files) >= 20
    code = NO_PACKAGE + f'''
import sys, torch
import basicsr
from basicsr.utils.options import parse_options
from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY
SCHEDULERS = ('MultiStepLR', 'MultiStepRestartLR', 'CosineAnnealingRestartLR')
for path in {files!r}:
    sys.argv = ['x', '-opt', path]
    opt, _ = parse_options('.', is_train='/train/' in path)
    checks = [('model_type', opt['model_type'], MODEL_REGISTRY), ('network_g', opt['network_g']['type'], ARCH_REGISTRY)]
    checks += [(f'datasets.{{k}}', v['type'], DATASET_REGISTRY) for k, v in opt['datasets'].items()]
    metrics = (opt.get('val') or {{}}).get('metrics', {{}})
    checks += [(f'val.metrics.{{k}}', v['type'], METRIC_REGISTRY) for k, v in metrics.items()]
    train = opt.get('train') or {{}}
    checks += [(f'train.{{k}}', v['type'], LOSS_REGISTRY) for k, v in train.items() if k.endswith('_opt') and v]
    for where, name, registry in checks:
        assert name in registry, f'{{path}}: {{where}}: {{name}} not registered'
    if train:
        assert train['scheduler']['type'] in SCHEDULERS, path
        assert isinstance(getattr(torch.optim, train['optim_g']['type'], None), type), path
        ARCH_REGISTRY.get(opt['network_g']['type'])(**{{k: v for k, v in opt['network_g'].items() if k != 'type'}})
print('checked', len({files!r}))
'''
    env = dict(os.environ, PYTHONPATH=str(tree))
    result = subprocess.run([sys.executable, '-c', code], cwd=tree, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == f'checked {len(files)}'


@pytest.mark.slow
def test_differing_kit_copy_is_reported(tree, tmp_path):
    """A checkout whose kit copy differs from the installed package: the user is told which file is used."""
    other = tmp_path / 'old'
    shutil.copytree(tree / 'basicsr', other / 'basicsr', ignore=shutil.ignore_patterns('__pycache__'))
    with open(other / 'basicsr' / 'archs' / 'asid_arch.py', 'a') as f:
        f.write('\n# an older copy\n')
    env = dict(os.environ, PYTHONPATH=f'{other}{os.pathsep}{REPO}')
    result = subprocess.run([sys.executable, '-c', 'import basicsr, asid_arch.models'], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f'ASID is registered from {other / "basicsr" / "archs" / "asid_arch.py"}' in result.stderr
    assert 'differs from that file and is not used' in result.stderr
    assert 'ASIDModel is registered' not in result.stderr  # identical copies stay quiet
    from asid_arch.cli.kit import main as asid_kit

    assert asid_kit(['check', str(other)]) == 1
    assert asid_kit(['check', str(tree)]) == 0

    same = subprocess.run([sys.executable, '-c', 'import basicsr, asid_arch.models'], cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=f'{tree}{os.pathsep}{REPO}'), capture_output=True, text=True,
                          timeout=300)
    assert same.returncode == 0 and 'KitCopyWarning' not in same.stderr, same.stderr


def test_kit_refuses_a_folder_that_is_not_basicsr(tmp_path, capsys):
    from asid_arch.cli.kit import main as asid_kit

    assert asid_kit(['install', str(tmp_path)]) == 2
    assert 'is not a BasicSR checkout' in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing copied


def test_kit_copy_loaded_outside_sys_modules_warns_instead_of_crashing(tmp_path):
    """A differing copy of the arch file executed from a spec without a ``sys.modules`` entry (as tools that
    load single files do): Python cannot name its source, and registration still warns, naming this file."""
    import importlib.util
    import warnings

    import asid_arch  # noqa: F401  (registers ASID first)

    copy = tmp_path / 'asid_arch_copy.py'
    copy.write_text((REPO / 'asid_arch' / 'archs' / 'asid_arch.py').read_text() + '\n# a changed copy\n')
    # inside the package (its relative imports need one), under a name that is never put in sys.modules
    spec = importlib.util.spec_from_file_location('asid_arch.archs.asid_arch_copy_unregistered', copy)
    module = importlib.util.module_from_spec(spec)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        spec.loader.exec_module(module)
    # the copy defines its own KitCopyWarning class: match it by name
    messages = [str(w.message) for w in caught if w.category.__name__ == 'KitCopyWarning']
    assert messages and str(copy) in messages[0]
