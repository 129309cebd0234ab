"""The ASID network rewritten in the tensor operations that pnnx converts to NCNN layers, for the NCNN export.

NCNN's tensors have at most four physical axes (w, h, d, c) and its ``Padding`` layer takes constant amounts;
the eager network's token partitions reshape to 5 and 6 axes and its padding to the window depends on the input
size. :func:`ncnn_form` returns a copy of a network whose layers compute the same values with:

* the meso and global partitions (spatial and channel attention) and their inverses written with the batch axis
  kept apart and at most 4 more (``(B, H/p, p, W/p, p*C)`` views and permutes of two axes), pnnx dropping that
  batch axis: token groups ``(B, rows, cols, T, C)`` (:func:`window_tokens`, :func:`grid_tokens`) and, for the
  channel attention's grid, ``(B, p*p, rows, cols, C)`` (:func:`window_groups_of_tokens`), with their inverses.
  Every reshape takes its sizes from its own input (the group rows and columns stay separate axes, so the
  inverses need no other tensor's size): pnnx then writes one-input ``Reshape`` layers without batch axes, which
  ncnn's packed layouts (its default, and what the ncnn upscalers run) move at copy speed. A reshape whose sizes
  come from another tensor becomes a ``Reshape`` with a second input blob, and one that merges or references the
  batch axis a batch ``Reshape`` (params 12, 13, an element-by-element copy); in packed layouts both ran 20 to 50
  times slower than a copy and made the whole graph 7 to 10 times slower than with packing off;
* the attention (one head, as in ASID) without head axes; its projections (``qkv``, the sharing layers' ``v``,
  ``proj`` where it is not folded into ``v``) as 1x1 convolutions on the map before the partition and after the
  inverse (a per-token linear map commutes with moving tokens), not ``Linear`` layers on 5-axis groups, which
  pnnx wraps in reshapes that read another blob's sizes; the channel attention's grid output ``v @ A^T`` on
  ``(B, p*p, rows, cols, C)`` with ``A`` broadcast over the rows;
* the SDPA channel attention's scale 1/sqrt(T) summed from the tokens (``ones_like`` would be folded into a
  constant of the traced size);
* the 1x1 convolutions (:class:`asid_arch.archs.asid_ops.PointwiseConv`) and the GDFN as convolutions on the NCHW
  map, which pnnx writes as NCNN ``Convolution`` layers, instead of matrix products on a permuted NHWC view (a
  permute and two reshapes around each product, slow in ncnn's packed layouts);
* the spatial attention's ``q, k, v`` taken by ``split`` (no 6-axis view, no ``unbind``) and its position bias
  added after the product (no ``baddbmm`` of an expanded bias);
* the input padding as constant paddings followed by crops whose ends are expressions of the input size
  (:func:`pad_to_window`, the rule of :func:`asid_arch.archs.asid_arch.pad_amounts` with ``//``, ``*``, ``+``
  and ``-`` only), and the output crop as a slice.

Every rewrite moves or copies the same values (the padding and the partitions bit for bit, the rest to float32
rounding), which ``tests/test_cli/test_export_ncnn.py`` checks in PyTorch. The original network is not changed:
the copy's modules get these methods as instance attributes.
"""
from __future__ import annotations

import copy
import types
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..archs.asid_arch import (ASID, GDFN, L2_EPS, MIN_PADDED_SIZE, ChannelAttention, SAMBlock, SpatialAttention,
                               check_input)
from ..archs.asid_ops import PointwiseConv

# the constant amounts the padding adds before its crops: enough for any side (an edge pad to 16 px from 1 px,
# then a zero pad to the next multiple of the window)
EDGE_PAD_MAX = MIN_PADDED_SIZE - 1


def padded_side(n, p: int):
    """``(edge_end, zero_end)``: the side of ``n`` px after the edge padding and after the zero padding of
    :func:`asid_arch.archs.asid_arch.pad_input` (window ``p``), with integer ``+ - * //`` of ``n`` alone, which
    NCNN's crop expressions evaluate for every size."""
    largest_tiny = p * (-(-MIN_PADDED_SIZE // p) - 1)
    tiny = (2 * largest_tiny) // (n + largest_tiny)  # 1 for 1 <= n <= largest_tiny, else 0
    edge_end = n + tiny * (MIN_PADDED_SIZE - n)
    return edge_end, (edge_end + p - 1) // p * p


def pad_to_window(x: Tensor, p: int) -> Tensor:
    """:func:`asid_arch.archs.asid_arch.pad_input` as constant paddings and size-dependent crops (same values):
    edge-pad by 15, crop to the edge-padded size, zero-pad by ``p - 1``, crop to the multiple of ``p``."""
    h, w = x.shape[-2:]
    edge_h, zero_h = padded_side(h, p)
    edge_w, zero_w = padded_side(w, p)
    x = F.pad(x, (0, EDGE_PAD_MAX, 0, EDGE_PAD_MAX), mode='replicate')[:, :, :edge_h, :edge_w]
    return F.pad(x, (0, p - 1, 0, p - 1))[:, :, :zero_h, :zero_w]


def window_tokens(x: Tensor, p: int) -> Tensor:
    """:func:`asid_arch.archs.asid_arch.window_partition` with the batch axis and the window rows and columns kept
    apart. ``(B, H, W, C) -> (B, H/p, W/p, p*p, C)``: ``(B, X, i, Y, [j c]) -> (B, X, Y, i, [j c])``."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // p, p, w // p, p * c).permute(0, 1, 3, 2, 4)
    return x.reshape(b, x.shape[1], x.shape[2], p * p, c)


def window_image(tokens: Tensor, p: int) -> Tensor:
    """Inverse of :func:`window_tokens`. ``(B, H/p, W/p, p*p, C) -> (B, H, W, C)``."""
    b, rows, cols, _, c = tokens.shape
    x = tokens.reshape(b, rows, cols, p, p * c).permute(0, 1, 3, 2, 4)
    return x.reshape(b, x.shape[1] * p, x.shape[3] * p, c)


def grid_tokens(x: Tensor, g: int) -> Tensor:
    """:func:`asid_arch.archs.asid_arch.grid_partition` with the batch axis and the group rows and columns kept
    apart. ``(B, H, W, C) -> (B, H/g, W/g, g*g, C)``: ``(B, i, X, j, [Y c]) -> (B, X, i j, Y, c) -> (B, X, Y, i j,
    c)``, pixel ``(i*h + X, j*w + Y)`` with ``h = H/g``, ``w = W/g``."""
    b, hh, ww, c = x.shape
    x = x.reshape(b, g, hh // g, g, (ww // g) * c).permute(0, 2, 1, 3, 4)
    return x.reshape(b, x.shape[1], g * g, x.shape[4] // c, c).permute(0, 1, 3, 2, 4)


def grid_image(tokens: Tensor, g: int) -> Tensor:
    """Inverse of :func:`grid_tokens`. ``(B, H/g, W/g, g*g, C) -> (B, H, W, C)``."""
    x = tokens.permute(0, 1, 3, 2, 4)  # (B, H/g, g*g, W/g, C)
    b, rows, _, cols, c = x.shape
    x = x.reshape(b, rows, g, g, cols * c).permute(0, 2, 1, 3, 4)
    return x.reshape(b, g * x.shape[2], g * (x.shape[4] // c), c)


def window_groups_of_tokens(x: Tensor, p: int) -> Tensor:
    """The channel attention's grid groups (group = offset ``(i, j)`` in every window, tokens = windows ``(X, Y)``)
    with the batch axis apart. ``(B, H, W, C) -> (B, p*p, H/p, W/p, C)``:
    ``(B, [X i], Y, j, c) -> (B, [X i], j, Y, c) -> (B, X, i j, Y, c) -> (B, i j, X, Y, c)``."""
    b, hh, ww, c = x.shape
    x = x.reshape(b, hh, ww // p, p, c).permute(0, 1, 3, 2, 4)
    return x.reshape(b, x.shape[1] // p, p * p, x.shape[3], c).permute(0, 2, 1, 3, 4)


def window_groups_image(tokens: Tensor, p: int) -> Tensor:
    """Inverse of :func:`window_groups_of_tokens`. ``(B, p*p, H/p, W/p, C) -> (B, H, W, C)``."""
    x = tokens.permute(0, 2, 1, 3, 4)  # (B, rows, p*p, cols, C)
    b, rows, _, cols, c = x.shape
    x = x.reshape(b, rows * p, p, cols, c).permute(0, 1, 3, 2, 4)
    return x.reshape(b, x.shape[1], x.shape[2] * p, c)


_TOKENS = {'meso': (window_tokens, window_image), 'global': (grid_tokens, grid_image)}


def asid_forward(self: ASID, x: Tensor) -> Tensor:
    """:meth:`ASID.forward` with :func:`pad_to_window` and a slice for the output crop."""
    check_input(x, self.conv_first.in_channels, 'ASID')
    h, w = x.shape[-2:]
    feat0 = self.conv_first(pad_to_window(x, self.window_size))
    feat = feat0
    attns = []
    for block in self.blocks:
        feat = block(feat, attns)
    feat = self.conv_after_body(feat) + feat0
    return self.upsampler(feat)[:, :, :h * self.upscale, :w * self.upscale]


def _one_head(num_heads: int) -> None:
    if num_heads != 1:
        raise ValueError(f'the NCNN form computes one attention head (as ASID has), not {num_heads}')


def conv1x1(x: Tensor, weight: Tensor) -> Tensor:
    """``F.linear`` over the channels of an NCHW map as a 1x1 convolution (an NCNN ``Convolution``)."""
    return F.conv2d(x, weight[:, :, None, None])


def sam_forward(self: SAMBlock, x: Tensor, attn=None):
    """:meth:`SAMBlock.forward` with the partitions of this module: the attention's projections are 1x1
    convolutions on the map (a per-token linear map commutes with the partitions), the token groups
    ``(B, rows, cols, p*p, d)`` hold only ``q, k, v`` and the attention's output."""
    split, merge = _TOKENS[self.partition]
    normed = self.norm_attn(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    out, attn = self.attn(normed, attn, lambda t: split(t, self.window_size))
    out = merge(out, self.window_size).permute(0, 3, 1, 2)
    x = x + (out if self.attn.fold_proj else conv1x1(out, self.attn.proj.weight))
    return self.ffn(self.norm_ffn(x), residual=x), attn


def spatial_attention_forward(self: SpatialAttention, normed: Tensor, attn: Optional[Tensor] = None,
                              split: Callable[[Tensor], Tensor] = lambda t: t):
    """:meth:`SpatialAttention.forward` (one head) from the normalised ``(B, d, H, W)`` map: ``q, k, v`` (or ``v``)
    as one 1x1 convolution, then cut into token groups ``(B, rows, cols, T, d)`` by ``split`` (of an NHWC map);
    the position bias added after the product. Returns ``(out, attn)``: ``out`` the groups of ``A v`` (before the
    output projection where it is not folded into ``v``), ``attn`` of shape ``(B, rows, cols, T, T)``."""
    _one_head(self.num_heads)
    if not self.compute and attn is None:
        raise ValueError('a sharing SpatialAttention layer needs the attention of its computing layer')
    if self.compute:
        w_q, w_k, w_v = self.qkv.weight.chunk(3)
        weight = torch.cat((w_q * self.scale, w_k, self.proj.weight @ w_v if self.fold_proj else w_v))
    else:
        weight = self.proj.weight @ self.v.weight if self.fold_proj else self.v.weight
    groups = split(conv1x1(normed, weight).permute(0, 2, 3, 1))
    if not self.compute:
        return attn @ groups, attn
    q, k, v = groups.split(normed.shape[1], dim=-1)
    logits = q @ k.transpose(-2, -1)
    if self.position_bias:
        logits = logits + self.rel_pos_bias_table[self.rel_pos_index][..., 0]
    attn = torch.softmax(logits, dim=-1)
    return attn @ v, attn


def channel_attend(self: ChannelAttention, x: Tensor) -> Tensor:
    """:meth:`ChannelAttention.attend` (one head) with the partitions of this module: meso groups
    ``(B, rows, cols, T, C)``, grid groups ``(B, p*p, rows, cols, C)`` whose tokens are flattened for the Gram
    matrices only. ``(B, C, H, W) -> (B, H, W, C)``."""
    _one_head(self.num_heads)
    c = x.shape[1]
    p = self.window_size
    qkv = self.qkv_dwconv(self.qkv(x)).permute(0, 2, 3, 1)
    meso = self.partition == 'meso'
    q, k, v = (window_tokens(qkv, p) if meso else window_groups_of_tokens(qkv, p)).split(c, dim=-1)
    if not meso:  # (B, p*p, rows, cols, C) -> (B, p*p, rows*cols, C)
        q, k = q.flatten(2, 3), k.flatten(2, 3)
    q_norm = torch.clamp(q.square().sum(-2, keepdim=True).sqrt(), min=L2_EPS)  # (..., 1, C)
    k_norm = torch.clamp(k.square().sum(-2, keepdim=True).sqrt(), min=L2_EPS)
    cosine = (q.transpose(-2, -1) @ k) / (q_norm.transpose(-2, -1) * k_norm)  # (..., C, C)
    if self.mode == 'sdpa':
        # 1/sqrt(T) from the tokens themselves: pnnx folds ones_like into a constant of the traced size
        scale = (q[..., :1] * 0 + 1).sum(-2, keepdim=True).rsqrt()
    else:
        scale = self.temperature
    mix = torch.softmax(cosine * scale, dim=-1).transpose(-2, -1)
    if meso:
        return window_image(v @ mix, p)
    return window_groups_image(v @ mix.unsqueeze(2), p)


def pointwise_forward(self: PointwiseConv, x: Tensor, gelu: bool = False, residual=None) -> Tensor:
    """:meth:`PointwiseConv.forward` as a 1x1 convolution on NCHW (an NCNN ``Convolution``, no permutes)."""
    y = F.conv2d(x, self.weight, self.bias)
    if gelu:
        y = F.gelu(y)
    return y if residual is None else y + residual


def gdfn_forward(self: GDFN, x: Tensor, residual=None) -> Tensor:
    """:meth:`GDFN.forward` with 1x1 and depth-wise convolutions on NCHW."""
    h = self.hidden
    halves = []
    for part in (slice(0, h), slice(h, 2 * h)):
        y = F.conv2d(x, self.project_in.weight[part])
        halves.append(F.conv2d(y, self.dwconv.weight[part], padding=1, groups=h))
    y = F.conv2d(F.gelu(halves[0]) * halves[1], self.project_out.weight)
    return y if residual is None else y + residual


_FORMS = ((ASID, 'forward', asid_forward), (PointwiseConv, 'forward', pointwise_forward),
          (GDFN, 'forward', gdfn_forward), (SAMBlock, 'forward', sam_forward),
          (SpatialAttention, 'forward', spatial_attention_forward), (ChannelAttention, 'attend', channel_attend))


def ncnn_form(net: ASID) -> ASID:
    """A copy of ``net`` (evaluation mode) whose layers compute with the operations above; ``net`` is unchanged."""
    form = copy.deepcopy(net).eval()
    for module in form.modules():
        for cls, name, method in _FORMS:
            if isinstance(module, cls):
                setattr(module, name, types.MethodType(method, module))
    return form
