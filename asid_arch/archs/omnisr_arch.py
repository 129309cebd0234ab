"""Omni-SR: Omni Aggregation Networks for lightweight image super-resolution (Wang et al., CVPR 2023).

The model ASID builds on, for the model-zoo comparison. Kit file: its pieces are ASID's (imported from
``asid_arch.py``, ``asid_ops.py`` and ``asid_layouts.py``): an Omni Self-Attention block is

    LM -> SAMBlock(meso, 4 heads) -> ChannelAttentionBlock(meso, 4 heads)
       -> SAMBlock(global, 4 heads) -> ChannelAttentionBlock(grid, 4 heads)

and an OSAG is ``ESA(x + Conv1x1(OSA_Block(x)))``. No attention is shared.
"""
from __future__ import annotations

import re
from typing import Dict, List, Mapping, Tuple

import torch
from torch import Tensor, nn

from .asid_arch import (ESA, ESA_MIN_CHANNELS, WINDOW_SIZE, ChannelAttentionBlock, LocalModule, SAMBlock, _check,
                        check_input, pad_input, register_arch)
from .asid_layouts import ATTN_NAME_PARTS, CA_NAME_PARTS, ESA_NAME_PAIRS, LM_NAME_PARTS, TOP_NAME_PAIRS, rename_prefix
from .asid_ops import PointwiseConv

OMNISR_HEADS = 4  # heads of every spatial and channel attention (released config)


class OSABlock(nn.Module):
    """Omni self-attention block. ``(B, C, H, W) -> (B, C, H, W)``, H and W multiples of the window."""

    def __init__(self, dim: int, window_size: int = WINDOW_SIZE, num_heads: int = OMNISR_HEADS) -> None:
        super().__init__()
        self.lm = LocalModule(dim)
        self.sam_meso = SAMBlock(dim, 'meso', window_size, num_heads)
        self.ca_meso = ChannelAttentionBlock(dim, 'meso', window_size, num_heads)
        self.sam_global = SAMBlock(dim, 'global', window_size, num_heads)
        self.ca_grid = ChannelAttentionBlock(dim, 'grid', window_size, num_heads)

    def forward(self, x: Tensor) -> Tensor:
        x, _ = self.sam_meso(self.lm(x))
        x, _ = self.sam_global(self.ca_meso(x))
        return self.ca_grid(x)


class OSAG(nn.Module):
    """Omni-scale aggregation group: ``ESA(x + Conv1x1(OSA_Block(x)))``. ``(B, C, H, W) -> same``."""

    def __init__(self, dim: int, window_size: int = WINDOW_SIZE, num_heads: int = OMNISR_HEADS,
                 esa_channels: int = ESA_MIN_CHANNELS) -> None:
        super().__init__()
        self.block = OSABlock(dim, window_size, num_heads)
        self.conv_out = PointwiseConv(dim, dim)
        self.esa = ESA(dim, esa_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.esa(x + self.conv_out(self.block(x)))


@register_arch
class OmniSR(nn.Module):
    """Omni-SR. ``(B, num_in_ch, H, W) -> (B, num_out_ch, H*s, W*s)``, any H, W (padded as ASID).

    Released config: ``num_feat=64, num_groups=5, window_size=8, num_heads=4``
    (784,604 / 793,259 / 805,376 parameters at x2 / x3 / x4).
    """
    pads_input = True  # any H, W: padded to the window as ASID

    def __init__(self, upscale: int = 4, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64,
                 num_groups: int = 5, window_size: int = WINDOW_SIZE, num_heads: int = OMNISR_HEADS) -> None:
        super().__init__()
        _check(isinstance(upscale, int) and upscale >= 1, f'upscale must be a positive integer, got {upscale!r}')
        _check(num_feat % num_heads == 0, f'num_feat {num_feat} is not divisible by num_heads {num_heads}')
        self.upscale = upscale
        self.window_size = window_size
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, padding=1)
        self.groups = nn.Sequential(*(OSAG(num_feat, window_size, num_heads, max(num_feat // 4, ESA_MIN_CHANNELS))
                                      for _ in range(num_groups)))
        self.conv_after_body = nn.Conv2d(num_feat, num_feat, 3, padding=1)
        self.upsampler = nn.Sequential(nn.Conv2d(num_feat, num_out_ch * upscale**2, 3, padding=1),
                                       nn.PixelShuffle(upscale))

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, self.conv_first.in_channels, 'OmniSR')
        h, w = x.shape[-2:]
        # channels_last activations, as in ASID: the shared blocks expect NHWC memory
        feat0 = self.conv_first(pad_input(x, self.window_size).contiguous(memory_format=torch.channels_last))
        feat = self.conv_after_body(self.groups(feat0)) + feat0
        return self.upsampler(feat)[..., :h * self.upscale, :w * self.upscale].contiguous()

    @staticmethod
    def convert_state_dict(state_dict: Mapping[str, Tensor]) -> Dict[str, Tensor]:
        """Released or project keys -> project keys (see ``ASID.convert_state_dict``)."""
        if any(_REFERENCE_GROUP.match(key) for key in state_dict):
            return omnisr_state_dict_from_reference(state_dict)
        return dict(state_dict)

    def load_state_dict(self, state_dict: Mapping[str, Tensor], strict: bool = True, assign: bool = False):
        """Load project keys or the released checkpoints' keys (converted); strict by default."""
        return super().load_state_dict(self.convert_state_dict(state_dict), strict=strict, assign=assign)


# ----------------------------------------------------------------------------------------------
# Released checkpoint layout: residual_layer.{g}.residual_layer.0.layer.{i} is step i of the block
# ----------------------------------------------------------------------------------------------
def _omnisr_name_pairs() -> List[Tuple[str, str]]:
    pairs = [(f'residual_layer.0.layer.0.{ref}', f'block.lm.{ours}') for ref, ours in LM_NAME_PARTS]
    steps = ((2, 4, 'sam_meso', ATTN_NAME_PARTS), (8, 10, 'sam_global', ATTN_NAME_PARTS),
             (5, 6, 'ca_meso', CA_NAME_PARTS), (11, 12, 'ca_grid', CA_NAME_PARTS))
    for attn_step, ffn_step, name, parts in steps:  # attention step, then its GDFN step
        pairs.append((f'residual_layer.0.layer.{attn_step}.norm.', f'block.{name}.norm_attn.'))
        pairs += [(f'residual_layer.0.layer.{attn_step}.fn.{ref}', f'block.{name}.attn.{ours}') for ref, ours in parts]
        pairs += [(f'residual_layer.0.layer.{ffn_step}.norm.', f'block.{name}.norm_ffn.'),
                  (f'residual_layer.0.layer.{ffn_step}.fn.', f'block.{name}.ffn.')]
    return pairs + [('residual_layer.1.', 'conv_out.')] + [p for p in ESA_NAME_PAIRS if p[0].startswith('esa.')]


OMNISR_NAME_PAIRS = _omnisr_name_pairs()
_REFERENCE_GROUP = re.compile(r'residual_layer\.(\d+)\.')
_PROJECT_GROUP = re.compile(r'groups\.(\d+)\.')


def omnisr_state_dict_from_reference(state_dict: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """Released Omni-SR keys -> project keys (unknown keys kept, so strict loading names them)."""
    out = {}
    for key, value in state_dict.items():
        match = _REFERENCE_GROUP.match(key)
        if match:
            out[f'groups.{match.group(1)}.' + rename_prefix(key[match.end():], OMNISR_NAME_PAIRS)] = value
        else:
            out[rename_prefix(key, TOP_NAME_PAIRS)] = value
    return out


def omnisr_state_dict_to_reference(state_dict: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """Project keys -> released Omni-SR keys."""
    out = {}
    for key, value in state_dict.items():
        match = _PROJECT_GROUP.match(key)
        if match:
            rest = rename_prefix(key[match.end():], OMNISR_NAME_PAIRS, reverse=True)
            out[f'residual_layer.{match.group(1)}.{rest}'] = value
        else:
            out[rename_prefix(key, TOP_NAME_PAIRS, reverse=True)] = value
    return out
