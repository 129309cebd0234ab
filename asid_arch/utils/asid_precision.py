"""The one precision rule: which number formats a network may run in, where, and how to compile it.

Kit file (``basicsr/utils/asid_precision.py`` in a BasicSR checkout): the standard library at import (torch
is imported by the functions that need it, so that a command's ``--help`` can list :data:`PRECISIONS`
without it). ``train: amp:`` (:func:`autocast_dtype`) and ``asid-sr --precision`` (``asid_arch.inference``)
both ask :func:`precision_problem`; ``asid-sr`` and ``asid-bench`` resolve ``auto`` by :func:`resolve_precision`:
bf16 where the CPU computes it natively (:func:`cpu_has_bf16`), float32 elsewhere.
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
AUTO = 'auto'  # the machine's choice (:func:`resolve_precision`)
PRECISION_CHOICES = (AUTO, ) + PRECISIONS  # what ``--precision`` accepts
# torch.cpu.get_capabilities() keys of bfloat16 arithmetic in hardware: x86 AVX512-BF16 and AMX-BF16,
# Arm BF16 (NEON) and SVE-BF16; without them PyTorch and oneDNN emulate bfloat16 with float32 instructions
NATIVE_BF16_CAPABILITIES = ('avx512_bf16', 'amx_bf16', 'bf16', 'sve_bf16')
# bfloat16 keeps 8 significant bits: enough for images of 8 bits per sample, not for deeper ones, which
# ``auto`` runs in float32 (their output would otherwise carry about 8 bits of the network's result)
BF16_SAMPLE_BITS = 8


def torch_dtype(precision: str):
    """The torch dtype of a name of :data:`PRECISIONS`."""
    import torch

    return getattr(torch, DTYPE_NAMES[precision])


def cpu_has_bf16() -> bool:
    """True where the CPU computes bfloat16 natively, asked as PyTorch asks: oneDNN runs bfloat16 kernels here
    (``torch.ops.mkldnn._is_mkldnn_bf16_supported``) and ``torch.cpu.get_capabilities()`` lists bfloat16
    instructions (:data:`NATIVE_BF16_CAPABILITIES`). Elsewhere PyTorch emulates bfloat16, far slower than float32."""
    import torch

    try:
        onednn = torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        capabilities = torch.cpu.get_capabilities()
    except (AttributeError, RuntimeError):  # a torch build without these queries: no claim of native bf16
        return False
    return onednn and any(capabilities.get(name) is True for name in NATIVE_BF16_CAPABILITIES)


def resolve_precision(precision: str, device, sample_bits: int = BF16_SAMPLE_BITS) -> str:
    """``precision`` (a name of :data:`PRECISION_CHOICES`) on ``device`` (a ``torch.device``) for images of
    ``sample_bits`` bits per sample, as a name of :data:`PRECISIONS`: ``auto`` is bf16 on a CPU with native
    bfloat16 (:func:`cpu_has_bf16`) for images of up to :data:`BF16_SAMPLE_BITS` bits, fp32 elsewhere (CPUs
    that would emulate it, GPUs, 16-bit images); the other names are themselves."""
    if precision != AUTO:
        return precision
    native = device.type == 'cpu' and sample_bits <= BF16_SAMPLE_BITS and cpu_has_bf16()
    return 'bf16' if native else FULL_PRECISION


def describe_precision(precision: str, device) -> str:
    """What ``precision`` (``auto`` included) runs on ``device``, for a command's log line."""
    if precision != AUTO:
        return precision
    low, deep = resolve_precision(AUTO, device), resolve_precision(AUTO, device, 2 * BF16_SAMPLE_BITS)
    return f'auto: {low}' + (f', {deep} for images deeper than {BF16_SAMPLE_BITS} bits' if deep != low else '')


def casts_network(precision: str, device) -> bool:
    """Whether inference in ``precision`` on ``device`` casts the network and its input to that dtype (one dtype
    end to end, on the network's own CPU fast paths) rather than running float32 weights under autocast: bf16
    on the CPU. fp16 (CUDA) keeps autocast, which holds the normalisations in float32."""
    return precision == 'bf16' and device.type == 'cpu'


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
