"""Models registered in BasicSR's ``MODEL_REGISTRY`` on import."""
from .asid_model import ASIDModel

__all__ = ['ASIDModel']
