"""asid-train's training loop: BasicSR 1.4.2's ``train_pipeline``, resumable exactly and stoppable without loss.

The steps, the log and the experiment folder are BasicSR's (its options, loggers, data loaders, model,
checkpoints and validation are called as they are); what differs:

* **Exact resume.** The training sampler is :class:`asid_arch.pipeline.sampler.SeededSampler`: each sample's
  augmentation is a pure function of (``manual_seed``, epoch, position), whatever the number of workers or
  the prefetch mode. A training state also holds the epoch's position (batches consumed), what defines the
  epoch's order (:func:`epoch_definition`), the seed, and every rank's random states (``ASIDModel``); a resumed
  run restores them and starts the interrupted epoch at the next batch without loading the ones before (from its
  first batch, with a warning naming what changed, when the epoch's definition is not the saved one). The data
  loader's own seed draws use a generator of their own, so opening an epoch's iterator does not move the global
  random sequence; validation does not either.
* **Preemption without loss.** SIGTERM or SIGUSR1 (SLURM's ``--signal``, ``scancel``, a spot instance going
  away) lets the current iteration end, then the network and the training state of *that* iteration are saved
  (atomically; existing checkpoints are untouched), one line is logged, and the process exits with
  :data:`EXIT_REQUEUE` (:class:`TrainingStopped`). Further signals meanwhile are ignored. Under DDP the ranks
  agree after every iteration on whether any of them was signalled, so all stop at the same iteration.
* ``train: deterministic: true`` selects deterministic GPU kernels (:func:`configure_determinism`).
* The run ends when ``total_iter`` iterations are done (BasicSR's epoch count assumes ``drop_last=False``
  and can stop a run short of it) and does not load a batch it will not train on.
"""
from __future__ import annotations

import contextlib
import datetime
import functools
import logging
import os
import signal
import threading
import time
from typing import Callable, Dict, List, Mapping, Optional, Union

import torch
import torch.distributed as dist

from ..console import EXIT_REQUEUE
from ..utils.asid_random import TORCH_SEED_MODULUS, derived_seed

STOP_SIGNALS = ('SIGTERM', 'SIGUSR1')  # what SLURM (--signal, preemption, scancel) and cloud schedulers send
STOP_SIGNUMS = tuple(getattr(signal, name) for name in STOP_SIGNALS if hasattr(signal, name))  # where they exist
LOADER_SEED_STREAM = 2  # the data loader's own generator: derived from (manual_seed, LOADER_SEED_STREAM, rank)
CUBLAS_DETERMINISTIC_WORKSPACE = ':4096:8'  # what cuBLAS needs for deterministic results (CUDA >= 10.2)
EPOCH_DEFINITION_LABELS = {  # an epoch definition's keys (epoch_definition), as a warning names them
    'batch_size': 'datasets: train: batch_size_per_gpu', 'world_size': 'number of processes',
    'dataset_size': 'number of training samples', 'epoch_size': 'datasets: train: dataset_enlarge_ratio (samples per '
    'epoch)', 'data_names': "training samples' names or order"}


class TrainingStopped(Exception):
    """The run stopped on a signal after saving the iteration it had finished (``saved``), or before its first
    iteration (the newest training state on disk, if any, is where it continues); resume with ``--auto_resume``."""

    def __init__(self, signum: int, iteration: int, saved: bool = True) -> None:
        what = (f'after iteration {iteration}; its network and training state are saved' if saved else
                f'before training (from iteration {iteration}); nothing new to save')
        super().__init__(f'stopped by {signal.Signals(signum).name} {what}: run again with --auto_resume to continue')
        self.signum = signum
        self.iteration = iteration


class EmptyEpoch(ValueError):
    """An epoch holds no full batch (fewer samples per process than ``batch_size_per_gpu``): nothing would train."""


class StopRequests:
    """While active (``with``), SIGTERM and SIGUSR1 are recorded instead of ending the process; the first one
    counts (``signum``, ``received_at``), later ones are ignored. Handlers are restored on leaving."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self.received_at: Optional[float] = None
        self._previous = {}

    def _record(self, signum: int, frame) -> None:
        if self.signum is None:
            self.signum, self.received_at = signum, time.perf_counter()

    def __enter__(self) -> 'StopRequests':
        for signum in STOP_SIGNUMS:
            try:
                self._previous[signum] = signal.signal(signum, self._record)
            except ValueError:  # not the main thread: signals stay as they were
                pass
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def summary(self, signum: int, iteration: int, epoch: int, position: int) -> str:
        """The line logged once the iteration a signal interrupted is saved (with the time since this rank got it)."""
        waited = '' if self.received_at is None else \
            f', {time.perf_counter() - self.received_at:.2f} s after the signal'
        return (f'{signal.Signals(signum).name}: stopped after iteration {iteration} (epoch {epoch}, batch '
                f'{position}); its network and training state are saved{waited}. Exit status {EXIT_REQUEUE}: run '
                'again with --auto_resume to continue.')

    def agreed(self, device: torch.device) -> Optional[int]:
        """The signal to stop on, the same on every rank (the largest signal number any rank received), or None."""
        signum = self.signum or 0
        if dist.is_available() and dist.is_initialized():
            flag = torch.tensor([signum], dtype=torch.int64,
                                device=device if dist.get_backend() == 'nccl' else torch.device('cpu'))
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            signum = int(flag.item())
        return signum or None


def _exit_on_parent_signal(parent: int, signums: tuple) -> None:
    """A worker's thread: a stop signal from the main process (the loader or ``multiprocessing`` ending the worker)
    ends the worker; one from anyone else (SLURM, ``kill -- -PGID``) is dropped."""
    while True:
        if signal.sigwaitinfo(signums).si_pid == parent:
            os._exit(0)


@contextlib.contextmanager
def _stop_signals_blocked():
    """Inside the block, SIGTERM and SIGUSR1 wait (a signal meanwhile is delivered when it ends): processes started
    here (data-loader workers, forked or spawned) inherit the blocked mask, so a signal to the whole process group
    while a worker is still importing cannot end it before :func:`_worker_init` takes the signals over."""
    if not hasattr(signal, 'pthread_sigmask'):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNUMS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _worker_init(worker_id: int, then: Optional[Callable[[int], None]] = None, parent: Optional[int] = None) -> None:
    """A data-loader worker leaves stop signals to the main process (``parent``: its pid): SLURM and a shell's
    ``kill -- -PGID`` signal every process of the job, and a worker that died of it would fail the main process
    before it saves. The signals (blocked since the worker started: :func:`_stop_signals_blocked`) are taken by a
    thread that obeys only the main process. Then BasicSR's init."""
    if hasattr(signal, 'sigwaitinfo'):  # Linux
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNUMS)
        parent = os.getppid() if parent is None else parent
        threading.Thread(target=_exit_on_parent_signal, args=(parent, STOP_SIGNUMS), daemon=True).start()
    elif hasattr(signal, 'pthread_sigmask'):  # elsewhere the worker keeps the default
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNUMS)
    if then is not None:
        then(worker_id)


def configure_determinism(train_opt: dict) -> None:
    """BasicSR's setting (``cudnn.benchmark``: the fastest kernels, picked by timing them, so a GPU run may differ
    from its repetition), or with ``train: deterministic: true`` deterministic kernels: cuDNN deterministic and
    not benchmarked, ``torch.use_deterministic_algorithms`` (a warning where an operation has no deterministic
    kernel) and cuBLAS's deterministic workspace (unless ``CUBLAS_WORKSPACE_CONFIG`` is set). CPUs are
    deterministic at a fixed thread count either way."""
    deterministic = bool(train_opt.get('deterministic'))
    if deterministic:
        os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', CUBLAS_DETERMINISTIC_WORKSPACE)
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    torch.use_deterministic_algorithms(deterministic, warn_only=True)


def _prefetcher(opt: dict, train_loader, logger):
    from basicsr.data.prefetch_dataloader import CPUPrefetcher, CUDAPrefetcher

    prefetch_mode = opt['datasets']['train'].get('prefetch_mode')
    if prefetch_mode is None or prefetch_mode == 'cpu':
        return CPUPrefetcher(train_loader)
    if prefetch_mode == 'cuda':
        logger.info(f'Use {prefetch_mode} prefetch dataloader')
        if opt['datasets']['train'].get('pin_memory') is not True:
            raise ValueError('Please set pin_memory=True for CUDAPrefetcher.')
        return CUDAPrefetcher(train_loader, opt)
    raise ValueError(f"Wrong prefetch_mode {prefetch_mode}. Supported ones are: None, 'cuda', 'cpu'.")


def epoch_definition(sampler, batch_size: int, world_size: int) -> Dict[str, Union[int, str]]:
    """What a saved position in an epoch depends on, besides the seed: the sampler's
    :meth:`~asid_arch.pipeline.sampler.SeededSampler.definition`, the batch size and the number of processes."""
    return {'batch_size': batch_size, 'world_size': world_size, **sampler.definition()}


def _definition_changes(saved: Mapping, definition: Mapping) -> List[str]:
    """What differs between the epoch definition a training state recorded and this run's, as option names.
    A change that follows from another one named (the samples per epoch from the number of samples or processes,
    the names from the number of samples) is not named again."""
    changed = [key for key in definition if saved.get(key) != definition[key]]
    implied = {'epoch_size': ('dataset_size', 'world_size'), 'data_names': ('dataset_size', )}
    shown = []
    for key in changed:
        if any(cause in changed for cause in implied.get(key, ())):
            continue
        if key == 'data_names':
            shown.append(f'the {EPOCH_DEFINITION_LABELS[key]}')
        else:
            shown.append(f'{EPOCH_DEFINITION_LABELS[key]}: {saved[key]} then, {definition[key]} now')
    return shown


def _resume_point(resume_state: Optional[dict], opt: dict, definition: Mapping, logger) -> tuple:
    """(epoch, iteration, batches of that epoch already trained on) to start from; the run's seed set from the state.

    The position is used only when the state recorded the epoch ``definition`` (:func:`epoch_definition`) and it is
    this run's: otherwise the interrupted epoch starts again from its first batch, with a warning naming what
    changed (a position in another order would skip other samples than those the interrupted run trained on)."""
    if not resume_state:
        return 0, 0, 0
    epoch, iteration = resume_state['epoch'], resume_state['iter']
    logger.info(f'Resuming training from epoch: {epoch}, iter: {iteration}.')
    position = resume_state.get('epoch_position')
    if resume_state.get('manual_seed') is not None and resume_state['manual_seed'] != opt['manual_seed']:
        logger.info(f"manual_seed {resume_state['manual_seed']} of the training state continues the run "
                    f"(the options give {opt['manual_seed']})")
        opt['manual_seed'] = resume_state['manual_seed']
    unrecorded = [EPOCH_DEFINITION_LABELS[key] for key in definition if key not in resume_state]
    if position is None:
        why = 'it was not saved by asid-train'
    elif unrecorded:
        why = f"it does not record its epoch's {', '.join(unrecorded)} (saved by an older asid-train)"
    else:
        changes = _definition_changes(resume_state, definition)
        why = f"its epoch was another: {'; '.join(changes)}" if changes else ''
    if why:
        logger.warning(f'The training state holds no usable position in its epoch ({why}): epoch {epoch} starts '
                       'again from its first batch, and the run will not be the one that was interrupted.')
        return epoch, iteration, 0
    return epoch, iteration, position


def _save(model, epoch: int, iteration: int, position: int, opt: dict, definition: Mapping) -> None:
    """The network (with its EMA) and the training state of ``iteration``, with the position in its epoch and what
    defines the epoch (:func:`epoch_definition`)."""
    model.resume_extras = {'epoch_position': position, 'manual_seed': opt['manual_seed'], **definition}
    model.save(epoch, iteration)


def train_pipeline(root_path: str, stop: Optional[StopRequests] = None) -> None:
    """BasicSR's ``train_pipeline`` (same options, folders, log and checkpoints), resumable exactly; see the module.

    Raises :class:`TrainingStopped` after saving when SIGTERM or SIGUSR1 arrived.
    """
    import basicsr.train as bt
    from basicsr.models import build_model
    from basicsr.utils import (AvgTimer, MessageLogger, get_env_info, get_root_logger, get_time_str, make_exp_dirs,
                               mkdir_and_rename)
    from basicsr.utils.options import dict2str

    opt, args = bt.parse_options(root_path, is_train=True)
    opt['root_path'] = root_path
    configure_determinism(opt['train'])

    resume_state = bt.load_resume_state(opt)
    if resume_state is None:
        make_exp_dirs(opt)
        if opt['logger'].get('use_tb_logger') and 'debug' not in opt['name'] and opt['rank'] == 0:
            mkdir_and_rename(os.path.join(opt['root_path'], 'tb_logger', opt['name']))
    bt.copy_opt_file(args.opt, opt['path']['experiments_root'])

    log_file = os.path.join(opt['path']['log'], f"train_{opt['name']}_{get_time_str()}.log")
    logger = get_root_logger(logger_name='basicsr', log_level=logging.INFO, log_file=log_file)
    logger.info(get_env_info())
    logger.info(dict2str(opt))
    tb_logger = bt.init_tb_loggers(opt)

    train_set = opt['datasets'].get('train') or {}
    if train_set.get('prefetch_mode') == 'cpu' and not train_set.get('num_worker_per_gpu'):
        # BasicSR's cpu prefetch runs the dataset in a thread of this process; with no workers that thread would
        # seed the random generators the training draws from meanwhile (and saves): load in this thread instead
        logger.info('prefetch_mode: cpu without data-loader workers: samples are loaded by the training thread')
        train_set['prefetch_mode'] = None
    train_loader, train_sampler, val_loaders, _, total_iters = bt.create_train_val_dataloader(opt, logger)
    batch_size = train_loader.batch_size
    definition = epoch_definition(train_sampler, batch_size, opt['world_size'])
    start_epoch, current_iter, position = _resume_point(resume_state, opt, definition, logger)
    train_sampler.set_seed(opt['manual_seed'])
    loader_generator = torch.Generator()
    loader_generator.manual_seed(derived_seed(opt['manual_seed'], LOADER_SEED_STREAM, opt['rank']) % TORCH_SEED_MODULUS)
    train_loader.generator = loader_generator  # iterators draw their worker seed here, not from the global generator
    train_loader.worker_init_fn = functools.partial(_worker_init, then=train_loader.worker_init_fn, parent=os.getpid())

    model = build_model(opt)
    if resume_state:
        model.resume_training(resume_state)  # optimizers, schedulers, grad scaler, this rank's random states
    msg_logger = MessageLogger(opt, current_iter, tb_logger)
    prefetcher = _prefetcher(opt, train_loader, logger)

    logger.info(f'Start training from epoch: {start_epoch}, iter: {current_iter}'
                f'{f" (after batch {position} of the epoch)" if position else ""}')
    data_timer, iter_timer = AvgTimer(), AvgTimer()
    start_time = time.time()
    save_freq, print_freq = opt['logger']['save_checkpoint_freq'], opt['logger']['print_freq']
    val_freq = opt['val']['val_freq'] if opt.get('val') is not None else None
    epoch = start_epoch
    try:
        with contextlib.ExitStack() as stack:
            if stop is None:  # called on its own: the signals are recorded while it runs
                stop = stack.enter_context(StopRequests())
            signum = stop.agreed(model.device)
            if signum is not None:  # before the first iteration: nothing new to save
                raise TrainingStopped(signum, current_iter, saved=False)
            while current_iter < total_iters:
                train_sampler.set_epoch(epoch, start=position * batch_size)
                with _stop_signals_blocked():  # new data-loader workers start with them blocked (_worker_init)
                    prefetcher.reset()
                train_data = prefetcher.next()
                if train_data is None and position == 0:
                    raise EmptyEpoch(f'datasets: train: an epoch holds no batch of {batch_size} samples '
                                     f'({len(train_sampler)} samples for this process): lower batch_size_per_gpu or '
                                     'raise dataset_enlarge_ratio')
                while train_data is not None:
                    data_timer.record()
                    current_iter += 1
                    position += 1
                    model.update_learning_rate(current_iter, warmup_iter=opt['train'].get('warmup_iter', -1))
                    model.feed_data(train_data)
                    model.optimize_parameters(current_iter)
                    iter_timer.record()
                    if current_iter == 1:
                        msg_logger.reset_start_time()
                    if current_iter % print_freq == 0:
                        log_vars = {'epoch': epoch, 'iter': current_iter, 'lrs': model.get_current_learning_rate(),
                                    'time': iter_timer.get_avg_time(), 'data_time': data_timer.get_avg_time()}
                        log_vars.update(model.get_current_log())
                        msg_logger(log_vars)
                    saved = current_iter % save_freq == 0
                    if saved:
                        logger.info('Saving models and training states.')
                        _save(model, epoch, current_iter, position, opt, definition)
                    if val_freq is not None and current_iter % val_freq == 0:
                        if len(val_loaders) > 1:
                            logger.warning('Multiple validation datasets are *only* supported by SRModel.')
                        for val_loader in val_loaders:
                            model.validation(val_loader, current_iter, tb_logger, opt['val']['save_img'])
                    signum = stop.agreed(model.device)
                    if signum is not None:
                        if not saved:
                            _save(model, epoch, current_iter, position, opt, definition)
                        logger.info(stop.summary(signum, current_iter, epoch, position))
                        raise TrainingStopped(signum, current_iter)
                    if current_iter >= total_iters:
                        break
                    data_timer.start()
                    iter_timer.start()
                    train_data = prefetcher.next()
                epoch += 1
                position = 0

            consumed_time = str(datetime.timedelta(seconds=int(time.time() - start_time)))
            logger.info(f'End of training. Time consumed: {consumed_time}')
            logger.info('Save the latest model.')
            model.save(epoch=-1, current_iter=-1)  # -1 stands for the latest
            if opt.get('val') is not None:
                for val_loader in val_loaders:
                    model.validation(val_loader, current_iter, tb_logger, opt['val']['save_img'])
    finally:  # also when stopped by a signal
        if tb_logger:
            tb_logger.close()
