"""Region-feature stores: round trips, bad input, interrupted builds, concurrent readers."""

from __future__ import annotations

import base64
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import procs
import pytest
import torch

from data.features import RegionRecord, tsv_line
from data.store import FeatureStore, build_store, read_manifest, verify_store


def record(i: int, n: int = 36, dim: int = 64, seed: int = 0) -> RegionRecord:
    rng = np.random.default_rng(seed * 1000 + i)
    x1 = rng.uniform(0, 300, n)
    y1 = rng.uniform(0, 200, n)
    boxes = np.stack([x1, y1, x1 + rng.uniform(1, 300, n), y1 + rng.uniform(1, 200, n)], 1).astype(np.float32)
    return RegionRecord(
        f"img{i:05d}", 480, 640, boxes, rng.integers(0, 1600, n), rng.random(n, dtype=np.float32),
        rng.integers(0, 400, n), rng.random(n, dtype=np.float32),
        (rng.standard_normal((n, dim)) * 3).astype(np.float32),
    )


def write_tsv(path, records) -> None:
    path.write_text("".join(tsv_line(r) for r in records))


def assert_equal_records(a: RegionRecord, b: RegionRecord, exact: bool) -> None:
    assert (a.img_id, a.img_h, a.img_w) == (b.img_id, b.img_h, b.img_w)
    for name in ("boxes", "objects_id", "objects_conf", "attrs_id", "attrs_conf"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    if exact:
        np.testing.assert_array_equal(a.features, b.features)
    else:  # float16 rounding: relative 2^-11
        np.testing.assert_allclose(a.features.astype(np.float32), b.features, rtol=2**-11, atol=1e-7)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("variable", [False, True], ids=["fixed-36", "variable-10-100"])
def test_tsv_round_trip(tmp_path, dtype, variable):
    records = [record(i, n=[10, 100, 37, 36, 55][i % 5] if variable else 36) for i in range(12)]
    write_tsv(tmp_path / "a.tsv", records[:7])
    write_tsv(tmp_path / "b.tsv", records[7:])
    manifest = build_store(tmp_path / "store", [tmp_path / "a.tsv", tmp_path / "b.tsv"], dtype=dtype, progress=False)
    assert manifest["count"] == 12 and manifest["feature_dim"] == 64 and manifest["dtype"] == dtype
    store = FeatureStore(tmp_path / "store")
    assert len(store) == 12 and "img00003" in store and "nope" not in store
    for r in records:
        got = store[r.img_id]
        assert got.features.dtype == np.dtype(dtype)
        assert_equal_records(got, r, exact=dtype == "float32")
    assert sorted(store.ids()) == sorted(r.img_id for r in records)
    assert verify_store(tmp_path / "store", progress=False)["count"] == 12


def test_npz_round_trip(tmp_path):
    folder = tmp_path / "npz"
    folder.mkdir()
    records = [record(i, n=20 + i) for i in range(4)]
    for r in records[:2]:  # features/boxes names
        np.savez(folder / f"{r.img_id}.npz", features=r.features, boxes=r.boxes, image_h=r.img_h, image_w=r.img_w,
                 objects_id=r.objects_id, objects_conf=r.objects_conf, attrs_id=r.attrs_id, attrs_conf=r.attrs_conf)
    for r in records[2:]:  # py-bottom-up-attention's names, labels in an info dict
        info = dict(objects_id=r.objects_id, objects_conf=r.objects_conf, attrs_id=r.attrs_id, attrs_conf=r.attrs_conf)
        np.savez(folder / f"{r.img_id}.npz", x=r.features, bbox=r.boxes, image_h=r.img_h, image_w=r.img_w,
                 num_bbox=r.num_boxes, info=np.array(info, dtype=object))
    build_store(tmp_path / "store", npz_dirs=[folder], dtype="float32", progress=False)
    store = FeatureStore(tmp_path / "store")
    for r in records:
        assert_equal_records(store[r.img_id], r, exact=True)


def test_missing_id_names_id_and_store(tmp_path):
    write_tsv(tmp_path / "a.tsv", [record(0)])
    build_store(tmp_path / "store", [tmp_path / "a.tsv"], progress=False)
    with pytest.raises(KeyError, match=r"'missing' is not in feature store .*store"):
        FeatureStore(tmp_path / "store")["missing"]


def test_normalized_boxes_are_clipped():
    r = record(0)
    r.boxes[0] = [-5, 10, 700, 500]
    norm = r.normalized_boxes()
    np.testing.assert_allclose(norm[0], [0.0, 10 / 480, 1.0, 1.0])
    np.testing.assert_allclose(norm[1], r.boxes[1] / [640, 480, 640, 480], rtol=1e-6)


def _corrupt(line: str, field: int, value: str) -> str:
    fields = line.rstrip("\n").split("\t")
    fields[field] = value
    return "\t".join(fields) + "\n"


def _b64f(a) -> str:
    return base64.b64encode(np.asarray(a, np.float32).tobytes()).decode()


BAD_CASES = {
    "truncated": (lambda line: line[: len(line) // 2] + "\n", "features holds"),
    "bad base64": (lambda line: _corrupt(line, 8, "@@not base64@@"), "boxes is not valid base64"),
    "num_boxes mismatch": (lambda line: _corrupt(line, 7, "35"), "field boxes holds 576 bytes, expected 560"),
    "field count": (lambda line: "\t".join(line.split("\t")[:4] + line.split("\t")[5:]), "9 fields, expected 10"),
    "non-integer size": (lambda line: _corrupt(line, 1, "480.5"), "must be integers"),
    "nan feature": (lambda line: _corrupt(line, 9, _b64f(np.full((36, 64), np.nan))), "features contain NaN or Inf"),
    "inf box": (lambda line: _corrupt(line, 8, _b64f(np.full((36, 4), np.inf))), "boxes contain NaN or Inf"),
    "box outside": (lambda line: _corrupt(line, 8, _b64f(np.tile([10.0, 10.0, 641.0, 100.0], (36, 1)))),
                    "36 boxes outside the 640x480 image (beyond the original's tolerance of 1e-05 of its size), "
                    "e.g. box 0: [10.0, 10.0, 641.0, 100.0]"),
    "other dim": (lambda line: _corrupt(line, 9, _b64f(np.zeros((36, 32)))), "feature dim 32 differs from the store's 64"),
    "too few regions": (None, "5 regions, expected 10 to 100"),
    "duplicate": (None, "duplicate img_id"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_input_stops_with_one_line_naming_file_line_and_id(tmp_path, case):
    change, message = BAD_CASES[case]
    lines = [tsv_line(record(i)) for i in range(4)]
    if case == "too few regions":
        lines[2] = tsv_line(record(2, n=5))
    elif case == "duplicate":
        lines[2] = lines[1]
    else:
        lines[2] = change(lines[2])
    (tmp_path / "in.tsv").write_text("".join(lines))
    out = procs.run([sys.executable, "-m", "launcher.cli", "features", "build", "--tsv", tmp_path / "in.tsv",
                     "--out", tmp_path / "store", "--quiet"], ok=False, timeout=120)
    assert out.returncode != 0
    err = out.stderr.strip()
    assert "\n" not in err, err
    bad_id = "img00001" if case == "duplicate" else "img00002"
    assert message in err and f"{tmp_path / 'in.tsv'}:3: img_id '{bad_id}'" in err, err
    assert not (tmp_path / "store").exists() and not (tmp_path / "store.partial").exists()
    # with --skip-bad the good records land and the bad one is counted
    out = procs.run([sys.executable, "-m", "launcher.cli", "features", "build", "--tsv", tmp_path / "in.tsv",
                     "--out", tmp_path / "store", "--quiet", "--skip-bad"], ok=False, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "skipped 1 bad records" in out.stdout and message in out.stdout
    assert read_manifest(tmp_path / "store")["count"] == 3


def test_existing_store_is_not_overwritten(tmp_path):
    write_tsv(tmp_path / "a.tsv", [record(0)])
    build_store(tmp_path / "store", [tmp_path / "a.tsv"], progress=False)
    with pytest.raises(FileExistsError, match="--overwrite"):
        build_store(tmp_path / "store", [tmp_path / "a.tsv"], progress=False)


def test_killed_build_leaves_nothing_that_looks_complete(tmp_path):
    write_tsv(tmp_path / "big.tsv", [record(i, dim=2048) for i in range(400)])
    proc = subprocess.Popen([sys.executable, "-m", "launcher.cli", "features", "build", "--tsv", str(tmp_path / "big.tsv"),
                             "--out", str(tmp_path / "store"), "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = tmp_path / "store.partial" / "data.mdb"
    deadline = time.time() + 60
    while not (partial.exists() and partial.stat().st_size > 0) and time.time() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "store").exists()
    with pytest.raises(FileNotFoundError, match="unfinished build"):
        FeatureStore(tmp_path / "store")
    # a new build replaces the stale partial one
    build_store(tmp_path / "store", [tmp_path / "big.tsv"], progress=False)
    assert len(FeatureStore(tmp_path / "store")) == 400 and not (tmp_path / "store.partial").exists()


def test_verify_detects_a_changed_record(tmp_path):
    import lmdb

    write_tsv(tmp_path / "a.tsv", [record(i) for i in range(3)])
    build_store(tmp_path / "store", [tmp_path / "a.tsv"], dtype="float32", progress=False)
    env = lmdb.open(str(tmp_path / "store"), map_size=1 << 30)
    with env.begin(write=True) as txn:
        value = bytearray(txn.get(b"img00001"))
        value[-4:] = np.float32(1.5).tobytes()
        txn.put(b"img00001", bytes(value))
    env.close()
    with pytest.raises(ValueError, match="checksum"):
        verify_store(tmp_path / "store", progress=False)


def _read_all(path, ids, queue):
    store = FeatureStore(path)
    queue.put([float(store[i].features.astype(np.float64).sum()) for i in ids])


def test_two_processes_read_one_store(tmp_path):
    records = [record(i) for i in range(30)]
    write_tsv(tmp_path / "a.tsv", records)
    build_store(tmp_path / "store", [tmp_path / "a.tsv"], dtype="float32", progress=False)
    ids = [r.img_id for r in records]
    expected = [float(r.features.astype(np.float64).sum()) for r in records]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_read_all, args=(tmp_path / "store", ids[::-1] if k else ids, queue)) for k in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sorted(results) == sorted([expected, expected[::-1]])


class _StoreDataset(torch.utils.data.Dataset):
    def __init__(self, store, ids):
        self.store, self.ids = store, ids

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        rec = self.store[self.ids[i]]
        return torch.from_numpy(rec.features.astype(np.float32)), os.getpid()


def _workers_read_the_store(path, start: str, count: int = 16) -> None:
    records = [record(i) for i in range(count)]
    store = FeatureStore(path)
    assert store["img00000"].num_boxes == 36  # opened in the parent before the workers start
    loader = torch.utils.data.DataLoader(_StoreDataset(store, [r.img_id for r in records]), batch_size=4,
                                         num_workers=2, multiprocessing_context=start)
    feats, pids = zip(*loader)
    got = torch.cat(feats)
    assert torch.equal(got, torch.stack([torch.from_numpy(r.features) for r in records]))
    assert os.getpid() not in set(torch.cat(pids).tolist())


@pytest.mark.parametrize("start", ["fork", "forkserver", "spawn"])
def test_dataloader_workers_after_the_parent_opened_the_store(tmp_path, start):
    write_tsv(tmp_path / "a.tsv", [record(i) for i in range(16)])
    build_store(tmp_path / "store", [tmp_path / "a.tsv"], dtype="float32", progress=False)
    if start == "fork":  # from a fresh interpreter: this one runs threads, and a process with threads never forks
        code = (f"import sys; sys.path[:0] = [{str(Path(__file__).parent)!r}]; import test_store; "
                f"test_store._workers_read_the_store({str(tmp_path / 'store')!r}, 'fork')")
        procs.run([sys.executable, "-c", code], timeout=120)
    else:
        _workers_read_the_store(tmp_path / "store", start)


def test_npz_bad_input_names_the_file(tmp_path):
    folder = tmp_path / "npz"
    folder.mkdir()
    r = record(0)
    np.savez(folder / "img00000.npz", features=r.features, image_h=r.img_h, image_w=r.img_w)  # no boxes
    with pytest.raises(ValueError, match=r"img00000.npz: img_id 'img00000': no boxes array \(accepted names: boxes, bbox"):
        build_store(tmp_path / "store", npz_dirs=[folder], progress=False)
    (folder / "img00000.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="img00000.npz: img_id 'img00000': unreadable npz"):
        build_store(tmp_path / "store", npz_dirs=[folder], progress=False)
    assert not (tmp_path / "store").exists() and not (tmp_path / "store.partial").exists()
