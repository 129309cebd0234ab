"""``asid-bench``: the argument parser and the dispatch table (subcommand -> the function that runs it).

    asid-bench zoo     [--models ASID ASID-D8 SwinIR-light Omni-SR] [--scales 2 3 4] [--sizes 1280x720 ...]
                       [--checkpoint ASID:2=path.pth ...] [--datasets DIR] [--out bench_out]
    asid-bench paper   --checkpoint ASID:2=path.pth ... --datasets DIR [--sets Set5 Urban100 ...] [--out DIR]
    asid-bench speed   [--compile] [--precision auto] [--interleaved [--cpu-time]] [--repeats 5] [--warmup 5]
                       [--figures x4 x2 step] [--reference neosr/archs/asid_arch.py]
    asid-bench seams   -m checkpoint.pth [--image photo.png] [--tile PX]
    asid-bench data    -opt options/train/ASID/train_ASID_SRx2_scratch.yml [--workers 0 1 2 6]
    asid-bench onnx    [--repeats 5]
    asid-bench profile [--what step|x4|x2] [--precision fp32|bf16] [--reference neosr/archs/asid_arch.py]

Each subcommand's module says what it measures (``asid_arch/bench/{comparison,paper,speed,seams,data,onnx,
profile}.py``). The subcommands whose names start with ``_`` are internal: one figure in a fresh
process, its result as a JSON line. Only the chosen subcommand's module is imported, after parsing.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

from ..console import command
from .figures import BENCHMARK_SETS, DEFAULT_SIZES, FIGURE_SCALE, SPEED_FIGURES, ZOO_MODELS, parse_size

# subcommand -> (module of asid_arch.bench, function taking the parsed arguments and returning the exit status)
DISPATCH: Dict[str, Tuple[str, str]] = {
    'zoo': ('comparison', 'zoo'),
    'paper': ('paper', 'paper'),
    'speed': ('speed', 'speed'),
    'seams': ('seams', 'seams'),
    'data': ('data', 'data'),
    'onnx': ('onnx', 'onnx'),
    'profile': ('profile', 'profile_command'),
    '_worker': ('comparison', 'worker_command'),
    '_speed_one': ('speed', 'speed_one_command'),
    '_ceiling': ('speed', 'ceiling_command'),
    '_precisions': ('speed', 'precisions_command'),
    '_interleaved': ('speed', 'interleaved_command'),
    '_reference_alone': ('speed', 'reference_alone_command'),
    '_data_one': ('data', 'data_one_command'),
    '_ncnn_alone': ('onnx', 'ncnn_alone_command'),
}
PUBLIC = tuple(name for name in DISPATCH if not name.startswith('_'))
PRECISIONS = ('fp32', 'bf16', 'fp16')
SPEED_PRECISIONS = ('fp32', 'bf16')
SPEED_CHOICES = ('auto', ) + SPEED_PRECISIONS  # auto: utils.asid_precision.resolve_precision
DATASETS_HELP = 'root of the benchmark sets prepared by `asid-prepare bench` ({set}/GTmod{s}, {set}/LRbicx{s})'
CHECKPOINT_HELP = 'MODEL:SCALE=PATH, e.g. ASID:2=net_g_latest.pth (ASID weights decide their own width and IDBs)'


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not a whole number') from None
    if value < 1:
        raise argparse.ArgumentTypeError(f'{value}: must be at least 1')
    return value


def _count(text: str) -> int:
    return 0 if text.strip() == '0' else _positive(text)


def _scale(text: str) -> int:
    if text not in ('2', '3', '4'):
        raise argparse.ArgumentTypeError(f'{text!r}: the scales are 2, 3 and 4')
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand (public and internal); defaults that depend on the machine are
    resolved by the subcommand, so that parsing loads nothing."""
    parser = argparse.ArgumentParser(prog='asid-bench', description='The model-zoo comparison, the paper\'s '
                                     'figures beside measured ones, and the fast-ASID figures, measured on this '
                                     'machine.')
    sub = parser.add_subparsers(dest='command', required=True, metavar='{' + ','.join(PUBLIC) + '}')

    p = sub.add_parser('zoo', help='ASID / ASID-D8 / SwinIR-light / Omni-SR: parameters, MACs, latency, memory, '
                       'PSNR/SSIM of given checkpoints')
    p.add_argument('--models', nargs='+', choices=ZOO_MODELS, default=list(ZOO_MODELS))
    p.add_argument('--scales', nargs='+', type=_scale, default=[2, 3, 4])
    p.add_argument('--sizes', nargs='+', type=parse_size, default=[parse_size(s) for s in DEFAULT_SIZES],
                   help=f'output sizes WxH (default: {" ".join(DEFAULT_SIZES)})')
    p.add_argument('--repeats', type=_positive, default=3)
    p.add_argument('--warmup', type=_count, default=1)
    p.add_argument('--device', help='cpu, cuda, cuda:N (default: cuda where available)')
    p.add_argument('--precisions', nargs='+', choices=PRECISIONS, help='default: fp32 (and bf16 on a GPU)')
    p.add_argument('--checkpoint', nargs='*', default=[], help=CHECKPOINT_HELP)
    p.add_argument('--datasets', type=Path, default=Path('datasets'), help=DATASETS_HELP + ' (default: datasets)')
    p.add_argument('--sets', nargs='+', default=list(BENCHMARK_SETS))
    p.add_argument('--out', type=Path, default=Path('bench_out'))

    p = sub.add_parser('paper', help="measured PSNR/SSIM of checkpoints beside the published figures (reference "
                       'protocol)')
    p.add_argument('--checkpoint', nargs='+', required=True, help=CHECKPOINT_HELP)
    p.add_argument('--datasets', type=Path, required=True, help=DATASETS_HELP)
    p.add_argument('--sets', nargs='+', default=list(BENCHMARK_SETS))
    p.add_argument('--device', help='default: cpu')
    p.add_argument('--out', type=Path, help='also write paper.md, paper.csv and paper_vs_published.png here')

    p = sub.add_parser('speed', help='the fast-ASID figures (inference and a training step)')
    p.add_argument('--repeats', type=_positive, default=5)
    p.add_argument('--warmup', type=_count, default=5,
                   help="untimed runs first: a process's first training steps grow its heap (page faults); the "
                        'figures are for the steady state')
    p.add_argument('--compile', action='store_true',
                   help='torch.compile the model first (inference figures: a frozen network, one compilation per '
                        'input size; the training step stays eager)')
    p.add_argument('--precision', choices=SPEED_CHOICES, default='auto',
                   help='the figures in fp32 and in this precision: auto (default) is bf16 on CPUs with native bf16 '
                   '(AVX512-BF16, AMX, Arm BF16), fp32 elsewhere; bf16 runs inference on a bf16 copy of the network '
                   'and the training step under bf16 autocast (train: amp: bf16)')
    p.add_argument('--interleaved', action='store_true',
                   help='each figure in fp32 and --precision timed in turn in one process, with the matrix-product '
                   'ceilings: medians, per-round speed-ups and ceiling shares (the framing for a shared machine)')
    p.add_argument('--cpu-time', action='store_true',
                   help='with --interleaved: time by the CPU time of the measuring process (its work, not waiting '
                   'for a shared machine; with OMP_NUM_THREADS=1 the time of its one computing thread)')
    p.add_argument('--reference', type=Path, metavar='FILE',
                   help="neosr/archs/asid_arch.py of a neosr checkout (its pe=True, flash_attn=False build is the "
                        "authors' architecture): time it beside the package in one process, interleaved, and alone")
    p.add_argument('--figures', nargs='+', choices=list(FIGURE_SCALE), default=list(FIGURE_SCALE),
                   help='which figures (default: all; in a plain run `step` also times the fused Adam step)')

    p = sub.add_parser('seams', help='tiled vs whole-image inference of a checkpoint on one photo')
    p.add_argument('-m', '--model', type=Path, required=True, help='ASID checkpoint')
    p.add_argument('--image', type=Path, help="photo (default: a 512x384 crop of scikit-image's coffee)")
    p.add_argument('--tile', type=_positive, metavar='PX', help="LR tile size (default: the reference protocol's)")
    p.add_argument('--overlap-averaged', type=_count, metavar='PX',
                   help="overlap of the averaged tiles (default: the reference protocol's)")
    p.add_argument('--overlap-blended', type=_count, metavar='PX',
                   help="overlap of the blended tiles (default: asid-sr's)")

    p = sub.add_parser('data', help="the training data pipeline's share of an iteration (an option file's recipe)")
    p.add_argument('-opt', type=Path, required=True, help='training option file (its datasets: train is used)')
    p.add_argument('--workers', nargs='+', type=_count, default=[0, 1, 2, 6])
    p.add_argument('--iters', type=_positive, default=3, help='iterations per phase')
    p.add_argument('--rounds', type=_positive, default=3, help='alternations of step-alone and fed phases')

    p = sub.add_parser('onnx', help='onnxruntime, OpenCV DNN and NCNN vs PyTorch eager on the exported ASID (x4, x2)')
    p.add_argument('--repeats', type=_positive, default=5, help='interleaved rounds (the median is printed)')
    p.add_argument('--warmup', type=_count, default=2, help='untimed rounds first')

    p = sub.add_parser('profile', help='where the time of a figure goes: matrix products, convolutions, the rest')
    p.add_argument('--what', choices=list(FIGURE_SCALE), default='step')
    p.add_argument('--warmup', type=_count, default=3)
    p.add_argument('--reference', type=Path, metavar='FILE', help="neosr/archs/asid_arch.py: profile it too")
    p.add_argument('--precision', choices=SPEED_PRECISIONS, default='fp32',
                   help='fp32 (default) or bf16 (inference on a bf16 copy of the network, the step under autocast)')

    # internal: one figure in a fresh process
    p = sub.add_parser('_worker')
    p.add_argument('--model', choices=ZOO_MODELS, required=True)
    p.add_argument('--scale', type=_scale, required=True)
    p.add_argument('--size', type=parse_size, required=True)
    p.add_argument('--precision', choices=PRECISIONS, default='fp32')
    p.add_argument('--repeats', type=_positive, default=3)
    p.add_argument('--warmup', type=_count, default=1)
    p.add_argument('--device', default='cpu')
    p = sub.add_parser('_speed_one')
    p.add_argument('--what', choices=SPEED_FIGURES, required=True)
    p.add_argument('--precision', choices=SPEED_PRECISIONS, default='fp32')
    p.add_argument('--repeats', type=_positive, default=5)
    p.add_argument('--warmup', type=_count, default=5)
    p.add_argument('--compile', action='store_true')
    p = sub.add_parser('_precisions')
    p.add_argument('--what', choices=list(FIGURE_SCALE), required=True)
    p.add_argument('--precisions', nargs='+', choices=SPEED_PRECISIONS, required=True)
    p.add_argument('--repeats', type=_positive, default=5)
    p.add_argument('--warmup', type=_count, default=2)
    p.add_argument('--cpu-time', action='store_true')
    p = sub.add_parser('_ceiling')
    p.add_argument('--precision', choices=SPEED_PRECISIONS, default='fp32')
    p.add_argument('--warmup', type=_count, default=3)
    for name in ('_interleaved', '_reference_alone'):
        p = sub.add_parser(name)
        p.add_argument('--what', choices=list(FIGURE_SCALE), required=True)
        p.add_argument('--reference', type=Path, required=True)
        p.add_argument('--repeats', type=_positive, default=5)
        p.add_argument('--warmup', type=_count, default=5)
        if name == '_interleaved':
            p.add_argument('--precision', choices=SPEED_PRECISIONS, default='fp32')
    p = sub.add_parser('_ncnn_alone')
    p.add_argument('--param', type=Path, required=True)
    p.add_argument('--size', type=parse_size, required=True)
    p.add_argument('--repeats', type=_positive, default=5)
    p.add_argument('--warmup', type=_count, default=2)
    p = sub.add_parser('_data_one')
    p.add_argument('-opt', type=Path, required=True)
    p.add_argument('--workers', type=_count, required=True)
    p.add_argument('--iters', type=_positive, default=3)
    p.add_argument('--rounds', type=_positive, default=3)
    return parser


@command('asid-bench')
def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse, then run the chosen subcommand; its exit status (0 done, 1 some work failed, 2 unusable arguments,
    model or file)."""
    args = build_parser().parse_args(argv)
    from ..cpu_settings import tune_cpu

    # as every command that runs a network (the figures are measured with it; before torch); NCNN alone runs with
    # OpenMP's default waiting, as in the applications that host it
    args.tuned = tune_cpu(passive_wait=args.command != '_ncnn_alone')  # what it set (`onnx` unsets it for NCNN)
    from ..utils.asid_compat import install_torchvision_alias

    install_torchvision_alias()  # before any subcommand imports BasicSR (1.4.2 needs it with this torchvision)
    module, function = DISPATCH[args.command]
    return getattr(importlib.import_module(f'{__package__}.{module}'), function)(args)


if __name__ == '__main__':
    sys.exit(main())
