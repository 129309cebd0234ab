"""Hostile training states, weights files, data paths and schedules through asid-train (issue 26: items 6 and 15,
and the messages): what would block (a FIFO or a device where a file is read), crash mid-run (a schedule shorter
than the run, optimizer tensors of other shapes) or stop without need (the newest weights missing) is found before
any work. The cases run in one child process (``helpers.run_entry_points``), after one short training that makes
the states they start from.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable, Dict, NamedTuple

import pytest
import torch

from helpers import make_tiny_data, run_entry_points, run_module, tiny_train_options, write_yaml

NAME = 'hostile'
ITERS, CHECKPOINT_EVERY = 4, 2  # the first run leaves the states 2 and 4 with net_g_2.pth and net_g_4.pth


def fifo(path: Path) -> None:
    if path.exists() or path.is_symlink():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    os.mkfifo(path)


class Case(NamedTuple):
    id: str
    prepare: Callable[[Path, Path, Path], dict]  # (run folder, trained experiment, data) -> the option dict
    code: int
    message: str
    args: tuple = ()


def options(data: Path, iters: int = ITERS + 2, **overrides) -> dict:
    return tiny_train_options(NAME, data / 'train', data / 'valsrc', iters=iters,
                              **{'logger.save_checkpoint_freq': CHECKPOINT_EVERY, **overrides})


def with_experiment(change: Callable[[Path], None] = lambda exp: None, **overrides):
    """A run folder holding a copy of the trained experiment, changed by ``change(experiment folder)``."""
    def prepare(run: Path, trained: Path, data: Path) -> dict:
        shutil.copytree(trained, run / 'experiments' / NAME, symlinks=True)
        change(run / 'experiments' / NAME)
        return options(data, **overrides)
    return prepare


def resume_from(make: Callable[[Path, Path], Path]):
    """``path: resume_state:`` set to what ``make(run folder, trained experiment)`` returns."""
    def prepare(run: Path, trained: Path, data: Path) -> dict:
        shutil.copytree(trained, run / 'experiments' / NAME, symlinks=True)
        return options(data, **{'path.resume_state': str(make(run, run / 'experiments' / NAME))})
    return prepare


def plain(**overrides):
    return lambda run, trained, data: options(data, **overrides)


def lmdb_copy_with_fifo(name: str):
    """datasets: train: dataroot_gt pointing at a copy of the GT LMDB whose ``name`` is a FIFO."""
    def prepare(run: Path, trained: Path, data: Path) -> dict:
        copy = run.parent / 'gt.lmdb'
        shutil.copytree(data / 'train' / 'tiny_HR_sub.lmdb', copy)
        fifo(copy / name)
        return options(data, **{'datasets.train.dataroot_gt': str(copy)})
    return prepare


def meta_info_fifo(run: Path, trained: Path, data: Path) -> dict:
    fifo(run.parent / 'meta_info.txt')
    return options(data, **{'datasets.val.meta_info_file': str(run.parent / 'meta_info.txt')})


def state_with_other_shapes(run: Path, experiment: Path) -> Path:
    """4.state with the optimizer's moments of its first parameter transposed: the count of tensors is right."""
    state = torch.load(experiment / 'training_states' / '4.state', weights_only=True)
    moments = state['optimizers'][0]['state'][0]
    for key in ('exp_avg', 'exp_avg_sq'):
        moments[key] = moments[key].reshape(-1, 1)
    torch.save(state, run.parent / 'other_shapes.state')
    return run.parent / 'other_shapes.state'


def state_fifo(run: Path, experiment: Path) -> Path:
    fifo(run.parent / 'pipe.state')
    return run.parent / 'pipe.state'


def state_with_fifo_weights(run: Path, experiment: Path) -> Path:
    fifo(experiment / 'models' / 'net_g_4.pth')
    return experiment / 'training_states' / '4.state'


AUTO = ('--auto_resume', )
CASES = [
    # item 6: what blocks when opened is refused by its kind
    Case('fifo_state_auto', with_experiment(lambda e: fifo(e / 'training_states' / '9.state')), 2,
         '9.state is a FIFO, not a training state file', AUTO),
    Case('folder_state_auto', with_experiment(lambda e: (e / 'training_states' / '9.state').mkdir()), 2,
         '9.state is a folder, not a training state file', AUTO),
    Case('fifo_weights_auto', with_experiment(lambda e: fifo(e / 'models' / 'net_g_4.pth')), 2,
         'net_g_4.pth are a FIFO, not a regular file', AUTO),
    Case('fifo_resume_state', resume_from(state_fifo), 2, 'pipe.state is a FIFO, not a regular file'),
    Case('device_resume_state', resume_from(lambda run, exp: Path('/dev/zero')), 2,
         'path: resume_state: /dev/zero is a character device, not a regular file'),
    Case('fifo_weights_resume_state', resume_from(state_with_fifo_weights), 2,
         'net_g_4.pth are a FIFO, not a regular file'),
    # item 15: a schedule shorter than the run; optimizer tensors of other shapes
    Case('cosine_periods_short', plain(**{'train.scheduler': {'type': 'CosineAnnealingRestartLR', 'periods': [2, 1],
                                                              'restart_weights': [1, 1], 'eta_min': 1e-7}}), 2,
         'train: scheduler: periods: [2, 1] add up to 3 iterations, fewer than train: total_iter: 6'),
    Case('optimizer_other_shapes', resume_from(state_with_other_shapes), 2,
         "holds exp_avg of shape (432, 1) for network_g's conv_first.weight of shape (16, 3, 3, 3)"),
    # messages: the kind of what stands where data are read; the newest weights missing
    Case('dataroot_device', plain(**{'datasets.train.dataroot_gt': '/dev/zero'}), 2,
         'datasets: train: dataroot_gt: /dev/zero is a character device, not a folder'),
    Case('lmdb_data_fifo', lmdb_copy_with_fifo('data.mdb'), 2, 'its data.mdb is a FIFO, not a regular file'),
    Case('meta_info_fifo', meta_info_fifo, 2, 'meta_info.txt is a FIFO, not a regular file'),
    Case('no_complete_pair', with_experiment(lambda e: [p.unlink() for p in e.glob('models/net_g_[0-9]*.pth')]), 2,
         'none of the 2 training state(s)', AUTO),
    Case('newest_weights_missing', with_experiment(lambda e: (e / 'models' / 'net_g_4.pth').unlink()), 0,
         'net_g_4.pth is missing); resuming from an older state', AUTO),
]


def listing(folder: Path) -> list:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob('*'))


@pytest.fixture(scope='module')
def results(tmp_path_factory) -> Dict[str, dict]:
    """The trained experiment, then every case run by the entry point: {id: {code, stderr, cwd, before, after}}."""
    root = tmp_path_factory.mktemp('states')
    data = make_tiny_data(root / 'data', train_images=3, val_images=1)
    first = root / 'first'
    first.mkdir()
    trained = run_module('asid_arch.cli.train', ['-opt', str(write_yaml(root / 'first.yml', options(data, ITERS)))],
                         first, timeout=600)
    assert trained.returncode == 0, trained.stderr[-3000:]
    specs, before = [], {}
    for case in CASES:
        run = root / case.id / 'run'
        run.mkdir(parents=True)
        opt = case.prepare(run, first / 'experiments' / NAME, data)
        before[case.id] = listing(run)
        specs.append({'id': case.id, 'module': 'train', 'cwd': str(run),
                      'argv': ['-opt', str(write_yaml(root / case.id / 'options.yml', opt)), *case.args]})
    table = run_entry_points(specs, root, timeout=600)  # a FIFO opened would block: the bound ends the test
    for case in CASES:
        table[case.id].update(before=before[case.id], after=listing(root / case.id / 'run'))
    return table


@pytest.mark.slow
@pytest.mark.parametrize('case', CASES, ids=[c.id for c in CASES])
def test_hostile_state_or_path(results, case):
    result = results[case.id]
    assert result['code'] == case.code, result['stderr'][-3000:]
    assert case.message in result['stderr'], result['stderr'][-3000:]
    assert 'Traceback' not in result['stderr'], result['stderr'][-3000:]
    if case.code == 2:
        assert result['after'] == result['before']  # refused before any work: no folder, log or checkpoint made
        errors = [line for line in result['stderr'].splitlines()
                  if line.startswith('asid-train:') and not line.startswith('asid-train: warning:')]
        assert len(errors) == 1, result['stderr'][-3000:]


@pytest.mark.slow
def test_newest_weights_missing_resumes_from_the_newest_complete_pair(results):
    result = results['newest_weights_missing']
    assert 'Resuming training from epoch: ' in result['stderr'] and 'iter: 2.' in result['stderr'], result['stderr']
    assert f'experiments/{NAME}/training_states/6.state' in result['after']
