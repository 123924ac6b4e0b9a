"""One schema module per dataset: columns, dtypes, sizes and split rules, imported by synth, ingest,
loaders and models alike (nothing about a dataset's layout is written twice)."""
