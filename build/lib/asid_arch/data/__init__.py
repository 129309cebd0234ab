"""Data sets: asid-prepare's steps and its record."""
