"""Checkpoints: safe loading, the three key layouts, and detecting the network from the weights.

Layouts accepted: the authors' released state dicts (``block0.residual_layer.0...``), BasicSR
checkpoints (``{'params': ..., 'params_ema': ...}``), neosr checkpoints (``{'params': ...}`` in the
released layout, without the position-bias tables when trained with its defaults), and this
package's plain state dicts (``blocks.0...``). The neosr variants (no position bias, SDPA channel
attention) are read off the weights where they tell (:func:`asid_arch.archs.asid_layouts.detect_variant`);
``channel_attention`` states the channel attention where they do not. Loading always uses
``torch.load(weights_only=True)``: a file that needs arbitrary Python objects (and could run code) is refused.

The authors' released weights by name, in one call: :func:`from_pretrained` (``asid_arch.from_pretrained``).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Mapping, Optional, Union

import torch
from torch import Tensor

from .archs.asid_arch import ASID, CHANNEL_ATTENTION_MODES, WINDOW_SIZE
from .archs.asid_layouts import AUTO, detect_variant, temperatures_untouched, variant_name
from .console import shown
from .utils.asid_errors import PretrainedWeightsError
from .utils.asid_weights_loading import BASICSR_PARAM_KEYS as BASICSR_KEYS
from .utils.asid_weights_loading import match_weights, read_weights

# ASID's IDB has 118 tensors: weights naming N IDBs with fewer than this many tensors each cannot be ASID's,
# and are refused before the network is even described
MIN_TENSORS_PER_IDB = 100
# memory the network derives from its shape besides the weights (the attention index tables: 6 x 32 KB in
# ASID); a network whose derived tables need more than this, or than the weights themselves, is refused
DERIVED_BYTES_ALLOWANCE = 64 << 20


@dataclass(frozen=True)
class NetworkConfig:
    """What the weights say about the network."""
    upscale: int
    num_feat: int
    num_blocks: int
    window_size: int
    num_in_ch: int
    num_out_ch: int
    position_bias: bool = True
    channel_attention: str = 'temperature'
    note: str = ''  # what the weights could not tell, for the user

    @property
    def name(self) -> str:
        """'ASID', 'ASID-D8' or 'ASID (N IDBs)'."""
        return {3: 'ASID', 8: 'ASID-D8'}.get(self.num_blocks, f'ASID ({self.num_blocks} IDBs)')

    @property
    def variant(self) -> str:
        """The name, plus neosr's settings where they differ from the paper's."""
        if self.position_bias and self.channel_attention == 'temperature':
            return self.name
        return f'{self.name} [{variant_name(self.position_bias, self.channel_attention)}]'

    def build(self) -> ASID:
        return ASID(upscale=self.upscale, num_in_ch=self.num_in_ch, num_out_ch=self.num_out_ch, num_feat=self.num_feat,
                    num_blocks=self.num_blocks, window_size=self.window_size, position_bias=self.position_bias,
                    channel_attention=self.channel_attention)


def state_dict_from_file(path: Union[str, Path]) -> Dict[str, Tensor]:
    """Read a checkpoint safely (BasicSR's ``params_ema`` preferred, then ``params``, or a plain state
    dict) and return its weights in the project's key layout; :class:`PretrainedWeightsError` otherwise."""
    state, _ = read_weights(path, BASICSR_KEYS)
    return ASID.convert_state_dict(state)


def detect_config(state: Mapping[str, Tensor], source: str = 'the checkpoint',
                  channel_attention: Optional[str] = None) -> NetworkConfig:
    """Variant, scale and widths from project-layout weights; a clear error when they do not fit ASID.

    ``channel_attention`` (``'temperature'`` or ``'sdpa'``) overrides what the weights suggest; None or
    ``'auto'`` reads it off them."""
    needed = ('conv_first.weight', 'upsampler.0.weight', 'blocks.0.sam_meso1.attn.qkv.weight')
    missing = [k for k in needed if k not in state]
    if missing:
        kind = ' (these look like Omni-SR weights)' if any(re.match(r'groups\.\d+\.block\.', k) for k in state) else ''
        raise PretrainedWeightsError(f'{source} does not look like ASID weights{kind}: no {", ".join(missing)}')
    table = state.get('blocks.0.sam_meso1.attn.rel_pos_bias_table')
    shaped = (('conv_first.weight', 4), ('upsampler.0.weight', 4), ('blocks.0.sam_meso1.attn.rel_pos_bias_table', 2))
    for key, dims in shaped:
        if key in state and (state[key].dim() != dims or 0 in state[key].shape):
            raise PretrainedWeightsError(f'{source}: {key} has the shape {tuple(state[key].shape)}; ASID\'s is '
                                         f'{dims}-D and not empty: these are not ASID weights')
    num_feat, num_in_ch = state['conv_first.weight'].shape[:2]
    num_blocks = len({int(m.group(1)) for k in state for m in [re.match(r'blocks\.(\d+)\.', k)] if m})
    if num_blocks * MIN_TENSORS_PER_IDB > len(state):
        raise PretrainedWeightsError(f'{source}: the weights name {num_blocks} IDBs but hold only {len(state)} '
                                     'tensors (an ASID IDB has 118): damaged, or not ASID weights')
    window_size = (math.isqrt(table.shape[0]) + 1) // 2 if table is not None else WINDOW_SIZE
    variant = detect_variant(state)
    note = ''
    if channel_attention not in (None, AUTO):
        if channel_attention not in CHANNEL_ATTENTION_MODES:
            raise PretrainedWeightsError(f'channel attention {channel_attention!r} is not one of '
                                         f'{CHANNEL_ATTENTION_MODES}')
        variant['channel_attention'] = channel_attention
    elif variant['position_bias'] and temperatures_untouched(state):
        note = ('its channel temperatures are all exactly 1.0 (untrained): if it was trained with neosr\'s '
                'flash_attn=True (its default), state the channel attention as sdpa (--channel-attention sdpa)')
    up_channels = state['upsampler.0.weight'].shape[0]
    for num_out_ch in (num_in_ch, 3, 1):
        scale = math.isqrt(up_channels // num_out_ch)
        if scale >= 1 and num_out_ch * scale * scale == up_channels:
            return NetworkConfig(scale, int(num_feat), num_blocks, window_size, int(num_in_ch), int(num_out_ch),
                                 note=note, **variant)
    raise PretrainedWeightsError(f'{source}: cannot infer the scale from an upsampler with {up_channels} output '
                                 'channels')


def network_from_state(state: Mapping[str, Tensor], source: str, channel_attention: Optional[str] = None) -> tuple:
    """``(net in eval mode, NetworkConfig)`` from project-layout weights: built as they say, loaded strictly
    (a mismatch is a :class:`PretrainedWeightsError` naming the keys)."""
    config = detect_config(state, source, channel_attention)
    label = f'{source} ({config.variant} x{config.upscale})'
    try:  # first on the meta device: shapes only, so weights describing a huge network allocate nothing
        with torch.device('meta'):
            described = config.build()
    except ValueError as err:  # sizes ASID refuses (a width that is not a multiple of 4, ...)
        raise PretrainedWeightsError(f'{label}: {err}') from None
    problems = match_weights(described, state, label)
    if problems:
        raise PretrainedWeightsError('; '.join(problems))
    derived = sum(b.numel() * b.element_size() for name, b in described.named_buffers() if name not in state)
    held = sum(v.numel() * v.element_size() for v in state.values())
    if derived > max(held, DERIVED_BYTES_ALLOWANCE):
        raise PretrainedWeightsError(f'{label}: window size {config.window_size} would need {derived} bytes of index '
                                     f'tables, more than the {held} bytes of weights: damaged, or not ASID weights')
    net = config.build()
    net.load_state_dict(state, strict=True)
    return net.eval(), config


def network_from_file(path: Union[str, Path], channel_attention: Optional[str] = None) -> tuple:
    """``(net in eval mode, NetworkConfig)`` from any of the checkpoint layouts (see the module docstring)."""
    return network_from_state(state_dict_from_file(path), shown(path), channel_attention)


def from_pretrained(name: str, folder: Union[str, Path, None] = None, progress: bool = True) -> ASID:
    """The released network called ``name`` (``asid_x2`` ... ``asid_d8_x4``, any case: the table
    :data:`asid_arch.released.RELEASED`) as an :class:`ASID` on the CPU in eval mode, ``net.upscale`` its scale.

    The file is downloaded once into the cache (``folder``, else ``$ASID_WEIGHTS_DIR``, else torch.hub's
    checkpoints folder) and checked on every use (:func:`asid_arch.released.fetch`), then loaded strictly
    (:func:`network_from_file`). Raises KeyError for an unknown name, :class:`PretrainedWeightsError` (or its
    subclass :class:`asid_arch.released.WeightsDownloadError`) when the weights cannot be had.
    """
    from .released import fetch  # (the downloader's modules only for released weights)

    return network_from_file(fetch(name, folder, progress=progress))[0]
