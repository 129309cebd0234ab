"""``asid-bench``: the model-zoo comparison, the paper's table beside measured figures, and the fast-ASID
figures, measured on this machine.

One module per subcommand (``zoo`` in ``comparison``, ``paper``, ``speed``, ``seams``, ``data``, ``onnx``,
``profile``), each with the internal subcommands that run one of its figures in a fresh process next to it; the argument
parser and the dispatch table are in :mod:`asid_arch.bench.main` (``python -m asid_arch.bench``). This
module imports nothing: ``--help`` answers without loading PyTorch.
"""
