"""``asid-bench zoo``: ASID, ASID-D8, SwinIR-light and Omni-SR side by side on this machine.

Parameters; MACs for a 1280x720 output (``torch.utils.flop_counter``; the paper's Table 2 convention);
latency (median of repeated runs after warm-up) and peak memory at several output sizes, each model,
scale, size and precision in its own process (CPU: peak RSS above the resident size before the run; CUDA:
``max_memory_allocated``); PSNR/SSIM (Y, border = scale, whole images, BasicSR's metrics: what BasicSR's
validation reports) on prepared benchmark sets for every model given a checkpoint. Writes
``results.json``, ``results.csv``, ``results.md`` and the plots ``psnr_vs_params.png`` (measured points
and the published ones, marked apart) and ``latency_vs_resolution.png``. ``asid-bench paper`` sets
measured figures beside the published ones with the reference protocol.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import torch
from torch import nn

from ..console import EXIT_OK, EXIT_USAGE, progress_bar
from ..utils.asid_precision import torch_dtype
from .common import in_fresh_process, machine, median_time, outputs_problem, print_json, write_output
from .figures import MACS_OUTPUT, PLOT_SET
from .memory import peak_rss_since_reset, reset_peak_rss
from .networks import build_model, param_count

ZOO_OUTPUTS = ('results.json', 'results.csv', 'results.md', 'psnr_vs_params.png', 'latency_vs_resolution.png')
MAX_OUTPUT_PIXELS = 16_000_000  # of a --sizes entry: each is run whole (a 3840x2160 output is 8.3 M)

CSV_FIELDS = ['kind', 'model', 'scale', 'params', 'gmacs_720p', 'device', 'precision', 'output', 'output_mpix',
              'latency_s', 'peak_mem_mb', 'checkpoint', 'dataset', 'psnr', 'ssim']


def count_macs(name: str, scale: int, out_w: int, out_h: int) -> float:
    """MACs (multiply-accumulates) of one forward pass for an output of about ``out_w x out_h``.

    The architecture's count, as the papers give it: ASID's folded attention projection (which
    executes fewer MACs) is unfolded for counting.
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


def measure_worker(name: str, scale: int, size: Tuple[int, int], precision: str, repeats: int, warmup: int,
                   device: str) -> dict:
    """Latency and peak memory of one model, scale, output size and precision (run in a fresh process)."""
    dev = torch.device(device)
    net = build_model(name, scale).eval().to(dev)
    dtype = torch_dtype(precision)
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
        latency = median_time(run, repeats, warmup)
    peak = (torch.cuda.max_memory_allocated() if dev.type == 'cuda' else peak_rss_since_reset()) - base
    return {'model': name, 'scale': scale, 'device': device, 'precision': precision, 'output': f'{out_w}x{out_h}',
            'output_mpix': out_w * out_h / 1e6, 'latency_s': latency, 'peak_mem_mb': peak / 2**20}


def worker_command(args: argparse.Namespace) -> int:
    """``asid-bench _worker`` (internal): one latency/memory figure, as a JSON line."""
    return print_json(measure_worker(args.model, args.scale, args.size, args.precision, args.repeats, args.warmup,
                                     args.device))


def run_worker(name: str, scale: int, args: argparse.Namespace) -> List[dict]:
    """Each output size and precision in a fresh process (a smaller size run first would hide the peak
    of a larger one)."""
    return [in_fresh_process(['_worker', '--model', name, '--scale', str(scale), '--size', f'{w}x{h}', '--precision',
                              precision, '--repeats', str(args.repeats), '--warmup', str(args.warmup), '--device',
                              args.device], f'{name} x{scale} {w}x{h} {precision}')
            for precision in args.precisions for w, h in args.sizes]


def evaluate_psnr(net: nn.Module, scale: int, datasets: Path, names: Sequence[str], device: str) -> Dict[str, tuple]:
    """Mean Y-PSNR/SSIM (border = scale, BasicSR's metrics, whole images) per prepared data set
    ``{datasets}/{name}/GTmod{s}, LRbicx{s}``; sets not prepared are left out."""
    import numpy as np

    from basicsr.metrics import calculate_psnr, calculate_ssim

    from ..evaluation import paired_images, super_resolve
    from .networks import prepared_pair

    results = {}
    net = net.eval().to(device)
    for name in names:
        pair = prepared_pair(datasets, name, scale)
        if pair is None:
            continue
        psnr, ssim = [], []
        for _, gt, lq in paired_images(*pair):
            sr = super_resolve(net, lq, device)
            psnr.append(calculate_psnr(sr, gt, scale, input_order='HWC', test_y_channel=True))
            ssim.append(calculate_ssim(sr, gt, scale, input_order='HWC', test_y_channel=True))
        if psnr:
            results[name] = (float(np.mean(psnr)), float(np.mean(ssim)))
    return results


def write_zoo_outputs(out: Path, static: List[dict], timing: List[dict], quality: List[dict]) -> None:
    """results.json (raw, first: nothing is lost if formatting fails), results.csv, results.md, the plots."""
    from . import plots

    out.mkdir(parents=True, exist_ok=True)
    described = machine()
    write_output(out / 'results.json', json.dumps({'machine': described, 'models': static, 'timing': timing,
                                                   'quality': quality}, indent=1))
    table = io.StringIO(newline='')
    writer = csv.DictWriter(table, fieldnames=CSV_FIELDS)
    writer.writeheader()
    for kind, rows in (('model', static), ('timing', timing), ('quality', quality)):
        for row in rows:
            writer.writerow({'kind': kind, **row})
    write_output(out / 'results.csv', table.getvalue())
    sizes = sorted({r['output'] for r in timing}, key=lambda s: math.prod(int(v) for v in s.split('x')))
    configs = sorted({(r['device'], r['precision']) for r in timing})
    lines = [f'Measured on: {described}', '']
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
    write_output(out / 'results.md', '\n'.join(lines) + '\n')
    measured = [{'model': q['model'], 'scale': q['scale'], 'params': q['params'], 'psnr': q['psnr'],
                 'label': f"{q['model']} (measured: {q['checkpoint']})"} for q in quality if q['dataset'] == PLOT_SET]
    plots.psnr_vs_params(out / 'psnr_vs_params.png', measured, sorted({r['scale'] for r in static}))
    plots.latency_vs_resolution(out / 'latency_vs_resolution.png', timing, described)


def size_problem(sizes: Sequence[Tuple[int, int]], scales: Sequence[int]) -> str:
    """Why an output size of ``--sizes`` cannot be measured at one of ``scales`` ('' when all can): its input
    would be empty, or it is above :data:`MAX_OUTPUT_PIXELS` (the memory ASID would need is said)."""
    from ..inference import DEFAULT_NUM_FEAT, network_bytes

    for w, h in sizes:
        for s in sorted(scales, reverse=True):
            if w < s or h < s:
                return (f'--sizes {w}x{h}: at x{s} the input would be {w // s}x{h // s} px (an output size is at least '
                        f'{s}x{s} at x{s})')
        if w * h > MAX_OUTPUT_PIXELS:
            s = min(scales)
            need = network_bytes(DEFAULT_NUM_FEAT, s, 'fp32', (w // s) * (h // s))
            return (f'--sizes {w}x{h}: {w * h / 1e6:.0f} M output pixels, above the limit of '
                    f'{MAX_OUTPUT_PIXELS / 1e6:.0f} M (each size runs whole: ASID at x{s} would need about '
                    f'{need / 1e9:.0f} GB)')
    return ''


def zoo(args: argparse.Namespace) -> int:
    """``asid-bench zoo``: the sizes, then every checkpoint are checked before any measurement starts."""
    from .networks import checked_networks

    problem = size_problem(args.sizes, args.scales)
    if problem:
        print(f'asid-bench: {problem}', file=sys.stderr)
        return EXIT_USAGE

    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    args.device = device
    args.precisions = args.precisions or (['fp32', 'bf16'] if device.startswith('cuda') else ['fp32'])
    problem = outputs_problem(args.out, ZOO_OUTPUTS)
    if problem:
        print(f'asid-bench: error: {problem}', file=sys.stderr)
        return EXIT_USAGE
    checked = checked_networks(args.checkpoint, args.datasets, args.sets, need_sets=False)
    if checked is None:
        return EXIT_USAGE
    checkpoints, nets = checked
    combos = [(m, s) for m in args.models for s in args.scales]
    static, timing, quality = [], [], []
    bar = progress_bar(total=len(combos) * 2 + len(checkpoints), desc='asid-bench', unit='step')
    for model, scale in combos:
        bar.set_postfix_str(f'{model} x{scale}: params, MACs')
        static.append({'model': model, 'scale': scale, 'params': param_count(model, scale),
                       'gmacs_720p': count_macs(model, scale, *MACS_OUTPUT) / 1e9})
        bar.update()
    for model, scale in combos:
        bar.set_postfix_str(f'{model} x{scale}: latency, memory')
        timing += run_worker(model, scale, args)
        bar.update()
    for (model, scale), net in nets.items():
        bar.set_postfix_str(f'{model} x{scale}: PSNR')
        path = checkpoints[(model, scale)]
        for dataset, (psnr, ssim) in evaluate_psnr(net, scale, args.datasets, args.sets, device).items():
            quality.append({'model': model, 'scale': scale, 'checkpoint': path.name, 'dataset': dataset,
                            'params': sum(p.numel() for p in net.parameters()), 'psnr': psnr, 'ssim': ssim})
        bar.update()
    bar.close()
    write_zoo_outputs(args.out, static, timing, quality)
    print((args.out / 'results.md').read_text())
    print(f'asid-bench: wrote {args.out}/results.md, results.csv, psnr_vs_params.png, latency_vs_resolution.png')
    return EXIT_OK
