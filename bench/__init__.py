"""Benchmarks: fstore against the common baseline and the physical limit, side by side in one run."""
