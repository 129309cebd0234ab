"""ASID: Attention-Sharing Information Distillation for lightweight image super-resolution.

Park, Soh, Cho, AAAI 2025 (arXiv 2501.15774).

Kit file: copied into ``basicsr/archs/`` of a BasicSR checkout by ``asid-kit install`` (with its siblings
``asid_ops.py``, ``asid_layouts.py`` and ``../utils/asid_compat.py``), where BasicSR's arch scanner imports
and registers it (``network_g: {type: ASID, upscale: 2, num_blocks: 3}``). It imports only torch, basicsr
and those kit files, relatively, so it works in both trees.

The file reads top-down in the paper's order (``C`` features, ``c = C/4`` distilled channels):

* the network, ``F0 = Conv3x3(x)``, N IDBs, ``Conv3x3 + F0``, pixel shuffle ... :class:`ASID`
* attention sharing, as data: which SAM computes ``A`` and which re-uses it ... :func:`attention_sources`
* Information Distillation Block (IDB) ......................................... :class:`IDB`
  three calculation units ``LM -> SAM_meso -> SAM_global`` with channel split and distillation,
  then :class:`CAM`, ``Conv1x1`` + residual and :class:`ESA`.
* Local module (MBConv, expansion 1) ........................................... :class:`LocalModule`
* Spatial self-attention (SAM) ................. :class:`SAMBlock` (``x + Attn(LN(x)); x + GDFN(LN2d(x))``),
  :class:`SpatialAttention` (token mixing; a sharing layer applies ``out = A (v W_v)``), the meso and
  global partitions (:func:`window_partition`, :func:`grid_partition`)
* Channel self-attention (CAM) ...................... :class:`CAM`, :class:`ChannelAttentionBlock`,
  :class:`ChannelAttention`
* GDFN and LayerNorm2d (in SAM and CAM) ............................ :class:`GDFN`, :class:`LayerNorm2d`
* Enhanced spatial attention ................................................... :class:`ESA`
* input padding and checks ........................................ :func:`pad_input`, :func:`check_input`

The CPU fast paths the layers call (oneDNN kernels, fused epilogues, autograd functions) are in
``asid_ops.py``; they step aside for tracing, scripting, ``torch.compile``, export and float64, which see
only standard PyTorch operations (and, but for the spatial mean and the LayerNorms, for autocast). Checkpoint
key layouts and variant detection are in ``asid_layouts.py``.

All tensors are NCHW unless a docstring says otherwise; NHWC token maps are written ``(B, H, W, C)``.
"""
from __future__ import annotations

import contextlib
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..utils.asid_compat import register_once, source_file_of  # isort: skip  (first: installs the torchvision alias)

from basicsr.utils.registry import ARCH_REGISTRY  # after the alias

from .asid_layouts import is_reference_layout, position_bias_hint, state_dict_from_reference
from .asid_ops import (PointwiseConv, TokenLayerNorm, conv1x1_dwconv3x3, depthwise_conv3x3, eager_cpu, float32_training,
                       layer_norm, linear, spatial_mean)

# ----------------------------------------------------------------------------------------------
# Named constants of the released configurations
# ----------------------------------------------------------------------------------------------
WINDOW_SIZE = 8  # P: meso window side and global grid side (64 tokens per attention group)
DISTILL_RATIO = 4  # c = C / 4 channels are distilled (kept aside) in every calculation unit
SE_REDUCTION = 4  # squeeze-excitation bottleneck of the local module: h -> h / 4
FFN_EXPANSION = 2  # GDFN hidden width: d -> 2d
ESA_MIN_CHANNELS = 16  # ESA width f = max(C / 4, 16)
ESA_POOL_KERNEL, ESA_POOL_STRIDE = 7, 3
SAM_LN_EPS = 1e-5  # token LayerNorm in front of the spatial attention
LN2D_EPS = 1e-6  # LayerNorm2d in front of GDFN and channel attention
L2_EPS = 1e-12  # L2 normalisation of channel-attention queries and keys
MIN_PADDED_SIZE = 16  # ESA (stride-2 conv, 7x7 max-pool) needs at least 15 px per side

ATTN_SHARING_MODES = ('across', 'intra', 'none')
# channel attention logits: the paper's learned temperature, or neosr's scaled_dot_product_attention
# variant (its default ``flash_attn=True``): scale 1/sqrt(T), temperature unused, no gradient
CHANNEL_ATTENTION_MODES = ('temperature', 'sdpa')


def register_arch(cls: type) -> type:
    """``@ARCH_REGISTRY.register()`` through :func:`register_once`."""
    return register_once(ARCH_REGISTRY, cls, source_file_of(cls) or __file__)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


# ----------------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------------
@register_arch
class ASID(nn.Module):
    """ASID super-resolution network. ``(B, num_in_ch, H, W) -> (B, num_out_ch, H*s, W*s)``, any H, W.

    ``F0 = Conv3x3(x_pad)``; ``F = IDB_{N-1}(...IDB_0(F0))``; ``F = Conv3x3(F) + F0``;
    ``y = PixelShuffle_s(Conv3x3(F))`` cropped to ``(H*s, W*s)``. The input is zero-padded on the
    bottom/right to a multiple of ``window_size`` (as the reference). Inputs whose padded side would
    be under 16 px (too small for ESA, where the reference crashes) are edge-padded to 16 px instead.

    Args:
        upscale: scale factor s (2, 3 or 4; any integer >= 1 works).
        num_in_ch, num_out_ch: image channels.
        num_feat: C, divisible by 4 (48 in the released configs).
        num_blocks: number of IDBs N (3 = ASID, 8 = ASID-D8).
        window_size: meso window and global grid side P (8).
        attn_sharing: ``'across'`` (ASID: the first IDB computes, later IDBs re-use), ``'intra'``
            (shared within each IDB only) or ``'none'`` (every SAM computes its attention).
        channel_split: SAMs see only the non-distilled ``C - c`` channels (True) or all (False).
        distillation: information distillation (True) or the serial ``LM, SAM, CAM`` baseline (False).
        position_bias: relative position bias in the spatial attention (True, the paper). False is
            neosr's default ``pe=False``: no bias tables (six fewer state-dict keys).
        channel_attention: ``'temperature'`` (the paper's learned temperature) or ``'sdpa'``, neosr's
            default ``flash_attn=True`` (scale 1/sqrt(tokens per group), no gradient through ``A v``;
            see :class:`ChannelAttention`). A model trained with neosr's defaults needs
            ``position_bias=False, channel_attention='sdpa'`` (read off the weights by
            :func:`asid_arch.archs.asid_layouts.detect_variant`).
    """
    pads_input = True  # any H, W: the network pads to its window itself (ASIDModel.test pads other networks)
    # what a key mismatch says about the weights (the position-bias option): read by match_weights
    weights_hint = staticmethod(position_bias_hint)

    def __init__(self, upscale: int = 2, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 48,
                 num_blocks: int = 3, window_size: int = WINDOW_SIZE, attn_sharing: str = 'across',
                 channel_split: bool = True, distillation: bool = True, position_bias: bool = True,
                 channel_attention: str = 'temperature') -> None:
        super().__init__()
        _check(isinstance(upscale, int) and upscale >= 1, f'upscale must be a positive integer, got {upscale!r}')
        _check(isinstance(num_feat, int) and num_feat > 0 and num_feat % DISTILL_RATIO == 0,
               f'num_feat must be a positive multiple of {DISTILL_RATIO}, got {num_feat!r}')
        _check(isinstance(num_blocks, int) and num_blocks >= 1, f'num_blocks must be >= 1, got {num_blocks!r}')
        _check(isinstance(window_size, int) and window_size >= 1, f'window_size must be >= 1, got {window_size!r}')
        _check(isinstance(position_bias, bool), f'position_bias must be true or false, got {position_bias!r} '
               '(`auto`, read off pretrain_network_g, needs model_type: ASIDModel)')
        _check(channel_attention in CHANNEL_ATTENTION_MODES,
               f'channel_attention must be one of {CHANNEL_ATTENTION_MODES}, got {channel_attention!r} '
               '(`auto`, read off pretrain_network_g, needs model_type: ASIDModel)')
        self.upscale = upscale
        self.window_size = window_size
        self.attn_sharing = attn_sharing
        esa_channels = max(num_feat // DISTILL_RATIO, ESA_MIN_CHANNELS)
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, padding=1)
        self.blocks = nn.ModuleList(
            IDB(num_feat, window_size, sources, channel_split, distillation, esa_channels, position_bias,
                channel_attention) for sources in attention_sources(num_blocks, attn_sharing))
        self.conv_after_body = nn.Conv2d(num_feat, num_feat, 3, padding=1)
        self.upsampler = nn.Sequential(nn.Conv2d(num_feat, num_out_ch * upscale**2, 3, padding=1),
                                       nn.PixelShuffle(upscale))

    def pad(self, x: Tensor) -> Tensor:
        return pad_input(x, self.window_size)

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, self.conv_first.in_channels, 'ASID')
        h, w = x.shape[-2:]
        # channels_last (NHWC memory): 1x1 convs become GEMMs, depth-wise convs and the token
        # partitions read contiguous memory; every operation keeps its NCHW meaning
        feat0 = self.conv_first(self.pad(x).contiguous(memory_format=torch.channels_last))
        feat = feat0
        attns: List[Tensor] = []
        for block in self.blocks:
            feat = block(feat, attns)
        feat = self.conv_after_body(feat) + feat0
        # narrow, not slicing: its length is exactly H*s (an exported graph's output dims resolve to
        # s*height and s*width instead of min(...) of the padded size); same values
        out = self.upsampler(feat)
        return out.narrow(-2, 0, h * self.upscale).narrow(-1, 0, w * self.upscale).contiguous()

    @staticmethod
    def convert_state_dict(state_dict: Mapping[str, Tensor]) -> Dict[str, Tensor]:
        """Any supported key layout -> this class's keys (``ASIDModel.load_network`` calls it before
        BasicSR compares key names)."""
        return state_dict_from_reference(state_dict) if is_reference_layout(state_dict) else dict(state_dict)

    def load_state_dict(self, state_dict: Mapping[str, Tensor], strict: bool = True, assign: bool = False):
        """Load project keys or the released checkpoints' keys (converted); strict by default."""
        return super().load_state_dict(self.convert_state_dict(state_dict), strict=strict, assign=assign)


def asid(upscale: int = 2, **kwargs) -> ASID:
    """ASID as released: 3 IDBs, 48 channels (297,516 / 304,011 / 313,104 parameters at x2 / x3 / x4)."""
    return ASID(upscale=upscale, num_feat=48, num_blocks=3, **kwargs)


def asid_d8(upscale: int = 2, **kwargs) -> ASID:
    """ASID-D8 as released: 8 IDBs, 48 channels (732,146 / 738,641 / 747,734 parameters at x2 / x3 / x4)."""
    return ASID(upscale=upscale, num_feat=48, num_blocks=8, **kwargs)


# ----------------------------------------------------------------------------------------------
# Attention sharing, as data
# ----------------------------------------------------------------------------------------------
def attention_sources(num_blocks: int, attn_sharing: str) -> List[List[Optional[int]]]:
    """Per IDB and SAM: ``None`` (compute) or the index of the shared attention in the network's list.

    ``'across'`` (ASID): IDB 0 computes a1..a6, SAM k of every later IDB re-uses a_k.
    ``'intra'``: in every IDB, unit 1 computes (meso, global); units 2 and 3 re-use them.
    ``'none'``: every SAM computes its own attention.
    """
    _check(attn_sharing in ATTN_SHARING_MODES,
           f'attn_sharing must be one of {ATTN_SHARING_MODES}, got {attn_sharing!r}')
    if attn_sharing == 'none':
        return [[None] * 6 for _ in range(num_blocks)]
    if attn_sharing == 'across':
        return [[None] * 6] + [list(range(6)) for _ in range(num_blocks - 1)]
    return [[None, None] + [2 * k, 2 * k + 1] * 2 for k in range(num_blocks)]


# ----------------------------------------------------------------------------------------------
# Information distillation block
# ----------------------------------------------------------------------------------------------
class IDB(nn.Module):
    """Information distillation block. ``(B, C, H, W) -> (B, C, H, W)``.

    ``out = ESA(Conv1x1(Body(x)) + x)``. Body = three calculation units then :class:`CAM`. Unit ``u``
    (input width ``h_u`` = C, 3c, 2c):

    * ``y = LM(x)``; ``loc = y[:, :c]``; ``z = SAM_global(SAM_meso(y[:, c:]))``  (channel split)
    * units 1, 2: ``y = Conv1x1(cat(z, loc))``; distilled ``r_u = y[:, :c]``; ``y[:, c:]`` goes on
    * unit 3: ``Conv1x1(cat(r1, r2, z, loc))`` back to C channels.

    Ablations: ``channel_split=False`` lets the SAMs see the whole LM output (``z`` alone is fused);
    ``distillation=False`` gives the serial baseline ``3 x (LM, SAM_meso, SAM_global)`` on C channels.

    ``attn_sources`` has one entry per SAM (order meso1, global1, meso2, global2, meso3, global3):
    ``None`` makes that SAM compute its own attention, an integer ``k`` makes it re-use the k-th
    attention computed in the network so far (the ``attns`` list passed through ``forward``).
    """

    def __init__(self, num_feat: int, window_size: int = WINDOW_SIZE,
                 attn_sources: Sequence[Optional[int]] = (None, ) * 6, channel_split: bool = True,
                 distillation: bool = True, esa_channels: int = ESA_MIN_CHANNELS,
                 position_bias: bool = True, channel_attention: str = 'temperature') -> None:
        super().__init__()
        _check(len(attn_sources) == 6, 'an IDB has six SAMs: attn_sources needs six entries')
        c = num_feat // DISTILL_RATIO
        self.distill_channels = c
        self.channel_split = channel_split
        self.distillation = distillation
        self.attn_sources = list(attn_sources)
        unit_widths = (num_feat, 3 * c, 2 * c) if distillation else (num_feat, ) * 3
        split = c if (channel_split and distillation) else 0
        sam_widths = [width - split for width in unit_widths]
        self.lm1, self.lm2, self.lm3 = (LocalModule(width) for width in unit_widths)
        sams = []
        for unit, width in enumerate(sam_widths):
            for part, partition in enumerate(('meso', 'global')):
                compute = attn_sources[2 * unit + part] is None
                sams.append(SAMBlock(width, partition, window_size, compute=compute, position_bias=position_bias))
        self.sam_meso1, self.sam_global1, self.sam_meso2, self.sam_global2, self.sam_meso3, self.sam_global3 = sams
        if distillation:
            self.fuse1 = PointwiseConv(unit_widths[0], unit_widths[0])
            self.fuse2 = PointwiseConv(unit_widths[1], unit_widths[1])
            self.fuse3 = PointwiseConv(num_feat, num_feat)
        self.cam = CAM(num_feat, window_size, mode=channel_attention)
        self.conv_out = PointwiseConv(num_feat, num_feat)
        self.esa = ESA(num_feat, esa_channels)

    def _sams(self, x: Tensor, unit: int, attns: List[Tensor]) -> Tensor:
        """SAM_global(SAM_meso(x)) of one unit; appends the attention it computes to ``attns``."""
        for part, sam in enumerate((getattr(self, f'sam_meso{unit + 1}'), getattr(self, f'sam_global{unit + 1}'))):
            source = self.attn_sources[2 * unit + part]
            x, attn = sam(x, None if source is None else attns[source])
            if source is None:
                attns.append(attn)
        return x

    def _unit(self, x: Tensor, unit: int, attns: List[Tensor]) -> Tuple[Tensor, Tensor]:
        """LM, channel split and SAMs of one calculation unit: returns ``(z, loc)``."""
        y = getattr(self, f'lm{unit + 1}')(x)
        if not self.channel_split:
            return self._sams(y, unit, attns), y[:, :0]
        c = self.distill_channels
        loc, rest = y.split((c, y.shape[1] - c), dim=1)  # split, not slicing: its backward is one concatenation
        return self._sams(rest, unit, attns), loc

    def forward(self, x: Tensor, attns: List[Tensor]) -> Tensor:
        c = self.distill_channels
        if self.distillation:
            z, loc = self._unit(x, 0, attns)
            r1, y = self.fuse1(torch.cat((z, loc), dim=1)).split((c, x.shape[1] - c), dim=1)
            z, loc = self._unit(y, 1, attns)
            r2, y = self.fuse2(torch.cat((z, loc), dim=1)).split((c, y.shape[1] - c), dim=1)
            z, loc = self._unit(y, 2, attns)
            body = self.fuse3(torch.cat((r1, r2, z, loc), dim=1))
        else:
            body = x
            for unit in range(3):
                body = self._sams(getattr(self, f'lm{unit + 1}')(body), unit, attns)
        return self.esa(self.conv_out(self.cam(body), residual=x))


# ----------------------------------------------------------------------------------------------
# Local module
# ----------------------------------------------------------------------------------------------
class LocalModule(nn.Module):
    """LM: MBConv with expansion 1. ``(B, h, H, W) -> (B, h, H, W)``.

    ``x + Conv1x1(SE(GELU(DWConv3x3(GELU(Conv1x1(x))))))``, convolutions with bias.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv_in = PointwiseConv(dim, dim)
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.se = SqueezeExcitation(dim)
        self.conv_out = PointwiseConv(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        y = depthwise_conv3x3(self.conv_in(x, gelu=True), self.dwconv.weight, self.dwconv.bias, gelu=True)
        return self.conv_out(self.se(y), residual=x)


class SqueezeExcitation(nn.Module):
    """Channel gate: ``x * sigmoid(W2 SiLU(W1 mean_hw(x)))``, no biases. ``(B, h, H, W) -> same``."""

    def __init__(self, dim: int, reduction: int = SE_REDUCTION) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, dim // reduction, bias=False)
        self.fc2 = nn.Linear(dim // reduction, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        gate = torch.sigmoid(self.fc2(F.silu(self.fc1(spatial_mean(x)))))
        return x * gate[:, :, None, None]


# ----------------------------------------------------------------------------------------------
# Spatial self-attention (SAM) with attention sharing
# ----------------------------------------------------------------------------------------------
class SAMBlock(nn.Module):
    """SAM: ``x = x + Attn(LN(x))`` over meso windows or the global grid, then ``x = x + GDFN(LN2d(x))``.

    ``(B, d, H, W) -> (B, d, H, W)`` with ``H, W`` multiples of the window size. ``forward`` also
    returns the attention it used (computed here or received), ``(B * H*W/P^2, heads, P*P, P*P)``.
    """

    def __init__(self, dim: int, partition: str, window_size: int = WINDOW_SIZE, num_heads: int = 1,
                 compute: bool = True, position_bias: bool = True) -> None:
        super().__init__()
        _check(partition in _PARTITIONS, f"partition must be 'meso' or 'global', got {partition!r}")
        self.partition = partition
        self.window_size = window_size
        self.norm_attn = TokenLayerNorm(dim, eps=SAM_LN_EPS)
        self.attn = SpatialAttention(dim, window_size, num_heads, compute, position_bias)
        self.norm_ffn = LayerNorm2d(dim)
        self.ffn = GDFN(dim)

    def forward(self, x: Tensor, attn: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        split, merge_add = _PARTITIONS[self.partition]
        tokens = x.permute(0, 2, 3, 1)  # (B, H, W, d), contiguous: x is channels_last
        out, attn = self.attn(split(self.norm_attn(tokens), self.window_size), attn)
        x = merge_add(tokens, out, self.window_size).permute(0, 3, 1, 2)
        return self.ffn(self.norm_ffn(x), residual=x), attn


class SpatialAttention(nn.Module):
    """Self-attention inside groups of ``P*P`` tokens. Works on token groups ``(N, P*P, d)``.

    A *computing* layer (``compute=True``) owns ``qkv``, the relative-position bias table and
    returns its attention ``A = softmax(q k^T / sqrt(d_head) + B)`` of shape ``(N, heads, P*P, P*P)``.
    A *sharing* layer owns only ``v`` and applies an ``A`` computed elsewhere: ``out = proj(A v)``.
    Both return ``out = proj(A v)``, shape ``(N, P*P, d)``.
    """

    def __init__(self, dim: int, window_size: int = WINDOW_SIZE, num_heads: int = 1, compute: bool = True,
                 position_bias: bool = True) -> None:
        super().__init__()
        _check(dim % num_heads == 0, f'attention width {dim} is not divisible by num_heads={num_heads}')
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.compute = compute
        # With one head the output projection commutes with the token mixing, A (x Wv^T) Wp^T =
        # A x (Wp Wv)^T, so it is folded into the value weights: one matrix product fewer per layer
        # (set False to run the literal ``proj(A v)``, e.g. to count the architecture's MACs).
        self.fold_proj = num_heads == 1
        self.position_bias = position_bias and compute
        if compute:
            self.qkv = nn.Linear(dim, dim * 3, bias=False)
        if self.position_bias:
            self.rel_pos_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1)**2, num_heads))
            self.register_buffer('rel_pos_index', relative_position_index(window_size), persistent=False)
        if not compute:
            self.v = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)

    def _heads(self, t: Tensor) -> Tensor:
        n, tokens, _ = t.shape
        return t.view(n, tokens, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, tokens: Tensor, attn: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        n, t, d = tokens.shape
        fold_proj = self.fold_proj and self.num_heads == 1
        if self.compute:
            w_q, w_k, w_v = self.qkv.weight.chunk(3)
            if fold_proj:
                w_v = self.proj.weight @ w_v
            # the 1/sqrt(d_head) scale rides on the query weights
            qkv = linear(tokens, torch.cat((w_q * self.scale, w_k, w_v)))
            if self.num_heads == 1:  # strided views of the channel thirds: the backward pass is one concatenation
                q, k, v = qkv.split(d, dim=-1)
                k, v = k.transpose(1, 2), v[:, None]
            else:
                q, k, v = qkv.view(n, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
                q, k = q.reshape(-1, t, self.head_dim), k.reshape(-1, t, self.head_dim).transpose(1, 2)
            if self.position_bias:
                bias = self.rel_pos_bias_table[self.rel_pos_index].permute(2, 0, 1)  # (heads, T, T)
                logits = torch.baddbmm(bias.expand(n, -1, -1, -1).reshape(-1, t, t), q, k)
            else:
                logits = torch.bmm(q, k)
            attn = torch.softmax(logits, dim=-1).view(n, self.num_heads, t, t)
        else:
            if attn is None:
                raise ValueError('a sharing SpatialAttention layer needs the attention of its computing layer')
            v = self._heads(linear(tokens, self.proj.weight @ self.v.weight if fold_proj else self.v.weight))
        out = (attn @ v).transpose(1, 2).reshape(n, t, d)
        return (out if fold_proj else linear(out, self.proj.weight)), attn


# ----------------------------------------------------------------------------------------------
# Partitions (NHWC token maps <-> groups of P*P tokens) and relative positions
# ----------------------------------------------------------------------------------------------
def window_partition(x: Tensor, p: int) -> Tensor:
    """Meso partition. ``(B, H, W, C) -> (B * H/p * W/p, p*p, C)``.

    Token ``(i, j)`` of window ``(X, Y)`` is pixel ``(p*X + i, p*Y + j)``; tokens row-major in (i, j).
    """
    b, h, w, c = x.shape
    x = x.reshape(b, h // p, p, w // p, p, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, p * p, c)


def window_reverse(tokens: Tensor, p: int, b: int, h: int, w: int) -> Tensor:
    """Inverse of :func:`window_partition`. ``(B * H/p * W/p, p*p, C) -> (B, H, W, C)``."""
    c = tokens.shape[-1]
    return tokens.view(b, h // p, w // p, p, p, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)


def grid_partition(x: Tensor, g: int) -> Tensor:
    """Global partition. ``(B, H, W, C) -> (B * H/g * W/g, g*g, C)``.

    With ``h = H/g`` and ``w = W/g``, token ``(i, j)`` of group ``(X, Y)`` is pixel
    ``(i*h + X, j*w + Y)``: g*g tokens spread over the whole image, ``h`` rows and ``w`` columns apart.
    """
    b, hh, ww, c = x.shape
    x = x.view(b, g, hh // g, g, ww // g, c).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(-1, g * g, c)


def grid_reverse(tokens: Tensor, g: int, b: int, h: int, w: int) -> Tensor:
    """Inverse of :func:`grid_partition`. ``(B * H/g * W/g, g*g, C) -> (B, H, W, C)``."""
    c = tokens.shape[-1]
    return tokens.view(b, h // g, w // g, g, g, c).permute(0, 3, 1, 4, 2, 5).reshape(b, h, w, c)


def window_reverse_add(x: Tensor, tokens: Tensor, p: int) -> Tensor:
    """``x + window_reverse(tokens)`` for a contiguous ``(B, H, W, C)`` ``x``, without first copying the
    tokens back into image order (the addition reads them through a permuted view)."""
    b, h, w, c = x.shape
    out = x.view(b, h // p, p, w // p, p, c) + tokens.view(b, h // p, w // p, p, p, c).permute(0, 1, 3, 2, 4, 5)
    return out.reshape(b, h, w, c)


def grid_reverse_add(x: Tensor, tokens: Tensor, g: int) -> Tensor:
    """``x + grid_reverse(tokens)`` for a contiguous ``(B, H, W, C)`` ``x`` (see :func:`window_reverse_add`)."""
    b, h, w, c = x.shape
    out = x.view(b, g, h // g, g, w // g, c) + tokens.view(b, h // g, w // g, g, g, c).permute(0, 3, 1, 4, 2, 5)
    return out.reshape(b, h, w, c)


_PARTITIONS = {'meso': (window_partition, window_reverse_add), 'global': (grid_partition, grid_reverse_add)}


def relative_position_index(p: int) -> Tensor:
    """``(p*p, p*p)`` index into a ``(2p-1)^2`` bias table: ``(i_m - i_n + p-1)(2p-1) + (j_m - j_n + p-1)``."""
    coords = torch.stack(torch.meshgrid(torch.arange(p), torch.arange(p), indexing='ij')).flatten(1)  # (2, p*p)
    rel = coords[:, :, None] - coords[:, None, :] + (p - 1)  # (2, p*p, p*p)
    return rel[0] * (2 * p - 1) + rel[1]


# ----------------------------------------------------------------------------------------------
# Channel self-attention (CAM)
# ----------------------------------------------------------------------------------------------
class CAM(nn.Module):
    """Channel attention module: meso-window then grid channel attention, each with its GDFN.

    ``x += CA_meso(LN2d(x)); x += GDFN(LN2d(x)); x += CA_grid(LN2d(x)); x += GDFN(LN2d(x))``.
    ``(B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(self, dim: int, window_size: int = WINDOW_SIZE, num_heads: int = 1, mode: str = 'temperature') -> None:
        super().__init__()
        self.meso = ChannelAttentionBlock(dim, 'meso', window_size, num_heads, mode)
        self.grid = ChannelAttentionBlock(dim, 'grid', window_size, num_heads, mode)

    def forward(self, x: Tensor) -> Tensor:
        return self.grid(self.meso(x))


class ChannelAttentionBlock(nn.Module):
    """``x = x + CA(LN2d(x)); x = x + GDFN(LN2d(x))``. ``(B, C, H, W) -> (B, C, H, W)``."""

    def __init__(self, dim: int, partition: str, window_size: int = WINDOW_SIZE, num_heads: int = 1,
                 mode: str = 'temperature') -> None:
        super().__init__()
        self.norm_attn = LayerNorm2d(dim)
        self.attn = ChannelAttention(dim, partition, window_size, num_heads, mode)
        self.norm_ffn = LayerNorm2d(dim)
        self.ffn = GDFN(dim)

    def forward(self, x: Tensor) -> Tensor:
        x = self.attn(self.norm_attn(x), residual=x)
        return self.ffn(self.norm_ffn(x), residual=x)


class ChannelAttention(nn.Module):
    """Transposed (channel) attention inside pixel groups. ``(B, C, H, W) -> (B, C, H, W)``.

    ``q, k, v = DWConv3x3(Conv1x1(x))``; per group and head, q and k are ``d x T`` matrices,
    L2-normalised along T; ``A = softmax(q k^T * tau)`` is ``d x d``; ``out = Conv1x1(A v)``.
    ``partition='meso'``: groups are P x P windows (T = P^2). ``partition='grid'``: group (p, q) holds
    the pixels at offset (p, q) of every window (T = HW / P^2).

    ``mode='temperature'`` (the paper): ``tau`` is the learned temperature. ``mode='sdpa'`` (neosr's
    default ``flash_attn=True``): ``tau = 1/sqrt(T)`` (scaled_dot_product_attention's own scale; for the
    grid it depends on the image size), the temperature is kept but unused, and ``A v`` is computed
    without gradient as neosr does, so only ``proj`` learns in this branch.
    """

    def __init__(self, dim: int, partition: str, window_size: int = WINDOW_SIZE, num_heads: int = 1,
                 mode: str = 'temperature') -> None:
        super().__init__()
        _check(partition in ('meso', 'grid'), f"partition must be 'meso' or 'grid', got {partition!r}")
        _check(dim % num_heads == 0, f'channel attention width {dim} is not divisible by num_heads={num_heads}')
        _check(mode in CHANNEL_ATTENTION_MODES, f'channel_attention must be one of {CHANNEL_ATTENTION_MODES}, '
               f'got {mode!r}')
        self.partition = partition
        self.window_size = window_size
        self.num_heads = num_heads
        self.mode = mode
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = PointwiseConv(dim, dim * 3, bias=False)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, groups=dim * 3, bias=False)
        self.proj = PointwiseConv(dim, dim, bias=False)

    def _group_tokens(self, y: Tensor, width: int) -> Tensor:
        """An NHWC map ``(B, H, W, width)`` as token-major groups ``(N, T, width)`` (one copy)."""
        p = self.window_size
        if self.partition == 'meso':  # groups (b, X, Y), tokens (i, j)
            return window_partition(y, p)
        b, h, w, _ = y.shape
        y = y.reshape(b, h // p, p, w // p, p, width)
        return y.permute(0, 2, 4, 1, 3, 5).reshape(-1, (h // p) * (w // p), width)  # groups (b, i, j), tokens (X, Y)

    def _qkv(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """q, k, v as token-major groups ``(N, heads, T, d)``.

        On the CPU (:func:`eager_cpu`, autocast included) each of q, k and v is computed on its own (its slice
        of the 1x1 and depth-wise weights, which act per output channel) and grouped into a contiguous tensor:
        the matrix products below then read them without copies. Elsewhere (tracing, export, CUDA, and float32
        training, where the three slices' backward passes cost more than the copies saved) one 1x1 and one
        depth-wise convolution make the interleaved ``q|k|v`` map, grouped in one copy that moves whole pixel
        vectors, and q, k, v are strided views of it. Same values.
        """
        b, c, h, w = x.shape
        heads, d = self.num_heads, c // self.num_heads
        if eager_cpu(x, under_autocast=True) and not float32_training(x):
            nhwc, weight = x.permute(0, 2, 3, 1), self.qkv.weight.flatten(1)
            parts = []
            for part in range(3):
                rows = slice(part * c, (part + 1) * c)
                y = conv1x1_dwconv3x3(nhwc, weight[rows], self.qkv_dwconv.weight[rows])
                tokens = self._group_tokens(y.permute(0, 2, 3, 1), c)
                parts.append(tokens.view(tokens.shape[0], tokens.shape[1], heads, d).transpose(1, 2))
            return parts[0], parts[1], parts[2]
        tokens = self._group_tokens(self.qkv_dwconv(self.qkv(x)).permute(0, 2, 3, 1), 3 * c)
        n, t = tokens.shape[:2]
        q, k, v = (part.view(n, t, heads, d).transpose(1, 2) for part in tokens.split(c, dim=-1))
        return q, k, v

    def attend(self, x: Tensor) -> Tensor:
        """``A v`` for every group, back in image order: ``(B, C, H, W) -> (B, H, W, C)`` (NHWC)."""
        b, c, h, w = x.shape
        p = self.window_size
        q, k, v = self._qkv(x)  # (N, heads, T, d)
        # q_hat^T k_hat with L2-normalised columns = (q^T k) / (|q_i| |k_j|): no normalised copies
        # (square-sum-sqrt: an order of magnitude faster than linalg.vector_norm over this strided axis)
        q_norm = q.square().sum(-2).sqrt().clamp_min(L2_EPS)  # (N, heads, d)
        k_norm = k.square().sum(-2).sqrt().clamp_min(L2_EPS)
        cosine = (q.transpose(-2, -1) @ k) / (q_norm[..., :, None] * k_norm[..., None, :])
        if self.mode == 'sdpa':
            # 1/sqrt(T) from a reduction over the token axis, so that traced and exported graphs keep it
            # a function of the input size instead of a constant of the example's
            scale = torch.ones_like(q[:1, :1, :, :1]).sum(-2).rsqrt()
        else:
            scale = self.temperature
        attn = torch.softmax(cosine * scale, dim=-1)  # (N, heads, d, d)
        out = (v @ attn.transpose(-2, -1)).transpose(1, 2)  # (A v)^T: (N, T, heads, d)
        if self.partition == 'meso':
            out = out.reshape(b, h // p, w // p, p, p, c).permute(0, 1, 3, 2, 4, 5)
        else:
            out = out.reshape(b, p, p, h // p, w // p, c).permute(0, 3, 1, 4, 2, 5)
        return out.reshape(b, h, w, c)

    def forward(self, x: Tensor, residual: Optional[Tensor] = None) -> Tensor:
        """``proj(A v)``, plus ``residual`` if given (added in the projection's pass)."""
        with torch.no_grad() if self.mode == 'sdpa' else contextlib.nullcontext():
            out = self.attend(x)
        return self.proj(out.permute(0, 3, 1, 2), residual=residual)


# ----------------------------------------------------------------------------------------------
# Shared pieces: GDFN and LayerNorm2d (in SAM and CAM), ESA
# ----------------------------------------------------------------------------------------------
class GDFN(nn.Module):
    """Gated depth-wise feed-forward network. ``(B, d, H, W) -> (B, d, H, W)``.

    ``Conv1x1(d -> 2d) -> DWConv3x3 -> (a, b) halves -> GELU(a) * b -> Conv1x1(d -> d)``, no biases.
    Both operations before the split act per output channel, so each half is computed on its own
    from its slice of the weights: no strided halves in the forward pass, no concatenation in the
    backward pass, same parameters and results.
    """

    def __init__(self, dim: int, expansion: int = FFN_EXPANSION) -> None:
        super().__init__()
        hidden = dim * expansion // 2
        self.hidden = hidden
        self.project_in = PointwiseConv(dim, hidden * 2, bias=False)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=False)
        self.project_out = PointwiseConv(hidden, dim, bias=False)

    def forward(self, x: Tensor, residual: Optional[Tensor] = None) -> Tensor:
        """``GDFN(x)``, plus ``residual`` if given (added in the output projection's pass)."""
        x = x.permute(0, 2, 3, 1)  # NHWC view
        w, w_dw, a = self.project_in.weight.flatten(1), self.dwconv.weight, self.hidden
        gate = conv1x1_dwconv3x3(x, w[:a], w_dw[:a], gelu=True)  # GELU(a)
        return self.project_out(conv1x1_dwconv3x3(x, w[a:], w_dw[a:], multiply=gate), residual=residual)


class LayerNorm2d(nn.Module):
    """Per-pixel LayerNorm over channels (biased variance, eps 1e-6, affine). ``(B, C, H, W) -> same``."""

    def __init__(self, dim: int, eps: float = LN2D_EPS) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return layer_norm(x.permute(0, 2, 3, 1), self.weight, self.bias, self.eps).permute(0, 3, 1, 2)


class ESA(nn.Module):
    """Enhanced spatial attention. ``(B, C, H, W) -> (B, C, H, W)``; needs ``H, W >= 15``.

    ``m = sigmoid(Conv1x1(up(Conv3x3(maxpool7s3(Conv3x3s2(c1)))) + Conv1x1(c1)))``, ``c1 = Conv1x1(x)``;
    returns ``x * m``.
    """

    def __init__(self, dim: int, esa_channels: int) -> None:
        super().__init__()
        f = esa_channels
        self.squeeze = PointwiseConv(dim, f)
        self.skip = PointwiseConv(f, f)
        self.down = nn.Conv2d(f, f, 3, stride=2, padding=0)
        self.refine = nn.Conv2d(f, f, 3, padding=1)
        self.expand = PointwiseConv(f, dim)

    def forward(self, x: Tensor) -> Tensor:
        c1 = self.squeeze(x)
        m = self.refine(F.max_pool2d(self.down(c1), kernel_size=ESA_POOL_KERNEL, stride=ESA_POOL_STRIDE))
        if torch.compiler.is_exporting():
            m = widen_single_pixel_sides(m)
        m = F.interpolate(m, size=x.shape[-2:], mode='bilinear', align_corners=False)
        return x * torch.sigmoid(self.expand(self.skip(c1, residual=m)))


def widen_single_pixel_sides(m: Tensor) -> Tensor:
    """``m`` with a side of 1 px replicated to 2 px (other sides unchanged), for the ONNX export of ESA's
    upsampling. ``(B, C, h, w) -> (B, C, h', w')``. Bilinear resizing of two equal rows gives that row
    again (to float32 rounding), so the output is the same; but OpenCV 5.0's linear ``Resize`` is wrong for
    a 1-px-high input that is wider than 1 px (errors of 1e-2 on random maps, found against onnxruntime),
    which ESA meets where the padded image is 16 px high. Integer arithmetic, no branch: ``2 // (n + 1)``
    is 1 for ``n = 1`` and 0 for ``n >= 2``, for every size the exported graph sees."""
    h, w = m.shape[-2:]
    return F.pad(m, (0, 2 // (w + 1), 0, 2 // (h + 1)), mode='replicate')


# ----------------------------------------------------------------------------------------------
# Input: padding to the window, checks
# ----------------------------------------------------------------------------------------------
def pad_amounts(n: Union[int, torch.SymInt], p: int) -> Tuple[Union[int, torch.SymInt], Union[int, torch.SymInt]]:
    """``(edge, zero)``: the rows (or columns) :func:`pad_input` adds to a side of ``n >= 1`` px.

    Integer arithmetic with no comparison: where ``n`` is symbolic (``torch.export``, the ONNX export,
    ``torch.compile(dynamic=True)``) the graph keeps the whole rule for every size instead of the
    branch its example input took (an exported graph that only zero-pads crashes onnxruntime with
    SIGFPE on inputs of 8 px and less)."""
    largest_tiny = p * (-(-MIN_PADDED_SIZE // p) - 1)  # largest side whose zero padding gives under 16 px (8 for p=8)
    tiny = (2 * largest_tiny) // (n + largest_tiny)  # 1 for 1 <= n <= largest_tiny, else 0
    edge = tiny * (MIN_PADDED_SIZE - n)
    return edge, (p - (n + edge) % p) % p


def pad_input(x: Tensor, p: int) -> Tensor:
    """Zero-pad bottom/right to a multiple of ``p`` (the reference). A side whose padded size would
    be under 16 px (too small for ESA; the reference crashes there) is first edge-padded to 16 px."""
    edge_h, zero_h = pad_amounts(x.shape[-2], p)
    edge_w, zero_w = pad_amounts(x.shape[-1], p)
    if not (isinstance(edge_h, int) and isinstance(edge_w, int)) or edge_h or edge_w:  # eager: only where needed
        x = F.pad(x, (0, edge_w, 0, edge_h), mode='replicate')
    return F.pad(x, (0, zero_w, 0, zero_h))


def check_input(x: Tensor, channels: int, name: str) -> None:
    """A clear error for inputs the network cannot take: it wants ``(B, channels, H, W)`` floating point
    (RGB in [0, 1]) with ``H, W >= 1``."""
    if not isinstance(x, Tensor):
        raise TypeError(f'{name} expects a torch.Tensor (B, {channels}, H, W), got {type(x).__name__}')
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f'{name} expects a (B, {channels}, H, W) tensor, got shape {tuple(x.shape)}')
    if not x.is_floating_point():
        raise TypeError(f'{name} expects a floating-point tensor with values in [0, 1], got {x.dtype} '
                        '(for uint8 images use x.float() / 255)')
    if x.numel() == 0:
        raise ValueError(f'{name} got an empty input of shape {tuple(x.shape)}: batch, height and width must be >= 1')
