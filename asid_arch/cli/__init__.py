"""The package's commands, one module each (listed once, with their console scripts, in cli/entry.py)."""
