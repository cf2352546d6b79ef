"""Padding and batching into the typed batches the models take directly."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
from torch import Tensor


@dataclass
class Stacked:
    """A batch tensor not yet written: ``parts`` stacked along a new first dimension, each padded
    with ``value`` to the longest (its first dimension). :meth:`_Batch.build` writes it straight
    into the batch's buffer; ``groups`` views the stack as (*groups, ...) (NLVR2: (B, 2))."""

    parts: list[Tensor]
    value: int | float = 0
    groups: tuple[int, ...] | None = None
    length: int | None = None  # pad to this many instead of the longest (static shapes)

    @property
    def dtype(self) -> torch.dtype:
        return self.parts[0].dtype

    def _flat_shape(self) -> tuple[int, ...]:
        longest = max(p.shape[0] for p in self.parts)
        if self.length is not None:
            assert longest <= self.length, f"a part of {longest} rows exceeds the static length {self.length}"
            longest = self.length
        return (len(self.parts), longest, *self.parts[0].shape[1:])

    @property
    def shape(self) -> tuple[int, ...]:
        flat = self._flat_shape()
        return flat if self.groups is None else (*self.groups, *flat[1:])

    def write(self, out: Tensor) -> Tensor:
        assert all(p.dtype == out.dtype for p in self.parts), "the parts of a batch tensor share one dtype"
        flat = out.view(self._flat_shape())
        if all(p.shape[0] == flat.shape[1] for p in self.parts):  # the usual case: nothing to pad
            torch.stack(self.parts, out=flat)
        else:
            flat.fill_(self.value)
            for i, p in enumerate(self.parts):
                flat[i, : p.shape[0]] = p
        return out

    def tensor(self) -> Tensor:
        return self.write(torch.empty(self.shape, dtype=self.dtype))


@dataclass(frozen=True)
class StaticShapes:
    """Every batch padded to the same shape: ``tokens`` word pieces and ``regions`` regions an
    example, with both masks always present, and ``mlm_slots`` masked-LM target slots a batch
    (:func:`data.objectives.mlm_slots_for`), so a compiled step sees one shape (issue 15)."""

    tokens: int
    regions: int
    mlm_slots: int | None = None


def region_mask(arrays: list[Tensor], groups: tuple[int, ...] | None = None, length: int | None = None
                ) -> Tensor | None:
    """(B, max N) 1 where a region exists; None when every item has the same number of regions
    (with ``length``: always the (B, length) mask)."""
    n = max(a.shape[0] for a in arrays) if length is None else length
    if length is None and all(a.shape[0] == n for a in arrays):
        return None
    mask = torch.zeros(len(arrays), n, dtype=torch.long)
    for i, a in enumerate(arrays):
        mask[i, : a.shape[0]] = 1
    return mask if groups is None else mask.view(*groups, n)


class _Batch:
    """Shared behaviour: building (straight into shared memory in a loader worker), device moves
    and the model's keyword arguments."""

    @classmethod
    def build(cls, pack: bool = True, **values):
        """The batch of ``values``: :class:`Stacked` specs, tensors, or anything else (ids, None).

        In a DataLoader worker (and ``pack``), the tensors of each dtype are written straight into
        one shared-memory buffer, as torch's default_collate does for a single tensor: the batch
        crosses to the training process as 2-3 segments (receiving a segment costs a fraction of a
        millisecond; see BENCHMARKS.md), with no private copy made first and none made when sent.
        Elsewhere each becomes its own tensor."""
        from torch.utils.data import get_worker_info

        if not (pack and get_worker_info() is not None):
            return cls(**{k: v.tensor() if isinstance(v, Stacked) else v for k, v in values.items()})
        groups: dict[torch.dtype, list[str]] = {}
        for name, v in values.items():
            if isinstance(v, (Tensor, Stacked)):
                groups.setdefault(v.dtype, []).append(name)
        for dtype, names in groups.items():
            sizes = [math.prod(values[n].shape) for n in names]
            buffer = torch.empty(0, dtype=dtype)
            buffer = buffer.new(buffer._typed_storage()._new_shared(sum(sizes)))
            offset = 0
            for n, size in zip(names, sizes):
                v, view = values[n], buffer[offset: offset + size].view(values[n].shape)
                values[n] = v.write(view) if isinstance(v, Stacked) else view.copy_(v)
                offset += size
        return cls(**values)

    def pin_memory(self):
        """Called by the DataLoader's pinning thread (``pin_memory=True``; without this method torch
        would pass the batch on unpinned, and ``to(non_blocking=True)`` would not overlap): each
        buffer pinned once, its tensors viewed in the pinned copy as they were in the buffer."""
        return self._with_storages(lambda storage: storage.pin_memory())

    def _with_storages(self, convert: Callable[[torch.UntypedStorage], torch.UntypedStorage]):
        """The batch with every tensor's storage replaced by ``convert(storage)`` (once per storage)."""
        done: dict[int, torch.UntypedStorage] = {}
        values = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Tensor):
                storage = v.untyped_storage()
                if storage.data_ptr() not in done:
                    done[storage.data_ptr()] = convert(storage)
                v = torch.empty(0, dtype=v.dtype).set_(done[storage.data_ptr()], v.storage_offset(), v.shape, v.stride())
            values[f.name] = v
        return type(self)(**values)

    def to(self, device, non_blocking: bool = False):
        moved = {}
        for f in fields(self):
            v = getattr(self, f.name)
            moved[f.name] = v.to(device, non_blocking=non_blocking) if isinstance(v, Tensor) else v
        return type(self)(**moved)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def has_examples(self) -> dict[str, Tensor]:
        """For each loss that a batch can hold no example of: whether this one holds any (a 0-d
        tensor on the batch's device, so that asking never waits for the device)."""
        return {}


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
    matched_label: Tensor  # (B,) 1 matched, 0 mismatched, -100 = matching off
    ans: Tensor  # (B,) answer id, -100 = none
    mlm_slots: int | None = None  # static shapes: masked-LM positions the model projects

    def model_inputs(self) -> dict:
        """Keyword arguments for ``LxmertForPretraining`` (and Hugging Face's model, without static shapes)."""
        slots = {} if self.mlm_slots is None else {"mlm_slots": self.mlm_slots}
        return dict(**slots,
            input_ids=self.input_ids, attention_mask=self.attention_mask, visual_feats=self.visual_feats,
            visual_pos=self.visual_pos, visual_attention_mask=self.visual_attention_mask, labels=self.labels,
            matched_label=self.matched_label, ans=self.ans,
            obj_labels={"obj": (self.obj_ids, self.obj_weights), "attr": (self.attr_ids, self.attr_weights),
                        "feat": (self.feat_targets, self.feat_mask)},
        )

    def intact_inputs(self) -> dict:
        """The model inputs of the pairs as they are, before the objectives masked them: every
        masked-LM position back to its word piece (``labels``), every masked region back to its
        features (``feat_targets``); no targets. What ``lxmert match`` and ``lxmert ask`` show a model."""
        ids = torch.where(self.labels >= 0, self.labels, self.input_ids)
        return dict(input_ids=ids, attention_mask=self.attention_mask, visual_feats=self.feat_targets,
                    visual_pos=self.visual_pos, visual_attention_mask=self.visual_attention_mask, full_mlm_logits=False)

    def has_examples(self) -> dict[str, Tensor]:
        """Which objectives this batch holds a target of (captions only: no question; an objective
        switched off: none); a loss without one is a 0 that counts for nothing."""
        return {"mlm": (self.labels != -100).any(), "matched": (self.matched_label >= 0).any(),
                "obj": (self.obj_weights > 0).any(), "attr": (self.attr_weights > 0).any(),
                "feat": (self.feat_mask > 0).any(), "qa": (self.ans >= 0).any()}


def collate_pretraining(examples: list[dict], pack: bool = True, shapes: StaticShapes | None = None
                        ) -> PretrainingBatch:
    """``pack=False``: never lay the batch out for transfer (bench/loader.py's anchor). ``shapes``:
    pad to fixed sizes (padding is masked: the losses are those of the batch padded to its longest)."""
    t, r = (shapes.tokens, shapes.regions) if shapes is not None else (None, None)
    slots = shapes.mlm_slots if shapes is not None else None
    if slots is not None:
        targets = sum(int((e["labels"] != -100).sum()) for e in examples)
        if targets > slots:  # at the default, less likely than 1 in 10^12 batches
            raise ValueError(f"a batch holds {targets} masked-LM targets, more than data.mlm_slots={slots}: raise it")
    text = lambda key, value=0: Stacked([e[key] for e in examples], value, length=t)  # noqa: E731
    region = lambda key, value=0: Stacked([e[key] for e in examples], value, length=r)  # noqa: E731
    regions = [e["visual_feats"] for e in examples]
    return PretrainingBatch.build(
        pack,
        input_ids=text("input_ids"),
        attention_mask=Stacked([torch.ones_like(e["input_ids"]) for e in examples], 0, length=t),
        labels=text("labels", -100), visual_feats=region("visual_feats"), visual_pos=region("visual_pos"),
        visual_attention_mask=region_mask(regions, length=r),
        obj_ids=region("obj_ids", -100), obj_weights=region("obj_weights"), attr_ids=region("attr_ids", -100),
        attr_weights=region("attr_weights"), feat_targets=region("feat_targets"), feat_mask=region("feat_mask"),
        matched_label=torch.tensor([e["matched_label"] for e in examples]), ans=torch.tensor([e["ans"] for e in examples]),
        mlm_slots=slots,
    )
