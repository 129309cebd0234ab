"""Kit utilities (``asid_*.py``: files, weights, tiling, precision, compatibility). Importing this package
imports nothing."""
