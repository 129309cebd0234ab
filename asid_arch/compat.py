"""Compatibility shims needed before ``basicsr`` (1.4.2) can be imported.

BasicSR 1.4.2 imports ``torchvision.transforms.functional_tensor``, a private module that
torchvision removed in 0.17. Its only use there is ``rgb_to_grayscale``, which lives on in
``torchvision.transforms.functional``. We register that public module under the old name in
``sys.modules``; nothing on disk is changed.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys

_LEGACY = 'torchvision.transforms.functional_tensor'


def install_torchvision_alias() -> None:
    """Make ``import torchvision.transforms.functional_tensor`` work (idempotent, no-op when it exists)."""
    if _LEGACY in sys.modules:
        return
    try:
        if importlib.util.find_spec(_LEGACY) is not None:
            return
    except ModuleNotFoundError:  # torchvision itself is missing: basicsr will say so
        return
    sys.modules[_LEGACY] = importlib.import_module('torchvision.transforms.functional')
