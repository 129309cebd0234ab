"""The authors' architecture from a neosr checkout, for timing beside the package: neosr's
``neosr/archs/asid_arch.py`` imported on its own, with stand-ins for neosr's registry and option parser."""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

REFERENCE_MATCH_TOLERANCE = 1e-4  # float32: the two implementations differ by rounding only
REFERENCE_HINT = 'give neosr/archs/asid_arch.py of a neosr checkout'
CHECK_INPUT = (1, 3, 24, 32)  # the input both networks are compared on before any timing
WEIGHT_JITTER = 0.02  # random weights moved off their initial values, so that every path is compared


class _Registry:
    """Stand-in for neosr's ARCH_REGISTRY: ``register()`` returns the object unchanged."""

    def register(self, obj=None):
        return obj if obj is not None else (lambda o: o)


def load_reference(path: Path, scale: int) -> nn.Module:
    """neosr's ``neosr/archs/asid_arch.py`` (a file of a neosr checkout, given by the user), built as
    ``asid(scale, pe=True, flash_attn=False)``: the authors' architecture. Its output is checked against
    this package's on the same weights before any timing; a file that does not build it, or builds
    another network, is a SystemExit with one line."""
    import importlib.util
    import types

    from ..archs.asid_arch import asid
    from ..archs.asid_layouts import state_dict_to_reference

    path = Path(path)
    stubs = {'neosr': None, 'neosr.archs': None, 'neosr.utils': None,
             'neosr.archs.arch_util': {'net_opt': lambda: (scale, False)},
             'neosr.utils.registry': {'ARCH_REGISTRY': _Registry()}}
    for name, attrs in stubs.items():
        module = sys.modules.setdefault(name, types.ModuleType(name))
        for key, value in (attrs or {}).items():
            setattr(module, key, value)
    spec = importlib.util.spec_from_file_location('asid_reference', path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        ref = module.asid(scale=scale, pe=True, flash_attn=False)
    except Exception as err:  # noqa: BLE001  (a user-given file: say what went wrong, briefly)
        raise SystemExit(f'asid-bench: --reference {path} did not build neosr\'s asid(scale={scale}, pe=True, '
                         f'flash_attn=False): {type(err).__name__}: {err}') from None
    ours = asid(scale).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(WEIGHT_JITTER * torch.randn_like(p))
    ref.load_state_dict(state_dict_to_reference(ours.state_dict()))
    ref.eval()
    x = torch.rand(*CHECK_INPUT)
    with torch.no_grad():
        diff = (ref(x) - ours(x)).abs().max().item()
    if diff > REFERENCE_MATCH_TOLERANCE:
        raise SystemExit(f'asid-bench: --reference {path} is not the same network (max abs difference {diff:.1e})')
    return ref
