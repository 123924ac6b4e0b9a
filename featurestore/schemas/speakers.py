"""Speaker classification homework (VoxCeleb subset, DATASETS.md section 5): files, fields, mel sizes."""

from __future__ import annotations

DATASET_DIR = "Dataset"  # the files live in RAW_DIR/Dataset (or RAW_DIR itself)
MAPPING = "mapping.json"  # {"speaker2id": {name: i}, "id2speaker": {"i": name}}
METADATA = "metadata.json"  # {"n_mels": 40, "speakers": {name: [UTTERANCE, ...]}}
TESTDATA = "testdata.json"  # {"n_mels": 40, "utterances": [UTTERANCE, ...]}
TEST_LABELS = "test_labels.json"  # {feature_path: name}; not in the real homework
UTTERANCE = {"feature_path": str, "mel_len": int}  # the fields of one utterance entry
FEATURE_GLOB = "uttr-*.pt"  # torch.save of a float tensor (mel_len, n_mels)

N_MELS = 40
MIN_MEL_LEN, MAX_MEL_LEN = 150, 900  # the synthetic generator's range (ingest accepts any mel_len >= 0)
