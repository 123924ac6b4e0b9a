"""``python -m bench.model_sizes``: each family's default model, its trainable parameters and the bytes DDP
all-reduces per optimizer step (every gradient once, fp32: 4 bytes a parameter; DDP reduces in fp32
buckets whatever the autocast dtype).

Models are built with the families' own default settings (``DEFAULT_MODEL`` of each ``train.py``) at the
real data sets' input sizes. Two sizes depend on the data: Melon's vocabularies (the autoencoder's
embedding and output tables are per song, tag and artist) and the speaker count; they are given at the
stated sizes, and Melon's per-item cost is printed so any vocabulary can be priced.
"""

from __future__ import annotations

import torch

from featurestore.schemas import fsd as fsd_schema
from featurestore.schemas import mssd
from featurestore.schemas import speakers as speakers_schema

__all__ = ["REAL_SIZES", "family_models", "main", "trainable"]

# input sizes at real scale; Melon's vocabularies are upper bounds (every song of the release, before
# --min-count and the width caps cut them): the all-reduce grows with them
REAL_SIZES = {"melon_songs": 707_989, "melon_tags": 30_000, "melon_artists": 100_000, "yandex_features": 512,
              "speakers": 40, "fsd_classes": 80, "title_songs": 200_000, "title_pieces": 6_000}


def trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def family_models(sizes: dict | None = None) -> dict[str, torch.nn.Module]:
    """Each family's default model at ``sizes`` (default :data:`REAL_SIZES`), on the meta device (no memory)."""
    from models.fsd.model import FsdCNN
    from models.fsd.train import DEFAULT_MODEL as FSD
    from models.melon.model import PlaylistDAE
    from models.melon.title_model import TitleEncoder
    from models.melon.train import DEFAULT_MODEL as MELON
    from models.skip.model import SkipModel
    from models.skip.train import DEFAULT_MODEL as SKIP
    from models.speakers.model import SpeakerNet
    from models.speakers.train import DEFAULT_MODEL as SPEAKERS
    from models.yandex.model import ArtistEncoder
    from models.yandex.train import DEFAULT_MODEL as YANDEX

    s = {**REAL_SIZES, **(sizes or {})}
    with torch.device("meta"):
        return {
            "skip": SkipModel(n_features=len(mssd.TRACK_FEATURES), half=mssd.MAX_HALF, **SKIP),
            "melon": PlaylistDAE(s["melon_songs"], s["melon_tags"], s["melon_artists"],
                                 **{k: v for k, v in MELON.items() if k != "share_artists"}),
            "melon_title": TitleEncoder(s["title_pieces"], s["title_songs"], s["melon_tags"], 64, 2, 4, 24),
            "yandex": ArtistEncoder(arch="transformer", n_features=s["yandex_features"], **YANDEX),
            "fsd": FsdCNN(fsd_schema.N_MELS, s["fsd_classes"], **FSD),
            "speakers": SpeakerNet(n_mels=speakers_schema.N_MELS, n_speakers=s["speakers"], **SPEAKERS),
        }


def sizes_report(sizes: dict | None = None) -> dict:
    """Per family: trainable parameters and all-reduce bytes per step; Melon's bytes per vocabulary item."""
    out = {name: {"parameters": trainable(m), "allreduce_bytes_per_step": 4 * trainable(m)}
           for name, m in family_models(sizes).items()}
    base = {**REAL_SIZES, **(sizes or {})}
    one_more = family_models({**base, "melon_songs": base["melon_songs"] + 1})["melon"]
    out["melon"]["parameters_per_song"] = trainable(one_more) - out["melon"]["parameters"]
    out["sizes"] = base
    return out


def main() -> None:
    report = sizes_report()
    print(f"{'family':<12} {'parameters':>12} {'all-reduce / step':>18}")
    for name, row in report.items():
        if name != "sizes":
            print(f"{name:<12} {row['parameters']:>12,} {row['allreduce_bytes_per_step'] / 2**20:>15.1f} MB")
    print(f"melon: {report['melon']['parameters_per_song']} parameters per song of the vocabulary; sizes {report['sizes']}")


if __name__ == "__main__":
    main()
