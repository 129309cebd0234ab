"""asid-train resumes exactly: a run killed after a checkpoint, or stopped by SIGTERM/SIGUSR1 between checkpoints,
then resumed with ``--auto_resume``, ends bit-identical to the run that was never stopped; the data workers' count
does not change the weights.

Runs are real (asid-train in a subprocess, one thread, tiny ASID, 12 sub-images in batches of 4: an epoch is 3
iterations, so the runs cross epochs, checkpoints and validations). The stops come from a driver at known points,
never raced: SIGKILL right after a named checkpoint file is written; SIGTERM/SIGUSR1 sent to the run's whole process
group (data-loader workers included, as SLURM and ``kill -- -PGID`` do) at the end of a given iteration's optimizer
step, and again while that iteration's state is being written.
"""
from __future__ import annotations

import math
import re
import signal
import textwrap
from pathlib import Path

import pytest
import torch

from asid_arch.console import EXIT_REQUEUE

from helpers import make_tiny_data, run_python, tiny_train_options, write_yaml

ITERATIONS = 12
CHECKPOINT_EVERY = 4
VALIDATE_EVERY = 5
BATCH = 4
SUB_IMAGES = 12  # make_tiny_data's one 96x120 image in 48 px sub-images, step 24
BATCHES_PER_EPOCH = SUB_IMAGES // BATCH
NAME = 'exact'

# argv: mode target asid-train-arguments...; mode 'kill' (SIGKILL after the file `target` is saved), 'SIGTERM' or
# 'SIGUSR1' (sent to the process group at the end of iteration `target`'s step, and again while that iteration's
# .state is saved), 'SIGTERM-setup' (while the network is built, before any iteration), 'SIGTERM-last' (during the
# validation after the last iteration), 'run'
DRIVER = textwrap.dedent('''
    import os, signal, subprocess, sys
    from asid_arch.models import asid_model  # first: the torchvision alias BasicSR 1.4.2 needs
    import basicsr.models

    os.setpgrp()  # a process group of its own: the run and its data-loader workers
    mode, target = sys.argv[1], sys.argv[2]
    real_save, real_step = asid_model.save_checkpoint, asid_model.ASIDModel.optimize_parameters

    def signal_group():  # as SLURM or a shell would: from another process (workers obey their parent alone)
        subprocess.run(['kill', '-s', mode[3:].split('-')[0], '--', f'-{os.getpgrp()}'])

    real_build, real_validation = basicsr.models.build_model, asid_model.ASIDModel.validation

    def build(opt):
        if mode == 'SIGTERM-setup':
            signal_group()
        return real_build(opt)

    def validation(self, loader, current_iter, *args, **kwargs):
        if mode == 'SIGTERM-last' and current_iter == int(target):
            signal_group()
        return real_validation(self, loader, current_iter, *args, **kwargs)

    def save(obj, path, *args, **kwargs):
        name = os.path.basename(str(path))
        if mode in ('SIGTERM', 'SIGUSR1') and name == f'{target}.state':
            signal_group()  # a second signal while saving
        real_save(obj, path, *args, **kwargs)
        if mode == 'kill' and name == target:
            os.kill(os.getpid(), signal.SIGKILL)

    def step(self, current_iter):
        real_step(self, current_iter)
        if mode in ('SIGTERM', 'SIGUSR1') and current_iter == int(target):
            signal_group()

    asid_model.save_checkpoint = save
    asid_model.ASIDModel.optimize_parameters = step
    basicsr.models.build_model = build
    asid_model.ASIDModel.validation = validation
    from asid_arch.cli.train import main
    main(sys.argv[3:])
''')


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return make_tiny_data(tmp_path_factory.mktemp('resumedata'), train_images=1, val_images=1)


# two metrics better in opposite directions: whatever the figures do, one metric's best stays at an earlier
# validation, which a resumed run knows only from the training state
METRICS = {'psnr': {'type': 'calculate_psnr', 'crop_border': 2, 'test_y_channel': True},
           'psnr_lowest': {'type': 'calculate_psnr', 'crop_border': 2, 'test_y_channel': True, 'better': 'lower'}}
BEST_LINE = re.compile(r'# (\w+): (\S+)\s+Best: (\S+) @ (-?\d+) iter')


def options(data: Path, **overrides) -> dict:
    settings = {'logger.save_checkpoint_freq': CHECKPOINT_EVERY, 'val.val_freq': VALIDATE_EVERY,
                'train.ema_decay': 0.9, 'datasets.train.batch_size_per_gpu': BATCH, 'manual_seed': 7,
                'val.metrics': METRICS}
    settings.update(overrides)
    return tiny_train_options(NAME, data / 'train', data / 'valsrc', iters=ITERATIONS, **settings)


def train(folder: Path, opt: dict, mode: str = 'run', target='-', resume: bool = False):
    folder.mkdir(exist_ok=True)
    yml = write_yaml(folder / 'exact.yml', opt)
    return run_python(DRIVER, [mode, str(target), '-opt', str(yml), *(['--auto_resume'] if resume else [])], folder)


def experiment(folder: Path) -> Path:
    return folder / 'experiments' / NAME


def max_abs_difference(a, b) -> float:
    """The largest absolute difference between two loaded checkpoints (inf where their structure differs)."""
    if isinstance(a, torch.Tensor):
        if not isinstance(b, torch.Tensor) or a.shape != b.shape or a.dtype != b.dtype:
            return math.inf
        return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0
    if isinstance(a, dict):
        if not isinstance(b, dict) or a.keys() != b.keys():
            return math.inf
        return max([max_abs_difference(a[k], b[k]) for k in a], default=0.0)
    if isinstance(a, (list, tuple)):
        if not isinstance(b, (list, tuple)) or len(a) != len(b):
            return math.inf
        return max([max_abs_difference(x, y) for x, y in zip(a, b)], default=0.0)
    return 0.0 if a == b else math.inf


def assert_same_end(folder: Path, reference: Path) -> None:
    """The final network (params and EMA) and the final training state equal the reference's, bit for bit."""
    for rel in ('models/net_g_latest.pth', f'training_states/{ITERATIONS}.state'):
        ours = torch.load(experiment(folder) / rel, weights_only=True)
        theirs = torch.load(experiment(reference) / rel, weights_only=True)
        assert max_abs_difference(ours, theirs) == 0, rel
    net = torch.load(experiment(folder) / 'models/net_g_latest.pth', weights_only=True)
    assert set(net) == {'params', 'params_ema'}


def iterations_logged(log: str) -> list:
    return [int(v) for v in re.findall(r'iter:\s*(\d+),', log)]


@pytest.fixture(scope='module')
def reference(data, tmp_path_factory):
    folder = tmp_path_factory.mktemp('uninterrupted')
    result = train(folder, options(data))
    assert result.returncode == 0, result.stderr[-3000:]
    assert iterations_logged(result.stderr) == list(range(1, ITERATIONS + 1))
    return folder


@pytest.mark.slow
def test_sigkill_after_a_checkpoint_then_auto_resume_is_bit_identical(data, reference, tmp_path):
    killed = train(tmp_path, options(data), 'kill', f'{CHECKPOINT_EVERY}.state')
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (experiment(tmp_path) / 'models' / 'net_g_latest.pth').exists()
    resumed = train(tmp_path, options(data), resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert iterations_logged(resumed.stderr) == list(range(CHECKPOINT_EVERY + 1, ITERATIONS + 1))
    assert_same_end(tmp_path, reference)


@pytest.mark.slow
@pytest.mark.parametrize('signame, stop_at, workers', [('SIGTERM', 7, 2), ('SIGUSR1', 9, 0)])  # 9: an epoch's end
def test_signal_between_checkpoints_saves_that_iteration_and_resumes_bit_identical(data, reference, tmp_path,
                                                                                   signame, stop_at, workers):
    assert stop_at % CHECKPOINT_EVERY  # between checkpoints
    stopped = train(tmp_path, options(data, **{'datasets.train.num_worker_per_gpu': workers}), signame, stop_at)
    assert stopped.returncode == EXIT_REQUEUE, stopped.stderr[-3000:]
    assert f'{signame}: stopped after iteration {stop_at} ' in stopped.stderr
    states = sorted(p.name for p in (experiment(tmp_path) / 'training_states').iterdir())
    assert states == sorted([f'{i}.state' for i in range(CHECKPOINT_EVERY, stop_at, CHECKPOINT_EVERY)]
                            + [f'{stop_at}.state'])  # the older checkpoints untouched, no temporary left
    assert (experiment(tmp_path) / 'models' / f'net_g_{stop_at}.pth').exists()
    state = torch.load(experiment(tmp_path) / 'training_states' / f'{stop_at}.state', weights_only=True)
    assert state['iter'] == stop_at and state['epoch_position'] == (stop_at - 1) % BATCHES_PER_EPOCH + 1
    resumed = train(tmp_path, options(data), resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert iterations_logged(resumed.stderr) == list(range(stop_at + 1, ITERATIONS + 1))
    assert_same_end(tmp_path, reference)


@pytest.mark.slow
def test_a_resumed_run_keeps_the_best_validation_figures(data, reference, tmp_path):
    """The training state holds BasicSR's best validation figures: after a resume the "Best:" lines are those of the
    uninterrupted run (validations at 5, 10 and the end; the resumed run starts after the checkpoint of 8)."""
    killed = train(tmp_path, options(data), 'kill', f'{2 * CHECKPOINT_EVERY}.state')
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    state = torch.load(experiment(tmp_path) / 'training_states' / f'{2 * CHECKPOINT_EVERY}.state', weights_only=True)
    assert {record['iter'] for record in state['best_metric_results']['tinyval'].values()} == {VALIDATE_EVERY}
    resumed = train(tmp_path, options(data), resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    logged = BEST_LINE.findall(resumed.stderr)
    (log_file, ) = experiment(reference).glob('train_*.log')
    uninterrupted = BEST_LINE.findall(log_file.read_text())
    assert len(uninterrupted) == 3 * len(METRICS) and logged == uninterrupted[len(METRICS):], (logged, uninterrupted)
    assert any(best_iter == str(VALIDATE_EVERY) for *_, best_iter in logged)  # a best kept from before the resume


@pytest.mark.slow
def test_a_resume_with_another_enlarge_ratio_restarts_the_epoch_and_says_so(data, tmp_path):
    """The saved position belongs to the epoch of the interrupted run: with another dataset_enlarge_ratio the epoch
    is another order, so the interrupted epoch starts again from its first batch, with a warning naming the key."""
    killed = train(tmp_path, options(data), 'kill', f'{CHECKPOINT_EVERY}.state')  # batch 1 of epoch 1
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    resumed = train(tmp_path, options(data, **{'datasets.train.dataset_enlarge_ratio': 2}), resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    warnings = [line for line in resumed.stderr.splitlines() if 'no usable position in its epoch' in line]
    assert len(warnings) == 1 and 'datasets: train: dataset_enlarge_ratio' in warnings[0], resumed.stderr[-3000:]
    assert f'{SUB_IMAGES} then, {2 * SUB_IMAGES} now' in warnings[0]
    assert f'Start training from epoch: 1, iter: {CHECKPOINT_EVERY}\n' in resumed.stderr  # not "after batch 1"
    assert iterations_logged(resumed.stderr) == list(range(CHECKPOINT_EVERY + 1, ITERATIONS + 1))


@pytest.mark.slow
def test_two_workers_and_cpu_prefetch_give_the_weights_of_zero_workers(data, reference, tmp_path):
    opt = options(data, **{'datasets.train.num_worker_per_gpu': 2, 'datasets.train.prefetch_mode': 'cpu',
                           'datasets.train.num_prefetch_queue': 2})
    result = train(tmp_path, opt)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_end(tmp_path, reference)


@pytest.mark.slow
def test_another_seed_gives_other_weights(data, reference, tmp_path):
    """The equalities above are not vacuous: the seed reaches the weights."""
    result = train(tmp_path, options(data, manual_seed=8))
    assert result.returncode == 0, result.stderr[-3000:]
    ours = torch.load(experiment(tmp_path) / 'models/net_g_latest.pth', weights_only=True)['params']
    theirs = torch.load(experiment(reference) / 'models/net_g_latest.pth', weights_only=True)['params']
    assert max_abs_difference(ours, theirs) > 0


@pytest.mark.slow
def test_an_epoch_without_a_full_batch_stops_with_one_line(data, tmp_path):
    result = train(tmp_path, options(data, **{'datasets.train.batch_size_per_gpu': SUB_IMAGES + 1}))
    assert result.returncode == 2, result.stderr[-3000:]
    assert f'an epoch holds no batch of {SUB_IMAGES + 1} samples' in result.stderr.splitlines()[-1]


@pytest.mark.slow
def test_a_signal_during_set_up_stops_before_training_and_the_rerun_is_the_whole_run(data, reference, tmp_path):
    """SIGTERM while the run is still being set up (the network being built): exit 75 before any iteration, no
    checkpoint; the run started again (--auto_resume) is the uninterrupted one."""
    stopped = train(tmp_path, options(data, **{'datasets.train.num_worker_per_gpu': 2}), 'SIGTERM-setup')
    assert stopped.returncode == EXIT_REQUEUE, stopped.stderr[-3000:]
    assert 'stopped by SIGTERM before training' in stopped.stderr.splitlines()[-1]
    assert not iterations_logged(stopped.stderr)
    resumed = train(tmp_path, options(data), resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_end(tmp_path, reference)


@pytest.mark.slow
def test_a_signal_during_the_last_validation_lets_the_finished_run_end_complete(data, reference, tmp_path):
    """SIGTERM during the validation that follows the last iteration: the run is complete, so it ends with 0 and
    the uninterrupted run's result (the signal is recorded and ignored, never the default death)."""
    finished = train(tmp_path, options(data), 'SIGTERM-last', ITERATIONS)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert_same_end(tmp_path, reference)
