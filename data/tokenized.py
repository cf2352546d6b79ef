"""Tokenised corpora: flat arrays that every process maps read-only and lazily.

Built once from the original JSON files (``lxmert corpus build``): the pre-training corpus
(``--json``), VQA/GQA question files (``--qa``) or NLVR2 files (``--nlvr2``), into a directory::

    CORPUS/tokens.npy          word pieces of every sentence, no [CLS]/[SEP] (uint16 or uint32)
    CORPUS/token_offsets.npy   pair i's pieces: tokens[token_offsets[i]:token_offsets[i + 1]]
    CORPUS/answer_offsets.npy  pair i's answers: answer_ids/answer_scores[answer_offsets[i]:...[i + 1]]
    CORPUS/answer_ids.npy      rows of the answer table (pre-training), label ids (VQA/GQA), or the label (NLVR2)
    CORPUS/answer_scores.npy   codes into the manifest's ``score_values`` (the scores, exactly)
    CORPUS/run_starts.npy      the pairs come in runs of one image and one source (a JSON entry's
    CORPUS/run_images.npy      sentences of one source; consecutive questions on one image): run k
    CORPUS/run_sources.npy     holds pairs run_starts[k] .. run_starts[k + 1] - 1, of image
    CORPUS/run_images2.npy     run_images[k] (and run_images2[k]: NLVR2's second) and source
                               run_sources[k] (VQA/GQA: the question type)
    CORPUS/image_names.bin     the images' ids (utf-8, sorted); image k's is
    CORPUS/image_names_offsets.npy  image_names[image_names_offsets[k]:image_names_offsets[k + 1]]
    CORPUS/keys.bin, keys_offsets.npy  question ids / identifiers (JSON), likewise (VQA, GQA, NLVR2)
    CORPUS/manifest.json       kind, counts, sources, checksums of the tokenizer's vocabulary, the
                               answer table and every file; written last

The pairs keep the order in which the JSON files are read (:func:`data.corpus.load_corpus`,
:mod:`data.tasks`), so a dataset over either gives the same examples for the same seed. The
directory is built under ``CORPUS.partial`` and renamed when complete. Per pair the corpus costs its
pieces (2 bytes each) plus about 10 bytes (offsets, answers); nothing is read until used, and the
pages read are shared by every process of the machine (page cache), never copied.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain
from pathlib import Path

import numpy as np

from .files import building, publish, read_json
from .files import read_manifest as _read_manifest
from .answers import AnswerTable
from .evaluation import question_type

FORMAT = "lxmert-corpus/1"


# --------------------------------------------------------------------------- checksums
def vocab_checksum(tokenizer) -> str:
    """sha256 of what turns text into ids: the vocabulary in id order, lower-casing and the
    special tokens' ids."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    h = hashlib.sha256()
    for token, idx in vocab:
        h.update(f"{idx}\t{token}\n".encode())
    specials = {k: getattr(tokenizer, f"{k}_token_id", None) for k in ("cls", "sep", "pad", "mask", "unk")}
    h.update(json.dumps({"lower": getattr(tokenizer, "do_lower_case", None), **specials}, sort_keys=True).encode())
    return h.hexdigest()


def table_checksum(rows: Sequence[str]) -> str:
    """sha256 of an answer table's rows in order: ``all_ans.json`` after normalisation and
    ``answer_dsets`` (pre-training), or a label vocabulary in id order (VQA, GQA)."""
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def answers_checksum(answers: AnswerTable) -> str:
    return table_checksum(answers.answers)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- building
class _Growing:
    """An append-only numpy array (amortised doubling): the build never holds Python lists of ids."""

    def __init__(self, dtype, capacity: int = 1 << 16) -> None:
        self.data, self.size = np.empty(capacity, dtype), 0

    def extend(self, values) -> None:
        values = np.asarray(values, dtype=self.data.dtype)
        need = self.size + values.size
        if need > self.data.size:
            grown = np.empty(max(need, 2 * self.data.size), self.data.dtype)
            grown[: self.size] = self.data[: self.size]
            self.data = grown
        self.data[self.size: need] = values
        self.size = need

    def append(self, value) -> None:
        self.extend((value,))

    def array(self) -> np.ndarray:
        return self.data[: self.size]


def _rows(path: Path, what: str) -> list:
    rows = read_json(path, f"{what} file")
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a list of {what} entries")
    return rows


def _pieces(tokenizer, sentences: list[str]) -> list[list[int]]:
    """Each sentence's word pieces, no special tokens. Straight from the fast tokenizer's Rust
    backend when it neither truncates nor pads (what ``tokenizer(...)`` then does too, without
    building a dict of every encoding: that was 40% of a build)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and backend.truncation is None and backend.padding is None:
        # encode_batch_fast (tokenizers >= 0.21) skips the character offsets
        encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
        return [e.ids for e in encode(sentences, add_special_tokens=False)]
    return tokenizer(sentences, add_special_tokens=False, return_attention_mask=False,
                     return_token_type_ids=False)["input_ids"]


@dataclass
class _Entry:
    """What one input entry contributes: sentences of one source on the same image(s), each with
    its scored answers ((table row or None when outside the table, score, answer)) and its key."""

    where: str
    images: tuple[str, ...]
    source: str
    sents: list[str]
    labels: list[list[tuple[int | None, float, str]]] | None = None
    keys: list | None = None


def _score(where: str, ans, score) -> float:
    if not isinstance(score, (int, float)) or isinstance(score, bool):
        raise ValueError(f"{where}: answer {ans!r} has score {score!r}, not a number")
    return float(score)


def _pretraining_entries(path: Path, answers: AnswerTable) -> Iterator[_Entry]:
    """``[{"img_id", "sentf": {source: [sentence]}, "labelf": {source: [{answer: score}]}}]``."""
    answer_id = lru_cache(maxsize=1 << 16)(answers.id)  # a few thousand answers, millions of times
    for n, row in enumerate(_rows(path, "corpus")):
        where = f"{path}: entry {n}"
        if not isinstance(row, dict) or not isinstance(row.get("img_id"), str) or not isinstance(row.get("sentf"), dict):
            raise ValueError(f"{where} lacks img_id (a string) or a sentf dict")
        img_id, labelf = row["img_id"], row.get("labelf") or {}
        where = f"{where} ({img_id})"
        if not isinstance(labelf, dict):
            raise ValueError(f"{where}: labelf must be a dict of source -> answers")
        for source, sents in row["sentf"].items():
            labels = labelf.get(source)
            if not isinstance(sents, list) or not all(isinstance(s, str) for s in sents):
                raise ValueError(f"{where}: sentf[{source!r}] must be a list of sentences")
            if labels is not None and (not isinstance(labels, list) or len(labels) != len(sents)):
                got = len(labels) if isinstance(labels, list) else type(labels).__name__
                raise ValueError(f"{where}: {len(sents)} {source} sentences but {got} labels")
            scored = None
            if labels is not None:
                scored = []
                for k, label in enumerate(labels):
                    if not isinstance(label, dict):
                        raise ValueError(f"{where}: labelf[{source!r}][{k}] must be {{answer: score}}")
                    scored.append([(answer_id(a), _score(where, a, s), a) for a, s in label.items()])
            if sents:
                yield _Entry(where, (img_id,), source, sents, scored)


def _qa_entries(path: Path, ans2label: dict[str, int]) -> Iterator[_Entry]:
    """VQA/GQA ``[{"question_id", "img_id", "sent", "label": {answer: score}}]`` (test: no label)."""
    for n, row in enumerate(_rows(path, "QA")):
        where = f"{path}: example {n}"
        if not isinstance(row, dict) or "question_id" not in row or not isinstance(row.get("img_id"), str) \
                or not isinstance(row.get("sent"), str):
            raise ValueError(f"{where} lacks question_id, img_id (a string) or sent (a string)")
        where = f"{where} (question {row['question_id']})"
        label = row.get("label")
        if label is not None and not isinstance(label, dict):
            raise ValueError(f"{where}: label must be {{answer: score}}")
        scored = None if label is None else [[(ans2label.get(a), _score(where, a, s), a) for a, s in label.items()]]
        yield _Entry(where, (row["img_id"],), question_type(row), [row["sent"]], scored, [row["question_id"]])


def _nlvr2_entries(path: Path) -> Iterator[_Entry]:
    """NLVR2 ``[{"identifier", "img0", "img1", "sent", "label": 0|1}]`` (test: no label)."""
    for n, row in enumerate(_rows(path, "NLVR2")):
        where = f"{path}: example {n}"
        if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in ("identifier", "img0", "img1", "sent")):
            raise ValueError(f"{where} lacks identifier, img0, img1 or sent (strings)")
        where = f"{where} ({row['identifier']})"
        label = row.get("label")
        if label is not None and (isinstance(label, bool) or label not in (0, 1)):
            raise ValueError(f"{where}: label must be 0 or 1, got {label!r}")
        scored = None if label is None else [[(int(label), 1.0, str(label))]]
        yield _Entry(where, (row["img0"], row["img1"]), "nlvr2", [row["sent"]], scored, [row["identifier"]])


KINDS = ("pretraining", "qa", "nlvr2")


def build_corpus(out: str | os.PathLike, paths: Sequence[str | os.PathLike], answers, tokenizer,
                 answers_path: str | os.PathLike | None = None, tokenizer_name: str = "", overwrite: bool = False,
                 progress: bool = True, kind: str = "pretraining", batch: int = 8192) -> dict:
    """Tokenise ``paths`` into a corpus directory ``out``; returns the manifest. ``kind``:
    "pretraining" (corpus JSON files, every source; ``answers`` an AnswerTable), "qa" (VQA/GQA
    files; ``answers`` the label vocabulary {answer: id}) or "nlvr2" (``answers`` None). Bad entries
    are refused with the file and the entry's number; nothing is left at ``out`` then."""
    from tqdm import tqdm

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    out, paths = Path(out), [Path(p) for p in paths]
    if not paths:
        raise ValueError("nothing to build: give input JSON files")
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists (pass --overwrite to replace it)")
    if kind == "pretraining":
        table, entries = answers.answers, lambda path: _pretraining_entries(path, answers)
    elif kind == "qa":
        table, entries = sorted(answers, key=answers.get), lambda path: _qa_entries(path, answers)
    else:
        table, entries = None, _nlvr2_entries
    started = time.perf_counter()
    wide = lambda size: np.uint32 if size > np.iinfo(np.uint16).max + 1 else np.uint16  # noqa: E731
    tokens = _Growing(wide(len(tokenizer)), 1 << 20)
    token_offsets, answer_offsets = _Growing(np.int64, 1 << 20), _Growing(np.int64, 1 << 20)
    answer_ids, answer_scores = _Growing(wide(len(table or (0, 1))), 1 << 20), _Growing(np.uint8, 1 << 20)
    run_starts, run_sources = _Growing(np.int64), _Growing(np.uint16)
    run_images: list[tuple[str, ...]] = []
    keys: list[bytes] = []
    token_offsets.append(0)
    answer_offsets.append(0)
    scores: dict[float, int] = {}
    sources: dict[str, int] = {}
    per_source: dict[str, int] = {}
    outside: list[str] = []
    outside_count = pairs = 0
    # one batch of sentences at a time: their answers in plain lists, moved to the arrays at once
    pending: list[str] = []
    pending_ids: list[int] = []
    pending_codes: list[int] = []
    pending_counts: list[int] = []

    def flush() -> None:
        if not pending:
            return
        pieces = _pieces(tokenizer, pending)
        lengths = np.fromiter(map(len, pieces), np.int64, len(pieces))
        base = tokens.size
        tokens.extend(np.fromiter(chain.from_iterable(pieces), tokens.data.dtype, int(lengths.sum())))
        token_offsets.extend(base + np.cumsum(lengths))
        base = answer_ids.size
        answer_ids.extend(pending_ids)
        answer_scores.extend(pending_codes)
        answer_offsets.extend(base + np.cumsum(np.asarray(pending_counts, np.int64)))
        bar.update(len(pending))
        for batch_list in (pending, pending_ids, pending_codes, pending_counts):
            batch_list.clear()

    bar = tqdm(unit=" sentences", unit_scale=True, desc=f"building {out.name}", disable=not progress, file=sys.stderr,
               mininterval=0.5)
    for n, path in enumerate(paths):
        bar.set_postfix_str(f"file {n + 1}/{len(paths)}: {path.name}")
        for entry in entries(path):
            if entry.source not in sources:
                if len(sources) == np.iinfo(np.uint16).max:
                    raise ValueError(f"{entry.where}: more than {len(sources)} sentence sources or question types")
                sources[entry.source] = len(sources)
            # a run: an entry's sentences of one source (pre-training), or consecutive examples of one
            # image and question type
            if kind == "pretraining" or not run_images or run_images[-1] != entry.images \
                    or int(run_sources.array()[-1]) != sources[entry.source]:
                run_starts.append(pairs)
                run_images.append(entry.images)
                run_sources.append(sources[entry.source])
            per_source[entry.source] = per_source.get(entry.source, 0) + len(entry.sents)
            for k, sent in enumerate(entry.sents):
                pending.append(sent)
                count = 0
                for idx, score, ans in entry.labels[k] if entry.labels is not None else ():
                    if idx is None:
                        outside_count += 1
                        if len(outside) < 5:
                            outside.append(f"{entry.where}: {ans!r}")
                        continue
                    code = scores.setdefault(score, len(scores))
                    if code > 255:
                        raise ValueError(f"{entry.where}: more than 256 distinct answer scores")
                    pending_ids.append(idx)
                    pending_codes.append(code)
                    count += 1
                pending_counts.append(count)
                if entry.keys is not None:
                    keys.append(json.dumps(entry.keys[k]).encode())
                pairs += 1
            if len(pending) >= batch:
                flush()
        flush()
    bar.close()
    if pairs == 0:
        raise ValueError(f"{', '.join(map(str, paths))}: no sentences")
    run_starts.append(pairs)

    names = sorted({name for images in run_images for name in images})
    index = {name: k for k, name in enumerate(names)}
    arrays = {
        "tokens": tokens.array(), "token_offsets": _narrow(token_offsets.array()),
        "answer_offsets": _narrow(answer_offsets.array()), "answer_ids": answer_ids.array(),
        "answer_scores": answer_scores.array(), "run_starts": _narrow(run_starts.array()),
        "run_images": np.fromiter((index[images[0]] for images in run_images), np.uint32, len(run_images)),
        "run_sources": run_sources.array(),
    }
    if kind == "nlvr2":
        arrays["run_images2"] = np.fromiter((index[images[1]] for images in run_images), np.uint32, len(run_images))
    blobs = {"image_names": [name.encode() for name in names]}
    if keys:
        blobs["keys"] = keys
    for name, parts in blobs.items():
        offsets = np.zeros(len(parts) + 1, np.int64)
        np.cumsum([len(p) for p in parts], out=offsets[1:])
        arrays[f"{name}_offsets"] = offsets

    with building(out) as partial:  # removed if anything below fails
        files = {}
        for name, array in arrays.items():
            np.save(partial / f"{name}.npy", np.ascontiguousarray(array))
            files[f"{name}.npy"] = _file_sha256(partial / f"{name}.npy")
        for name, parts in blobs.items():
            (partial / f"{name}.bin").write_bytes(b"".join(parts))
            files[f"{name}.bin"] = _file_sha256(partial / f"{name}.bin")
        manifest = {
            "format": FORMAT, "kind": kind, "pairs": pairs, "images": len(names), "tokens": int(tokens.size),
            "answers": int(answer_ids.size), "answers_outside_table": outside_count, "outside_examples": outside,
            "runs": len(run_images), "sources": list(sources), "pairs_per_source": per_source,
            "score_values": sorted(scores, key=scores.get),
            "tokenizer": {"name": str(tokenizer_name), "vocab_size": len(tokenizer), "checksum": vocab_checksum(tokenizer)},
            "answer_table": None if table is None else {
                "path": str(Path(answers_path).resolve()) if answers_path else None, "rows": len(table),
                "checksum": table_checksum(table)},
            "inputs": [{"path": str(p.resolve()), "bytes": p.stat().st_size} for p in paths],
            "files": files, "seconds": round(time.perf_counter() - started, 1),
        }
        publish(partial, out, manifest)
        return manifest


def _narrow(offsets: np.ndarray) -> np.ndarray:
    """Offsets as uint32 when they fit (half the pages), int64 otherwise."""
    return offsets.astype(np.uint32) if offsets[-1] <= np.iinfo(np.uint32).max else offsets


# --------------------------------------------------------------------------- reading
def is_corpus(path: str | os.PathLike) -> bool:
    """A directory (or an unfinished build of one): given where JSON files may be, it is taken for a
    corpus, and :func:`read_manifest` says what is wrong with it if it is not a complete one."""
    path = Path(path)
    return path.is_dir() or path.with_name(path.name + ".partial").is_dir()


def read_manifest(path: str | os.PathLike) -> dict:
    return _read_manifest(path, "corpus", FORMAT)


class TokenizedCorpus:
    """Read-only access to a built corpus. The arrays are mapped on first use in each process
    (the object pickles without them, so it crosses to loader workers in a few hundred bytes)."""

    def __init__(self, path: str | os.PathLike, kind: str | None = None) -> None:
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        self.kind = self.manifest.get("kind", "pretraining")
        if kind is not None and self.kind != kind:
            hint = {"pretraining": "--json", "qa": "--qa", "nlvr2": "--nlvr2"}[kind]
            raise ValueError(f"{self.path}: a {self.kind} corpus, where {kind} data is expected (build it with "
                             f"`lxmert corpus build {hint} ...`)")
        self.score_values = tuple(float(s) for s in self.manifest["score_values"])
        self._maps: tuple[int, dict] | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_maps": None}

    @property
    def a(self) -> dict[str, np.ndarray]:
        """The arrays, mapped in this process (``.bin`` files as bytes)."""
        if self._maps is None or self._maps[0] != os.getpid():
            arrays = {}
            for name in self.manifest["files"]:
                path = self.path / name
                if name.endswith(".npy"):  # a plain ndarray over the map: slicing a np.memmap costs 10x more
                    arrays[name[:-4]] = np.load(path, mmap_mode="r").view(np.ndarray)
                else:  # np.memmap refuses an empty file
                    arrays[name[:-4]] = np.memmap(path, np.uint8, mode="r").view(np.ndarray) if path.stat().st_size \
                        else np.zeros(0, np.uint8)
            self._maps = (os.getpid(), arrays)
        return self._maps[1]

    def __len__(self) -> int:
        return self.manifest["pairs"]

    @property
    def num_images(self) -> int:
        return self.manifest["images"]

    @property
    def sources(self) -> list[str]:
        return self.manifest["sources"]

    def _blob(self, name: str, k: int) -> bytes:
        a = self.a
        start, end = a[f"{name}_offsets"][k: k + 2]
        return bytes(a[name][start:end])

    def image_name(self, k: int) -> str:
        return self._blob("image_names", k).decode()

    def image_names(self) -> list[str]:
        """Every image id, in order (one read of the names; for start-up checks, not kept)."""
        a = self.a
        blob, offsets = bytes(a["image_names"]), a["image_names_offsets"].tolist()
        return [blob[start:end].decode() for start, end in zip(offsets, offsets[1:])]

    def key(self, i: int):
        """Pair ``i``'s question id or identifier, as the input file had it (number or string)."""
        return json.loads(self._blob("keys", i))

    def run_of(self, i: int) -> int:
        starts = self.a["run_starts"]  # the key in the array's dtype: no converted copy of the array a search
        return int(starts.searchsorted(starts.dtype.type(i), side="right")) - 1

    def source_of(self, i: int) -> str:
        """Pair ``i``'s source (VQA/GQA: its question type)."""
        return self.sources[int(self.a["run_sources"][self.run_of(i)])]

    def images_of(self, i: int) -> tuple[int, ...]:
        """Pair ``i``'s image (two for NLVR2), as indices into the sorted image names."""
        a, run = self.a, self.run_of(i)
        if "run_images2" in a:
            return int(a["run_images"][run]), int(a["run_images2"][run])
        return (int(a["run_images"][run]),)

    def pieces(self, i: int) -> np.ndarray:
        a = self.a
        start, end = a["token_offsets"][i: i + 2]
        return a["tokens"][start:end]

    def encoded(self, i: int, cls: int, sep: int, max_tokens: int) -> list[int]:
        """``[CLS] pieces [SEP]``, the pieces cut to ``max_tokens - 2``: what
        ``tokenizer(sentence, truncation=True, max_length=max_tokens)`` gives."""
        return [cls, *self.pieces(i)[: max(max_tokens - 2, 0)].tolist(), sep]

    def answers(self, i: int) -> tuple[tuple[int, float], ...]:
        a = self.a
        start, end = a["answer_offsets"][i: i + 2]
        if start == end:
            return ()
        values = self.score_values
        return tuple((int(idx), values[code]) for idx, code in zip(a["answer_ids"][start:end], a["answer_scores"][start:end]))

    def check(self, tokenizer, table: Sequence[str] | None = None, what: str = "answer table") -> None:
        """Refuse a tokenizer or answer table (rows in order) other than the build's, with both checksums."""
        m = self.manifest
        got = vocab_checksum(tokenizer)
        if got != m["tokenizer"]["checksum"]:
            raise ValueError(f"{self.path}: built with tokenizer {m['tokenizer']['name']!r} (vocabulary checksum "
                             f"{m['tokenizer']['checksum'][:16]}), but this run's tokenizer has checksum {got[:16]}: "
                             f"rebuild the corpus with this run's tokenizer or use the build's")
        if table is None or m["answer_table"] is None:
            return
        got = table_checksum(table)
        if got != m["answer_table"]["checksum"]:
            raise ValueError(f"{self.path}: built with {what} {m['answer_table']['path']} ({m['answer_table']['rows']} "
                             f"rows, checksum {m['answer_table']['checksum'][:16]}), but this run's {what} "
                             f"({len(table)} rows) has checksum {got[:16]}: rebuild the corpus with this run's "
                             f"{what} or use the build's")

    def missing_from(self, store) -> list[str]:
        """The corpus's images that ``store`` lacks."""
        return store.missing(self.image_names())

    def outside_table(self) -> str:
        """How many answers the build found outside the answer table, with examples (file, entry, answer)."""
        m = self.manifest
        return f"{m['answers_outside_table']} answers outside the table, e.g. {'; '.join(m['outside_examples'][:3])}"

    def __repr__(self) -> str:
        return f"TokenizedCorpus({str(self.path)!r}, {self.kind}, {len(self)} pairs on {self.num_images} images)"


def verify_corpus(path: str | os.PathLike) -> dict:
    """Every file's checksum against the manifest, and the arrays' shapes against its counts."""
    corpus = TokenizedCorpus(path)
    m = corpus.manifest
    for name, digest in m["files"].items():
        got = _file_sha256(corpus.path / name)
        if got != digest:
            raise ValueError(f"{corpus.path / name}: checksum {got[:16]} differs from the manifest's {digest[:16]}")
    a = corpus.a
    expected = {"token_offsets": m["pairs"] + 1, "answer_offsets": m["pairs"] + 1, "tokens": m["tokens"],
                "answer_ids": m["answers"], "answer_scores": m["answers"], "run_starts": m["runs"] + 1,
                "run_images": m["runs"], "run_sources": m["runs"], "image_names_offsets": m["images"] + 1}
    if "keys_offsets" in a:
        expected["keys_offsets"] = m["pairs"] + 1
    if "run_images2" in a:
        expected["run_images2"] = m["runs"]
    for name, size in expected.items():
        if a[name].shape != (size,):
            raise ValueError(f"{corpus.path / (name + '.npy')}: {a[name].shape[0]} entries, the manifest implies {size}")
    return m


def corpus_paths(paths: Iterable[str | os.PathLike]) -> tuple[list[Path], Path | None]:
    """Split a data.train/data.valid list into JSON files, or one corpus directory."""
    paths = [Path(p) for p in paths]
    dirs = [p for p in paths if is_corpus(p)]
    if not dirs:
        return paths, None
    if len(paths) > 1:
        raise ValueError(f"{', '.join(map(str, paths))}: give either corpus JSON files or one corpus directory "
                         f"(build several JSON files into one with `lxmert corpus build --json F1 F2 ...`)")
    return [], dirs[0]
