"""``asid-export``: an ASID checkpoint to ONNX with dynamic batch, height and width, checked by onnxruntime
and OpenCV's DNN module before anything is written; or to an NCNN ``.param`` + ``.bin`` pair checked by ncnn.

    asid-export -m ASID_x4.pth -o asid_x4.onnx [--half] [--check-image photo.png] [--overwrite]
    asid-export -m ASID_x4.pth -o models/asid_x4.param --format ncnn   # also writes models/asid_x4.bin

The graph takes ``lr`` (B, 3, H, W) float32 RGB in [0, 1], any B, H, W >= 1 (sides under 16 px are
edge-padded inside the graph, as the PyTorch network does), and returns ``sr`` (B, 3, H*s, W*s), dims that
shape inference resolves to ``s*height`` and ``s*width``; the graph is simplified by onnxslim. ``--half``
computes in float16 with float32 input and output. After export, onnxruntime runs it on random inputs (a
batch of two, and sides small enough for the edge padding) and on a real image (``--check-image``, default
a scikit-image sample), and so does OpenCV's DNN module, in a child process (a crash there is reported,
never fatal to this command); the largest differences to PyTorch float32 are printed. Above
``--tolerance`` (default 1e-4; 2e-2 with ``--half``) the command fails and writes nothing.

Only a checked graph is written, atomically (a temporary file beside the target, renamed); an existing file
is replaced only with ``--overwrite``. The file is self-contained (weights inside, no ``.onnx.data``
sidecar). Needs onnx, onnxruntime, onnxscript and onnxslim: the project's ``.venv`` has them
(``requirements.txt``); elsewhere ``pip install -e '.[onnx]'`` from a checkout of this repository.

``--format ncnn`` converts through pnnx (:mod:`asid_arch.integrations.ncnn`): input blob ``data`` (3, H, W) RGB in
[0, 1], any H, W >= 1, output blob ``output`` (3, H*s, W*s), the names the ncnn upscalers (Upscayl,
realesrgan-ncnn-vulkan) look up. ncnn runs the same checks (a batch one image at a time: NCNN has no batch
axis); above ``--tolerance`` (default 1e-3; 2e-2 with ``--half``, which stores the weights in float16) nothing
is written. Both files are written atomically, the ``.bin`` last; an existing one needs ``--overwrite``. Needs
pnnx and ncnn (``pip install -e '.[ncnn]'``).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..console import (EXIT_FAILED, EXIT_OK, EXIT_USAGE, command, interrupt_exit_status, interrupt_name, shown,
                       stop_on_signals)
from ..integrations.ncnn import INPUT_BLOB, NCNN_NEEDS, OUTPUT_BLOB, check_ncnn, ncnn_model, ncnn_paths, write_ncnn
from ..integrations.onnx import DEFAULT_OPSET, MIN_OPSET, check_onnx, newest_opset, node_count, onnx_model
from ..utils.asid_files import TEMP_SUFFIX, NotARegularFile, check_readable_file, check_replaceable
from .sr import add_channel_attention_argument
from .usage import UsageError, command_parser

# (batch, height, width): not multiples of 8 or 16; 5x7 and 1x1 edge-padded to 16 px in the graph; 16x40, whose
# ESA map is 1 px high before its upsampling (asid_arch.archs.asid_arch.widen_single_pixel_sides)
RANDOM_CHECK_SHAPES = ((2, 37, 45), (1, 5, 7), (1, 1, 1), (1, 16, 40))
# largest accepted difference to PyTorch float32, by --format and --half
TOLERANCES = {('onnx', 'float32'): 1e-4, ('onnx', 'float16'): 2e-2, ('ncnn', 'float32'): 1e-3,
              ('ncnn', 'float16'): 2e-2}
NEEDS = {'onnx': ('onnx', 'onnxruntime', 'onnxscript', 'onnxslim'), 'ncnn': NCNN_NEEDS}  # the extras, by --format
FORMATS = tuple(NEEDS)

CHECK_IMAGE_MAX_PIXELS = 1_000_000  # of --check-image: run whole by PyTorch and by onnxruntime (about 4.5 GB each)
CHECK_RUNS = 2  # PyTorch's run and onnxruntime's, whose results are compared


def sample_image() -> np.ndarray:
    """A real photo as (1, 3, H, W) float32: a 96 x 120 crop of scikit-image's astronaut."""
    import skimage.data

    return (skimage.data.astronaut()[100:196, 180:300].astype(np.float32) / 255).transpose(2, 0, 1)[None].copy()


def read_check_image(path: Path, net=None, scale: int = 1) -> np.ndarray:
    """``--check-image`` as (1, 3, H, W) float32 RGB; :class:`UsageError` when it is not a readable image or has
    more than :data:`CHECK_IMAGE_MAX_PIXELS` (checked from its header, with the memory that ``net`` at ``scale``
    would need: PyTorch and onnxruntime each run it whole)."""
    from ..image_reader import ImageError, read_picture
    from ..inference import feature_channels, network_bytes

    def need(pixels: int) -> float:
        return CHECK_RUNS * network_bytes(feature_channels(net), scale, 'fp32', pixels)

    try:
        check_readable_file(path, '--check-image')  # a FIFO would block the read, a device never end
        pic = read_picture(path, CHECK_IMAGE_MAX_PIXELS, need=need if net is not None else None,
                           limit_hint=' for --check-image, which PyTorch and onnxruntime each run whole')
    except OSError as err:
        raise UsageError(str(err) if isinstance(err, NotARegularFile) else
                         f'--check-image {shown(path)} cannot be read ({err.strerror or err})') from None
    except ImageError as err:
        raise UsageError(f'--check-image {shown(path)}: {shown(str(err))}') from None
    return (pic.bgr8()[:, :, ::-1].astype(np.float32) / 255).transpose(2, 0, 1)[None].copy()


def check_output(path: Path, overwrite: bool, what: str = '.onnx') -> None:
    """Before any work: ``-o`` (or the ``.bin`` beside it) is not a folder, does not exist (unless
    ``--overwrite``), and the nearest existing folder above it takes a new file (tried: a read-only file system
    refuses even root)."""
    if path.is_dir():
        raise UsageError(f'-o {shown(path)} is a folder: give the {what} file to write')
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise UsageError(f'-o {shown(path)} exists: add --overwrite to replace it')
    try:
        check_replaceable(path, '-o')  # --overwrite replaces a regular file, never /dev/null, a FIFO or a link
    except NotARegularFile as err:
        raise UsageError(str(err)) from None
    folder = path.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise UsageError(f'-o {shown(path)}: {shown(folder)} is not a folder')
    try:
        fd, probe = tempfile.mkstemp(prefix='.asid-export.', suffix=TEMP_SUFFIX, dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise UsageError(f'-o {shown(path)}: cannot write in {shown(folder)} ({err.strerror or err})') from None


def check_arguments(args: argparse.Namespace) -> None:
    """Every argument that can be checked before the model is read; :class:`UsageError` otherwise."""
    if args.tolerance is not None and not (math.isfinite(args.tolerance) and args.tolerance >= 0):
        raise UsageError(f'--tolerance must be a finite number >= 0, got {args.tolerance}')
    if args.format == 'ncnn':
        if args.opset is not None:
            raise UsageError('--opset is for --format onnx; an NCNN file has no opset')
        if args.output.suffix != '.param':
            raise UsageError(f'-o {shown(args.output)}: with --format ncnn, give the NAME.param file to write '
                             '(NAME.bin is written beside it)')
    else:
        args.opset = DEFAULT_OPSET if args.opset is None else args.opset
        newest = newest_opset()
        if not MIN_OPSET <= args.opset <= newest:
            raise UsageError(f'--opset {args.opset}: the exporter writes opsets {MIN_OPSET} to {newest} (the '
                             'newest the installed onnx knows); older ones would need a conversion that fails for '
                             'this network')
    try:
        if args.format == 'ncnn':
            for path, what in zip(ncnn_paths(args.output), ('.param', '.bin')):
                check_output(path, args.overwrite, what)
        else:
            check_output(args.output, args.overwrite)
    except OSError as err:  # a folder on the way that cannot be searched
        raise UsageError(f'-o {shown(args.output)}: {err.strerror or err}') from None


def missing_package(output_format: str = 'onnx') -> Optional[str]:
    """The first package of the extra of ``output_format`` (asid_arch[onnx] or [ncnn]) that does not import,
    else None."""
    for name in NEEDS[output_format]:
        try:
            __import__(name)
        except ImportError:
            return name
    return None


def check_inputs(real: np.ndarray) -> Dict[str, np.ndarray]:
    """The parity-check inputs: random ones (:data:`RANDOM_CHECK_SHAPES`) and the real image, by name."""
    rng = np.random.default_rng(0)
    inputs = {f'{h}x{w}' + (f' (batch {b})' if b > 1 else ''): rng.random((b, 3, h, w), np.float32)
              for b, h, w in RANDOM_CHECK_SHAPES}
    inputs[f'image {real.shape[2]}x{real.shape[3]}'] = real
    return inputs


def build_onnx(net, args: argparse.Namespace,
               inputs: Dict[str, np.ndarray]) -> Tuple[bytes, List[str], Dict[str, Dict[str, float]]]:
    """The ONNX file's bytes, and the report lines of its checks by onnxruntime and OpenCV (OpenCV's failures
    are reported, not raised: the file is still right for onnxruntime)."""
    from ..integrations.opencv import OpenCVCrash, opencv_version, run_opencv_isolated

    model = onnx_model(net, args.opset, half=args.half)
    lines = [f'{node_count(model)} nodes, inputs and outputs float32' + (', float16 inside' if args.half else '')]
    diffs = {'onnxruntime': check_onnx(net, model, inputs)}
    if opencv_version() is None:
        lines.append('OpenCV DNN not checked: cv2.dnn is not installed')
        return model, lines, diffs
    with tempfile.TemporaryDirectory(prefix='asid-export-') as folder:
        path = Path(folder) / 'model.onnx'
        path.write_bytes(model)
        try:
            outputs = run_opencv_isolated(path, inputs)
        except OpenCVCrash as err:
            lines.append(f'note: {err}: this file is for onnxruntime; OpenCV cannot use it')
            return model, lines, diffs
    diffs['OpenCV DNN'] = {name: max_abs_diff(net, inputs[name], out) for name, out in outputs.items()}
    return model, lines, diffs


def build_ncnn(net, args: argparse.Namespace,
               inputs: Dict[str, np.ndarray]) -> Tuple[Tuple[str, bytes], List[str], Dict[str, Dict[str, float]]]:
    """The NCNN files' text and bytes, and the report lines of their check by ncnn."""
    param, weights = ncnn_model(net, half=args.half)
    layers = len(param.splitlines()) - 2
    lines = [f'{layers} layers, input blob {INPUT_BLOB} (3, H, W), output blob {OUTPUT_BLOB}, weights '
             + ('float16' if args.half else 'float32')]
    batches = [name for name, array in inputs.items() if array.shape[0] > 1]
    if batches:
        lines.append(f'{", ".join(batches)}: run by ncnn one image at a time (NCNN has no batch axis)')
    return (param, weights), lines, {'ncnn': check_ncnn(net, param, weights, inputs)}


def max_abs_diff(net, array: np.ndarray, got: np.ndarray) -> float:
    """Largest difference between ``got`` and PyTorch's output on ``array`` (inf if the shapes differ)."""
    import torch

    with torch.no_grad():
        expected = net(torch.from_numpy(array)).numpy()
    return float(np.abs(got - expected).max()) if got.shape == expected.shape else math.inf


@command('asid-export', ': nothing written')
def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = command_parser('asid-export', __doc__)
    parser.add_argument('-m', '--model', type=Path, required=True, help='checkpoint of ASID or ASID-D8 (any layout), '
                        'or the name of released weights (asid_x4, ...: downloaded once into a cache)')
    parser.add_argument('-o', '--output', type=Path, required=True,
                        help='ONNX file to write; with --format ncnn, NAME.param (NAME.bin is written beside it)')
    parser.add_argument('--format', choices=FORMATS, default='onnx',
                        help='onnx (default) or ncnn (a .param + .bin pair for ncnn programs, converted by pnnx)')
    parser.add_argument('--half', action='store_true', help='a graph computing in float16 (input and output float32); '
                        'with --format ncnn, weights stored in float16')
    parser.add_argument('--overwrite', action='store_true', help='replace --output if it exists')
    parser.add_argument('--opset', type=int, default=None, help=f'ONNX opset, >= {MIN_OPSET} '
                        f'(default {DEFAULT_OPSET})')
    parser.add_argument('--check-image', type=Path, help='real image for the parity check (default: a sample)')
    parser.add_argument('--tolerance', type=float, default=None,
                        help='largest accepted difference to PyTorch float32, >= 0 (default '
                        f"{TOLERANCES['onnx', 'float32']:g}, {TOLERANCES['ncnn', 'float32']:g} with --format ncnn; "
                        f"{TOLERANCES['onnx', 'float16']:g} with --half)")
    add_channel_attention_argument(parser)
    args = parser.parse_args(argv)
    from ..cpu_settings import tune_cpu

    tune_cpu()  # before torch is imported
    from ..from_weights import network_from_file
    from ..released import resolve_model
    from ..utils.asid_errors import PretrainedWeightsError

    missing = missing_package(args.format)
    if missing:
        print(f"asid-export: {missing} is not installed: pip install -e '.[{args.format}]' from a checkout of "
              f'asid_arch (or pip install {" ".join(NEEDS[args.format])})', file=sys.stderr)
        return EXIT_USAGE
    try:
        check_arguments(args)
        args.model = resolve_model(args.model)  # a released name (asid_x4, ...): downloaded once, checked
        net, config = network_from_file(args.model, args.channel_attention)
        real = read_check_image(args.check_image, net, config.upscale) if args.check_image else sample_image()
    except (PretrainedWeightsError, UsageError) as err:
        print(f'asid-export: error: {err}', file=sys.stderr)
        return EXIT_USAGE
    precision = 'float16' if args.half else 'float32'
    tolerance = TOLERANCES[args.format, precision] if args.tolerance is None else args.tolerance
    inputs = check_inputs(real)
    build = build_ncnn if args.format == 'ncnn' else build_onnx
    target = ' and '.join(shown(path) for path in ncnn_paths(args.output)) if args.format == 'ncnn' else shown(
        args.output)
    with stop_on_signals():
        try:
            start = time.time()
            try:
                model, lines, results = build(net, args, inputs)
            except Exception as err:  # the exporter or a runtime failed: nothing is written
                print(f'asid-export: failed: {config.variant} x{config.upscale}: {type(err).__name__}: '
                      f'{(str(err).strip().splitlines() or [""])[0][:300]}; {target} not written', file=sys.stderr)
                return EXIT_FAILED
            seconds = time.time() - start
            print(f'asid-export: {config.variant} x{config.upscale}: exported and checked ({seconds:.1f} s)')
            if config.note:
                print(f'asid-export: note: {shown(args.model)}: {config.note}')
            for line in lines:
                print(f'asid-export: {line}')
            worst = 0.0
            for runtime, diffs in results.items():
                random = {name: diff for name, diff in diffs.items() if not name.startswith('image')}
                image = {name: diff for name, diff in diffs.items() if name.startswith('image')}
                print(f'asid-export: {runtime} vs PyTorch, random {", ".join(random)}: max abs diff '
                      f'{max(random.values()):.2e}')
                for name, diff in image.items():
                    print(f'asid-export: {runtime} vs PyTorch, {name}: max abs diff {diff:.2e}')
                worst = max(worst, *diffs.values())
            if not worst <= tolerance:
                print(f'asid-export: difference above the tolerance {tolerance:g}: {target} not written',
                      file=sys.stderr)
                return EXIT_FAILED
            from ..utils.asid_files import atomic_write

            try:
                if args.format == 'ncnn':
                    write_ncnn(args.output, *model, overwrite=args.overwrite)
                else:
                    atomic_write(args.output, lambda f: f.write(model), overwrite=args.overwrite)
            except FileExistsError:
                print(f'asid-export: error: {target} appeared during the export: add --overwrite to replace it',
                      file=sys.stderr)
                return EXIT_USAGE
            except OSError as err:
                print(f'asid-export: failed: cannot write {target} ({err.strerror or err})', file=sys.stderr)
                return EXIT_FAILED
            print(f'asid-export: wrote {target}')
            return EXIT_OK
        except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM/SIGHUP as Interrupted: nothing was written
            print(f'asid-export: stopped by {interrupt_name(err)}: {target} not written', file=sys.stderr)
            return interrupt_exit_status(err)


if __name__ == '__main__':
    sys.exit(main())
