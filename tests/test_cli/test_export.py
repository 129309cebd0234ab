"""ONNX export (onnxruntime parity), torch.compile and TorchScript tracing."""
from __future__ import annotations

import re
import warnings

import cv2
import pytest
import torch

from asid_arch import ASID
from asid_arch.cli.export import main as asid_export

from helpers import synthetic_image


def tiny(scale: int, blocks: int = 2) -> ASID:
    torch.manual_seed(scale)
    return ASID(upscale=scale, num_feat=16, num_blocks=blocks).eval()


ONNX_TOL = 1e-6  # onnxruntime against PyTorch, float32, the released configuration (docs/interoperability.md)


@pytest.mark.slow
def test_onnx_export_parity_of_the_released_configuration(tmp_path, capsys):
    """ASID x4 as released (48 channels, 3 IDBs), exported and run by onnxruntime at the documented error, on
    a random input and a photo, then copied alone and run at other sizes (dynamic height and width)."""
    pytest.importorskip('onnxruntime', reason="the optional extra asid_arch[onnx] is not installed")
    pytest.importorskip('onnxscript', reason="the optional extra asid_arch[onnx] is not installed")
    import numpy as np
    import onnxruntime

    from asid_arch import asid

    torch.manual_seed(4)
    net = asid(4).eval()
    torch.save({'params': net.state_dict()}, tmp_path / 'm.pth')
    cv2.imwrite(str(tmp_path / 'real.png'), synthetic_image(41, 30, 5))
    code = asid_export(['-m', str(tmp_path / 'm.pth'), '-o', str(tmp_path / 'm.onnx'), '--check-image',
                        str(tmp_path / 'real.png')])
    out = capsys.readouterr().out
    assert code == 0, out
    diffs = [float(v) for v in re.findall(r'max abs diff ([\d.e+-]+)', out)]
    assert len(diffs) >= 2 and max(diffs) < ONNX_TOL, out

    assert sorted(p.name for p in tmp_path.glob('m.onnx*')) == ['m.onnx']  # one self-contained file
    moved = tmp_path / 'elsewhere'
    moved.mkdir()
    (tmp_path / 'm.onnx').rename(moved / 'm.onnx')  # copied alone, it still runs
    session = onnxruntime.InferenceSession(str(moved / 'm.onnx'), providers=['CPUExecutionProvider'])
    for size in ((9, 9), (16, 57), (64, 40)):
        x = torch.rand(1, 3, *size)
        with torch.no_grad():
            expected = net(x).numpy()
        got = session.run(None, {'lr': x.numpy()})[0]
        assert got.shape == (1, 3, size[0] * 4, size[1] * 4) and np.abs(got - expected).max() < ONNX_TOL


def test_export_without_the_extra_is_a_clear_error(tmp_path, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_onnxruntime(name, *args, **kwargs):
        if name == 'onnxruntime':
            raise ImportError('no onnxruntime', name='onnxruntime')
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, '__import__', no_onnxruntime)
    assert asid_export(['-m', str(tmp_path / 'm.pth'), '-o', str(tmp_path / 'm.onnx')]) == 2
    assert "pip install -e '.[onnx]'" in capsys.readouterr().err


@pytest.mark.slow
def test_torchscript_trace_fixed_size():
    net = tiny(2)
    x = torch.rand(1, 3, 24, 32)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        traced = torch.jit.trace(net, x)
        # the traced graph records the portable F.linear path, eager runs oneDNN: float32 rounding apart
        assert (traced(x) - net(x)).abs().max().item() < 1e-5


@pytest.mark.slow
def test_torch_compile():
    net = tiny(2)
    x = torch.rand(1, 3, 24, 32)
    compiled = torch.compile(net, dynamic=False)
    with torch.no_grad():
        assert (compiled(x) - net(x)).abs().max().item() < 1e-5
