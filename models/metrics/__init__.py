"""Official competition metrics, each reproducing its challenge's reference scorer exactly.

* :mod:`.spotify_skip` - Spotify Sequential Skip Prediction (crowdAI): mean average accuracy.
* :mod:`.fsd_lwlrap` - Freesound Audio Tagging 2019 (FSDKaggle2019): lwlrap.
* :mod:`.yandex_ndcg` - Yandex Cup 2022 audio: artist nDCG@100.
* :mod:`.speakers` - speaker classification: accuracy.
* :mod:`.melon` - Kakao Arena Melon Playlist Continuation: 0.85 song nDCG@100 + 0.15 tag nDCG@10.
* :mod:`.retrieval` - batched exact cosine top-k for building retrieval submissions (imports torch
  lazily, on first access of ``top_k_cosine``).
"""

from typing import TYPE_CHECKING, Any

from models.metrics.fsd_lwlrap import lwlrap, lwlrap_per_class
from models.metrics.melon import melon_score
from models.metrics.speakers import accuracy
from models.metrics.spotify_skip import (
    SkipScore,
    average_accuracy,
    evaluate_skip,
)
from models.metrics.spotify_skip import read_submission as read_skip_submission
from models.metrics.spotify_skip import write_submission as write_skip_submission
from models.metrics.yandex_ndcg import (
    ndcg_at_100,
    ndcg_per_query,
    parse_submission_lines,
)
from models.metrics.yandex_ndcg import read_submission as read_yandex_submission
from models.metrics.yandex_ndcg import write_submission as write_yandex_submission

if TYPE_CHECKING:
    from models.metrics.retrieval import top_k_cosine

__all__ = [
    "SkipScore",
    "accuracy",
    "average_accuracy",
    "evaluate_skip",
    "lwlrap",
    "lwlrap_per_class",
    "melon_score",
    "ndcg_at_100",
    "ndcg_per_query",
    "parse_submission_lines",
    "read_skip_submission",
    "read_yandex_submission",
    "top_k_cosine",
    "write_skip_submission",
    "write_yandex_submission",
]


def __getattr__(name: str) -> Any:
    if name == "top_k_cosine":
        from models.metrics.retrieval import top_k_cosine

        return top_k_cosine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
