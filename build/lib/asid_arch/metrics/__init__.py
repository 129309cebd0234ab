"""Metrics BasicSR lacks (kit files: ``asid_metric.py``). Importing this package imports nothing."""
