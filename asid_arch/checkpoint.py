"""Checkpoints: safe loading, the three key layouts, and detecting the network from the weights.

Layouts accepted: the authors' released state dicts (``block0.residual_layer.0...``), BasicSR
checkpoints (``{'params': ..., 'params_ema': ...}``), and this package's plain state dicts
(``blocks.0...``). Loading always uses ``torch.load(weights_only=True)``: a file that needs
arbitrary Python objects (and could run code) is refused.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Mapping, Union

from torch import Tensor

from .archs.asid_arch import ASID
from .models.asid_model import BASICSR_PARAM_KEYS as BASICSR_KEYS
from .models.asid_model import PretrainedWeightsError, match_weights, read_weights


CheckpointError = PretrainedWeightsError  # a checkpoint that cannot be used, with a message for the user


@dataclass(frozen=True)
class NetworkConfig:
    """What the weights say about the network."""
    upscale: int
    num_feat: int
    num_blocks: int
    window_size: int
    num_in_ch: int
    num_out_ch: int

    @property
    def variant(self) -> str:
        return {3: 'ASID', 8: 'ASID-D8'}.get(self.num_blocks, f'ASID ({self.num_blocks} IDBs)')

    def build(self) -> ASID:
        return ASID(upscale=self.upscale, num_in_ch=self.num_in_ch, num_out_ch=self.num_out_ch, num_feat=self.num_feat,
                    num_blocks=self.num_blocks, window_size=self.window_size)


def load_state_dict(path: Union[str, Path]) -> Dict[str, Tensor]:
    """Read a checkpoint safely (BasicSR's ``params_ema`` preferred, then ``params``, or a plain state
    dict) and return its weights in the project's key layout; :class:`CheckpointError` otherwise."""
    state, _ = read_weights(path, BASICSR_KEYS)
    return ASID.convert_state_dict(state)


def detect_config(state: Mapping[str, Tensor], source: str = 'the checkpoint') -> NetworkConfig:
    """Variant, scale and widths from project-layout weights; a clear error when they do not fit ASID."""
    needed = ('conv_first.weight', 'upsampler.0.weight', 'blocks.0.sam_meso1.attn.rel_pos_bias_table')
    missing = [k for k in needed if k not in state]
    if missing:
        kind = ' (these look like Omni-SR weights)' if any(re.match(r'groups\.\d+\.block\.', k) for k in state) else ''
        raise CheckpointError(f'{source} does not look like ASID weights{kind}: no {", ".join(missing)}')
    num_feat, num_in_ch = state['conv_first.weight'].shape[:2]
    num_blocks = len({int(m.group(1)) for k in state for m in [re.match(r'blocks\.(\d+)\.', k)] if m})
    window_size = (math.isqrt(state['blocks.0.sam_meso1.attn.rel_pos_bias_table'].shape[0]) + 1) // 2
    up_channels = state['upsampler.0.weight'].shape[0]
    for num_out_ch in (num_in_ch, 3, 1):
        scale = math.isqrt(up_channels // num_out_ch)
        if scale >= 1 and num_out_ch * scale * scale == up_channels:
            return NetworkConfig(scale, int(num_feat), num_blocks, window_size, int(num_in_ch), int(num_out_ch))
    raise CheckpointError(f'{source}: cannot infer the scale from an upsampler with {up_channels} output channels')


def load_network(path: Union[str, Path]) -> tuple:
    """``(net in eval mode, NetworkConfig)`` from any of the three checkpoint layouts."""
    state = load_state_dict(path)
    config = detect_config(state, str(path))
    net = config.build()
    problems = match_weights(net, state, f'{path} ({config.variant} x{config.upscale})')
    if problems:
        raise CheckpointError('; '.join(problems))
    net.load_state_dict(state, strict=True)
    return net.eval(), config
