"""Small helpers shared across the package: docstrings and defaults."""
