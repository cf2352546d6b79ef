"""Region-feature store vs the original parse-everything TSV loader.

For two store sizes: time to first record and resident memory of a fresh process, ours
(open the LMDB store, read one record) against the original approach (parse the whole TSV
into a list of dicts, as LXMERT's ``load_obj_tsv``); then random-access records/s in one
process from a warm store (36 x 2048 float16 records), as zero-copy numpy views and copied
into new float32 tensors, against dictionary look-ups in the parsed (float32) data.

    python bench/feature_store.py [--sizes 500,2000] [--reads 20000] [--dir /tmp/lxmert-bench]
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

FIELDNAMES = ["img_id", "img_h", "img_w", "objects_id", "objects_conf", "attrs_id", "attrs_conf", "num_boxes",
              "boxes", "features"]


def load_obj_tsv(fname: str) -> list[dict]:
    """The original code's loader: every field of every image decoded into memory."""
    csv.field_size_limit(sys.maxsize)
    data = []
    with open(fname) as f:
        for item in csv.DictReader(f, FIELDNAMES, delimiter="\t"):
            for key in ("img_h", "img_w", "num_boxes"):
                item[key] = int(item[key])
            boxes = item["num_boxes"]
            for key, shape, dtype in (("objects_id", (boxes,), np.int64), ("objects_conf", (boxes,), np.float32),
                                      ("attrs_id", (boxes,), np.int64), ("attrs_conf", (boxes,), np.float32),
                                      ("boxes", (boxes, 4), np.float32), ("features", (boxes, -1), np.float32)):
                item[key] = np.frombuffer(base64.b64decode(item[key]), dtype=dtype).reshape(shape)
                item[key].setflags(write=False)
            data.append(item)
    return data


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(kind: str, path: str, reads: int) -> None:
    """Runs in a fresh process: prints one JSON line of measurements."""
    import torch

    rng = np.random.default_rng(0)
    base = rss_mb()
    start = time.perf_counter()
    if kind == "ours":
        from data.store import FeatureStore

        store = FeatureStore(path)
        ids = [f"img{i:06d}" for i in range(len(store))]
        first = store[ids[0]]
        get = store.__getitem__
    else:
        data = {item["img_id"]: item for item in load_obj_tsv(path)}
        ids = list(data)
        first = data[ids[0]]
        get = data.__getitem__
    ttfr = time.perf_counter() - start
    rss = rss_mb() - base
    assert first is not None
    for img_id in ids:  # a warm store: every page in memory (untimed)
        rec = get(img_id)
        (rec.features if kind == "ours" else rec["features"]).max()
    order = rng.integers(0, len(ids), reads)
    picks = [ids[i] for i in order]
    start = time.perf_counter()
    for img_id in picks:
        rec = get(img_id)
        feats = rec.features if kind == "ours" else rec["features"]
    views = reads / (time.perf_counter() - start)
    start = time.perf_counter()
    for img_id in picks:
        rec = get(img_id)
        t = rec.tensor(torch.float32) if kind == "ours" else torch.from_numpy(rec["features"]).to(torch.float32, copy=True)
    tensors = reads / (time.perf_counter() - start)
    assert feats is not None and t.dtype == torch.float32
    print(json.dumps({"ttfr": ttfr, "rss": rss, "views": views, "tensors": tensors}))


def make_inputs(directory: Path, n: int) -> tuple[Path, Path]:
    from data.features import RegionRecord, tsv_line
    from data.store import build_store

    tsv, store = directory / f"feats_{n}.tsv", directory / f"store_{n}"
    if not store.exists():
        rng = np.random.default_rng(n)
        with open(tsv, "w") as f:
            for i in range(n):
                boxes = np.sort(rng.uniform(0, 600, (36, 4)).astype(np.float32), axis=1)
                f.write(tsv_line(RegionRecord(f"img{i:06d}", 480, 640, boxes, rng.integers(0, 1600, 36),
                                              rng.random(36, dtype=np.float32), rng.integers(0, 400, 36),
                                              rng.random(36, dtype=np.float32),
                                              rng.random((36, 2048), dtype=np.float32) * 10)))
        build_store(store, [tsv], dtype="float16", progress=False)
    return tsv, store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="500,2000")
    parser.add_argument("--reads", type=int, default=20000)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/lxmert-bench"))
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child[0], args.child[1], args.reads)
    args.dir.mkdir(parents=True, exist_ok=True)
    print("images  loader     first record   resident MB   views/s   float32 tensors/s")
    for n in map(int, args.sizes.split(",")):
        tsv, store = make_inputs(args.dir, n)
        for kind, path in (("original", tsv), ("ours", store)):
            out = subprocess.run([sys.executable, __file__, "--child", kind, str(path), "--reads", str(args.reads)],
                                 capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{n:>6}  {kind:<9} {r['ttfr']:>10.3f} s {r['rss']:>12.0f} {r['views']:>10.0f} {r['tensors']:>14.0f}",
                  flush=True)


if __name__ == "__main__":
    main()
