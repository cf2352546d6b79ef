"""The pre-training corpus: ``[{"img_id", "sentf": {source: [sent]}, "labelf": {source: [{ans: score}]}}]``."""

from __future__ import annotations

from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .answers import AnswerTable
from .files import read_json
from .tokenize import encode


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
        rows = read_json(path, "corpus file")
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


# --------------------------------------------------------------------------- pairs
class ItemPairs:
    """The pairs of a corpus read from JSON (:func:`load_corpus`): Python objects, tokenised when
    read. Fine for small corpora; :class:`CorpusPairs` is the same over a built corpus."""

    def __init__(self, items: list[Item], tokenizer) -> None:
        self.items, self.tokenizer = items, tokenizer
        self.image_ids: list[str] = sorted({it.img_id for it in items})
        index = {img_id: k for k, img_id in enumerate(self.image_ids)}
        self._images = [index[it.img_id] for it in items]

    def __len__(self) -> int:
        return len(self.items)

    def image(self, i: int) -> int:
        """Pair ``i``'s image, as an index into ``image_ids`` (sorted)."""
        return self._images[i]

    def tokens(self, i: int, max_tokens: int) -> list[int]:
        """``[CLS] sentence [SEP]``, truncated to ``max_tokens``."""
        return encode(self.tokenizer, self.items[i].sent, max_tokens)

    def answers(self, i: int) -> tuple[tuple[int, float], ...]:
        return self.items[i].answers


class _ImageNames(Sequence):
    """The image ids of a corpus (all, or the sorted ``used`` subset), read from its map on access."""

    def __init__(self, corpus, used) -> None:
        self.corpus, self.used = corpus, used

    def __len__(self) -> int:
        return self.corpus.num_images if self.used is None else len(self.used)

    def __getitem__(self, k: int) -> str:
        if not 0 <= k < len(self):
            raise IndexError(k)
        return self.corpus.image_name(k if self.used is None else int(self.used[k]))


class CorpusPairs:
    """The pairs of a built corpus (:mod:`data.tokenized`), optionally a selection of them (some
    sources, or images present in the feature store), in the order :func:`load_corpus` reads them."""

    def __init__(self, corpus, tokenizer, selection=None, used=None) -> None:
        self.corpus, self.selection, self.used = corpus, selection, used
        self.cls, self.sep = tokenizer.cls_token_id, tokenizer.sep_token_id
        self.image_ids = _ImageNames(corpus, used)

    def __len__(self) -> int:
        return len(self.corpus) if self.selection is None else len(self.selection)

    def _pair(self, i: int) -> int:
        return i if self.selection is None else int(self.selection[i])

    def image(self, i: int) -> int:
        k = self.corpus.images_of(self._pair(i))[0]
        return k if self.used is None else int(self.used.searchsorted(self.used.dtype.type(k)))

    def tokens(self, i: int, max_tokens: int) -> list[int]:
        """``[CLS] sentence [SEP]``, truncated to ``max_tokens`` (as :class:`ItemPairs` gives)."""
        return self.corpus.encoded(self._pair(i), self.cls, self.sep, max_tokens)

    def answers(self, i: int) -> tuple[tuple[int, float], ...]:
        return self.corpus.answers(self._pair(i))


def open_pairs(paths: Iterable[str | Path], tokenizer, answers: AnswerTable, images=None,
               sources: Iterable[str] | None = None, missing: str = "drop"):
    """The pairs of a ``data.train``/``data.valid`` list: corpus JSON files (read into memory) or one
    built corpus directory (mapped). Returns (pairs, report), filtered as :func:`load_corpus` does."""
    import numpy as np

    from .tokenized import TokenizedCorpus, corpus_paths

    files, directory = corpus_paths(paths)
    if directory is None:
        items, report = load_corpus(files, sources, answers, images, missing)
        return ItemPairs(items, tokenizer), report
    if missing not in ("drop", "error"):
        raise ValueError(f"missing must be 'drop' or 'error', got {missing!r}")
    corpus = TokenizedCorpus(directory, "pretraining")
    corpus.check(tokenizer, answers.answers)
    a = corpus.a
    keep = np.ones(len(a["run_images"]), bool)
    if sources is not None:
        unknown = sorted(set(sources) - set(corpus.sources))
        if unknown:
            raise ValueError(f"data.sources: {', '.join(unknown)} not in corpus {directory} (it has "
                             f"{', '.join(corpus.sources)})")
        keep &= np.isin(a["run_sources"], [corpus.sources.index(s) for s in sources])
    lengths = np.diff(a["run_starts"]).astype(np.int64)
    report = CorpusReport()
    if images is not None:
        names = corpus.image_names()  # sorted, and so are the missing ones
        lost = images.missing(names) if hasattr(images, "missing") else [n for n in names if n not in images]
        if lost:
            absent = set(lost)
            present = np.fromiter((name not in absent for name in names), bool, len(names))
            report.missing_images = len(lost)
            report.missing_examples = tuple(lost[:5])
            if missing == "error":
                raise ValueError(f"{report.missing_images} corpus images are not in the feature store, e.g. "
                                 f"{', '.join(report.missing_examples)}")
            gone = keep & ~present[a["run_images"]]
            report.dropped_items = int(lengths[gone].sum())
            keep &= ~gone
    selection = used = None
    if not keep.all():
        kept = np.flatnonzero(keep)
        sizes, starts = lengths[kept], np.asarray(a["run_starts"][kept], np.int64)
        total = int(sizes.sum())
        # pairs of the kept runs, in order: each run's start repeated, plus the position within the run
        firsts = np.repeat(starts - (np.cumsum(sizes) - sizes), sizes)
        selection = (firsts + np.arange(total)).astype(np.uint32 if len(corpus) <= np.iinfo(np.uint32).max else np.int64)
        used = np.unique(a["run_images"][kept])
        if len(used) == corpus.num_images:
            used = None
    pairs = CorpusPairs(corpus, tokenizer, selection, used)
    report.answers_outside_table = corpus.manifest["answers_outside_table"]  # counted at the build, over every pair
    report.items, report.images = len(pairs), len(pairs.image_ids)
    return pairs, report
