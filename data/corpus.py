"""The pre-training corpus: ``[{"img_id", "sentf": {source: [sent]}, "labelf": {source: [{ans: score}]}}]``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Container, Iterable

from .answers import AnswerTable


@dataclass(frozen=True)
class Item:
    """One (image, sentence) pair; ``answers`` maps answer ids to scores (QA sources only)."""

    img_id: str
    sent: str
    source: str
    answers: tuple[tuple[int, float], ...] = ()


@dataclass
class CorpusReport:
    items: int = 0
    images: int = 0
    missing_images: int = 0
    missing_examples: tuple[str, ...] = ()
    dropped_items: int = 0
    answers_outside_table: int = 0

    def __str__(self) -> str:
        text = f"{self.items} sentences on {self.images} images"
        if self.missing_images:
            text += (f"; {self.missing_images} images not in the feature store ({self.dropped_items} sentences dropped, "
                     f"e.g. {', '.join(self.missing_examples)})")
        if self.answers_outside_table:
            text += f"; {self.answers_outside_table} answers outside the answer table ignored"
        return text


def load_corpus(paths: Iterable[str | Path], sources: Iterable[str] | None = None, answers: AnswerTable | None = None,
                images: Container[str] | None = None, missing: str = "drop") -> tuple[list[Item], CorpusReport]:
    """Read corpus files into items. ``sources`` chooses sentence sources (all by default);
    ``images`` (e.g. a FeatureStore) filters pairs whose image is absent: ``missing="drop"``
    reports and drops them, ``"error"`` refuses the corpus."""
    if missing not in ("drop", "error"):
        raise ValueError(f"missing must be 'drop' or 'error', got {missing!r}")
    chosen = set(sources) if sources is not None else None
    items: list[Item] = []
    report = CorpusReport()
    missing_ids: list[str] = []
    seen_images: set[str] = set()
    for path in paths:
        path = Path(path)
        try:
            rows = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: unreadable corpus file ({exc})") from None
        if not isinstance(rows, list):
            raise ValueError(f"{path}: expected a list of {{img_id, sentf, labelf}} entries")
        for n, row in enumerate(rows):
            if not isinstance(row, dict) or "img_id" not in row or not isinstance(row.get("sentf"), dict):
                raise ValueError(f"{path}: entry {n} lacks img_id or a sentf dict")
            img_id = row["img_id"]
            in_store = images is None or img_id in images
            if not in_store:
                missing_ids.append(img_id)
            for source, sents in row["sentf"].items():
                if chosen is not None and source not in chosen:
                    continue
                labels = row.get("labelf", {}).get(source)
                if labels is not None and len(labels) != len(sents):
                    raise ValueError(f"{path}: entry {n} ({img_id}): {len(sents)} {source} sentences but {len(labels)} labels")
                for k, sent in enumerate(sents):
                    if not in_store:
                        report.dropped_items += 1
                        continue
                    scored: list[tuple[int, float]] = []
                    if labels is not None and answers is not None:
                        for ans, score in labels[k].items():
                            idx = answers.id(ans)
                            if idx is None:
                                report.answers_outside_table += 1
                            else:
                                scored.append((idx, float(score)))
                    items.append(Item(img_id, sent, source, tuple(scored)))
                    seen_images.add(img_id)
    report.items, report.images = len(items), len(seen_images)
    report.missing_images = len(set(missing_ids))
    report.missing_examples = tuple(sorted(set(missing_ids))[:5])
    if report.missing_images and missing == "error":
        raise ValueError(f"{report.missing_images} corpus images are not in the feature store, e.g. "
                         f"{', '.join(report.missing_examples)}")
    return items, report
