"""ONNX export (onnxruntime parity), torch.compile and TorchScript tracing."""
from __future__ import annotations

import re
import warnings

import cv2
import numpy as np
import pytest
import torch

from asid_arch import ASID
from asid_arch.cli.export import main as asid_export

from helpers import synthetic_image


def tiny(scale: int, blocks: int = 2) -> ASID:
    torch.manual_seed(scale)
    return ASID(upscale=scale, num_feat=16, num_blocks=blocks).eval()


ONNX_TOL = 1e-6  # onnxruntime against PyTorch, float32, the released configuration (docs/interoperability.md)
TINY_TOL = 1e-5  # onnxruntime and OpenCV DNN against PyTorch, float32, the tiny test network
HALF_TOL = 2e-2  # the float16 graph in onnxruntime against PyTorch float32 (asid-export's default with --half)
# odd sizes, a 1x1 image (edge-padded to 16 px in the graph), a batch of two, and 16x40, whose ESA map is
# 1 px high before its bilinear upsampling (OpenCV 5.0's Resize is wrong there: widen_single_pixel_sides)
PARITY_SHAPES = ((2, 3, 19, 27), (1, 3, 1, 1), (1, 3, 16, 40), (1, 3, 37, 45))


def needs_onnx():
    for name in ('onnx', 'onnxruntime', 'onnxscript', 'onnxslim'):
        pytest.importorskip(name, reason="the optional extra asid_arch[onnx] is not installed")


@pytest.fixture(scope='module')
def tiny_export():
    """A tiny x2 network, its exported graph and the simplified graph (exported once for the module)."""
    needs_onnx()
    from asid_arch.integrations.onnx import exported_proto, simplified

    net = tiny(2, blocks=1)
    raw = exported_proto(net)
    return net, raw, simplified(raw)


def parity_inputs():
    rng = np.random.default_rng(3)
    return {f'{b}x{h}x{w}': rng.random((b, c, h, w), np.float32) for b, c, h, w in PARITY_SHAPES}


def expected_outputs(net, inputs):
    with torch.no_grad():
        return {name: net(torch.from_numpy(x)).numpy() for name, x in inputs.items()}


@pytest.mark.slow
def test_onnx_graph_has_dynamic_batch_and_scaled_output_dims(tiny_export):
    """Shape inference resolves the output to (batch, 3, 2*height, 2*width); onnxslim removes nodes and keeps
    the dims; the simplified graph passes onnx's full check."""
    import onnx

    from asid_arch.integrations.onnx import output_dims

    net, raw, slim = tiny_export
    assert output_dims(raw) == output_dims(slim) == ['batch', 3, '2*height', '2*width']
    assert [d.dim_param or d.dim_value for d in slim.graph.input[0].type.tensor_type.shape.dim] == [
        'batch', 3, 'height', 'width']
    assert len(slim.graph.node) < len(raw.graph.node)
    onnx.checker.check_model(slim, full_check=True)


@pytest.mark.slow
def test_onnxruntime_parity_batches_and_small_sizes(tiny_export):
    """Raw and simplified graphs match PyTorch at odd sizes, 1x1 and batch 2, and a batch of two tiles gives
    what each tile gives alone."""
    import onnxruntime

    net, raw, slim = tiny_export
    inputs = parity_inputs()
    expected = expected_outputs(net, inputs)
    for proto in (raw, slim):
        session = onnxruntime.InferenceSession(proto.SerializeToString(), providers=['CPUExecutionProvider'])
        for name, x in inputs.items():
            got = session.run(None, {'lr': x})[0]
            assert got.shape == expected[name].shape and np.abs(got - expected[name]).max() < TINY_TOL, name
    batch = inputs['2x19x27']
    together = session.run(None, {'lr': batch})[0]
    alone = np.concatenate([session.run(None, {'lr': batch[i:i + 1]})[0] for i in range(2)])
    assert np.abs(together - alone).max() < TINY_TOL


@pytest.mark.slow
def test_opencv_dnn_runs_the_graph_in_a_child_process(tiny_export, tmp_path):
    """OpenCV's DNN module loads the simplified graph and matches PyTorch (odd sizes, 1x1, batch 2); it runs in
    a child process, so that a crash is this test's failure."""
    import onnx

    from asid_arch.integrations.opencv import opencv_version, run_opencv_isolated

    if opencv_version() is None:
        pytest.skip('cv2.dnn is not installed')
    net, _, slim = tiny_export
    onnx.save(slim, str(tmp_path / 'tiny.onnx'))
    inputs = parity_inputs()
    expected = expected_outputs(net, inputs)
    for name, got in run_opencv_isolated(tmp_path / 'tiny.onnx', inputs).items():
        assert got.shape == expected[name].shape and np.abs(got - expected[name]).max() < TINY_TOL, name


def torch_gelu_graph(path):
    """MatMul then GELU in the order PyTorch's exporter decomposes it, x * (0.5 * (1 + erf(x / sqrt 2)))."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    consts = [numpy_helper.from_array(np.array(v, np.float32), name)
              for name, v in (('root2', np.sqrt(2)), ('one', 1.0), ('half', 0.5))]
    consts.append(numpy_helper.from_array(np.eye(5, dtype=np.float32), 'w'))
    nodes = [helper.make_node('MatMul', ['x', 'w'], ['lin']), helper.make_node('Div', ['lin', 'root2'], ['d']),
             helper.make_node('Erf', ['d'], ['e']), helper.make_node('Add', ['e', 'one'], ['a']),
             helper.make_node('Mul', ['half', 'a'], ['m']), helper.make_node('Mul', ['lin', 'm'], ['y'])]
    shape = [1, 4, 6, 5]
    graph = helper.make_graph(nodes, 'gelu', [helper.make_tensor_value_info('x', TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info('y', TensorProto.FLOAT, shape)], consts)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid('', 18)], ir_version=10), str(path))


@pytest.mark.slow
def test_opencv_crash_is_a_reported_failure(tmp_path):
    """opencv-python 5.0 dies with SIGSEGV on PyTorch's GELU decomposition (the reason for exact_gelu's export
    order): the child's death comes back as OpenCVCrash naming the signal, and this process goes on."""
    needs_onnx()
    import cv2

    from asid_arch.integrations.opencv import OpenCVCrash, opencv_version, run_opencv_isolated

    if opencv_version() is None or not cv2.__version__.startswith('5.0.'):
        pytest.skip(f'the crash is known for opencv-python 5.0, not {cv2.__version__}')
    torch_gelu_graph(tmp_path / 'gelu.onnx')
    with pytest.raises(OpenCVCrash, match='SIGSEGV'):
        run_opencv_isolated(tmp_path / 'gelu.onnx', {'x': np.ones((1, 4, 6, 5), np.float32)})


def test_exact_gelu_export_order_gives_the_same_bits():
    """The order exact_gelu exports, (x * (1 + erf(x / sqrt 2))) * 0.5, equals PyTorch's decomposition
    x * (0.5 * (1 + erf(x / sqrt 2))) bit for bit (halving is exact), on the CPU in float32 and float16."""
    from asid_arch.archs.asid_ops import SQRT_2

    for dtype in (torch.float32, torch.float16):
        x = (torch.randn(4096) * 4).to(dtype)
        a = 1 + torch.erf(x / SQRT_2)
        assert torch.equal(x * a * 0.5, x * (0.5 * a))


def test_widened_single_pixel_sides_resize_alike():
    """ESA's export-time widening of 1-px sides leaves its bilinear upsampling's output unchanged (float32
    rounding), for 1-px rows, columns and both, and changes nothing for wider maps."""
    import torch.nn.functional as F

    from asid_arch.archs.asid_arch import widen_single_pixel_sides

    for h, w in ((1, 5), (5, 1), (1, 1), (2, 3)):
        m = torch.randn(2, 4, h, w)
        wide = widen_single_pixel_sides(m)
        assert wide.shape[-2:] == (max(h, 2), max(w, 2)) and torch.equal(wide[..., :h, :w], m)
        plain = F.interpolate(m, size=(16, 40), mode='bilinear', align_corners=False)
        widened = F.interpolate(wide, size=(16, 40), mode='bilinear', align_corners=False)
        assert (plain - widened).abs().max() < 1e-6


@pytest.mark.slow
def test_half_graph_parity_against_float32(tmp_path):
    """--half's graph: float32 input and output, float16 inside, dims as the float32 graph, onnxruntime's CPU
    provider within HALF_TOL of PyTorch float32 at odd sizes, 1x1 and batch 2."""
    needs_onnx()
    import onnx
    import onnxruntime

    from asid_arch.integrations.onnx import onnx_model, output_dims

    net = tiny(2, blocks=1)
    model = onnx_model(net, half=True)
    proto = onnx.load_from_string(model)
    assert output_dims(proto) == ['batch', 3, '2*height', '2*width']
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in proto.graph.initializer)
    session = onnxruntime.InferenceSession(model, providers=['CPUExecutionProvider'])
    inputs = parity_inputs()
    for name, want in expected_outputs(net, inputs).items():
        got = session.run(None, {'lr': inputs[name]})[0]
        assert got.dtype == np.float32 and got.shape == want.shape and np.abs(got - want).max() < HALF_TOL, name


@pytest.mark.slow
def test_onnx_export_parity_of_the_released_configuration(tmp_path, capsys):
    """ASID x4 as released (48 channels, 3 IDBs), exported by asid-export and checked by onnxruntime and
    OpenCV DNN at the documented error, on random inputs (batch 2, 1x1) and a photo, then copied alone and
    run at other sizes and a batch (dynamic batch, height and width)."""
    needs_onnx()
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
    for runtime in ('onnxruntime', 'OpenCV DNN'):
        diffs = [float(v) for v in re.findall(runtime + r' vs PyTorch.*max abs diff ([\d.e+-]+)', out)]
        assert len(diffs) == 2 and max(diffs) < ONNX_TOL, out
    assert re.search(r'\d+ nodes, inputs and outputs float32', out), out

    assert sorted(p.name for p in tmp_path.glob('m.onnx*')) == ['m.onnx']  # one self-contained file
    moved = tmp_path / 'elsewhere'
    moved.mkdir()
    (tmp_path / 'm.onnx').rename(moved / 'm.onnx')  # copied alone, it still runs
    session = onnxruntime.InferenceSession(str(moved / 'm.onnx'), providers=['CPUExecutionProvider'])
    for shape in ((1, 3, 9, 9), (3, 3, 16, 57), (1, 3, 64, 40)):
        x = torch.rand(*shape)
        with torch.no_grad():
            expected = net(x).numpy()
        got = session.run(None, {'lr': x.numpy()})[0]
        assert got.shape == (shape[0], 3, shape[2] * 4, shape[3] * 4) and np.abs(got - expected).max() < ONNX_TOL


def test_half_flag_reaches_the_exporter_and_its_tolerance(tmp_path, monkeypatch, capsys):
    """--half exports with half=True, says so, and accepts differences up to its own default tolerance."""
    from asid_arch.cli import export

    calls = {}

    def fake_model(net, opset=18, half=False, simplify=True):
        calls['half'] = half
        return b'model bytes'

    monkeypatch.setattr(export, 'onnx_model', fake_model)
    monkeypatch.setattr(export, 'node_count', lambda model: 7)
    monkeypatch.setattr(export, 'check_onnx', lambda net, model, inputs: {name: 1e-3 for name in inputs})
    monkeypatch.setattr('asid_arch.integrations.opencv.opencv_version', lambda: None)
    torch.save({'params': tiny(2, blocks=1).state_dict()}, tmp_path / 'm.pth')
    assert asid_export(['-m', str(tmp_path / 'm.pth'), '-o', str(tmp_path / 'h.onnx'), '--half']) == 0
    out = capsys.readouterr().out
    assert calls['half'] is True and 'float16 inside' in out and (tmp_path / 'h.onnx').read_bytes() == b'model bytes'
    assert asid_export(['-m', str(tmp_path / 'm.pth'), '-o', str(tmp_path / 'f.onnx')]) == 1  # 1e-3 > 1e-4
    assert calls['half'] is False and not (tmp_path / 'f.onnx').exists()


WITHOUT_AN_EXTRA = [('onnx', 'onnxruntime', 'm.onnx'), ('ncnn', 'pnnx', 'm.param')]


@pytest.mark.parametrize('output_format, package, output', WITHOUT_AN_EXTRA)
def test_export_without_the_extra_is_a_clear_error(tmp_path, monkeypatch, capsys, output_format, package, output):
    import builtins

    real_import = builtins.__import__

    def without_package(name, *args, **kwargs):
        if name == package:
            raise ImportError(f'no {package}', name=package)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, '__import__', without_package)
    argv = ['-m', str(tmp_path / 'm.pth'), '-o', str(tmp_path / output), '--format', output_format]
    assert asid_export(argv) == 2
    err = capsys.readouterr().err
    assert f'{package} is not installed' in err and f"pip install -e '.[{output_format}]'" in err, err


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
