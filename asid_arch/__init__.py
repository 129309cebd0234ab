"""ASID (Attention-Sharing Information Distillation) for BasicSR.

Importing this package installs a tiny torchvision alias that ``basicsr==1.4.2`` needs, then
registers the architectures in ``basicsr.utils.registry.ARCH_REGISTRY``.

It also turns on PyTorch's transparent-huge-page CPU allocations (``THP_MEM_ALLOC_ENABLE=1``,
unless the variable is already set): SR activations are tens of MB each, and backing them with
2 MB pages instead of 4 KB ones removes most page-fault time (ASID x2 on 640x360: 5.2 s -> 3.4 s
on a 2-core machine). It takes effect if the package is imported before PyTorch's first
allocation; set ``THP_MEM_ALLOC_ENABLE=0`` to opt out. For the same reason it asks glibc's malloc
to keep freed memory for reuse (:mod:`asid_arch.cpu_memory`; the process keeps its peak memory
until it exits); set ``ASID_KEEP_FREED_MEMORY=0`` to opt out.

On a busy machine PyTorch's OpenMP threads (GNU libgomp) spin at every barrier while a sibling
thread waits for a core: on 2 cores with two busy-loop processes beside it, the demo's training
iterations took up to 10x their idle time (0.69-0.76 s -> 3.3-7.3 s). Unless
``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` is set, the package sets ``OMP_WAIT_POLICY=PASSIVE``
(threads wait without spinning): 1.57-2.02 s in the same test, with no measurable idle cost (README,
"A busy machine"). Like the page settings it takes effect only if the package is imported before
PyTorch.
"""
import os

os.environ.setdefault('THP_MEM_ALLOC_ENABLE', '1')
if 'OMP_WAIT_POLICY' not in os.environ and 'GOMP_SPINCOUNT' not in os.environ:
    os.environ['OMP_WAIT_POLICY'] = 'PASSIVE'

from .cpu_memory import keep_freed_memory  # noqa: E402

if os.environ.get('ASID_KEEP_FREED_MEMORY', '1') != '0':
    keep_freed_memory()

import sys  # noqa: E402

__version__ = '0.1.0'
__all__ = ['ASID', 'asid', 'asid_d8', 'tile_forward', 'state_dict_from_reference', 'state_dict_to_reference']

# This package's own commands import what they need themselves; run as one of them (``asid-sr``,
# ``asid-prepare``, ...), the package defers torch, torchvision and BasicSR (about 10 s on a busy
# 2-core machine) until a name is used, so that ``--help`` and argument errors answer at once.
# Imported by anything else, ``import asid_arch`` registers ASID, Omni-SR, ASIDModel and
# calculate_psnr_matlab in BasicSR's registries right away, as BasicSR users expect.
COMMANDS = ('asid-sr', 'asid-prepare', 'asid-export', 'asid-kit', 'asid-bench', 'asid-train', 'asid-test')
_LAZY = os.path.basename(sys.argv[0] if sys.argv else '') in COMMANDS

if not _LAZY:
    # the arch file installs the torchvision alias before it imports basicsr
    from .archs import ASID, asid, asid_d8, state_dict_from_reference, state_dict_to_reference  # noqa: E402
    from .utils.asid_tiling import tile_forward  # noqa: E402
    from . import metrics, models  # noqa: E402,F401  (registers ASIDModel and calculate_psnr_matlab)
else:
    def __getattr__(name: str):
        """The public names, imported (and registered) on first use."""
        if name in __all__:
            from . import archs, models  # noqa: F401
            from .utils import asid_tiling

            return getattr(asid_tiling if name == 'tile_forward' else archs, name)
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
