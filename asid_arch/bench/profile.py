"""``asid-bench profile``: where one figure's time goes (``torch.profiler`` operator self times): matrix
products, convolutions, and everything else (element-wise operations, copies, normalisations, softmax,
reductions); with ``--reference``, the reference's figure in the same process beside it."""
from __future__ import annotations

import argparse
from typing import Callable, Dict

from ..console import EXIT_OK, EXIT_USAGE
from .common import machine, missing_file
from .figures import FIGURE_LABEL, FIGURE_SCALE
from .reference import REFERENCE_HINT

# how torch.profiler's operator keys (e.g. ``aten::bmm``) fall into the categories: name endings
# of matrix products, and a name part of convolutions
MATMUL_OPS = ('linear_pointwise', 'aten::mm', 'aten::bmm', 'aten::baddbmm', 'aten::addmm', 'aten::addbmm')
CONV_OPS = ('convolution',)  # aten::mkldnn_convolution, aten::convolution_backward, mkldnn::_convolution_pointwise
PROFILE_CATEGORIES = ('matrix products', 'convolutions', 'everything else')
MICROSECONDS = 1e6


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
        seconds[op_category(event.key)] += event.self_cpu_time_total / MICROSECONDS
    return seconds


def profile_command(args: argparse.Namespace) -> int:
    """``asid-bench profile``: the time of one figure by category, for the package (and the reference)."""
    if missing_file(args.reference, '--reference', REFERENCE_HINT):
        return EXIT_USAGE
    import torch

    from ..archs.asid_arch import asid
    from .reference import load_reference
    from .speed import figure_workload

    scale = FIGURE_SCALE[args.what]
    torch.manual_seed(0)
    nets = {'package': asid(scale)}
    if args.reference is not None:
        nets['reference'] = load_reference(args.reference, scale)
    print(f'asid-bench profile: {FIGURE_LABEL[args.what]} {args.precision} on {machine()} (operator self time, one '
          f'profiled run after {args.warmup})')
    for name, net in nets.items():
        seconds = profile_breakdown(figure_workload(args.what, net, args.precision), args.warmup)
        total = sum(seconds.values())
        parts = ', '.join(f'{cat} {sec:.2f} s ({100 * sec / total:.0f}%)' for cat, sec in seconds.items())
        print(f'{name}: {total:.2f} s = {parts}', flush=True)
    return EXIT_OK
