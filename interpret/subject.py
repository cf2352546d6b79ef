"""The model under inspection (any checkpoint the project loads), its tokenizer and answer table,
and one image and sentence made into its inputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from data.features import RegionRecord
from data.tokenize import MAX_TOKENS
from launcher.checkpoint import ANSWERS_FILE

#: Model kinds by the heads their weights hold ("encoder": none; only its attention can be drawn).
KINDS = ("pretraining", "qa", "nlvr2", "encoder")
MIN_TOKENS = 3  # [CLS], one word piece, [SEP]


@dataclass
class Subject:
    """A model in eval mode with what reading its inputs and outputs needs."""

    model: torch.nn.Module
    kind: str  # one of KINDS
    tokenizer: Any
    answers_file: Path | None  # the answer table of the answer head (None: none given or found)
    source: Path
    max_tokens: int = MAX_TOKENS

    @property
    def config(self):
        return self.model.config

    def answers(self) -> list[str]:
        """The answer of each answer-head row, checked against the head."""
        if self.answers_file is None:
            raise ValueError(f"{self.source}: no answer table beside the model: give --answers (all_ans.json for a "
                             f"pre-trained model, trainval_label2ans.json for a VQA/GQA model)")
        table = read_answers(self.answers_file)
        rows = self.model.answer_head.out.weight.shape[0]
        if len(table) != rows:
            raise ValueError(f"{self.answers_file}: {len(table)} answers, but the model's answer head has {rows} rows "
                             f"(the table of another model?)")
        return table


def model_kind(state: dict[str, Tensor], source: str) -> str:
    """Which model a native-keyed state dict holds, by its heads."""
    heads = {k.split(".", 1)[0] for k in state}
    if "classifier" in heads:
        return "nlvr2"
    if heads & {"mlm_head", "matching_head", "object_head"}:
        return "pretraining"
    if "answer_head" in heads:
        return "qa"
    return "encoder"


def read_answers(path: Path) -> list[str]:
    """An answer table: ``answers.json`` or ``trainval_label2ans.json`` (a list of answers),
    ``trainval_ans2label.json`` ({answer: id}) or ``all_ans.json`` ([{"ans": ...}])."""
    from data.answers import AnswerTable
    from data.files import read_json
    from data.tasks import load_label_vocab

    rows = read_json(path, "answer table")
    if isinstance(rows, dict):
        vocab = load_label_vocab(path)
        return sorted(vocab, key=vocab.get)
    if isinstance(rows, list) and all(isinstance(r, str) for r in rows):
        return rows
    if isinstance(rows, list) and all(isinstance(r, dict) and "ans" in r for r in rows):
        return AnswerTable.from_file(path).answers
    raise ValueError(f"{path}: not an answer table (expected a list of answers, {{answer: id}} or "
                     f"[{{\"ans\": ...}}])")


def load_subject(path: str | Path, tokenizer: str | None = None, answers: str | Path | None = None,
                 preset: str = "base", max_tokens: int = MAX_TOKENS) -> Subject:
    """The model at ``path`` (a directory of ours or Hugging Face's, or an original ``*_LXRT.pth``),
    in eval mode on the CPU. The tokenizer: ``tokenizer``, else the directory's own (``vocab.txt`` or
    a saved tokenizer), else ``bert-base-uncased``. The answer table: ``answers``, else the
    directory's ``answers.json`` (read when a command needs it)."""
    import model as models
    from data.tokenize import load_tokenizer
    from model.pretrained import bare_file_config, read_native_state

    path = Path(path)
    if max_tokens < MIN_TOKENS:
        raise ValueError(f"--max-tokens {max_tokens}: at least {MIN_TOKENS} ([CLS], a word piece, [SEP])")
    state, file_config, unknown = read_native_state(path)
    kind = model_kind(state, str(path))
    cls = {"pretraining": models.LxmertForPretraining, "qa": models.LxmertForQuestionAnswering,
           "nlvr2": models.LxmertForNLVR2, "encoder": models.LxmertForPretraining}[kind]
    config = file_config or bare_file_config(state, str(path), preset)
    if max_tokens > config.max_position_embeddings:
        raise ValueError(f"--max-tokens {max_tokens} exceeds the model's max_position_embeddings "
                         f"{config.max_position_embeddings}")
    net = cls(config)
    net.init_weights()
    net.load_native_state(state, source=str(path), unknown=unknown, skip_heads=kind == "encoder")
    net.eval()
    directory = path if path.is_dir() else None
    if tokenizer is None:
        own = directory is not None and any((directory / f).is_file() for f in
                                            ("vocab.txt", "tokenizer.json", "tokenizer_config.json"))
        tokenizer = str(directory) if own else "bert-base-uncased"
    try:
        tok = load_tokenizer(tokenizer)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{exc} (give the model's tokenizer with --tokenizer)") from None
    if len(tok) > config.vocab_size:
        raise ValueError(f"the tokenizer {tokenizer} has {len(tok)} word pieces but the model's vocabulary is "
                         f"{config.vocab_size} (the tokenizer of another model? give --tokenizer)")
    if answers is None and directory is not None and (directory / ANSWERS_FILE).is_file():
        answers = directory / ANSWERS_FILE
    return Subject(net, kind, tok, None if answers is None else Path(answers), path, max_tokens)


@dataclass
class Example:
    """One image and one sentence as model inputs (a batch of one)."""

    img_id: str
    sentence: str
    tokens: list[str]  # word pieces, [CLS] and [SEP] included
    record: RegionRecord
    inputs: dict[str, Tensor]
    cut: str = ""  # the words cut off by the token limit ("" when none)


def image_record(store, img_id: str) -> RegionRecord:
    """The store's record of ``img_id``; a ValueError naming the store and some ids otherwise."""
    if img_id not in store:
        some = []
        for known in store.ids():
            some.append(known)
            if len(some) == 3:
                break
        raise ValueError(f"image {img_id!r} is not in the feature store {store.path} ({len(store)} images, e.g. "
                         f"{', '.join(some)})")
    return store[img_id]


def encode_sentence(subject: Subject, sentence: str, truncate: bool = False) -> tuple[list[int], str]:
    """Token ids of ``[CLS] sentence [SEP]`` within the model's limit, and the text cut off (""
    if none). Over the limit without ``truncate``: a ValueError saying what would be cut."""
    tok = subject.tokenizer
    if not sentence.strip():
        raise ValueError("the sentence is empty")
    ids = tok(sentence)["input_ids"]
    limit = subject.max_tokens
    if len(ids) <= limit:
        return ids, ""
    cut = tok.decode(ids[limit - 1:-1]).strip()
    if not truncate:
        raise ValueError(f"{sentence!r} is {len(ids)} word pieces with [CLS] and [SEP], over the limit of {limit} "
                         f"the model was trained with: {cut!r} would be cut (shorten it, pass --truncate, or "
                         f"raise --max-tokens)")
    return ids[:limit - 1] + [ids[-1]], cut


def make_example(subject: Subject, store, img_id: str, sentence: str, truncate: bool = False) -> Example:
    rec = image_record(store, img_id)
    if rec.features.shape[1] != subject.config.visual_feat_dim:
        raise ValueError(f"{store.path}: features of {rec.features.shape[1]} dimensions, but the model reads "
                         f"{subject.config.visual_feat_dim} (the store of another detector?)")
    ids, cut = encode_sentence(subject, sentence, truncate)
    inputs = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
              "token_type_ids": torch.zeros(1, len(ids), dtype=torch.long),
              "visual_feats": torch.from_numpy(np.asarray(rec.features, dtype=np.float32))[None],
              "visual_pos": torch.from_numpy(rec.normalized_boxes())[None]}
    return Example(img_id, sentence, subject.tokenizer.convert_ids_to_tokens(ids), rec, inputs, cut)


def batch(examples: list[Example]) -> dict[str, Tensor]:
    """Several examples as one padded batch (masks mark the real tokens and regions), collated as
    the data layer collates."""
    from data.collate import Stacked, region_mask

    ids = [e.inputs["input_ids"][0] for e in examples]
    feats = [e.inputs["visual_feats"][0] for e in examples]
    return {"input_ids": Stacked(ids).tensor(), "attention_mask": Stacked([torch.ones_like(i) for i in ids]).tensor(),
            "visual_feats": Stacked(feats).tensor(), "visual_pos": Stacked([e.inputs["visual_pos"][0] for e in examples]).tensor(),
            "visual_attention_mask": region_mask(feats)}
