"""``asid-bench speed``: the fast-ASID figures, each in a fresh process.

ASID x4 320x180 -> 1280x720 and ASID x2 640x360 inference, one training step (batch 16, 64x64 LR
patches, x2, forward + backward + Adam, plain and fused), and the float32 (and bf16) error against
the float64 golden files of the folder the environment variable ``ASID_SHARED`` names. With ``--reference``
(neosr's ASID file, whose ``pe=True, flash_attn=False`` build is the authors' architecture): the
package and the reference interleaved in one process, and the reference alone in a plain process.
``--figures`` picks the figures; ``--compile`` compiles the inference figures' network frozen (its first call,
which compiles, is timed apart). No figure of another machine is quoted: a speed-up is only ever measured here,
in one process.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, List

import torch
import torch.nn.functional as F
from torch import nn

from ..console import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from ..utils.asid_precision import FULL_PRECISION, casts_network, resolve_precision, torch_dtype
from .common import in_fresh_process, interleaved_times, machine, median_time, missing_file, print_json, shared_folder
from .figures import FIGURE_INPUT, FIGURE_LABEL, FIGURE_SCALE, STEP_BATCH, STEP_LR_PATCH
from .memory import peak_rss_since_reset, reset_peak_rss
from .reference import REFERENCE_HINT, load_reference

STEP_LR = 5e-4  # the training recipe's learning rate (the step's time does not depend on it)
PLAIN_PROCESS_ENV = {'ASID_KEEP_FREED_MEMORY': '0'}  # the reference alone: glibc malloc defaults
CPU = torch.device('cpu')
CEILING_SIDE = 1024  # square matrix products of this side give the matrix-product ceiling
CEILING_REPEATS = 20


def figure_workload(what: str, net: nn.Module, precision: str, fused: bool = False) -> Callable[[], object]:
    """One timed unit of ``what`` (``x4``, ``x2`` inference or the x2 training ``step``, Adam ``fused`` or
    not) on ``net``."""
    dtype = torch_dtype(precision)
    cast = what in FIGURE_INPUT and casts_network(precision, CPU)  # inference as asid-sr runs it
    autocast = torch.autocast('cpu', dtype=dtype, enabled=not cast and dtype != torch.float32)
    if what in FIGURE_INPUT:
        w, h = FIGURE_INPUT[what]
        x = torch.rand(1, 3, h, w, dtype=dtype if cast else torch.float32)
        net.eval().to(x.dtype)

        def infer():
            with torch.inference_mode(), autocast:
                return net(x)
        return infer
    net.train()
    optimizer = torch.optim.Adam(net.parameters(), lr=STEP_LR, fused=fused)
    scale = FIGURE_SCALE[what]
    lq = torch.rand(STEP_BATCH, 3, STEP_LR_PATCH, STEP_LR_PATCH)
    gt = torch.rand(STEP_BATCH, 3, STEP_LR_PATCH * scale, STEP_LR_PATCH * scale)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            out = net(lq)
        F.l1_loss(out.float(), gt).backward()
        optimizer.step()
    return step


class FrozenCompiled(nn.Module):
    """``torch.compile(net, dynamic=False)`` called with inductor's freezing on, for this model's calls only: at
    inference the weights become constants, so inductor folds what depends only on them and oneDNN gets its
    weights prepacked. One compilation per input size, at its first call. (``torch.compile``'s
    ``options={'freezing': True}`` gave no frozen graph in torch 2.14.1: no faster than an unfrozen compile.)"""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.compiled = torch.compile(net, dynamic=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch._inductor.config as inductor_config

        with inductor_config.patch(freezing=True):
            return self.compiled(x)


def speed_figure(what: str, precision: str, compile_model: bool, repeats: int, warmup: int) -> dict:
    """One speed figure in this process: ``{'label', 'seconds', 'peak_rss_mb'}``."""
    from ..archs.asid_arch import asid

    base = reset_peak_rss()
    fused = what == 'step-fused'  # `optim_g: {type: Adam, fused: true}` in an option file
    kind = 'step' if fused else what
    torch.manual_seed(0)
    net = asid(FIGURE_SCALE[kind])
    if kind == 'step':
        amp = '' if precision == FULL_PRECISION else ' (autocast)'
        label = (f'training step ASID x2, batch {STEP_BATCH}, {STEP_LR_PATCH}x{STEP_LR_PATCH} LR, {precision}{amp}, '
                 f'Adam{"(fused=True)" if fused else ""}')
    else:
        net = FrozenCompiled(net) if compile_model else net
        (w, h), scale = FIGURE_INPUT[kind], FIGURE_SCALE[kind]
        label = (f'inference ASID x{scale} {w}x{h} -> {w * scale}x{h * scale} {precision}'
                 f'{" compiled" if compile_model else ""}')
    workload = figure_workload(kind, net, precision, fused)
    figure = {'label': label}
    if compile_model and kind != 'step':
        start = time.perf_counter()
        workload()  # compiles
        figure['compile_seconds'] = time.perf_counter() - start
    figure['seconds'] = median_time(workload, repeats, warmup)
    figure['peak_rss_mb'] = (peak_rss_since_reset() - base) / 2**20
    return figure


def executed_gflop(what: str) -> float:
    """GFLOP (2 per multiply-accumulate) that the inference figure ``what`` executes: counted on the meta device,
    with the folded attention projection as it runs (``asid-bench zoo`` counts the architecture's, unfolded)."""
    from torch.utils.flop_counter import FlopCounterMode

    from ..archs.asid_arch import asid

    w, h = FIGURE_INPUT[what]
    with torch.device('meta'):
        net, x = asid(FIGURE_SCALE[what]), torch.empty(1, 3, h, w)
        with FlopCounterMode(display=False) as counter:
            net(x)
    return counter.get_total_flops() / 1e9


def matmul_ceiling(precision: str, repeats: int, warmup: int) -> dict:
    """The matrix-product ceiling of this machine in ``precision``: GFLOP/s of square products of side
    :data:`CEILING_SIDE` (the best case of the kernels the network's products run on)."""
    a = torch.rand(CEILING_SIDE, CEILING_SIDE, dtype=torch_dtype(precision))
    b = torch.rand(CEILING_SIDE, CEILING_SIDE, dtype=a.dtype)
    seconds = median_time(lambda: torch.mm(a, b), repeats, warmup)
    return {'precision': precision, 'gflops': 2 * CEILING_SIDE**3 / seconds / 1e9}


def golden_errors(dtype: torch.dtype, compile_model: bool) -> List[str]:
    """Max abs difference to each float64 golden output of ``$ASID_SHARED/golden`` when running in ``dtype``."""
    from ..archs.asid_arch import ASID
    from ..utils.asid_tiling import tile_forward

    shared = shared_folder()
    if shared is None:
        return ['(golden files not compared: set ASID_SHARED to the reference-data folder)']
    lines = []
    for path in sorted((shared / 'golden').glob('asid*.pt')):
        g = torch.load(path, weights_only=True)
        net = ASID(upscale=g['scale'], num_feat=g['num_feat'], num_blocks=g['num_blocks']).eval()
        net.load_state_dict(g['state_dict'])
        if compile_model:  # a fresh, static-shape compile per file (dynamic recompiles mis-crop; see README)
            torch._dynamo.reset()
        cast = dtype == torch.bfloat16  # a bf16 copy of the network, as asid-sr runs it on the CPU
        net.to(dtype if cast else torch.float32)
        run = FrozenCompiled(net) if compile_model else net
        x = g['input'].to(dtype if cast else torch.float32)
        autocast = torch.autocast('cpu', dtype=dtype, enabled=not cast and dtype != torch.float32)
        with torch.inference_mode(), autocast:
            out = tile_forward(run, x, g['scale'], g['tile'], g['tile_overlap']) if 'tile' in g else run(x)
        lines.append(f'{path.name}: max abs diff {(out.double() - g["output"]).abs().max().item():.2e}')
    return lines or [f'(no golden files asid*.pt in {shared / "golden"})']


def interleaved_figure(what: str, reference: Path, precision: str, rounds: int, warmup: int) -> dict:
    """The package and the reference timed in turn in this one process: ``rounds`` (package, reference)
    pairs after ``warmup`` untimed pairs. Both see the same process settings (malloc, threads)."""
    from ..archs.asid_arch import asid

    scale = FIGURE_SCALE[what]
    torch.manual_seed(0)
    runs = {'package': figure_workload(what, asid(scale), precision),
            'reference': figure_workload(what, load_reference(reference, scale), precision)}
    times = interleaved_times(runs, rounds, warmup)
    ratios = [r / p for p, r in zip(times['package'], times['reference'])]
    return {'label': f'{FIGURE_LABEL[what]} {precision}', 'package_s': statistics.median(times['package']),
            'reference_s': statistics.median(times['reference']), 'ratio_median': statistics.median(ratios),
            'ratio_min': min(ratios), 'ratio_max': max(ratios)}


def reference_alone(what: str, reference: Path, repeats: int, warmup: int) -> dict:
    """The reference on its own (run in a process without the package's malloc setting)."""
    torch.manual_seed(0)
    fn = figure_workload(what, load_reference(reference, FIGURE_SCALE[what]), 'fp32')
    return {'label': FIGURE_LABEL[what], 'seconds': median_time(fn, repeats, warmup)}


def compare_with_reference(args: argparse.Namespace) -> int:
    """``asid-bench speed --reference FILE``: both framings of the speed-up, each figure in a fresh process."""
    print(f'asid-bench speed --reference {args.reference} on {machine()}')
    precisions = speed_precisions(args.precision)
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
                                     f'{what} reference alone', env=PLAIN_PROCESS_ENV)
            print(f"{plain['label']} fp32: reference alone in a plain process (glibc malloc defaults): "
                  f"{plain['seconds']:.3f} s")
    except RuntimeError as err:
        print(f'asid-bench: {err}', file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def speed_precisions(precision: str) -> List[str]:
    """fp32 (the baseline) and ``precision`` (``auto`` resolved by the one precision rule), each once."""
    chosen = resolve_precision(precision, CPU)
    return [FULL_PRECISION] + ([chosen] if chosen != FULL_PRECISION else [])


def speed(args: argparse.Namespace) -> int:
    """``asid-bench speed``: each figure in a fresh process (a kept heap would carry one figure's peak into
    the next)."""
    args.figures = list(dict.fromkeys(args.figures))  # each figure once, in the order given
    if missing_file(args.reference, '--reference', REFERENCE_HINT):
        return EXIT_USAGE
    if args.cpu_time and (not args.interleaved or args.reference is not None):
        print('asid-bench: --cpu-time times the --interleaved precisions (not with --reference)', file=sys.stderr)
        return EXIT_USAGE
    if args.reference is not None:
        return compare_with_reference(args)
    if args.interleaved:
        return interleaved_precisions(args)
    print(f'asid-bench speed on {machine()}')
    precisions = speed_precisions(args.precision)
    jobs = ([(what, p) for p in precisions for what in args.figures]
            + ([('step-fused', FULL_PRECISION)] if 'step' in args.figures else []))
    try:
        ceilings = {p: in_fresh_process(['_ceiling', '--precision', p], f'{p} matrix products')['gflops']
                    for p in precisions}
    except RuntimeError as err:
        print(f'asid-bench: {err}', file=sys.stderr)
        return EXIT_FAILED
    for p in precisions:
        print(f'{p} matrix-product ceiling ({CEILING_SIDE}x{CEILING_SIDE} products): {ceilings[p]:.0f} GFLOP/s')
    for what, precision in jobs:
        try:
            fig = in_fresh_process(['_speed_one', '--what', what, '--precision', precision, '--repeats',
                                    str(args.repeats), '--warmup', str(args.warmup)]
                                   + (['--compile'] if args.compile else []), f'{what} {precision}')
        except RuntimeError as err:
            print(f'asid-bench: {err}', file=sys.stderr)
            return EXIT_FAILED
        share = ''
        if what in FIGURE_INPUT:
            rate = executed_gflop(what) / fig['seconds']
            share = (f"; {rate:.0f} GFLOP/s executed, {100 * rate / ceilings[precision]:.0f}% of the {precision} "
                     f"matrix-product ceiling ({ceilings[precision]:.0f} GFLOP/s)")
        compiling = f" (first call, compiling: {fig['compile_seconds']:.0f} s)" if 'compile_seconds' in fig else ''
        print(f"{fig['label']}: {fig['seconds']:.3f} s{compiling}, peak {fig['peak_rss_mb']:.0f} MB above start{share}")
    if not any(what in FIGURE_INPUT for what in args.figures):
        return EXIT_OK  # the golden files check inference
    for precision in precisions:
        for line in golden_errors(torch_dtype(precision), args.compile):
            print(f'golden {precision}{" compiled" if args.compile else ""}: {line}')
    return EXIT_OK


def speed_one_command(args: argparse.Namespace) -> int:
    """``asid-bench _speed_one`` (internal): one speed figure, as a JSON line."""
    return print_json(speed_figure(args.what, args.precision, args.compile, args.repeats, args.warmup))


def precisions_interleaved(what: str, precisions: List[str], rounds: int, warmup: int, cpu_time: bool = False) -> dict:
    """``what`` in each of ``precisions`` and the matrix-product ceilings, timed in turn in this one process
    (``rounds`` rounds after ``warmup``; by the process's CPU time if ``cpu_time``, else the wall clock):
    medians, the per-round speed-ups over fp32 and the ceiling shares."""
    from ..archs.asid_arch import asid

    runs = {}
    for precision in precisions:
        torch.manual_seed(0)
        runs[precision] = figure_workload(what, asid(FIGURE_SCALE[what]), precision)
    for precision in precisions:
        a = torch.rand(CEILING_SIDE, CEILING_SIDE, dtype=torch_dtype(precision))
        runs[f'ceiling {precision}'] = (lambda a=a: torch.mm(a, a))
    times = interleaved_times(runs, rounds, warmup, time.process_time if cpu_time else time.perf_counter)
    median = {name: statistics.median(t) for name, t in times.items()}
    result = {'what': what, 'seconds': {p: median[p] for p in precisions},
              'ceiling_gflops': {p: 2 * CEILING_SIDE**3 / median[f'ceiling {p}'] / 1e9 for p in precisions},
              'speedup': {p: sorted(f / t for f, t in zip(times[FULL_PRECISION], times[p])) for p in precisions}}
    if what in FIGURE_INPUT:
        gflop = executed_gflop(what)
        result['share'] = {p: gflop / median[p] / result['ceiling_gflops'][p] for p in precisions}
    return result


def interleaved_precisions(args: argparse.Namespace) -> int:
    """``asid-bench speed --interleaved``: each figure in fp32 and the chosen precision, interleaved in one
    process per figure, with the matrix-product ceilings measured in the same rounds."""
    precisions = speed_precisions(args.precision)
    clock = 'CPU time of the process' if args.cpu_time else 'wall clock'
    print(f'asid-bench speed --interleaved on {machine()}: {" and ".join(precisions)}, {args.repeats} rounds, '
          f'{clock}')
    for what in args.figures:
        try:
            fig = in_fresh_process(['_precisions', '--what', what, '--precisions', *precisions, '--repeats',
                                    str(args.repeats), '--warmup', str(args.warmup)]
                                   + (['--cpu-time'] if args.cpu_time else []), f'{what} precisions')
        except RuntimeError as err:
            print(f'asid-bench: {err}', file=sys.stderr)
            return EXIT_FAILED
        for p in precisions:
            ups = fig['speedup'][p]
            line = (f"{FIGURE_LABEL[what]} {p}: {fig['seconds'][p]:.3f} s, {statistics.median(ups):.2f}x fp32 "
                    f"(rounds {ups[0]:.2f}-{ups[-1]:.2f}x)")
            if 'share' in fig:
                line += (f", {100 * fig['share'][p]:.0f}% of the {p} matrix-product ceiling "
                         f"({fig['ceiling_gflops'][p]:.0f} GFLOP/s)")
            print(line)
    return EXIT_OK


def precisions_command(args: argparse.Namespace) -> int:
    """``asid-bench _precisions`` (internal): one figure in several precisions, interleaved, as a JSON line."""
    return print_json(precisions_interleaved(args.what, args.precisions, args.repeats, args.warmup, args.cpu_time))


def ceiling_command(args: argparse.Namespace) -> int:
    """``asid-bench _ceiling`` (internal): the matrix-product ceiling in one precision, as a JSON line."""
    return print_json(matmul_ceiling(args.precision, CEILING_REPEATS, args.warmup))


def interleaved_command(args: argparse.Namespace) -> int:
    """``asid-bench _interleaved`` (internal): package vs reference in this process, as a JSON line."""
    return print_json(interleaved_figure(args.what, args.reference, args.precision, args.repeats, args.warmup))


def reference_alone_command(args: argparse.Namespace) -> int:
    """``asid-bench _reference_alone`` (internal): the reference alone, as a JSON line."""
    return print_json(reference_alone(args.what, args.reference, args.repeats, args.warmup))
