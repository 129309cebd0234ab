"""asid-bench: MAC counts and the zoo outputs (small sizes; timings are not asserted)."""
from __future__ import annotations

import csv
import os
import shutil

import pytest

from asid_arch.bench.comparison import count_macs
from asid_arch.bench.main import main as asid_bench


@pytest.mark.slow
def test_macs_for_720p_output():
    assert round(count_macs('ASID', 4, 1280, 720) / 1e9, 1) == 20.8  # the paper's Table 2 convention
    assert count_macs('ASID-D8', 4, 1280, 720) > 2 * count_macs('ASID', 4, 1280, 720)


@pytest.mark.slow
def test_zoo_writes_table_csv_and_plots(tmp_path):
    out = tmp_path / 'bench'
    code = asid_bench(['zoo', '--models', 'ASID', 'Omni-SR', '--scales', '2', '--sizes', '64x48', '96x64',
                       '--repeats', '1', '--warmup', '0', '--out', str(out)])
    assert code == 0
    table = (out / 'results.md').read_text()
    assert '| ASID | x2 | 297,516 |' in table and '| Omni-SR | x2 | 784,604 |' in table
    rows = list(csv.DictReader(open(out / 'results.csv')))
    timing = [r for r in rows if r['kind'] == 'timing']
    assert len(timing) == 4 and all(float(r['latency_s']) > 0 and float(r['peak_mem_mb']) >= 0 for r in timing)
    assert (out / 'psnr_vs_params.png').stat().st_size > 0 and (out / 'latency_vs_resolution.png').stat().st_size > 0


@pytest.mark.slow
def test_zoo_with_a_checkpoint_reports_psnr(tmp_path):
    import torch

    from asid_arch import asid
    from asid_arch.data.prepare import prepare_bench

    from helpers import write_images

    write_images(tmp_path / 'Set5' / 'HR', 2, size=(40, 48))
    prepare_bench([tmp_path / 'Set5' / 'HR'], tmp_path / 'datasets', [2])
    torch.save({'params': asid(2).state_dict()}, tmp_path / 'm.pth')
    out = tmp_path / 'bench'
    code = asid_bench(['zoo', '--models', 'ASID', '--scales', '2', '--sizes', '64x48', '--repeats', '1', '--warmup',
                       '0', '--checkpoint', f'ASID:2={tmp_path / "m.pth"}', '--datasets', str(tmp_path / 'datasets'),
                       '--sets', 'Set5', '--out', str(out)])
    assert code == 0
    quality = [r for r in csv.DictReader(open(out / 'results.csv')) if r['kind'] == 'quality']
    assert len(quality) == 1 and quality[0]['dataset'] == 'Set5'
    assert '| ASID | x2 | m.pth | Set5 |' in (out / 'results.md').read_text()
    # the same figures computed here: the network on each prepared pair, BasicSR's Y-channel metrics, border 2
    import cv2
    import numpy as np

    from basicsr.metrics import calculate_psnr, calculate_ssim

    net = asid(2).eval()
    net.load_state_dict(torch.load(tmp_path / 'm.pth', weights_only=True)['params'])
    psnr, ssim = [], []
    for gt_path in sorted((tmp_path / 'datasets' / 'Set5' / 'GTmod2').glob('*.png')):
        gt, lq = cv2.imread(str(gt_path)), cv2.imread(str(tmp_path / 'datasets' / 'Set5' / 'LRbicx2' / gt_path.name))
        with torch.no_grad():
            sr = net(torch.from_numpy(lq[:, :, ::-1].astype(np.float32).transpose(2, 0, 1).copy())[None] / 255)
        sr = (sr[0].clamp(0, 1).numpy().transpose(1, 2, 0)[:, :, ::-1] * 255).round().astype(np.uint8)
        psnr.append(calculate_psnr(sr, gt, 2, input_order='HWC', test_y_channel=True))
        ssim.append(calculate_ssim(sr, gt, 2, input_order='HWC', test_y_channel=True))
    assert abs(float(quality[0]['psnr']) - np.mean(psnr)) < 1e-6
    assert abs(float(quality[0]['ssim']) - np.mean(ssim)) < 1e-6


def test_speed_measures_each_figure_and_quotes_reference_without_ratio(capsys):
    """No speed-up against figures from another machine; each figure with its own peak memory."""
    assert asid_bench(['_speed_one', '--what', 'x4', '--repeats', '1', '--warmup', '0']) == 0
    import json

    figure = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figure['label'].startswith('inference ASID x4 320x180 -> 1280x720 fp32')
    assert figure['seconds'] > 0 and figure['peak_rss_mb'] >= 0


def test_speed_prints_quoted_reference_times_without_ratio(monkeypatch, capsys):
    """The report line of each figure: the figure, its peak, and no speed-up. (No time of the authors'
    implementation is quoted any more: a figure from another machine is no code constant; ``--reference``
    measures it here.)"""
    from asid_arch.bench import speed as bench

    monkeypatch.setattr(bench, 'in_fresh_process', lambda args, what: {
        'label': f'figure {args[2]} {args[4]}' if args[0] == '_speed_one' else '', 'seconds': 0.5,
        'peak_rss_mb': 100.0, 'gflops': 100.0})
    monkeypatch.setattr(bench, 'golden_errors', lambda dtype, compile_model: ['skipped'])
    assert asid_bench(['speed', '--precision', 'fp32']) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith('figure')]
    assert len(lines) == 4
    share = 100 * bench.executed_gflop('x4') / 0.5 / 100.0
    assert lines[0] == (f'figure x4 fp32: 0.500 s, peak 100 MB above start; {share:.0f} GFLOP/s executed, '
                        f'{share:.0f}% of the fp32 matrix-product ceiling (100 GFLOP/s)')
    assert not any('speed-up' in line or 'x)' in line or 'quoted' in line for line in lines)


@pytest.mark.parametrize('native', [True, False])
def test_speed_precision_auto_follows_the_precision_rule(monkeypatch, capsys, native):
    """``asid-bench speed`` (``--precision auto``): float32 figures, and bf16 ones where the CPU has native bf16."""
    from asid_arch.bench import speed as bench
    from asid_arch.utils import asid_precision

    asked = []
    monkeypatch.setattr(asid_precision, 'cpu_has_bf16', lambda: native)
    monkeypatch.setattr(bench, 'in_fresh_process', lambda args, what: asked.append(args) or {
        'label': 'figure', 'seconds': 0.5, 'peak_rss_mb': 100.0, 'gflops': 100.0})
    monkeypatch.setattr(bench, 'golden_errors', lambda dtype, compile_model: ['skipped'])
    assert asid_bench(['speed']) == 0
    figures = {(args[2], args[4]) for args in asked if args[0] == '_speed_one'}
    expected = {('x4', 'fp32'), ('x2', 'fp32'), ('step', 'fp32'), ('step-fused', 'fp32')}
    assert figures == expected | ({('x4', 'bf16'), ('x2', 'bf16'), ('step', 'bf16')} if native else set())
    assert sum(args[0] == '_ceiling' for args in asked) == (2 if native else 1)


def test_speed_figures_chooses_the_figures(monkeypatch):
    """``--figures`` picks the figures of a plain and an ``--interleaved`` run (``step`` brings the fused step)."""
    from asid_arch.bench import speed as bench

    asked = []

    def measured(args, what):
        asked.append(args)
        if args[0] == '_precisions':
            return {'seconds': {'fp32': 0.5}, 'speedup': {'fp32': [1.0]}}
        return {'label': 'figure', 'seconds': 0.5, 'peak_rss_mb': 100.0, 'gflops': 100.0}

    monkeypatch.setattr(bench, 'in_fresh_process', measured)
    monkeypatch.setattr(bench, 'golden_errors', lambda dtype, compile_model: ['skipped'])
    assert asid_bench(['speed', '--precision', 'fp32', '--figures', 'x4']) == 0
    assert [args[2] for args in asked if args[0] == '_speed_one'] == ['x4']
    asked.clear()
    assert asid_bench(['speed', '--precision', 'fp32', '--figures', 'step', 'x2', 'step']) == 0
    assert [args[2] for args in asked if args[0] == '_speed_one'] == ['step', 'x2', 'step-fused']
    asked.clear()
    assert asid_bench(['speed', '--precision', 'fp32', '--interleaved', '--figures', 'x2']) == 0
    assert [args[2] for args in asked if args[0] == '_precisions'] == ['x2']


@pytest.mark.slow
def test_seams_command_reports_both_tilings(tmp_path, capsys):
    import torch

    from asid_arch import ASID

    torch.manual_seed(0)
    torch.save({'params': ASID(upscale=2, num_feat=16, num_blocks=1).state_dict()}, tmp_path / 'm.pth')
    assert asid_bench(['seams', '-m', str(tmp_path / 'm.pth'), '--tile', '128', '--overlap-averaged', '16']) == 0
    out = capsys.readouterr().out
    assert '512x384 photo' in out
    assert 'averaged 128 px tiles, overlap 16: column/row-mean jump' in out
    assert 'blended 128 px tiles, overlap 32: column/row-mean jump' in out


def test_speed_reference_file_must_exist(tmp_path, capsys):
    assert asid_bench(["speed", "--reference", str(tmp_path / "missing.py")]) == 2
    assert 'no such file' in capsys.readouterr().err


def test_reference_that_is_not_asid_is_refused(tmp_path):
    """A file without neosr's asid factory: a one-line reason, not a traceback."""
    from asid_arch.bench.reference import load_reference

    (tmp_path / 'other.py').write_text('import torch\n')
    with pytest.raises(SystemExit, match="did not build neosr's asid"):
        load_reference(tmp_path / 'other.py', 2)


def test_interleaved_times_alternate():
    from asid_arch.bench.common import interleaved_times

    order = []
    times = interleaved_times({'a': lambda: order.append('a'), 'b': lambda: order.append('b')}, rounds=2, warmup=1)
    assert order == ['a', 'b'] * 3 and len(times['a']) == len(times['b']) == 2


def test_interleaved_times_use_the_given_clock():
    from asid_arch.bench.common import interleaved_times

    ticks = iter(range(100))
    times = interleaved_times({'a': lambda: None, 'b': lambda: None}, rounds=2, warmup=1, clock=lambda: next(ticks))
    assert times == {'a': [1, 1], 'b': [1, 1]}


@pytest.mark.parametrize('extra', [[], ['--interleaved', '--reference', 'neosr.py']])
def test_cpu_time_needs_the_interleaved_precisions(tmp_path, capsys, extra):
    (tmp_path / 'neosr.py').write_text('')
    args = [a if a != 'neosr.py' else str(tmp_path / a) for a in extra]
    assert asid_bench(['speed', '--cpu-time', *args]) == 2
    assert '--cpu-time' in capsys.readouterr().err


def test_profile_categories():
    from asid_arch.bench.profile import op_category

    assert op_category('mkldnn::_linear_pointwise') == op_category('aten::bmm') == 'matrix products'
    assert op_category('aten::mm') == op_category('aten::baddbmm') == 'matrix products'
    assert op_category('aten::convolution_backward') == op_category('mkldnn::_convolution_pointwise') == 'convolutions'
    assert op_category('aten::mul') == op_category('aten::copy_') == op_category('aten::mmx') == 'everything else'


@pytest.mark.slow
@pytest.mark.parametrize('precision', ['fp32', 'bf16'])
def test_profile_command_splits_the_time(capsys, precision):
    from asid_arch.utils.asid_precision import cpu_has_bf16

    if precision == 'bf16' and not cpu_has_bf16():
        pytest.skip('bf16 is emulated on this CPU (far slower)')
    assert asid_bench(['profile', '--what', 'x4', '--warmup', '0', '--precision', precision]) == 0
    out = capsys.readouterr().out
    assert f'320x180 -> 1280x720 {precision} on ' in out
    line = [x for x in out.splitlines() if x.startswith('package: ')][0]
    import re

    total = float(re.match(r'package: ([\d.]+) s', line).group(1))
    parts = [float(v) for v in re.findall(r'(?:products|convolutions|else) ([\d.]+) s', line)]
    assert len(parts) == 3 and all(p > 0 for p in parts) and abs(sum(parts) - total) < 0.02 + 1e-9


def test_profile_reference_file_must_exist(tmp_path, capsys):
    assert asid_bench(['profile', '--reference', str(tmp_path / 'nope.py')]) == 2
    assert 'no such file' in capsys.readouterr().err


def test_data_option_file_must_exist(tmp_path, capsys):
    assert asid_bench(['data', '-opt', str(tmp_path / 'nope.yml')]) == 2
    assert 'no such file' in capsys.readouterr().err


def test_seams_image_that_is_no_regular_file_is_named_by_its_kind(tmp_path):
    """``asid-bench seams --image``: a FIFO (it would block the read), a device, a folder, nothing: one line each,
    the kind named, nothing opened that would block."""
    import os
    from pathlib import Path

    from asid_arch.bench.seams import SeamsError, read_photo

    os.mkfifo(tmp_path / 'fifo.png')
    (tmp_path / 'folder.png').mkdir()
    cases = {tmp_path / 'fifo.png': 'a FIFO, not an image file', tmp_path / 'folder.png': 'a folder, not an image file',
             tmp_path / 'missing.png': 'no such file'}
    if os.path.exists('/dev/zero'):
        cases[Path('/dev/zero')] = 'a character device, not an image file'
    for path, message in cases.items():
        with pytest.raises(SeamsError) as info:
            read_photo(path)
        assert str(info.value).startswith('--image ') and str(info.value).endswith(message), str(info.value)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which(os.environ.get('CXX', 'g++')) is None,
                    reason='torch.compile on a CPU needs a C++ compiler')
def test_compiled_inference_equals_eager():
    """``asid-bench speed --compile`` times a frozen, compiled network: it must compute what the eager one does
    (a small network and image), and inductor's freezing must stay off for the rest of the process."""
    import torch
    import torch._inductor.config as inductor_config

    from asid_arch import ASID
    from asid_arch.bench.speed import FrozenCompiled

    before = inductor_config.freezing
    torch.manual_seed(0)
    net = ASID(upscale=2, num_feat=8, num_blocks=1).eval()
    x = torch.rand(1, 3, 21, 19)
    with torch.inference_mode():
        eager = net(x)
        out = FrozenCompiled(net)(x)
    torch._dynamo.reset()
    assert inductor_config.freezing == before
    assert out.shape == eager.shape == (1, 3, 42, 38)
    assert (out - eager).abs().max().item() < 1e-5
