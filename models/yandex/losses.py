"""The seed's metric-learning objective: MultiSimilarityLoss + CircleLoss + TripletMarginLoss, all from
pytorch-metric-learning (its losses and miners; nothing re-implemented here).

Pairs and triplets come from the batch itself: the loader gives m clips of each of P artists
(``SegmentBatches(balanced=(m, P))``), so every clip has m - 1 positives and (P - 1) m negatives.
The multi-similarity miner picks the informative pairs for MultiSimilarityLoss; the triplet loss uses
semi-hard triplets; CircleLoss weighs all pairs itself.
"""

from __future__ import annotations

import torch
from pytorch_metric_learning import losses, miners
from torch import nn

__all__ = ["DEFAULT_LOSS", "MetricLoss"]

DEFAULT_LOSS = {"ms_alpha": 2.0, "ms_beta": 50.0, "ms_base": 0.5, "ms_epsilon": 0.1, "circle_m": 0.4,
                "circle_gamma": 80.0, "triplet_margin": 0.1}


class MetricLoss(nn.Module):
    """Sum of the three losses on (B, d) embeddings with (B,) integer labels; ``parts`` has each term."""

    def __init__(self, ms_alpha: float = 2.0, ms_beta: float = 50.0, ms_base: float = 0.5, ms_epsilon: float = 0.1,
                 circle_m: float = 0.4, circle_gamma: float = 80.0, triplet_margin: float = 0.1):
        super().__init__()
        self.ms = losses.MultiSimilarityLoss(alpha=ms_alpha, beta=ms_beta, base=ms_base)
        self.ms_miner = miners.MultiSimilarityMiner(epsilon=ms_epsilon)
        self.circle = losses.CircleLoss(m=circle_m, gamma=circle_gamma)
        self.triplet = losses.TripletMarginLoss(margin=triplet_margin)
        self.triplet_miner = miners.TripletMarginMiner(margin=triplet_margin, type_of_triplets="semihard")
        self.parts: dict[str, torch.Tensor] = {}

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        emb = embeddings.float()  # the losses' exponentials want float32 under autocast
        self.parts = {
            "multi_similarity": self.ms(emb, labels, self.ms_miner(emb, labels)),
            "circle": self.circle(emb, labels),
            "triplet": self.triplet(emb, labels, self.triplet_miner(emb, labels)),
        }
        return sum(self.parts.values())
