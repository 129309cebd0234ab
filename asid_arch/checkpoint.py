"""Checkpoints: safe loading, the three key layouts, and detecting the network from the weights.

Layouts accepted: the authors' released state dicts (``block0.residual_layer.0...``), BasicSR
checkpoints (``{'params': ..., 'params_ema': ...}``), and this package's plain state dicts
(``blocks.0...``). Loading always uses ``torch.load(weights_only=True)``: a file that needs
arbitrary Python objects (and could run code) is refused.
"""
from __future__ import annotations

import math
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Mapping, Union

import torch
from torch import Tensor

from .archs.asid_arch import ASID, is_reference_layout, state_dict_from_reference

BASICSR_KEYS = ('params_ema', 'params')  # BasicSR's wrappers; the EMA weights are preferred


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with a message meant for the user."""


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
    """Read a checkpoint safely and return its weights in the project's key layout."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'checkpoint {path} does not exist')
    try:
        content = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(f'refused to load {path}: it contains Python objects other than tensors, which could '
                              f'execute code when loaded (torch.load weights_only=True rejected it: '
                              f'{str(err).splitlines()[0][:200]})') from None
    except Exception as err:  # truncated, not a torch file, ...
        raise CheckpointError(f'{path} is not a readable PyTorch checkpoint ({type(err).__name__}: '
                              f'{str(err).splitlines()[0][:200]})') from None
    if not isinstance(content, Mapping):
        raise CheckpointError(f'{path} holds a {type(content).__name__}, not a state dict')
    for key in BASICSR_KEYS:
        if isinstance(content.get(key), Mapping) and content[key]:
            content = content[key]
            break
    state = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in content.items()}
    if not state or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f'{path} is not a state dict of tensors (keys: {list(content)[:5]})')
    return state_dict_from_reference(state) if is_reference_layout(state) else dict(state)


def detect_config(state: Mapping[str, Tensor], source: str = 'the checkpoint') -> NetworkConfig:
    """Variant, scale and widths from project-layout weights; a clear error when they do not fit ASID."""
    needed = ('conv_first.weight', 'upsampler.0.weight', 'blocks.0.sam_meso1.attn.rel_pos_bias_table')
    missing = [k for k in needed if k not in state]
    if missing:
        raise CheckpointError(f'{source} does not look like ASID weights: no {", ".join(missing)}')
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
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f'{path}: weights do not match {config.variant} x{config.upscale}: '
                              f'{str(err).splitlines()[0]} ...') from None
    return net.eval(), config
