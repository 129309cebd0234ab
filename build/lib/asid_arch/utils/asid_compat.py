"""What the kit needs from its surroundings before BasicSR is imported, and registering kit objects once.

Kit file (``basicsr/utils/asid_compat.py`` in a BasicSR checkout): it imports only the standard library,
and importing it installs the torchvision alias that ``basicsr==1.4.2`` needs. Every kit file that imports
``basicsr`` imports this module first.
"""
from __future__ import annotations

import filecmp
import importlib
import importlib.util
import inspect
import sys
import warnings
from typing import Optional

LEGACY_TORCHVISION = 'torchvision.transforms.functional_tensor'


def install_torchvision_alias() -> None:
    """Make ``import torchvision.transforms.functional_tensor`` work (idempotent, nothing on disk changed).

    ``basicsr==1.4.2`` (PyPI) imports that private module, which torchvision removed in 0.17; its only
    use there is ``rgb_to_grayscale``, which lives on in ``torchvision.transforms.functional``. This runs
    when this module is imported: BasicSR imports its ``archs`` before its ``data`` package, and the kit's
    arch file imports this module before anything of BasicSR, so the 1.4.2 tree imports too.
    """
    if LEGACY_TORCHVISION in sys.modules:
        return
    try:
        if importlib.util.find_spec(LEGACY_TORCHVISION) is not None:
            return
    except ModuleNotFoundError:  # torchvision itself is missing: basicsr will say so
        return
    sys.modules[LEGACY_TORCHVISION] = importlib.import_module('torchvision.transforms.functional')


install_torchvision_alias()


class KitCopyWarning(UserWarning):
    """Two copies of a kit file register the same name and their contents differ."""


def source_file_of(obj) -> Optional[str]:
    """The file defining ``obj``; None when Python cannot tell (a module loaded from a spec and never put in
    ``sys.modules``)."""
    try:
        return inspect.getsourcefile(obj)
    except TypeError:
        return None


def register_once(registry, obj, source_file: str):
    """``registry.register(obj)`` that tolerates a second copy of the same kit file.

    When a kit file is both dropped into a BasicSR checkout and imported from the installed
    ``asid_arch`` package, the first copy imported keeps the name. If the two files differ (one of
    them is outdated), a :class:`KitCopyWarning` says which file is used and which is ignored.
    """
    name = obj.__name__
    if name not in registry:
        registry.register(obj)
        return obj
    used = source_file_of(registry.get(name)) or '?'
    try:
        same = filecmp.cmp(used, source_file, shallow=False)
    except OSError:
        same = False
    if not same:
        warnings.warn(f'{name} is registered from {used}; {source_file} differs from that file and is not used '
                      '(update the copy in the BasicSR checkout with `asid-kit install`)', KitCopyWarning,
                      stacklevel=2)
    return obj
