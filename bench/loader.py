"""Pre-training DataLoader throughput through worker processes: the shipped path against the
previous one (the anchor, measured in the same run).

Shipped: region features leave the workers in the store's float16 and a worker lays a batch's
tensors out in one buffer per dtype (``_Batch.build``: 3 shared-memory segments); an
example reads only the other image's regions it swaps in for masked ones.
Anchor: the path before those changes, features converted to float32 in the worker, every
tensor in its own segment (14 per batch), and all of the other image's regions gathered for
each example (its collation shares the shipped stacking, which is faster than the old one).
Both make bitwise the same examples and batches; the training process only receives batches.
First, examples/s built in one process (no workers), anchor against ours.

    python bench/loader.py [--batches 8,64] [--workers 1,2] [--images 300] [--dir /tmp/lxmert-loader]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def collate_anchor(examples: list[dict]):
    """The previous transfer: float32 features, one storage per tensor."""
    from data.collate import collate_pretraining

    batch = collate_pretraining(examples, pack=False)
    for f in dataclasses.fields(batch):
        v = getattr(batch, f.name)
        if isinstance(v, torch.Tensor) and v.dtype == torch.float16:
            setattr(batch, f.name, v.to(torch.float32))
    return batch


from data.pretraining import PretrainingDataset  # noqa: E402


class AnchorDataset(PretrainingDataset):
    """The previous example builder: every region of the other image gathered (and copied) for
    the swap, of which 1.5% is used. (At module level: loader workers come from the fork server and
    unpickle it.)"""

    @staticmethod
    def _rows_of(other, pick):
        full = other.tensor(None)[pick]
        return lambda rows: full[rows]


def anchor_dataset(dataset):
    anchor = copy.copy(dataset)
    anchor.__class__ = AnchorDataset
    return anchor


def examples_per_sec(dataset, count: int) -> float:
    for i in range(100):  # warm-up: pages of the store in memory
        dataset[(0, i % len(dataset))]
    start = time.perf_counter()
    for i in range(count):
        dataset[(1, i % len(dataset))]
    return count / (time.perf_counter() - start)


def samples_per_sec(dataset, collate, batch_size: int, workers: int, batches: int) -> float:
    from data.sampler import ResumableSampler
    from launcher.processes import data_loader  # workers from the fork server, as in the jobs

    sampler = ResumableSampler(len(dataset), 0, 1, seed=0)
    loader = data_loader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, collate_fn=collate,
                         prefetch_factor=4, drop_last=True, persistent_workers=True)
    return steady_rate(loader, batches, warm_up=3)  # warm-up: workers started, prefetch queue filled


def steady_rate(loader, batches: int, warm_up: int) -> float:
    """Samples/s the process receives over ``batches`` batches after ``warm_up`` untimed ones (a new
    epoch started when one ends)."""
    it = iter(loader)
    for _ in range(warm_up):
        next(it)
    start, n = time.perf_counter(), 0
    for _ in range(batches):
        batch = next(it, None)
        if batch is None:
            it = iter(loader)
            batch = next(it)
        n += len(batch)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", default="8,64", help="batch sizes")
    parser.add_argument("--workers", default="1,2", help="worker counts")
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--steps", type=int, default=200, help="batches timed per measurement")
    parser.add_argument("--examples", type=int, default=3000, help="examples timed per in-process measurement")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/lxmert-loader"))
    args = parser.parse_args()

    from data.answers import AnswerTable
    from data.collate import collate_pretraining
    from data.corpus import load_corpus
    from data.objectives import ObjectiveConfig
    from data.pretraining import PretrainingDataset
    from data.store import FeatureStore, build_store
    from data.synth import write_world
    from data.tokenize import load_tokenizer

    world = args.dir / f"world{args.images}"
    if not (world / "store").exists():
        write_world(world, images=args.images, regions=36, feat_dim=2048, progress=False)
        build_store(world / "store", [world / "features" / "train.tsv"], progress=False)
    store = FeatureStore(world / "store")
    answers = AnswerTable.from_file(world / "lxmert" / "all_ans.json")
    items, _ = load_corpus([world / "lxmert" / "train.json"], None, answers, store, "drop")
    dataset = PretrainingDataset(items, store, load_tokenizer(world / "vocab.txt"), ObjectiveConfig(), seed=0)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, {len(dataset)} examples, 36 regions x 2048 (float16 store)")
    anchor_set = anchor_dataset(dataset)
    for i in range(50):  # the same examples, bitwise
        x, y = anchor_set[(1, i)], dataset[(1, i)]
        assert all(torch.equal(x[k], y[k]) if isinstance(x[k], torch.Tensor) else x[k] == y[k] for k in x), i
    rounds = {"anchor": [], "ours": []}
    for _ in range(3):  # alternated, median of 3: this machine's speed drifts
        rounds["anchor"].append(examples_per_sec(anchor_set, args.examples))
        rounds["ours"].append(examples_per_sec(dataset, args.examples))
    a, o = (statistics.median(rounds[k]) for k in ("anchor", "ours"))
    print(f"examples built in one process: anchor {a:.0f}/s, ours {o:.0f}/s, {o / a:.2f}x (median of 3 alternated)")
    print(f"{'batch':>5} {'workers':>7} {'anchor samples/s':>17} {'ours samples/s':>15} {'ratio':>6}")
    for b in map(int, args.batches.split(",")):
        for w in map(int, args.workers.split(",")):
            steps = max(20, args.steps * 8 // b)
            anchor = samples_per_sec(anchor_set, collate_anchor, b, w, steps)
            ours = samples_per_sec(dataset, collate_pretraining, b, w, steps)
            print(f"{b:>5} {w:>7} {anchor:>17.0f} {ours:>15.0f} {ours / anchor:>5.2f}x", flush=True)


if __name__ == "__main__":
    main()
