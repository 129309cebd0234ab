"""``asid-bench onnx``: the exported ASID run by onnxruntime, OpenCV's DNN module and NCNN against PyTorch eager,
interleaved in one process (the x4 320x180 and x2 640x360 figures, fp32, random weights of the released
configuration). Interleaving gives each runtime the same machine state, so the ratios hold on a shared,
loaded machine where the absolute times drift.

OpenCV runs in this process only after a child process has loaded and run the same file (a native crash in
OpenCV's importer would otherwise end the benchmark); where it cannot, its column says why. NCNN runs the files
of ``asid-export --format ncnn`` on the CPU with ncnn's default options (packed layouts on, as the ncnn upscalers
run them; :func:`asid_arch.integrations.ncnn.load_ncnn`); where pnnx or ncnn is missing, its column says so.
In this process NCNN shares PyTorch's OpenMP and its passive waiting (:func:`asid_arch.cpu_settings.tune_cpu`),
which its many short layers run about 3x slower in, so it is also timed alone in a fresh process with OpenMP's
default waiting, as in the applications that host it (``_ncnn_alone``).
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from ..console import EXIT_OK
from .common import in_fresh_process, interleaved_times, machine, no_grad_call, print_json
from .figures import FIGURE_INPUT, FIGURE_LABEL, FIGURE_SCALE

if TYPE_CHECKING:
    import numpy as np

RUNTIMES = ('eager', 'onnxruntime', 'opencv', 'ncnn')  # the columns, in the order they run in each round


def runtimes_vs_eager(what: str, rounds: int, warmup: int, folder: Path, tuned: Sequence[str] = ()) -> dict:
    """ASID exported by ``asid-export``'s exporters into ``folder``, run by onnxruntime (CPU provider, default
    threads), OpenCV DNN (CPU backend) and NCNN (CPU, default threads) against PyTorch eager, interleaved in this
    process: median seconds per runtime, each runtime's largest difference to eager, and a note for each runtime
    that could not run. ``tuned``: the environment variables this process's tuning set, which NCNN's run alone
    does without."""
    import numpy as np
    import onnxruntime
    import torch

    from ..archs.asid_arch import asid
    from ..integrations.onnx import INPUT_NAME, export_onnx
    from ..integrations.opencv import OpenCVCrash, load_net, opencv_version, run_net, run_opencv_isolated

    scale, (w, h) = FIGURE_SCALE[what], FIGURE_INPUT[what]
    torch.manual_seed(0)
    net = asid(scale).eval()
    path = folder / f'asid_{what}.onnx'
    start = time.perf_counter()
    export_onnx(net, path)
    export_s = time.perf_counter() - start
    x = torch.rand(1, 3, h, w)
    session = onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    runs = {'eager': lambda: no_grad_call(net, x).numpy(),
            'onnxruntime': lambda: session.run(None, {INPUT_NAME: x.numpy()})[0]}
    figure = {'label': FIGURE_LABEL[what] + ' fp32', 'export_s': export_s, 'opencv_note': '', 'ncnn_note': ''}
    if opencv_version() is None:
        figure['opencv_note'] = 'cv2.dnn not installed'
    else:
        try:
            run_opencv_isolated(path, {'probe': x[..., :24, :24].numpy()})
            cv_net = load_net(path)
            runs['opencv'] = lambda: run_net(cv_net, x.numpy())
        except OpenCVCrash as err:
            figure['opencv_note'] = str(err)
    ncnn_run = ncnn_runner(net, folder / f'asid_{what}.param', figure)
    if ncnn_run is not None:
        runs['ncnn'] = lambda: ncnn_run(x.numpy())
    expected = runs['eager']()
    for name, run in runs.items():
        figure[f'{name}_diff'] = float(np.abs(run() - expected).max())
    times = interleaved_times(runs, rounds, warmup)
    for name in runs:
        figure[f'{name}_s'] = statistics.median(times[name])
    if 'ncnn' in runs:
        figure['ncnn_alone_s'] = in_fresh_process(['_ncnn_alone', '--param', str(folder / f'asid_{what}.param'),
                                                   '--size', f'{w}x{h}', '--repeats', str(rounds), '--warmup',
                                                   str(warmup)], 'NCNN alone', unset=tuned)['seconds']
    return figure


def ncnn_alone_command(args: argparse.Namespace) -> int:
    """``_ncnn_alone``: an NCNN pair run alone in this fresh process, whose OpenMP keeps its default waiting
    policy (the other commands' passive waiting makes NCNN's many short layers about 3x slower, and in one
    process with PyTorch the two share one OpenMP): prints ``{"seconds": median}`` as JSON."""
    import numpy as np

    from ..integrations.ncnn import load_ncnn, run_ncnn

    model = load_ncnn(args.param, args.param.with_suffix('.bin'))
    w, h = args.size
    x = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)
    times = interleaved_times({'ncnn': lambda: run_ncnn(model, x)}, args.repeats, args.warmup)
    return print_json({'seconds': statistics.median(times['ncnn'])})


def ncnn_runner(net, param: Path, figure: dict) -> Optional[Callable[[np.ndarray], np.ndarray]]:
    """``net`` converted by ``asid-export --format ncnn``'s converter into ``param`` (and its .bin) and loaded
    with ncnn's default options (packed layouts on: what the ncnn upscalers get), as a function of a
    ``(1, 3, H, W)`` array; None where it cannot run, with the reason in ``figure['ncnn_note']`` and the
    conversion's seconds in ``figure['ncnn_export_s']``."""
    from ..cli.export import missing_package
    from ..integrations.ncnn import NcnnExportError, load_ncnn, ncnn_model, run_ncnn, write_ncnn

    missing = missing_package('ncnn')
    if missing:
        figure['ncnn_note'] = f'{missing} not installed'
        return None
    start = time.perf_counter()
    try:
        write_ncnn(param, *ncnn_model(net))
        model = load_ncnn(param, param.with_suffix('.bin'))
    except NcnnExportError as err:
        figure['ncnn_note'] = str(err)
        return None
    figure['ncnn_export_s'] = time.perf_counter() - start
    return lambda array: run_ncnn(model, array)


def onnx(args: argparse.Namespace) -> int:
    """``asid-bench onnx``: the x4 and x2 figures, each exported into a temporary folder (removed after)."""
    import tempfile

    from ..integrations.opencv import opencv_version

    print(f'asid-bench onnx on {machine()}; OpenCV {opencv_version()}; medians of {args.repeats} interleaved rounds')
    with tempfile.TemporaryDirectory() as folder:
        for what in FIGURE_INPUT:
            fig = runtimes_vs_eager(what, args.repeats, args.warmup, Path(folder), list(args.tuned))
            cells = []
            for name in RUNTIMES:
                if f'{name}_s' in fig:
                    cells.append(f"{name} {fig[f'{name}_s']:.3f} s ({fig['eager_s'] / fig[f'{name}_s']:.2f}x eager, "
                                 f"max abs diff {fig[f'{name}_diff']:.1e})")
                else:
                    cells.append(f"{name} not run: {fig[f'{name}_note']}")
            if 'ncnn_alone_s' in fig:
                cells.append(f"ncnn alone in a fresh process (OpenMP's default waiting) {fig['ncnn_alone_s']:.3f} s "
                             f"({fig['eager_s'] / fig['ncnn_alone_s']:.2f}x eager)")
            conversions = f"ONNX export took {fig['export_s']:.0f} s" + (
                f", NCNN conversion {fig['ncnn_export_s']:.0f} s" if 'ncnn_export_s' in fig else '')
            print(f"{fig['label']}: " + '; '.join(cells) + f'; {conversions}', flush=True)
    return EXIT_OK
