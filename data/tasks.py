"""Fine-tuning datasets in the original formats: VQA, GQA (soft-score targets over
``trainval_ans2label.json``) and NLVR2 (two images per example)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from .collate import Stacked, _Batch, region_mask
from .files import read_json
from .tokenize import MAX_TOKENS, encode


def load_label_vocab(path: str | Path) -> dict[str, int]:
    """``trainval_ans2label.json``: {answer: label id}, ids 0..N-1."""
    vocab = read_json(Path(path), "label vocabulary")
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


def _open_corpus(paths, kind: str, store, tokenizer, table=None, what: str = ""):
    """(JSON files, None) or ([], the built corpus of ``kind``, checked against the tokenizer, the
    label vocabulary ``table`` and the store)."""
    from .tokenized import TokenizedCorpus, corpus_paths

    files, directory = corpus_paths(paths)
    if directory is None:
        return files, None
    corpus = TokenizedCorpus(directory, kind)
    corpus.check(tokenizer, table, what)
    missing = corpus.missing_from(store)
    if missing:
        raise ValueError(f"{len(missing)} images of {directory} are not in the feature store {store.path}, e.g. "
                         f"{', '.join(missing[:5])}")
    return [], corpus


class _TaskDataset(Dataset):
    """What VQA/GQA and NLVR2 share: examples from JSON rows (``_rows``) or a built ``corpus``."""

    corpus = None
    _rows: list[dict] | None = None

    def __len__(self) -> int:
        return len(self.corpus) if self.corpus is not None else len(self._rows)

    @property
    def rows(self) -> list[dict]:
        """The examples as the JSON has them, for evaluation (from a corpus: made on first use)."""
        if self._rows is None:
            self._rows = list(self.label_rows())
        return self._rows

    def label_rows(self) -> Iterator[dict]:
        """:attr:`rows` one at a time (from a corpus, none kept: for one pass over a training split)."""
        if self._rows is not None:
            yield from self._rows
        else:
            yield from map(self._corpus_row, range(len(self.corpus)))

    def _corpus_row(self, i: int) -> dict:
        raise NotImplementedError


class QADataset(_TaskDataset):
    """VQA or GQA examples: ``{"question_id", "img_id", "sent", "label": {answer: score}}``, from the
    JSON files or from one corpus built of them (``lxmert corpus build --qa``: mapped, not loaded).

    The target is a soft-score vector over the label vocabulary; answers outside it are
    counted in ``unknown_answers`` (and refused with ``strict=True``). Test splits carry no label.
    """

    def __init__(self, paths: list[str | Path], store, tokenizer, ans2label: dict[str, int], strict: bool = False,
                 max_tokens: int = MAX_TOKENS) -> None:
        self.store, self.tokenizer, self.ans2label, self.max_tokens = store, tokenizer, ans2label, max_tokens
        self.labels = sorted(ans2label, key=ans2label.get)
        files, self.corpus = _open_corpus(paths, "qa", store, tokenizer, self.labels, "label vocabulary")
        self._rows: list[dict] | None = None if self.corpus is not None else []
        self.unknown_answers = 0
        if self.corpus is not None:
            self.unknown_answers = self.corpus.manifest["answers_outside_table"]
            if strict and self.unknown_answers:
                raise ValueError(f"{self.corpus.path}: {self.corpus.outside_table()} (the label vocabulary)")
        for path in map(Path, files):
            rows = read_json(path, "QA file")
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
            self._rows += rows
        if self.corpus is None:
            missing = sorted({r["img_id"] for r in self._rows if r["img_id"] not in store})
            if missing:
                raise ValueError(f"{len(missing)} images of the QA files are not in the feature store {store.path}, e.g. "
                                 f"{', '.join(missing[:5])}")

    def _corpus_row(self, i: int) -> dict:
        """From a corpus: question_id, img_id, question_type and the labels in the vocabulary (the
        only ones a prediction can score)."""
        c = self.corpus
        return {"question_id": c.key(i), "img_id": c.image_name(c.images_of(i)[0]), "question_type": c.source_of(i),
                "label": {self.labels[idx]: score for idx, score in c.answers(i)}}

    def __getitem__(self, index: int | tuple[int, int]) -> dict:
        i = index[1] if isinstance(index, tuple) else index  # (epoch, index) from ResumableSampler
        target = torch.zeros(len(self.ans2label))
        c = self.corpus
        if c is not None:
            qid, img_id = c.key(i), c.image_name(c.images_of(i)[0])
            ids = c.encoded(i, self.tokenizer.cls_token_id, self.tokenizer.sep_token_id, self.max_tokens)
            for idx, score in c.answers(i):
                target[idx] = score
        else:
            row = self._rows[i]
            qid, img_id, ids = row["question_id"], row["img_id"], encode(self.tokenizer, row["sent"], self.max_tokens)
            for ans, score in row.get("label", {}).items():
                if ans in self.ans2label:
                    target[self.ans2label[ans]] = score
        rec = self.store[img_id]
        return {"question_id": qid, "input_ids": torch.tensor(ids), "visual_feats": rec.tensor(None),
                "visual_pos": torch.from_numpy(rec.normalized_boxes()), "target": target}


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


class NLVR2Dataset(_TaskDataset):
    """``{"identifier", "img0", "img1", "sent", "label": 0|1}``: one sentence, two images; from the
    JSON files or from one corpus built of them (``lxmert corpus build --nlvr2``)."""

    def __init__(self, paths: list[str | Path], store, tokenizer, max_tokens: int = MAX_TOKENS,
                 require_label: bool = False) -> None:
        self.store, self.tokenizer, self.max_tokens = store, tokenizer, max_tokens
        files, self.corpus = _open_corpus(paths, "nlvr2", store, tokenizer)
        self._rows: list[dict] | None = None if self.corpus is not None else []
        if self.corpus is not None and require_label and self.corpus.manifest["answers"] != len(self.corpus):
            raise ValueError(f"{self.corpus.path}: {len(self.corpus) - self.corpus.manifest['answers']} examples lack a "
                             f"label (0 or 1)")
        for path in map(Path, files):
            rows = read_json(path, "NLVR2 file")
            _check_rows(rows, path, {"identifier": str, "img0": str, "img1": str, "sent": str})
            for row in rows:
                label = row.get("label")
                if (require_label or label is not None) and (isinstance(label, bool) or label not in (0, 1)):
                    raise ValueError(f"{path}: example {row['identifier']}: label must be 0 or 1, got {label!r}")
            self._rows += rows
        if self.corpus is None:
            missing = sorted({r[k] for r in self._rows for k in ("img0", "img1") if r[k] not in store})
            if missing:
                raise ValueError(f"{len(missing)} images of the NLVR2 files are not in the feature store {store.path}, "
                                 f"e.g. {', '.join(missing[:5])}")

    def _corpus_row(self, i: int) -> dict:
        """From a corpus: the identifier and the label."""
        return {"identifier": self.corpus.key(i), "label": next((idx for idx, _ in self.corpus.answers(i)), None)}

    def __getitem__(self, index: int | tuple[int, int]) -> dict:
        i = index[1] if isinstance(index, tuple) else index  # (epoch, index) from ResumableSampler
        c = self.corpus
        if c is not None:
            identifier, images = c.key(i), [c.image_name(k) for k in c.images_of(i)]
            ids = c.encoded(i, self.tokenizer.cls_token_id, self.tokenizer.sep_token_id, self.max_tokens)
            label = next((idx for idx, _ in c.answers(i)), -100)
        else:
            row = self._rows[i]
            identifier, images = row["identifier"], [row["img0"], row["img1"]]
            ids, label = encode(self.tokenizer, row["sent"], self.max_tokens), int(row.get("label", -100))
        recs = [self.store[img] for img in images]
        return {"identifier": identifier, "input_ids": torch.tensor(ids), "visual_feats": [r.tensor(None) for r in recs],
                "visual_pos": [torch.from_numpy(r.normalized_boxes()) for r in recs], "label": label}


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
