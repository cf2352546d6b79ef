"""A small synthetic world in the ORIGINAL file formats, for the demo and the tests.

Each image holds 2 to 4 objects (a class and a colour each) plus background. Every object is
seen by a few region proposals whose features encode its class, its colour and its position
(through fixed random projections) plus noise; background regions encode neither. Captions and
questions talk about the scene, so colours, counts and classes in the text can only be
predicted by looking at the regions - pre-training has something to learn that helps the tasks.

Written under OUT:

    features/train.tsv, features/val.tsv   bottom-up-attention TSV (base64 buffers)
    lxmert/train.json, lxmert/minival.json pre-training corpus (img_id, sentf, labelf)
    lxmert/all_ans.json                    answer table [{"ans", "dsets"}]
    vqa/{train,minival}.json               VQA task files, trainval_ans2label.json / label2ans
    gqa/{train,testdev}.json               GQA task files, trainval_ans2label.json / label2ans
    nlvr2/{train,valid}.json               NLVR2 pairs
    features/objects_vocab.txt, attributes_vocab.txt   the detector's label names (line i names id i)
    vocab.txt                              WordPiece vocabulary of the world's text (deterministic)
    world.json                             sizes: images, regions, feature dim, labels
    scenes.json                            the truth: each image's objects (class, colour, size, column,
                                           box; indices into CLASSES, COLOURS, SIZES), for
                                           :func:`caption_truth` and the grounding study
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from pathlib import Path

import numpy as np

from .evaluation import question_type
from .features import RegionRecord, tsv_line
from .files import atomic_write_text

CLASSES = ["dog", "cat", "car", "ball", "cup", "tree", "chair", "bird", "book", "lamp", "shoe", "hat"]
COLOURS = ["red", "blue", "green", "yellow", "white", "black", "orange", "purple"]
SIZES = ["small", "large"]
NLVR2_PAIRS = 2  # image pairs a sentence is shown with (NLVR2's sets: consistency = right on all of them)
NUMBERS = dict(enumerate(["no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]))
MAX_COUNT = 4  # of one class in one image
BACKGROUND = len(CLASSES)  # detector label of background regions (object ids), "no attribute" = len(COLOURS)
WIDTH, HEIGHT = 640, 480
SLOTS = 6  # objects stand in distinct columns, so "left of" is never ambiguous
REGIONS_PER_OBJECT = 2


def _scene(rng: random.Random) -> list[dict]:
    """1 to 3 classes, 1 to 4 objects of each (6 at most), each with a colour and a size, in distinct columns."""
    while True:
        classes = rng.sample(range(len(CLASSES)), rng.randint(1, 3))
        counts = [rng.randint(1, MAX_COUNT) for _ in classes]
        if sum(counts) <= SLOTS:
            break
    slots = rng.sample(range(SLOTS), sum(counts))
    objects, k = [], 0
    for cls, n in zip(classes, counts):
        for _ in range(n):
            objects.append(_object(cls, rng.randrange(len(COLOURS)), rng.randrange(len(SIZES)), slots[k], rng))
            k += 1
    return sorted(objects, key=lambda o: o["slot"])


def _object(cls: int, col: int, size: int, slot: int, rng: random.Random) -> dict:
    side = rng.uniform(50, 80) if size == 0 else rng.uniform(120, 160)
    cx = (slot + 0.5) * WIDTH / SLOTS + rng.uniform(-10, 10)
    cy = rng.uniform(side / 2, HEIGHT - side / 2)
    box = (max(0.0, cx - side / 2), cy - side / 2, min(float(WIDTH), cx + side / 2), cy + side / 2)
    return {"cls": cls, "col": col, "size": size, "slot": slot, "box": box}


class _Projector:
    """Fixed random projections that turn class, colour, size and position into region features."""

    def __init__(self, dim: int, seed: int) -> None:
        g = np.random.default_rng(seed)
        self.cls = g.standard_normal((len(CLASSES) + 1, dim)).astype(np.float32)
        self.col = g.standard_normal((len(COLOURS) + 1, dim)).astype(np.float32)
        self.size = g.standard_normal((len(SIZES) + 1, dim)).astype(np.float32) * 0.5
        self.pos = g.standard_normal((4, dim)).astype(np.float32) * 0.5

    def __call__(self, cls: int, col: int, size: int, box: np.ndarray, g: np.random.Generator) -> np.ndarray:
        norm = box / np.array([WIDTH, HEIGHT, WIDTH, HEIGHT], dtype=np.float32)
        x = (self.cls[cls] + self.col[col] + self.size[size] + norm @ self.pos
             + 0.3 * g.standard_normal(self.cls.shape[1]).astype(np.float32))
        return np.maximum(x, 0.0)  # post-ReLU, like detector features


def _regions(objects: list[dict], n_regions: int, proj: _Projector, g: np.random.Generator, img_id: str) -> RegionRecord:
    """Up to REGIONS_PER_OBJECT proposals an object (jittered boxes), at least 2 background proposals."""
    boxes, obj_ids, obj_conf, attr_ids, attr_conf, feats = [], [], [], [], [], []
    per_object = max(1, min(REGIONS_PER_OBJECT, (n_regions - 2) // len(objects)))
    for o in objects:
        for _ in range(per_object):
            jitter = g.normal(0, 4, 4).astype(np.float32)
            box = np.clip(np.array(o["box"], dtype=np.float32) + jitter, 0, [WIDTH, HEIGHT, WIDTH, HEIGHT]).astype(np.float32)
            boxes.append(box)
            obj_ids.append(o["cls"] if g.random() > 0.1 else int(g.integers(len(CLASSES))))  # a 90%-right detector
            attr_ids.append(o["col"] if g.random() > 0.1 else int(g.integers(len(COLOURS))))
            obj_conf.append(g.uniform(0.5, 1.0))
            attr_conf.append(g.uniform(0.3, 1.0))
            feats.append(proj(o["cls"], o["col"], o["size"], box, g))
    while len(boxes) < n_regions:  # background proposals
        x, y = g.uniform(0, WIDTH - 50), g.uniform(0, HEIGHT - 50)
        box = np.array([x, y, min(WIDTH, x + g.uniform(40, 300)), min(HEIGHT, y + g.uniform(40, 300))], dtype=np.float32)
        boxes.append(box)
        obj_ids.append(BACKGROUND)
        attr_ids.append(len(COLOURS))
        obj_conf.append(g.uniform(0.1, 0.5))
        attr_conf.append(g.uniform(0.1, 0.3))
        feats.append(proj(BACKGROUND, len(COLOURS), len(SIZES), box, g))
    order = g.permutation(n_regions)
    pick = lambda xs, t: np.asarray(xs, dtype=t)[order]  # noqa: E731
    return RegionRecord(img_id, HEIGHT, WIDTH, pick(boxes, np.float32), pick(obj_ids, np.int64), pick(obj_conf, np.float32),
                        pick(attr_ids, np.int64), pick(attr_conf, np.float32), pick(feats, np.float32))


def _plural(cls: int, n: int) -> str:
    return CLASSES[cls] + ("s" if n != 1 else "")


def _name(o: dict, objects: list[dict], colour: bool = True) -> str | None:
    """The shortest unambiguous name of ``o`` in its scene ("dog", "small dog", "red dog", "small red
    dog"; without its colour if not ``colour``), or None."""
    parts = [("cls",), ("size", "cls")] + ([("col", "cls"), ("size", "col", "cls")] if colour else [])
    for keys in parts:
        if sum(all(p[k] == o[k] for k in keys) for p in objects) == 1:
            return " ".join({"size": SIZES[o["size"]], "col": COLOURS[o["col"]], "cls": CLASSES[o["cls"]]}[k] for k in keys)
    return None


def _words(o: dict) -> tuple[str, str, str]:
    return SIZES[o["size"]], COLOURS[o["col"]], CLASSES[o["cls"]]


def _captions(objects: list[dict], rng: random.Random) -> list[str]:
    """Sentences that name objects, their attributes, counts and left-right relations."""
    listed = [f"a {' '.join(_words(o))}" for o in objects]
    caps = ["a picture of " + (", ".join(listed[:-1]) + " and " + listed[-1] if len(listed) > 1 else listed[0]) + " ."]
    counts = Counter(o["cls"] for o in objects)
    cls, n = rng.choice(sorted(counts.items()))
    caps.append(f"there {'is' if n == 1 else 'are'} {NUMBERS[n]} {_plural(cls, n)} .")
    o = rng.choice(objects)
    caps.append(f"there is a {COLOURS[o['col']]} {CLASSES[o['cls']]} .")
    named = [(o, _name(o, objects)) for o in objects]
    named = [(o, nm) for o, nm in named if nm]
    if len(named) >= 2:
        (a, na), (b, nb) = sorted(rng.sample(named, 2), key=lambda x: x[0]["slot"])
        caps.append(f"the {na} is left of the {nb} ." if rng.random() < 0.5 else f"the {nb} is right of the {na} .")
    short = [(o, nm) for o, nm in named if len(nm.split()) < 3]
    if short:  # the attribute its name leaves out
        o, nm = rng.choice(short)
        caps.append(f"the {nm} is {SIZES[o['size']] if COLOURS[o['col']] in nm.split() else COLOURS[o['col']]} .")
    return caps


CAPTION_KINDS = ("listing", "count", "colour and class", "relation", "attribute")


def caption_kind(caption: str) -> str:
    """Which of :func:`_captions`' sentences ``caption`` is (one of CAPTION_KINDS)."""
    words = caption.rstrip(" .").split()
    if caption.startswith("a picture of "):
        return "listing"
    if words[0] == "there":
        return "colour and class" if words[3] in COLOURS and words[1] == "is" and len(words) == 5 else "count"
    return "relation" if " left of " in caption or " right of " in caption else "attribute"


def _named(name: str, objects: list[dict]) -> dict | None:
    """The one object of the scene that ``name`` ("dog", "small red dog", ...) fits, or None."""
    fits = [o for o in objects if set(name.split()) <= set(_words(o))]
    return fits[0] if len(fits) == 1 else None


def caption_truth(caption: str, objects: list[dict]) -> bool:
    """Whether a synthetic caption (any image's) is true of the scene ``objects``: a listing names
    exactly its objects; a count its number of that class; a colour and class an object of both;
    a relation two objects the scene names unambiguously, in that order; an attribute such an object
    of that size or colour. Every caption is true of its own image (tested); a mismatched one may be
    true by accident (a cap on matching accuracy)."""
    kind, text = caption_kind(caption), caption.rstrip(" .")
    words = text.split()
    if kind == "listing":
        listed = text[len("a picture of "):].replace(" and ", ", ").split(", ")
        return sorted(listed) == sorted("a " + " ".join(_words(o)) for o in objects)
    if kind == "count":
        n = next(k for k, v in NUMBERS.items() if v == words[2])
        return sum(o["cls"] == _class_of(words[3]) for o in objects) == n
    if kind == "colour and class":
        return any(COLOURS[o["col"]] == words[3] and CLASSES[o["cls"]] == words[4] for o in objects)
    if kind == "relation":
        first, side, second = text[len("the "):].partition(" is left of the " if " left of " in text else " is right of the ")
        a, b = _named(first, objects), _named(second, objects)
        return a is not None and b is not None and (a["slot"] < b["slot"]) == ("left" in side)
    name, _, attribute = text[len("the "):].rpartition(" is ")
    o = _named(name, objects)
    return o is not None and attribute in _words(o)


def caption_pairs(captions: list[tuple[str, str]], rng: random.Random) -> list[tuple[str, str, bool]]:
    """Each ``(image, caption)`` as a matched pair, then its image with another image's caption drawn by
    ``rng`` (mismatched): ``(image, caption, matched)``, twice as many as ``captions``."""
    if len({img for img, _ in captions}) < 2:
        raise ValueError(f"caption_pairs: captions of at least two images needed, got {len(captions)} of fewer")
    pairs = []
    for img, caption in captions:
        pairs.append((img, caption, True))
        while (other := rng.choice(captions))[0] == img:
            pass
        pairs.append((img, other[1], False))
    return pairs


def _question_candidates(objects: list[dict], rng: random.Random) -> list[tuple[str, str]]:
    """Every question this scene can answer without ambiguity, as (question, answer); the question
    type is its first two words ("what color", "how many", "is there", "what is", "is the")."""
    qs = []
    counts = Counter(o["cls"] for o in objects)
    for o in objects:
        name = _name(o, objects, colour=False)
        if name:
            qs.append((f"what color is the {name} ?", COLOURS[o["col"]]))
    absent = [c for c in range(len(CLASSES)) if c not in counts]
    for cls in [*counts, rng.choice(absent)]:
        qs.append((f"how many {_plural(cls, 2)} are there ?", str(counts.get(cls, 0))))
    present = {(o["col"], o["cls"]) for o in objects}
    for col, cls in sorted(present):
        qs.append((f"is there a {COLOURS[col]} {CLASSES[cls]} ?", "yes"))
        # the hard "no": a present class in another colour, or a present colour on another class
        other = (rng.randrange(len(COLOURS)), cls) if rng.random() < 0.5 else (col, rng.randrange(len(CLASSES)))
        if other not in present:
            qs.append((f"is there a {COLOURS[other[0]]} {CLASSES[other[1]]} ?", "no"))
    named = [(o, _name(o, objects)) for o in objects]
    named = [(o, nm) for o, nm in named if nm]
    for o, nm in named:
        right = [p for p in objects if p["slot"] > o["slot"]]
        if right:  # the nearest object to its right
            qs.append((f"what is right of the {nm} ?", CLASSES[min(right, key=lambda p: p["slot"])["cls"]]))
    for (a, na), (b, nb) in ((x, y) for x in named for y in named if x[0] is not y[0]):
        if rng.random() < 0.5:
            qs.append((f"is the {na} left of the {nb} ?", "yes" if a["slot"] < b["slot"] else "no"))
    return qs


def _balanced(questions: list[tuple[str, str, str]], rng: random.Random) -> list[tuple[str, str, str]]:
    """Balance (image, question, answer) triples within each question type the way GQA does:
    keep as many of each answer as the type's rarest answer has, so that no answer of a type is
    more frequent than chance among that type's answers; and no type more than the median type's
    count (yes/no questions would otherwise be most of them, and the prior half right on them)."""
    by_type: dict[str, dict[str, list]] = {}
    for q in questions:
        by_type.setdefault(question_type({"sent": q[1]}), {}).setdefault(q[2], []).append(q)
    by_type = {t: answers for t, answers in by_type.items() if len(answers) >= 2}
    sizes = sorted(len(a) * min(map(len, a.values())) for a in by_type.values())
    cap = sizes[len(sizes) // 2] if sizes else 0
    kept = []
    for answers in by_type.values():
        m = min(min(len(v) for v in answers.values()), max(1, cap // len(answers)))
        for v in answers.values():
            kept += rng.sample(v, m)
    return sorted(kept, key=lambda q: (q[0], rng.random()))


ANSWER_TYPE = {"how many": "number", "is there": "yes/no", "is the": "yes/no"}


def _nlvr2_sentence(a: list[dict], b: list[dict], rng: random.Random) -> str:
    """A statement about an object of the left image ``a`` and its class over the pair (a, b)."""
    o = rng.choice(a)
    thing = f"a {COLOURS[o['col']]} {CLASSES[o['cls']]}"
    kind = rng.randrange(4)
    if kind == 0:
        n = sum(p["cls"] == o["cls"] for p in a + b) + rng.choice([-1, 0, 0, 1])
        return f"there {'is' if n == 1 else 'are'} {NUMBERS[max(n, 1)]} {_plural(o['cls'], max(n, 1))} in total ."
    if kind == 1:
        return f"both images contain {thing} ."
    if kind == 2:
        return f"the left image contains {thing} and the right image does not ."
    return f"the left image has more {_plural(o['cls'], 2)} than the right image ."


def _parse(sentence: str) -> tuple[str, int, int, int]:
    """(kind, number, colour, class) of a synthetic NLVR2 statement (-1 where it names none)."""
    w = sentence.split()
    if w[0] == "there":  # there is/are N CLS in total
        return "count", next(k for k, v in NUMBERS.items() if v == w[2]), -1, _class_of(w[3])
    if w[0] == "both":  # both images contain a COL CLS
        return "both", -1, COLOURS.index(w[4]), _class_of(w[5])
    if w[3] == "contains":  # the left image contains a COL CLS and the right image does not
        return "left only", -1, COLOURS.index(w[5]), _class_of(w[6])
    return "more", -1, -1, _class_of(w[5])  # the left image has more CLS than the right image


def nlvr2_label(sentence: str, a: list[dict], b: list[dict]) -> int:
    """The truth of a synthetic NLVR2 statement about (left image a, right image b)."""
    kind, n, col, cls = _parse(sentence)
    has = lambda s: any(p["col"] == col and p["cls"] == cls for p in s)  # noqa: E731
    count = lambda s: sum(p["cls"] == cls for p in s)  # noqa: E731
    return int({"count": lambda: count(a + b) == n, "both": lambda: has(a) and has(b),
                "left only": lambda: has(a) and not has(b), "more": lambda: count(a) > count(b)}[kind]())


def _make(sentence: str, a: list[dict], b: list[dict], want: bool, rng: random.Random) -> tuple[list[dict], list[dict]]:
    """Edit the pair (add or remove an object of the statement's class, swap the images) until the
    statement is ``want`` (a few edits at most; the label is always computed, never assumed)."""
    kind, n, col, cls = _parse(sentence)
    for _ in range(8):
        if nlvr2_label(sentence, a, b) == want:
            break
        thing = {"cls": cls, "col": col if col >= 0 else rng.randrange(len(COLOURS)), "size": rng.randrange(len(SIZES))}
        same = lambda p: p["cls"] == cls and (col < 0 or p["col"] == col)  # noqa: E731
        if kind == "count":
            total = sum(p["cls"] == cls for p in a + b)
            if total < n or (total == n and not any(same(p) for p in a + b)):
                b = _with(b, thing, rng)
            else:
                a, b = _without(a, same, rng, first=True), _without(b, same, rng, first=True)
        elif kind == "more":
            a, b = (b, a) if sum(map(same, b)) != sum(map(same, a)) else (_with(a, thing, rng), b)
        elif kind == "both":
            a, b = (_with(a, thing, rng), _with(b, thing, rng)) if want else (a, _without(b, same, rng))
        else:  # left only
            a, b = (_with(a, thing, rng), _without(b, same, rng)) if want else (a, _with(b, thing, rng))
    return a, b


def _with(scene: list[dict], o: dict, rng: random.Random) -> list[dict]:
    """``scene`` with a new object like ``o`` in a free column (replacing an object if none is free)."""
    free = sorted(set(range(SLOTS)) - {p["slot"] for p in scene})
    if not free:
        victim = rng.choice(scene)
        scene = [p for p in scene if p is not victim]
        free = [victim["slot"]]
    return sorted([*scene, _object(o["cls"], o["col"], o["size"], rng.choice(free), rng)], key=lambda p: p["slot"])


def _without(scene: list[dict], drop, rng: random.Random, first: bool = False) -> list[dict]:
    """``scene`` without the objects ``drop`` selects (only the first with ``first``); never empty."""
    hits = [p for p in scene if drop(p)][:1 if first else None]
    kept = [p for p in scene if not any(p is h for h in hits)]
    if kept:
        return kept
    while True:
        o = _object(rng.randrange(len(CLASSES)), rng.randrange(len(COLOURS)), rng.randrange(len(SIZES)), rng.randrange(SLOTS), rng)
        if not drop(o):
            return [o]


def _class_of(word: str) -> int:
    return CLASSES.index(word[:-1] if word not in CLASSES else word)


def _dump(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj))


def _write_vocab(texts: list[str], out: Path) -> None:
    """A WordPiece vocabulary of the world's text: special tokens, every character (also as a
    ``##`` continuation), then every whole word, each group sorted. Deterministic: the same world
    gives the same file on every machine (a trained vocabulary breaks frequency ties by hash order)."""
    words = sorted({w for text in texts for w in text.lower().split()})
    chars = sorted({c for w in words for c in w})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars),
             *(w for w in words if len(w) > 1)]
    atomic_write_text(out, "\n".join(vocab) + "\n")


def write_world(out: str | os.PathLike, images: int = 600, seed: int = 0, regions: int = 16, feat_dim: int = 2048,
                val_fraction: float = 0.2, progress: bool = True) -> dict:
    """Write the synthetic world under ``out``; returns its description (also in world.json)."""
    from tqdm import tqdm

    if images < 10:
        raise ValueError(f"images must be at least 10, got {images}")
    if not 10 <= regions <= 100:
        raise ValueError(f"regions must be in [10, 100], got {regions}")
    out = Path(out)
    rng = random.Random(seed)
    g = np.random.default_rng(seed)
    proj = _Projector(feat_dim, seed + 1)
    scenes = {f"synth{i:06d}": _scene(rng) for i in range(images)}
    ids = list(scenes)
    n_val = max(2, int(images * val_fraction))
    splits = {"train": ids[n_val:], "val": ids[:n_val]}

    # NLVR2: sets of one sentence and NLVR2_PAIRS image pairs each (half as many sets as images), every
    # image its own scene named by NLVR2's convention: the identifier minus its last field + -img0/-img1
    nlvr2: dict[str, list[dict]] = {"train": [], "valid": []}
    for split, name, prefix in (("train", "train", "train"), ("val", "valid", "dev")):
        for k in range(max(2, len(splits[split]) // 2)):
            sent = None
            for j in range(NLVR2_PAIRS):
                a, b = _scene(rng), _scene(rng)
                sent = sent or _nlvr2_sentence(a, b, rng)
                a, b = _make(sent, a, b, rng.random() < 0.5, rng)
                pair = f"{prefix}-{k}-{j}"
                scenes[f"{pair}-img0"], scenes[f"{pair}-img1"] = a, b
                splits[split].extend((f"{pair}-img0", f"{pair}-img1"))
                nlvr2[name].append({"identifier": f"{pair}-0", "img0": f"{pair}-img0", "img1": f"{pair}-img1",
                                    "sent": sent, "label": nlvr2_label(sent, a, b), "uid": f"{name}-{k}-{j}"})

    (out / "features").mkdir(parents=True, exist_ok=True)
    for split, split_ids in splits.items():
        tmp = out / "features" / f"{split}.tsv.tmp"
        with open(tmp, "w") as f:
            for img_id in tqdm(split_ids, desc=f"synth features {split}", unit="img", disable=not progress):
                f.write(tsv_line(_regions(scenes[img_id], regions, proj, g, img_id)))
        os.replace(tmp, out / "features" / f"{split}.tsv")
    atomic_write_text(out / "features" / "objects_vocab.txt", "\n".join(CLASSES + ["__background__"]) + "\n")
    atomic_write_text(out / "features" / "attributes_vocab.txt", "\n".join(COLOURS + ["__no_attribute__"]) + "\n")

    texts: list[str] = [r["sent"] for rows in nlvr2.values() for r in rows]
    corpus = {"train": [], "minival": []}
    vqa = {"train": [], "minival": []}
    gqa = {"train": [], "testdev": []}
    qid = 0
    for split, name in (("train", "train"), ("val", "minival")):
        images_of = [i for i in splits[split] if i.startswith("synth")]
        candidates = [(img, q, a) for img in images_of for q, a in _question_candidates(scenes[img], rng)]
        questions: dict[str, list[tuple[str, str]]] = {}
        for img, q, a in _balanced(candidates, rng):
            questions.setdefault(img, []).append((q, a))
        for img_id in images_of:
            caps = _captions(scenes[img_id], rng)
            qas = questions.get(img_id, [])
            rng.shuffle(qas)
            half = len(qas) // 2
            entry = {"img_id": img_id, "sentf": {"mscoco": caps}, "labelf": {}}
            for source, part in (("vqa", qas[:half]), ("gqa", qas[half:])):
                if part:
                    entry["sentf"][source] = [q for q, _ in part]
                    entry["labelf"][source] = [{a: 1.0} for _, a in part]
            corpus[name].append(entry)
            texts += caps + [q for q, _ in qas]
            for q, a in qas:
                qid += 1
                kind = ANSWER_TYPE.get(question_type({"sent": q}), "other")
                same_type = [x for x in ANSWERS_OF[kind] if x != a]
                label = {a: 1.0} if kind == "yes/no" or rng.random() < 0.7 else {a: 1.0, rng.choice(same_type): 0.3}
                vqa["train" if split == "train" else "minival"].append(
                    {"question_id": qid, "img_id": img_id, "sent": q, "label": label, "answer_type": kind,
                     "question_type": question_type({"sent": q})})
                gqa["train" if split == "train" else "testdev"].append(
                    {"question_id": f"g{qid}", "img_id": img_id, "sent": q, "label": {a: 1.0}})

    answers = sorted({a for kind in ANSWERS_OF for a in ANSWERS_OF[kind]})
    _dump(out / "lxmert" / "train.json", corpus["train"])
    _dump(out / "lxmert" / "minival.json", corpus["minival"])
    _dump(out / "lxmert" / "all_ans.json", [{"ans": a, "dsets": ["vqa", "gqa"]} for a in answers])
    for task, files in (("vqa", vqa), ("gqa", gqa)):
        for split, rows in files.items():
            _dump(out / task / f"{split}.json", rows)
        _dump(out / task / "trainval_ans2label.json", {a: i for i, a in enumerate(answers)})
        _dump(out / task / "trainval_label2ans.json", answers)
    for split, rows in nlvr2.items():
        _dump(out / "nlvr2" / f"{split}.json", rows)

    _write_vocab(texts, out / "vocab.txt")
    vocab_size = len((out / "vocab.txt").read_text().split("\n")) - 1
    world = {"images": images, "train_images": len(splits["train"]) - 2 * len(nlvr2["train"]),
             "val_images": n_val, "nlvr2_images": 2 * len(nlvr2["train"]) + 2 * len(nlvr2["valid"]), "regions": regions,
             "feature_dim": feat_dim, "num_object_labels": len(CLASSES) + 1, "num_attr_labels": len(COLOURS) + 1,
             "num_answers": len(answers), "vocab_size": vocab_size, "seed": seed}
    _dump(out / "world.json", world)
    _dump(out / "scenes.json", scenes)
    return world


ANSWERS_OF = {
    "other": COLOURS + CLASSES,
    "number": [str(n) for n in range(MAX_COUNT + 1)],
    "yes/no": ["yes", "no"],
}
