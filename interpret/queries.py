"""Try a model on examples: the top answers to a question about one image (``ask``) and the
cross-modality matching probability of image-sentence pairs (``match``)."""

from __future__ import annotations

import torch

from .subject import Example, Subject, batch, make_example

#: Pairs scored in one forward pass by ``match``.
MATCH_BATCH = 64


def encode(subject: Subject, inputs: dict, output_attentions: bool = False):
    """The encoder's output for ``inputs`` (no gradient)."""
    with torch.no_grad():
        return subject.model.encoder(**inputs, output_attentions=output_attentions)


@torch.no_grad()
def ask(subject: Subject, store, img_id: str, question: str, topk: int = 5, truncate: bool = False) -> dict:
    """The ``topk`` answers to ``question`` about ``img_id`` with their probabilities: a softmax over
    the answer table for a pre-trained model's QA head (trained with cross-entropy), a sigmoid per
    label for a VQA/GQA model (trained with binary cross-entropy on soft scores)."""
    if topk < 1:
        raise ValueError(f"--topk must be at least 1, got {topk}")
    if subject.kind in ("nlvr2", "encoder"):
        what = "an NLVR2 model" if subject.kind == "nlvr2" else "the checkpoint holds the encoder alone: it"
        raise ValueError(f"{subject.source}: {what} has no answer head: ask a pre-trained model (with its QA "
                         f"head) or a VQA/GQA model")
    head = getattr(subject.model, "answer_head", None)
    if head is None:
        raise ValueError(f"{subject.source}: this pre-trained model has no QA head (pre-trained without task_qa)")
    answers = subject.answers()
    example = make_example(subject, store, img_id, question, truncate)
    logits = head(encode(subject, example.inputs).pooled_output)[0].float()
    softmax = subject.kind == "pretraining"
    probs = logits.softmax(-1) if softmax else logits.sigmoid()
    top = probs.topk(min(topk, probs.numel()))
    return {"model": str(subject.source), "kind": subject.kind, "image": img_id, "question": question,
            "cut": example.cut,
            "scoring": "softmax over the answer table" if softmax else "sigmoid of each label's score",
            "answers": [{"answer": answers[i], "probability": round(p, 6)}
                        for p, i in zip(top.values.tolist(), top.indices.tolist())]}


@torch.no_grad()
def matching_probabilities(subject: Subject, examples: list[Example]) -> list[float]:
    """The matching head's probability that each example's sentence describes its image (a
    pre-trained model with its matching head: :func:`match` checks that for the command)."""
    probs: list[float] = []
    for start in range(0, len(examples), MATCH_BATCH):
        pooled = encode(subject, batch(examples[start:start + MATCH_BATCH])).pooled_output
        probs += subject.model.matching_head(pooled).float().softmax(-1)[:, 1].tolist()
    return probs


def match(subject: Subject, store, img_ids: list[str], sentences: list[str], truncate: bool = False) -> dict:
    """The matching probability of every (image, sentence) pair, ranked, highest first."""
    if subject.kind != "pretraining":
        what = {"qa": "a VQA/GQA model has", "nlvr2": "an NLVR2 model has",
                "encoder": "the checkpoint holds the encoder alone:"}[subject.kind]
        raise ValueError(f"{subject.source}: {what} no cross-modality matching head: score pairs with a pre-trained "
                         f"model")
    if not subject.config.task_matched:
        raise ValueError(f"{subject.source}: pre-trained without the matching objective (task_matched false): its "
                         f"matching head never learnt")
    if not img_ids or not sentences:
        raise ValueError("give at least one --image and one --sentence")
    examples: list[Example] = [make_example(subject, store, i, s, truncate) for i in img_ids for s in sentences]
    probs = matching_probabilities(subject, examples)
    pairs = [{"image": e.img_id, "sentence": e.sentence, "probability": round(p, 6), "cut": e.cut}
             for e, p in zip(examples, probs)]
    pairs.sort(key=lambda r: -r["probability"])
    return {"model": str(subject.source), "pairs": pairs}
