"""Checks of a BasicSR option dict before any work starts; every message names the option key.

BasicSR itself finds most of these problems late (after making the experiment folder, building data
loaders, or at the first validation) and with a bare traceback, or not at all (a warm-up longer than
the run trains at a fraction of the learning rate). Two levels:

* :func:`check_structure`: the type of every option that BasicSR's pipelines and models index, and
  the values that would fail or mislead later (a ``name`` that is a path, ``scale: 2.0``,
  ``val_freq: 0``, a non-finite learning rate, a tile size of 0, ...). It needs no file and runs
  before BasicSR's own option processing, which indexes ``name``, ``num_gpu``, ``datasets`` and ``path``.
* :func:`validate_options`: the structure, then what needs the files: architectures and their
  arguments, data folders and LMDBs (complete, not truncated; GT and LQ paired and ``scale`` apart),
  pretrained weights.
"""
from __future__ import annotations

import copy
import difflib
import inspect
import math
import os
import re
from numbers import Number
from typing import List, Mapping, Optional, Sequence, Tuple

import torch

# what BasicSR reads at the top level of an option file (and what parse_options adds)
TOP_LEVEL_KEYS = ('name', 'model_type', 'scale', 'num_gpu', 'manual_seed', 'datasets', 'network_g', 'network_d', 'path',
                  'train', 'val', 'logger', 'dist_params', 'find_unused_parameters', 'use_static_graph', 'is_train',
                  'dist', 'rank', 'world_size', 'auto_resume', 'root_path')
MODELS_WITH_KNOWN_KEYS = ('ASIDModel', 'SRModel')
# option keys that only ASIDModel reads: (section, key, what ASIDModel does, what another model does instead)
ASIDMODEL_ONLY = (('val', 'tile', 'runs the tiled protocol', 'evaluate whole images'),
                  ('train', 'amp', 'reads this', 'train without mixed precision'),
                  ('train', 'compile', 'reads this', 'train without compiling'))
META_INFO_LINE = re.compile(r'^(\S+?)(?:\.png)? \((\d+),(\d+),(\d+)\)')
MAX_SEED = 2**31 - 1  # numpy's seeds are 32-bit, and BasicSR seeds it with manual_seed + rank
IO_BACKENDS = ('disk', 'lmdb')  # what PairedImageDataset reads in these pipelines (memcached needs a server)
PREFETCH_MODES = (None, 'cpu', 'cuda')
SCHEDULERS = ('MultiStepLR', 'MultiStepRestartLR', 'CosineAnnealingRestartLR')  # BasicSR's setup_schedulers
CHEAP_LOSSES = ('L1Loss', 'MSELoss', 'CharbonnierLoss')  # built on trial (a perceptual loss would load VGG)
TILE_KEYS = ('size', 'overlap')
TEST_PHASES = ('test', 'val')  # what BasicSR's build_dataloader accepts in a test file (key before any `_`)
MAX_PAIRS_READ = 1000  # image headers read per disk-folder dataset (evenly spread); the rest are named when read
MODELS_TRAINING_ONE_NETWORK = ('ASIDModel', 'SRModel')  # one optimizer, one scheduler in their training states


class OptionsError(ValueError):
    """Problems found in an option file; ``str()`` lists them, one per line."""

    def __init__(self, source: str, problems: List[str]) -> None:
        self.problems = problems
        super().__init__(f'invalid options in {source}:\n' + '\n'.join(f'  - {p}' for p in problems))


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none), for one-line reports."""
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


def _kind(value: object) -> str:
    from .option_file import kind_of

    return kind_of(value)


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
        problems.append(f'{where}: must be a mapping{example}, not {_kind(value)} ({value!r:.60})')
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
    ema = train.get('ema_decay')
    if ema is not None and _number(problems, 'train: ema_decay', ema, minimum=0) and ema >= 1:
        problems.append(f'train: ema_decay: {ema} must be below 1 (0: off; e.g. 0.999)')
    optim = _section(problems, train, 'optim_g', 'train: optim_g', True, ' (type: AdamW, lr: 5.0e-4, ...)')
    if optim is not None:
        _check_optimizer(opt.get('model_type'), optim, problems)
    scheduler = _section(problems, train, 'scheduler', 'train: scheduler', True,
                         ' (type: MultiStepLR, milestones: [...], gamma: 0.5)')
    if scheduler is not None:
        _check_scheduler(scheduler, problems)
    if opt.get('model_type') in MODELS_WITH_KNOWN_KEYS:
        losses = [key for key in ('pixel_opt', 'perceptual_opt') if train.get(key) is not None]
        if not losses:
            problems.append('train: pixel_opt: missing (e.g. type: L1Loss, loss_weight: 1.0); the model needs '
                            'pixel_opt or perceptual_opt')
        for key in losses:
            loss = _section(problems, train, key, f'train: {key}', True, ' (type: L1Loss, loss_weight: 1.0)')
            if loss is not None:
                _check_loss(key, loss, problems)
    from .utils.asid_precision import autocast_dtype, compile_arguments

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


def _check_scheduler(scheduler: Mapping, problems: List[str]) -> None:
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
    from .utils.asid_tiling import PROTOCOL_OVERLAP, PROTOCOL_TILE

    if tile is None or tile is False:
        return
    if not isinstance(tile, Mapping):
        problems.append(f'val: tile: {tile!r} must be a mapping such as {{size: {PROTOCOL_TILE}, overlap: '
                        f'{PROTOCOL_OVERLAP}}} (or ~ for whole images)')
        return
    for key in tile:
        if key not in TILE_KEYS:
            problems.append(f'val: tile: {key}: not a tile option ({", ".join(TILE_KEYS)})')
    size, overlap = tile.get('size', PROTOCOL_TILE), tile.get('overlap', PROTOCOL_OVERLAP)
    if (_number(problems, 'val: tile: size', size, integer=True)
            and _number(problems, 'val: tile: overlap', overlap, integer=True, minimum=0) and overlap >= size):
        problems.append(f'val: tile: overlap: {overlap} must be smaller than size: {size} (each tile must advance)')


def _check_top_level(opt: Mapping, problems: List[str]) -> None:
    """Unknown top-level keys, for the models whose keys are known (others, e.g. Real-ESRGAN's, read more)."""
    if opt.get('model_type', 'SRModel') not in MODELS_WITH_KNOWN_KEYS:
        return
    for key in opt:
        if key not in TOP_LEVEL_KEYS:
            close = difflib.get_close_matches(str(key), TOP_LEVEL_KEYS, n=1)
            hint = f' (did you mean {close[0]}?)' if close else ''
            problems.append(f'{key}: not an option BasicSR reads{hint}')


# ----------------------------------------------------------------------------------------------
# What needs the files: architectures, data, weights
# ----------------------------------------------------------------------------------------------
def _check_arch(opt: Mapping, problems: List[str]) -> None:
    from basicsr.utils.registry import ARCH_REGISTRY

    net = opt['network_g']  # a mapping with a type (check_structure)
    if net['type'] not in ARCH_REGISTRY:
        problems.append(f"network_g: type: {net['type']!r} is not a registered architecture "
                        f"(known: {', '.join(sorted(ARCH_REGISTRY.keys()))})")
        return
    params = inspect.signature(ARCH_REGISTRY.get(net['type'])).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        for key in net:
            if key != 'type' and key not in params:
                problems.append(f"network_g: {key}: not an argument of {net['type']} "
                                f"(arguments: {', '.join(params)})")
    if not any(p.startswith('network_g') for p in problems):
        try:
            ARCH_REGISTRY.get(net['type'])(**{k: v for k, v in net.items() if k != 'type'})
        except (ValueError, TypeError) as err:
            problems.append(f"network_g: {err}")
    upscale = net.get('upscale')
    if isinstance(upscale, int) and upscale != opt['scale']:  # (another type is named by the network's own check)
        problems.append(f"network_g: upscale: {upscale} does not match scale: {opt['scale']}")


def _check_dataset(phase: str, ds: Mapping, opt: Mapping, problems: List[str]) -> None:
    """The data of one dataset entry (whose structure is sound): folders, LMDBs, pairs, patch size."""
    start = len(problems)
    backend = (ds.get('io_backend') or {}).get('type', 'disk')
    for key in ('dataroot_gt', 'dataroot_lq'):
        root = ds.get(key)
        if root is None:
            continue
        where = f'datasets: {phase}: {key}'
        if not os.path.isdir(root):
            problems.append(f'{where}: {root} does not exist (prepare it with asid-prepare)')
        elif backend == 'lmdb':
            if not str(root).endswith('.lmdb'):
                problems.append(f'{where}: {root} must be an LMDB folder ending in .lmdb (io_backend: lmdb)')
            missing = [name for name in ('data.mdb', 'meta_info.txt') if not os.path.isfile(os.path.join(root, name))]
            for name in missing:
                problems.append(f'{where}: {root} has no {name}: not a complete LMDB (re-run asid-prepare)')
            damage = None if missing else lmdb_damage(root)
            if damage:
                problems.append(f'{where}: {damage}')
    meta = ds.get('meta_info_file')
    if meta and not os.path.isfile(meta):
        problems.append(f'datasets: {phase}: meta_info_file: {meta} does not exist')
    scale = opt['scale']
    gt_size = ds.get('gt_size') if phase == 'train' else None
    if len(problems) == start and ds.get('type') == 'PairedImageDataset':
        _check_data_files(phase, ds, scale, backend, gt_size, problems)
    if gt_size is not None:
        from .archs.asid_arch import WINDOW_SIZE

        window = opt['network_g'].get('window_size', WINDOW_SIZE)
        if gt_size % scale:
            problems.append(f'datasets: train: gt_size: {gt_size} is not a multiple of scale {scale}')
        elif isinstance(window, int) and window > 0 and (gt_size // scale) % window:
            problems.append(f'datasets: train: gt_size: {gt_size} gives LR patches of {gt_size // scale} px, '
                            f'not a multiple of the window size {window} (use a multiple of {scale * window})')


def lmdb_damage(root: str) -> Optional[str]:
    """Why the LMDB folder ``root`` cannot be read safely, or None.

    LMDB reads its data through a memory map: a page that the file no longer holds (a copy cut short,
    ``truncate``) kills the process with SIGBUS, without a message, at the first read. So before any
    read through the map, the size the LMDB declares in its header ((last used page + 1) x page size,
    from ``env.info()`` and ``env.stat()``, which LMDB reads from its two meta pages with plain file
    reads when it opens) is compared with the real size of data.mdb.
    """
    import lmdb

    data = os.path.join(root, 'data.mdb')
    try:
        env = lmdb.open(root, readonly=True, lock=False, readahead=False, meminit=False)
    except lmdb.Error as err:
        return (f'{data} cannot be opened as an LMDB ({first_line(err)}): copy it again or rebuild it with '
                'asid-prepare')
    try:
        last_page, page_size = env.info()['last_pgno'], env.stat()['psize']
    finally:
        env.close()
    declared, actual = (last_page + 1) * page_size, os.path.getsize(data)
    if actual < declared:
        return (f'{data} is truncated: {actual} bytes, but the LMDB declares {declared} ({last_page + 1} pages of '
                f'{page_size} bytes); copy it again or rebuild it with asid-prepare')
    return None


def _lmdb_meta(root: str) -> List[Tuple[str, int, int]]:
    """``(key, height, width)`` of each line of an LMDB's meta_info.txt."""
    rows = []
    with open(os.path.join(root, 'meta_info.txt'), encoding='utf-8', errors='replace') as f:
        for line in f:
            match = META_INFO_LINE.match(line.strip())
            if match:
                rows.append((match.group(1), int(match.group(2)), int(match.group(3))))
    return rows


def _files(folder: str) -> List[str]:
    """The names BasicSR's ``scandir`` lists: files (links followed) not starting with '.', not recursive."""
    return sorted(e.name for e in os.scandir(folder) if not e.name.startswith('.') and e.is_file())


def _image_size(path: str) -> Optional[Tuple[int, int]]:
    """``(height, width)`` from an image file's header, None when it is not a readable image."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.height, im.width
    except Exception:  # Pillow raises many kinds for files that are not images
        return None


Size = Tuple[int, int]


def _lmdb_pairs(where: str, gt_root: str, lq_root: str, problems: List[str]) -> List[Tuple[str, Size, Size]]:
    """(key, GT size, LQ size) of every key both LMDBs list (BasicSR wants the same keys in both)."""
    for key, root in (('dataroot_gt', gt_root), ('dataroot_lq', lq_root)):
        missing = _missing_lmdb_keys(root)
        if missing:
            problems.append(f'{where}: {key}: {root}: meta_info.txt lists {len(missing)} key(s) the LMDB does not '
                            f'hold (first: {missing[0]}); rebuild it with asid-prepare')
    gt = {k: (h, w) for k, h, w in _lmdb_meta(gt_root)}
    lq = {k: (h, w) for k, h, w in _lmdb_meta(lq_root)}
    only_gt, only_lq = sorted(set(gt) - set(lq)), sorted(set(lq) - set(gt))
    if only_gt or only_lq:
        first = f'{only_gt[0]} only in GT' if only_gt else f'{only_lq[0]} only in LQ'
        problems.append(f'{where}: dataroot_gt and dataroot_lq do not hold the same keys ({len(gt)} and {len(lq)} '
                        f'keys; {len(only_gt)} only in GT, {len(only_lq)} only in LQ; first: {first}): BasicSR pairs '
                        'them by key')
    return [(k, gt[k], lq[k]) for k in gt if k in lq]


def _folder_pairs(where: str, ds: Mapping, problems: List[str]) -> List[Tuple[str, str, str]]:
    """(name, GT file, LQ file) as BasicSR pairs them: every file of dataroot_gt (or each line of
    meta_info_file) with the file of dataroot_lq named by filename_tmpl."""
    gt_root, lq_root, tmpl = ds['dataroot_gt'], ds['dataroot_lq'], ds.get('filename_tmpl', '{}')
    meta = ds.get('meta_info_file')
    if meta:
        with open(meta, encoding='utf-8', errors='replace') as f:
            gt_names = [line.strip().split(' ')[0] for line in f]
        if '' in gt_names:
            problems.append(f'{where}: meta_info_file: {meta}: line {gt_names.index("") + 1} is empty (BasicSR would '
                            'read it as an image name)')
            return []
        lq_names = None
    else:
        gt_names, lq_names = _files(gt_root), set(_files(lq_root))
        if len(gt_names) != len(lq_names):
            problems.append(f'{where}: dataroot_gt has {len(gt_names)} files but dataroot_lq has {len(lq_names)}: '
                            'BasicSR pairs every GT file with one LQ file (remove what is not part of the data)')
    pairs, unpaired = [], []
    for name in gt_names:
        stem, ext = os.path.splitext(os.path.basename(name))
        lq_name = f'{tmpl.format(stem)}{ext}'
        gt_path, lq_path = os.path.join(gt_root, name), os.path.join(lq_root, lq_name)
        listed = lq_name in lq_names if lq_names is not None else os.path.isfile(gt_path) and os.path.isfile(lq_path)
        if not listed:
            unpaired.append((gt_path, lq_path))
        else:
            pairs.append((stem, gt_path, lq_path))
    if unpaired:
        gt_path, lq_path = unpaired[0]
        problems.append(f'{where}: {len(unpaired)} of {len(gt_names)} GT image(s) have no LQ file (first: {gt_path}: '
                        f'no {lq_path}; LQ names follow filename_tmpl: {tmpl!r})')
    return pairs


def _read_sizes(where: str, pairs: Sequence[Tuple[str, str, str]],
                problems: List[str]) -> List[Tuple[str, Size, Size]]:
    """Header sizes of the pairs (at most MAX_PAIRS_READ, evenly spread; the others are named when read)."""
    if len(pairs) > MAX_PAIRS_READ:
        pairs = [pairs[i * len(pairs) // MAX_PAIRS_READ] for i in range(MAX_PAIRS_READ)]
    sizes, unreadable = [], []
    for name, gt_path, lq_path in pairs:
        gt, lq = _image_size(gt_path), _image_size(lq_path)
        if gt is None or lq is None:
            unreadable.append(gt_path if gt is None else lq_path)
        else:
            sizes.append((name, gt, lq))
    if unreadable:
        problems.append(f'{where}: {len(unreadable)} file(s) are not readable images (first: {unreadable[0]}); '
                        'BasicSR reads every file of dataroot_gt and dataroot_lq')
    return sizes


def _check_data_files(phase: str, ds: Mapping, scale: int, backend: str, gt_size: Optional[int],
                      problems: List[str]) -> None:
    """GT and LQ paired as BasicSR pairs them, each pair ``scale`` apart, and the patch size against the images."""
    where = f'datasets: {phase}'
    gt_root = ds['dataroot_gt']
    if backend == 'lmdb':
        sizes = _lmdb_pairs(where, gt_root, ds['dataroot_lq'], problems)
    else:
        sizes = _read_sizes(where, _folder_pairs(where, ds, problems), problems)
    if not sizes:
        return
    name, gt, lq = sizes[0]
    if gt[0] % lq[0] == 0 and gt[1] % lq[1] == 0 and gt[0] // lq[0] == gt[1] // lq[1] != scale:
        problems.append(f'{where}: the data are x{gt[0] // lq[0]} (GT {gt[1]}x{gt[0]}, LQ {lq[1]}x{lq[0]} for '
                        f'{name}) but scale is {scale}: point dataroot_lq at the x{scale} data')
        return
    # training crops need GT = LQ x scale exactly; validation crops GT to LQ x scale, so a GT image that was not
    # cropped to a multiple of scale is fine: LQ = GT / scale, rounded down
    slack = 1 if phase == 'train' else scale
    wrong = [(n, g, q) for n, g, q in sizes if not all(0 <= g[i] - q[i] * scale < slack for i in (0, 1))]
    if wrong:
        n, g, q = wrong[0]
        problems.append(f'{where}: {len(wrong)} of {len(sizes)} pair(s) checked are not x{scale} apart (first: {n}: '
                        f'GT {g[1]}x{g[0]}, LQ {q[1]}x{q[0]}; the LQ image must be the GT image / {scale})')
    if gt_size is not None:
        smallest = min(sizes, key=lambda r: min(r[1]))
        if gt_size > min(smallest[1]):
            problems.append(f'{where}: gt_size: {gt_size} is larger than the image {smallest[0]} '
                            f'({smallest[1][1]}x{smallest[1][0]}) in {gt_root}')


def _missing_lmdb_keys(root: str) -> List[str]:
    """Keys of meta_info.txt the LMDB does not hold (its size was checked by :func:`lmdb_damage`)."""
    import lmdb

    keys = [row[0] for row in _lmdb_meta(root)]
    try:
        env = lmdb.open(root, readonly=True, lock=False, readahead=False, meminit=False)
    except lmdb.Error as err:
        return [f'(the LMDB cannot be opened: {err})']
    try:
        with env.begin(write=False) as txn:
            return [k for k in keys if txn.get(k.encode('utf-8')) is None]
    except lmdb.Error as err:  # a damaged page: LMDB checks them as it reads
        return [f'(the LMDB cannot be read: {first_line(err)})']
    finally:
        env.close()


def _check_pretrained(opt: Mapping, problems: List[str]) -> None:
    """The weights of ``path: pretrain_network_g`` load into ``network_g`` (checked before any work)."""
    from basicsr.utils.registry import ARCH_REGISTRY

    from .utils.asid_errors import PretrainedWeightsError
    from .utils.asid_weights import match_weights, weights_for

    path = opt.get('path') or {}
    weights = path.get('pretrain_network_g')
    net_opt = dict(opt.get('network_g') or {})
    if not weights or not os.path.exists(weights) or net_opt.get('type') not in ARCH_REGISTRY:
        return
    try:
        net = ARCH_REGISTRY.get(net_opt.pop('type'))(**net_opt)
    except Exception:  # reported by the network check
        return
    try:
        state, _ = weights_for(net, weights, path.get('param_key_g', 'params'))
    except PretrainedWeightsError as err:
        problems.append(f'path: pretrain_network_g: {err}')
        return
    if path.get('strict_load_g', True):
        problems += [f'path: pretrain_network_g: {p}' for p in match_weights(net, state, weights)]


def validate_options(opt: Mapping, is_train: bool = True) -> List[str]:
    """Problems found in ``opt`` (a BasicSR option dict); empty when it looks runnable.

    The structure first (:func:`check_structure`); what reads files (architectures, data, weights) only
    when the structure is sound, so that every check may rely on the types.
    """
    from .utils.asid_weights import resolve_variant_options

    problems = check_structure(opt, is_train)
    if problems:
        return problems
    opt = copy.deepcopy(dict(opt))
    resolve_variant_options(opt)  # network_g: ... auto -> what the pretrained weights tell
    _check_arch(opt, problems)
    for phase, ds in opt['datasets'].items():
        _check_dataset(phase, ds, opt, problems)
    for key in ('pretrain_network_g', 'resume_state'):
        value = opt['path'].get(key)
        # pretrained weights that exist but are no regular file (a folder, a FIFO) are described by _check_pretrained
        if value and not os.path.isfile(value) and not (key == 'pretrain_network_g' and os.path.exists(value)):
            problems.append(f'path: {key}: {value} does not exist')
    if not any(p.startswith('network_g') for p in problems):
        _check_pretrained(opt, problems)
    return problems


def check_training_data(opt: Mapping) -> List[str]:
    """Problems with what reading ``datasets: train`` needs (scale, network_g, that entry and its data), for tools
    that use the training data alone (``asid-bench data``)."""
    needed = ('scale', 'network_g', 'datasets: train', 'datasets: missing', 'datasets: must')
    problems = [p for p in check_structure(opt, is_train=True) if p.startswith(needed)]
    if not problems:
        _check_dataset('train', opt['datasets']['train'], opt, problems)
    return problems


def _trainable_parameters(opt: Mapping) -> Optional[int]:
    """How many parameter tensors ``network_g`` trains (what its optimizer state holds); None if it cannot be built."""
    from basicsr.utils.registry import ARCH_REGISTRY

    from .utils.asid_weights import resolve_variant_options

    opt = copy.deepcopy(dict(opt))
    try:
        resolve_variant_options(opt)
        net_opt = dict(opt['network_g'])
        net = ARCH_REGISTRY.get(net_opt.pop('type'))(**net_opt)
    except Exception:
        return None
    return sum(1 for p in net.parameters() if p.requires_grad)


def training_state_problem(state: object, opt: Mapping, compare_network: bool = True) -> Optional[str]:
    """Why ``state`` (a loaded ``.state`` file) cannot resume this run, or None.

    It must be a BasicSR training state (epoch, iter, optimizer and scheduler states) and, for the
    models that train one network, hold one optimizer with as many parameters as ``network_g`` trains:
    BasicSR would otherwise fail in ``resume_training`` (``KeyError: 'param_groups'``, a size mismatch)
    after the run started. ``compare_network=False`` checks the state's own structure only.
    """
    not_state = 'is not a BasicSR training state'
    if not isinstance(state, Mapping):
        return f'{not_state} (it holds {_kind(state)})'
    for key, kind in (('epoch', int), ('iter', int), ('optimizers', list), ('schedulers', list)):
        value = state.get(key)
        if isinstance(value, bool) or not isinstance(value, kind) or (kind is int and value < 0):
            return f'{not_state} ({key}: {"missing" if key not in state else repr(value)[:60]})'
    for i, optim in enumerate(state['optimizers']):
        groups = optim.get('param_groups') if isinstance(optim, Mapping) else None
        if (not isinstance(groups, list) or not isinstance(optim.get('state'), Mapping)
                or not all(isinstance(g, Mapping) and isinstance(g.get('params'), list) for g in groups)):
            return f'{not_state} (optimizers[{i}] is not an optimizer state: no param_groups)'
    for i, scheduler in enumerate(state['schedulers']):
        if not isinstance(scheduler, Mapping):
            return f'{not_state} (schedulers[{i}] is not a scheduler state)'
    if len(state['schedulers']) != len(state['optimizers']):
        return f"{not_state} ({len(state['optimizers'])} optimizer(s) but {len(state['schedulers'])} scheduler(s))"
    if state.get('scaler') is not None and not isinstance(state['scaler'], Mapping):
        return f'{not_state} (scaler is not a grad-scaler state)'
    model_type = opt.get('model_type')
    if compare_network and model_type in MODELS_TRAINING_ONE_NETWORK:
        if len(state['optimizers']) != 1:
            return f"holds {len(state['optimizers'])} optimizer states; {model_type} trains one network (optim_g)"
        held = sum(len(g['params']) for g in state['optimizers'][0]['param_groups'])
        expected = _trainable_parameters(opt)
        if expected is not None and held != expected:
            return (f'is the state of another network: its optimizer holds {held} parameter tensors, network_g trains '
                    f'{expected} (was network_g changed since it was saved?)')
    return None
