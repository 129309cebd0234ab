"""Metrics BasicSR lacks, registered in ``METRIC_REGISTRY`` (usable as ``type:`` in option files).

They live in the kit file ``models/asid_model.py`` (BasicSR scans its models folder, not a metrics
folder); this module re-exports them.
"""
from .models.asid_model import calculate_psnr_matlab, y_channel_uint8

__all__ = ['calculate_psnr_matlab', 'y_channel_uint8']
