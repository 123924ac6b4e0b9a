"""FSDKaggle2019 (DATASETS.md section 4): file names, label columns, log-mel parameters."""

from __future__ import annotations

# (split folder / CSV stem, curated?) in store order
TRAIN_SPLITS = (("train_curated", True), ("train_noisy", False))
TEST_DIR = "test"
SUBMISSION = "sample_submission.csv"  # fname + one column per class: the class list
FNAME, LABELS = "fname", "labels"
LABEL_COLUMNS = [FNAME, LABELS]
LABEL_SEPARATOR = ","  # several labels in one quoted field

# log-mel frames (ingest/fsd.py LogMel)
SAMPLE_RATE = 44100
N_FFT = 1764  # 40 ms
HOP = 220  # 5 ms
N_MELS = 64
F_MIN = 20.0
TOP_DB = 80.0
