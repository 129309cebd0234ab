"""The CPU fast paths (oneDNN linear with its fused residual, the fused depth-wise convolution epilogues,
LayerNorm backward, folded attention projection, malloc tuning) give the same numbers as the plain
PyTorch operations they replace."""
from __future__ import annotations

import platform

import pytest
import torch
import torch.nn.functional as F

from asid_arch import ASID
from asid_arch.archs import asid_arch as arch
from asid_arch.archs import asid_ops as ops
from asid_arch.cpu_settings import keep_freed_memory

needs_onednn = pytest.mark.skipif(ops._ONEDNN_LINEAR is None, reason='this torch build has no oneDNN linear')


def grads(out: torch.Tensor, tensors, seed: int = 1):
    torch.manual_seed(seed)
    return torch.autograd.grad(out, tensors, torch.randn_like(out))


@needs_onednn
@pytest.mark.parametrize('bias', [False, True])
def test_onednn_linear_matches_f_linear(bias):
    torch.manual_seed(0)
    # an NHWC view of channels_last memory, as PointwiseConv passes it
    x = torch.randn(2, 36, 9, 11).contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1).requires_grad_()
    w = torch.randn(20, 36, requires_grad=True)
    b = torch.randn(20, requires_grad=True) if bias else None
    inputs = [x, w] + ([b] if bias else [])
    assert ops._onednn_dtype(x, w) == torch.float32
    fast, ref = ops.linear(x, w, b), F.linear(x, w, b)
    assert (fast - ref).abs().max().item() < 1e-5
    for g_fast, g_ref in zip(grads(fast, inputs), grads(ref, inputs)):
        assert (g_fast - g_ref).abs().max().item() < 1e-4 * max(1.0, g_ref.abs().max().item())
    with torch.no_grad():  # the fused GELU epilogue (inference only)
        assert (ops.linear(x, w, b, gelu=True) - F.gelu(F.linear(x, w, b))).abs().max().item() < 1e-5


@needs_onednn
@pytest.mark.parametrize('bias', [False, True])
def test_fused_residual_linear_matches_linear_plus_residual(bias):
    """``linear(..., residual=r)`` adds r in oneDNN's pass: same values, and the residual's gradient is the
    output gradient (training) as for ``F.linear(x) + r``."""
    torch.manual_seed(0)
    nhwc = lambda t: t.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)  # noqa: E731
    x = nhwc(torch.randn(2, 36, 9, 11)).requires_grad_()
    r = nhwc(torch.randn(2, 20, 9, 11)).requires_grad_()
    w = torch.randn(20, 36, requires_grad=True)
    b = torch.randn(20, requires_grad=True) if bias else None
    inputs = [x, w, r] + ([b] if bias else [])
    fast, ref = ops.linear(x, w, b, residual=r), F.linear(x, w, b) + r
    assert fast.grad_fn is not None and 'OneDNN' in type(fast.grad_fn).__name__
    assert (fast - ref).abs().max().item() < 1e-5
    for g_fast, g_ref in zip(grads(fast, inputs), grads(ref, inputs)):
        assert (g_fast - g_ref).abs().max().item() < 1e-4 * max(1.0, g_ref.abs().max().item())
    with torch.no_grad():
        assert (ops.linear(x, w, b, residual=r) - ref).abs().max().item() < 1e-5
        # GELU then the residual (not fused together), and a residual that is not a contiguous NHWC view
        assert (ops.linear(x, w, b, gelu=True, residual=r) - (F.gelu(F.linear(x, w, b)) + r)).abs().max().item() < 1e-5
        r_nchw = torch.randn(2, 20, 9, 11).permute(0, 2, 3, 1)
        assert (ops.linear(x, w, b, residual=r_nchw) - (F.linear(x, w, b) + r_nchw)).abs().max().item() < 1e-5


@pytest.mark.skipif(not ops._FUSED_EPILOGUES, reason="this torch build's oneDNN has no fused epilogues")
@pytest.mark.parametrize('epilogue', ['none', 'gelu', 'multiply'])
def test_fused_depthwise_conv_matches_conv_then_epilogue(epilogue):
    """The inference-only oneDNN depth-wise convolution with GELU or a product fused equals the plain ops;
    with a gradient needed (training) it gives the plain ops' gradient."""
    torch.manual_seed(0)
    c = 24
    x = torch.randn(2, c, 10, 13).contiguous(memory_format=torch.channels_last)
    w, b = torch.randn(c, 1, 3, 3), torch.randn(c)
    other = torch.randn(2, c, 10, 13).contiguous(memory_format=torch.channels_last)
    gelu, multiply = epilogue == 'gelu', other if epilogue == 'multiply' else None

    def plain(weight):
        y = F.conv2d(x, weight, b, padding=1, groups=c)
        return F.gelu(y) if gelu else y * other if multiply is not None else y
    with torch.no_grad():
        assert (ops.depthwise_conv3x3(x, w, b, gelu, multiply) - plain(w)).abs().max().item() < 1e-5
    w.requires_grad_()
    out, ref = ops.depthwise_conv3x3(x, w, b, gelu, multiply), plain(w)
    assert (out - ref).abs().max().item() < 1e-5
    (g_out, ), (g_ref, ) = grads(out, [w]), grads(ref, [w])
    assert (g_out - g_ref).abs().max().item() < 1e-4 * max(1.0, g_ref.abs().max().item())


def test_fused_epilogues_are_probed_and_optional(monkeypatch):
    """The pinned torch has the fused calls; a build whose internal operators differ (a kit copy in another
    BasicSR environment) gets the plain operations, with the same values."""
    if ops._ONEDNN_LINEAR is not None and torch.__version__.startswith('2.14.'):
        assert ops._FUSED_EPILOGUES

    class Broken:  # an operator whose signature changed
        def __call__(self, *args):
            raise RuntimeError('unknown overload')
        binary = __call__

    with monkeypatch.context() as patch:
        patch.setattr(ops, '_ONEDNN_CONV', Broken())
        assert not ops._fused_epilogues_work()
    torch.manual_seed(0)
    net = ASID(upscale=2, num_feat=16, num_blocks=1).eval()
    x = torch.rand(1, 3, 16, 24)
    with torch.no_grad():
        fused = net(x)
        monkeypatch.setattr(ops, '_FUSED_EPILOGUES', False)
        plain = net(x)
    assert (fused - plain).abs().max().item() < 1e-5


def test_linear_takes_the_portable_path_where_it_must():
    w = torch.randn(4, 3)
    assert ops._onednn_dtype(torch.randn(2, 3, dtype=torch.float64), w.double()) is None
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert ops._onednn_dtype(torch.randn(2, 3), w) is None
    # a network cast to bfloat16 keeps it on oneDNN where oneDNN runs bfloat16; mixed dtypes take F.linear
    expected = torch.bfloat16 if torch.bfloat16 in ops._ONEDNN_DTYPES else None
    assert ops._onednn_dtype(torch.randn(2, 3, dtype=torch.bfloat16), w.bfloat16()) == expected
    assert ops._onednn_dtype(torch.randn(2, 3, dtype=torch.bfloat16), w) is None


@pytest.mark.parametrize('width', [12, 36, 48])
def test_layer_norm_gradients_match(width):
    torch.manual_seed(0)
    x = torch.randn(2, 5, 7, width, dtype=torch.float64, requires_grad=True)
    w = (1 + 0.1 * torch.randn(width, dtype=torch.float64)).requires_grad_()
    b = (0.1 * torch.randn(width, dtype=torch.float64)).requires_grad_()
    ours, ref = ops.layer_norm(x, w, b, 1e-5), F.layer_norm(x, (width, ), w, b, 1e-5)
    assert (ours - ref).abs().max().item() < 1e-12
    for g_ours, g_ref in zip(grads(ours, (x, w, b)), grads(ref, (x, w, b))):
        assert (g_ours - g_ref).abs().max().item() < 1e-10


@pytest.mark.parametrize('compute', [True, False])
def test_folded_projection_equals_literal_attention(compute):
    torch.manual_seed(0)
    layer = arch.SpatialAttention(12, window_size=4, compute=compute).double()
    for p in layer.parameters():
        p.data.normal_()
    tokens = torch.randn(3, 16, 12, dtype=torch.float64, requires_grad=True)
    shared = torch.softmax(torch.randn(3, 1, 16, 16, dtype=torch.float64), -1)
    params = [tokens] + list(layer.parameters())
    assert layer.fold_proj
    folded, attn_folded = layer(tokens, None if compute else shared)
    layer.fold_proj = False
    literal, attn_literal = layer(tokens, None if compute else shared)
    assert (folded - literal).abs().max().item() < 1e-12
    assert (attn_folded - attn_literal).abs().max().item() < 1e-12
    for g_f, g_l in zip(grads(folded, params), grads(literal, params)):
        assert (g_f - g_l).abs().max().item() < 1e-10


@pytest.mark.skipif(platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc', reason='glibc only')
def test_keep_freed_memory_applies_on_glibc():
    assert keep_freed_memory()


@pytest.mark.parametrize('partition', ['meso', 'global'])
def test_reverse_add_equals_reverse_then_add(partition):
    torch.manual_seed(0)
    b, h, w, c, p = 2, 16, 24, 5, 8
    x, tokens = torch.randn(b, h, w, c), torch.randn(b * (h // p) * (w // p), p * p, c)
    reverse = {'meso': arch.window_reverse, 'global': arch.grid_reverse}[partition]
    reverse_add = {'meso': arch.window_reverse_add, 'global': arch.grid_reverse_add}[partition]
    assert torch.equal(reverse_add(x, tokens, p), x + reverse(tokens, p, b, h, w))


@pytest.mark.skipif(torch.bfloat16 not in ops._ONEDNN_DTYPES, reason="this CPU's oneDNN does not run bfloat16")
def test_bfloat16_network_stays_on_the_onednn_paths_in_one_dtype(monkeypatch):
    """A network cast to bfloat16 runs oneDNN's kernels (fused epilogues included) with bfloat16 activations end
    to end, and agrees with the plain PyTorch operations in bfloat16 to bfloat16 rounding."""
    torch.manual_seed(0)
    net = ASID(upscale=2, num_feat=16, num_blocks=1).eval().to(torch.bfloat16)
    x = torch.rand(1, 3, 16, 24, dtype=torch.bfloat16)
    dtypes = set()

    def record(module, inputs, output):
        dtypes.update(t.dtype for t in (output if isinstance(output, tuple) else (output, )) if torch.is_tensor(t))
    hooks = [m.register_forward_hook(record) for m in net.modules()]
    calls = {'linear': 0}
    real_linear = ops._ONEDNN_LINEAR

    class Counted:
        def __call__(self, *args):
            calls['linear'] += 1
            return real_linear(*args)

        def binary(self, *args):
            calls['linear'] += 1
            return real_linear.binary(*args)

    with torch.no_grad():
        monkeypatch.setattr(ops, '_ONEDNN_LINEAR', Counted())
        fast = net(x)
        monkeypatch.setattr(ops, '_ONEDNN_DTYPES', (torch.float32, ))
        plain = net(x)
    for hook in hooks:
        hook.remove()
    assert calls['linear'] > 0 and dtypes == {torch.bfloat16} and fast.dtype == torch.bfloat16
    assert (fast.float() - plain.float()).abs().max().item() < 0.05


@pytest.mark.skipif(torch.bfloat16 not in ops._ONEDNN_DTYPES, reason="this CPU's oneDNN does not run bfloat16")
@pytest.mark.parametrize('width, offset', [(12, 4.0), (24, 4.0), (12, 50.0), (36, 4.0), (36, 50.0), (48, 4.0)])
def test_narrow_bfloat16_layer_norm_matches_layer_norm(monkeypatch, width, offset):
    """The SAMs' rows (12, 24, 36 values) take the whole-tensor passes at bfloat16 inference (within a few
    bfloat16 roundings of float32's LayerNorm of the same input, also for a mean far from zero); wider rows,
    gradients and float32 take ``F.layer_norm``."""
    torch.manual_seed(0)
    x = (torch.randn(2, 8, 9, width) + offset).bfloat16()
    w, b = (1 + 0.3 * torch.randn(width)).bfloat16(), (0.5 * torch.randn(width)).bfloat16()
    calls = []
    real = ops._narrow_layer_norm
    monkeypatch.setattr(ops, '_narrow_layer_norm', lambda *args: calls.append(1) or real(*args))
    with torch.no_grad():
        ours = ops.layer_norm(x, w, b, 1e-5)
    ref = F.layer_norm(x.float(), (width, ), w.float(), b.float(), 1e-5)
    assert len(calls) == (width <= ops.NARROW_LN_MAX_WIDTH)
    assert ours.dtype == torch.bfloat16
    assert ((ours.float() - ref).abs() <= 2**-6 * (ref.abs() + 1)).all()
    ops.layer_norm(x.float(), w.float(), b.float(), 1e-5)  # float32
    ops.layer_norm(x, w.requires_grad_(), b, 1e-5)  # a gradient is needed
    assert len(calls) == (width <= ops.NARROW_LN_MAX_WIDTH)


@pytest.mark.parametrize('partition', ['meso', 'grid'])
@pytest.mark.parametrize('heads, mode', [(1, 'temperature'), (2, 'temperature'), (1, 'sdpa')])
def test_channel_attention_on_the_cpu_equals_the_traced_graph(monkeypatch, partition, heads, mode):
    """On the CPU q, k and v are computed on their own from slices of the weights; the interleaved q|k|v graph
    (traced, exported, autocast, CUDA) gives the same values and gradients."""
    torch.manual_seed(0)
    layer = arch.ChannelAttention(8, partition, window_size=4, num_heads=heads, mode=mode).double()
    for p in layer.parameters():
        p.data.normal_()
    x = torch.randn(2, 8, 8, 12, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    # the sdpa mode computes A v without gradient: only its projection learns
    params = [x, *layer.parameters()] if mode == 'temperature' else [layer.proj.weight]
    planar = layer(x)
    monkeypatch.setattr(arch, 'eager_cpu', lambda *args, **kwargs: False)
    interleaved = layer(x)
    assert (planar - interleaved).abs().max().item() < 1e-12
    for g_p, g_i in zip(grads(planar, params, 2), grads(interleaved, params, 2)):
        assert (g_p - g_i).abs().max().item() < 1e-10


@pytest.mark.parametrize('width', [12, 24, 36, 48])
def test_layer_norm_under_bfloat16_autocast_takes_float32_where_it_pays(monkeypatch, width):
    """Under CPU autocast the widths that are not a multiple of 16 take the float32 LayerNorm, with or without a
    gradient; 48 keeps ATen's mixed-dtype kernel; bfloat16 parameters (a network cast to bfloat16) never take it."""
    calls = []
    real = ops._LayerNormFunction.apply
    monkeypatch.setattr(ops._LayerNormFunction, 'apply', lambda *args: calls.append(1) or real(*args))
    x, w, b = torch.randn(2, 3, width).bfloat16(), torch.ones(width), torch.zeros(width)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert ops.layer_norm(x, w, b, 1e-5).dtype == torch.bfloat16
    assert len(calls) == (width % ops.LN_FAST_WEIGHT_GRAD_MULTIPLE != 0)
    with torch.inference_mode():
        ops.layer_norm(x, w.bfloat16(), b.bfloat16(), 1e-5)
    assert len(calls) == (width % ops.LN_FAST_WEIGHT_GRAD_MULTIPLE != 0)


@pytest.mark.parametrize('width', [12, 24, 36])
def test_layer_norm_gradients_under_bfloat16_autocast(width):
    """Under CPU autocast (bfloat16 activations, float32 parameters) the LayerNorm computes in float32: its
    output and input gradient are float32 LayerNorm's rounded to bfloat16 bit for bit (within one bfloat16
    rounding of autocast's own F.layer_norm), and its weight and bias gradients are float32 within float32
    rounding of float64's (ATen's own are rounded through bfloat16 there); a channel slice is taken as is."""
    torch.manual_seed(0)
    x = torch.randn(2, 5, 7, width + 4).bfloat16()[..., 4:].requires_grad_()  # not contiguous
    w = (1 + 0.1 * torch.randn(width)).requires_grad_()
    b = (0.1 * torch.randn(width)).requires_grad_()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        ours, ref = ops.layer_norm(x, w, b, 1e-5), F.layer_norm(x, (width, ), w, b, 1e-5)
    wide = x.detach().float().requires_grad_()
    exact = F.layer_norm(wide, (width, ), w, b, 1e-5)
    assert ours.dtype == ref.dtype == torch.bfloat16 and torch.equal(ours, exact.bfloat16())
    assert (ours.float() - ref.float()).abs().max().item() <= 2**-7 * ref.float().abs().max().item()
    g = torch.randn_like(ours)
    g_x, g_w, g_b = torch.autograd.grad(ours, (x, w, b), g)
    assert g_x.dtype == torch.bfloat16 and torch.equal(g_x, torch.autograd.grad(exact, wide, g.float())[0].bfloat16())
    exact = [t.detach().double().requires_grad_() for t in (x, w, b)]
    _, e_w, e_b = torch.autograd.grad(F.layer_norm(exact[0], (width, ), exact[1], exact[2], 1e-5), exact, g.double())
    assert g_w.dtype == g_b.dtype == torch.float32
    assert (g_w.double() - e_w).abs().max().item() <= 1e-5 * e_w.abs().max().item()
    assert (g_b.double() - e_b).abs().max().item() <= 1e-5 * e_b.abs().max().item()


@pytest.mark.skipif(torch.bfloat16 not in ops._ONEDNN_DTYPES, reason="this CPU's oneDNN does not run bfloat16")
@pytest.mark.parametrize('channels_last', [True, False])
def test_bfloat16_spatial_mean_by_a_matrix_product(monkeypatch, channels_last):
    """The squeeze-excitation's spatial mean: in bfloat16 a product with ones, within two bfloat16 roundings of the
    float64 mean (values and gradient, also under autocast); float32 and float64 take ``x.mean`` exactly."""
    products = []
    real = torch.matmul
    monkeypatch.setattr(torch, 'matmul', lambda a, b: products.append(a.dtype) or real(a, b))
    torch.manual_seed(0)
    x = (torch.randn(2, 12, 17, 23, dtype=torch.float64) + 3).requires_grad_()
    layout = torch.channels_last if channels_last else torch.contiguous_format
    half = x.detach().bfloat16().contiguous(memory_format=layout).requires_grad_()
    exact = half.detach().double().mean(dim=(2, 3))
    for context in (torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16)):
        with context:
            ours = ops.spatial_mean(half)
        assert ours.dtype == torch.bfloat16 and ours.shape == (2, 12)
        assert (ours.double() - exact).abs().max().item() <= 2 * 2**-8 * exact.abs().max().item()
    g = torch.randn(2, 12).bfloat16()
    (g_half, ) = torch.autograd.grad(ours, half, g)
    expected = (g.double() / (17 * 23))[:, :, None, None].expand(-1, -1, 17, 23)
    assert (g_half.double() - expected).abs().max().item() <= 2**-8 * expected.abs().max().item()
    assert products == [torch.bfloat16, torch.bfloat16]  # no gradient, then autocast
    for dtype in (torch.float32, torch.float64):
        wide = x.detach().to(dtype).contiguous(memory_format=layout)
        assert torch.equal(ops.spatial_mean(wide), wide.mean(dim=(2, 3)))
    assert len(products) == 2
