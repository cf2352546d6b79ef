"""Fine-tuning datasets in the original formats: VQA, GQA (soft-score targets over
``trainval_ans2label.json``) and NLVR2 (two images per example)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from .collate import Stacked, _Batch, region_mask
from .tokenize import MAX_TOKENS, encode


def _read_json(path: Path, what: str):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable {what} ({exc})") from None


def load_label_vocab(path: str | Path) -> dict[str, int]:
    """``trainval_ans2label.json``: {answer: label id}, ids 0..N-1."""
    vocab = _read_json(Path(path), "label vocabulary")
    if not isinstance(vocab, dict) or sorted(vocab.values()) != list(range(len(vocab))):
        raise ValueError(f"{path}: expected {{answer: id}} with ids 0..N-1")
    return vocab


def _check_rows(rows, path: Path, required: dict[str, type]) -> None:
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a list of examples")
    for n, row in enumerate(rows):
        for key, kind in required.items():
            if not isinstance(row, dict) or key not in row or not isinstance(row[key], kind):
                raise ValueError(f"{path}: example {n} lacks {key!r} ({kind.__name__}); expected keys {sorted(required)}")


class QADataset(Dataset):
    """VQA or GQA examples: ``{"question_id", "img_id", "sent", "label": {answer: score}}``.

    The target is a soft-score vector over the label vocabulary; answers outside it are
    counted in ``unknown_answers`` (and refused with ``strict=True``). Test splits carry no label.
    """

    def __init__(self, paths: list[str | Path], store, tokenizer, ans2label: dict[str, int], strict: bool = False,
                 max_tokens: int = MAX_TOKENS) -> None:
        self.rows: list[dict] = []
        self.unknown_answers = 0
        for path in map(Path, paths):
            rows = _read_json(path, "QA file")
            _check_rows(rows, path, {"img_id": str, "sent": str})
            for row in rows:
                if "question_id" not in row:
                    raise ValueError(f"{path}: an example lacks 'question_id'")
                for ans in row.get("label", {}):
                    if ans not in ans2label:
                        if strict:
                            raise ValueError(f"{path}: question {row['question_id']}: answer {ans!r} is not in the label "
                                             f"vocabulary")
                        self.unknown_answers += 1
            self.rows += rows
        missing = sorted({r["img_id"] for r in self.rows if r["img_id"] not in store})
        if missing:
            raise ValueError(f"{len(missing)} images of the QA files are not in the feature store {store.path}, e.g. "
                             f"{', '.join(missing[:5])}")
        self.store, self.tokenizer, self.ans2label, self.max_tokens = store, tokenizer, ans2label, max_tokens

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int | tuple[int, int]) -> dict:
        row = self.rows[index[1] if isinstance(index, tuple) else index]  # (epoch, index) from ResumableSampler
        rec = self.store[row["img_id"]]
        target = torch.zeros(len(self.ans2label))
        for ans, score in row.get("label", {}).items():
            if ans in self.ans2label:
                target[self.ans2label[ans]] = score
        return {"question_id": row["question_id"], "input_ids": torch.tensor(encode(self.tokenizer, row["sent"], self.max_tokens)),
                "visual_feats": rec.tensor(None), "visual_pos": torch.from_numpy(rec.normalized_boxes()),
                "target": target}


@dataclass
class TaskBatch(_Batch):
    ids: list  # question ids (QA) or identifiers (NLVR2)
    input_ids: Tensor
    attention_mask: Tensor
    visual_feats: Tensor  # (B, R, D) or (B, 2, R, D) for NLVR2
    visual_pos: Tensor
    visual_attention_mask: Tensor | None
    labels: Tensor  # (B, num_labels) soft scores, or (B,) for NLVR2

    def model_inputs(self) -> dict:
        return dict(input_ids=self.input_ids, attention_mask=self.attention_mask, visual_feats=self.visual_feats,
                    visual_pos=self.visual_pos, visual_attention_mask=self.visual_attention_mask, labels=self.labels)


def collate_qa(examples: list[dict]) -> TaskBatch:
    regions = [e["visual_feats"] for e in examples]
    assert len({e["target"].shape for e in examples}) == 1, "answer targets of one table have one length"
    return TaskBatch.build(
        ids=[e["question_id"] for e in examples], input_ids=Stacked([e["input_ids"] for e in examples]),
        attention_mask=Stacked([torch.ones_like(e["input_ids"]) for e in examples]), visual_feats=Stacked(regions),
        visual_pos=Stacked([e["visual_pos"] for e in examples]), visual_attention_mask=region_mask(regions),
        labels=Stacked([e["target"] for e in examples]),
    )


class NLVR2Dataset(Dataset):
    """``{"identifier", "img0", "img1", "sent", "label": 0|1}``: one sentence, two images."""

    def __init__(self, paths: list[str | Path], store, tokenizer, max_tokens: int = MAX_TOKENS,
                 require_label: bool = False) -> None:
        self.rows: list[dict] = []
        for path in map(Path, paths):
            rows = _read_json(path, "NLVR2 file")
            _check_rows(rows, path, {"identifier": str, "img0": str, "img1": str, "sent": str})
            for row in rows:
                label = row.get("label")
                if (require_label or label is not None) and (isinstance(label, bool) or label not in (0, 1)):
                    raise ValueError(f"{path}: example {row['identifier']}: label must be 0 or 1, got {label!r}")
            self.rows += rows
        missing = sorted({r[k] for r in self.rows for k in ("img0", "img1") if r[k] not in store})
        if missing:
            raise ValueError(f"{len(missing)} images of the NLVR2 files are not in the feature store {store.path}, e.g. "
                             f"{', '.join(missing[:5])}")
        self.store, self.tokenizer, self.max_tokens = store, tokenizer, max_tokens

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int | tuple[int, int]) -> dict:
        row = self.rows[index[1] if isinstance(index, tuple) else index]  # (epoch, index) from ResumableSampler
        recs = [self.store[row["img0"]], self.store[row["img1"]]]
        return {"identifier": row["identifier"], "input_ids": torch.tensor(encode(self.tokenizer, row["sent"], self.max_tokens)),
                "visual_feats": [r.tensor(None) for r in recs],
                "visual_pos": [torch.from_numpy(r.normalized_boxes()) for r in recs], "label": int(row.get("label", -100))}


def collate_nlvr2(examples: list[dict]) -> TaskBatch:
    regions, pairs = [f for e in examples for f in e["visual_feats"]], (len(examples), 2)
    return TaskBatch.build(
        ids=[e["identifier"] for e in examples], input_ids=Stacked([e["input_ids"] for e in examples]),
        attention_mask=Stacked([torch.ones_like(e["input_ids"]) for e in examples]),
        visual_feats=Stacked(regions, groups=pairs),
        visual_pos=Stacked([b for e in examples for b in e["visual_pos"]], groups=pairs),
        visual_attention_mask=region_mask(regions, groups=pairs),
        labels=torch.tensor([e["label"] for e in examples]),
    )
