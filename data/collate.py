"""Padding and batching into the typed batches the models take directly."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor


def pad_1d(seqs: list[Tensor], value: int | float = 0) -> Tensor:
    out = seqs[0].new_full((len(seqs), max(s.shape[0] for s in seqs)), value)
    for i, s in enumerate(seqs):
        out[i, : s.shape[0]] = s
    return out


def pad_regions(arrays: list[Tensor], value: float = 0.0) -> tuple[Tensor, Tensor | None]:
    """Stack (N_i, ...) tensors into (B, max N, ...); the mask is None when no padding was needed."""
    n = max(a.shape[0] for a in arrays)
    out = arrays[0].new_full((len(arrays), n, *arrays[0].shape[1:]), value)
    for i, a in enumerate(arrays):
        out[i, : a.shape[0]] = a
    if all(a.shape[0] == n for a in arrays):
        return out, None
    mask = torch.zeros(len(arrays), n, dtype=torch.long)
    for i, a in enumerate(arrays):
        mask[i, : a.shape[0]] = 1
    return out, mask


class _Batch:
    """Shared behaviour: device moves and the model's keyword arguments."""

    def to(self, device, non_blocking: bool = False):
        moved = {}
        for f in fields(self):
            v = getattr(self, f.name)
            moved[f.name] = v.to(device, non_blocking=non_blocking) if isinstance(v, Tensor) else v
        return type(self)(**moved)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def for_transfer(self):
        """In a DataLoader worker: the same batch with the tensors of each dtype laid out in one
        buffer, so that it crosses to the training process as 2-3 shared-memory segments instead of
        one per tensor (receiving a segment costs a fraction of a millisecond; see BENCHMARKS.md).
        In the training process itself: the batch unchanged."""
        from torch.utils.data import get_worker_info

        if get_worker_info() is None:
            return self
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        groups: dict[torch.dtype, list[str]] = {}
        for name, v in values.items():
            if isinstance(v, Tensor):
                groups.setdefault(v.dtype, []).append(name)
        for dtype, names in groups.items():
            buffer = torch.empty(sum(values[n].numel() for n in names), dtype=dtype)
            offset = 0
            for n in names:
                t = values[n]
                values[n] = buffer[offset: offset + t.numel()].view(t.shape).copy_(t)
                offset += t.numel()
        return type(self)(**values)


@dataclass
class PretrainingBatch(_Batch):
    input_ids: Tensor  # (B, T)
    attention_mask: Tensor  # (B, T)
    labels: Tensor  # (B, T) masked-LM targets, -100 elsewhere
    visual_feats: Tensor  # (B, R, D) with masked regions replaced
    visual_pos: Tensor  # (B, R, 4) normalised boxes
    visual_attention_mask: Tensor | None  # (B, R) or None when every image has R regions
    obj_ids: Tensor
    obj_weights: Tensor
    attr_ids: Tensor
    attr_weights: Tensor
    feat_targets: Tensor  # (B, R, D) original features
    feat_mask: Tensor  # (B, R) 1 = masked region
    matched_label: Tensor  # (B,)
    ans: Tensor  # (B,) answer id, -100 = none

    def model_inputs(self) -> dict:
        """Keyword arguments for ``LxmertForPretraining`` (and Hugging Face's model)."""
        return dict(
            input_ids=self.input_ids, attention_mask=self.attention_mask, visual_feats=self.visual_feats,
            visual_pos=self.visual_pos, visual_attention_mask=self.visual_attention_mask, labels=self.labels,
            matched_label=self.matched_label, ans=self.ans,
            obj_labels={"obj": (self.obj_ids, self.obj_weights), "attr": (self.attr_ids, self.attr_weights),
                        "feat": (self.feat_targets, self.feat_mask)},
        )


def collate_pretraining(examples: list[dict], pack: bool = True) -> PretrainingBatch:
    """``pack=False``: never lay the batch out for transfer (bench/loader.py's anchor)."""
    ids = pad_1d([e["input_ids"] for e in examples], 0)
    feats, vmask = pad_regions([e["visual_feats"] for e in examples])
    batch = PretrainingBatch(
        input_ids=ids, attention_mask=pad_1d([torch.ones_like(e["input_ids"]) for e in examples], 0),
        labels=pad_1d([e["labels"] for e in examples], -100), visual_feats=feats,
        visual_pos=pad_regions([e["visual_pos"] for e in examples])[0], visual_attention_mask=vmask,
        obj_ids=pad_regions([e["obj_ids"] for e in examples], -100)[0],
        obj_weights=pad_regions([e["obj_weights"] for e in examples])[0],
        attr_ids=pad_regions([e["attr_ids"] for e in examples], -100)[0],
        attr_weights=pad_regions([e["attr_weights"] for e in examples])[0],
        feat_targets=pad_regions([e["feat_targets"] for e in examples])[0],
        feat_mask=pad_regions([e["feat_mask"] for e in examples])[0],
        matched_label=torch.tensor([e["matched_label"] for e in examples]),
        ans=torch.tensor([e["ans"] for e in examples]),
    )
    return batch.for_transfer() if pack else batch
