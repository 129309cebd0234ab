"""The ASID network rewritten in the tensor operations that pnnx converts to NCNN layers, for the NCNN export.

NCNN's tensors have at most four physical axes (w, h, d, c) and its ``Padding`` layer takes constant amounts;
the eager network's token partitions reshape to 5 and 6 axes and its padding to the window depends on the input
size. :func:`ncnn_form` returns a copy of a network whose layers compute the same values with:

* the meso and global partitions (spatial and channel attention) and their inverses written with the batch axis
  kept apart and at most 4 more (``(B, H/p, p, W/p, p*C)`` views and permutes of two axes): pnnx drops that
  batch axis, and the token groups are NCNN's channel axis (:func:`window_tokens`, :func:`grid_tokens`,
  :func:`window_groups_of_tokens` and their inverses); token groups that merge the batch axis into the group
  axis would become NCNN batch layouts, whose conversions were the slowest layers;
* the attention (one head, as in ASID) on ``(B, groups, tokens, C)`` without head axes;
* the SDPA channel attention's scale 1/sqrt(T) summed from the tokens (``ones_like`` would be folded into a
  constant of the traced size);
* the 1x1 convolutions (:class:`asid_arch.archs.asid_ops.PointwiseConv`) and the GDFN as convolutions on the NCHW
  map, which pnnx writes as NCNN ``Convolution`` layers, instead of matrix products on a permuted NHWC view (a
  permute and two reshapes around each product, slow in ncnn's packed layouts);
* the spatial attention's ``q, k, v`` taken by ``split`` (no 5-axis view, no ``unbind``) and its position bias
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

import torch
import torch.nn.functional as F
from torch import Tensor

from ..archs.asid_arch import (ASID, GDFN, L2_EPS, MIN_PADDED_SIZE, ChannelAttention, SAMBlock, SpatialAttention,
                               check_input)
from ..archs.asid_ops import PointwiseConv, linear

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
    """:func:`asid_arch.archs.asid_arch.window_partition` with the batch axis kept apart. ``(B, H, W, C) ->
    (B, H/p * W/p, p*p, C)``: ``(B, X, i, Y, [j c]) -> (B, X, Y, i, [j c])``."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // p, p, w // p, p * c).permute(0, 1, 3, 2, 4)
    return x.reshape(b, (h // p) * (w // p), p * p, c)


def window_image(tokens: Tensor, p: int, h: int, w: int) -> Tensor:
    """Inverse of :func:`window_tokens`. ``(B, H/p * W/p, p*p, C) -> (B, H, W, C)``."""
    b, _, _, c = tokens.shape
    return tokens.reshape(b, h // p, w // p, p, p * c).permute(0, 1, 3, 2, 4).reshape(b, h, w, c)


def grid_tokens(x: Tensor, g: int) -> Tensor:
    """:func:`asid_arch.archs.asid_arch.grid_partition` with the batch axis kept apart. ``(B, H, W, C) ->
    (B, H/g * W/g, g*g, C)``: ``(B, i, X, j, [Y c]) -> (B, X, i j, Y, c) -> (B, X, Y, i j, c)``, pixel
    ``(i*h + X, j*w + Y)`` with ``h = H/g``, ``w = W/g``."""
    b, hh, ww, c = x.shape
    h, w = hh // g, ww // g
    x = x.reshape(b, g, h, g, w * c).permute(0, 2, 1, 3, 4).reshape(b, h, g * g, w, c)
    return x.permute(0, 1, 3, 2, 4).reshape(b, h * w, g * g, c)


def grid_image(tokens: Tensor, g: int, hh: int, ww: int) -> Tensor:
    """Inverse of :func:`grid_tokens`. ``(B, H/g * W/g, g*g, C) -> (B, H, W, C)``."""
    b, _, _, c = tokens.shape
    h, w = hh // g, ww // g
    x = tokens.reshape(b, h, w, g * g, c).permute(0, 1, 3, 2, 4).reshape(b, h, g, g, w * c)
    return x.permute(0, 2, 1, 3, 4).reshape(b, hh, ww, c)


def window_groups_of_tokens(x: Tensor, p: int) -> Tensor:
    """The channel attention's grid groups (group = offset ``(i, j)`` in every window, tokens = windows) with the
    batch axis kept apart. ``(B, H, W, C) -> (B, p*p, H/p * W/p, C)``:
    ``(B, X, i, Y, [j c]) -> (B, i, X Y, j, c) -> (B, i, j, X Y, c)``."""
    b, hh, ww, c = x.shape
    h, w = hh // p, ww // p
    x = x.reshape(b, h, p, w, p * c).permute(0, 2, 1, 3, 4).reshape(b, p, h * w, p, c)
    return x.permute(0, 1, 3, 2, 4).reshape(b, p * p, h * w, c)


def window_groups_image(tokens: Tensor, p: int, hh: int, ww: int) -> Tensor:
    """Inverse of :func:`window_groups_of_tokens`. ``(B, p*p, H/p * W/p, C) -> (B, H, W, C)``."""
    b, _, _, c = tokens.shape
    h, w = hh // p, ww // p
    x = tokens.reshape(b, p, p, h * w, c).permute(0, 1, 3, 2, 4).reshape(b, p, h, w, p * c)
    return x.permute(0, 2, 1, 3, 4).reshape(b, hh, ww, c)


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


def sam_forward(self: SAMBlock, x: Tensor, attn=None):
    """:meth:`SAMBlock.forward` with the partitions of this module (token groups ``(B, N, p*p, d)``)."""
    split, merge = _TOKENS[self.partition]
    h, w = x.shape[-2:]
    tokens = x.permute(0, 2, 3, 1)
    out, attn = self.attn(split(self.norm_attn(tokens), self.window_size), attn)
    x = (tokens + merge(out, self.window_size, h, w)).permute(0, 3, 1, 2)
    return self.ffn(self.norm_ffn(x), residual=x), attn


def spatial_attention_forward(self: SpatialAttention, tokens: Tensor, attn=None):
    """:meth:`SpatialAttention.forward` (one head) on ``(B, N, T, d)`` token groups: ``q, k, v`` split off the last
    axis, the position bias added after the product. Returns ``(out, attn)``, ``attn`` of shape ``(B, N, T, T)``."""
    _one_head(self.num_heads)
    d = tokens.shape[-1]
    if self.compute:
        w_q, w_k, w_v = self.qkv.weight.chunk(3)
        if self.fold_proj:
            w_v = self.proj.weight @ w_v
        q, k, v = linear(tokens, torch.cat((w_q * self.scale, w_k, w_v))).split(d, dim=-1)
        logits = q @ k.transpose(-2, -1)
        if self.position_bias:
            logits = logits + self.rel_pos_bias_table[self.rel_pos_index][..., 0]
        attn = torch.softmax(logits, dim=-1)
    else:
        if attn is None:
            raise ValueError('a sharing SpatialAttention layer needs the attention of its computing layer')
        v = linear(tokens, self.proj.weight @ self.v.weight if self.fold_proj else self.v.weight)
    out = attn @ v
    return (out if self.fold_proj else linear(out, self.proj.weight)), attn


def channel_attend(self: ChannelAttention, x: Tensor) -> Tensor:
    """:meth:`ChannelAttention.attend` (one head) with the partitions of this module. ``(B, C, H, W) ->
    (B, H, W, C)``."""
    _one_head(self.num_heads)
    c, h, w = x.shape[1:]
    p = self.window_size
    qkv = self.qkv_dwconv(self.qkv(x)).permute(0, 2, 3, 1)
    tokens = window_tokens(qkv, p) if self.partition == 'meso' else window_groups_of_tokens(qkv, p)
    q, k, v = tokens.split(c, dim=-1)  # (B, N, T, C)
    q_norm = torch.clamp(q.square().sum(-2, keepdim=True).sqrt(), min=L2_EPS)  # (B, N, 1, C)
    k_norm = torch.clamp(k.square().sum(-2, keepdim=True).sqrt(), min=L2_EPS)
    cosine = (q.transpose(-2, -1) @ k) / (q_norm.transpose(-2, -1) * k_norm)  # (B, N, C, C)
    if self.mode == 'sdpa':
        # 1/sqrt(T) from the tokens themselves: pnnx folds ones_like into a constant of the traced size
        scale = (q[:, :1, :, :1] * 0 + 1).sum(-2, keepdim=True).rsqrt()
    else:
        scale = self.temperature
    out = v @ torch.softmax(cosine * scale, dim=-1).transpose(-2, -1)
    return window_image(out, p, h, w) if self.partition == 'meso' else window_groups_image(out, p, h, w)


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
