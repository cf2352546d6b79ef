"""The benchmarks' own metrics and submission files: VQA (soft score of the predicted answer),
GQA (exact match), NLVR2 (accuracy and consistency)."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter, defaultdict
from collections.abc import Container, Iterable
from pathlib import Path

TASKS = ("vqa", "gqa", "nlvr2")


def vqa_accuracy(predictions: dict, rows: list[dict]) -> float:
    """Mean over questions of the soft score that the question's label dict gives the predicted
    answer (0 when absent). ``predictions``: question_id -> answer."""
    return sum(row.get("label", {}).get(predictions[row["question_id"]], 0.0) for row in rows) / max(len(rows), 1)


def gqa_accuracy(predictions: dict, rows: list[dict]) -> float:
    """Exact match: the predicted answer is one of the question's labels."""
    return sum(predictions[row["question_id"]] in row.get("label", {}) for row in rows) / max(len(rows), 1)


def sentence_of(identifier: str) -> str:
    """NLVR2 identifiers are ``split-set-pair-sentence``: the third field numbers the image pairs
    that one sentence is shown with. The official script (``nlvr2/eval/metrics.py``) groups a
    sentence's examples by the identifier with that field blanked: ``dev-850-0-0`` and
    ``dev-850-1-0`` are one sentence, ``dev-850-0-1`` another."""
    parts = identifier.split("-")
    if len(parts) != 4:
        raise ValueError(f"NLVR2 identifier {identifier!r}: expected split-set-pair-sentence, e.g. dev-850-0-0")
    parts[2] = ""
    return "-".join(parts)


def nlvr2_scores(predictions: dict, rows: list[dict]) -> dict[str, float]:
    """Accuracy, and consistency: the fraction of sentences whose every image pair is right.
    ``predictions``: identifier -> 0|1 (or False|True)."""
    right = [int(predictions[row["identifier"]]) == int(row["label"]) for row in rows]
    groups: dict[str, bool] = defaultdict(lambda: True)
    for row, ok in zip(rows, right):
        groups[sentence_of(row["identifier"])] &= ok
    return {"accuracy": sum(right) / max(len(rows), 1), "consistency": sum(groups.values()) / max(len(groups), 1)}


def scores(task: str, predictions: dict, rows: list[dict]) -> dict[str, float]:
    """The task's metrics; ``accuracy`` is the one a best checkpoint is chosen by."""
    if task == "nlvr2":
        return nlvr2_scores(predictions, rows)
    return {"accuracy": (vqa_accuracy if task == "vqa" else gqa_accuracy)(predictions, rows)}


def scores_by_type(task: str, predictions: dict, rows: list[dict], prior: dict | None = None) -> dict[str, dict]:
    """VQA and GQA: for each question type (:func:`question_type`; the official VQA evaluation's
    perQuestionType) its number of questions, the accuracy of ``predictions`` on them and, given the
    prior's predictions (:func:`prior_predictions`), the prior's. NLVR2 has no question types: {}."""
    if task == "nlvr2":
        return {}
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        groups[question_type(row)].append(row)
    out = {}
    for kind, group in sorted(groups.items()):
        out[kind] = {"questions": len(group), "accuracy": scores(task, predictions, group)["accuracy"]}
        if prior:
            out[kind]["prior"] = scores(task, prior, group)["accuracy"]
    return out


def question_type(row: dict) -> str:
    """VQA's ``question_type`` when the example has one (e.g. "what color", "how many"), else the
    question's first two words, lower-cased (GQA's files carry none)."""
    given = row.get("question_type")
    return given if isinstance(given, str) and given else " ".join(row["sent"].lower().split()[:2])


def prior_predictions(task: str, train_rows: Iterable[dict], rows: list[dict], labels: Container[str] = ()) -> dict:
    """The answer prior, a baseline that never looks at the image: each question type's most
    frequent training answer (a question's answer: its highest-scored label among ``labels``, those
    a model can give), or the most frequent overall for a type unseen in training; NLVR2: the more
    frequent training label. Returns predictions for ``rows``, to be scored like a model's (none
    when no training example has an answer)."""
    if task == "nlvr2":
        counts = Counter(int(row["label"]) for row in train_rows if row.get("label") is not None)
        return {row["identifier"]: counts.most_common(1)[0][0] for row in rows} if counts else {}
    by_type: dict[str, Counter] = defaultdict(Counter)
    for row in train_rows:
        scored = [(score, ans) for ans, score in row.get("label", {}).items() if ans in labels]
        if scored:
            by_type[question_type(row)][max(scored, key=lambda sa: sa[0])[1]] += 1
    overall = sum(by_type.values(), Counter())
    if not overall:  # no training question has an answer among the labels: no prior (absent, not 0)
        return {}
    fallback = overall.most_common(1)[0][0]
    best = {kind: counts.most_common(1)[0][0] for kind, counts in by_type.items()}
    return {row["question_id"]: best.get(question_type(row), fallback) for row in rows}


def submission_text(task: str, predictions: dict) -> str:
    """VQA ``[{"question_id", "answer"}]``, GQA ``[{"questionId", "prediction"}]``, NLVR2 csv rows
    ``identifier,True|False``."""
    if task == "vqa":
        return json.dumps([{"question_id": k, "answer": v} for k, v in predictions.items()]) + "\n"
    if task == "gqa":
        return json.dumps([{"questionId": k, "prediction": v} for k, v in predictions.items()]) + "\n"
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for k, v in predictions.items():
        writer.writerow([k, "True" if int(v) == 1 else "False"])
    return out.getvalue()


def submission_name(task: str, split: str) -> str:
    return f"{split}_predict.{'csv' if task == 'nlvr2' else 'json'}"


def read_submission(task: str, path: str | Path) -> dict:
    """A submission file back into {id: answer} (NLVR2: {identifier: 0|1})."""
    text = Path(path).read_text()
    if task == "vqa":
        return {r["question_id"]: r["answer"] for r in json.loads(text)}
    if task == "gqa":
        return {r["questionId"]: r["prediction"] for r in json.loads(text)}
    out = {}
    for n, row in enumerate(csv.reader(io.StringIO(text)), 1):
        if len(row) != 2 or row[1] not in ("True", "False"):
            raise ValueError(f"{path}:{n}: expected identifier,True|False, got {','.join(row)!r}")
        out[row[0]] = int(row[1] == "True")
    return out
