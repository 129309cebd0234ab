"""What BasicSR's train/test pipelines need to run safely on any machine, set up by our entry points.

Our entry points replace a few BasicSR functions, in memory and for this process only
(:func:`prepare_basicsr`); BasicSR on disk is not changed, and plain ``basicsr/train.py`` keeps its
own behaviour:

* ``parse_options`` (:func:`parse_options_safely`): the option file is read once, as data only
  (:mod:`asid_arch.pipeline.options_reading`: no tag that builds Python objects, no duplicate keys, bounded
  sizes), ``--force_yml`` entries are applied as YAML values to existing keys (BasicSR ``exec``-s
  them), and the options are checked (:mod:`asid_arch.pipeline.options_files`) before BasicSR's processing
  indexes them and again, fully, before any folder is made;
* ``init_dist`` and ``load_resume_state``: BasicSR 1.4.2 assumes CUDA there (``torch.cuda.set_device``
  and NCCL; resuming maps the state to ``torch.cuda.current_device()``). Without a GPU these use
  gloo and the CPU. A training state that loads but does not fit the run is refused by name;
* ``build_dataset``: every dataset is wrapped so that a sample that cannot be read (a damaged LMDB
  value, a broken image file) stops the run naming it (:mod:`asid_arch.pipeline.datasets`);
* ``copy_opt_file``: the experiment folder gets the text that was read, not a second read of the path;
* ``EnlargedSampler`` (training): :class:`asid_arch.pipeline.sampler.SeededSampler`, and asid-train runs
  :func:`asid_arch.pipeline.training_loop.train_pipeline` instead of BasicSR's loop: exact resume, and
  SIGTERM/SIGUSR1 save the iteration they interrupt (exit status 75, see docs/training.md).

``path: pretrain_network_g`` may name released weights (``asid_x4``, ...: :mod:`asid_arch.released`):
the name becomes the cached file, downloaded and checked on first use (with asid-train / asid-test
only; plain ``basicsr/train.py`` knows file paths alone).
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import os
import random
import sys
import time
from typing import Dict, List, Optional, Tuple

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ..console import EXIT_FAILED, EXIT_REQUEUE, EXIT_USAGE
from ..utils.asid_files import NotARegularFile, atomic_write, check_readable_file, path_kind
from .arguments import basicsr_parser
from .datasets import CheckedDataset, DataReadError
from .options_files import training_state_problem, validate_options
from .options_reading import OptionFileError, apply_overrides, options_from_text, read_option_text
from .options_values import OptionsError, check_structure
from .training_loop import EmptyEpoch, StopRequests, TrainingStopped, train_pipeline

RANDOM_SEED_RANGE = (1, 10000)  # BasicSR's seed when the option file gives none
DEBUG_PREFIX = 'debug_'  # --debug: BasicSR's debug mode (short intervals, no tensorboard)
DEBUG_INTERVAL = 8  # validation and checkpoint interval in debug mode, as BasicSR sets them
_option_texts: Dict[str, str] = {}  # option file -> the text parsed, for copy_opt_file


class TrainingStateError(ValueError):
    """A training state (``--auto_resume``, ``path: resume_state``) that cannot resume this run; one line."""


def init_dist_any_device(launcher: str, backend: str = 'nccl', **kwargs) -> None:
    """BasicSR's ``init_dist``; on a machine without CUDA, ``--launcher pytorch`` uses gloo."""
    from basicsr.utils import dist_util

    if torch.cuda.is_available() or launcher != 'pytorch':
        return dist_util.init_dist(launcher, backend, **kwargs)
    if mp.get_start_method(allow_none=True) is None:
        mp.set_start_method('spawn')
    dist.init_process_group(backend='gloo')


def leave_process_group() -> None:
    """End this process's part in the process group of a finished run, so that it exits 0 on every rank.

    The ranks first wait for each other (rank 0 validates alone at the end; a rank that left earlier would
    break its collectives). Then the garbage of the finished run is collected *before* the group is
    destroyed: the model's ``DistributedDataParallel`` wrapper holds the process group, and the model sits
    in reference cycles (its hooks refer to it), so ``destroy_process_group`` alone drops the registry's
    reference only, and gloo's worker and transport threads stay alive into interpreter shutdown, where
    tearing them down at an arbitrary point aborted the process (SIGABRT, "terminate called without an
    active exception") now and then after "End of training". Collected here, the group's destructor joins
    its threads while the interpreter is whole. Without a process group this does nothing.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    dist.barrier()
    gc.collect()  # the finished run's DDP wrappers: the last references to the group but the registry's
    dist.destroy_process_group()
    gc.collect()


def _state_iteration(name: str) -> Optional[int]:
    stem = name[:-len('.state')] if name.endswith('.state') else ''
    return int(stem) if stem.isdigit() else None


def _network_files(opt: dict, iteration: int) -> List[str]:
    """The weights files a training state of ``iteration`` resumes with: ``models/net_<name>_<iter>.pth`` of each
    ``network_*`` not listed in ``path: ignore_resume_networks`` (what BasicSR's ``check_resume`` sets)."""
    ignored = opt['path'].get('ignore_resume_networks') or []
    return [os.path.join(opt['path']['models'], f"net_{key[len('network_'):]}_{iteration}.pth")
            for key in opt if key.startswith('network_') and key not in ignored]


def _unusable_network_file(opt: dict, iteration: int, where: str) -> Optional[str]:
    """The first missing network file of a state (its path), or None; a path that is there but is not a regular
    file (a FIFO would block the reader, a device never ends) raises :class:`TrainingStateError` naming its kind."""
    for path in _network_files(opt, iteration):
        kind = path_kind(path)
        if kind == 'missing':
            return path
        if kind != 'regular file':
            raise TrainingStateError(f'{where}: its network weights {path} are a {kind}, not a regular file; '
                                     'replace it with the weights saved with that state, or remove both')
    return None


def load_resume_state_any_device(opt: dict):
    """BasicSR's ``load_resume_state``, mapping the state to the CPU when there is no GPU.

    With ``--auto_resume`` it takes the newest complete pair, a training state that loads and the network
    weights saved with it (``models/net_g_<iter>.pth``): a damaged newest state (truncated by a full disk,
    say) or one whose weights are missing is skipped with a warning naming it, and the one before is used;
    when states are there but none is complete, the run stops (nothing is started over). A state that
    cannot resume this run (given by ``path: resume_state`` and unreadable or without its weights; or,
    given either way, not a BasicSR training state, or another network's) stops the run before it starts
    (:class:`TrainingStateError`). What is not a regular file (a FIFO, a device, a folder named like a
    state or its weights) is refused by its kind before it is opened: reading a FIFO blocks forever.
    """
    location = f'cuda:{torch.cuda.current_device()}' if torch.cuda.is_available() else 'cpu'
    if opt['auto_resume']:
        state_dir = os.path.join('experiments', opt['name'], 'training_states')
        names = sorted((n for n in (os.listdir(state_dir) if os.path.isdir(state_dir) else [])
                        if _state_iteration(n) is not None), key=_state_iteration, reverse=True)
        skipped = []
        for name in names:
            path = os.path.join(state_dir, name)
            where = f'--auto_resume: {path}'
            kind = path_kind(path)
            if kind != 'regular file':
                raise TrainingStateError(f'{where} is a {kind}, not a training state file; move it out of '
                                         'training_states/')
            try:
                state = torch.load(path, map_location=location, weights_only=True)
            except Exception as err:  # truncated, empty: damage, skipped
                # (printed, not logged: BasicSR's logger must first be set up by the pipeline, with its file)
                print(f'asid-train: warning: {path} cannot be loaded ({type(err).__name__}); resuming from an older '
                      'state', file=sys.stderr)
                skipped.append(f'{name}: cannot be loaded ({type(err).__name__})')
                continue
            problem, missing = _state_findings(state, opt, where)
            if missing is not None:
                print(f'asid-train: warning: {path} has no network weights ({missing} is missing); resuming from '
                      'an older state', file=sys.stderr)
                skipped.append(f'{name}: {missing} is missing')
                continue
            # a file that loads but does not fit this run is not damage: an older state would not fit either
            return _checked_state(state, path, opt, where, (problem, None))
        if skipped:
            raise TrainingStateError(f'--auto_resume: none of the {len(skipped)} training state(s) in {state_dir} '
                                     f'can resume the run ({"; ".join(skipped[:3])}); restore the missing files, '
                                     'or move training_states/ aside to start over')
        return None
    path = opt['path'].get('resume_state')
    if not path:
        return None
    try:
        check_readable_file(path, 'path: resume_state:')
    except NotARegularFile as err:
        raise TrainingStateError(str(err)) from None
    try:
        state = torch.load(path, map_location=location, weights_only=True)
    except Exception as err:
        raise TrainingStateError(f'path: resume_state: {path} cannot be loaded ({type(err).__name__}: '
                                 f'{str(err).splitlines()[0][:200] if str(err) else "empty or truncated"})')
    return _checked_state(state, path, opt, f'path: resume_state: {path}')


def _state_findings(state: object, opt: dict, where: str) -> Tuple[Optional[str], Optional[str]]:
    """(why ``state`` is no training state, the first missing weights file of its iteration), each None when there
    is nothing to say (the weights only looked for in a training state); weights that are there but no regular
    file raise :class:`TrainingStateError` (:func:`_unusable_network_file`)."""
    problem = training_state_problem(state, opt, compare_network=False)
    return problem, None if problem else _unusable_network_file(opt, state['iter'], where)


def _checked_state(state: object, path: str, opt: dict, where: str,
                   findings: Optional[Tuple[Optional[str], Optional[str]]] = None):
    """``state`` after BasicSR's ``check_resume``, or :class:`TrainingStateError` when it cannot resume this run;
    ``findings``: its :func:`_state_findings` where the caller has them already."""
    from basicsr.utils import check_resume

    problem, missing = findings if findings is not None else _state_findings(state, opt, where)
    if missing is not None:  # (another network's state is named as such first)
        problem = training_state_problem(state, opt) or f'has no network weights: {missing} is missing'
    if problem is None:
        opt['path']['resume_state'] = path
        check_resume(opt, state['iter'])  # network_g's weights: models/net_g_<iter>.pth
        problem = training_state_problem(state, opt)  # against the network those weights describe
    if problem is not None:
        hint = 'move it out of training_states/, or run without --auto_resume' if where.startswith('--auto') else \
            'give the .state file of this experiment'
        raise TrainingStateError(f'{where} {problem}; {hint}')
    return state


def parse_options_safely(root_path: str, is_train: bool = True) -> Tuple[dict, argparse.Namespace]:
    """BasicSR 1.4.2's ``parse_options``, step by step, with the option file read as data only and checked.

    Order: the arguments; the file, read once (:func:`asid_arch.pipeline.options_reading.read_option_text`);
    ``--force_yml``; the structure check (BasicSR's processing below indexes these options); the
    distributed setup, the seed, the paths and debug mode as BasicSR sets them; the full check
    (:func:`asid_arch.pipeline.options_files.validate_options`). Problems raise :class:`OptionFileError` or
    :class:`OptionsError` before any folder is made.
    """
    from basicsr.utils import set_random_seed
    from basicsr.utils.dist_util import get_dist_info

    from ..released import fetch, released

    prog = 'asid-train' if is_train else 'asid-test'
    args = basicsr_parser(prog, f"BasicSR's {'training' if is_train else 'test'} pipeline").parse_args()
    text = read_option_text(args.opt)
    opt = options_from_text(text, args.opt)
    apply_overrides(opt, args.force_yml)
    problems = check_structure(opt, is_train)
    if problems:
        raise OptionsError(args.opt, problems)
    _option_texts[args.opt] = text

    if args.launcher == 'none':
        opt['dist'] = False
        print('Disable distributed.', flush=True)
    else:
        opt['dist'] = True
        dist_params = opt.get('dist_params') if args.launcher == 'slurm' else None
        init_dist_any_device(args.launcher, **(dist_params or {}))
    opt['rank'], opt['world_size'] = get_dist_info()
    if opt.get('manual_seed') is None:
        opt['manual_seed'] = random.randint(*RANDOM_SEED_RANGE)
        if opt['dist']:  # one seed for all ranks: they split one sample order
            chosen = [opt['manual_seed']]
            dist.broadcast_object_list(chosen, src=0)
            opt['manual_seed'] = chosen[0]
    set_random_seed(opt['manual_seed'] + opt['rank'])

    opt['auto_resume'] = args.auto_resume
    opt['is_train'] = is_train
    if args.debug and not opt['name'].startswith('debug'):
        opt['name'] = DEBUG_PREFIX + opt['name']
    if opt['num_gpu'] == 'auto':
        opt['num_gpu'] = torch.cuda.device_count()
    for phase, dataset in opt['datasets'].items():
        dataset['phase'] = phase.split('_')[0]
        dataset['scale'] = opt['scale']
        for key in ('dataroot_gt', 'dataroot_lq'):
            if dataset.get(key) is not None:
                dataset[key] = os.path.expanduser(dataset[key])
    for key, value in opt['path'].items():
        if value is not None and ('resume_state' in key or 'pretrain_network' in key):
            opt['path'][key] = os.path.expanduser(value)
    pretrained = opt['path'].get('pretrain_network_g')
    if isinstance(pretrained, str) and released(pretrained) and not os.path.lexists(pretrained):
        opt['path']['pretrain_network_g'] = str(fetch(pretrained))  # a released name: the cached, checked file
    root = os.path.join(root_path, 'experiments' if is_train else 'results', opt['name'])
    if is_train:
        opt['path'].update(experiments_root=root, models=os.path.join(root, 'models'), log=root,
                           training_states=os.path.join(root, 'training_states'),
                           visualization=os.path.join(root, 'visualization'))
        if 'debug' in opt['name']:  # BasicSR's test (a substring)
            if 'val' in opt:
                opt['val']['val_freq'] = DEBUG_INTERVAL
            opt['logger']['print_freq'] = 1
            opt['logger']['save_checkpoint_freq'] = DEBUG_INTERVAL
    else:
        opt['path'].update(results_root=root, log=root, visualization=os.path.join(root, 'visualization'))

    problems = validate_options(opt, is_train)
    if problems:
        raise OptionsError(args.opt, problems)
    return opt, args


def copy_option_text(opt_file: str, experiments_root: str) -> None:
    """BasicSR's ``copy_opt_file``: the option file into the experiment folder, with the time and the command
    on top; the text that was parsed is written (the path may be a pipe, or have changed since)."""
    from basicsr.utils.dist_util import get_dist_info

    if get_dist_info()[0] != 0:
        return
    text = _option_texts.get(opt_file)
    if text is None:
        text = read_option_text(opt_file)
    header = f'# GENERATE TIME: {time.asctime()}\n# CMD:\n# {" ".join(sys.argv)}\n\n'
    target = os.path.join(experiments_root, os.path.basename(opt_file))
    atomic_write(target, lambda f: f.write((header + text).encode('utf-8')))


def build_checked_dataset(dataset_opt: dict):
    """BasicSR's ``build_dataset``, wrapped: a sample that cannot be read raises :class:`DataReadError` naming it."""
    from basicsr.data import build_dataset

    return CheckedDataset(build_dataset(dataset_opt), str(dataset_opt.get('phase', '?')))


def prepare_basicsr() -> None:
    """Install the safe option reading, the CPU-capable replacements and the data checks in BasicSR's pipelines."""
    from .. import models  # noqa: F401  isort: skip  (first: the torchvision alias; registers the archs and model)

    import basicsr.test
    import basicsr.train
    import basicsr.utils.options

    from .sampler import SeededSampler

    basicsr.utils.options.init_dist = init_dist_any_device
    basicsr.train.load_resume_state = load_resume_state_any_device
    for pipeline in (basicsr.train, basicsr.test):
        pipeline.parse_options = parse_options_safely
        pipeline.build_dataset = build_checked_dataset
    basicsr.train.copy_opt_file = copy_option_text
    basicsr.train.EnlargedSampler = SeededSampler


def run_pipeline(pipeline_name: str, argv, prog: str) -> None:
    """Run asid-train's :func:`~asid_arch.pipeline.training_loop.train_pipeline` or ``basicsr.test.test_pipeline``
    in the current folder.

    User mistakes end with one clear message, not a traceback: exit status 2 for what stops a run
    before it starts (option file, options, training state, pretrained weights), 1 for a run that fails
    on the way (data that cannot be read, a diverged loss, a checkpoint that cannot be written),
    :data:`~asid_arch.console.EXIT_REQUEUE` (75) for a training stopped by SIGTERM or SIGUSR1 after
    saving the iteration it was in.
    """
    from ..utils.asid_errors import CheckpointSaveError, PretrainedWeightsError, TrainingDiverged

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    prepare_basicsr()
    import basicsr.test
    import basicsr.train

    stopped = None
    # a training records SIGTERM/SIGUSR1 from here until the process leaves: during its set-up (the stop comes
    # before the first iteration), its iterations, its last save and validation, and while the ranks leave together
    with StopRequests() if pipeline_name == 'train' else contextlib.nullcontext() as stop:
        try:
            try:
                if pipeline_name == 'train':
                    train_pipeline(os.getcwd(), stop)
                else:
                    basicsr.test.test_pipeline(os.getcwd())
            except TrainingStopped as err:  # every rank stopped after the same iteration
                stopped = str(err)
            # left outside the handler: an exception's traceback holds the run's frames, the model among them
            leave_process_group()
        except (OptionFileError, OptionsError, TrainingStateError, PretrainedWeightsError, EmptyEpoch) as err:
            print(f'{prog}: {err}', file=sys.stderr)
            sys.exit(EXIT_USAGE)
        except DataReadError as err:
            print(f'{prog}: cannot read the data: {err.summary()}', file=sys.stderr)
            sys.exit(EXIT_FAILED)
        except (TrainingDiverged, CheckpointSaveError) as err:
            print(f'{prog}: {err}', file=sys.stderr)
            sys.exit(EXIT_FAILED)
        except OSError as err:  # a folder or log that cannot be written, a file that vanished: named by the error
            print(f'{prog}: {err}', file=sys.stderr)
            sys.exit(EXIT_FAILED)
        if stopped is not None:
            print(f'{prog}: {stopped}', file=sys.stderr)
            sys.exit(EXIT_REQUEUE)
