"""Synthetic data generators that write the raw public-dataset formats (see DATASETS.md)."""
