"""CPU kernels and fused fast paths of the ASID network (oneDNN matrix products and convolutions with fused
epilogues, a LayerNorm with a faster weight gradient) and the autograd functions behind them.

Kit file (``basicsr/archs/asid_ops.py`` in a BasicSR checkout): it imports only torch. Every function here
gives the plain PyTorch operation's values (to the rounding of its dtype) and takes the plain operation wherever
its fast path does not apply: float64 (the golden checks), CUDA, tracing, scripting, ``torch.compile`` and export
see only standard PyTorch operations. The fast paths run in float32 and, where this CPU's oneDNN runs it, in
bfloat16 (a network cast to it); under CPU autocast only :func:`spatial_mean` and :func:`layer_norm` take theirs.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _onednn_kernel(name: str):
    """oneDNN's CPU operator ``torch.ops.mkldnn.<name>`` when this torch build has it, else None."""
    try:
        return getattr(torch.ops.mkldnn, name) if torch.backends.mkldnn.is_available() else None
    except (AttributeError, RuntimeError):
        return None


_ONEDNN_LINEAR = _onednn_kernel('_linear_pointwise')  # matrix product with a fused epilogue
_ONEDNN_CONV = _onednn_kernel('_convolution_pointwise')  # convolution with a fused epilogue


def eager_cpu(x: Tensor, under_autocast: bool = False) -> bool:
    """Where this file's hand-made CPU paths may run: an eager CPU tensor outside autocast (or also under it,
    ``under_autocast``, for a path that computes in the dtypes it is given, as the plain operation does there).
    Tracing, scripting, torch.compile and export see only standard PyTorch operations."""
    return (x.device.type == 'cpu' and (under_autocast or not torch.is_autocast_enabled('cpu'))
            and not torch.jit.is_scripting() and not torch.jit.is_tracing() and not torch.compiler.is_compiling())


def float32_training(x: Tensor) -> bool:
    """Whether ``x`` is float32 outside autocast with gradients enabled (a float32 training step)."""
    return x.dtype == torch.float32 and torch.is_grad_enabled() and not torch.is_autocast_enabled(x.device.type)


# the probes' tolerance per dtype: float32 rounding, and bfloat16's 8-bit mantissa on values in [0, 4)
_PROBE_ATOL = {torch.float32: 1e-5, torch.bfloat16: 4e-2}


def _fused_epilogues_work(dtype: torch.dtype = torch.float32) -> bool:
    """Whether oneDNN's calls made below (linear, linear + residual, depth-wise convolution + GELU or
    product) exist in this torch build and give the plain operations' values in ``dtype``: tried once on
    tiny tensors, since these internal operators and their signatures differ between torch versions (and
    bfloat16 needs a CPU whose oneDNN runs it)."""
    if _ONEDNN_LINEAR is None or _ONEDNN_CONV is None:
        return False
    try:
        cpu = {'device': 'cpu', 'dtype': dtype}  # whatever defaults the importer set
        x = torch.rand(1, 4, 5, 5, **cpu).contiguous(memory_format=torch.channels_last)
        w, w_dw, nhwc, same = torch.rand(4, 4, **cpu), torch.rand(4, 1, 3, 3, **cpu), x.permute(0, 2, 3, 1), [1, 1]
        conv = F.conv2d(x, w_dw, padding=1, groups=4)
        pairs = [(_ONEDNN_LINEAR(nhwc, w, None, 'none', [], ''), F.linear(nhwc, w)),
                 (_ONEDNN_LINEAR.binary(nhwc, nhwc, w, None, 'add'), F.linear(nhwc, w) + nhwc),
                 (_ONEDNN_CONV(x, w_dw, None, same, same, same, 4, 'gelu', [], 'none'), F.gelu(conv)),
                 (_ONEDNN_CONV.binary(x, x, w_dw, None, same, same, same, 4, 'mul', None, None, [], None), conv * x)]
        return all(fast.dtype == dtype and torch.allclose(fast.float(), plain.float(), atol=_PROBE_ATOL[dtype])
                   for fast, plain in pairs)
    except (AttributeError, RuntimeError, TypeError):
        return False


_FUSED_EPILOGUES = _fused_epilogues_work()
# the dtypes whose eager CPU tensors take the oneDNN paths: float32, and bfloat16 where oneDNN runs it
# (a network cast to bfloat16 then keeps one dtype and the NHWC layout from its first to its last layer)
_ONEDNN_DTYPES = (torch.float32, ) + ((torch.bfloat16, ) if _FUSED_EPILOGUES and _fused_epilogues_work(
    torch.bfloat16) else ())


def _onednn_dtype(x: Tensor, weight: Tensor) -> Optional[torch.dtype]:
    """The dtype in which the oneDNN paths compute ``x`` with ``weight``, or None where ``F.linear`` and the plain
    operations must run: eager CPU float32, and bfloat16 where oneDNN runs it (a network cast to bfloat16: one
    dtype end to end). Float64 (the golden checks), autocast, CUDA, tracing, scripting, torch.compile and export
    take the plain path. (Under bfloat16 autocast these paths made the training step about 1% faster, within
    the noise: not kept.)"""
    if _ONEDNN_LINEAR is None or not eager_cpu(x):
        return None
    return x.dtype if x.dtype in _ONEDNN_DTYPES and weight.dtype == x.dtype else None


SQRT_2 = math.sqrt(2.0)


def exact_gelu(x: Tensor) -> Tensor:
    """Exact GELU, ``x * Phi(x)``. Eager, traced and compiled code runs ``F.gelu``. Under ``torch.export``
    (the ONNX export) it is written out as ``(x * (1 + erf(x / sqrt 2))) * 0.5``: the exporter's own
    decomposition, ``x * (0.5 * (1 + erf(x / sqrt 2)))``, makes opencv-python 5.0's ``readNetFromONNX``
    die with SIGSEGV (its GELU fusion half-matches it), while this order is fused into OpenCV's GELU
    layer. Halving is exact in floating point, so both orders give the same values bit for bit."""
    if torch.compiler.is_exporting():
        return x * (1 + torch.erf(x / SQRT_2)) * 0.5
    return F.gelu(x)


def _needs_grad(*tensors: Optional[Tensor]) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


class _OneDNNLinear(torch.autograd.Function):
    """``F.linear`` (plus a ``residual``, added in the same pass) with oneDNN's forward and
    input-gradient kernels (MKL's ``mm`` for the weight gradient)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Optional[Tensor], residual: Optional[Tensor]) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        if residual is None:
            return _ONEDNN_LINEAR(x, weight, bias, 'none', [], '')
        return _ONEDNN_LINEAR.binary(x, residual, weight, bias, 'add')

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tuple[Optional[Tensor], ...]:
        x, weight = ctx.saved_tensors
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = _ONEDNN_LINEAR(grad, weight.t().contiguous(), None, 'none', [], '')
        if ctx.needs_input_grad[1]:
            grad_weight = grad.reshape(-1, grad.shape[-1]).t() @ x.reshape(-1, x.shape[-1])
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.reshape(-1, grad.shape[-1]).sum(0)
        return grad_x, grad_weight, grad_bias, (grad if ctx.needs_input_grad[3] else None)


def linear(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, gelu: bool = False,
           residual: Optional[Tensor] = None) -> Tensor:
    """``F.linear(x, weight, bias)`` over the last axis, then exact GELU if ``gelu``, then ``+ residual``.

    On the CPU in float32 or bfloat16 (:func:`_onednn_dtype`) this runs oneDNN's matrix product (faster than the
    default ``mm`` for these tall, narrow shapes) with the residual addition fused into it, and the GELU too when
    no gradient is needed; the results agree with ``F.linear`` to the dtype's rounding. Other cases take
    ``F.linear``.
    """
    dtype = _onednn_dtype(x, weight)
    fuse_residual = (_FUSED_EPILOGUES and residual is not None and not gelu and residual.is_contiguous()
                     and residual.dtype == dtype)
    if dtype is None:
        y = F.linear(x, weight, bias)
    elif _needs_grad(x, weight, bias, residual):
        y = _OneDNNLinear.apply(x, weight, bias, residual if fuse_residual else None)
        if fuse_residual:
            return y
    elif fuse_residual:
        return _ONEDNN_LINEAR.binary(x, residual, weight, bias, 'add')
    else:
        y = _ONEDNN_LINEAR(x, weight, bias, 'gelu' if gelu else 'none', [], 'none' if gelu else '')
        gelu = False  # applied by the kernel
    y = exact_gelu(y) if gelu else y
    return y if residual is None else y + residual


def depthwise_conv3x3(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, gelu: bool = False,
                      multiply: Optional[Tensor] = None) -> Tensor:
    """``F.conv2d(x, weight, bias, padding=1, groups=C)``, then exact GELU if ``gelu``, then ``* multiply``.

    ``(B, C, H, W) -> (B, C, H, W)``. At inference on the CPU in float32 (no gradient needed) the GELU or
    the product is fused into oneDNN's convolution: one pass over the feature map fewer.
    """
    groups = x.shape[1]
    fused = (_FUSED_EPILOGUES and x.dtype in _ONEDNN_DTYPES and weight.dtype == x.dtype and eager_cpu(x)
             and (bias is None or bias.dtype == x.dtype) and (multiply is None or multiply.dtype == x.dtype)
             and not _needs_grad(x, weight, bias, multiply) and not (gelu and multiply is not None)
             and x.is_contiguous(memory_format=torch.channels_last)
             and (multiply is None or multiply.is_contiguous(memory_format=torch.channels_last)))
    if fused and multiply is not None:
        return _ONEDNN_CONV.binary(x, multiply, weight, bias, [1, 1], [1, 1], [1, 1], groups, 'mul', None, None, [],
                                   None)
    if fused:
        return _ONEDNN_CONV(x, weight, bias, [1, 1], [1, 1], [1, 1], groups, 'gelu' if gelu else 'none', [],
                            'none' if gelu else '')
    y = F.conv2d(x, weight, bias, padding=1, groups=groups)
    y = exact_gelu(y) if gelu else y
    return y if multiply is None else y * multiply


def conv1x1_dwconv3x3(nhwc: Tensor, weight: Tensor, dw_weight: Tensor, gelu: bool = False,
                      multiply: Optional[Tensor] = None) -> Tensor:
    """``DWConv3x3(Conv1x1(x))``, no biases: an NHWC view ``(B, H, W, in)``, 1x1 weights ``(out, in)`` and depth-wise
    weights ``(out, 1, 3, 3)`` -> ``(B, out, H, W)``, then GELU or ``* multiply`` as in :func:`depthwise_conv3x3`.
    Both convolutions act per output channel, so a layer may pass a slice of its weight rows (the GDFN's halves,
    the channel attention's q, k and v) and get that slice of the full result."""
    return depthwise_conv3x3(linear(nhwc, weight).permute(0, 3, 1, 2), dw_weight, gelu=gelu, multiply=multiply)


def spatial_mean(x: Tensor) -> Tensor:
    """``x.mean(dim=(2, 3))``: the mean of every channel over the image. ``(B, C, H, W) -> (B, C)``.

    In bfloat16 on the CPU (a bfloat16 network, or autocast) ATen widens the whole map to float32 before it sums
    (a copy of twice the map's size); here the sum is a matrix product with a vector of ones instead (oneDNN
    accumulates in float32 and rounds the sum once), then divided by ``H*W``: the same mean to bfloat16 rounding.
    Float32, float64, CUDA, tracing, scripting, ``torch.compile``, export and CPUs whose oneDNN does not run
    bfloat16 take ``x.mean``."""
    if x.dtype != torch.bfloat16 or x.dtype not in _ONEDNN_DTYPES or not eager_cpu(x, under_autocast=True):
        return x.mean(dim=(2, 3))
    b, c, h, w = x.shape
    if x.is_contiguous(memory_format=torch.channels_last):  # (B, HW, C) view: ones (B, 1, HW) times it
        total = torch.matmul(x.new_ones(b, 1, h * w), x.permute(0, 2, 3, 1).reshape(b, h * w, c))
    else:
        total = torch.matmul(x.reshape(b, c, h * w), x.new_ones(b, h * w, 1))
    return total.view(b, c) / (h * w)


class PointwiseConv(nn.Conv2d):
    """1x1 convolution computed as one matrix product over the channels of an NHWC view.

    Same parameters (and state-dict keys) as ``nn.Conv2d(in, out, 1)``; on the CPU this is several
    times faster than the convolution kernels for these shapes. ``(B, in, H, W) -> (B, out, H, W)``,
    returned as an NCHW view of channels_last memory. ``gelu=True`` applies exact GELU to the result.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: Tensor, gelu: bool = False, residual: Optional[Tensor] = None) -> Tensor:
        """``Conv1x1(x)``, then GELU if ``gelu``, then ``+ residual`` (``(B, out, H, W)``), fused where it pays."""
        res = None if residual is None else residual.permute(0, 2, 3, 1)
        return linear(x.permute(0, 2, 3, 1), self.weight.flatten(1), self.bias, gelu, res).permute(0, 3, 1, 2)


# ATen's CPU LayerNorm backward is fast for the weight/bias gradients only when the normalised width
# is a multiple of this (its float vector length); other widths (the SAMs' 36, 24, 12) take ours.
LN_FAST_WEIGHT_GRAD_MULTIPLE = 16


class _LayerNormFunction(torch.autograd.Function):
    """``F.layer_norm`` over the last axis whose backward gets the input gradient from ATen's kernel
    and the weight/bias gradients from two column sums (same values, several times faster for
    widths that are not a multiple of :data:`LN_FAST_WEIGHT_GRAD_MULTIPLE`).

    A bfloat16 ``x`` with float32 parameters (CPU autocast) is normalised in float32 and the result (and the
    input gradient) rounded to bfloat16: ATen's float32 kernels, forward and backward, are several times
    faster on this CPU than its mixed bfloat16/float32 ones, and give the same values to bfloat16 rounding.
    ``x`` is kept in its own dtype for the backward pass and widened again there."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
        out, mean, rstd = torch.native_layer_norm(x.to(weight.dtype), weight.shape, weight, bias, eps)
        ctx.save_for_backward(x, weight, bias, mean, rstd)
        return out.to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor], None]:
        x, weight, bias, mean, rstd = ctx.saved_tensors
        wide, grad = x.to(weight.dtype), grad.to(weight.dtype)
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.native_layer_norm_backward(grad, wide, weight.shape, mean, rstd, weight, bias,
                                                               [True, False, False])[0].to(x.dtype)
        rows = grad.reshape(-1, grad.shape[-1])
        if ctx.needs_input_grad[1]:
            x_hat = torch.addcmul(-mean * rstd, wide, rstd)  # (x - mean) * rstd
            grad_weight = (rows * x_hat.reshape(rows.shape)).sum(0)
        if ctx.needs_input_grad[2]:
            grad_bias = rows.sum(0)
        return grad_x, grad_weight, grad_bias, None


# ATen's CPU LayerNorm normalises one row at a time; in bfloat16 the SAMs' rows (36, 24 and 12 values, less than
# one or two 512-bit vectors of 32) spend most of it outside its vector loop, and whole-tensor passes
# (:func:`_narrow_layer_norm`) are faster; from 48 values (the CAM's) the row loop is faster
NARROW_LN_MAX_WIDTH = 36


def _narrow_layer_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """``F.layer_norm`` over the last axis of a contiguous bfloat16 ``x`` at inference, in passes over the
    whole tensor instead of a loop over its rows: ``d * (x - mean)`` by a matrix product with the integer
    matrix ``d I - 1`` (exact in bfloat16, sums in float32), the sum of its squares by a matrix product with
    ones (summed in float32, rounded once), ``rstd_i * weight_j`` by a rank-1 matrix product, then one
    ``addcmul`` with the bias. Each step rounds to bfloat16 once: the result is within a few bfloat16 roundings
    of ``F.layer_norm``'s."""
    width = x.shape[-1]
    centring = (torch.eye(width, dtype=x.dtype) * width - 1).contiguous()  # d I - 1: integers, exact
    scaled = _ONEDNN_LINEAR(x, centring, None, 'none', [], '')  # d * (x - mean)
    squares = _ONEDNN_LINEAR(scaled * scaled, x.new_ones(1, width), None, 'none', [], '')  # d^3 * variance
    rstd = squares.float().div_(width).add_(eps * width * width).rsqrt_().to(x.dtype)  # 1 / (d sqrt(var + eps))
    scale = _ONEDNN_LINEAR(rstd, weight[:, None].contiguous(), None, 'none', [], '')  # rstd_i * weight_j
    return torch.addcmul(bias, scaled, scale)


def layer_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """``F.layer_norm(x, (d,), weight, bias, eps)`` over the last axis: in bfloat16 inference on rows of at most
    :data:`NARROW_LN_MAX_WIDTH` values by :func:`_narrow_layer_norm`; in training and under CPU autocast (bfloat16
    activations, float32 parameters) on widths that are not a multiple of :data:`LN_FAST_WEIGHT_GRAD_MULTIPLE`
    by :class:`_LayerNormFunction` (for the SAMs' 12, 24 and 36 channels; at 48 ATen's mixed-dtype kernels are as
    fast as float32's plus the casts, which round float32 to bfloat16 slowly)."""
    if (x.dtype == torch.bfloat16 and x.shape[-1] <= NARROW_LN_MAX_WIDTH and x.dtype in _ONEDNN_DTYPES
            and weight.dtype == bias.dtype == x.dtype and eager_cpu(x) and not _needs_grad(x, weight, bias)):
        return _narrow_layer_norm(x.contiguous(), weight, bias, eps)  # (a SAM's input is a channel slice)
    slow_weight_grad = x.shape[-1] % LN_FAST_WEIGHT_GRAD_MULTIPLE != 0
    mixed = x.dtype == torch.bfloat16 and weight.dtype == bias.dtype == torch.float32  # CPU autocast
    if ((mixed or (torch.is_grad_enabled() and weight.requires_grad)) and slow_weight_grad
            and eager_cpu(x, under_autocast=True)):
        return _LayerNormFunction.apply(x, weight, bias, eps)
    return F.layer_norm(x, weight.shape, weight, bias, eps)


class TokenLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm(d)`` (same parameters) over the last axis of token maps, via :func:`layer_norm`."""

    def forward(self, x: Tensor) -> Tensor:
        return layer_norm(x, self.weight, self.bias, self.eps)
