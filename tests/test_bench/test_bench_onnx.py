"""asid-bench onnx: every runtime's column on a small network and input (each runtime's difference to eager is
asserted; timings are not)."""
from __future__ import annotations

import pytest

from asid_arch.archs import asid_arch
from asid_arch.bench import onnx as bench_onnx
from asid_arch.cli.export import missing_package


@pytest.mark.slow
def test_every_runtime_runs_the_exported_network_like_eager(tmp_path, monkeypatch):
    if missing_package('onnx'):
        pytest.skip(f"the extra asid_arch[onnx] is not installed ({missing_package('onnx')})")
    monkeypatch.setattr(asid_arch, 'asid', lambda scale: asid_arch.ASID(scale, num_feat=16, num_blocks=1))
    monkeypatch.setitem(bench_onnx.FIGURE_INPUT, 'x4', (21, 17))  # odd, not a multiple of the window
    figure = bench_onnx.runtimes_vs_eager('x4', rounds=1, warmup=0, folder=tmp_path)
    ran = ['eager', 'onnxruntime']
    if figure['opencv_note'] == '':
        ran.append('opencv')
    if missing_package('ncnn') is None:
        assert figure['ncnn_note'] == '', figure['ncnn_note']
        assert (tmp_path / 'asid_x4.param').is_file() and (tmp_path / 'asid_x4.bin').is_file()
        ran.append('ncnn')
        assert figure['ncnn_alone_s'] > 0
    for name in ran:
        assert figure[f'{name}_s'] > 0, name
        assert figure[f'{name}_diff'] < 1e-4, (name, figure[f'{name}_diff'])
