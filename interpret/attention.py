"""The attention maps of one example as numbers: what every figure and the page are drawn from,
saved beside them (``attention.npz`` + ``attention.json``) so each figure can be reproduced."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model.pretrained import atomic_write

from .queries import encode
from .subject import Example, Subject

NUMBERS_FILE, INFO_FILE = "attention.npz", "attention.json"
#: The arrays of :class:`AttentionMaps`: (layers, heads, queries, keys), rows summing to 1.
ARRAYS = {
    "language": "language self-attention of each language layer: word x word",
    "relations": "self-attention of each object-relationship layer: box x box",
    "to_vision": "cross-modality attention of each cross layer, language to vision: word x box",
    "to_language": "cross-modality attention of each cross layer, vision to language: box x word",
}


@dataclass
class AttentionMaps:
    """One image and sentence: tokens, boxes and their labels, and the four families of maps."""

    image: str
    width: int
    height: int
    sentence: str
    tokens: list[str]
    boxes: np.ndarray  # (N, 4) pixels x1, y1, x2, y2
    labels: list[str]  # one per box
    language: np.ndarray
    relations: np.ndarray
    to_vision: np.ndarray
    to_language: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def num_heads(self) -> int:
        return self.language.shape[1]

    def heads(self, name: str, head: int | None) -> np.ndarray:
        """(layers, queries, keys) of one family: one head's maps, or the mean over heads (``None``)."""
        check_head(head, self.num_heads)
        maps = getattr(self, name)
        if not len(maps):
            return maps[:, 0]
        return maps.mean(axis=1) if head is None else maps[:, head]


def check_head(head: int | None, heads: int) -> None:
    if head is not None and not 0 <= head < heads:
        raise ValueError(f"--head {head}: the model has heads 0..{heads - 1}")


ATTRIBUTE_MIN_CONF = 0.2  # an attribute is named when the detector's confidence reaches this


def box_labels(record, names: dict[str, list[str]]) -> list[str]:
    """``k: attribute object`` for each box from the store's label names (bottom-up-attention's
    ``__background__``-style names are left out), else ``k: object id a, attribute id b``."""
    objects, attributes = names.get("objects"), names.get("attributes")
    labels = []
    for k in range(record.num_boxes):
        oid, aid = int(record.objects_id[k]), int(record.attrs_id[k])
        words = [objects[oid]] if objects is not None and 0 <= oid < len(objects) else [f"object {oid}"]
        if attributes is None:
            if objects is None:
                words.append(f"attribute {aid}")
        elif 0 <= aid < len(attributes) and record.attrs_conf[k] >= ATTRIBUTE_MIN_CONF:
            words.insert(0, attributes[aid])
        words = [w for w in words if not w.startswith("__")]
        labels.append(f"{k}: {' '.join(words)}" if words else str(k))
    return labels


def attention_maps(subject: Subject, example: Example, store) -> AttentionMaps:
    """Run the model on ``example`` with ``output_attentions`` and keep every map of it."""
    enc = encode(subject, example.inputs, output_attentions=True)
    rec = example.record
    heads, t, n = subject.config.num_attention_heads, len(example.tokens), rec.num_boxes

    def stack(maps, queries: int, keys: int) -> np.ndarray:  # (layers, heads, queries, keys), also for 0 layers
        return np.stack([m[0].float().numpy() for m in maps]) if maps else np.zeros((0, heads, queries, keys))

    return AttentionMaps(
        image=example.img_id, width=int(rec.img_w), height=int(rec.img_h), sentence=example.sentence,
        tokens=example.tokens, boxes=np.asarray(rec.boxes, dtype=np.float32).copy(),
        labels=box_labels(rec, store.label_names()),
        language=stack(enc.language_attentions, t, t), relations=stack(enc.vision_attentions, n, n),
        to_vision=stack(enc.cross_attentions, t, n), to_language=stack(enc.vision_cross_attentions, n, t),
        meta={"model": str(subject.source), "kind": subject.kind, "cut": example.cut},
    )


def save(maps: AttentionMaps, out_dir: Path) -> tuple[Path, Path]:
    """``attention.npz`` (the arrays, float32) and ``attention.json`` (what they are and the rest)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    arrays = {name: getattr(maps, name).astype(np.float32) for name in ARRAYS}
    arrays["boxes"] = maps.boxes

    def write_numbers(path):
        with open(path, "wb") as f:
            np.savez_compressed(f, **arrays)

    atomic_write(out_dir / NUMBERS_FILE, write_numbers)
    info = {"image": maps.image, "width": maps.width, "height": maps.height, "sentence": maps.sentence,
            "tokens": maps.tokens, "labels": maps.labels, **maps.meta,
            "arrays": {name: {"shape": list(arrays[name].shape), "what": what} for name, what in ARRAYS.items()},
            "axes": "(layer, head, query, key); each query's row sums to 1; boxes: (box, x1 y1 x2 y2) in pixels"}
    text = json.dumps(info, indent=1) + "\n"
    atomic_write(out_dir / INFO_FILE, lambda p: Path(p).write_text(text, encoding="utf-8"))
    return out_dir / NUMBERS_FILE, out_dir / INFO_FILE


def load(out_dir: Path) -> AttentionMaps:
    """The maps :func:`save` wrote into ``out_dir``."""
    out_dir = Path(out_dir)
    info = json.loads((out_dir / INFO_FILE).read_text(encoding="utf-8"))
    with np.load(out_dir / NUMBERS_FILE) as arrays:
        values = {name: arrays[name] for name in (*ARRAYS, "boxes")}
    meta = {k: info[k] for k in ("model", "kind", "cut") if k in info}
    return AttentionMaps(image=info["image"], width=info["width"], height=info["height"], sentence=info["sentence"],
                         tokens=info["tokens"], labels=info["labels"], meta=meta, **values)
