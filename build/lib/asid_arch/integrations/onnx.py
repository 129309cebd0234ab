"""ONNX: an ASID network exported with dynamic height and width, and onnxruntime's output compared with PyTorch's.

The graph takes ``lr`` (1, 3, H, W) float32 RGB in [0, 1], any H, W >= 1 (sides under 16 px are edge-padded
inside the graph, as the PyTorch network does) and returns ``sr`` (1, 3, H*s, W*s). ``asid-export``
(:mod:`asid_arch.cli.export`) is the command around it; ``asid-bench onnx`` times it.
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Dict

import numpy as np

MIN_ONNX_SIZE = 1  # the graph edge-pads small sides itself (asid_arch.archs.asid_arch.pad_amounts: no branch)
MAX_ONNX_SIZE = 16384
EXAMPLE_SIZE = (24, 40)  # the example input the exporter traces (any size: the padding has no branch)
DEFAULT_OPSET = 18
MIN_OPSET = 18  # the exporter's own operators; older opsets need a conversion that silently keeps 18 when it fails


def onnx_model(net, opset: int = DEFAULT_OPSET) -> bytes:
    """``net`` exported with dynamic height and width (``lr`` -> ``sr``), serialised: one self-contained model
    (the weights are ~1-3 MB, no ``.onnx.data`` sidecar). What the exporter prints and logs on the way
    (progress, optimiser notes, tracebacks of fallbacks it recovered from) is kept out of the output;
    a failed export raises with its own message."""
    import torch

    height = torch.export.Dim('height', min=MIN_ONNX_SIZE, max=MAX_ONNX_SIZE)
    width = torch.export.Dim('width', min=MIN_ONNX_SIZE, max=MAX_ONNX_SIZE)
    example = torch.rand(1, 3, *EXAMPLE_SIZE)
    chatter = io.StringIO()
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
            warnings.simplefilter('ignore')
            program = torch.onnx.export(net.eval(), (example, ), None, dynamo=True, input_names=['lr'],
                                        output_names=['sr'], dynamic_shapes={'x': {2: height, 3: width}},
                                        opset_version=opset, verbose=False)
            proto = program.model_proto
    finally:
        logging.disable(previous)
    written = {entry.domain: entry.version for entry in proto.opset_import}.get('', None)
    if written != opset:
        raise RuntimeError(f'the exporter wrote opset {written}, not the requested {opset}')
    return proto.SerializeToString()


def export_onnx(net, path: Path, opset: int = DEFAULT_OPSET) -> None:
    """Export ``net`` (see :func:`onnx_model`) to ``path``, written atomically."""
    from ..utils.asid_files import atomic_write

    data = onnx_model(net, opset)
    atomic_write(path, lambda f: f.write(data))


def check_onnx(net, model: bytes, inputs: Dict[str, np.ndarray]) -> Dict[str, float]:
    """Max abs difference between onnxruntime (running the serialised ``model``) and PyTorch (float32) for
    each named input."""
    import onnxruntime
    import torch

    session = onnxruntime.InferenceSession(model, providers=['CPUExecutionProvider'])
    diffs = {}
    for name, array in inputs.items():
        with torch.no_grad():
            expected = net(torch.from_numpy(array)).numpy()
        got = session.run(None, {'lr': array})[0]
        if got.shape != expected.shape:
            raise ValueError(f'{name}: ONNX output shape {got.shape} != PyTorch {expected.shape}')
        diffs[name] = float(np.abs(got - expected).max())
    return diffs


def newest_opset() -> int:
    """The newest ONNX opset the installed onnx package knows."""
    import onnx.defs

    return int(onnx.defs.onnx_opset_version())
