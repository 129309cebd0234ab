"""The package's commands, one module each (console entry points listed once, in setup.py)."""
