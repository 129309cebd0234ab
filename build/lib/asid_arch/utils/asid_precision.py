"""The one precision rule: which number formats a network may run in, where, and how to compile it.

Kit file (``basicsr/utils/asid_precision.py`` in a BasicSR checkout): the standard library at import (torch
is imported by the functions that need it, so that a command's ``--help`` can list :data:`PRECISIONS`
without it). ``train: amp:`` (:func:`autocast_dtype`) and ``asid-sr --precision`` (``asid_arch.inference``)
both ask :func:`precision_problem`.
"""
from __future__ import annotations

import inspect
import logging
from typing import Mapping, Optional

from .asid_files import BASICSR_LOGGER

FULL_PRECISION = 'fp32'
PRECISIONS = (FULL_PRECISION, 'bf16', 'fp16')  # the names users give, full precision first
DTYPE_NAMES = {'fp32': 'float32', 'bf16': 'bfloat16', 'fp16': 'float16'}  # -> torch dtypes
AMP_OFF = (None, False, 'none', FULL_PRECISION, '~')  # train: amp: values meaning full precision
FP16_DEVICE_TYPES = ('cuda', )  # where fp16 runs (and, in training, its GradScaler)


def torch_dtype(precision: str):
    """The torch dtype of a name of :data:`PRECISIONS`."""
    import torch

    return getattr(torch, DTYPE_NAMES[precision])


def cpu_has_bf16() -> bool:
    """True where the CPU computes bfloat16 natively (AVX512-BF16 or AMX); elsewhere PyTorch emulates it."""
    import torch

    checks = ('_is_avx512_bf16_supported', '_is_amx_tile_supported')
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def precision_problem(precision: str, device) -> Optional[str]:
    """Why ``precision`` (a name of :data:`PRECISIONS`) cannot run on ``device`` (a ``torch.device``), as a
    phrase starting with the name; None where it can."""
    import torch

    if precision == 'fp16' and device.type not in FP16_DEVICE_TYPES:
        return f'fp16 needs a CUDA device (this run is on {device.type})'
    if precision == 'bf16' and device.type == 'cuda' and not torch.cuda.is_bf16_supported():
        return 'bf16 is not supported by this GPU'
    return None


def autocast_dtype(amp: object, device, warn: bool = True):
    """The autocast dtype for ``train: amp:`` on ``device`` (None: full precision). Raises ValueError
    for values and devices that cannot work; warns where bf16 would be emulated (much slower)."""
    if amp in AMP_OFF:
        return None
    if amp not in PRECISIONS:
        raise ValueError(f'train: amp: {amp!r} is not one of bf16, fp16 or ~ (off)')
    problem = precision_problem(amp, device)
    if problem and amp == 'fp16':
        raise ValueError(f'train: amp: fp16 needs a CUDA GPU (it scales the loss against fp16 underflow); this run '
                         f'is on {device.type}. Use amp: bf16 (CPUs with bf16 instructions, recent GPUs) or remove '
                         'amp.')
    if problem:
        raise ValueError(f'train: amp: {problem}; use amp: fp16')
    if warn and amp == 'bf16' and device.type == 'cpu' and not cpu_has_bf16():
        logging.getLogger(BASICSR_LOGGER).warning(
            'train: amp: bf16 on a CPU without bf16 instructions (AVX512-BF16/AMX): PyTorch emulates it, which is '
            'far slower than float32. Remove amp on this machine.')
    return torch_dtype(amp)


def compile_arguments(option: object) -> Optional[dict]:
    """``train: compile:`` -> keyword arguments of ``torch.compile`` (None: eager). ``true`` means
    ``{'dynamic': False}``: training patches have one size."""
    if option in (None, False):
        return None
    if option is True:
        return {'dynamic': False}
    if isinstance(option, Mapping):
        import torch

        allowed = set(inspect.signature(torch.compile).parameters) - {'model'}
        unknown = set(option) - allowed
        if unknown:
            raise ValueError(f'train: compile: unknown torch.compile argument(s) {sorted(unknown)}; '
                             f'known: {sorted(allowed)}')
        return {'dynamic': False, **option}
    raise ValueError(f'train: compile: must be true, false or a dict of torch.compile arguments, got {option!r}')
