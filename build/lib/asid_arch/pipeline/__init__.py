"""BasicSR's train/test pipelines run with safe option reading, option checks and checked data."""
