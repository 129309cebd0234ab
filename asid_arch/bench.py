"""``asid-bench``: the model-zoo comparison and the fast-ASID figures, measured on this machine.

    asid-bench zoo   [--models ASID ASID-D8 SwinIR-light Omni-SR] [--scales 2 3 4] [--sizes 1280x720 ...]
                     [--checkpoint ASID:2=path.pth ...] [--datasets datasets] [--out bench_out]
    asid-bench speed [--compile] [--bf16] [--repeats 5] [--warmup 5] [--reference neosr/archs/asid_arch.py]
    asid-bench data  -opt options/train/ASID/train_ASID_SRx2_scratch.yml [--workers 0 1 2 6]
    asid-bench onnx  [--repeats 5]
    asid-bench profile [--what step|x4|x2] [--reference neosr/archs/asid_arch.py]

``zoo``: parameters; MACs for a 1280x720 output (``torch.utils.flop_counter``; the paper's Table 2
convention); latency (median of repeated runs after warm-up) and peak memory at several output
sizes, each model and scale in its own process (CPU: peak RSS above the resident size before the
run, Linux ``VmHWM`` reset through ``clear_refs``; CUDA:
``max_memory_allocated``, fp32 and bf16/fp16); PSNR/SSIM (Y, border = scale) on prepared
benchmark sets for every model given a checkpoint. Writes ``results.md``, ``results.csv`` and the
plots ``psnr_vs_params.png`` (measured points and the paper's published ones, marked) and
``latency_vs_resolution.png``.

``speed``: ASID x4 320x180 -> 1280x720 and ASID x2 640x360 inference, one training step (batch 16,
64x64 LR patches, x2, forward + backward + Adam), and the float32 (and bf16) error against the
float64 golden files when ``../shared/golden`` is present. With ``--reference`` (neosr's ASID file,
whose ``pe=True, flash_attn=False`` build is the authors' architecture): the package and the
reference interleaved in one process, and the reference alone in a plain process.

``data``: model steps on a fixed batch against steps fed by BasicSR's data loader of an option file,
alternating in one process: the data pipeline's share of an iteration.

``onnx``: the exported ASID run by onnxruntime against PyTorch eager, interleaved (x4 320x180 and
x2 640x360, fp32).

``profile``: where one figure's time goes (``torch.profiler`` self times): matrix products,
convolutions, and everything else (element-wise operations, copies, normalisations, softmax,
reductions); with ``--reference``, the reference's figure in the same process beside it.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

ZOO_MODELS = ('ASID', 'ASID-D8', 'SwinIR-light', 'Omni-SR')
DEFAULT_SIZES = ('320x180', '640x360', '1280x720')  # output sizes (W x H)
MACS_OUTPUT = (1280, 720)  # the paper's Table 2 convention
# Published figures (paper tables; see README). Urban100 Y-PSNR, dB; params of the released configs.
PUBLISHED = [
    # (model, scale, params, Urban100 PSNR, note)
    ('ASID', 2, 297_516, 33.35, 'ASID paper'),
    ('ASID', 3, 304_011, 29.08, 'ASID paper'),
    ('ASID', 4, 313_104, 26.89, 'ASID paper'),
    ('ASID-D8', 2, 732_146, 33.46, 'ASID paper'),
    ('ASID-D8', 3, 738_641, 29.28, 'ASID paper'),
    ('ASID-D8', 4, 747_734, 27.07, 'ASID paper'),
    ('Omni-SR', 4, 805_376, 26.95, 'Omni-SR paper, DF2K-trained'),
]


class WindowPadded(nn.Module):
    """Pads the input to a multiple of the window by mirroring (SwinIR's test protocol), crops the output."""

    def __init__(self, net: nn.Module, scale: int, window: int = 8) -> None:
        super().__init__()
        self.net, self.scale, self.window = net, scale, window

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.window, (-w) % self.window
        x = torch.cat([x, x.flip(2)], 2)[:, :, :h + ph]
        x = torch.cat([x, x.flip(3)], 3)[:, :, :, :w + pw]
        return self.net(x)[..., :h * self.scale, :w * self.scale]


def build_model(name: str, scale: int) -> nn.Module:
    import asid_arch  # noqa: F401
    from asid_arch.archs import ASID, OmniSR

    if name == 'ASID':
        return ASID(upscale=scale, num_blocks=3)
    if name == 'ASID-D8':
        return ASID(upscale=scale, num_blocks=8)
    if name == 'Omni-SR':
        return OmniSR(upscale=scale)
    if name == 'SwinIR-light':
        from basicsr.archs.swinir_arch import SwinIR

        return WindowPadded(SwinIR(upscale=scale, in_chans=3, img_size=64, window_size=8, img_range=1.0,
                                   depths=[6, 6, 6, 6], embed_dim=60, num_heads=[6, 6, 6, 6], mlp_ratio=2,
                                   upsampler='pixelshuffledirect', resi_connection='1conv'), scale)
    raise ValueError(f'unknown model {name!r}; choose from {", ".join(ZOO_MODELS)}')


def parse_size(text: str) -> tuple:
    try:
        w, h = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(f'size {text!r} is not WIDTHxHEIGHT') from None
    return w, h


def count_macs(name: str, scale: int, out_w: int, out_h: int) -> float:
    """MACs (multiply-accumulates) of one forward pass for an output of about ``out_w x out_h``.

    The architecture's count, as the papers give it: ASID's folded attention projection (which
    executes fewer MACs, 20.1 G instead of 20.8 G for x4 at 720p) is unfolded for counting.
    """
    from torch.utils.flop_counter import FlopCounterMode

    def literal(net: nn.Module) -> nn.Module:
        for module in net.modules():
            if hasattr(module, 'fold_proj'):
                module.fold_proj = False
        return net

    shape = (1, 3, out_h // scale, out_w // scale)
    try:  # shapes only: fast and memory-free
        with torch.device('meta'):
            net, x = literal(build_model(name, scale)), torch.empty(shape)
            with FlopCounterMode(display=False) as counter:
                net(x)
    except (RuntimeError, NotImplementedError):  # a model that reads values (SwinIR's masks): really run it
        net, x = literal(build_model(name, scale)).eval(), torch.rand(shape)
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            net(x)
    return counter.get_total_flops() / 2


def _proc_status_bytes(field: str) -> int:
    with open('/proc/self/status') as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ':'))


def reset_peak_rss() -> int:
    """Reset the process's peak RSS (Linux ``clear_refs``) and return the current RSS in bytes."""
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')
    return _proc_status_bytes('VmRSS')


def peak_rss_since_reset() -> int:
    return _proc_status_bytes('VmHWM')


def measure_worker(name: str, scale: int, size: tuple, precision: str, repeats: int, warmup: int,
                   device: str) -> dict:
    """Latency and peak memory of one model, scale, output size and precision (run in a fresh process)."""
    dev = torch.device(device)
    net = build_model(name, scale).eval().to(dev)
    dtype = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}[precision]
    out_w, out_h = size
    x = torch.rand(1, 3, out_h // scale, out_w // scale, device=dev)

    def run() -> None:
        net(x)
        if dev.type == 'cuda':
            torch.cuda.synchronize()

    if dev.type == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = reset_peak_rss()
    with torch.inference_mode(), torch.autocast(dev.type, dtype=dtype, enabled=precision != 'fp32'):
        latency = _median_time(run, repeats, warmup)
    peak = (torch.cuda.max_memory_allocated() if dev.type == 'cuda' else peak_rss_since_reset()) - base
    return {'model': name, 'scale': scale, 'device': device, 'precision': precision, 'output': f'{out_w}x{out_h}',
            'output_mpix': out_w * out_h / 1e6, 'latency_s': latency, 'peak_mem_mb': peak / 2**20}


def in_fresh_process(args: Sequence[str], what: str, env: Optional[Dict[str, str]] = None) -> dict:
    """``python -m asid_arch.bench <args>`` in a new process; the JSON dict of its last output line.
    (Importing asid_arch keeps freed heap memory for reuse, so one process per figure keeps each peak
    its own.)"""
    result = subprocess.run([sys.executable, '-m', 'asid_arch.bench', *args], capture_output=True, text=True,
                            env={**os.environ, **(env or {})})
    if result.returncode != 0:
        raise RuntimeError(f'{what}: measurement failed:\n{result.stderr[-2000:]}')
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_worker(name: str, scale: int, args: argparse.Namespace) -> List[dict]:
    """Each output size and precision in a fresh process (a smaller size run first would hide the peak
    of a larger one)."""
    return [in_fresh_process(['_worker', '--model', name, '--scale', str(scale), '--size', f'{w}x{h}', '--precision',
                              precision, '--repeats', str(args.repeats), '--warmup', str(args.warmup), '--device',
                              args.device], f'{name} x{scale} {w}x{h} {precision}')
            for precision in args.precisions for w, h in args.sizes]


def evaluate_psnr(net: nn.Module, scale: int, datasets: Path, names: Sequence[str], device: str) -> Dict[str, tuple]:
    """Mean Y-PSNR/SSIM (border = scale) per prepared data set ``{datasets}/{name}/GTmod{s}, LRbicx{s}``."""
    import numpy as np
    from basicsr.metrics import calculate_psnr, calculate_ssim

    from .evaluation import paired_images, super_resolve

    results = {}
    net = net.eval().to(device)
    for name in names:
        gt_dir, lq_dir = datasets / name / f'GTmod{scale}', datasets / name / f'LRbicx{scale}'
        if not gt_dir.is_dir() or not lq_dir.is_dir():
            continue
        psnr, ssim = [], []
        for _, gt, lq in paired_images(gt_dir, lq_dir):
            sr = super_resolve(net, lq, device)
            psnr.append(calculate_psnr(sr, gt, scale, input_order='HWC', test_y_channel=True))
            ssim.append(calculate_ssim(sr, gt, scale, input_order='HWC', test_y_channel=True))
        if psnr:
            results[name] = (float(np.mean(psnr)), float(np.mean(ssim)))
    return results


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    gpu = f', {torch.cuda.get_device_name()}' if torch.cuda.is_available() else ''
    return f'{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads{gpu}'


def write_outputs(out: Path, static: List[dict], timing: List[dict], quality: List[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    # the raw measurements first: nothing is lost if formatting below fails
    (out / 'results.json').write_text(json.dumps({'machine': machine(), 'models': static, 'timing': timing,
                                                  'quality': quality}, indent=1))
    with open(out / 'results.csv', 'w', newline='') as f:
        fields = ['kind', 'model', 'scale', 'params', 'gmacs_720p', 'device', 'precision', 'output', 'output_mpix',
                  'latency_s', 'peak_mem_mb', 'checkpoint', 'dataset', 'psnr', 'ssim']
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for kind, rows in (('model', static), ('timing', timing), ('quality', quality)):
            for row in rows:
                writer.writerow({'kind': kind, **row})
    sizes = sorted({r['output'] for r in timing}, key=lambda s: math.prod(int(v) for v in s.split('x')))
    configs = sorted({(r['device'], r['precision']) for r in timing})
    lines = [f'Measured on: {machine()}', '']
    header = '| model | scale | params | GMACs (1280x720 out) |'
    for device, precision in configs:
        header += ''.join(f' {device} {precision} {s} latency (s) / peak mem (MB) |' for s in sizes)
    lines += [header, '|' + '---|' * (header.count('|') - 1)]
    for row in static:
        cells = f"| {row['model']} | x{row['scale']} | {row['params']:,} | {row['gmacs_720p']:.1f} |"
        for device, precision in configs:
            for s in sizes:
                hit = [r for r in timing if (r['model'], r['scale'], r['device'], r['precision'], r['output']) ==
                       (row['model'], row['scale'], device, precision, s)]
                cells += f" {hit[0]['latency_s']:.3f} / {hit[0]['peak_mem_mb']:.0f} |" if hit else ' - |'
        lines.append(cells)
    if quality:
        lines += ['', '| model | scale | checkpoint | data set | PSNR (Y) | SSIM (Y) |', '|---|---|---|---|---|---|']
        lines += [f"| {q['model']} | x{q['scale']} | {q['checkpoint']} | {q['dataset']} | {q['psnr']:.2f} | "
                  f"{q['ssim']:.4f} |" for q in quality]
    (out / 'results.md').write_text('\n'.join(lines) + '\n')
    plot(out, static, timing, quality)


def plot(out: Path, static: List[dict], timing: List[dict], quality: List[dict]) -> None:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    colors = dict(zip(ZOO_MODELS, ('tab:red', 'tab:purple', 'tab:blue', 'tab:green')))
    scales = sorted({p[1] for p in PUBLISHED} | {q['scale'] for q in quality})
    fig, axes = plt.subplots(1, len(scales), figsize=(5 * len(scales), 4), squeeze=False)
    for ax, scale in zip(axes[0], scales):
        for model, s, params, psnr, note in PUBLISHED:
            if s == scale:
                ax.scatter(params / 1e3, psnr, marker='o', facecolors='none', edgecolors=colors.get(model, 'k'), s=70)
                ax.annotate(f'{model} (published)', (params / 1e3, psnr), fontsize=8, xytext=(4, 4),
                            textcoords='offset points')
        for q in quality:
            if q['scale'] == scale and q['dataset'] == 'Urban100':
                ax.scatter(q['params'] / 1e3, q['psnr'], marker='*', color=colors.get(q['model'], 'k'), s=120)
                ax.annotate(f"{q['model']} (measured: {q['checkpoint']})", (q['params'] / 1e3, q['psnr']), fontsize=8,
                            xytext=(4, -10), textcoords='offset points')
        ax.set(title=f'Urban100 x{scale}', xlabel='parameters (K)', ylabel='PSNR (dB, Y)')
        ax.margins(x=0.3, y=0.15)
        ax.grid(alpha=0.3)
    fig.suptitle('PSNR vs parameters: hollow = published figures, stars = measured here')
    fig.tight_layout()
    fig.savefig(out / 'psnr_vs_params.png', dpi=120)
    plt.close(fig)

    series = sorted({(r['scale'], r['device'], r['precision']) for r in timing})
    fig, axes = plt.subplots(1, max(1, len(series)), figsize=(5 * max(1, len(series)), 4), squeeze=False)
    for ax, (scale, device, precision) in zip(axes[0], series):
        for model in ZOO_MODELS:
            pts = sorted((r['output_mpix'], r['latency_s']) for r in timing
                         if (r['model'], r['scale'], r['device'], r['precision']) == (model, scale, device, precision))
            if pts:
                ax.plot(*zip(*pts), marker='o', label=model, color=colors[model])
        ax.set(title=f'x{scale}, {device} {precision}', xlabel='output megapixels', ylabel='latency (s)')
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f'Latency vs output resolution ({machine()})', fontsize=8)
    fig.tight_layout()
    fig.savefig(out / 'latency_vs_resolution.png', dpi=120)
    plt.close(fig)


def zoo(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .checkpoint import CheckpointError, load_state_dict

    checkpoints = {}
    for spec in args.checkpoint:
        try:
            key, path = spec.split('=', 1)
            model, scale = key.split(':')
            checkpoints[(model, int(scale))] = Path(path)
        except ValueError:
            print(f'asid-bench: --checkpoint {spec!r} is not MODEL:SCALE=PATH', file=sys.stderr)
            return 2
    combos = [(m, s) for m in args.models for s in args.scales]
    static, timing, quality = [], [], []
    bar = tqdm(total=len(combos) * 2 + len(checkpoints), desc='asid-bench', unit='step')
    for model, scale in combos:
        bar.set_postfix_str(f'{model} x{scale}: params, MACs')
        params = sum(p.numel() for p in build_model(model, scale).parameters())
        static.append({'model': model, 'scale': scale, 'params': params,
                       'gmacs_720p': count_macs(model, scale, *MACS_OUTPUT) / 1e9})
        bar.update()
    for model, scale in combos:
        bar.set_postfix_str(f'{model} x{scale}: latency, memory')
        timing += run_worker(model, scale, args)
        bar.update()
    for (model, scale), path in checkpoints.items():
        bar.set_postfix_str(f'{model} x{scale}: PSNR')
        net = build_model(model, scale)
        target = net.net if isinstance(net, WindowPadded) else net
        try:  # safe loading, BasicSR wrappers unwrapped; each model's load_state_dict converts released layouts
            target.load_state_dict(load_state_dict(path))
        except (CheckpointError, RuntimeError, OSError) as err:
            print(f'asid-bench: {model} x{scale}: cannot load {path}: {err}', file=sys.stderr)
            return 2
        for dataset, (psnr, ssim) in evaluate_psnr(net, scale, args.datasets, args.sets, args.device).items():
            quality.append({'model': model, 'scale': scale, 'checkpoint': path.name, 'dataset': dataset,
                            'params': sum(p.numel() for p in net.parameters()), 'psnr': psnr, 'ssim': ssim})
        bar.update()
    bar.close()
    write_outputs(args.out, static, timing, quality)
    print((args.out / 'results.md').read_text())
    print(f'asid-bench: wrote {args.out}/results.md, results.csv, psnr_vs_params.png, latency_vs_resolution.png')
    return 0


def _median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def golden_errors(dtype: torch.dtype, compile_model: bool) -> List[str]:
    """Max abs difference to each float64 golden output when running in ``dtype`` (inference)."""
    from .archs import ASID
    from .tiling import tile_forward

    golden_dir = Path(os.environ.get('ASID_SHARED', Path(__file__).resolve().parents[2] / 'shared')) / 'golden'
    lines = []
    for path in sorted(golden_dir.glob('asid*.pt')):
        g = torch.load(path, weights_only=True)
        net = ASID(upscale=g['scale'], num_feat=g['num_feat'], num_blocks=g['num_blocks']).eval()
        net.load_state_dict(g['state_dict'])
        if compile_model:  # a fresh, static-shape compile per file (dynamic recompiles mis-crop; see README)
            torch._dynamo.reset()
        run = torch.compile(net, dynamic=False) if compile_model else net
        x = g['input'].float()
        autocast = torch.autocast('cpu', dtype=dtype, enabled=dtype != torch.float32)
        with torch.inference_mode(), autocast:
            out = tile_forward(run, x, g['scale'], g['tile'], g['tile_overlap']) if 'tile' in g else run(x)
        lines.append(f'{path.name}: max abs diff {(out.double() - g["output"]).abs().max().item():.2e}')
    return lines or ['(golden files not found: set ASID_SHARED)']


def seam_figures(checkpoint: Path, image: Optional[Path], tile: int, overlap_averaged: int,
                 overlap_blended: int) -> List[str]:
    """Tiled vs whole-image inference on one photo: averaged tiles (the reference protocol) and the
    blended tiles of ``asid-sr``. Figures: largest jump between neighbouring column/row means of the
    difference to the whole image, largest pixel difference (grey levels), time."""
    import numpy as np

    from .checkpoint import load_network
    from .inference import Upscaler
    from .tiling import tile_forward

    net, config = load_network(checkpoint)
    if image is None:  # a 512x384 photo that is not in the demo's training set
        import skimage.data

        rgb = skimage.data.coffee()[8:392, 44:556]
    else:
        import cv2

        from .images import decode_file

        bgr = decode_file(image, cv2.IMREAD_COLOR)
        if bgr is None:
            raise SystemExit(f'asid-bench: {image} is not a readable image')
        rgb = bgr[:, :, ::-1].copy()
    s = config.upscale
    x = torch.from_numpy(rgb.transpose(2, 0, 1).copy()).float().div(255)[None]

    def to8(t: torch.Tensor) -> np.ndarray:
        return t[0].clamp(0, 1).mul(255).round().byte().numpy().transpose(1, 2, 0).astype(np.float64)

    def timed(fn):
        start = time.perf_counter()
        out = fn()
        return out, time.perf_counter() - start

    with torch.inference_mode():
        whole, t_whole = timed(lambda: to8(net(x)))
        averaged, t_avg = timed(lambda: to8(tile_forward(net, x, s, tile, overlap_averaged)))
    upscaler = Upscaler(net, s, torch.device('cpu'), 'fp32', tile, overlap_blended, 0, str(checkpoint))
    dest = np.empty((rgb.shape[0] * s, rgb.shape[1] * s, 3), np.uint8)
    _, t_blend = timed(lambda: upscaler.upscale(rgb, dest, reverse_channels=False))
    lines = [f'{rgb.shape[1]}x{rgb.shape[0]} photo, {config.variant} x{s} from {checkpoint}; whole image '
             f'{t_whole:.2f} s']
    for name, out, seconds in ((f'averaged {tile} px tiles, overlap {overlap_averaged}', averaged, t_avg),
                               (f'blended {tile} px tiles, overlap {overlap_blended}', dest.astype(np.float64),
                                t_blend)):
        diff = out - whole
        jump = max(np.abs(np.diff(diff.mean(axis=(0, 2)))).max(), np.abs(np.diff(diff.mean(axis=(1, 2)))).max())
        lines.append(f'{name}: column/row-mean jump {jump:.2f} grey levels, max pixel diff '
                     f'{np.abs(diff).max():.0f}, {seconds:.2f} s')
    return lines


# Times of the authors' implementation, measured once on the development machine (AMD EPYC, 2 cores,
# torch 2.14.1, see README "Speed"). They are quoted for orientation only: a ratio against them would
# compare two machines, so none is printed.
QUOTED_REFERENCE_S = {'x4': 1.27, 'x2': 10.5, 'step': 2.9}
SPEED_FIGURES = ('x4', 'x2', 'step', 'step-fused')


FIGURE_SCALE = {'x4': 4, 'x2': 2, 'step': 2}
FIGURE_INPUT = {'x4': (320, 180), 'x2': (640, 360)}  # LR width, height of the inference figures
FIGURE_LABEL = {'x4': 'inference x4 320x180 -> 1280x720', 'x2': 'inference x2 640x360 -> 1280x720',
                'step': 'training step x2, batch 16, 64x64 LR, Adam'}


def _figure_workload(what: str, net: nn.Module, precision: str, fused: bool = False) -> Callable[[], object]:
    """One timed unit of ``what`` (``x4``, ``x2`` inference or the x2 training ``step``, Adam ``fused`` or
    not) on ``net``."""
    dtype = {'fp32': torch.float32, 'bf16': torch.bfloat16}[precision]
    autocast = torch.autocast('cpu', dtype=dtype, enabled=dtype != torch.float32)
    if what in FIGURE_INPUT:
        w, h = FIGURE_INPUT[what]
        x = torch.rand(1, 3, h, w)
        net.eval()

        def infer():
            with torch.inference_mode(), autocast:
                return net(x)
        return infer
    net.train()
    optimizer = torch.optim.Adam(net.parameters(), lr=5e-4, fused=fused)
    lq, gt = torch.rand(16, 3, 64, 64), torch.rand(16, 3, 128, 128)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            out = net(lq)
        F.l1_loss(out.float(), gt).backward()
        optimizer.step()
    return step


def speed_figure(what: str, precision: str, compile_model: bool, repeats: int, warmup: int) -> dict:
    """One speed figure in this process: ``{'label', 'seconds', 'peak_rss_mb'}``."""
    from .archs import asid

    base = reset_peak_rss()
    fused = what == 'step-fused'  # `optim_g: {type: Adam, fused: true}` in an option file
    kind = 'step' if fused else what
    torch.manual_seed(0)
    net = asid(FIGURE_SCALE[kind])
    if kind == 'step':
        precision = 'fp32'
        label = f'training step ASID x2, batch 16, 64x64 LR, fp32, Adam{"(fused=True)" if fused else ""}'
    else:
        net = torch.compile(net, dynamic=False) if compile_model else net
        (w, h), scale = FIGURE_INPUT[kind], FIGURE_SCALE[kind]
        label = (f'inference ASID x{scale} {w}x{h} -> {w * scale}x{h * scale} {precision}'
                 f'{" compiled" if compile_model else ""}')
    seconds = _median_time(_figure_workload(kind, net, precision, fused), repeats, warmup)
    return {'label': label, 'seconds': seconds, 'peak_rss_mb': (peak_rss_since_reset() - base) / 2**20}


# ----------------------------------------------------------------------------------------------
# The reference, timed beside the package in one process
# ----------------------------------------------------------------------------------------------
REFERENCE_MATCH_TOLERANCE = 1e-4  # float32: the two implementations differ by rounding only


class _Registry:
    """Stand-in for neosr's ARCH_REGISTRY: ``register()`` returns the object unchanged."""

    def register(self, obj=None):
        return obj if obj is not None else (lambda o: o)


def load_reference(path: Path, scale: int) -> nn.Module:
    """neosr's ``neosr/archs/asid_arch.py`` (a file of a neosr checkout, given by the user), imported on its
    own with stand-ins for neosr's registry and option parser, built as ``asid(scale, pe=True,
    flash_attn=False)``: the authors' architecture. Its output is checked against this package's on the
    same weights before any timing."""
    import importlib.util
    import types

    from .archs import asid
    from .archs.asid_arch import state_dict_to_reference

    path = Path(path)
    stubs = {'neosr': None, 'neosr.archs': None, 'neosr.utils': None,
             'neosr.archs.arch_util': {'net_opt': lambda: (scale, False)},
             'neosr.utils.registry': {'ARCH_REGISTRY': _Registry()}}
    for name, attrs in stubs.items():
        module = sys.modules.setdefault(name, types.ModuleType(name))
        for key, value in (attrs or {}).items():
            setattr(module, key, value)
    spec = importlib.util.spec_from_file_location('asid_reference', path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        ref = module.asid(scale=scale, pe=True, flash_attn=False)
    except Exception as err:  # noqa: BLE001  (a user-given file: say what went wrong, briefly)
        raise SystemExit(f'asid-bench: --reference {path} did not build neosr\'s asid(scale={scale}, pe=True, '
                         f'flash_attn=False): {type(err).__name__}: {err}') from None
    ours = asid(scale).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(0.02 * torch.randn_like(p))
    ref.load_state_dict(state_dict_to_reference(ours.state_dict()))
    ref.eval()
    x = torch.rand(1, 3, 24, 32)
    with torch.no_grad():
        diff = (ref(x) - ours(x)).abs().max().item()
    if diff > REFERENCE_MATCH_TOLERANCE:
        raise SystemExit(f'asid-bench: --reference {path} is not the same network (max abs difference {diff:.1e})')
    return ref


def interleaved_times(runs: Dict[str, Callable[[], object]], rounds: int, warmup: int) -> Dict[str, List[float]]:
    """Each function of ``runs`` in turn, ``warmup`` untimed rounds then ``rounds`` timed ones: the times
    per name. Interleaving gives every contender the same machine state (load, caches, heap)."""
    times: Dict[str, List[float]] = {name: [] for name in runs}
    for i in range(warmup + rounds):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def interleaved_figure(what: str, reference: Path, precision: str, rounds: int, warmup: int) -> dict:
    """The package and the reference timed in turn in this one process: ``rounds`` (package, reference)
    pairs after ``warmup`` untimed pairs. Both see the same process settings (malloc, threads)."""
    from .archs import asid

    scale = FIGURE_SCALE[what]
    torch.manual_seed(0)
    runs = {'package': _figure_workload(what, asid(scale), precision),
            'reference': _figure_workload(what, load_reference(reference, scale), precision)}
    times = interleaved_times(runs, rounds, warmup)
    ratios = [r / p for p, r in zip(times['package'], times['reference'])]
    return {'label': f'{FIGURE_LABEL[what]} {precision}', 'package_s': statistics.median(times['package']),
            'reference_s': statistics.median(times['reference']), 'ratio_median': statistics.median(ratios),
            'ratio_min': min(ratios), 'ratio_max': max(ratios)}


def reference_alone(what: str, reference: Path, repeats: int, warmup: int) -> dict:
    """The reference on its own (run in a process without the package's malloc setting)."""
    torch.manual_seed(0)
    fn = _figure_workload(what, load_reference(reference, FIGURE_SCALE[what]), 'fp32')
    return {'label': FIGURE_LABEL[what], 'seconds': _median_time(fn, repeats, warmup)}


REFERENCE_HINT = 'give neosr/archs/asid_arch.py of a neosr checkout'


def missing_file(path: Optional[Path], option: str, hint: str) -> bool:
    """True (after saying so on stderr) when the user named a ``path`` that is not a file."""
    if path is None or path.is_file():
        return False
    print(f'asid-bench: {option} {path}: no such file ({hint})', file=sys.stderr)
    return True


def compare(args: argparse.Namespace) -> int:
    """``asid-bench speed --reference FILE``: both framings of the speed-up, each figure in a fresh process."""
    if missing_file(args.reference, '--reference', REFERENCE_HINT):
        return 2
    print(f'asid-bench speed --reference {args.reference} on {machine()}')
    precisions = ['fp32'] + (['bf16'] if args.bf16 else [])
    try:
        for what in args.figures:
            for precision in precisions:
                fig = in_fresh_process(['_interleaved', '--what', what, '--reference', str(args.reference),
                                        '--precision', precision, '--repeats', str(args.repeats), '--warmup',
                                        str(args.warmup)], f'{what} {precision}')
                print(f"{fig['label']}: package {fig['package_s']:.3f} s, reference {fig['reference_s']:.3f} s; "
                      f"speed-up {fig['ratio_median']:.2f}x (rounds {fig['ratio_min']:.2f}-{fig['ratio_max']:.2f}x), "
                      'interleaved in one process')
            plain = in_fresh_process(['_reference_alone', '--what', what, '--reference', str(args.reference),
                                      '--repeats', str(args.repeats), '--warmup', str(args.warmup)],
                                     f'{what} reference alone', env={'ASID_KEEP_FREED_MEMORY': '0'})
            print(f"{plain['label']} fp32: reference alone in a plain process (glibc malloc defaults): "
                  f"{plain['seconds']:.3f} s")
    except RuntimeError as err:
        print(f'asid-bench: {err}', file=sys.stderr)
        return 1
    return 0


def data_share(opt_path: Path, workers: int, iters: int, rounds: int) -> dict:
    """The recipe's data pipeline against the model step alone, in one process (ABAB...): ``rounds`` x
    (``iters`` model steps on one fixed batch, then ``iters`` steps each fed by BasicSR's dataloader
    with ``workers`` workers). Returns the medians and the share of the fed iteration spent waiting."""
    from basicsr.data import build_dataloader, build_dataset

    from .archs import ASID
    from .option_file import read_option_file

    opt = read_option_file(opt_path)  # checked by `data` before this process started
    ds_opt = dict(opt['datasets']['train'], phase='train', scale=opt['scale'], num_worker_per_gpu=workers)
    loader = build_dataloader(build_dataset(ds_opt), ds_opt, num_gpu=0, dist=False, seed=0)
    net_opt = dict(opt['network_g'])
    net_opt.pop('type')
    torch.manual_seed(0)
    net = ASID(**net_opt).train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=5e-4)

    def step(batch: dict) -> None:
        optimizer.zero_grad(set_to_none=True)
        F.l1_loss(net(batch['lq']), batch['gt']).backward()
        optimizer.step()

    batches = iter(loader)
    fixed = next(batches)
    step(fixed)  # warm-up
    alone: List[float] = []
    fed: List[float] = []
    waits: List[float] = []
    for _ in range(rounds):
        for _ in range(iters):
            start = time.perf_counter()
            step(fixed)
            alone.append(time.perf_counter() - start)
        for _ in range(iters):
            start = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                batches = iter(loader)
                batch = next(batches)
            waited = time.perf_counter() - start
            step(batch)
            fed.append(time.perf_counter() - start)
            waits.append(waited)
    return {'workers': workers, 'batch': ds_opt['batch_size_per_gpu'], 'gt_size': ds_opt['gt_size'],
            'step_alone_s': statistics.median(alone), 'iteration_s': statistics.median(fed),
            'wait_s': statistics.median(waits), 'wait_share': sum(waits) / sum(fed),
            'overhead': statistics.median(fed) / statistics.median(alone) - 1}


def data(args: argparse.Namespace) -> int:
    """``asid-bench data``: each worker count in a fresh process."""
    if missing_file(args.opt, '-opt', 'give a training option file, e.g. options/train/ASID/'
                    'train_ASID_SRx2_scratch.yml'):
        return 2
    from .option_file import OptionFileError, read_option_file
    from .options_check import check_training_data

    try:
        problems = check_training_data(read_option_file(args.opt))
    except OptionFileError as err:
        problems = [str(err)]
    if problems:
        print(f'asid-bench: -opt {args.opt}: ' + '; '.join(problems), file=sys.stderr)
        return 2
    print(f'asid-bench data -opt {args.opt} on {machine()}')
    for workers in args.workers:
        try:
            fig = in_fresh_process(['_data_one', '-opt', str(args.opt), '--workers', str(workers), '--iters',
                                    str(args.iters), '--rounds', str(args.rounds)], f'{workers} workers')
        except RuntimeError as err:
            print(f'asid-bench: {err}', file=sys.stderr)
            return 1
        print(f"{workers} workers (batch {fig['batch']}, HR patch {fig['gt_size']}): iteration "
              f"{fig['iteration_s']:.3f} s vs model step alone {fig['step_alone_s']:.3f} s "
              f"({100 * fig['overhead']:+.1f}%); waiting for data {fig['wait_s']:.3f} s "
              f"({100 * fig['wait_share']:.1f}% of the iterations)")
    return 0


def onnx_vs_eager(what: str, rounds: int, warmup: int, folder: Path) -> dict:
    """ASID (released config, random weights) exported by ``asid-export``'s exporter and run by onnxruntime
    (CPU provider, default threads) against PyTorch eager, interleaved in this process."""
    import numpy as np
    import onnxruntime

    from .archs import asid
    from .export import export_onnx

    scale, (w, h) = FIGURE_SCALE[what], FIGURE_INPUT[what]
    torch.manual_seed(0)
    net = asid(scale).eval()
    path = folder / f'asid_{what}.onnx'
    start = time.perf_counter()
    export_onnx(net, path)
    export_s = time.perf_counter() - start
    session = onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    x = torch.rand(1, 3, h, w)
    runs = {'eager': lambda: _no_grad_call(net, x), 'onnxruntime': lambda: session.run(None, {'lr': x.numpy()})[0]}
    diff = float(np.abs(runs['onnxruntime']() - runs['eager']().numpy()).max())
    times = interleaved_times(runs, rounds, warmup)
    return {'label': FIGURE_LABEL[what] + ' fp32', 'eager_s': statistics.median(times['eager']),
            'onnxruntime_s': statistics.median(times['onnxruntime']), 'max_abs_diff': diff, 'export_s': export_s}


def onnx(args: argparse.Namespace) -> int:
    """``asid-bench onnx``: the x4 and x2 figures, each exported to a temporary folder."""
    import tempfile

    print(f'asid-bench onnx on {machine()}')
    with tempfile.TemporaryDirectory() as folder:
        for what in FIGURE_INPUT:
            fig = onnx_vs_eager(what, args.repeats, args.warmup, Path(folder))
            print(f"{fig['label']}: PyTorch eager {fig['eager_s']:.3f} s, onnxruntime {fig['onnxruntime_s']:.3f} s "
                  f"(eager/onnxruntime {fig['eager_s'] / fig['onnxruntime_s']:.2f}x), max abs diff "
                  f"{fig['max_abs_diff']:.1e}; export took {fig['export_s']:.0f} s", flush=True)
    return 0


# how torch.profiler's operator keys (e.g. ``aten::bmm``) fall into the categories: name endings
# of matrix products, and a name part of convolutions
MATMUL_OPS = ('linear_pointwise', 'aten::mm', 'aten::bmm', 'aten::baddbmm', 'aten::addmm', 'aten::addbmm')
CONV_OPS = ('convolution',)  # aten::mkldnn_convolution, aten::convolution_backward, mkldnn::_convolution_pointwise
PROFILE_CATEGORIES = ('matrix products', 'convolutions', 'everything else')


def op_category(name: str) -> str:
    """The profile category of an operator key."""
    if name.endswith(MATMUL_OPS):
        return 'matrix products'
    if any(op in name for op in CONV_OPS):
        return 'convolutions'
    return 'everything else'


def profile_breakdown(fn: Callable[[], object], warmup: int) -> Dict[str, float]:
    """Seconds of operator self time per category for one call of ``fn`` (after ``warmup`` calls)."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(warmup):
        fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    seconds = dict.fromkeys(PROFILE_CATEGORIES, 0.0)
    for event in prof.key_averages():
        seconds[op_category(event.key)] += event.self_cpu_time_total / 1e6
    return seconds


def profile_command(args: argparse.Namespace) -> int:
    """``asid-bench profile``: the time of one figure by category, for the package (and the reference)."""
    from .archs import asid

    if missing_file(args.reference, '--reference', REFERENCE_HINT):
        return 2
    scale = FIGURE_SCALE[args.what]
    torch.manual_seed(0)
    nets = {'package': asid(scale)}
    if args.reference is not None:
        nets['reference'] = load_reference(args.reference, scale)
    print(f'asid-bench profile: {FIGURE_LABEL[args.what]} fp32 on {machine()} (operator self time, one profiled run '
          f'after {args.warmup})')
    for name, net in nets.items():
        seconds = profile_breakdown(_figure_workload(args.what, net, 'fp32'), args.warmup)
        total = sum(seconds.values())
        parts = ', '.join(f'{cat} {sec:.2f} s ({100 * sec / total:.0f}%)' for cat, sec in seconds.items())
        print(f'{name}: {total:.2f} s = {parts}', flush=True)
    return 0


def _no_grad_call(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return net(x)


def speed(args: argparse.Namespace) -> int:
    """Each figure in a fresh process (a kept heap would carry one figure's peak into the next)."""
    print(f'asid-bench speed on {machine()}')
    precisions = ['fp32'] + (['bf16'] if args.bf16 else [])
    jobs = [(what, p) for p in precisions for what in ('x4', 'x2')] + [('step', 'fp32'), ('step-fused', 'fp32')]
    for what, precision in jobs:
        try:
            fig = in_fresh_process(['_speed_one', '--what', what, '--precision', precision, '--repeats',
                                    str(args.repeats), '--warmup', str(args.warmup)]
                                   + (['--compile'] if args.compile else []), f'{what} {precision}')
        except RuntimeError as err:
            print(f'asid-bench: {err}', file=sys.stderr)
            return 1
        quoted = QUOTED_REFERENCE_S[what.split('-')[0]]
        print(f"{fig['label']}: {fig['seconds']:.3f} s, peak {fig['peak_rss_mb']:.0f} MB above start "
              f'(authors\' implementation, quoted from the development machine, not measured here: {quoted} s)')
    for precision in precisions:
        dtype = {'fp32': torch.float32, 'bf16': torch.bfloat16}[precision]
        for line in golden_errors(dtype, args.compile):
            print(f'golden {precision}{" compiled" if args.compile else ""}: {line}')
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='asid-bench', description=__doc__.split('\n\n')[0].replace('``', "'"))
    sub = parser.add_subparsers(dest='command', required=True, metavar='{zoo,speed,data,onnx,profile,seams}')
    p = sub.add_parser('zoo', help='ASID / ASID-D8 / SwinIR-light / Omni-SR comparison')
    p.add_argument('--models', nargs='+', choices=ZOO_MODELS, default=list(ZOO_MODELS))
    p.add_argument('--scales', nargs='+', type=int, default=[2, 3, 4])
    p.add_argument('--sizes', nargs='+', type=parse_size, default=[parse_size(s) for s in DEFAULT_SIZES],
                   help='output sizes WxH (default: 320x180 640x360 1280x720)')
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--warmup', type=int, default=1)
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--precisions', nargs='+', choices=['fp32', 'bf16', 'fp16'],
                   default=['fp32', 'bf16'] if torch.cuda.is_available() else ['fp32'])
    p.add_argument('--checkpoint', nargs='*', default=[], help='MODEL:SCALE=PATH, e.g. ASID:2=net_g_latest.pth')
    p.add_argument('--datasets', type=Path, default=Path('datasets'), help='root of prepared benchmark sets')
    p.add_argument('--sets', nargs='+', default=['Set5', 'Set14', 'B100', 'BSD68', 'Urban100', 'Manga109'])
    p.add_argument('--out', type=Path, default=Path('bench_out'))
    p = sub.add_parser('speed', help='the fast-ASID figures (inference and a training step)')
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--warmup', type=int, default=5,
                   help='untimed runs first: a process\'s first training steps grow its heap (page faults) '
                        'for about five steps; the figures are for the steady state')
    p.add_argument('--compile', action='store_true', help='torch.compile the model first')
    p.add_argument('--bf16', action='store_true', help='also bfloat16 autocast (opt-in: changes float results)')
    p.add_argument('--reference', type=Path, metavar='FILE',
                   help="neosr/archs/asid_arch.py of a neosr checkout (its pe=True, flash_attn=False build is the "
                        "authors' architecture): time it beside the package in one process, interleaved, and alone")
    p.add_argument('--figures', nargs='+', choices=list(FIGURE_SCALE), default=list(FIGURE_SCALE),
                   help='with --reference: which figures (default: all)')
    p = sub.add_parser('seams', help='tiled vs whole-image inference of a checkpoint on one photo')
    p.add_argument('-m', '--model', type=Path, required=True, help='ASID checkpoint')
    p.add_argument('--image', type=Path, help="photo (default: a 512x384 crop of scikit-image's coffee)")
    p.add_argument('--tile', type=int, default=256)
    p.add_argument('--overlap-averaged', type=int, default=16, help="(the previous asid-sr default, 16)")
    p.add_argument('--overlap-blended', type=int, default=32, help="(asid-sr's default, 32)")
    p = sub.add_parser('_speed_one')  # internal: one speed figure in a fresh process
    p.add_argument('--what', choices=SPEED_FIGURES, required=True)
    p.add_argument('--precision', choices=['fp32', 'bf16'], default='fp32')
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--warmup', type=int, default=5)
    p.add_argument('--compile', action='store_true')
    p = sub.add_parser('data', help="the training data pipeline's share of an iteration (an option file's recipe)")
    p.add_argument('-opt', type=Path, required=True, help='training option file (its datasets: train is used)')
    p.add_argument('--workers', nargs='+', type=int, default=[0, 1, 2, 6])
    p.add_argument('--iters', type=int, default=3, help='iterations per phase')
    p.add_argument('--rounds', type=int, default=3, help='alternations of step-alone and fed phases')
    p = sub.add_parser('_data_one')  # internal: one worker count in a fresh process
    p.add_argument('-opt', type=Path, required=True)
    p.add_argument('--workers', type=int, required=True)
    p.add_argument('--iters', type=int, default=3)
    p.add_argument('--rounds', type=int, default=3)
    p = sub.add_parser('onnx', help='onnxruntime vs PyTorch eager on the exported ASID (x4 and x2 figures)')
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--warmup', type=int, default=2)
    p = sub.add_parser('profile', help='where the time of a figure goes: matrix products, convolutions, the rest')
    p.add_argument('--what', choices=list(FIGURE_SCALE), default='step')
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--reference', type=Path, metavar='FILE', help="neosr/archs/asid_arch.py: profile it too")
    p = sub.add_parser('_interleaved')  # internal: package vs reference in one fresh process
    p.add_argument('--what', choices=list(FIGURE_SCALE), required=True)
    p.add_argument('--reference', type=Path, required=True)
    p.add_argument('--precision', choices=['fp32', 'bf16'], default='fp32')
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--warmup', type=int, default=5)
    p = sub.add_parser('_reference_alone')  # internal: the reference in a fresh process
    p.add_argument('--what', choices=list(FIGURE_SCALE), required=True)
    p.add_argument('--reference', type=Path, required=True)
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--warmup', type=int, default=5)
    p = sub.add_parser('_worker')  # internal: one model, scale, size and precision in a fresh process
    p.add_argument('--model', required=True)
    p.add_argument('--scale', type=int, required=True)
    p.add_argument('--size', type=parse_size, required=True)
    p.add_argument('--precision', default='fp32')
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--warmup', type=int, default=1)
    p.add_argument('--device', default='cpu')
    args = parser.parse_args(argv)
    if args.command == '_speed_one':
        print(json.dumps(speed_figure(args.what, args.precision, args.compile, args.repeats, args.warmup)))
        return 0
    if args.command == 'onnx':
        return onnx(args)
    if args.command == 'profile':
        return profile_command(args)
    if args.command == '_data_one':
        print(json.dumps(data_share(args.opt, args.workers, args.iters, args.rounds)))
        return 0
    if args.command == 'data':
        return data(args)
    if args.command == '_interleaved':
        print(json.dumps(interleaved_figure(args.what, args.reference, args.precision, args.repeats, args.warmup)))
        return 0
    if args.command == '_reference_alone':
        print(json.dumps(reference_alone(args.what, args.reference, args.repeats, args.warmup)))
        return 0
    if args.command == '_worker':
        print(json.dumps(measure_worker(args.model, args.scale, args.size, args.precision, args.repeats, args.warmup,
                                        args.device)))
        return 0
    if args.command == 'seams':
        print('\n'.join(seam_figures(args.model, args.image, args.tile, args.overlap_averaged, args.overlap_blended)))
        return 0
    if args.command == 'speed' and args.reference:
        return compare(args)
    return zoo(args) if args.command == 'zoo' else speed(args)


if __name__ == '__main__':
    sys.exit(main())
