"""Yandex Cup 2022 artist retrieval (DATASETS.md section 3): file names, columns, feature sizes."""

from __future__ import annotations

TRAIN_META = "train_meta.tsv"  # trackid, artistid, archive_features_path
TEST_META = "test_meta.tsv"  # trackid, archive_features_path (artists hidden)
TRACK_ID, ARTIST_ID, FEATURES_PATH = "trackid", "artistid", "archive_features_path"
TRAIN_COLUMNS = [TRACK_ID, ARTIST_ID, FEATURES_PATH]
TEST_COLUMNS = [TRACK_ID, FEATURES_PATH]
FEATURE_ROOTS = {"train": "train_features", "test": "test_features"}  # the real release's feature roots

FEATURES = 512  # one .npy float matrix (FEATURES, T) per track
MIN_STEPS, MAX_STEPS = 1, 81  # T accepted by ingest; the real release has 81 at most
SYNTH_MIN_STEPS = 61  # the synthetic generator draws T in SYNTH_MIN_STEPS..MAX_STEPS
FOLDS = 10  # first component of archive_features_path: the fold id 0..9
