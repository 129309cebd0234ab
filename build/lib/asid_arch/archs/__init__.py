"""Architectures (kit files): importing this package registers ASID, ASID-D8 and Omni-SR in BasicSR's
``ARCH_REGISTRY`` (the network files install the torchvision alias BasicSR 1.4.2 needs first)."""
from . import asid_arch, omnisr_arch  # noqa: F401  (registration)
