"""Architectures registered in BasicSR's ``ARCH_REGISTRY`` on import."""
from .asid_arch import ASID, asid, asid_d8
from .asid_layouts import state_dict_from_reference, state_dict_to_reference
from .omnisr_arch import OmniSR, omnisr_state_dict_from_reference, omnisr_state_dict_to_reference

__all__ = ['ASID', 'asid', 'asid_d8', 'state_dict_from_reference', 'state_dict_to_reference', 'OmniSR',
           'omnisr_state_dict_from_reference', 'omnisr_state_dict_to_reference']
