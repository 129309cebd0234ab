"""Models (kit file ``asid_model.py``): importing this package registers ``ASIDModel`` in BasicSR's
``MODEL_REGISTRY`` and ``calculate_psnr_matlab`` in its ``METRIC_REGISTRY`` (and the architectures)."""
from . import asid_model  # noqa: F401  (registration)
