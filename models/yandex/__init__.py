"""Yandex Cup 2022 artist retrieval: metric-learning track encoders trained from a store.

* :mod:`.model` - :class:`ArtistEncoder` (``transformer`` or torchaudio ``conformer`` backbone);
* :mod:`.losses` - :class:`MetricLoss`, MultiSimilarity + Circle + TripletMargin (pytorch-metric-learning),
  or any one alone (training's default: the triplet term);
* :mod:`.augment` - :func:`augment_frames`: random zeroing, channel and time-step permutations on the device;
* :mod:`.data` - the artist-disjoint split, feature statistics, track ids;
* :mod:`.train` - :func:`train_yandex`: batches, curriculum, validation nDCG@100, handed to
  :func:`models.training.fit`;
* :mod:`.embed` - :func:`embed_clips`: whole clips or rolling windows;
* :mod:`.rerank` - top-k search, the seed's re-ranking and ensembles, batched on the device;
* :mod:`.evaluate` - :func:`evaluate_yandex`: every model, re-ranked or not, the ensemble and the
  baselines on the held-out artists, and the test submission.
"""

from .augment import augment_frames
from .embed import embed_clips
from .evaluate import evaluate_yandex, load_model
from .losses import MetricLoss
from .model import ArtistEncoder
from .rerank import ensemble, rerank, top_k
from .train import train_yandex

__all__ = ["ArtistEncoder", "MetricLoss", "augment_frames", "embed_clips", "ensemble", "evaluate_yandex",
           "load_model", "rerank", "top_k", "train_yandex"]
