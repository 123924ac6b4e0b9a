"""Streaming ingest of the public raw formats into stores.

- ``builder``: ``StoreBuilder`` (staging and commit, dictionaries, id lists, manifest, progress, failure
  cleanup) and the one ``IngestSummary`` every ingest returns.
- ``table``: the one reader of CSV / TSV (``read_table``, ``read_typed_csv`` for big typed files) and JSON
  (``read_json``, ``json_records``), errors naming file / line / column or item / field.
- ``clips``: ``ingest_clips`` and the ``ClipSource`` adapter protocol for one-matrix-per-item datasets.
- one module per dataset: ``spotify`` (+ ``sessions``: streaming ragged encode), and the clip source
  adapters ``yandex``, ``fsd``, ``speakers``. Names, sizes and file names come from ``featurestore.schemas``.
"""
