"""Tiled inference with the reference evaluation protocol (defined in the kit file ``models/asid_model.py``)."""
from .models.asid_model import DEFAULT_OVERLAP, DEFAULT_TILE, tile_forward, tile_origins

__all__ = ['DEFAULT_OVERLAP', 'DEFAULT_TILE', 'tile_forward', 'tile_origins']
