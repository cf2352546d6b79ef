"""Shared helpers: tiny random Hugging Face models, their twins of ours, and batches."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from model import LxmertConfig, LxmertForPretraining  # noqa: E402
from model import weights as W  # noqa: E402

TINY_HF = dict(vocab_size=99, hidden_size=32, num_attention_heads=4, intermediate_size=48, l_layers=2, r_layers=1,
               x_layers=2, num_qa_labels=11, num_object_labels=13, num_attr_labels=7, visual_feat_dim=24,
               max_position_embeddings=40)
BASE_WIDTH_HF = dict(l_layers=1, r_layers=1, x_layers=1)  # the paper's widths, fewer layers


def hf_model(cls_name: str = "LxmertForPreTraining", seed: int = 0, **config):
    """A Hugging Face LXMERT with every parameter random (LayerNorms and biases included)."""
    import transformers

    torch.manual_seed(seed)
    hf = getattr(transformers, cls_name)(transformers.LxmertConfig(**config)).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0.0, 0.1)
    return hf


def ours_from_hf(hf, cls=LxmertForPretraining):
    """Our model with the Hugging Face model's weights (through the key conversion)."""
    ours = cls(LxmertConfig.from_hf_dict(hf.config.to_dict())).eval()
    state, unknown = W.to_native(hf.state_dict(), W.HF)
    assert unknown == []
    ours.load_native_state(state, skip_heads=cls is not LxmertForPretraining)
    return ours


def make_batch(cfg, batch: int = 3, tokens: int = 9, regions: int = 6, seed: int = 1, padded: bool = True,
               targets: bool = True) -> dict:
    """Inputs (with padding) and targets for every objective, in Hugging Face's argument names."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, cfg.vocab_size, (batch, tokens), generator=g)
    mask = torch.ones(batch, tokens, dtype=torch.long)
    if padded:
        mask[1, tokens - 3:] = 0
        mask[-1, tokens // 2:] = 0
    ids = ids.masked_fill(mask == 0, 0)
    out = dict(
        input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids),
        visual_feats=torch.randn(batch, regions, cfg.visual_feat_dim, generator=g),
        visual_pos=torch.rand(batch, regions, cfg.visual_pos_dim, generator=g),
    )
    if targets:
        labels = torch.full((batch, tokens), -100)
        labels[:, 1] = ids[:, 1]
        labels[0, 3] = 5
        out.update(
            labels=labels,
            matched_label=torch.tensor([1, 0] * (batch // 2) + [1] * (batch % 2)),
            ans=torch.tensor([2] + [-100] * (batch - 2) + [1]),
            obj_labels={
                "obj": (torch.randint(0, cfg.num_object_labels, (batch, regions), generator=g), torch.rand(batch, regions, generator=g)),
                "attr": (torch.randint(0, cfg.num_attr_labels, (batch, regions), generator=g), torch.rand(batch, regions, generator=g)),
                "feat": (torch.randn(batch, regions, cfg.visual_feat_dim, generator=g),
                         (torch.rand(batch, regions, generator=g) < 0.3).float()),
            },
        )
    return out


@pytest.fixture
def tiny_pair():
    hf = hf_model(**TINY_HF)
    return hf, ours_from_hf(hf)
