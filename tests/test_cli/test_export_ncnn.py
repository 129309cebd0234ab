"""NCNN export: the network's NCNN form against the network in PyTorch (bit for bit where it only moves values),
pnnx's files run by the ncnn package against PyTorch, and ``asid-export --format ncnn``'s arguments, checks and
writes."""
from __future__ import annotations

import os
import re

import numpy as np
import pytest
import torch

from asid_arch import ASID
from asid_arch.archs.asid_arch import (grid_partition, grid_reverse, pad_amounts, pad_input, window_partition,
                                       window_reverse)
from asid_arch.cli.export import main as asid_export
from asid_arch.integrations import ncnn_forms
from asid_arch.integrations.ncnn_forms import ncnn_form

NCNN_TOL = 1e-3  # ncnn (CPU, default options) against PyTorch float32: asid-export's default and the bound
TINY_NCNN_TOL = 1e-4  # the tiny test network (measured 2.6e-6; ncnn may store in float16 on other CPUs)
HALF_NCNN_TOL = 2e-2  # weights stored in float16 (asid-export --half's default)
FORM_TOL = 1e-6  # the NCNN form against the network, float32 (attention products in another order of axes)
# odd sizes, 1x1 (edge-padded to 16 px in the graph), a batch of two (run one image at a time: NCNN has no batch
# axis), 16x40 (ESA's map 1 px high) and 37x45
PARITY_SHAPES = ((2, 3, 19, 27), (1, 3, 1, 1), (1, 3, 16, 40), (1, 3, 37, 45))


def tiny(scale: int = 2, **kwargs) -> ASID:
    torch.manual_seed(scale)
    return ASID(upscale=scale, **{"num_feat": 16, "num_blocks": 1, **kwargs}).eval()


def needs_ncnn():
    for name in ('pnnx', 'ncnn'):
        pytest.importorskip(name, reason='the optional extra asid_arch[ncnn] is not installed')


def slow_reshapes(param: str) -> list:
    """The ``Reshape`` layers of a .param text that ncnn's packed layouts run slowly (measured at 20 to 50 times a
    copy): those with a second input blob (sizes read from another blob) or batch axes (params 12 and 13)."""
    rows = [line.split() for line in param.splitlines()[2:]]
    return [row[1] for row in rows if row and row[0] == 'Reshape'
            and (row[2] != '1' or any(item.startswith(('12=', '13=')) for item in row[4:]))]


def parity_inputs():
    rng = np.random.default_rng(5)
    return {f'{b}x{h}x{w}': rng.random((b, c, h, w), np.float32) for b, c, h, w in PARITY_SHAPES}


@pytest.fixture(scope='module')
def tiny_files():
    """The tiny x2 network and its NCNN files (converted once for the module)."""
    needs_ncnn()
    from asid_arch.integrations.ncnn import ncnn_model

    net = tiny()
    return (net, ) + ncnn_model(net)


def test_padding_by_crops_equals_the_padding_bit_for_bit():
    """The NCNN form's padding (constant pads, crops to sizes computed with + - * //) gives pad_input's tensor
    bit for bit, for every side from 1 to 40 px, and its sizes are pad_amounts' for sides up to 1000."""
    for n in range(1, 1001):
        edge, zero = pad_amounts(n, 8)
        assert ncnn_forms.padded_side(n, 8) == (n + edge, n + edge + zero), n
    for h in range(1, 41):
        x = torch.rand(1, 3, h, 41 - h)
        assert torch.equal(ncnn_forms.pad_to_window(x, 8), pad_input(x, 8)), h


def test_batch_apart_partitions_equal_the_partitions_bit_for_bit():
    """The NCNN form's partitions (batch axis, group rows and group columns apart) and their inverses move the same
    values as the network's 6-axis ones, batch 2: groups ``(B, rows, cols, T, C)`` are the network's
    ``(B*N, T, C)``; every inverse takes its sizes from the groups alone."""
    b, h, w, c, p = 2, 24, 40, 5, 8
    t = p * p
    x = torch.rand(b, h, w, c)
    assert torch.equal(ncnn_forms.window_tokens(x, p).reshape(-1, t, c), window_partition(x, p))
    assert torch.equal(ncnn_forms.grid_tokens(x, p).reshape(-1, t, c), grid_partition(x, p))
    assert ncnn_forms.window_tokens(x, p).shape == ncnn_forms.grid_tokens(x, p).shape == (b, h // p, w // p, t, c)
    tokens = torch.rand(b, h // p, w // p, t, c)
    flat = tokens.reshape(-1, t, c)
    assert torch.equal(ncnn_forms.window_image(tokens, p), window_reverse(flat, p, b, h, w))
    assert torch.equal(ncnn_forms.grid_image(tokens, p), grid_reverse(flat, p, b, h, w))
    # the channel attention's grid groups: group (b, i, j) holds pixel (X*p + i, Y*p + j) of every window (X, Y)
    groups = x.reshape(b, h // p, p, w // p, p, c).permute(0, 2, 4, 1, 3, 5).reshape(b, t, h // p, w // p, c)
    assert torch.equal(ncnn_forms.window_groups_of_tokens(x, p), groups)
    assert torch.equal(ncnn_forms.window_groups_image(groups, p), x)


@pytest.mark.parametrize('variant', [{}, {'position_bias': False, 'channel_attention': 'sdpa'},
                                     {'attn_sharing': 'none', 'num_blocks': 2}])
def test_ncnn_form_computes_what_the_network_computes(variant):
    """The NCNN form of the network (and of neosr's variant, and of computing SAMs in every IDB) gives the
    network's output: float64 to 1e-12, float32 to rounding, at odd sizes, 1x1 and batch 2; the network itself
    keeps its own methods."""
    net = tiny(**variant)
    form = ncnn_form(net)
    assert not any('forward' in vars(module) or 'attend' in vars(module) for module in net.modules())
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, FORM_TOL)):
        a, b = net.to(dtype), form.to(dtype)
        for shape in PARITY_SHAPES:
            x = torch.rand(*shape, dtype=dtype)
            with torch.no_grad():
                want, got = a(x), b(x)
            assert got.shape == want.shape and (got - want).abs().max().item() < tol, (dtype, shape)


def test_blob_renaming_and_unconverted_layers():
    """The .param text gets the upscalers' blob names (an Input layer named after its blob); a missing blob, a
    name already taken, or a pnnx operator left in the graph is an error naming it."""
    from asid_arch.integrations.ncnn import NcnnExportError, rename_blobs, unconverted_layers

    param = ('7767517\n3 3\nInput in0 0 1 in0\nConvolution conv_0 1 1 in0 1 0=3 1=3\n'
             'pnnx.Expression expr_0 1 1 1 out0 expr=mul(@0,2)\n')
    renamed = rename_blobs(param, {'in0': 'data', 'out0': 'output'})
    assert renamed.splitlines()[2:] == ['Input data 0 1 data', 'Convolution conv_0 1 1 data 1 0=3 1=3',
                                        'pnnx.Expression expr_0 1 1 1 output expr=mul(@0,2)']
    assert unconverted_layers(renamed) == ['pnnx.Expression']
    with pytest.raises(NcnnExportError, match="no blob 'in1'"):
        rename_blobs(param, {'in1': 'data'})
    with pytest.raises(NcnnExportError, match="'1' is taken"):
        rename_blobs(param, {'in0': '1'})
    with pytest.raises(NcnnExportError, match='magic'):
        rename_blobs('7767518\n' + param.split('\n', 1)[1], {})


def test_pair_written_atomically(tmp_path, monkeypatch):
    """write_ncnn writes NAME.param and NAME.bin; without overwrite an existing one stops it with neither file
    new; a failure of the second rename leaves neither file and no temporary."""
    from asid_arch.integrations.ncnn import write_ncnn
    from asid_arch.utils import asid_files

    write_ncnn(tmp_path / 'a.param', 'text\n', b'bytes')
    assert (tmp_path / 'a.param').read_text() == 'text\n' and (tmp_path / 'a.bin').read_bytes() == b'bytes'
    (tmp_path / 'b.bin').write_bytes(b'old')
    with pytest.raises(FileExistsError):
        write_ncnn(tmp_path / 'b.param', 'text\n', b'new')
    assert sorted(os.listdir(tmp_path)) == ['a.bin', 'a.param', 'b.bin'] and (tmp_path / 'b.bin').read_bytes() == b'old'
    real_replace = os.replace

    def fail_on_bin(src, dst):
        if str(dst).endswith('.bin'):
            raise OSError(28, 'No space left on device')
        return real_replace(src, dst)

    monkeypatch.setattr(asid_files.os, 'replace', fail_on_bin)
    with pytest.raises(OSError):
        write_ncnn(tmp_path / 'c.param', 'text\n', b'new', overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ['a.bin', 'a.param', 'b.bin']


@pytest.mark.slow
def test_ncnn_runs_the_files_like_pytorch(tiny_files, tmp_path):
    """pnnx's files hold only NCNN layers, with blobs data and output, and only reshapes that take their sizes from
    their own input without batch axes; ncnn (CPU, packed layouts on and off) matches PyTorch at odd sizes, 1x1,
    16x40 and a batch of two (one image at a time), loaded from NAME.param/NAME.bin."""
    from asid_arch.integrations.ncnn import load_ncnn, run_ncnn, unconverted_layers

    net, param, weights = tiny_files
    lines = param.splitlines()
    assert lines[2].split()[:5] == ['Input', 'data', '0', '1', 'data'] and unconverted_layers(param) == []
    assert sum(line.split()[4:4 + int(line.split()[2]) + int(line.split()[3])].count('output')
               for line in lines[2:]) == 1
    assert slow_reshapes(param) == [] and sum(line.startswith('Reshape') for line in lines) > 10
    (tmp_path / 'tiny-x2.param').write_text(param)
    (tmp_path / 'tiny-x2.bin').write_bytes(weights)
    inputs = parity_inputs()
    # ncnn's default packed layouts and the plain ones
    for packing, names in ((True, tuple(inputs)), (False, tuple(inputs))):
        model = load_ncnn(tmp_path / 'tiny-x2.param', tmp_path / 'tiny-x2.bin', packing=packing)
        for name in names:
            x = inputs[name]
            with torch.no_grad():
                want = net(torch.from_numpy(x)).numpy()
            got = run_ncnn(model, x)
            assert got.shape == want.shape and np.abs(got - want).max() < TINY_NCNN_TOL, (name, packing)


@pytest.mark.slow
def test_asid_export_ncnn_writes_the_checked_pair(tmp_path, capsys, model_file):
    """asid-export --format ncnn converts, checks (printing ncnn's largest differences, the batch run image by
    image) and writes NAME.param + NAME.bin and nothing else; the same output again needs --overwrite."""
    out = tmp_path / 'models' / 'asid-x2.param'
    assert asid_export(['-m', str(model_file), '-o', str(out), '--format', 'ncnn']) == 0
    printed = capsys.readouterr().out
    diffs = [float(v) for v in re.findall(r'ncnn vs PyTorch.*max abs diff ([\d.e+-]+)', printed)]
    assert len(diffs) == 2 and max(diffs) < TINY_NCNN_TOL, printed
    assert 'one image at a time' in printed and 'input blob data' in printed, printed
    assert sorted(os.listdir(out.parent)) == ['asid-x2.bin', 'asid-x2.param']
    assert asid_export(['-m', str(model_file), '-o', str(out), '--format', 'ncnn']) == 2
    assert 'add --overwrite' in capsys.readouterr().err


def test_asid_export_ncnn_failures_write_nothing(tmp_path, capsys, monkeypatch, model_file):
    """Above --tolerance, where ncnn fails on a size, and where pnnx fails, the command fails (exit 1), says why,
    and leaves the folder as it was."""
    from asid_arch.cli import export
    from asid_arch.integrations.ncnn import NcnnExportError

    needs_ncnn()
    monkeypatch.setattr(export, 'ncnn_model', lambda net, half=False: ('7767517\n0 0\n', b''))
    monkeypatch.setattr(export, 'check_ncnn', lambda net, param, weights, inputs: {name: 1e-6 for name in inputs})
    args = ['-m', str(model_file), '-o', str(tmp_path / 'm.param'), '--format', 'ncnn']
    assert asid_export(args + ['--tolerance', '0']) == 1
    assert 'above the tolerance 0' in capsys.readouterr().err

    def fails(message):
        def fail(*_, **__):
            raise NcnnExportError(message)
        return fail

    monkeypatch.setattr(export, 'check_ncnn', fails('ncnn failed (status -100) on a 1x1 input'))
    assert asid_export(args) == 1
    err = capsys.readouterr().err
    assert 'on a 1x1 input' in err and 'not written' in err, err
    monkeypatch.setattr(export, 'ncnn_model', fails('pnnx left operations NCNN cannot run: Tensor.reshape'))
    assert asid_export(args) == 1
    assert 'Tensor.reshape' in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_ncnn_half_stores_float16_weights(tiny_files):
    """half=True (asid-export --format ncnn --half): pnnx stores float16 weights (a .bin about half as large);
    ncnn matches PyTorch float32 within --half's default tolerance at an odd size (a batch of two) and 1x1."""
    from asid_arch.integrations.ncnn import check_ncnn, ncnn_model

    net, _, weights = tiny_files
    param16, weights16 = ncnn_model(net, half=True)
    assert len(weights16) < 0.6 * len(weights)
    inputs = {name: x for name, x in parity_inputs().items() if name in ('2x19x27', '1x1x1')}  # odd, batch 2, 1x1
    diffs = check_ncnn(net, param16, weights16, inputs)
    assert max(diffs.values()) < HALF_NCNN_TOL, diffs


@pytest.mark.parametrize('args, message', [
    (['-o', 'x.onnx', '--format', 'ncnn'], 'give the NAME.param file'),
    (['-o', 'x.param', '--format', 'ncnn', '--opset', '18'], '--opset is for --format onnx'),
    (['-o', 'x.param', '--format', 'ncnn', '--tolerance', 'nan'], '--tolerance must be'),
])
def test_asid_export_ncnn_usage_errors(tmp_path, capsys, model_file, args, message):
    """Arguments that cannot work stop the command before any work (exit 2), one line naming the problem."""
    needs_ncnn()
    args = [str(tmp_path / a) if a.startswith('x.') else a for a in args]
    assert asid_export(['-m', str(model_file)] + args) == 2
    assert message in capsys.readouterr().err


def test_asid_export_ncnn_refuses_a_bin_that_is_not_a_regular_file(tmp_path, capsys, model_file):
    """The .bin beside -o is checked like -o itself: an existing one needs --overwrite, and a FIFO or a link is
    never replaced, even with --overwrite."""
    needs_ncnn()
    (tmp_path / 'a.bin').write_bytes(b'old')
    assert asid_export(['-m', str(model_file), '-o', str(tmp_path / 'a.param'), '--format', 'ncnn']) == 2
    assert 'add --overwrite' in capsys.readouterr().err
    os.mkfifo(tmp_path / 'f.bin')
    assert asid_export(['-m', str(model_file), '-o', str(tmp_path / 'f.param'), '--format', 'ncnn',
                        '--overwrite']) == 2
    assert 'FIFO' in capsys.readouterr().err
    assert (tmp_path / 'a.bin').read_bytes() == b'old' and not (tmp_path / 'a.param').exists()


@pytest.mark.slow
def test_released_configuration_through_ncnn():
    """ASID x2 as released (48 channels, 3 IDBs, random weights) converted by pnnx, with no reshape that ncnn's
    packed layouts run slowly, and run by ncnn at a size that is not a multiple of 16, within the issue's 1e-3 of
    PyTorch float32."""
    needs_ncnn()
    from asid_arch import asid
    from asid_arch.integrations.ncnn import check_ncnn, ncnn_model

    torch.manual_seed(7)
    net = asid(2).eval()
    x = np.random.default_rng(7).random((1, 3, 21, 30), np.float32)
    param, weights = ncnn_model(net)
    assert slow_reshapes(param) == []
    diffs = check_ncnn(net, param, weights, {'21x30': x})
    assert diffs['21x30'] < NCNN_TOL, diffs


def test_half_flag_reaches_the_converter_and_its_tolerance(tmp_path, monkeypatch, capsys, model_file):
    """--format ncnn --half converts with half=True, says float16 weights, and accepts differences up to --half's
    default tolerance; without --half the default tolerance is 1e-3."""
    from asid_arch.cli import export

    needs_ncnn()
    calls = []
    monkeypatch.setattr(export, 'ncnn_model', lambda net, half=False: calls.append(half) or ('7767517\n0 0\n', b''))
    monkeypatch.setattr(export, 'check_ncnn', lambda net, param, weights, inputs: {name: 5e-3 for name in inputs})
    assert asid_export(['-m', str(model_file), '-o', str(tmp_path / 'h.param'), '--format', 'ncnn', '--half']) == 0
    assert calls == [True] and 'weights float16' in capsys.readouterr().out
    assert (tmp_path / 'h.param').read_text() == '7767517\n0 0\n' and (tmp_path / 'h.bin').read_bytes() == b''
    assert asid_export(['-m', str(model_file), '-o', str(tmp_path / 'f.param'), '--format', 'ncnn']) == 1
    assert calls == [True, False] and 'above the tolerance 0.001' in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ['h.bin', 'h.param']
