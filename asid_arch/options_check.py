"""Checks of a BasicSR option dict before any work starts; every message names the option key.

BasicSR itself finds most of these problems late (after building data loaders, or at the first
validation) and with a bare traceback. ``validate_options`` finds them up front.
"""
from __future__ import annotations

import inspect
import os
from typing import List, Mapping

import torch

DEFAULT_WINDOW = 8


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
    upscale = net.get('upscale')
    if upscale is not None and 'scale' in opt and upscale != opt['scale']:
        problems.append(f"network_g: upscale: {upscale} does not match scale: {opt['scale']}")


def _check_dataset(phase: str, ds: Mapping, opt: Mapping, problems: List[str]) -> None:
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
    if phase == 'train' and gt_size is not None and scale:
        net = opt.get('network_g') or {}
        window = net.get('window_size', DEFAULT_WINDOW)
        if gt_size % scale:
            problems.append(f'datasets: train: gt_size: {gt_size} is not a multiple of scale {scale}')
        elif (gt_size // scale) % window:
            problems.append(f'datasets: train: gt_size: {gt_size} gives LR patches of {gt_size // scale} px, '
                            f'not a multiple of the window size {window} (use a multiple of {scale * window})')


def validate_options(opt: Mapping, is_train: bool = True) -> List[str]:
    """Problems found in ``opt`` (a parsed BasicSR option dict); empty when it looks runnable."""
    from basicsr.utils.registry import MODEL_REGISTRY

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
        if value and not os.path.isfile(value):
            problems.append(f'path: {key}: {value} does not exist')
    optim = ((opt.get('train') or {}).get('optim_g') or {}).get('type') if is_train else None
    if optim is not None and not isinstance(getattr(torch.optim, optim, None), type):
        problems.append(f'train: optim_g: type: {optim!r} is not an optimizer of torch.optim')
    return problems
