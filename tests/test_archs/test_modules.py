"""Each module of the network against a plain implementation of its equation, written here from the
architecture description (not from the package's code), in float64, without the reference data.

The golden files check the whole network; these tests also run where ``../shared`` is absent, and name
the module that is wrong: a changed constant (a LayerNorm's eps, ESA's pooling, the window size), a
wrong partition, a concatenation in the wrong order.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from asid_arch.archs import asid_arch as arch

P = 8  # window and grid side
TOKEN_LN_EPS, LN2D_EPS, L2_EPS = 1e-5, 1e-6, 1e-12


def randomized(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter random (temperatures and bias tables included), float64, eval mode."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return module.double().eval()


def small_variance(*shape, seed: int = 1) -> torch.Tensor:
    """An input whose per-pixel channel variance is comparable to the norms' eps (so eps matters)."""
    torch.manual_seed(seed)
    return 0.5 + torch.randn(*shape, dtype=torch.float64) * 2e-3


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and (a - b).abs().max().item() < 1e-10


def ln2d(x, weight, bias):
    mean = x.mean(1, keepdim=True)
    var = ((x - mean)**2).mean(1, keepdim=True)
    return weight[:, None, None] * (x - mean) / torch.sqrt(var + LN2D_EPS) + bias[:, None, None]


def gdfn(x, m):
    y = F.conv2d(F.conv2d(x, m.project_in.weight), m.dwconv.weight, padding=1, groups=m.dwconv.weight.shape[0])
    a, b = y.chunk(2, dim=1)
    return F.conv2d(F.gelu(a) * b, m.project_out.weight)


def conv(x, c, **kwargs):
    return F.conv2d(x, c.weight, c.bias, **kwargs)


def test_layer_norm_2d():
    m = randomized(arch.LayerNorm2d(12))
    x = small_variance(2, 12, 5, 7)
    assert close(m(x), ln2d(x, m.weight, m.bias))


def test_gdfn():
    m = randomized(arch.GDFN(12))
    x = small_variance(2, 12, 9, 10)
    assert close(m(x), gdfn(x, m))


def test_local_module():
    m = randomized(arch.LocalModule(12))
    x = small_variance(2, 12, 9, 10)
    y = F.gelu(conv(F.gelu(conv(x, m.conv_in)), m.dwconv, padding=1, groups=12))
    gate = torch.sigmoid(F.linear(F.silu(F.linear(y.mean((2, 3)), m.se.fc1.weight)), m.se.fc2.weight))
    assert close(m(x), x + conv(y * gate[:, :, None, None], m.conv_out))
    assert (m.se.fc1.weight.shape, m.se.fc2.weight.shape) == ((3, 12), (12, 3))  # reduction 4, no biases


def test_esa():
    m = randomized(arch.ESA(48, 16))
    x = small_variance(1, 48, 23, 29)
    c1 = conv(x, m.squeeze)
    mask = F.max_pool2d(conv(c1, m.down, stride=2), kernel_size=7, stride=3)
    mask = F.interpolate(conv(mask, m.refine, padding=1), size=(23, 29), mode='bilinear', align_corners=False)
    mask = torch.sigmoid(conv(mask + conv(c1, m.skip), m.expand))
    assert close(m(x), x * mask)


def tokens_of(x: torch.Tensor, partition: str) -> torch.Tensor:
    """(B, d, H, W) -> (B * groups, 64, d), tokens row-major over (i, j), written with explicit pixel indices."""
    b, d, h, w = x.shape
    groups = []
    for n in range(b):
        for gx in range(h // P):
            for gy in range(w // P):
                if partition == 'meso':  # token (i, j) of window (X, Y) is pixel (8X + i, 8Y + j)
                    pixels = [(P * gx + i, P * gy + j) for i in range(P) for j in range(P)]
                else:  # token (i, j) of group (X, Y) is pixel (i * H/8 + X, j * W/8 + Y)
                    pixels = [(i * (h // P) + gx, j * (w // P) + gy) for i in range(P) for j in range(P)]
                groups.append(torch.stack([x[n, :, r, c] for r, c in pixels]))
    return torch.stack(groups), pixels


def scatter_tokens(tokens: torch.Tensor, shape, partition: str) -> torch.Tensor:
    b, d, h, w = shape
    out = torch.zeros(shape, dtype=tokens.dtype)
    g = 0
    for n in range(b):
        for gx in range(h // P):
            for gy in range(w // P):
                for t, (i, j) in enumerate((i, j) for i in range(P) for j in range(P)):
                    r, c = (P * gx + i, P * gy + j) if partition == 'meso' else (i * (h // P) + gx, j * (w // P) + gy)
                    out[n, :, r, c] = tokens[g, t]
                g += 1
    return out


@pytest.mark.parametrize('partition', ['meso', 'global'])
def test_spatial_attention_block(partition):
    """SAM: tokens + softmax(q k^T / sqrt(d) + B) v W_o, then x + GDFN(LN2d(x)); B from the 15 x 15 table."""
    d = 12
    m = randomized(arch.SAMBlock(d, partition))
    x = small_variance(1, d, 16, 24).contiguous(memory_format=torch.channels_last)
    out, attn = m(x)

    tokens, _ = tokens_of(x, partition)
    t = F.layer_norm(tokens, (d, ), m.norm_attn.weight, m.norm_attn.bias, TOKEN_LN_EPS)
    q, k, v = F.linear(t, m.attn.qkv.weight).chunk(3, dim=-1)
    coords = [(i, j) for i in range(P) for j in range(P)]
    bias = torch.tensor([[(im - i_n + 7) * 15 + (jm - jn + 7) for i_n, jn in coords] for im, jm in coords])
    table = m.attn.rel_pos_bias_table[:, 0]
    expected_attn = torch.softmax(q @ k.transpose(1, 2) * d**-0.5 + table[bias], dim=-1)
    y = x + scatter_tokens(F.linear(expected_attn @ v, m.attn.proj.weight), x.shape, partition)
    assert close(attn[:, 0], expected_attn)
    assert close(out, y + gdfn(ln2d(y, m.norm_ffn.weight, m.norm_ffn.bias), m.ffn))
    assert m.attn.rel_pos_bias_table.shape == (225, 1)


def test_sharing_layer_reuses_the_attention():
    d = 12
    m = randomized(arch.SAMBlock(d, 'meso', compute=False))
    x = small_variance(1, d, 16, 16).contiguous(memory_format=torch.channels_last)
    torch.manual_seed(5)
    shared = torch.softmax(torch.randn(4, 1, 64, 64, dtype=torch.float64), dim=-1)
    out, attn = m(x, shared)
    tokens, _ = tokens_of(x, 'meso')
    t = F.layer_norm(tokens, (d, ), m.norm_attn.weight, m.norm_attn.bias, TOKEN_LN_EPS)
    y = x + scatter_tokens(F.linear(shared[:, 0] @ F.linear(t, m.attn.v.weight), m.attn.proj.weight), x.shape, 'meso')
    assert attn is shared
    assert close(out, y + gdfn(ln2d(y, m.norm_ffn.weight, m.norm_ffn.bias), m.ffn))


def channel_groups(x: torch.Tensor, partition: str):
    """Pixel index lists of each group: meso = 8x8 windows, grid = the 64 within-window offsets."""
    _, _, h, w = x.shape
    if partition == 'meso':
        return [[(P * gx + i, P * gy + j) for i in range(P) for j in range(P)]
                for gx in range(h // P) for gy in range(w // P)]
    return [[(P * gx + p, P * gy + q) for gx in range(h // P) for gy in range(w // P)]
            for p in range(P) for q in range(P)]


@pytest.mark.parametrize('partition', ['meso', 'grid'])
@pytest.mark.parametrize('mode', ['temperature', 'sdpa'])
@pytest.mark.parametrize('qk_scale', [1.0, 1e-10])
def test_channel_attention_block(partition, mode, qk_scale):
    """CA: A = softmax(q^ k^T tau) over channels per group (q, k L2-normalised over the T tokens; with
    ``qk_scale`` 1e-10 their norms are far below 1 but far above the normalisation's eps)."""
    c = 12
    m = randomized(arch.ChannelAttentionBlock(c, partition, mode=mode))
    with torch.no_grad():
        m.attn.qkv_dwconv.weight[:2 * c] *= qk_scale
    x = small_variance(1, c, 16, 24).contiguous(memory_format=torch.channels_last)
    n = ln2d(x, m.norm_attn.weight, m.norm_attn.bias)
    qkv = F.conv2d(F.conv2d(n, m.attn.qkv.weight), m.attn.qkv_dwconv.weight, padding=1, groups=3 * c)
    q_all, k_all, v_all = qkv.chunk(3, dim=1)
    av = torch.zeros_like(x)
    for pixels in channel_groups(x, partition):
        rows, cols = torch.tensor([p[0] for p in pixels]), torch.tensor([p[1] for p in pixels])
        q, k, v = (t[0][:, rows, cols] for t in (q_all, k_all, v_all))  # (C, T)
        q = q / q.norm(dim=1, keepdim=True).clamp_min(L2_EPS)
        k = k / k.norm(dim=1, keepdim=True).clamp_min(L2_EPS)
        tau = m.attn.temperature.reshape(()) if mode == 'temperature' else len(pixels)**-0.5
        av[0][:, rows, cols] = torch.softmax(q @ k.T * tau, dim=-1) @ v
    y = x + F.conv2d(av, m.attn.proj.weight)
    assert close(m(x), y + gdfn(ln2d(y, m.norm_ffn.weight, m.norm_ffn.bias), m.ffn))


def test_information_distillation_block_wiring():
    """Three units (LM, split, SAMs, fuse), the distilled pieces concatenated as (r1, r2, z, loc), CAM, the
    output convolution with the block's input added, then ESA."""
    c = 4
    block = randomized(arch.IDB(4 * c, attn_sources=[None] * 6, esa_channels=16))
    x = small_variance(1, 4 * c, 16, 16).contiguous(memory_format=torch.channels_last)
    out = block(x, [])

    def sams(y, unit):
        y, _ = getattr(block, f'sam_meso{unit}')(y.contiguous(memory_format=torch.channels_last))
        y, _ = getattr(block, f'sam_global{unit}')(y)
        return y

    y = block.lm1(x)
    y = conv(torch.cat([sams(y[:, c:], 1), y[:, :c]], 1), block.fuse1)
    r1, y = y[:, :c], block.lm2(y[:, c:].contiguous(memory_format=torch.channels_last))
    y = conv(torch.cat([sams(y[:, c:], 2), y[:, :c]], 1), block.fuse2)
    r2, y = y[:, :c], block.lm3(y[:, c:].contiguous(memory_format=torch.channels_last))
    body = conv(torch.cat([r1, r2, sams(y[:, c:], 3), y[:, :c]], 1), block.fuse3)
    expected = block.esa(conv(block.cam(body), block.conv_out) + x)
    assert close(out, expected)
    assert [block.lm1.conv_in.weight.shape[0], block.lm2.conv_in.weight.shape[0],
            block.lm3.conv_in.weight.shape[0]] == [4 * c, 3 * c, 2 * c]


def test_network_wiring():
    """Zero padding to a multiple of 8, F0 = Conv(x), F = Conv(IDBs(F0)) + F0, PixelShuffle(Conv(F)), cropped."""
    net = randomized(arch.ASID(upscale=3, num_feat=16, num_blocks=2))
    torch.manual_seed(3)
    x = torch.rand(1, 3, 19, 22, dtype=torch.float64)
    padded = F.pad(x, (0, 2, 0, 5))  # 24 x 24
    f0 = conv(padded, net.conv_first, padding=1)
    feat, attns = f0.contiguous(memory_format=torch.channels_last), []
    for block in net.blocks:
        feat = block(feat, attns)
    feat = conv(feat, net.conv_after_body, padding=1) + f0
    expected = F.pixel_shuffle(conv(feat, net.upsampler[0], padding=1), 3)[..., :57, :66]
    assert close(net(x), expected)
    assert len(attns) == 6  # the first IDB computes a1..a6, the second re-uses them
