"""Shared helpers: tiny random Hugging Face models, their twins of ours, and batches."""

from __future__ import annotations

import json
import os
from pathlib import Path

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


@pytest.fixture(scope="session")
def launch_world(tmp_path_factory):
    """A synthetic world of 80 images (12 regions x 32 features) and its store, for the jobs' tests."""
    from data.store import build_store
    from data.synth import write_world

    root = tmp_path_factory.mktemp("launch")
    write_world(root / "world", images=80, feat_dim=32, regions=12, progress=False)
    build_store(root / "world" / "store", [root / "world" / "features" / "train.tsv",
                                           root / "world" / "features" / "val.tsv"], progress=False)
    return root


def train_sentences(world: Path) -> int:
    """The sentences of ``launch_world``'s pre-training corpus, all sources."""
    rows = json.loads((world / "world" / "lxmert" / "train.json").read_text())
    return sum(len(sents) for row in rows for sents in row["sentf"].values())


def run_args(world: Path, run_dir: Path, ds: str, *extra: str) -> list[str]:
    """The pre-training job's arguments on ``launch_world``: tiny preset, 2 x 8 = 16 a step, 1 worker."""
    root, w = Path(__file__).resolve().parents[1], world / "world"
    return ["--config", str(root / "launcher" / "configs" / "synth_tiny.yaml"), f"run_dir={run_dir}",
            f"deepspeed={root / 'ds_configs' / ds}", f"data.store={w / 'store'}", f"data.train=[{w / 'lxmert' / 'train.json'}]",
            f"data.valid=[{w / 'lxmert' / 'minival.json'}]", f"data.answers={w / 'lxmert' / 'all_ans.json'}",
            f"data.tokenizer={w / 'vocab.txt'}", "data.num_workers=1", "log.progress=false", "log.every=2",
            "train.micro_batch_size=8", "train.global_batch_size=16", "log.valid_batches=2", *extra]
