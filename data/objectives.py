"""The pre-training objectives as separate, seeded transformations of one example.

Every function takes an explicit ``torch.Generator``; the dataset seeds one per example
from (seed, epoch, index), so an example's masks do not depend on workers or on resume.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

IGNORE = -100


@dataclass
class ObjectiveConfig:
    """Which objectives run and with what probabilities (the paper's values by default)."""

    mlm: bool = True
    mlm_probability: float = 0.15
    visual: bool = True  # masked object prediction: feature regression and label classification
    obj_mask_probability: float = 0.15
    #: "confidence": obj/attr losses on all regions weighted by detector confidence (the original code);
    #: "mask": only on masked regions.
    label_weights: str = "confidence"
    matching: bool = True
    mismatch_probability: float = 0.5
    qa: bool = True
    qa_start_epoch: int = 0  # the paper's 10 + 10 schedule: 10 (per-objective loss weights: LxmertConfig.loss_weights)

    def __post_init__(self) -> None:
        for name in ("mlm_probability", "obj_mask_probability", "mismatch_probability"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"objectives.{name} must be in [0, 1], got {value!r}")
        if self.label_weights not in ("confidence", "mask"):
            raise ValueError(f"objectives.label_weights must be 'confidence' or 'mask', got {self.label_weights!r}")
        if self.qa_start_epoch < 0:
            raise ValueError(f"objectives.qa_start_epoch must be >= 0, got {self.qa_start_epoch}")


def mask_tokens(ids: Tensor, special: Tensor, vocab_size: int, mask_id: int, gen: torch.Generator,
                probability: float = 0.15) -> tuple[Tensor, Tensor]:
    """BERT masking: each non-special piece is chosen with ``probability``; a chosen piece
    becomes [MASK] 80%, a random id 10%, stays 10%. Returns (inputs, labels with -100 elsewhere)."""
    chosen = (torch.rand(ids.shape, generator=gen) < probability) & ~special
    labels = torch.where(chosen, ids, IGNORE)
    roll = torch.rand(ids.shape, generator=gen)
    random_ids = torch.randint(0, vocab_size, ids.shape, generator=gen)
    inputs = torch.where(chosen & (roll < 0.8), mask_id, ids)
    inputs = torch.where(chosen & (roll >= 0.8) & (roll < 0.9), random_ids, inputs)
    return inputs, labels


def mlm_slots_for(examples: int, maskable: int, probability: float, tail: float = 1e-12) -> int:
    """Masked-LM target slots for a batch of ``examples`` with at most ``maskable`` maskable pieces
    each (:func:`mask_tokens` chooses each with ``probability``): the smallest count that a batch
    exceeds with probability at most ``tail`` (the binomial's upper tail, computed exactly)."""
    n = examples * maskable
    if probability <= 0.0 or n == 0:
        return 1
    if probability >= 1.0:
        return n
    log_p, log_q = math.log(probability), math.log1p(-probability)
    log_pmf = [math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * log_p + (n - k) * log_q
               for k in range(n + 1)]
    above = 0.0  # P(X > k), summed from the top
    for k in range(n, -1, -1):
        if above + math.exp(log_pmf[k]) > tail:
            return max(k, 1)
        above += math.exp(log_pmf[k])
    return 1


def mask_regions(feats: Tensor, replacement: Callable[[Tensor], Tensor], gen: torch.Generator,
                 probability: float = 0.15) -> tuple[Tensor, Tensor]:
    """Each region is chosen with ``probability``; a chosen region's feature becomes zeros 80%,
    another image's region 10% (``replacement(rows)``: the features for a boolean row mask, called
    only when some region is swapped), stays 10%. Returns (masked features, float mask of chosen
    regions). Boxes are never masked."""
    n = feats.shape[0]
    chosen = torch.rand(n, generator=gen) < probability
    roll = torch.rand(n, generator=gen)
    out = feats.clone()
    out[chosen & (roll < 0.8)] = 0
    swap = chosen & (roll >= 0.8) & (roll < 0.9)
    if swap.any():
        out[swap] = replacement(swap).to(out.dtype)
    return out, chosen.to(torch.float32)


def sample_answer(answers: tuple[tuple[int, float], ...], gen: torch.Generator) -> int:
    """One answer id, drawn with probability proportional to its score; -100 if none."""
    if not answers:
        return IGNORE
    scores = torch.tensor([max(s, 0.0) for _, s in answers], dtype=torch.float64)
    if scores.sum() <= 0:
        return IGNORE
    return answers[int(torch.multinomial(scores, 1, generator=gen))][0]
