"""Weights files read safely, and matched against a network before it loads them.

Kit file (``basicsr/utils/asid_weights_loading.py`` in a BasicSR checkout): torch, the standard library and the kit
file ``asid_weights_container.py`` (what a file declares, checked before torch reads it); it knows no
network. :func:`read_weights` is the one way this project reads a weights file (``pretrain_network_g``,
``asid-sr --model``, the bench); :func:`match_weights` says, in lines naming the keys, why weights do not
fit a network (with the network's own hint where it has one: ``weights_hint``).
"""
from __future__ import annotations

import inspect
import math
import pickle
import re
import zipfile
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .asid_errors import PretrainedWeightsError
from .asid_weights_container import (MAX_KEYS_LISTED, Unusable, View, check_views, declared_content, first_line,
                                     key_list, printable, select_state, view_of)

BASICSR_PARAM_KEYS = ('params_ema', 'params')  # BasicSR's checkpoint wrappers, EMA weights preferred
# what torch.load(weights_only=True) says of a pickle that names Python objects (code) besides tensors;
# other unpickling errors ("invalid load key", ...) mean the file is not a checkpoint at all
UNSAFE_PICKLE_MARKERS = ('Unsupported global', )


def check_tensors(state: Mapping[str, Tensor], source: str, held_bytes: Optional[int] = None) -> None:
    """Check a state dict's tensors from their metadata alone, before any element is touched: dense,
    real, not on the meta device, each view inside its storage without overlapping elements, and
    together no more bytes than ``held_bytes`` (default: what their distinct storages hold).
    Raises :class:`PretrainedWeightsError` naming ``source`` and the keys."""
    strays = [str(key) for key, value in state.items() if not isinstance(value, Tensor)]
    if strays:
        raise PretrainedWeightsError(f'{source} is not a state dict of tensors ({key_list(strays)} are not tensors)')
    views = {key: view_of(value) for key, value in state.items()}
    if held_bytes is None:
        storages = {(value.untyped_storage().data_ptr(), value.untyped_storage().nbytes())
                    for key, value in state.items() if isinstance(views[key], View)}
        held_bytes = sum(nbytes for _, nbytes in storages)
    check_views(views, source, held_bytes)


def read_weights(path: Union[str, Path], param_key: Union[None, str, Sequence[str]] = BASICSR_PARAM_KEYS,
                 ) -> Tuple[Dict[str, Tensor], Optional[str]]:
    """The tensors of a weights file, safely: ``(state, key used)``.

    ``param_key``: the wrapper key(s) to look for, in order of preference (``params_ema``, ``params``
    for BasicSR checkpoints). A plain state dict has none and is used as it is; so is BasicSR's
    fallback to ``params`` when the asked key is absent. A leading ``module.`` is dropped.

    Before torch reads the file, what it declares is checked against what it holds (records within
    the file and not compressed, storages the size of their records, tensor views inside their
    storages without overlapping elements, all tensors together no larger than the file), so a small
    forged file cannot make the reader allocate or scan more than its own size. It is then loaded
    with ``torch.load(weights_only=True)``, memory-mapped where torch can, and checked again; last,
    floating-point weights are checked for NaN and Inf. Raises :class:`PretrainedWeightsError` with
    a one-line reason naming the file.
    """
    path = Path(path)
    source = printable(path)
    keys = [param_key] if isinstance(param_key, str) else list(param_key or [])
    declared, size, zipped = declared_content(path, source)
    check_views(select_state(declared, keys, source, (View, Unusable))[0], source, size)
    mapped = {'mmap': True} if zipped and 'mmap' in inspect.signature(torch.load).parameters else {}
    try:
        try:
            content = torch.load(path, map_location='cpu', weights_only=True, **mapped)
        except (RuntimeError, OSError, UnicodeError):
            if not mapped:
                raise
            # a file system without mmap, or a file name torch's mapping cannot pass on (not UTF-8)
            content = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as err:
        if any(marker in str(err) for marker in UNSAFE_PICKLE_MARKERS):
            raise PretrainedWeightsError(
                f'refused to load {source}: besides tensors it holds Python objects, which could run code when '
                'loaded; only plain weights files are accepted (re-save the state dict with torch.save)') from None
        raise PretrainedWeightsError(f'{source} is not a PyTorch checkpoint (unreadable: {first_line(err)})') from None
    except (EOFError, RuntimeError, OSError, ValueError, zipfile.BadZipFile) as err:
        raise PretrainedWeightsError(f'{source} is not a readable PyTorch checkpoint: truncated or another format '
                                     f'({type(err).__name__}: {first_line(err)})') from None
    state, used = select_state(content, keys, source, (Tensor, ))
    check_tensors(state, source, size)
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise PretrainedWeightsError(f'{source} holds non-finite weights (NaN or Inf) in {len(bad)} tensor(s): '
                                     f'{", ".join(bad[:MAX_KEYS_LISTED])}')
    return state, used


def weights_for(net: torch.nn.Module, path: Union[str, Path], param_key: Optional[str] = 'params',
                ) -> Tuple[Dict[str, Tensor], Optional[str]]:
    """:func:`read_weights`, then converted to ``net``'s key layout by its ``convert_state_dict`` (if it has
    one): what ``pretrain_network_g`` loads, before any key comparison."""
    state, used = read_weights(path, param_key)
    convert = getattr(net, 'convert_state_dict', None)
    return (convert(state) if convert is not None else state), used


def _number_kind(tensor: Tensor) -> str:
    if tensor.is_floating_point():
        return 'floating-point'
    return 'bool' if tensor.dtype == torch.bool else 'complex' if tensor.is_complex() else 'integer'


def _number_type_problem(own: Mapping[str, Tensor], state: Mapping[str, Tensor]) -> Optional[str]:
    wrong = sorted(k for k in set(own) & set(state) if _number_kind(own[k]) != _number_kind(state[k]))
    if not wrong:
        return None
    listed = ', '.join(f'{k} is {str(state[k].dtype).replace("torch.", "")}' for k in wrong[:MAX_KEYS_LISTED])
    more = f' and {len(wrong) - MAX_KEYS_LISTED} more' if len(wrong) > MAX_KEYS_LISTED else ''
    kinds = ' and '.join(sorted({_number_kind(own[k]) for k in wrong}))
    return f'wrong number type: {listed}{more}, where the network has {kinds} tensors'


def dtype_mismatches(net: torch.nn.Module, state: Mapping[str, Tensor], source: str) -> List[str]:
    """A line naming the tensors of ``state`` whose kind of number differs from ``net``'s (integer or bool
    weights where the network has floating-point ones: loading would convert them silently), or none."""
    problem = _number_type_problem(net.state_dict(), state)
    return [f'{source}: {problem}'] if problem else []


def match_weights(net: torch.nn.Module, state: Mapping[str, Tensor], source: str) -> List[str]:
    """Why ``state`` does not fit ``net`` strictly: lines naming missing/unexpected keys, shape mismatches and
    tensors of another kind of number, with a hint where the weights tell what they are (another scale,
    another architecture). Only shapes and dtypes are read, no element."""
    own = net.state_dict()
    missing, unexpected = set(own) - set(state), set(state) - set(own)
    shapes = [k for k in set(own) & set(state) if own[k].shape != state[k].shape]
    problems = []
    if missing:
        problems.append(f'missing keys: {key_list(missing)}')
    if unexpected:
        problems.append(f'unexpected keys: {key_list(unexpected)}')
    if shapes:
        problems.append('shape mismatch: ' + ', '.join(f'{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)} '
                                                       'in the network' for k in sorted(shapes)[:MAX_KEYS_LISTED]))
    number_type = _number_type_problem(own, state)
    if number_type:
        problems.append(number_type)
    hints = []
    if any(re.match(r'(groups\.\d+\.block\.|residual_layer\.\d+\.residual_layer\.0\.layer\.)', k) for k in state):
        hints.append('these look like Omni-SR weights')
    elif any(re.match(r'(blocks\.\d+\.|block\d+\.residual_layer)', k) for k in state) and 'ASID' not in type(
            net).__name__:
        hints.append('these look like ASID weights')
    own_hint = getattr(net, 'weights_hint', None)  # what the network reads off a key mismatch (ASID: its variant)
    hint = own_hint(missing, unexpected, state) if own_hint is not None else None
    if hint:
        hints.append(hint)
    up = 'upsampler.0.weight'
    if (up in own and up in state and own[up].shape[1:] == state[up].shape[1:]
            and own[up].shape[0] != state[up].shape[0]):
        out_channels = own[up].shape[0] // getattr(net, 'upscale', 1)**2
        scale = math.isqrt(max(state[up].shape[0] // max(out_channels, 1), 1))
        hints.append(f'the weights are for x{scale}, the network is x{getattr(net, "upscale", "?")}: set '
                     'network_g: upscale and scale to match, or strict_load_g: false to fine-tune all but the '
                     'upsampler')
    if problems and hints:
        problems.append('; '.join(hints))
    return [f'{source}: {p}' for p in problems]
