"""ONNX: an ASID network exported with dynamic batch, height and width, simplified, and onnxruntime's output
compared with PyTorch's.

The graph takes ``lr`` (B, 3, H, W) float32 RGB in [0, 1], any B, H, W >= 1 (sides under 16 px are edge-padded
inside the graph, as the PyTorch network does) and returns ``sr`` (B, 3, H*s, W*s); the output's dims are
written (and found again by ONNX shape inference) as ``s*height`` and ``s*width``. ``half=True`` gives a
float16 graph (weights and arithmetic) whose input and output stay float32: it casts at both ends.
The graph is simplified by onnxslim (constant folding, dead-code and shape-arithmetic removal). The same
file runs in onnxruntime and in OpenCV's DNN module (:mod:`asid_arch.integrations.opencv`).
``asid-export`` (:mod:`asid_arch.cli.export`) is the command around it; ``asid-bench onnx`` times it.
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Dict, List, Union

import numpy as np

MIN_ONNX_SIZE = 1  # the graph edge-pads small sides itself (asid_arch.archs.asid_arch.pad_amounts: no branch)
MAX_ONNX_SIZE = 16384
MAX_ONNX_BATCH = 4096
EXAMPLE_SHAPE = (2, 3, 24, 40)  # the example input the exporter traces (any size: the padding has no branch)
DEFAULT_OPSET = 18
MIN_OPSET = 18  # the exporter's own operators; older opsets need a conversion that silently keeps 18 when it fails
INPUT_NAME, OUTPUT_NAME = 'lr', 'sr'


@contextlib.contextmanager
def _quiet():
    """What the exporter and the simplifier print and log on the way (progress, optimiser notes, tracebacks
    of fallbacks they recovered from) is kept out of the output; failures still raise."""
    chatter = io.StringIO()
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
            warnings.simplefilter('ignore')
            yield
    finally:
        logging.disable(previous)


def float16_module(net):
    """The module ``half=True`` exports: float32 in, a float16 copy of ``net`` inside, float32 out.
    ``(B, 3, H, W) -> (B, 3, H*s, W*s)``."""
    import copy

    import torch

    inner = copy.deepcopy(net).half().eval()

    class Float16Network(torch.nn.Module):
        """``net`` in float16 between two casts."""

        def __init__(self) -> None:
            super().__init__()
            self.net = inner
            self.upscale = inner.upscale

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x.half()).float()

    return Float16Network().eval()


def exported_proto(net, opset: int = DEFAULT_OPSET, half: bool = False):
    """``net`` exported by ``torch.onnx.export`` (dynamo) with dynamic batch, height and width, unsimplified
    (an ``onnx.ModelProto``)."""
    import torch

    batch = torch.export.Dim('batch', min=1, max=MAX_ONNX_BATCH)
    height = torch.export.Dim('height', min=MIN_ONNX_SIZE, max=MAX_ONNX_SIZE)
    width = torch.export.Dim('width', min=MIN_ONNX_SIZE, max=MAX_ONNX_SIZE)
    module = float16_module(net) if half else net.eval()
    with _quiet():
        program = torch.onnx.export(module, (torch.rand(*EXAMPLE_SHAPE), ), None, dynamo=True,
                                    input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                    dynamic_shapes={'x': {0: batch, 2: height, 3: width}},
                                    opset_version=opset, verbose=False)
    proto = program.model_proto
    written = {entry.domain: entry.version for entry in proto.opset_import}.get('', None)
    if written != opset:
        raise RuntimeError(f'the exporter wrote opset {written}, not the requested {opset}')
    return proto


def simplified(proto):
    """``proto`` simplified by onnxslim (its default passes: constant folding, shape arithmetic, dead code)."""
    import onnxslim

    with _quiet():
        slim = onnxslim.slim(proto)
    if slim is None:
        raise RuntimeError('onnxslim did not return a model')
    return slim


def output_dims(proto) -> List[Union[int, str]]:
    """The output's dims as ONNX shape inference (with data propagation) finds them: an int where fixed,
    the symbolic name (``batch``, ``2*height``, ...) where dynamic, ``'?'`` where unknown."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    dims = inferred.graph.output[0].type.tensor_type.shape.dim
    return [d.dim_value if d.HasField('dim_value') else (d.dim_param or '?') for d in dims]


def node_count(model: bytes) -> int:
    """Nodes in the serialised model's main graph."""
    import onnx

    return len(onnx.load_from_string(model).graph.node)


def onnx_model(net, opset: int = DEFAULT_OPSET, half: bool = False, simplify: bool = True) -> bytes:
    """``net`` exported with dynamic batch, height and width (``lr`` -> ``sr``), simplified unless
    ``simplify=False``, float16 inside with ``half=True``, serialised: one self-contained model (the
    weights are ~1-3 MB, no ``.onnx.data`` sidecar). A failed export raises with its own message, and so
    does a graph whose output dims are not ``s*height`` and ``s*width``."""
    proto = exported_proto(net, opset, half)
    if simplify:
        proto = simplified(proto)
    scale = int(net.upscale)
    dims = output_dims(proto)
    expected = ['batch', 3, f'{scale}*height', f'{scale}*width'] if scale > 1 else ['batch', 3, 'height', 'width']
    if dims[2:] != expected[2:]:
        raise RuntimeError(f'the exported output dims are {dims}, not {expected}')
    return proto.SerializeToString()


def export_onnx(net, path: Path, opset: int = DEFAULT_OPSET, half: bool = False) -> None:
    """Export ``net`` (see :func:`onnx_model`) to ``path``, written atomically."""
    from ..utils.asid_files import atomic_write

    data = onnx_model(net, opset, half)
    atomic_write(path, lambda f: f.write(data))


def check_onnx(net, model: bytes, inputs: Dict[str, np.ndarray]) -> Dict[str, float]:
    """Max abs difference between onnxruntime (running the serialised ``model``) and PyTorch (float32) for
    each named input (any batch)."""
    import onnxruntime
    import torch

    session = onnxruntime.InferenceSession(model, providers=['CPUExecutionProvider'])
    diffs = {}
    for name, array in inputs.items():
        with torch.no_grad():
            expected = net(torch.from_numpy(array)).numpy()
        got = session.run(None, {INPUT_NAME: array})[0]
        if got.shape != expected.shape:
            raise ValueError(f'{name}: ONNX output shape {got.shape} != PyTorch {expected.shape}')
        diffs[name] = float(np.abs(got - expected).max())
    return diffs


def newest_opset() -> int:
    """The newest ONNX opset the installed onnx package knows."""
    import onnx.defs

    return int(onnx.defs.onnx_opset_version())
