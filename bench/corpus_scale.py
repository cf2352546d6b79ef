"""The pre-training corpus at the paper's scale: the memory-mapped corpus (`lxmert corpus build`)
against the corpus JSON read into Python objects (the anchor, the previous path), in the same run.

Generates a corpus of the paper's shape (180 K images, 51 sentences an image: 5 captions and 46
questions with answers over a 3,129-answer table: 9.18 M pairs) in the original JSON format, in 4
files of a quarter each, and a feature store for its images (10 regions x 8 features: small, the
corpus is what is measured). Then measures

- build: `lxmert corpus build` on one core (taskset, one tokenizer thread): seconds, peak memory;
- start: a rank's data pipeline (feature store, corpus, dataset, sampler of rank 0 of 8, a loader of
  4 workers from the fork server, as the jobs make them): seconds from the end of the imports to the
  corpus opened and to the first batch;
- memory: PSS summed over the rank, its workers and the fork server, sampled over the steps; the
  corpus's cost is that minus the same pipeline's over a corpus of 200 images.

The JSON anchor runs at the largest size this machine holds with 4 workers (default: a quarter, one
file); its full-size figures are extrapolated linearly, and said so.

    python bench/corpus_scale.py [--dir /tmp/lxmert-corpus-scale] [--images 180000] [--json-files 1]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CAPTIONS, QUESTIONS, ANSWERS, FILES = 5, 46, 3129, 4
REGIONS, FEAT_DIM, TINY = 10, 8, 200


# --------------------------------------------------------------------------- the world
def generate(out: Path, images: int, seed: int = 0) -> None:
    """Vocabulary, answer table, corpus JSON files (4 quarters) and the feature TSV, unless present."""
    import numpy as np

    from data.features import RegionRecord, tsv_line

    if (out / "done").exists():
        return
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = sorted({"".join(rng.choice(letters) for _ in range(rng.randint(3, 9))) for _ in range(8000)})
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    (out / "vocab.txt").write_text("\n".join(specials + words + ["?", "."] + [str(n) for n in range(20)]) + "\n")
    answers = sorted(set(rng.sample(words, ANSWERS - 20)) | {str(n) for n in range(20)})
    (out / "all_ans.json").write_text(json.dumps([{"ans": a, "dsets": ["vqa", "gqa", "visual7w"]} for a in answers]))
    per_file = -(-images // FILES)
    started = time.perf_counter()
    for f in range(FILES):
        with open(out / f"corpus_{f}.json", "w") as fh:
            fh.write("[")
            for k in range(f * per_file, min(images, (f + 1) * per_file)):
                caps = [" ".join(rng.choices(words, k=rng.randint(8, 13))) + " ." for _ in range(CAPTIONS)]
                qs = [" ".join(rng.choices(words, k=rng.randint(4, 8))) + " ?" for _ in range(QUESTIONS)]
                vqa, gqa = qs[: QUESTIONS // 2], qs[QUESTIONS // 2:]
                vqa_labels = [{a: s for a, s in list(zip(rng.sample(answers, 3), (1.0, 0.6, 0.3)))[: rng.randint(1, 3)]}
                              for _ in vqa]
                gqa_labels = [{rng.choice(answers): 1.0} for _ in gqa]
                row = {"img_id": f"COCO_train2014_{k:012d}", "sentf": {"mscoco": caps, "vqa": vqa, "gqa": gqa},
                       "labelf": {"vqa": vqa_labels, "gqa": gqa_labels}}
                fh.write(("," if k > f * per_file else "") + json.dumps(row))
            fh.write("]")
        print(f"  corpus_{f}.json: {(out / f'corpus_{f}.json').stat().st_size / 2**20:.0f} MiB "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
    g = np.random.default_rng(seed)
    with open(out / "features.tsv", "w") as fh:
        for k in range(images):
            boxes = np.sort(g.uniform(0, 400, (REGIONS, 4)).astype(np.float32).reshape(REGIONS, 2, 2), axis=1).reshape(REGIONS, 4)
            rec = RegionRecord(f"COCO_train2014_{k:012d}", 480, 640, boxes, g.integers(0, 1600, REGIONS).astype(np.int32),
                               g.random(REGIONS, dtype=np.float32), g.integers(0, 400, REGIONS).astype(np.int32),
                               g.random(REGIONS, dtype=np.float32), g.random((REGIONS, FEAT_DIM), dtype=np.float32))
            fh.write(tsv_line(rec))
    with open(out / "corpus_tiny.json", "w") as fh:  # the baseline: the first TINY images
        rows = json.loads((out / "corpus_0.json").read_text())[:TINY]
        json.dump(rows, fh)
    (out / "done").write_text("")


def build(out: Path) -> dict:
    """The store (once), the full and the tiny corpus; the full one timed on one core."""
    from data.store import build_store

    if not (out / "store").exists():
        build_store(out / "store", [out / "features.tsv"], progress=False)
    done = out / "build.json"
    result = json.loads(done.read_text()) if done.exists() else {}
    for name, files in (("corpus", [f"corpus_{f}.json" for f in range(FILES)]), ("tiny", ["corpus_tiny.json"])):
        if (out / name).exists():
            continue
        cmd = ["taskset", "-c", "0", str(Path(sys.executable).parent / "lxmert"), "corpus", "build", "--answers",
               str(out / "all_ans.json"), "--tokenizer", str(out / "vocab.txt"), "--out", str(out / name), "--quiet"]
        for f in files:
            cmd += ["--json", str(out / f)]
        began = time.perf_counter()
        proc = subprocess.Popen(cmd, env={**os.environ, "RAYON_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"})
        _, status, usage = os.wait4(proc.pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, cmd
        result[name] = {"seconds": time.perf_counter() - began, "peak_rss_mb": usage.ru_maxrss / 1024}
        done.write_text(json.dumps(result))
    return result


# --------------------------------------------------------------------------- one rank's pipeline
def _memory_kb(pid: int, prefixes: dict[str, str]) -> dict[str, int]:
    """PSS of a process: in all, anonymous (its own heap: Python objects, arrays), and of the
    mappings of files under each of ``prefixes`` (the corpus's arrays, the feature store)."""
    out = {"pss": 0, "anon": 0, **{name: 0 for name in prefixes}}
    try:
        for line in open(f"/proc/{pid}/smaps_rollup"):
            if line.startswith("Pss:"):
                out["pss"] = int(line.split()[1])
            elif line.startswith("Pss_Anon:"):
                out["anon"] = int(line.split()[1])
        inside = None
        with open(f"/proc/{pid}/smaps") as fh:
            for line in fh:
                first = line.split(maxsplit=6)
                if "-" in first[0] and len(first) >= 5 and ":" in first[3]:  # a mapping's header line
                    path = first[5].strip() if len(first) == 6 else ""
                    inside = next((name for name, prefix in prefixes.items() if path.startswith(prefix)), None)
                elif inside and line.startswith("Pss:"):
                    out[inside] += int(first[1])
    except OSError:
        pass
    return out


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def pipeline(out: Path, paths: list[str], workers: int, steps: int, batch: int, every: int) -> dict:
    """A rank's data pipeline, as the pre-training job builds it; prints its measurements."""
    began = time.perf_counter()
    import torch

    from data.answers import AnswerTable
    from data.collate import collate_pretraining
    from data.corpus import open_pairs
    from data.pretraining import PretrainingDataset
    from data.sampler import ResumableSampler
    from data.store import FeatureStore
    from data.tokenize import load_tokenizer
    from launcher.processes import data_loader

    imported = time.perf_counter()
    store = FeatureStore(out / "store")
    answers = AnswerTable.from_file(out / "all_ans.json")
    tokenizer = load_tokenizer(out / "vocab.txt")
    pairs, report = open_pairs(paths, tokenizer, answers, store)
    dataset = PretrainingDataset(pairs, store, tokenizer, seed=0)
    sampler = ResumableSampler(len(dataset), rank=0, world_size=8, seed=0)
    opened = time.perf_counter()
    loader = data_loader(dataset, batch_size=batch, sampler=sampler, num_workers=workers, collate_fn=collate_pretraining,
                         generator=torch.Generator().manual_seed(0), prefetch_factor=4, drop_last=True,
                         persistent_workers=True)
    it = iter(loader)
    next(it)
    first = time.perf_counter()
    prefixes = {"corpus": str(Path(paths[0]).resolve()) + "/" if Path(paths[0]).is_dir() else "\0",
                "store": str((out / "store").resolve()) + "/"}
    samples = []
    for step in range(1, steps + 1):
        try:
            next(it)
        except StopIteration:  # the baseline's corpus is small: next epoch
            sampler.set_epoch(sampler.epoch + 1)
            it = iter(loader)
            next(it)
        if step % every == 0 or step == steps:
            pids = _descendants(os.getpid())
            memory = [_memory_kb(p, prefixes) for p in pids]
            samples.append({"step": step, "processes": len(pids),
                            **{k + "_mb": sum(m[k] for m in memory) / 1024 for k in memory[0]}})
    return {"pairs": len(dataset), "report": str(report), "import_s": imported - began, "open_s": opened - imported,
            "first_batch_s": first - imported, "steps_per_s": steps / (time.perf_counter() - first), "samples": samples}


def run_pipeline(out: Path, paths: list[str], args) -> dict:
    cmd = [sys.executable, __file__, "--dir", str(out), "--pipeline", *map(str, paths), "--workers", str(args.workers),
           "--steps", str(args.steps), "--batch", str(args.batch)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode:
        sys.exit(f"pipeline {paths} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/lxmert-corpus-scale"))
    parser.add_argument("--images", type=int, default=180_000)
    parser.add_argument("--json-files", type=int, default=1, help="quarters of the corpus the JSON anchor reads")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--pipeline", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pipeline:
        print(json.dumps(pipeline(args.dir, args.pipeline, args.workers, args.steps, args.batch, every=max(args.steps // 6, 1))))
        return

    out = args.dir
    print(f"generating {args.images} images x {CAPTIONS + QUESTIONS} sentences in {out} ...", flush=True)
    generate(out, args.images)
    built = build(out)
    manifest = json.loads((out / "corpus" / "manifest.json").read_text())
    size_mb = sum(f.stat().st_size for f in (out / "corpus").iterdir()) / 2**20
    json_mb = sum((out / f"corpus_{f}.json").stat().st_size for f in range(FILES)) / 2**20
    print(f"\ncorpus: {manifest['pairs']:,} pairs on {manifest['images']:,} images, {manifest['tokens']:,} pieces; "
          f"JSON {json_mb:.0f} MiB -> corpus {size_mb:.0f} MiB")
    print(f"build (one core): {built['corpus']['seconds']:.0f} s, peak RSS {built['corpus']['peak_rss_mb']:.0f} MiB")

    runs = {"baseline": run_pipeline(out, [out / "tiny"], args),
            "mapped": run_pipeline(out, [out / "corpus"], args),
            "json": run_pipeline(out, [out / f"corpus_{f}.json" for f in range(args.json_files)], args)}
    base_anon = max(s["anon_mb"] for s in runs["baseline"]["samples"])
    scale = FILES / args.json_files

    def cost(r: dict) -> float:  # the corpus's memory: the heap beyond the baseline's, plus its mapped pages
        return max(s["anon_mb"] - base_anon + s["corpus_mb"] for s in r["samples"])

    print(f"\none rank's pipeline, {args.workers} workers, batch {args.batch}, {args.steps} steps. PSS in MiB summed over "
          f"the rank, its workers and the fork server, the largest of {len(runs['mapped']['samples'])} samples: all "
          f"(first..last sample), heap (anonymous), the corpus's and the store's mapped files; corpus cost = heap beyond "
          f"the baseline's + corpus")
    print(f"{'corpus':<34}{'pairs':>11}{'open s':>8}{'1st batch s':>12}{'all':>13}{'heap':>7}{'corpus':>8}{'store':>7}"
          f"{'corpus cost':>13}")
    labels = {"baseline": f"mapped, {TINY} images (baseline)", "mapped": "mapped (ours)",
              "json": f"JSON objects, {args.json_files}/{FILES} (anchor)"}
    for name, r in runs.items():
        first, last = r["samples"][0]["pss_mb"], r["samples"][-1]["pss_mb"]
        peak = {k: max(s[f"{k}_mb"] for s in r["samples"]) for k in ("anon", "corpus", "store")}
        print(f"{labels[name]:<34}{r['pairs']:>11,}{r['open_s']:>8.1f}{r['first_batch_s']:>12.1f}"
              f"{f'{first:.0f}..{last:.0f}':>13}{peak['anon']:>7.0f}{peak['corpus']:>8.0f}{peak['store']:>7.0f}"
              f"{cost(r):>13.0f}")
    j, b, m = runs["json"], runs["baseline"], runs["mapped"]

    def grown(key: str) -> float:  # the baseline's fixed cost plus the JSON path's excess, times the scale
        return b[key] + (j[key] - b[key]) * scale

    print(f"{'JSON objects, full (extrapolated)':<34}{int(j['pairs'] * scale):>11,}{grown('open_s'):>8.1f}"
          f"{grown('first_batch_s'):>12.1f}{'':>35}{cost(j) * scale:>13.0f}")
    print(f"\nratios at full size (JSON extrapolated / mapped): open {grown('open_s') / max(m['open_s'], 1e-3):.0f}x, "
          f"first batch {grown('first_batch_s') / m['first_batch_s']:.0f}x, corpus memory {cost(j) * scale / max(cost(m), 1):.0f}x")
    print(f"targets: first batch {m['first_batch_s']:.1f} s (< 10), corpus cost {cost(m):.0f} MiB (< 300), "
          f"build {built['corpus']['seconds'] / 60:.1f} min (< 10), peak RSS {built['corpus']['peak_rss_mb']:.0f} MiB")


if __name__ == "__main__":
    main()
