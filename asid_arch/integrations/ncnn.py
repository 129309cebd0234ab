"""NCNN: an ASID network converted by pnnx into an NCNN ``.param`` + ``.bin`` pair, run by the ``ncnn`` Python
package, and its output compared with PyTorch's.

The files follow the ncnn upscalers' conventions (Upscayl's ``upscayl-bin``, realesrgan-ncnn-vulkan): one input
blob ``data``, (3, H, W) float32 RGB in [0, 1], any H, W >= 1, and one output blob ``output``, (3, H*s, W*s).
NCNN has no batch axis: a batch is run one image at a time (:func:`run_ncnn`). The graph pads the input to the
window itself with NCNN's crop expressions (:mod:`asid_arch.integrations.ncnn_forms`, the network rewritten in
operations pnnx converts). Weights are stored in float32 (pnnx ``fp16=0``), or in float16 with ``half=True``.
``asid-export --format ncnn`` (:mod:`asid_arch.cli.export`) is the command around it.
"""
from __future__ import annotations

import os
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

NCNN_NEEDS = ('pnnx', 'ncnn')  # the extra asid_arch[ncnn]
# the traced example and pnnx's second shape: two sizes mark height and width as dynamic in the graph
EXAMPLE_SIZE, SECOND_SIZE = (24, 40), (37, 45)
INPUT_BLOB, OUTPUT_BLOB = 'data', 'output'  # the blob names the ncnn upscalers look up
PNNX_INPUT_BLOB, PNNX_OUTPUT_BLOB = 'in0', 'out0'  # the names pnnx gives them
PNNX_TIMEOUT_S = 1800.0  # pnnx takes seconds for ASID and minutes for ASID-D8 on 2 cores; a hung converter is stopped
PARAM_MAGIC = '7767517'  # first line of an NCNN .param file
# layer types pnnx leaves in a .param when it cannot convert an operation (no NCNN layer runs them)
UNCONVERTED_PREFIXES = ('pnnx.', 'torch.', 'Tensor.', 'F.', 'nn.', 'aten::', 'prim::')


class NcnnExportError(RuntimeError):
    """pnnx failed, or left operations NCNN cannot run; the message names them."""


def pnnx_executable() -> str:
    """The converter program of the installed ``pnnx`` package."""
    import pnnx

    return pnnx.EXEC_PATH


def _traced(net, size: Tuple[int, int]):
    """``net``'s NCNN form traced by TorchScript on a random (1, 3, *size) input."""
    import torch

    from .ncnn_forms import ncnn_form

    form = ncnn_form(net).float()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')  # TorchScript's notes on shape arithmetic it records
        return torch.jit.trace(form, torch.rand(1, 3, *size), check_trace=False)


def rename_blobs(param: str, renames: Dict[str, str]) -> str:
    """``param`` (the text of an NCNN .param file) with its blobs renamed (and the Input layer named after its
    blob); :class:`NcnnExportError` when a blob to rename is missing or a new name is taken."""
    lines = param.splitlines()
    if not lines or lines[0].strip() != PARAM_MAGIC:
        raise NcnnExportError('pnnx wrote a .param without the NCNN magic number')
    blobs = set()
    rows = [line.split() for line in lines[2:]]
    for row in rows:
        inputs, outputs = int(row[2]), int(row[3])
        blobs.update(row[4:4 + inputs + outputs])
    for old, new in renames.items():
        if old not in blobs:
            raise NcnnExportError(f'pnnx wrote no blob {old!r}')
        if new in blobs:
            raise NcnnExportError(f'the blob name {new!r} is taken in the converted graph')
    out = lines[:2]
    for row in rows:
        edges = 4 + int(row[2]) + int(row[3])
        row[4:edges] = [renames.get(blob, blob) for blob in row[4:edges]]
        if row[0] == 'Input':
            row[1] = renames.get(row[1], row[1])
        out.append(' '.join(row))
    return '\n'.join(out) + '\n'


def unconverted_layers(param: str) -> List[str]:
    """The layer types of a .param text that are pnnx operators NCNN cannot run, sorted, without repeats."""
    types = {line.split()[0] for line in param.splitlines()[2:] if line.strip()}
    return sorted(t for t in types if t.startswith(UNCONVERTED_PREFIXES))


def ncnn_model(net, half: bool = False) -> Tuple[str, bytes]:
    """``net`` converted for NCNN: the ``.param`` text (blobs ``data`` and ``output``) and the ``.bin`` bytes
    (float32 weights; float16 with ``half=True``). pnnx runs in a private temporary folder, which goes with all
    of its side files; :class:`NcnnExportError` when it fails or leaves operations NCNN cannot run."""
    with tempfile.TemporaryDirectory(prefix='asid-pnnx-') as folder:
        work = Path(folder)
        _traced(net, EXAMPLE_SIZE).save(str(work / 'model.pt'))
        shape = '[1,3,{},{}]f32'
        command = [pnnx_executable(), 'model.pt', 'inputshape=' + shape.format(*EXAMPLE_SIZE),
                   'inputshape2=' + shape.format(*SECOND_SIZE), 'device=cpu', f'fp16={int(half)}',
                   'ncnnparam=model.ncnn.param', 'ncnnbin=model.ncnn.bin']
        try:
            done = subprocess.run(command, cwd=work, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=PNNX_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise NcnnExportError(f'pnnx did not finish in {PNNX_TIMEOUT_S:.0f} s') from None
        param_path, bin_path = work / 'model.ncnn.param', work / 'model.ncnn.bin'
        if done.returncode != 0 or not (param_path.is_file() and bin_path.is_file()):
            lines = (done.stderr + done.stdout).strip().splitlines() or ['no message']
            raise NcnnExportError(f'pnnx failed (exit status {done.returncode}): {lines[-1][:300]}')
        param = param_path.read_text()
        weights = bin_path.read_bytes()
    left = unconverted_layers(param)
    if left:
        raise NcnnExportError(f'pnnx left operations NCNN cannot run: {", ".join(left)}')
    return rename_blobs(param, {PNNX_INPUT_BLOB: INPUT_BLOB, PNNX_OUTPUT_BLOB: OUTPUT_BLOB}), weights


def load_ncnn(param: Path, weights: Path, threads: Optional[int] = None, packing: bool = True):
    """An ``ncnn.Net`` loaded from a .param and .bin pair, on the CPU (``threads``: ncnn's default if None);
    :class:`NcnnExportError` when ncnn refuses a file. ``packing`` is ncnn's ``opt.use_packing_layout`` (on by
    default, and what the ncnn upscalers run): the exported graph is made for it (every ``Reshape`` takes its
    sizes from its own input, see :mod:`asid_arch.integrations.ncnn_forms`), so the default is also the fast
    CPU path; ``packing=False`` runs ncnn's plain layouts, for comparison."""
    import ncnn

    model = ncnn.Net()
    model.opt.use_vulkan_compute = False
    model.opt.use_packing_layout = packing
    if threads is not None:
        model.opt.num_threads = threads
    if model.load_param(str(param)) != 0:
        raise NcnnExportError(f'ncnn cannot load {param}')
    if model.load_model(str(weights)) != 0:
        raise NcnnExportError(f'ncnn cannot load {weights}')
    return model


def run_ncnn(model, array: np.ndarray) -> np.ndarray:
    """A loaded model (:func:`load_ncnn`) on a ``(B, 3, H, W)`` float32 array, one image at a time (NCNN has no
    batch axis): ``(B, 3, H*s, W*s)``. :class:`NcnnExportError` when ncnn fails on an image."""
    import ncnn

    outputs = []
    for image in np.ascontiguousarray(array, dtype=np.float32):
        extractor = model.create_extractor()
        extractor.input(INPUT_BLOB, ncnn.Mat(image))
        status, out = extractor.extract(OUTPUT_BLOB)
        if status != 0:
            raise NcnnExportError(f'ncnn failed (status {status}) on a {image.shape[1]}x{image.shape[2]} input')
        outputs.append(np.array(out, dtype=np.float32))
    return np.stack(outputs)


def check_ncnn(net, param: str, weights: bytes, inputs: Dict[str, np.ndarray]) -> Dict[str, float]:
    """Max abs difference between ncnn (running the files) and PyTorch (float32) for each named input (a batch
    run one image at a time); :class:`NcnnExportError` where ncnn fails or gives another shape."""
    import torch

    with tempfile.TemporaryDirectory(prefix='asid-ncnn-') as folder:
        paths = Path(folder) / 'model.param', Path(folder) / 'model.bin'
        paths[0].write_text(param)
        paths[1].write_bytes(weights)
        model = load_ncnn(*paths)
    diffs = {}
    for name, array in inputs.items():
        with torch.no_grad():
            expected = net(torch.from_numpy(array)).numpy()
        got = run_ncnn(model, array)
        if got.shape != expected.shape:
            raise NcnnExportError(f'{name}: ncnn output shape {got.shape} != PyTorch {expected.shape}')
        diffs[name] = float(np.abs(got - expected).max())
    return diffs


def ncnn_paths(path: Path) -> Tuple[Path, Path]:
    """``NAME.param`` and ``NAME.bin`` for ``path`` = ``NAME.param``."""
    return path, path.with_suffix('.bin')


def write_ncnn(path: Path, param: str, weights: bytes, overwrite: bool = False) -> None:
    """Write ``path`` (``NAME.param``) and ``NAME.bin`` beside it, each atomically, the .bin renamed last: an
    error leaves neither new file (a .param this call wrote is removed again). FileExistsError without
    ``overwrite`` where one exists; only regular files are ever replaced."""
    from ..utils.asid_files import atomic_write

    param_path, bin_path = ncnn_paths(path)
    wrote: List[Path] = []

    def then_param(_: Path) -> None:
        atomic_write(param_path, lambda f: f.write(param.encode()), overwrite=overwrite)
        wrote.append(param_path)

    writer: Callable[[object], None] = lambda f: f.write(weights)  # noqa: E731
    try:
        atomic_write(bin_path, writer, overwrite=overwrite, check=then_param)
    except BaseException:
        if wrote and os.path.isfile(param_path) and not os.path.islink(param_path):
            os.unlink(param_path)
        raise
