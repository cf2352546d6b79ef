"""Region features: the input formats (bottom-up-attention TSV, per-image ``.npz``) and the
binary record stored per image in a feature store (see :mod:`data.store`).

A record is a 24-byte header (magic, version, dtype, regions N, feature dim D, image height
and width) followed by boxes (N, 4) float32, objects_id (N,) int32, objects_conf (N,) float32,
attrs_id (N,) int32, attrs_conf (N,) float32 and features (N, D) float16 or float32.
"""

from __future__ import annotations

import base64
import binascii
import warnings
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

# Records are read-only views into the store's memory map; torch warns (once) when wrapping
# them. Tensors made from them are only ever read or copied (see ``RegionRecord.tensor``).
warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)

MAGIC = b"LXR1"
HEADER = struct.Struct("<4sHHIIII")  # magic, version, dtype code, N, D, img_h, img_w
DTYPES = {0: np.float16, 1: np.float32}
DTYPE_CODES = {"float16": 0, "float32": 1}
MIN_REGIONS, MAX_REGIONS = 10, 100
TSV_FIELDS = ("img_id", "img_h", "img_w", "objects_id", "objects_conf", "attrs_id", "attrs_conf", "num_boxes",
              "boxes", "features")
FORMAT = "lxmert-region-store/1"
#: npz key names accepted for each field, first match wins.
NPZ_KEYS = {
    "features": ("features", "x", "feat", "feats"),
    "boxes": ("boxes", "bbox", "boxes_xyxy"),
    "img_h": ("image_h", "img_h", "height"),
    "img_w": ("image_w", "img_w", "width"),
    "objects_id": ("objects_id", "objects", "obj_ids"),
    "objects_conf": ("objects_conf", "obj_conf"),
    "attrs_id": ("attrs_id", "attrs", "attr_ids"),
    "attrs_conf": ("attrs_conf", "attr_conf"),
}


class BadRecord(ValueError):
    """A malformed input record: the message names file, line (or file alone), img_id and problem."""


@dataclass(slots=True)
class RegionRecord:
    """One image's regions (read-only numpy arrays; views into the store when read from one)."""

    img_id: str
    img_h: int
    img_w: int
    boxes: np.ndarray  # (N, 4) float32, pixels x1, y1, x2, y2
    objects_id: np.ndarray  # (N,) int32
    objects_conf: np.ndarray  # (N,) float32
    attrs_id: np.ndarray  # (N,) int32
    attrs_conf: np.ndarray  # (N,) float32
    features: np.ndarray  # (N, D) float16 or float32

    @property
    def num_boxes(self) -> int:
        return self.boxes.shape[0]

    def tensor(self, dtype: torch.dtype | None = torch.float32) -> torch.Tensor:
        """The features as a new (N, D) tensor of ``dtype`` (a copy, converted by torch);
        ``None`` keeps the stored precision (float16 halves what loader workers pass on, and
        the model converts on its device, exactly)."""
        features = torch.from_numpy(self.features)
        return features.to(dtype or features.dtype, copy=True)

    def normalized_boxes(self) -> np.ndarray:
        """(x1/W, y1/H, x2/W, y2/H) clipped to [0, 1], float32 (a store holds no box outside its
        image by more than ``BOX_TOLERANCE``: ``check_record``)."""
        scale = np.array([self.img_w, self.img_h, self.img_w, self.img_h], dtype=np.float32)
        return np.clip(self.boxes / scale, 0.0, 1.0)


# --------------------------------------------------------------------------- encoding
def encode(record: RegionRecord, dtype: str) -> bytes:
    n, d = record.features.shape
    feats = np.ascontiguousarray(record.features, dtype=DTYPES[DTYPE_CODES[dtype]])
    parts = [
        HEADER.pack(MAGIC, 1, DTYPE_CODES[dtype], n, d, record.img_h, record.img_w),
        np.ascontiguousarray(record.boxes, np.float32).tobytes(),
        np.ascontiguousarray(record.objects_id, np.int32).tobytes(),
        np.ascontiguousarray(record.objects_conf, np.float32).tobytes(),
        np.ascontiguousarray(record.attrs_id, np.int32).tobytes(),
        np.ascontiguousarray(record.attrs_conf, np.float32).tobytes(),
        feats.tobytes(),
    ]
    return b"".join(parts)


def decode(img_id: str, buf) -> RegionRecord:
    """Views into ``buf`` (no copy)."""
    magic, version, code, n, d, img_h, img_w = HEADER.unpack_from(buf, 0)
    if magic != MAGIC or version != 1 or code not in DTYPES:
        raise ValueError(f"record {img_id!r}: not a region record (magic {magic!r}, version {version})")
    raw = np.frombuffer(buf, dtype=np.uint8)
    feat_dtype = DTYPES[code]
    end = HEADER.size + 32 * n + n * d * feat_dtype().itemsize
    if end != raw.size:
        raise ValueError(f"record {img_id!r}: {raw.size} bytes, expected {end}")
    o = HEADER.size
    return RegionRecord(
        img_id, img_h, img_w,
        raw[o:o + 16 * n].view(np.float32).reshape(n, 4),
        raw[o + 16 * n:o + 20 * n].view(np.int32),
        raw[o + 20 * n:o + 24 * n].view(np.float32),
        raw[o + 24 * n:o + 28 * n].view(np.int32),
        raw[o + 28 * n:o + 32 * n].view(np.float32),
        raw[o + 32 * n:].view(feat_dtype).reshape(n, d),
    )


# --------------------------------------------------------------------------- sources
def _b64(field: str, text: str, dtype, count: int, where: str, shape=None) -> np.ndarray:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRecord(f"{where}: field {field} is not valid base64 ({exc})") from None
    size = np.dtype(dtype).itemsize
    if len(raw) != count * size:
        raise BadRecord(f"{where}: field {field} holds {len(raw)} bytes, expected {count * size} "
                        f"({count} x {np.dtype(dtype).name}; truncated or wrong num_boxes?)")
    array = np.frombuffer(raw, dtype=dtype)
    return array.reshape(shape) if shape else array


#: The original code asserts normalised box coordinates within [-1e-5, 1 + 1e-5].
BOX_TOLERANCE = 1e-5


def check_record(rec: RegionRecord, where: str, feat_dim: int | None) -> None:
    """Raise BadRecord for NaN/Inf, region counts out of range or a changed feature dim."""
    n = rec.num_boxes
    if not MIN_REGIONS <= n <= MAX_REGIONS:
        raise BadRecord(f"{where}: {n} regions, expected {MIN_REGIONS} to {MAX_REGIONS}")
    if rec.img_h <= 0 or rec.img_w <= 0:
        raise BadRecord(f"{where}: image size {rec.img_w}x{rec.img_h} is not positive")
    if feat_dim is not None and rec.features.shape[1] != feat_dim:
        raise BadRecord(f"{where}: feature dim {rec.features.shape[1]} differs from the store's {feat_dim}")
    for name in ("features", "boxes", "objects_conf", "attrs_conf"):
        if not np.isfinite(getattr(rec, name)).all():
            raise BadRecord(f"{where}: {name} contain NaN or Inf")
    norm = rec.boxes / np.array([rec.img_w, rec.img_h, rec.img_w, rec.img_h], np.float64)
    outside = np.flatnonzero(((norm < -BOX_TOLERANCE) | (norm > 1 + BOX_TOLERANCE)).any(1))
    if outside.size:
        i = int(outside[0])
        raise BadRecord(f"{where}: {outside.size} boxes outside the {rec.img_w}x{rec.img_h} image (beyond the original's "
                        f"tolerance of {BOX_TOLERANCE} of its size), e.g. box {i}: {[round(float(x), 2) for x in rec.boxes[i]]}")
    for name in ("objects_id", "attrs_id"):
        ids = getattr(rec, name)
        if ids.size and (ids.min() < -1 or ids.max() > np.iinfo(np.int32).max):
            raise BadRecord(f"{where}: {name} out of range")


def read_tsv(path: Path) -> Iterator[tuple[int, RegionRecord | BadRecord]]:
    """Yield (line number, record or the problem) for each line of a bottom-up-attention TSV."""
    with open(path, "r", encoding="utf-8", newline="\n") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            fields = line.split("\t")
            img_id = fields[0]
            where = f"{path}:{lineno}: img_id {img_id!r}"
            try:
                if len(fields) != len(TSV_FIELDS):
                    raise BadRecord(f"{where}: {len(fields)} fields, expected {len(TSV_FIELDS)} ({', '.join(TSV_FIELDS)})")
                try:
                    img_h, img_w, n = int(fields[1]), int(fields[2]), int(fields[7])
                except ValueError:
                    raise BadRecord(f"{where}: img_h, img_w and num_boxes must be integers, got "
                                    f"{fields[1]!r}, {fields[2]!r}, {fields[7]!r}") from None
                if n <= 0:
                    raise BadRecord(f"{where}: num_boxes is {n}")
                boxes = _b64("boxes", fields[8], np.float32, n * 4, where, (n, 4))
                try:
                    raw = base64.b64decode(fields[9], validate=True)
                except (binascii.Error, ValueError) as exc:
                    raise BadRecord(f"{where}: field features is not valid base64 ({exc})") from None
                if len(raw) % (4 * n):
                    raise BadRecord(f"{where}: field features holds {len(raw)} bytes, not a multiple of "
                                    f"num_boxes x 4 = {4 * n} (truncated?)")
                feat_raw = np.frombuffer(raw, dtype=np.float32).reshape(n, -1)
                yield lineno, RegionRecord(
                    img_id, img_h, img_w, boxes,
                    _b64("objects_id", fields[3], np.int64, n, where),
                    _b64("objects_conf", fields[4], np.float32, n, where),
                    _b64("attrs_id", fields[5], np.int64, n, where),
                    _b64("attrs_conf", fields[6], np.float32, n, where),
                    feat_raw,
                )
            except BadRecord as bad:
                yield lineno, bad


def read_npz(path: Path) -> RegionRecord:
    """One image from an ``.npz`` file; img_id is the file name without ``.npz``."""
    where = f"{path}: img_id {path.stem!r}"
    try:
        data = np.load(path, allow_pickle=True)
        keys = set(data.files)
        if "info" in keys and not ({"objects_id", "objects"} & keys):  # py-bottom-up-attention puts labels in info
            info = data["info"].item()
            data = {**{k: data[k] for k in keys}, **info}
            keys = set(data)
    except Exception as exc:  # zip errors, truncated files
        raise BadRecord(f"{where}: unreadable npz ({exc})") from None
    values = {}
    for field, names in NPZ_KEYS.items():
        name = next((k for k in names if k in keys), None)
        if name is None:
            raise BadRecord(f"{where}: no {field} array (accepted names: {', '.join(names)}; file has: "
                            f"{', '.join(sorted(keys))})")
        values[field] = np.asarray(data[name])
    feats = values["features"]
    if feats.ndim != 2:
        raise BadRecord(f"{where}: features have shape {feats.shape}, expected (N, D)")
    n = feats.shape[0]
    boxes = values["boxes"].astype(np.float32)
    if boxes.shape != (n, 4):
        raise BadRecord(f"{where}: boxes have shape {boxes.shape}, expected ({n}, 4)")
    for field in ("objects_id", "objects_conf", "attrs_id", "attrs_conf"):
        if values[field].shape != (n,):
            raise BadRecord(f"{where}: {field} has shape {values[field].shape}, expected ({n},)")
    try:
        img_h, img_w = int(values["img_h"]), int(values["img_w"])
    except (TypeError, ValueError):
        raise BadRecord(f"{where}: image_h and image_w must be integers") from None
    return RegionRecord(path.stem, img_h, img_w, boxes, values["objects_id"].astype(np.int64),
                        values["objects_conf"].astype(np.float32), values["attrs_id"].astype(np.int64),
                        values["attrs_conf"].astype(np.float32), feats.astype(np.float32, copy=False))


def iter_sources(tsv: Iterable[Path], npz_dirs: Iterable[Path]) -> Iterator[tuple[str, RegionRecord | BadRecord]]:
    """(location, record or problem) over every input, TSV lines first, then npz files by name."""
    for path in tsv:
        for lineno, rec in read_tsv(Path(path)):
            yield f"{path}:{lineno}", rec
    for directory in npz_dirs:
        files = sorted(Path(directory).glob("*.npz"))
        if not files:
            raise FileNotFoundError(f"{directory}: no .npz files")
        for path in files:
            try:
                yield str(path), read_npz(path)
            except BadRecord as bad:
                yield str(path), bad


def tsv_line(rec: RegionRecord) -> str:
    """One bottom-up-attention TSV line (the original extractor's layout) for a record."""
    b64 = lambda a, t: base64.b64encode(np.ascontiguousarray(a, dtype=t).tobytes()).decode()  # noqa: E731
    return "\t".join([
        rec.img_id, str(rec.img_h), str(rec.img_w), b64(rec.objects_id, np.int64), b64(rec.objects_conf, np.float32),
        b64(rec.attrs_id, np.int64), b64(rec.attrs_conf, np.float32), str(rec.num_boxes),
        b64(rec.boxes, np.float32), b64(rec.features, np.float32),
    ]) + "\n"
