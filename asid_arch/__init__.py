"""ASID (Attention-Sharing Information Distillation) for BasicSR.

Importing the package does nothing to the host process: no environment variable, allocator setting or
registry changes, and neither torch nor BasicSR is imported. The public names below are imported on
first use; using one registers what its module defines in BasicSR's registries (the architectures in
``ARCH_REGISTRY`` when ``asid_arch.archs`` is imported, ``ASIDModel`` and ``calculate_psnr_matlab`` when
``asid_arch.models`` is). A script that builds networks from option files registers them with::

    import asid_arch.models  # ASID, ASID-D8, Omni-SR, ASIDModel, calculate_psnr_matlab

The authors' released weights, by name, as a network in eval mode::

    net = asid_arch.from_pretrained('asid_x4')  # downloaded once, checked (asid_arch.from_weights)

The package's commands tune the process for CPU work before they import torch
(:func:`asid_arch.cpu_settings.tune_cpu`); a script of your own may call ``asid_arch.tune_cpu()`` first thing.
"""
from __future__ import annotations

import importlib
from typing import Dict, List

__version__ = '0.1.0'

_HOMES: Dict[str, str] = {  # public name -> the module that defines it
    'ASID': 'archs.asid_arch',
    'asid': 'archs.asid_arch',
    'asid_d8': 'archs.asid_arch',
    'state_dict_from_reference': 'archs.asid_layouts',
    'state_dict_to_reference': 'archs.asid_layouts',
    'OmniSR': 'archs.omnisr_arch',
    'ASIDModel': 'models.asid_model',
    'from_pretrained': 'from_weights',
    'tile_forward': 'utils.asid_tiling',
    'tune_cpu': 'cpu_settings',
}
__all__ = list(_HOMES)


def __getattr__(name: str) -> object:
    """A public name, imported from its module on first use."""
    if name not in _HOMES:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    value = getattr(importlib.import_module(f'{__name__}.{_HOMES[name]}'), name)
    globals()[name] = value
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_HOMES))
