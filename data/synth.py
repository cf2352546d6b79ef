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
    vocab.txt                              WordPiece vocabulary of the world's text (deterministic)
    world.json                             sizes: images, regions, feature dim, labels
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from pathlib import Path

import numpy as np

from .features import RegionRecord, tsv_line
from .files import atomic_write_text

CLASSES = ["dog", "cat", "car", "ball", "cup", "tree", "chair", "bird", "book", "lamp", "shoe", "hat"]
COLOURS = ["red", "blue", "green", "yellow", "white", "black", "orange", "purple"]
NUMBERS = {1: "one", 2: "two", 3: "three", 4: "four"}
BACKGROUND = len(CLASSES)  # detector label of background regions (object ids), "no attribute" = len(COLOURS)
WIDTH, HEIGHT = 640, 480


def _scene(rng: random.Random) -> list[dict]:
    objects = []
    for _ in range(rng.randint(2, 4)):
        w, h = rng.uniform(60, 220), rng.uniform(60, 200)
        x, y = rng.uniform(0, WIDTH - w), rng.uniform(0, HEIGHT - h)
        objects.append({"cls": rng.randrange(len(CLASSES)), "col": rng.randrange(len(COLOURS)), "box": (x, y, x + w, y + h)})
    return objects


class _Projector:
    """Fixed random projections that turn class, colour and position into region features."""

    def __init__(self, dim: int, seed: int) -> None:
        g = np.random.default_rng(seed)
        self.cls = g.standard_normal((len(CLASSES) + 1, dim)).astype(np.float32)
        self.col = g.standard_normal((len(COLOURS) + 1, dim)).astype(np.float32)
        self.pos = g.standard_normal((4, dim)).astype(np.float32) * 0.5

    def __call__(self, cls: int, col: int, box: np.ndarray, g: np.random.Generator) -> np.ndarray:
        norm = box / np.array([WIDTH, HEIGHT, WIDTH, HEIGHT], dtype=np.float32)
        x = self.cls[cls] + self.col[col] + norm @ self.pos + 0.3 * g.standard_normal(self.cls.shape[1]).astype(np.float32)
        return np.maximum(x, 0.0)  # post-ReLU, like detector features


def _regions(objects: list[dict], n_regions: int, proj: _Projector, g: np.random.Generator, img_id: str) -> RegionRecord:
    boxes, obj_ids, obj_conf, attr_ids, attr_conf, feats = [], [], [], [], [], []
    per_object = max(1, (n_regions - 2) // len(objects))
    for o in objects:
        for _ in range(per_object):
            if len(boxes) >= n_regions - 2:
                break
            jitter = g.normal(0, 8, 4).astype(np.float32)
            box = np.clip(np.array(o["box"], dtype=np.float32) + jitter, 0, [WIDTH, HEIGHT, WIDTH, HEIGHT]).astype(np.float32)
            boxes.append(box)
            obj_ids.append(o["cls"] if g.random() > 0.1 else int(g.integers(len(CLASSES))))  # a 90%-right detector
            attr_ids.append(o["col"] if g.random() > 0.1 else int(g.integers(len(COLOURS))))
            obj_conf.append(g.uniform(0.5, 1.0))
            attr_conf.append(g.uniform(0.3, 1.0))
            feats.append(proj(o["cls"], o["col"], box, g))
    while len(boxes) < n_regions:  # background proposals
        x, y = g.uniform(0, WIDTH - 50), g.uniform(0, HEIGHT - 50)
        box = np.array([x, y, min(WIDTH, x + g.uniform(40, 300)), min(HEIGHT, y + g.uniform(40, 300))], dtype=np.float32)
        boxes.append(box)
        obj_ids.append(BACKGROUND)
        attr_ids.append(len(COLOURS))
        obj_conf.append(g.uniform(0.1, 0.5))
        attr_conf.append(g.uniform(0.1, 0.3))
        feats.append(proj(BACKGROUND, len(COLOURS), box, g))
    order = g.permutation(n_regions)
    pick = lambda xs, t: np.asarray(xs, dtype=t)[order]  # noqa: E731
    return RegionRecord(img_id, HEIGHT, WIDTH, pick(boxes, np.float32), pick(obj_ids, np.int64), pick(obj_conf, np.float32),
                        pick(attr_ids, np.int64), pick(attr_conf, np.float32), pick(feats, np.float32))


def _captions(objects: list[dict], rng: random.Random) -> list[str]:
    named = [f"a {COLOURS[o['col']]} {CLASSES[o['cls']]}" for o in objects]
    counts = Counter(CLASSES[o["cls"]] for o in objects)
    caps = ["there is " + " and ".join(named[:2]) + " .", "a picture of " + ", ".join(named) + " ."]
    cls, n = rng.choice(sorted(counts.items()))
    caps.append(f"{NUMBERS[n]} {cls}{'s' if n > 1 else ''} in the picture .")
    o = rng.choice(objects)
    side = "left" if (o["box"][0] + o["box"][2]) / 2 < WIDTH / 2 else "right"
    caps.append(f"the {CLASSES[o['cls']]} on the {side} is {COLOURS[o['col']]} .")
    return caps


def _questions(objects: list[dict], rng: random.Random) -> list[tuple[str, str, str]]:
    """(question, answer, answer type)."""
    counts = Counter(CLASSES[o["cls"]] for o in objects)
    colours = Counter(o["col"] for o in objects)
    qs = []
    o = rng.choice([o for o in objects if counts[CLASSES[o["cls"]]] == 1] or objects)  # unambiguous if possible
    qs.append((f"what color is the {CLASSES[o['cls']]} ?", COLOURS[o["col"]], "other"))
    cls = rng.choice(sorted(counts))
    qs.append((f"how many {cls}s are there ?", str(counts[cls]), "number"))
    probe = rng.randrange(len(CLASSES))
    qs.append((f"is there a {CLASSES[probe]} ?", "yes" if CLASSES[probe] in counts else "no", "yes/no"))
    o = rng.choice([o for o in objects if colours[o["col"]] == 1] or objects)
    qs.append((f"what is the {COLOURS[o['col']]} object ?", CLASSES[o["cls"]], "other"))
    return qs


def _nlvr2_statement(a: list[dict], b: list[dict], rng: random.Random) -> tuple[str, int, int]:
    """A count claim about the pair (a, b): (sentence, class, claimed count)."""
    cls = rng.randrange(len(CLASSES))
    total = sum(o["cls"] == cls for o in a + b)
    claim = rng.choice([total, total + 1, max(0, total - 1)])
    return f"there are {claim} {CLASSES[cls]}s in total .", cls, claim


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

    (out / "features").mkdir(parents=True, exist_ok=True)
    for split, split_ids in splits.items():
        tmp = out / "features" / f"{split}.tsv.tmp"
        with open(tmp, "w") as f:
            for img_id in tqdm(split_ids, desc=f"synth features {split}", unit="img", disable=not progress):
                f.write(tsv_line(_regions(scenes[img_id], regions, proj, g, img_id)))
        os.replace(tmp, out / "features" / f"{split}.tsv")

    texts: list[str] = []
    corpus = {"train": [], "minival": []}
    vqa = {"train": [], "minival": []}
    gqa = {"train": [], "testdev": []}
    qid = 0
    for split, name in (("train", "train"), ("val", "minival")):
        for img_id in splits[split]:
            objects = scenes[img_id]
            caps = _captions(objects, rng)
            qas = _questions(objects, rng)
            half = len(qas) // 2
            corpus[name].append({
                "img_id": img_id,
                "sentf": {"mscoco": caps, "vqa": [q for q, _, _ in qas[:half]], "gqa": [q for q, _, _ in qas[half:]]},
                "labelf": {"vqa": [{a: 1.0} for _, a, _ in qas[:half]], "gqa": [{a: 1.0} for _, a, _ in qas[half:]]},
            })
            texts += caps + [q for q, _, _ in qas]
            for q, a, kind in qas:
                qid += 1
                second = rng.choice([x for x in ANSWERS_OF[kind] if x != a]) if kind != "yes/no" else None
                label = {a: 1.0} if second is None or rng.random() < 0.7 else {a: 1.0, second: 0.3}
                vqa["train" if split == "train" else "minival"].append(
                    {"question_id": qid, "img_id": img_id, "sent": q, "label": label, "answer_type": kind,
                     "question_type": " ".join(q.split()[:2])})
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

    nlvr2 = {"train": [], "valid": []}
    for split, name in (("train", "train"), ("val", "valid")):
        pool = splits[split]
        for k in range(len(pool)):
            a, b, c, d = (pool[(k + i) % len(pool)] for i in range(4))
            sent, cls, claim = _nlvr2_statement(scenes[a], scenes[b], rng)
            texts.append(sent)
            # NLVR2's identifiers: split-set-pair-sentence; one sentence is shown with several image
            # pairs (here 3, each labelled by its own count), which the consistency metric groups
            for j, (x, y) in enumerate(((a, b), (b, a), (c, d))):
                label = int(sum(o["cls"] == cls for o in scenes[x] + scenes[y]) == claim)
                nlvr2[name].append({"identifier": f"{name}-{k}-{j}-0", "img0": x, "img1": y, "sent": sent,
                                    "label": label, "uid": f"{name}-{k}-{j}"})
    for split, rows in nlvr2.items():
        _dump(out / "nlvr2" / f"{split}.json", rows)

    _write_vocab(texts, out / "vocab.txt")
    vocab_size = len((out / "vocab.txt").read_text().split("\n")) - 1
    world = {"images": images, "train_images": len(splits["train"]), "val_images": n_val, "regions": regions,
             "feature_dim": feat_dim, "num_object_labels": len(CLASSES) + 1, "num_attr_labels": len(COLOURS) + 1,
             "num_answers": len(answers), "vocab_size": vocab_size, "seed": seed}
    _dump(out / "world.json", world)
    return world


ANSWERS_OF = {
    "other": COLOURS + CLASSES,
    "number": [str(n) for n in NUMBERS],
    "yes/no": ["yes", "no"],
}
