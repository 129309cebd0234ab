"""``asid-export``: an ASID checkpoint to ONNX with dynamic height and width, checked by onnxruntime.

    asid-export -m ASID_x4.pth -o asid_x4.onnx [--check-image photo.png]

The graph takes ``lr`` (1, 3, H, W) float32 RGB in [0, 1] with H, W >= 9 and returns ``sr``
(1, 3, H*s, W*s). After export, onnxruntime runs it on a random input and on a real image
(``--check-image``, default a scikit-image sample) and the largest difference to PyTorch is
reported; above ``--tolerance`` (1e-4) the command fails. The file is self-contained (weights inside,
no ``.onnx.data`` sidecar). Needs onnx, onnxruntime and onnxscript: the project's ``.venv`` has them
(``requirements.txt``); elsewhere ``pip install -e '.[onnx]'`` from a checkout of this repository.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

from .inference import add_channel_attention_argument

MIN_ONNX_SIZE = 9  # sides that pad to >= 16 px: the exported graph has no edge-padding branch
MAX_ONNX_SIZE = 16384
DEFAULT_OPSET = 18
RANDOM_CHECK_SIZE = (37, 45)  # deliberately not multiples of 8


def export_onnx(net, path: Path, opset: int = DEFAULT_OPSET) -> None:
    """Export ``net`` with dynamic height and width (``lr`` -> ``sr``)."""
    import torch

    height = torch.export.Dim('height', min=MIN_ONNX_SIZE, max=MAX_ONNX_SIZE)
    width = torch.export.Dim('width', min=MIN_ONNX_SIZE, max=MAX_ONNX_SIZE)
    example = torch.rand(1, 3, 24, 40)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        # external_data=False: one self-contained file (the weights are ~1-3 MB), no '.onnx.data' sidecar
        torch.onnx.export(net.eval(), (example, ), str(path), dynamo=True, input_names=['lr'], output_names=['sr'],
                          dynamic_shapes={'x': {2: height, 3: width}}, opset_version=opset, verbose=False,
                          external_data=False)


def sample_image() -> np.ndarray:
    """A real photo as (1, 3, H, W) float32: a 96 x 120 crop of scikit-image's astronaut."""
    import skimage.data

    return (skimage.data.astronaut()[100:196, 180:300].astype(np.float32) / 255).transpose(2, 0, 1)[None].copy()


def read_check_image(path: Path) -> np.ndarray:
    import cv2

    from .images import decode_file

    img = decode_file(path, cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f'--check-image {path} is not a readable image')
    return (img[:, :, ::-1].astype(np.float32) / 255).transpose(2, 0, 1)[None].copy()


def check_onnx(net, path: Path, inputs: Dict[str, np.ndarray]) -> Dict[str, float]:
    """Max abs difference between onnxruntime and PyTorch (float32) for each named input."""
    import onnxruntime
    import torch

    session = onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    diffs = {}
    for name, array in inputs.items():
        with torch.no_grad():
            expected = net(torch.from_numpy(array)).numpy()
        got = session.run(None, {'lr': array})[0]
        if got.shape != expected.shape:
            raise ValueError(f'{name}: ONNX output shape {got.shape} != PyTorch {expected.shape}')
        diffs[name] = float(np.abs(got - expected).max())
    return diffs


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='asid-export', description=__doc__.split('\n\n')[0].replace('``', "'"))
    parser.add_argument('-m', '--model', type=Path, required=True, help='checkpoint of ASID or ASID-D8 (any layout)')
    parser.add_argument('-o', '--output', type=Path, required=True, help='ONNX file to write')
    parser.add_argument('--opset', type=int, default=DEFAULT_OPSET)
    parser.add_argument('--check-image', type=Path, help='real image for the parity check (default: a sample)')
    parser.add_argument('--tolerance', type=float, default=1e-4, help='largest accepted difference (default 1e-4)')
    add_channel_attention_argument(parser)
    args = parser.parse_args(argv)
    from .checkpoint import CheckpointError, load_network

    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as err:
        print(f"asid-export: {err.name} is not installed: pip install -e '.[onnx]' from a checkout of asid_arch "
              '(or pip install onnx onnxruntime onnxscript)', file=sys.stderr)
        return 2
    try:
        net, config = load_network(args.model, args.channel_attention)
        real = read_check_image(args.check_image) if args.check_image else sample_image()
    except (CheckpointError, ValueError) as err:
        print(f'asid-export: error: {err}', file=sys.stderr)
        return 2
    args.output.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    export_onnx(net, args.output, args.opset)
    print(f'asid-export: {config.variant} x{config.upscale} -> {args.output} ({time.time() - start:.1f} s)')
    if config.note:
        print(f'asid-export: note: {args.model}: {config.note}')
    rng = np.random.default_rng(0)
    diffs = check_onnx(net, args.output, {
        f'random {RANDOM_CHECK_SIZE[0]}x{RANDOM_CHECK_SIZE[1]}': rng.random((1, 3, *RANDOM_CHECK_SIZE), np.float32),
        f'image {real.shape[2]}x{real.shape[3]}': real,
    })
    for name, diff in diffs.items():
        print(f'asid-export: onnxruntime vs PyTorch, {name}: max abs diff {diff:.2e}')
    if max(diffs.values()) > args.tolerance:
        print(f'asid-export: difference above the tolerance {args.tolerance:g}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
