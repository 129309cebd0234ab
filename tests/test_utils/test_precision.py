"""The one precision rule (``utils/asid_precision.py``): ``auto`` chosen for the machine (native bf16, emulated,
forced), and every precision's output held against float32 on photos."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from asid_arch import ASID
from asid_arch.inference import Upscaler
from asid_arch.utils import asid_precision as precision

from helpers import shared_path

CPU, CUDA = torch.device('cpu'), torch.device('cuda')
MIN_PSNR_DB = 50.0  # 8-bit PSNR of a precision's output against float32's
PHOTOS = ('astronaut', 'coffee', 'chelsea')  # scikit-image's bundled photos
CROP = (48, 64)  # LR rows, columns of each photo (small: bf16 is emulated, ~15x slower, on CPUs without it)
GOLDEN_X4 = 'asid_x4_tiled.pt'  # weights whose outputs span [0, 1] (a fresh network's stay near 0)


@pytest.fixture
def native(monkeypatch):
    """Set what the CPU is said to compute natively: ``native(True)`` or ``native(False)``."""
    def set_native(value: bool) -> None:
        monkeypatch.setattr(precision, 'cpu_has_bf16', lambda: value)
    return set_native


def test_auto_is_bf16_for_8_bit_images_on_cpus_with_native_bf16(native):
    native(True)
    assert precision.resolve_precision('auto', CPU) == 'bf16'
    assert precision.resolve_precision('auto', CPU, sample_bits=16) == 'fp32'  # bf16 holds 8 significant bits
    assert precision.resolve_precision('auto', CUDA) == 'fp32'
    assert precision.describe_precision('auto', CPU) == 'auto: bf16, fp32 for images deeper than 8 bits'


def test_auto_is_fp32_where_bf16_would_be_emulated(native):
    native(False)
    assert precision.resolve_precision('auto', CPU) == 'fp32'
    assert precision.resolve_precision('auto', CPU, sample_bits=16) == 'fp32'
    assert precision.describe_precision('auto', CPU) == 'auto: fp32'


@pytest.mark.parametrize('has_bf16', [True, False])
@pytest.mark.parametrize('forced', ['fp32', 'bf16', 'fp16'])
def test_a_named_precision_is_kept(native, has_bf16, forced):
    native(has_bf16)
    for device in (CPU, CUDA):
        for bits in (8, 16):
            assert precision.resolve_precision(forced, device, bits) == forced
    assert precision.describe_precision(forced, CPU) == forced


@pytest.mark.parametrize('capabilities, onednn, expected', [
    ({'avx512_bf16': True, 'avx2': True}, True, True),  # AMD Zen 4/5, Intel Cooper Lake and later
    ({'amx_bf16': True, 'amx_tile': True}, True, True),  # Intel Sapphire Rapids and later
    ({'bf16': True, 'neon': True}, True, True),  # Arm v8.6 BF16
    ({'avx512_bf16': False, 'avx512_f': True}, True, False),  # AVX512 without BF16: oneDNN emulates it
    ({'avx2': True}, False, False),  # AVX2 only
    ({'avx512_bf16': True}, False, False),  # a torch whose oneDNN cannot run bf16
])
def test_native_bf16_is_asked_of_torch_not_of_the_cpu_name(monkeypatch, capabilities, onednn, expected):
    monkeypatch.setattr(torch.cpu, 'get_capabilities', lambda: {'cpu_name': 'AMD EPYC', **capabilities})
    monkeypatch.setattr(torch.ops.mkldnn, '_is_mkldnn_bf16_supported', lambda: onednn)
    assert precision.cpu_has_bf16() is expected


def test_the_real_machine_answer_matches_its_capabilities():
    caps = torch.cpu.get_capabilities()
    listed = any(caps.get(name) is True for name in precision.NATIVE_BF16_CAPABILITIES)
    assert precision.cpu_has_bf16() == (listed and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()))


def golden_x4() -> ASID:
    golden = torch.load(shared_path('golden', GOLDEN_X4), weights_only=True)
    net = ASID(upscale=golden['scale'], num_feat=golden['num_feat'], num_blocks=golden['num_blocks'])
    net.load_state_dict(golden['state_dict'])
    return net


def photos() -> list:
    data = pytest.importorskip('skimage.data', reason='scikit-image (its bundled photos) is not installed')
    rows, cols = CROP
    return [getattr(data, name)()[:rows, :cols].copy() for name in PHOTOS]


def upscale(net: ASID, name: str, image: np.ndarray) -> np.ndarray:
    upscaler = Upscaler(net, net.upscale, CPU, name, 0, 0, 8e9, 'golden')
    out = np.zeros((image.shape[0] * net.upscale, image.shape[1] * net.upscale, 3), np.uint8)
    upscaler.upscale(image, out, reverse_channels=False)
    return out


def psnr_8bit(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    return float('inf') if mse == 0 else 10 * np.log10(255**2 / mse)


@pytest.mark.slow
@pytest.mark.parametrize('name', ['bf16', 'auto'])
def test_every_cpu_precision_holds_against_float32_on_photos(name):
    """8-bit PSNR of the difference to float32's output >= 50 dB on three photos; the float32 network is left
    as it was (a bf16 run works on a copy)."""
    net = golden_x4().eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    for image in photos():
        reference = upscale(net, 'fp32', image)
        assert psnr_8bit(upscale(net, name, image), reference) >= MIN_PSNR_DB
    assert all(v.dtype == torch.float32 and torch.equal(v, before[k]) for k, v in net.state_dict().items())


@pytest.mark.skipif(not torch.cuda.is_available(), reason='fp16 runs on CUDA only and this machine has no GPU')
@pytest.mark.parametrize('name', ['fp16', 'bf16'])
def test_gpu_precisions_hold_against_float32_on_photos(name):
    net = golden_x4().eval()
    for image in photos():
        reference = upscale(net, 'fp32', image)
        upscaler = Upscaler(net, net.upscale, CUDA, name, 0, 0, 8e9, 'golden')
        out = np.zeros_like(reference)
        upscaler.upscale(image, out, reverse_channels=False)
        assert psnr_8bit(out, reference) >= MIN_PSNR_DB


def test_auto_runs_a_bf16_copy_for_8_bit_and_float32_for_16_bit_images(native):
    native(True)
    torch.manual_seed(0)
    net = ASID(upscale=2, num_feat=16, num_blocks=1)
    upscaler = Upscaler(net, 2, CPU, 'auto', 0, 0, 8e9, 'tiny')
    low, dtype, cast = upscaler._network(8)
    assert (dtype, cast) == (torch.bfloat16, True) and low is not net
    assert next(low.parameters()).dtype == torch.bfloat16 and next(net.parameters()).dtype == torch.float32
    deep, dtype, cast = upscaler._network(16)
    assert (deep, dtype, cast) == (upscaler.net, torch.float32, False)
    assert upscaler.plan_precision == 'fp32'  # the memory plan holds for the deepest images
    image = (np.arange(16 * 20 * 3, dtype=np.uint16).reshape(16, 20, 3) * 97) % 65535
    out16, reference = np.zeros((32, 40, 3), np.uint16), np.zeros((32, 40, 3), np.uint16)
    upscaler.upscale(image, out16, reverse_channels=False)
    Upscaler(net, 2, CPU, 'fp32', 0, 0, 8e9, 'tiny').upscale(image, reference, reverse_channels=False)
    assert np.array_equal(out16, reference)  # 16-bit images: float32's exact result
