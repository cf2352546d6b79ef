"""What loader workers from the fork server cost against forking the training process (the
anchor, the previous loaders, measured in the same run), on the pre-training dataset:

- cold: a new loader's first batch (ours includes starting the fork server, once a process);
- pass: a validation pass's first batch, as the jobs made them before (a new loader, new workers,
  each pass) and as they make them now (one persistent loader, its workers reused);
- steady: samples/s once running.

Each measurement in a fresh process (a fork server is started once per process).

    python bench/worker_start.py [--workers 1,2] [--images 300] [--dir /tmp/lxmert-loader]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def dataset(world: Path):
    from data.answers import AnswerTable
    from data.corpus import load_corpus
    from data.objectives import ObjectiveConfig
    from data.pretraining import PretrainingDataset
    from data.store import FeatureStore
    from data.tokenize import load_tokenizer

    store = FeatureStore(world / "store")
    answers = AnswerTable.from_file(world / "lxmert" / "all_ans.json")
    items, _ = load_corpus([world / "lxmert" / "train.json"], None, answers, store, "drop")
    return PretrainingDataset(items, store, load_tokenizer(world / "vocab.txt"), ObjectiveConfig(), seed=0)


def measure(world: Path, start: str, workers: int, batch: int = 32, passes: int = 5, steady: int = 40) -> dict:
    """In this process: ``start`` "fork" (anchor) or "forkserver" (ours, through the jobs' factory)."""
    import torch

    from data.collate import collate_pretraining
    from launcher.processes import data_loader

    torch.set_num_threads(1)
    data = dataset(world)
    indices = list(range(len(data)))

    def make(persistent: bool):
        kwargs = dict(batch_size=batch, sampler=indices, num_workers=workers, collate_fn=collate_pretraining,
                      persistent_workers=persistent, prefetch_factor=4)
        if start == "fork":
            return torch.utils.data.DataLoader(data, multiprocessing_context="fork", **kwargs)
        return data_loader(data, **kwargs)

    began = time.perf_counter()
    loader = make(persistent=True)
    next(iter(loader))
    cold = time.perf_counter() - began
    began = time.perf_counter()
    for _ in range(passes):
        if start == "fork":  # the previous validation: a new loader and new workers each pass
            next(iter(make(persistent=False)))
        else:  # now: the persistent loader's workers, reused
            next(iter(loader))
    per_pass = (time.perf_counter() - began) / passes
    from loader import steady_rate  # bench/loader.py (this script's folder is on the path)

    return {"cold": cold, "pass": per_pass, "steady": steady_rate(loader, steady, warm_up=1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="1,2", help="worker counts")
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/lxmert-loader"))
    parser.add_argument("--measure", nargs=3, metavar=("WORLD", "START", "WORKERS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(Path(args.measure[0]), args.measure[1], int(args.measure[2]))))
        return

    from data.store import build_store
    from data.synth import write_world

    world = args.dir / f"world{args.images}"
    if not (world / "store").exists():
        write_world(world, images=args.images, regions=36, feat_dim=2048, progress=False)
        build_store(world / "store", [world / "features" / "train.tsv"], progress=False)

    def run(start: str, workers: int) -> dict:
        out = subprocess.run([sys.executable, __file__, "--measure", str(world), start, str(workers)],
                             capture_output=True, text=True, check=True, timeout=600)
        return json.loads(out.stdout.strip().splitlines()[-1])

    print(f"{args.images} images, 36 regions x 2048, batch 32; anchor: workers forked from this process; "
          f"ours: from the fork server")
    print(f"{'workers':>7} {'first batch (s) anchor/ours':>28} {'validation pass (ms) anchor/ours':>33} "
          f"{'samples/s anchor/ours':>22} {'steady ratio':>12}")
    for w in map(int, args.workers.split(",")):
        a, o = run("fork", w), run("forkserver", w)
        print(f"{w:>7} {a['cold']:>14.2f} / {o['cold']:<11.2f} {a['pass'] * 1e3:>17.0f} / {o['pass'] * 1e3:<13.0f} "
              f"{a['steady']:>10.0f} / {o['steady']:<9.0f} {o['steady'] / a['steady']:>11.2f}x", flush=True)


if __name__ == "__main__":
    main()
