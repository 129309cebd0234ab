"""OpenCV's DNN module (``cv2.dnn``) running an exported ASID ONNX graph, in this process or in a child.

A native crash inside OpenCV's ONNX importer kills its whole process (opencv-python 5.0 died with SIGSEGV on
the GELU that PyTorch's exporter writes; :func:`asid_arch.archs.asid_ops.exact_gelu` now writes the order
OpenCV fuses). :func:`run_opencv_isolated` therefore runs OpenCV in a child process (``python -m
asid_arch.integrations.opencv MODEL INPUT.npy OUTPUT.npy``) and turns a crash into :class:`OpenCVCrash`.
Arrays are ``(B, 3, H, W)`` float32 RGB in [0, 1] in, ``(B, 3, H*s, W*s)`` out.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

CHILD_TIMEOUT_S = 600.0  # a load and a few forward passes of a 1-3 MB graph; a hung child is stopped


class OpenCVCrash(RuntimeError):
    """OpenCV's DNN module failed in the child process: a signal (a native crash), an error or a timeout."""


def opencv_version() -> Optional[str]:
    """The installed OpenCV's version, or None without cv2 or without its DNN module."""
    try:
        import cv2
    except ImportError:
        return None
    return cv2.__version__ if hasattr(cv2, 'dnn') else None


def load_net(model: Path):
    """``cv2.dnn.readNetFromONNX`` on ``model``: the network, on OpenCV's own (CPU) backend."""
    import cv2

    net = cv2.dnn.readNetFromONNX(str(model))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    return net


def run_net(net, array: np.ndarray) -> np.ndarray:
    """One forward pass of a loaded network on a ``(B, 3, H, W)`` float32 array."""
    net.setInput(np.ascontiguousarray(array, dtype=np.float32))
    return np.asarray(net.forward(), dtype=np.float32)


def _child_environment() -> Dict[str, str]:
    """This environment with this package's folder first on ``PYTHONPATH``: the child imports the same
    asid_arch as its parent (a checkout or an installed copy alike)."""
    root = str(Path(__file__).resolve().parents[2])
    path = os.environ.get('PYTHONPATH')
    return {**os.environ, 'PYTHONPATH': root + (os.pathsep + path if path else '')}


def run_opencv_isolated(model: Path, inputs: Dict[str, np.ndarray],
                        timeout: float = CHILD_TIMEOUT_S) -> Dict[str, np.ndarray]:
    """OpenCV's outputs for each named input, computed in a child process; :class:`OpenCVCrash` when the
    child dies (its signal named), fails or runs past ``timeout`` seconds."""
    names = list(inputs)
    with tempfile.TemporaryDirectory(prefix='asid-opencv-') as folder:
        np.savez(Path(folder) / 'in.npz', *[inputs[name] for name in names])
        command = [sys.executable, '-m', __name__, str(Path(model).absolute()), str(Path(folder) / 'in.npz'),
                   str(Path(folder) / 'out.npz')]
        try:
            done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=timeout, env=_child_environment())
        except subprocess.TimeoutExpired:
            raise OpenCVCrash(f'OpenCV {opencv_version()} did not finish in {timeout:.0f} s') from None
        if done.returncode < 0:
            raise OpenCVCrash(f'OpenCV {opencv_version()} crashed ({signal.Signals(-done.returncode).name}) '
                              'while loading or running the graph')
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines() or ['no message']
            raise OpenCVCrash(f'OpenCV {opencv_version()} failed: {lines[-1][:300]}')
        with np.load(Path(folder) / 'out.npz') as outputs:
            return {name: outputs[f'arr_{i}'] for i, name in enumerate(names)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The child: ``MODEL INPUT.npz OUTPUT.npz`` (arrays ``arr_0``, ``arr_1``, ... in and out)."""
    model, source, target = (argv if argv is not None else sys.argv[1:])
    net = load_net(Path(model))
    with np.load(source) as arrays:
        outputs = [run_net(net, arrays[f'arr_{i}']) for i in range(len(arrays.files))]
    np.savez(target, *outputs)
    return 0


if __name__ == '__main__':
    sys.exit(main())
