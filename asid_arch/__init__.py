"""ASID (Attention-Sharing Information Distillation) for BasicSR.

Importing this package installs a tiny torchvision alias that ``basicsr==1.4.2`` needs, then
registers the architectures in ``basicsr.utils.registry.ARCH_REGISTRY``.
"""
from .compat import install_torchvision_alias

install_torchvision_alias()

from .archs import ASID, asid, asid_d8, state_dict_from_reference, state_dict_to_reference  # noqa: E402
from .tiling import tile_forward  # noqa: E402
from . import metrics, models  # noqa: E402,F401  (registers ASIDModel and calculate_psnr_matlab)

__version__ = '0.1.0'
__all__ = ['ASID', 'asid', 'asid_d8', 'tile_forward', 'state_dict_from_reference', 'state_dict_to_reference']
