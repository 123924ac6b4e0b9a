"""The seed's metric-learning objective: MultiSimilarityLoss + CircleLoss + TripletMarginLoss, all from
pytorch-metric-learning (its losses and miners; nothing re-implemented here), or any of them alone
(``terms``; training's default, :data:`DEFAULT_LOSS`, is the triplet term alone, chosen by the ablation).

Pairs and triplets come from the batch itself: the loader gives m clips of each of P artists
(``SegmentBatches(balanced=(m, P))``), so every clip has m - 1 positives and (P - 1) m negatives.
The multi-similarity miner picks the informative pairs for MultiSimilarityLoss; the triplet loss uses
semi-hard triplets; CircleLoss weighs all pairs itself.
"""

from __future__ import annotations

import torch
from pytorch_metric_learning import losses, miners
from torch import nn

__all__ = ["DEFAULT_LOSS", "TERMS", "MetricLoss"]

TERMS = ("multi_similarity", "circle", "triplet")
DEFAULT_LOSS = {"ms_alpha": 2.0, "ms_beta": 50.0, "ms_base": 0.5, "ms_epsilon": 0.1, "circle_m": 0.4,
                "circle_gamma": 80.0, "triplet_margin": 0.1, "terms": ["triplet"]}
# training's default is the triplet term alone: in the ablation (README, 3 seeds) it beat the seed's sum
# of the three by 0.14-0.22 nDCG@100 on every seed


class MetricLoss(nn.Module):
    """Sum of the losses named in ``terms`` (default: all three) on (B, d) embeddings with (B,) integer
    labels; ``parts`` has each term (a single term is the ablation of the sum)."""

    def __init__(self, ms_alpha: float = 2.0, ms_beta: float = 50.0, ms_base: float = 0.5, ms_epsilon: float = 0.1,
                 circle_m: float = 0.4, circle_gamma: float = 80.0, triplet_margin: float = 0.1,
                 terms: list[str] | tuple[str, ...] = TERMS):
        super().__init__()
        unknown = set(terms) - set(TERMS)
        if unknown or not terms:
            raise ValueError(f"loss terms must be a non-empty subset of {', '.join(TERMS)}, got {list(terms)}")
        self.terms = tuple(t for t in TERMS if t in terms)
        self.ms = losses.MultiSimilarityLoss(alpha=ms_alpha, beta=ms_beta, base=ms_base)
        self.ms_miner = miners.MultiSimilarityMiner(epsilon=ms_epsilon)
        self.circle = losses.CircleLoss(m=circle_m, gamma=circle_gamma)
        self.triplet = losses.TripletMarginLoss(margin=triplet_margin)
        self.triplet_miner = miners.TripletMarginMiner(margin=triplet_margin, type_of_triplets="semihard")
        self.parts: dict[str, torch.Tensor] = {}

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        emb = embeddings.float()  # the losses' exponentials want float32 under autocast
        terms = {
            "multi_similarity": lambda: self.ms(emb, labels, self.ms_miner(emb, labels)),
            "circle": lambda: self.circle(emb, labels),
            "triplet": lambda: self.triplet(emb, labels, self.triplet_miner(emb, labels)),
        }
        self.parts = {name: terms[name]() for name in self.terms}
        return sum(self.parts.values())
