"""Region-feature stores: LMDB databases built from bottom-up-attention TSV files or per-image
``.npz`` files, read zero-copy by every process that opens them.

A store is a directory::

    STORE/data.mdb       one record per image, key = img_id (utf-8)
    STORE/objects_vocab.txt, STORE/attributes_vocab.txt
                         optional: the detector's label names, line i naming id i (bottom-up-attention's
                         ``1600-400-20`` files; a line's first comma-separated name is used)
    STORE/manifest.json  count, dims, dtype, sources, checksum; written last

It is built under ``STORE.partial`` and renamed to ``STORE`` only when complete, so an
interrupted build never leaves a directory that looks finished. Readers open the database
lazily, read-only and without locks in each process (DataLoader workers, ranks), and hand out
numpy views into the memory map: start-up cost and resident memory do not grow with the store.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path

from .files import atomic_write_text, building, publish
from .files import read_manifest as _read_manifest
from .features import DTYPE_CODES, FORMAT, MAX_REGIONS, BadRecord, RegionRecord, check_record, decode, encode, iter_sources

# --------------------------------------------------------------------------- building
def _digest(key: bytes, value: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(key + b"\0" + value, digest_size=16).digest(), "little")


LABEL_FILES = {"objects": "objects_vocab.txt", "attributes": "attributes_vocab.txt"}


def read_label_names(path: str | os.PathLike) -> list[str]:
    """A label vocabulary file: one label a line (line i names id i); of ``name,synonym`` the name."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: unreadable label vocabulary ({exc})") from None
    names = [line.split(",")[0].strip() for line in lines]
    while names and not names[-1]:
        names.pop()
    for n, name in enumerate(names, 1):
        if not name:
            raise ValueError(f"{path}: line {n} is empty (line i names label id i-1; no blank lines)")
    if not names:
        raise ValueError(f"{path}: no labels")
    return names


def build_store(out: Path, tsv: list[Path] = (), npz_dirs: list[Path] = (), dtype: str = "float16",
                skip_bad: bool = False, overwrite: bool = False, progress: bool = True,
                commit_every: int = 500, label_files: dict[str, Path] | None = None) -> dict:
    """Convert the inputs into a store at ``out``; returns the manifest. Raises BadRecord on the
    first bad record unless ``skip_bad`` (then bad records are counted and listed in the manifest).
    ``label_files`` ({"objects": path, "attributes": path}, either optional): the detector's label
    names, kept in the store; every id of the records must have a name."""
    import lmdb
    from tqdm import tqdm

    if dtype not in DTYPE_CODES:
        raise ValueError(f"dtype must be one of {sorted(DTYPE_CODES)}, got {dtype!r}")
    if not tsv and not npz_dirs:
        raise ValueError("nothing to convert: give --tsv files and/or --npz-dir folders")
    for path in tsv:
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such TSV file")
    label_files = {k: Path(v) for k, v in (label_files or {}).items() if v is not None}
    unknown = set(label_files) - set(LABEL_FILES)
    if unknown:
        raise ValueError(f"label_files: unknown kinds {sorted(unknown)} (expected {sorted(LABEL_FILES)})")
    label_names = {k: read_label_names(v) for k, v in label_files.items()}
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists (pass --overwrite to replace it)")
    with building(out) as partial:  # removed if anything below fails
        # The map size only reserves address space: the file grows with what is written.
        env = lmdb.open(str(partial), map_size=1 << 40, subdir=True, lock=True, readahead=False, meminit=False)
        count = checksum = 0
        feat_dim: int | None = None
        bad: list[str] = []
        regions = [MAX_REGIONS, 0]
        label_ids = {"objects": 0, "attributes": 0}  # one past the largest object and attribute id
        started = time.perf_counter()
        try:
            txn = env.begin(write=True)
            bar = tqdm(iter_sources(tsv, npz_dirs), unit="img", desc=f"building {out.name}", disable=not progress,
                       file=sys.stderr, mininterval=0.5)
            for where, rec in bar:
                if not isinstance(rec, BadRecord):
                    try:
                        check_record(rec, f"{where}: img_id {rec.img_id!r}", feat_dim)
                    except BadRecord as exc:
                        rec = exc
                if isinstance(rec, BadRecord):
                    if not skip_bad:
                        raise rec
                    bad.append(str(rec))
                    continue
                key, value = rec.img_id.encode(), encode(rec, dtype)
                if not txn.put(key, value, overwrite=False):
                    problem = f"{where}: img_id {rec.img_id!r}: duplicate img_id (already in the store)"
                    if not skip_bad:
                        raise BadRecord(problem)
                    bad.append(problem)
                    continue
                for kind, names in label_names.items():  # a vocabulary of another detector: stop at once
                    ids = rec.objects_id if kind == "objects" else rec.attrs_id
                    if ids.size and int(ids.max()) >= len(names):
                        raise ValueError(f"{label_files[kind]}: {len(names)} {kind} labels, but {where}: img_id "
                                         f"{rec.img_id!r} uses id {int(ids.max())} (the vocabulary of another detector?)")
                feat_dim = rec.features.shape[1]
                regions = [min(regions[0], rec.num_boxes), max(regions[1], rec.num_boxes)]
                for name, ids in (("objects", rec.objects_id), ("attributes", rec.attrs_id)):
                    if ids.size:
                        label_ids[name] = max(label_ids[name], int(ids.max()) + 1)
                checksum = (checksum + _digest(key, value)) % (1 << 128)
                count += 1
                if count % commit_every == 0:  # bounded memory: commit in chunks
                    txn.commit()
                    txn = env.begin(write=True)
            txn.commit()
            bar.close()
            if count == 0:
                raise BadRecord("no valid records in the inputs")
            for kind, names in label_names.items():
                atomic_write_text(partial / LABEL_FILES[kind], "\n".join(names) + "\n")
            manifest = {
                "format": FORMAT, "count": count, "feature_dim": feat_dim, "dtype": dtype,
                "regions": {"min": regions[0], "max": regions[1]}, "label_ids": label_ids,
                "label_names": {k: LABEL_FILES[k] for k in sorted(label_names)},
                "sources": [str(Path(p).resolve()) for p in tsv] + [str(Path(d).resolve()) for d in npz_dirs],
                "checksum": f"{checksum:032x}", "skipped": len(bad), "skipped_examples": bad[:20],
                "seconds": round(time.perf_counter() - started, 1),
            }
            env.sync(True)
            env.close()
            (partial / "lock.mdb").unlink(missing_ok=True)
            publish(partial, out, manifest)
            return manifest
        except BaseException:
            env.close()
            raise


def read_manifest(path: Path) -> dict:
    return _read_manifest(path, "feature store", FORMAT)


# One environment per store path and process: py-lmdb refuses to open a path twice in a
# process, and an environment inherited through fork is closed and reopened in the child.
_ENVS: dict[str, tuple[int, object, object]] = {}


def _open(path: str):
    import lmdb

    pid = os.getpid()
    entry = _ENVS.get(path)
    if entry is not None:
        if entry[0] == pid:
            return entry[2]
        entry[1].close()  # inherited from the parent: this process's copy only
    env = lmdb.open(path, readonly=True, lock=False, readahead=False, meminit=False, subdir=True, max_readers=2048)
    txn = env.begin(buffers=True)  # one long read transaction: the store never changes
    _ENVS[path] = (pid, env, txn)
    return txn


class FeatureStore:
    """Read-only access to a store: ``len(store)``, ``img_id in store``, ``store[img_id]``.

    Records are :class:`RegionRecord` whose arrays are read-only views into the memory map
    (copy them to keep them past the store's life). The database opens on first access in
    each process; the object pickles without it, so it crosses to spawned workers cheaply.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        self._key = str(self.path.resolve())

    def __len__(self) -> int:
        return self.manifest["count"]

    @property
    def feature_dim(self) -> int:
        return self.manifest["feature_dim"]

    @property
    def label_ids(self) -> dict[str, int] | None:
        """One past the largest detector object and attribute id ({"objects", "attributes"}); None
        for a store built before they were recorded."""
        return self.manifest.get("label_ids")

    def label_names(self) -> dict[str, list[str]]:
        """The detector's object and attribute names kept in the store ({} when it has none)."""
        return {k: read_label_names(self.path / name) for k, name in self.manifest.get("label_names", {}).items()}

    def __contains__(self, img_id: object) -> bool:
        return isinstance(img_id, str) and _open(self._key).get(img_id.encode()) is not None

    def missing(self, img_ids) -> list[str]:
        """The ids of ``img_ids`` not in the store (one lookup each, in one transaction)."""
        get = _open(self._key).get
        return [img_id for img_id in img_ids if get(img_id.encode()) is None]

    def __getitem__(self, img_id: str) -> RegionRecord:
        buf = _open(self._key).get(img_id.encode())
        if buf is None:
            raise KeyError(f"image {img_id!r} is not in feature store {self.path}")
        return decode(img_id, buf)

    def ids(self):
        """Every img_id, in key order (a cursor walk; no record is decoded)."""
        with _open(self._key).cursor() as cursor:
            for key in cursor.iternext(keys=True, values=False):
                yield bytes(key).decode()

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.path)!r}, {len(self)} images, dim {self.feature_dim}, {self.manifest['dtype']})"


def verify_store(path: Path, progress: bool = True) -> dict:
    """Decode every record and check it, its count and the checksum against the manifest."""
    from tqdm import tqdm

    store = FeatureStore(path)
    manifest = store.manifest
    checksum = count = 0
    txn = _open(store._key)
    with txn.cursor() as cursor:
        for key, value in tqdm(cursor.iternext(), total=len(store), unit="img", desc=f"verifying {Path(path).name}",
                               disable=not progress, file=sys.stderr, mininterval=0.5):
            img_id = bytes(key).decode()
            rec = decode(img_id, value)
            check_record(rec, f"{path}: img_id {img_id!r}", manifest["feature_dim"])
            checksum = (checksum + _digest(bytes(key), bytes(value))) % (1 << 128)
            count += 1
    if count != manifest["count"]:
        raise ValueError(f"{path}: {count} records, the manifest says {manifest['count']}")
    if f"{checksum:032x}" != manifest["checksum"]:
        raise ValueError(f"{path}: checksum {checksum:032x} differs from the manifest's {manifest['checksum']}")
    return manifest


def store_info(path: Path) -> dict:
    manifest = read_manifest(Path(path))
    size = sum(f.stat().st_size for f in Path(path).iterdir() if f.is_file())
    return {**manifest, "size_bytes": size}
