"""The pre-training answer table (``all_ans.json``) and LXMERT's answer normalisation."""

from __future__ import annotations

from pathlib import Path

from .files import read_json

NUMBER_WORDS = {"one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7",
                "eight": "8", "nine": "9", "ten": "10"}
CONVERT = {**NUMBER_WORDS, "grey": "gray"}


def normalize_answer(ans: str) -> str:
    """Lowercase; drop a trailing "."; drop a leading "a ", "an ", "the "; number words one..ten
    to digits; "grey" -> "gray" (the original answer table's rules)."""
    ans = ans.lower().strip()
    if ans.endswith("."):
        ans = ans[:-1].strip()
    for article in ("a ", "an ", "the "):
        if ans.startswith(article):
            ans = ans[len(article):].strip()
            break
    return CONVERT.get(ans, ans)


class AnswerTable:
    """Answers -> ids, in the table's order, optionally restricted to chosen datasets."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers
        self.ids = {a: i for i, a in enumerate(answers)}

    @classmethod
    def from_file(cls, path: str | Path, dsets: list[str] | None = None) -> "AnswerTable":
        path = Path(path)
        rows = read_json(path, "answer table")
        if not isinstance(rows, list) or not all(isinstance(r, dict) and "ans" in r for r in rows):
            raise ValueError(f'{path}: expected a list of {{"ans": ..., "dsets": [...]}}')
        chosen = set(dsets) if dsets else None
        answers: list[str] = []
        seen: set[str] = set()
        for row in rows:
            if chosen is not None and not chosen & set(row.get("dsets", [])):
                continue
            ans = normalize_answer(row["ans"])
            if ans not in seen:
                seen.add(ans)
                answers.append(ans)
        return cls(answers)

    def __len__(self) -> int:
        return len(self.answers)

    def __contains__(self, ans: str) -> bool:
        return normalize_answer(ans) in self.ids

    def id(self, ans: str) -> int | None:
        return self.ids.get(normalize_answer(ans))


def map_labels(labels: list[str], table_answers: list[str]) -> dict[int, int]:
    """Task label id -> row of an answer table holding the label's normalised form (labels not
    found are left out). ``table_answers[j]`` is the answer of row ``j``."""
    rows: dict[str, int] = {}
    for j, ans in enumerate(table_answers):
        rows.setdefault(normalize_answer(ans), j)
    return {i: rows[n] for i, label in enumerate(labels) if (n := normalize_answer(label)) in rows}
