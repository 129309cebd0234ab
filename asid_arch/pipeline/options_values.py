"""The structure of a BasicSR option dict, checked before any work and without touching a file; every message names
the option key.

BasicSR itself finds most of these problems late (after making the experiment folder, building data
loaders, or at the first validation) and with a bare traceback, or not at all (a warm-up longer than
the run trains at a fraction of the learning rate). :func:`check_structure` checks the type of every
option that BasicSR's pipelines and models index, and the values that would fail or mislead later (a
``name`` that is a path, ``scale: 2.0``, ``val_freq: 0``, a non-finite learning rate, a tile size of 0,
...). It runs before BasicSR's own option processing, which indexes ``name``, ``num_gpu``, ``datasets``
and ``path``. What needs the files is :mod:`asid_arch.pipeline.options_files`.
"""
from __future__ import annotations

import copy
import difflib
import inspect
import math
import os
from numbers import Number
from typing import List, Mapping, Optional

import torch

from ..utils.asid_errors import first_line
from ..utils.asid_files import name_max
from .options_reading import kind_of

NAME_ROOM = len('train_debug__20260101_120000.log')  # what BasicSR adds to <name> in its longest file name
# what BasicSR reads at the top level of an option file (and what parse_options adds)
TOP_LEVEL_KEYS = ('name', 'model_type', 'scale', 'num_gpu', 'manual_seed', 'datasets', 'network_g', 'network_d', 'path',
                  'train', 'val', 'logger', 'dist_params', 'find_unused_parameters', 'use_static_graph', 'is_train',
                  'dist', 'rank', 'world_size', 'auto_resume', 'root_path')
MODELS_WITH_KNOWN_KEYS = ('ASIDModel', 'SRModel')
# option keys that only ASIDModel reads: (section, key, what ASIDModel does, what another model does instead)
ASIDMODEL_ONLY = (('val', 'tile', 'runs the tiled protocol', 'evaluate whole images'),
                  ('train', 'amp', 'reads this', 'train without mixed precision'),
                  ('train', 'compile', 'reads this', 'train without compiling'))
MAX_SEED = 2**31 - 1  # numpy's seeds are 32-bit, and BasicSR seeds it with manual_seed + rank
IO_BACKENDS = ('disk', 'lmdb')  # what PairedImageDataset reads in these pipelines (memcached needs a server)
PREFETCH_MODES = (None, 'cpu', 'cuda')
SCHEDULERS = ('MultiStepLR', 'MultiStepRestartLR', 'CosineAnnealingRestartLR')  # BasicSR's setup_schedulers
CHEAP_LOSSES = ('L1Loss', 'MSELoss', 'CharbonnierLoss')  # built on trial (a perceptual loss would load VGG)
TILE_KEYS = ('size', 'overlap')
HAT_TILE_KEYS = ('tile_size', 'tile_pad')  # HAT's top-level `tile:` (tile_pad px around each tile_size px tile)
TEST_PHASES = ('test', 'val')  # what BasicSR's build_dataloader accepts in a test file (key before any `_`)


class OptionsError(ValueError):
    """Problems found in an option file; ``str()`` lists them, one per line."""

    def __init__(self, source: str, problems: List[str]) -> None:
        self.problems = problems
        super().__init__(f'invalid options in {source}:\n' + '\n'.join(f'  - {p}' for p in problems))


def _registered(registry, name: object) -> bool:
    """``name`` is registered (BasicSR's ``Registry.get`` also tries ``{name}_basicsr``)."""
    return isinstance(name, str) and (name in registry or f'{name}_basicsr' in registry)


# ----------------------------------------------------------------------------------------------
# Typed values: each appends a problem naming the key, and says whether the value can be used
# ----------------------------------------------------------------------------------------------
def _number(problems: List[str], where: str, value, integer: bool = False, minimum: float = None,
            whole: bool = False) -> bool:
    """``value`` must be a finite number (an ``int`` when ``integer``; an int or a float without a fraction,
    such as YAML's ``!!float 5e3``, when ``whole``) above 0, or at least ``minimum``."""
    kind = 'a whole number' if integer or whole else 'a number'
    if value is None:
        problems.append(f'{where}: missing ({kind})')
        return False
    if isinstance(value, bool) or not isinstance(value, (int if integer else Number)):
        hint = ''
        if isinstance(value, str):
            try:
                float(value)
                exponent = 'e' in value.lower() and '.' not in value
                hint = (f' (YAML reads {value} as text: write it with a decimal point, e.g. 2.0e-4, or as '
                        f'!!float {value})' if exponent else ' (text: write it without quotes)')
            except ValueError:
                pass
        problems.append(f'{where}: {value!r} is not {kind}{hint}')
        return False
    if not math.isfinite(value):
        problems.append(f'{where}: {value!r} must be a finite number')
        return False
    if whole and value != int(value):
        problems.append(f'{where}: {value!r} is not {kind}')
        return False
    if (value < minimum) if minimum is not None else (value <= 0):
        bound = f'>= {minimum}' if minimum is not None else '> 0'
        problems.append(f'{where}: {value!r} must be {bound}')
        return False
    return True


def _flag(problems: List[str], where: str, value, required: bool = False) -> bool:
    """``value`` must be true or false (None only when not ``required``)."""
    if value is None and not required:
        return True
    if not isinstance(value, bool):
        problems.append(f'{where}: missing (true or false)' if value is None else
                        f'{where}: {value!r} is not true or false')
        return False
    return True


def _text(problems: List[str], where: str, value, required: bool = False, what: str = 'text') -> bool:
    """``value`` must be text (None only when not ``required``)."""
    if value is None and not required:
        return True
    if not isinstance(value, str) or not value:
        problems.append(f'{where}: missing ({what})' if value is None else f'{where}: {value!r} is not {what}')
        return False
    return True


def _section(problems: List[str], parent: Mapping, key: str, where: str, required: bool,
             example: str = '') -> Optional[Mapping]:
    """``parent[key]`` when it is a mapping; None (with a problem when it is required or not a mapping)."""
    value = parent.get(key)
    if value is None:
        if required:
            problems.append(f'{where}: {"missing" if key not in parent else "empty"}{example}')
        return None
    if not isinstance(value, Mapping):
        problems.append(f'{where}: must be a mapping{example}, not {kind_of(value)} ({value!r:.60})')
        return None
    return value


def _list_of_numbers(problems: List[str], where: str, value, whole: bool = False) -> None:
    if not isinstance(value, (list, tuple)):
        problems.append(f'{where}: {value!r} is not a list')
        return
    for item in value:
        if not _number(problems, where, item, whole=whole, minimum=0):
            return


# ----------------------------------------------------------------------------------------------
# Structure: the options BasicSR's pipelines index, checked before BasicSR processes them
# ----------------------------------------------------------------------------------------------
def check_structure(opt: Mapping, is_train: bool = True) -> List[str]:
    """Problems with the type or value of options that BasicSR's pipelines and models index; no file is read.

    These run before BasicSR's own option processing (``opt['name']``, ``opt['num_gpu']``,
    ``opt['datasets'].items()``, ``opt['path'].items()``) and before any folder is made.
    """
    import asid_arch.models  # noqa: F401  isort: skip  (first: the torchvision alias basicsr 1.4.2 needs)
    import basicsr.data  # noqa: F401  (fills the registries: datasets, losses, metrics, models)
    import basicsr.losses  # noqa: F401
    import basicsr.metrics  # noqa: F401
    import basicsr.models  # noqa: F401
    from basicsr.utils.registry import MODEL_REGISTRY

    problems: List[str] = []
    _check_name(opt.get('name'), problems)
    model_type = opt.get('model_type')
    if model_type is None:
        problems.append('model_type: missing (ASIDModel, or SRModel)')
    elif not _registered(MODEL_REGISTRY, model_type):
        problems.append(f'model_type: {model_type!r} is not a registered model (use ASIDModel or SRModel)')
    if 'scale' not in opt:
        problems.append('scale: missing (the upscaling factor, e.g. scale: 2)')
    else:
        _number(problems, 'scale', opt['scale'], integer=True)
    _check_num_gpu(opt, problems)
    seed = opt.get('manual_seed')
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED):
        problems.append(f'manual_seed: {seed!r} must be a whole number from 0 to {MAX_SEED} (or ~ for a random seed)')
    datasets = _section(problems, opt, 'datasets', 'datasets', True,
                        ' (train: and val: for training; test_1:, test_2:, ... for testing)')
    if datasets is not None:
        _check_datasets_structure(datasets, is_train, problems)
    net = _section(problems, opt, 'network_g', 'network_g', True, ' (needs at least `type: ASID`)')
    if net is not None and not isinstance(net.get('type'), str):
        problems.append('network_g: type: missing (e.g. type: ASID)' if net.get('type') is None else
                        f"network_g: type: {net.get('type')!r} is not the name of an architecture (e.g. ASID)")
    path = _section(problems, opt, 'path', 'path', True, ' (e.g. pretrain_network_g: ~)')
    if path is not None:
        _check_path_structure(path, problems)
    if is_train:
        train = _section(problems, opt, 'train', 'train', True)
        if train is not None:
            _check_train_structure(opt, train, problems)
        logger = _section(problems, opt, 'logger', 'logger', True,
                          ' (print_freq:, save_checkpoint_freq:, use_tb_logger:)')
        if logger is not None:
            _check_logger_structure(logger, problems)
    val = _section(problems, opt, 'val', 'val', not is_train, ' (save_img:, metrics:)')
    if val is not None:
        _check_val_structure(val, is_train, problems)
    _section(problems, opt, 'dist_params', 'dist_params', False, ' (backend:, port:)')
    for key in ('find_unused_parameters', 'use_static_graph'):
        _flag(problems, key, opt.get(key))
    _check_top_level(opt, problems)
    if model_type != 'ASIDModel' and isinstance(model_type, str):
        for section, key, does, instead in ASIDMODEL_ONLY:
            part = opt.get(section)
            if isinstance(part, Mapping) and part.get(key) not in (None, False):
                problems.append(f'{section}: {key}: only model_type: ASIDModel {does}; {model_type} would '
                                f'silently {instead}')
    return problems


def _check_name(name, problems: List[str]) -> None:
    """``name`` names the folders experiments/<name>, results/<name> and tb_logger/<name>: it must be one plain
    folder name. (``name: ../data`` made BasicSR move the user's ``data`` folder aside on the second run.)"""
    if name is None:
        problems.append('name: missing (the experiment name: folders experiments/<name> and results/<name>)')
        return
    if not isinstance(name, str):
        problems.append(f'name: {name!r} is not text (the experiment name, a folder name)')
        return
    separators = {'/', '\\', os.sep, os.altsep} - {None}
    if (name.strip() in ('', '.', '..') or any(sep in name for sep in separators) or os.path.isabs(name)
            or not name.isprintable()):
        problems.append(f'name: {name!r} must be a plain folder name (no / or \\, not . or .., not empty): it names '
                        'the folders experiments/<name> and results/<name>')
        return
    longest, limit = len(os.fsencode(name)) + NAME_ROOM, name_max('.')
    if longest > limit:
        problems.append(f'name: {len(os.fsencode(name))} bytes long: the log file train_<name>_<date>_<time>.log '
                        f'(with --debug, debug_<name>) would be {longest} bytes, above the {limit} a file name may '
                        f'have here; give a name of at most {limit - NAME_ROOM} bytes')


def _check_num_gpu(opt: Mapping, problems: List[str]) -> None:
    if 'num_gpu' not in opt:
        problems.append('num_gpu: missing (auto: every GPU, 0: the CPU)')
        return
    value = opt['num_gpu']
    if value == 'auto':
        return
    if _number(problems, 'num_gpu', value, integer=True, minimum=0) and value > torch.cuda.device_count():
        problems.append(f'num_gpu: {value}, but this machine has {torch.cuda.device_count()} CUDA GPU(s) '
                        '(use num_gpu: auto, or 0 for the CPU)')


def _check_datasets_structure(datasets: Mapping, is_train: bool, problems: List[str]) -> None:
    if is_train and 'train' not in datasets:
        problems.append('datasets: train: missing')
    if not datasets:
        problems.append('datasets: empty (test_1: {name:, type:, dataroot_gt:, ...})')
    for phase in datasets:
        if not isinstance(phase, str):
            problems.append(f'datasets: {phase!r}: a dataset entry is named by text (train, val, test_1, ...)')
            continue
        kind = phase.split('_')[0]
        if is_train and phase != 'train' and kind != 'val':
            problems.append(f"datasets: {phase}: not an entry BasicSR's training reads (train, val, val_1, val_2, ...)")
            continue
        if not is_train and kind not in TEST_PHASES:
            problems.append(f"datasets: {phase}: not an entry BasicSR's testing reads (test, test_1, test_2, ..., val)")
            continue
        ds = _section(problems, datasets, phase, f'datasets: {phase}', True, ' (name:, type:, dataroot_gt:, ...)')
        if ds is not None:
            _check_dataset_structure(phase, ds, problems)


def _check_dataset_structure(phase: str, ds: Mapping, problems: List[str]) -> None:
    from basicsr.utils.registry import DATASET_REGISTRY

    where = f'datasets: {phase}'
    train = phase == 'train'
    _text(problems, f'{where}: name', ds.get('name'), required=not train, what='text (BasicSR logs it)')
    dtype = ds.get('type')
    if dtype is None:
        problems.append(f'{where}: type: missing (e.g. PairedImageDataset)')
    elif not _registered(DATASET_REGISTRY, dtype):
        problems.append(f'{where}: type: {dtype!r} is not a registered dataset (e.g. PairedImageDataset)')
    workers_ok = False
    if train:
        _number(problems, f'{where}: batch_size_per_gpu', ds.get('batch_size_per_gpu'), integer=True)
        workers_ok = _number(problems, f'{where}: num_worker_per_gpu', ds.get('num_worker_per_gpu'), integer=True,
                             minimum=0)
        _number(problems, f'{where}: dataset_enlarge_ratio', ds.get('dataset_enlarge_ratio', 1))
        prefetch = ds.get('prefetch_mode')
        if prefetch not in PREFETCH_MODES:
            problems.append(f'{where}: prefetch_mode: {prefetch!r} is not one of ~, cpu, cuda')
        elif prefetch == 'cuda' and (ds.get('pin_memory') is not True or not torch.cuda.is_available()):
            problems.append(f'{where}: prefetch_mode: cuda needs pin_memory: true and a CUDA GPU')
        elif prefetch == 'cpu':
            _number(problems, f'{where}: num_prefetch_queue', ds.get('num_prefetch_queue', 1), integer=True)
    for key in ('pin_memory', 'persistent_workers'):
        _flag(problems, f'{where}: {key}', ds.get(key))
    if ds.get('persistent_workers') is True and not (workers_ok and ds['num_worker_per_gpu'] > 0):
        problems.append(f'{where}: persistent_workers: true needs data-loader workers (num_worker_per_gpu > 0; '
                        'validation and test loaders have none)')
    if dtype == 'PairedImageDataset':
        _check_paired_structure(where, train, ds, problems)


def _check_paired_structure(where: str, train: bool, ds: Mapping, problems: List[str]) -> None:
    for key in ('dataroot_gt', 'dataroot_lq'):
        _text(problems, f'{where}: {key}', ds.get(key), required=True, what='a folder path')
    backend = _section(problems, ds, 'io_backend', f'{where}: io_backend', True, ' (type: disk, or type: lmdb)')
    if backend is not None:
        if backend.get('type') not in IO_BACKENDS:
            problems.append(f"{where}: io_backend: type: {backend.get('type')!r} is not one of "
                            f"{', '.join(IO_BACKENDS)}")
        for key in backend:
            if key != 'type':
                problems.append(f'{where}: io_backend: {key}: not an option of the disk or lmdb backends')
    tmpl = ds.get('filename_tmpl', '{}')
    try:
        usable = isinstance(tmpl, str) and tmpl.format('a') != tmpl.format('b')
    except (IndexError, KeyError, ValueError, AttributeError):
        usable = False
    if not usable:
        problems.append(f"{where}: filename_tmpl: {tmpl!r} must be text with one {{}} where the GT file's name goes "
                        "(e.g. '{}', or '{}x2')")
    _text(problems, f'{where}: meta_info_file', ds.get('meta_info_file'), what='a file path')
    if ds.get('color') not in (None, 'y'):
        problems.append(f"{where}: color: {ds.get('color')!r} must be y (Y channel only) or absent")
    for key in ('mean', 'std'):
        if ds.get(key) is not None:
            _list_of_numbers(problems, f'{where}: {key}', ds[key])
    if train:
        gt_size = ds.get('gt_size')
        if gt_size is None:
            problems.append(f'{where}: gt_size: missing (the HR patch size, e.g. 128 for 64 px LR patches at x2)')
        else:
            _number(problems, f'{where}: gt_size', gt_size, integer=True)
        for key in ('use_hflip', 'use_rot'):
            _flag(problems, f'{where}: {key}', ds.get(key), required=True)


def _check_path_structure(path: Mapping, problems: List[str]) -> None:
    for key, value in path.items():
        where = f'path: {key}'
        if not isinstance(key, str):
            problems.append(f'path: {key!r}: not an option of path (pretrain_network_g, strict_load_g, ...)')
        elif key.startswith(('pretrain_network', 'param_key')) or 'resume_state' in key:
            _text(problems, where, value, what='a file path, or ~' if 'param_key' not in key else 'a key name, or ~')
        elif key.startswith('strict_load'):
            _flag(problems, where, value)
        elif key == 'ignore_resume_networks':
            if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
                problems.append(f'{where}: {value!r} must be a list of network names, e.g. [network_g]')
        else:  # BasicSR makes a folder of every other path entry
            _text(problems, where, value, required=True, what='a folder path (BasicSR makes this folder)')


def _check_train_structure(opt: Mapping, train: Mapping, problems: List[str]) -> None:
    total_ok = _number(problems, 'train: total_iter', train.get('total_iter'), whole=True)
    warmup = train.get('warmup_iter')
    if warmup is not None and _number(problems, 'train: warmup_iter', warmup, whole=True, minimum=-math.inf):
        if total_ok and warmup >= train['total_iter']:
            problems.append(f'train: warmup_iter: {warmup} is not shorter than train: total_iter: '
                            f"{train['total_iter']}: the learning rate would ramp up for the whole run and never "
                            'reach optim_g: lr (use warmup_iter: -1 for no warm-up)')
    deterministic = train.get('deterministic')  # asid-train's (pipeline/training_loop.py)
    if deterministic is not None and not isinstance(deterministic, bool):
        problems.append(f'train: deterministic: {deterministic!r} must be true or false')
    ema = train.get('ema_decay')
    if ema is not None and _number(problems, 'train: ema_decay', ema, minimum=0) and ema >= 1:
        problems.append(f'train: ema_decay: {ema} must be below 1 (0: off; e.g. 0.999)')
    optim = _section(problems, train, 'optim_g', 'train: optim_g', True, ' (type: AdamW, lr: 5.0e-4, ...)')
    if optim is not None:
        _check_optimizer(opt.get('model_type'), optim, problems)
    scheduler = _section(problems, train, 'scheduler', 'train: scheduler', True,
                         ' (type: MultiStepLR, milestones: [...], gamma: 0.5)')
    if scheduler is not None:
        _check_scheduler(scheduler, problems, train['total_iter'] if total_ok else None)
    if opt.get('model_type') in MODELS_WITH_KNOWN_KEYS:
        losses = [key for key in ('pixel_opt', 'perceptual_opt') if train.get(key) is not None]
        if not losses:
            problems.append('train: pixel_opt: missing (e.g. type: L1Loss, loss_weight: 1.0); the model needs '
                            'pixel_opt or perceptual_opt')
        for key in losses:
            loss = _section(problems, train, key, f'train: {key}', True, ' (type: L1Loss, loss_weight: 1.0)')
            if loss is not None:
                _check_loss(key, loss, problems)
    from ..utils.asid_precision import autocast_dtype, compile_arguments

    gpu = opt.get('num_gpu', 0) not in (0, None) and torch.cuda.is_available()
    for check in (lambda: autocast_dtype(train.get('amp'), torch.device('cuda' if gpu else 'cpu'), warn=False),
                  lambda: compile_arguments(train.get('compile'))):
        try:
            check()
        except (ValueError, TypeError) as err:
            problems.append(str(err))


def _trial_parameter() -> torch.nn.Parameter:
    return torch.nn.Parameter(torch.zeros(1))


def _check_optimizer(model_type: object, optim: Mapping, problems: List[str]) -> None:
    """``optim_g`` built on trial, by the model's own ``get_optimizer`` (SRModel knows Adam only;
    ASIDModel every ``torch.optim`` optimizer): an unknown argument or a bad value is named now."""
    from basicsr.utils.registry import MODEL_REGISTRY

    otype = optim.get('type')
    lr_ok = _number(problems, 'train: optim_g: lr', optim.get('lr'))
    if not isinstance(otype, str) or not isinstance(getattr(torch.optim, otype, None), type):
        problems.append(f'train: optim_g: type: {otype!r} is not an optimizer of torch.optim (e.g. Adam, AdamW, SGD)')
        return
    if not lr_ok or not _registered(MODEL_REGISTRY, model_type):
        return
    args = {k: v for k, v in optim.items() if k != 'type'}
    try:
        MODEL_REGISTRY.get(model_type).get_optimizer(None, otype, [_trial_parameter()], **copy.deepcopy(args))
    except AttributeError:  # a model whose get_optimizer needs its instance: it cannot be tried here
        pass
    except Exception as err:
        message = first_line(err)
        problems.append(message if message.startswith('train: optim_g') else
                        f'train: optim_g: {otype} with {model_type}: {message}')


def _check_scheduler(scheduler: Mapping, problems: List[str], total_iter: Optional[int]) -> None:
    """The scheduler built on trial; CosineAnnealingRestartLR's ``periods`` must cover ``train: total_iter``
    (past their sum it has no learning rate to give: BasicSR fails there with a TypeError, mid-run)."""
    from basicsr.models import lr_scheduler

    stype = scheduler.get('type')
    if stype not in SCHEDULERS:
        problems.append(f"train: scheduler: type: {stype!r} is not a scheduler BasicSR knows ({', '.join(SCHEDULERS)})")
        return
    args = {k: v for k, v in scheduler.items() if k != 'type'}
    for key in ('milestones', 'periods', 'restarts'):
        if key in args:
            _list_of_numbers(problems, f'train: scheduler: {key}', args[key], whole=True)
    cosine = stype == 'CosineAnnealingRestartLR'
    cls = lr_scheduler.CosineAnnealingRestartLR if cosine else lr_scheduler.MultiStepRestartLR
    try:
        cls(torch.optim.SGD([_trial_parameter()], lr=1.0), **copy.deepcopy(args))
    except Exception as err:
        problems.append(f'train: scheduler: {stype}: {first_line(err)}')
        return
    if cosine and total_iter is not None and sum(args['periods']) < total_iter:
        problems.append(f"train: scheduler: periods: {args['periods']} add up to {sum(args['periods'])} iterations, "
                        f'fewer than train: total_iter: {int(total_iter)}: {stype} has no learning rate past the end '
                        'of its periods (lengthen the last period, or shorten total_iter)')


def _check_loss(key: str, loss: Mapping, problems: List[str]) -> None:
    from basicsr.utils.registry import LOSS_REGISTRY

    ltype = loss.get('type')
    if not _registered(LOSS_REGISTRY, ltype):
        problems.append(f'train: {key}: type: {ltype!r} is not a registered loss (e.g. L1Loss)')
        return
    cls = LOSS_REGISTRY.get(ltype)
    args = {k: v for k, v in loss.items() if k != 'type'}
    try:
        inspect.signature(cls).bind(**args)
        if ltype in CHEAP_LOSSES:
            cls(**copy.deepcopy(args))
    except Exception as err:
        problems.append(f'train: {key}: {ltype}: {first_line(err)}')


def _check_logger_structure(logger: Mapping, problems: List[str]) -> None:
    import importlib.util

    _number(problems, 'logger: print_freq', logger.get('print_freq'), whole=True)
    _number(problems, 'logger: save_checkpoint_freq', logger.get('save_checkpoint_freq'), whole=True)
    tb_ok = _flag(problems, 'logger: use_tb_logger', logger.get('use_tb_logger'), required=True)
    if tb_ok and logger['use_tb_logger'] and importlib.util.find_spec('tensorboard') is None:
        problems.append('logger: use_tb_logger: true needs the tensorboard package (pip install tensorboard), or '
                        'use_tb_logger: false')
    wandb = _section(problems, logger, 'wandb', 'logger: wandb', False, ' (project:, resume_id:)')
    if wandb is not None:
        for key in ('project', 'resume_id'):
            _text(problems, f'logger: wandb: {key}', wandb.get(key))
        if wandb.get('project') is not None:
            if logger.get('use_tb_logger') is not True:
                problems.append('logger: wandb: project needs logger: use_tb_logger: true (BasicSR syncs wandb '
                                'through tensorboard)')
            if importlib.util.find_spec('wandb') is None:
                problems.append('logger: wandb: project needs the wandb package (pip install wandb), or project: ~')


def _check_val_structure(val: Mapping, is_train: bool, problems: List[str]) -> None:
    from basicsr.utils.registry import METRIC_REGISTRY

    if is_train:
        _number(problems, 'val: val_freq', val.get('val_freq'), whole=True)
    _flag(problems, 'val: save_img', val.get('save_img'), required=True)
    if val.get('save_img') is True and not is_train and 'suffix' not in val:
        problems.append('val: suffix: missing (save_img: true names the images <image>_<suffix>.png; ~ for the '
                        "run's name)")
    _text(problems, 'val: suffix', val.get('suffix'))
    _flag(problems, 'val: pbar', val.get('pbar'))
    metrics = _section(problems, val, 'metrics', 'val: metrics', False, ' (psnr: {type: calculate_psnr, ...})')
    for name, metric in (metrics or {}).items():
        metric = _section(problems, metrics, name, f'val: metrics: {name}', True,
                          ' (type: calculate_psnr, crop_border: 2, ...)')
        if metric is None:
            continue
        mtype = metric.get('type')
        if not _registered(METRIC_REGISTRY, mtype):
            problems.append(f'val: metrics: {name}: type: {mtype!r} is not a registered metric (e.g. calculate_psnr)')
            continue
        args = {k: v for k, v in metric.items() if k != 'type'}
        try:
            inspect.signature(METRIC_REGISTRY.get(mtype)).bind(img=None, img2=None, **args)
        except TypeError as err:
            problems.append(f'val: metrics: {name}: {mtype}: {first_line(err)}')
        if 'crop_border' in args:
            _number(problems, f'val: metrics: {name}: crop_border', args['crop_border'], integer=True, minimum=0)
    _check_tile(val.get('tile'), problems)


def _check_tile(tile, problems: List[str]) -> None:
    """``val: tile: {size, overlap}`` (LR pixels): size >= 1, 0 <= overlap < size; ~ or absent: whole images."""
    from ..utils.asid_tiling import PROTOCOL_OVERLAP, PROTOCOL_TILE

    if tile is None or tile is False:
        return
    if not isinstance(tile, Mapping):
        problems.append(f'val: tile: {tile!r} must be a mapping such as {{size: {PROTOCOL_TILE}, overlap: '
                        f'{PROTOCOL_OVERLAP}}} (or ~ for whole images)')
        return
    for key in tile:
        if key not in TILE_KEYS:
            hat = f'; {_hat_tile_hint(tile)}' if key in HAT_TILE_KEYS else ''
            problems.append(f'val: tile: {key}: not a tile option ({", ".join(TILE_KEYS)}){hat}')
    size, overlap = tile.get('size', PROTOCOL_TILE), tile.get('overlap', PROTOCOL_OVERLAP)
    if (_number(problems, 'val: tile: size', size, integer=True)
            and _number(problems, 'val: tile: overlap', overlap, integer=True, minimum=0) and overlap >= size):
        problems.append(f'val: tile: overlap: {overlap} must be smaller than size: {size} (each tile must advance)')


def _hat_tile_hint(tile: object) -> str:
    """What HAT's ``tile: {tile_size: T, tile_pad: P}`` is here: ``val: tile:``, its numbers where they are given."""
    sizes = [tile.get(key) if isinstance(tile, Mapping) else None for key in HAT_TILE_KEYS]
    if all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in sizes):
        example = f'{{size: {sizes[0] + 2 * sizes[1]}, overlap: {2 * sizes[1]}}}'  # the padded tile, pads shared
    else:
        example = '{size: N, overlap: M}'
    return f"HAT's tile_size/tile_pad: did you mean val: tile: {example} (LR pixels)?"


def _check_top_level(opt: Mapping, problems: List[str]) -> None:
    """Unknown top-level keys, for the models whose keys are known (others, e.g. Real-ESRGAN's, read more)."""
    if opt.get('model_type', 'SRModel') not in MODELS_WITH_KNOWN_KEYS:
        return
    for key in opt:
        if key == 'tile':
            problems.append(f'tile: not an option BasicSR reads at the top level ({_hat_tile_hint(opt[key])})')
        elif key not in TOP_LEVEL_KEYS:
            close = difflib.get_close_matches(str(key), TOP_LEVEL_KEYS, n=1)
            hint = f' (did you mean {close[0]}?)' if close else ''
            problems.append(f'{key}: not an option BasicSR reads{hint}')
