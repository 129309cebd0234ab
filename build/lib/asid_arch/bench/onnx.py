"""``asid-bench onnx``: the exported ASID run by onnxruntime against PyTorch eager, interleaved in one
process (the x4 320x180 and x2 640x360 figures, fp32, random weights of the released configuration)."""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from ..console import EXIT_OK
from .common import interleaved_times, machine, no_grad_call
from .figures import FIGURE_INPUT, FIGURE_LABEL, FIGURE_SCALE


def onnx_vs_eager(what: str, rounds: int, warmup: int, folder: Path) -> dict:
    """ASID exported by ``asid-export``'s exporter into ``folder`` and run by onnxruntime (CPU provider,
    default threads) against PyTorch eager, interleaved in this process."""
    import numpy as np
    import onnxruntime
    import torch

    from ..archs.asid_arch import asid
    from ..integrations.onnx import export_onnx

    scale, (w, h) = FIGURE_SCALE[what], FIGURE_INPUT[what]
    torch.manual_seed(0)
    net = asid(scale).eval()
    path = folder / f'asid_{what}.onnx'
    start = time.perf_counter()
    export_onnx(net, path)
    export_s = time.perf_counter() - start
    session = onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    x = torch.rand(1, 3, h, w)
    runs = {'eager': lambda: no_grad_call(net, x), 'onnxruntime': lambda: session.run(None, {'lr': x.numpy()})[0]}
    diff = float(np.abs(runs['onnxruntime']() - runs['eager']().numpy()).max())
    times = interleaved_times(runs, rounds, warmup)
    return {'label': FIGURE_LABEL[what] + ' fp32', 'eager_s': statistics.median(times['eager']),
            'onnxruntime_s': statistics.median(times['onnxruntime']), 'max_abs_diff': diff, 'export_s': export_s}


def onnx(args: argparse.Namespace) -> int:
    """``asid-bench onnx``: the x4 and x2 figures, each exported into a temporary folder (removed after)."""
    import tempfile

    print(f'asid-bench onnx on {machine()}')
    with tempfile.TemporaryDirectory() as folder:
        for what in FIGURE_INPUT:
            fig = onnx_vs_eager(what, args.repeats, args.warmup, Path(folder))
            print(f"{fig['label']}: PyTorch eager {fig['eager_s']:.3f} s, onnxruntime {fig['onnxruntime_s']:.3f} s "
                  f"(eager/onnxruntime {fig['eager_s'] / fig['onnxruntime_s']:.2f}x), max abs diff "
                  f"{fig['max_abs_diff']:.1e}; export took {fig['export_s']:.0f} s", flush=True)
    return EXIT_OK
