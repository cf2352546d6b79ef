"""Prediction heads: masked LM, matching, object (labels and features), answer / classifier."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import LxmertConfig
from .layers import LayerNorm
from .tied import TiedEmbedding, TiedGradient


class HeadTransform(nn.Module):
    """Linear, GELU, LayerNorm (BERT's prediction-head transform)."""

    def __init__(self, config: LxmertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.norm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(F.gelu(self.dense(x)))


class MaskedLMHead(nn.Module):
    """Transform, then the vocabulary projection tied to the word embeddings, plus a bias.

    The decoder weight is not a parameter of this module: the caller passes the word
    embedding module, so the state dict holds the table once.
    """

    def __init__(self, config: LxmertConfig) -> None:
        super().__init__()
        self.transform = HeadTransform(config)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, x: Tensor, word: TiedEmbedding, sink: TiedGradient | None = None) -> Tensor:
        return word(self.transform(x), sink, decode_bias=self.bias)


class ObjectHead(nn.Module):
    """Transform, then object-label, attribute-label and feature-regression projections."""

    def __init__(self, config: LxmertConfig) -> None:
        super().__init__()
        self.transform = HeadTransform(config)
        self.obj = nn.Linear(config.hidden_size, config.num_object_labels) if config.visual_obj_loss else None
        self.attr = nn.Linear(config.hidden_size, config.num_attr_labels) if config.visual_attr_loss else None
        self.feat = nn.Linear(config.hidden_size, config.visual_feat_dim) if config.visual_feat_loss else None

    def forward(self, visn: Tensor) -> dict[str, Tensor]:
        x = self.transform(visn)
        # a plain loop: torch.compile breaks its graph on a walrus inside a comprehension
        out = {}
        for name, proj in (("obj", self.obj), ("attr", self.attr), ("feat", self.feat)):
            if proj is not None:
                out[name] = proj(x)
        return out


class ClassifierHead(nn.Module):
    """Linear, GELU, LayerNorm, Linear: the answer head (H -> 2H -> answers) and the
    NLVR2 classifier (2H -> 2H -> 2)."""

    def __init__(self, in_dim: int, hidden_dim: int, num_labels: int, eps: float) -> None:
        super().__init__()
        self.fc = nn.Linear(in_dim, hidden_dim)
        self.norm = LayerNorm(hidden_dim, eps=eps)
        self.out = nn.Linear(hidden_dim, num_labels)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.norm(F.gelu(self.fc(x))))


def answer_head(config: LxmertConfig, num_labels: int) -> ClassifierHead:
    return ClassifierHead(config.hidden_size, 2 * config.hidden_size, num_labels, config.layer_norm_eps)
