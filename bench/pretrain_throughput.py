"""Whole pre-training step throughput: data loading, masking, forward, backward, optimizer step.

Builds a synthetic world (36 regions x 2048 features, as real stores) and its feature store,
then runs the real job (launcher/pretrain.py; the deepspeed launcher for several ranks) for
each preset, micro batch and rank count, and prints samples/s after warm-up and the share of the
time spent waiting for data (target: under 5%). The final checkpoint's write is timed apart
("ckpt s"), not as training. The world is made large enough that a run stays within one epoch:
the next epoch's batches are only started when that epoch begins, a wait that real corpora
(thousands of steps an epoch) hardly see. On a GPU it adds model FLOPs utilisation (model FLOPs
of our step, counted by torch's FLOP counter) and peak memory. The anchor, measured in the same
run before the jobs: the model's own training step with the same optimizer (``model step``,
samples/s on one batch, no ZeRO, no data loading); ``ratio`` is the job's samples/s per rank over it.

    python bench/pretrain_throughput.py [--presets tiny,base] [--ranks 1,2] [--steps 20]
    python bench/pretrain_throughput.py --presets base --ranks 1 --micro 64,256 --steps 40 --workers 8 \
        --ds ds_configs/zero2_fp16.json --modes eager,compiled   # GPU
    python bench/pretrain_throughput.py --gpu-suite   # the GPU table of BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: The job's settings per mode: eager (padding to each batch's longest), compiled (static shapes, one
#: inductor graph), cudagraphs (the same, captured as CUDA graphs: torch.compile's "reduce-overhead").
MODES = {"eager": [], "compiled": ["data.static_shapes=true", "train.compile=true"],
         "cudagraphs": ["data.static_shapes=true", "train.compile=true", "train.compile_mode=reduce-overhead"]}
GPU_PEAK = {"H100": {"fp16": 989e12, "bf16": 989e12, "fp32": 67e12}, "H200": {"fp16": 989e12, "bf16": 989e12, "fp32": 67e12}}


def model_and_batch(preset: str, world: Path, micro: int, device: str):
    """Our pre-training model for this world and one collated batch of ``micro`` examples on ``device``."""
    import torch

    from data.answers import AnswerTable
    from data.collate import collate_pretraining
    from data.corpus import load_corpus
    from data.pretraining import PretrainingDataset
    from data.store import FeatureStore
    from data.tokenize import load_tokenizer
    from model import LxmertConfig, LxmertForPretraining

    store, tok = FeatureStore(world / "store"), load_tokenizer(world / "vocab.txt")
    answers = AnswerTable.from_file(world / "lxmert" / "all_ans.json")
    items, _ = load_corpus([world / "lxmert" / "train.json"], answers=answers, images=store)
    ds = PretrainingDataset(items, store, tok)
    batch = collate_pretraining([ds[(0, i)] for i in range(micro)])
    config = LxmertConfig.from_preset(preset, vocab_size=len(tok), visual_feat_dim=store.feature_dim,
                                      num_qa_labels=len(answers))
    torch.manual_seed(0)
    net = LxmertForPretraining(config).train().to(device)
    inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.model_inputs().items()}
    return net, inputs


def flops_per_example(preset: str, world: Path, micro: int) -> float:
    """Forward + backward FLOPs of our model on one collated batch of this world, per example."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    device = "cuda" if torch.cuda.is_available() else "cpu"  # the count is the same; the GPU is much faster
    net, inputs = model_and_batch(preset, world, micro, device)
    with FlopCounterMode(display=False) as counter:
        net(**inputs).loss.backward()
    return counter.get_total_flops() / micro


def model_step_rate(preset: str, world: Path, micro: int, precision: str, steps: int) -> float:
    """The anchor: the model's own training step on one batch of this world, samples/s (median of
    ``steps`` after 2 warm-up steps): forward, backward and torch's fused AdamW (bf16: bf16 model,
    fp32 master weights, as the engine keeps them), with the job's process settings
    (``keep_freed_memory``); no ZeRO buffers, no clipping, no data loading."""
    import statistics
    import time

    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    from model_speed import Bf16Master

    from launcher.engine import keep_freed_memory

    keep_freed_memory()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    net, inputs = model_and_batch(preset, world, micro, device)
    adam = dict(lr=1e-4, weight_decay=0.01, fused=True)
    if precision == "fp32":
        opt = torch.optim.AdamW(net.parameters(), **adam)
    else:
        net = net.to(torch.float16 if precision == "fp16" else torch.bfloat16)
        opt = Bf16Master(net, **adam)
    times = []
    for i in range(steps + 2):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        net(**inputs).loss.backward()
        opt.step()
        opt.zero_grad()
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - start)
    del net, opt
    return micro / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="tiny,base")
    parser.add_argument("--ranks", default="1,2")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per run (the first 3 are warm-up)")
    parser.add_argument("--micro", default="8", help="micro batch per rank (a comma-separated list: one run each)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers per rank")
    parser.add_argument("--images", type=int, default=0,
                        help="images of the synthetic world (default: enough that no run crosses an epoch boundary, "
                             "whose loader restart would count as waiting for data)")
    parser.add_argument("--ds", default="ds_configs/zero2_bf16.json", help="DeepSpeed configs (comma-separated)")
    parser.add_argument("--modes", default="eager", help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--gpu-suite", action="store_true",
                        help="the GPU table: base preset, 1 rank, bf16 and fp16 ZeRO-2, micro 256 and 32, every mode, "
                             "8 workers, 20 steps (each row printed as it is measured)")
    parser.add_argument("--dir", type=Path, default=None, help="working folder (default: a temporary one)")
    parser.add_argument("--anchor-steps", type=int, default=5,
                        help="timed steps of the anchor, the model's own training step (0: no anchor)")
    args = parser.parse_args()
    if args.gpu_suite:
        args.presets, args.ranks, args.micro, args.workers, args.steps = "base", "1", "256,32", 8, 20
        args.ds, args.modes = "ds_configs/zero2_bf16.json,ds_configs/zero2_fp16.json", ",".join(MODES)
    unknown = set(args.modes.split(",")) - set(MODES)
    if unknown:
        parser.error(f"--modes: unknown {', '.join(sorted(unknown))}; known: {', '.join(MODES)}")

    import torch

    from data.store import build_store
    from data.synth import write_world
    from launcher.engine import precision_of

    work = args.dir or Path(tempfile.mkdtemp(prefix="lxmert-throughput-"))
    world = work / "world"
    micros, rank_counts = [int(m) for m in args.micro.split(",")], [int(r) for r in args.ranks.split(",")]
    needed = args.steps * max(micros) * max(rank_counts)  # training sentences the largest run reads
    if not (world / "store").exists():
        # the synthetic world holds about 6.4 training sentences per image (8 per training image, 80% train)
        images = args.images or max(400, int(needed / 6.4 * 1.2))
        write_world(world, images=images, regions=36, feat_dim=2048, progress=False)
        build_store(world / "store", [world / "features" / "train.tsv", world / "features" / "val.tsv"], progress=False)
    sentences = sum(len(s) for it in json.loads((world / "lxmert" / "train.json").read_text()) for s in it["sentf"].values())
    if sentences < needed:
        print(f"note: {sentences} training sentences, fewer than the {needed} a run reads: it crosses an epoch boundary, "
              f"where the wait for the next epoch's first batches counts as waiting for data (a larger --images avoids it)")
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"{device}, torch {torch.__version__}, {args.steps} steps, {args.workers} loader workers per rank, "
          f"20-token sentences, 36 regions x 2048")
    print(f"{'ds config':<12}{'mode':<11}{'preset':<7}{'micro':>6}{'ranks':>6}{'samples/s':>11}{'data wait':>11}{'MFU':>8}"
          f"{'peak GiB':>10}{'ckpt s':>8}{'model step':>12}{'ratio':>7}", flush=True)
    for ds in args.ds.split(","):
        precision = precision_of(json.loads((ROOT / ds).read_text()))
        peak = next((v[precision] for k, v in GPU_PEAK.items() if k in device), None)  # MFU only where known
        for preset, micro in ((p, m) for p in args.presets.split(",") for m in micros):
            flops = flops_per_example(preset, world, micro) if peak else None
            anchor = model_step_rate(preset, world, micro, precision, args.anchor_steps) if args.anchor_steps else None
            for mode, ranks in ((m, r) for m in args.modes.split(",") for r in rank_counts):
                run_dir = work / f"run-{preset}-{ranks}-{Path(ds).stem}-{micro}-{mode}"
                if run_dir.exists():
                    import shutil

                    shutil.rmtree(run_dir)
                overrides = [
                    f"run_dir={run_dir}", f"deepspeed={ROOT / ds}", f"model.preset={preset}",
                    f"data.store={world / 'store'}", f"data.train=[{world / 'lxmert' / 'train.json'}]", "data.valid=[]",
                    f"data.answers={world / 'lxmert' / 'all_ans.json'}", f"data.tokenizer={world / 'vocab.txt'}",
                    f"data.num_workers={args.workers}", f"train.micro_batch_size={micro}",
                    f"train.global_batch_size={micro * ranks}", f"train.max_steps={args.steps}", "train.epochs=100",
                    "checkpoint.every=1000000", "log.progress=false", "log.every=1000000", *MODES[mode],
                ]
                script = str(ROOT / "launcher" / "pretrain.py")
                config = str(ROOT / "launcher" / "configs" / "synth_tiny.yaml")
                if ranks == 1:
                    cmd = [sys.executable, script, "--config", config, "--resume", "none", *overrides]
                else:
                    cmd = [str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", str(ranks), script, "--config",
                           config, "--resume", "none", *overrides]
                env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
                out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
                if out.returncode != 0:
                    print(out.stdout[-2000:], out.stderr[-2000:])
                    raise SystemExit(f"{ds}, {mode}, {preset}, micro batch {micro}, at {ranks} ranks failed")
                r = json.loads((run_dir / "throughput.json").read_text())
                mfu = f"{r['samples_per_sec'] * flops / (peak * ranks):.1%}" if flops else ""
                mem = f"{r['peak_memory_gib']:.2f}" if "peak_memory_gib" in r else ""
                ratio = f"{r['samples_per_sec'] / (anchor * ranks):.2f}x" if anchor else ""  # per rank, against one model step
                print(f"{Path(ds).stem:<12}{mode:<11}{preset:<7}{micro:>6}{ranks:>6}{r['samples_per_sec']:>11.2f}"
                      f"{r['data_wait_fraction']:>10.1%}{mfu:>8}{mem:>10}{r['checkpoint_seconds']:>8.1f}{anchor or 0:>12.2f}"
                      f"{ratio:>7}", flush=True)
    print(f"model step FLOPs per example (ours, torch's counter): see MFU; working folder {work}")


if __name__ == "__main__":
    main()
