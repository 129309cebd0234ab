"""Checks of a BasicSR option dict before any work starts; every message names the option key.

BasicSR itself finds most of these problems late (after building data loaders, or at the first
validation) and with a bare traceback. ``validate_options`` finds them up front.
"""
from __future__ import annotations

import copy
import difflib
import inspect
import os
import re
from numbers import Number
from typing import List, Mapping, Optional, Tuple

import torch

DEFAULT_WINDOW = 8
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


class OptionsError(ValueError):
    """Problems found in an option file; ``str()`` lists them, one per line."""

    def __init__(self, source: str, problems: List[str]) -> None:
        self.problems = problems
        super().__init__(f'invalid options in {source}:\n' + '\n'.join(f'  - {p}' for p in problems))


def _check_arch(opt: Mapping, problems: List[str]) -> None:
    from basicsr.utils.registry import ARCH_REGISTRY

    net = opt.get('network_g')
    if not isinstance(net, Mapping) or 'type' not in net:
        problems.append('network_g: missing (needs at least `type: ASID`)')
        return
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
    if upscale is not None and 'scale' in opt and upscale != opt['scale']:
        problems.append(f"network_g: upscale: {upscale} does not match scale: {opt['scale']}")


def _check_dataset(phase: str, ds: Mapping, opt: Mapping, problems: List[str]) -> None:
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
            for name in ('data.mdb', 'meta_info.txt'):
                if not os.path.isfile(os.path.join(root, name)):
                    problems.append(f'{where}: {root} has no {name}: not a complete LMDB (re-run asid-prepare)')
    meta = ds.get('meta_info_file')
    if meta and not os.path.isfile(meta):
        problems.append(f'datasets: {phase}: meta_info_file: {meta} does not exist')
    gt_size = ds.get('gt_size')
    scale = opt.get('scale')
    if phase == 'train':
        _number(problems, 'datasets: train: batch_size_per_gpu', ds.get('batch_size_per_gpu'), integer=True)
        _number(problems, 'datasets: train: num_worker_per_gpu', ds.get('num_worker_per_gpu', 0), integer=True,
                minimum=0)
        _number(problems, 'datasets: train: dataset_enlarge_ratio', ds.get('dataset_enlarge_ratio', 1))
        if ds.get('type') == 'PairedImageDataset':
            if gt_size is None:
                problems.append('datasets: train: gt_size: missing (the HR patch size, e.g. 128 for 64 px LR patches '
                                'at x2)')
            else:
                _number(problems, 'datasets: train: gt_size', gt_size, integer=True)
    if not problems_before_data(problems[start:]) and isinstance(scale, int) and scale > 0:
        _check_data_files(phase, ds, scale, backend, gt_size if phase == 'train' else None, problems)
    if phase == 'train' and isinstance(gt_size, int) and isinstance(scale, int) and scale > 0:
        net = opt.get('network_g') or {}
        window = net.get('window_size', DEFAULT_WINDOW)
        if gt_size % scale:
            problems.append(f'datasets: train: gt_size: {gt_size} is not a multiple of scale {scale}')
        elif (gt_size // scale) % window:
            problems.append(f'datasets: train: gt_size: {gt_size} gives LR patches of {gt_size // scale} px, '
                            f'not a multiple of the window size {window} (use a multiple of {scale * window})')


def problems_before_data(problems: List[str]) -> bool:
    """Data files are read only when the folders were found (their problems say 'does not exist' / 'no ...')."""
    return any('does not exist' in p or ' has no ' in p or 'must be an LMDB' in p for p in problems)


def _number(problems: List[str], where: str, value, integer: bool = False, minimum: float = None) -> None:
    """``value`` must be a number (an integer when ``integer``) above 0, or at least ``minimum``."""
    kind = 'a whole number' if integer else 'a number'
    if isinstance(value, bool) or not isinstance(value, (int if integer else Number)):
        problems.append(f'{where}: {value!r} is not {kind}')
    elif (value < minimum) if minimum is not None else (value <= 0):
        bound = f'>= {minimum}' if minimum is not None else '> 0'
        problems.append(f'{where}: {value!r} must be {bound}')


def _lmdb_meta(root: str) -> List[Tuple[str, int, int]]:
    """``(key, height, width)`` of each line of an LMDB's meta_info.txt."""
    rows = []
    with open(os.path.join(root, 'meta_info.txt')) as f:
        for line in f:
            match = META_INFO_LINE.match(line.strip())
            if match:
                rows.append((match.group(1), int(match.group(2)), int(match.group(3))))
    return rows


def _first_size(root: str, backend: str) -> Optional[Tuple[str, int, int]]:
    """``(name, height, width)`` of the first image of a data folder or LMDB, None if it has none."""
    if backend == 'lmdb':
        rows = _lmdb_meta(root)
        return rows[0] if rows else None
    names = sorted(n for n in os.listdir(root) if not n.startswith('.'))
    for name in names:
        try:
            from PIL import Image

            with Image.open(os.path.join(root, name)) as im:
                return os.path.splitext(name)[0], im.height, im.width
        except (OSError, ValueError):
            continue
    return None


def _check_data_files(phase: str, ds: Mapping, scale: int, backend: str, gt_size: Optional[int],
                      problems: List[str]) -> None:
    """Scale of the data vs ``scale``, patch size vs image size, and LMDB keys that meta_info lists."""
    gt_root, lq_root = ds.get('dataroot_gt'), ds.get('dataroot_lq')
    if not gt_root or not lq_root:
        return
    where = f'datasets: {phase}'
    if backend == 'lmdb':
        for key in ('dataroot_gt', 'dataroot_lq'):
            missing = _missing_lmdb_keys(ds[key])
            if missing:
                problems.append(f'{where}: {key}: {ds[key]}: meta_info.txt lists {len(missing)} key(s) the LMDB does not '
                                f'hold (first: {missing[0]}); rebuild it with asid-prepare')
        gt_rows = _lmdb_meta(gt_root)
        if gt_size is not None and gt_rows:
            smallest = min(gt_rows, key=lambda r: min(r[1], r[2]))
            if gt_size > min(smallest[1], smallest[2]):
                problems.append(f'{where}: gt_size: {gt_size} is larger than the image {smallest[0]} '
                                f'({smallest[2]}x{smallest[1]}) in {gt_root}')
    gt, lq = _first_size(gt_root, backend), _first_size(lq_root, backend)
    if gt and lq:
        if gt[1] % lq[1] == 0 and gt[2] % lq[2] == 0 and gt[1] // lq[1] == gt[2] // lq[2]:
            data_scale = gt[1] // lq[1]
            if data_scale != scale:
                problems.append(f'{where}: the data are x{data_scale} (GT {gt[2]}x{gt[1]}, LQ {lq[2]}x{lq[1]} for '
                                f'{gt[0]}) but scale is {scale}: point dataroot_lq at the x{scale} data')
        elif gt[1] != lq[1] * scale or gt[2] != lq[2] * scale:
            problems.append(f'{where}: GT {gt[2]}x{gt[1]} and LQ {lq[2]}x{lq[1]} ({gt[0]}) are not scale {scale} apart')
        if backend != 'lmdb' and gt_size is not None and gt_size > min(gt[1], gt[2]):
            problems.append(f'{where}: gt_size: {gt_size} is larger than the image {gt[0]} ({gt[2]}x{gt[1]})')


def _missing_lmdb_keys(root: str) -> List[str]:
    import lmdb

    keys = [row[0] for row in _lmdb_meta(root)]
    try:
        env = lmdb.open(root, readonly=True, lock=False, readahead=False, meminit=False)
    except lmdb.Error as err:
        return [f'(the LMDB cannot be opened: {err})']
    with env.begin(write=False) as txn:
        missing = [k for k in keys if txn.get(k.encode('ascii')) is None]
    env.close()
    return missing


def _check_top_level(opt: Mapping, problems: List[str]) -> None:
    """Unknown top-level keys, for the models whose keys are known (others, e.g. Real-ESRGAN's, read more)."""
    if opt.get('model_type', 'SRModel') not in MODELS_WITH_KNOWN_KEYS:
        return
    for key in opt:
        if key not in TOP_LEVEL_KEYS:
            close = difflib.get_close_matches(str(key), TOP_LEVEL_KEYS, n=1)
            hint = f' (did you mean {close[0]}?)' if close else ''
            problems.append(f'{key}: not an option BasicSR reads{hint}')


def _check_train(opt: Mapping, problems: List[str]) -> None:
    train = opt.get('train')
    if not isinstance(train, Mapping):
        problems.append('train: missing')
        return
    _number(problems, 'train: total_iter', train.get('total_iter'), integer=True)
    optim = train.get('optim_g') or {}
    _number(problems, 'train: optim_g: lr', optim.get('lr'))
    from .models.asid_model import autocast_dtype, compile_arguments

    gpu = opt.get('num_gpu', 0) not in (0, None) and torch.cuda.is_available()
    for check in (lambda: autocast_dtype(train.get('amp'), torch.device('cuda' if gpu else 'cpu'), warn=False),
                  lambda: compile_arguments(train.get('compile'))):
        try:
            check()
        except ValueError as err:
            problems.append(str(err))


def _check_pretrained(opt: Mapping, problems: List[str]) -> None:
    """The weights of ``path: pretrain_network_g`` load into ``network_g`` (checked before any work)."""
    from basicsr.utils.registry import ARCH_REGISTRY

    from .models.asid_model import PretrainedWeightsError, match_weights, weights_for

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
    """Problems found in ``opt`` (a parsed BasicSR option dict); empty when it looks runnable."""
    from basicsr.utils.registry import MODEL_REGISTRY

    from .models.asid_model import resolve_variant_options

    opt = copy.deepcopy(dict(opt))
    resolve_variant_options(opt)  # network_g: ... auto -> what the pretrained weights tell
    problems: List[str] = []
    model_type = opt.get('model_type', 'SRModel')
    if model_type not in MODEL_REGISTRY:
        problems.append(f'model_type: {model_type!r} is not a registered model (use ASIDModel or SRModel)')
    _check_arch(opt, problems)
    datasets = opt.get('datasets') or {}
    if is_train and 'train' not in datasets:
        problems.append('datasets: train: missing')
    for phase, ds in datasets.items():
        if isinstance(ds, Mapping):
            _check_dataset(phase, ds, opt, problems)
    path = opt.get('path') or {}
    for key in ('pretrain_network_g', 'resume_state'):
        value = path.get(key)
        # pretrained weights that exist but are no regular file (a folder, a FIFO) are described by _check_pretrained
        if value and not os.path.isfile(value) and not (key == 'pretrain_network_g' and os.path.exists(value)):
            problems.append(f'path: {key}: {value} does not exist')
    optim = ((opt.get('train') or {}).get('optim_g') or {}).get('type') if is_train else None
    if optim is not None and not isinstance(getattr(torch.optim, optim, None), type):
        problems.append(f'train: optim_g: type: {optim!r} is not an optimizer of torch.optim')
    _check_top_level(opt, problems)
    if model_type != 'ASIDModel':
        for section, key, does, instead in ASIDMODEL_ONLY:
            if (opt.get(section) or {}).get(key) not in (None, False):
                problems.append(f'{section}: {key}: only model_type: ASIDModel {does}; {model_type} would '
                                f'silently {instead}')
    if is_train:
        _check_train(opt, problems)
    if not any(p.startswith('network_g') for p in problems):
        _check_pretrained(opt, problems)
    return problems
