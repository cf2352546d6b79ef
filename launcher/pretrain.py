"""LXMERT pre-training with DeepSpeed: the job every launcher starts.

    python launcher/pretrain.py --config run.yaml [key.path=value ...]          # one process
    deepspeed --num_gpus 2 launcher/pretrain.py --config run.yaml ...            # or --hostfile H
    torchrun --nproc_per_node 2 launcher/pretrain.py --config run.yaml ...
    mpirun -np 2 python launcher/pretrain.py --config run.yaml ...               # ranks from mpi4py
    srun python launcher/pretrain.py --config run.yaml ...                       # Slurm
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.distributed as dist
import yaml

from launcher import checkpoint as ckpt
from launcher.config import RunConfig, load_config
from launcher.engine import build_engine, deepspeed_config, init_distributed, precision_of


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lxmert pretrain", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="run configuration (YAML or JSON)")
    parser.add_argument("--resume", default="auto",
                        help="'auto' (default): the latest complete checkpoint of the run directory, if any; "
                             "'none': start fresh; or a tag such as step1000 (step1000_universal, made by "
                             "`lxmert universal`, resumes at another number of ranks)")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=5e-5 checkpoint.every=500")
    return parser.parse_args(argv)


class Stopper:
    """Turns SIGTERM / SIGUSR1 (preemption) into 'checkpoint at the next step, then exit'."""

    def __init__(self) -> None:
        self.requested = False
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def any_rank(self, device) -> bool:
        flag = torch.tensor([1.0 if self.requested else 0.0], device=device)
        dist.all_reduce(flag)
        return bool(flag.item())


def build_data(run: RunConfig, rank: int, world: int):
    from data.answers import AnswerTable
    from data.corpus import load_corpus
    from data.pretraining import PretrainingDataset
    from data.sampler import ResumableSampler
    from data.store import FeatureStore
    from data.tokenize import load_tokenizer

    d = run.data
    store = FeatureStore(d.store)
    for path in [*d.train, *d.valid, d.answers]:
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such file (data section of the run configuration)")
    answers = AnswerTable.from_file(d.answers, d.answer_dsets)
    tokenizer = load_tokenizer(d.tokenizer)
    train_items, report = load_corpus(d.train, d.sources, answers, store, d.missing_images)
    if rank == 0:
        print(f"pre-training corpus: {report}", flush=True)
    train = PretrainingDataset(train_items, store, tokenizer, run.objectives, seed=run.train.seed)
    valid = None
    if d.valid:
        valid_items, _ = load_corpus(d.valid, d.sources, answers, store, d.missing_images)
        valid = PretrainingDataset(valid_items, store, tokenizer, run.objectives, seed=run.train.seed + 1)
    sampler = ResumableSampler(len(train), rank, world, seed=run.train.seed)
    return store, answers, tokenizer, train, valid, sampler


def model_config(run: RunConfig, store, answers, tokenizer):
    """The preset with the data's sizes (vocabulary, feature size, answers) unless set explicitly."""
    from model import LxmertConfig

    data_sizes = {"vocab_size": len(tokenizer), "visual_feat_dim": store.feature_dim, "num_qa_labels": len(answers)}
    config = LxmertConfig.from_preset(run.model.preset, **{**data_sizes, **run.model.overrides})
    for name, value in data_sizes.items():
        if getattr(config, name) != value:
            raise ValueError(f"model.overrides.{name}={getattr(config, name)} does not match the data ({value})")
    return config


def loader(dataset, sampler, run: RunConfig, batch_size: int):
    from data.collate import collate_pretraining

    workers = run.data.num_workers
    # The loader draws its workers' base seed from its own generator, not the global one, so that
    # starting a loader (as a resumed run does mid-epoch) leaves the dropout random stream untouched.
    # (Examples are seeded by (seed, epoch, index) anyway.)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                                       generator=torch.Generator().manual_seed(run.train.seed),
                                       collate_fn=collate_pretraining, pin_memory=torch.cuda.is_available(),
                                       persistent_workers=False, prefetch_factor=4 if workers else None, drop_last=True)


OBJECTIVE_NAMES = ("mlm", "matched", "obj", "attr", "feat", "qa")


class Meter:
    """Sums of per-objective losses between log points, averaged across ranks when read."""

    def __init__(self, device) -> None:
        self.device = device
        self.reset()

    def reset(self) -> None:
        # objectives, total, count: summed on the device, so that a step never waits for the GPU
        self.sums = torch.zeros(len(OBJECTIVE_NAMES) + 2, dtype=torch.float64, device=self.device)
        self.samples = 0
        self.data_wait = 0.0  # seconds spent waiting for the next batch
        self.start = time.perf_counter()

    def add(self, out, batch_size: int) -> None:
        zero = torch.zeros((), device=self.device)
        values = [out.losses[name].detach().double() if name in out.losses else zero for name in OBJECTIVE_NAMES]
        self.sums += torch.stack([*values, out.loss.detach().double(), torch.ones((), device=self.device)]).double()
        self.samples += batch_size

    def read(self) -> dict[str, float]:
        sums = self.sums.clone()
        dist.all_reduce(sums)
        n = max(sums[-1].item(), 1)
        values = {f"loss/{name}": sums[i].item() / n for i, name in enumerate(OBJECTIVE_NAMES)}
        values["loss/total"] = sums[-2].item() / n
        samples = torch.tensor([float(self.samples)], device=self.device)
        dist.all_reduce(samples)
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        values["samples_per_sec"] = samples.item() / elapsed
        values["data_wait_fraction"] = self.data_wait / elapsed
        return values


class Throughput:
    """Whole-run samples/s and share of time waiting for data, after the first steps (warm-up)."""

    def __init__(self, global_batch: int) -> None:
        self.global_batch, self.begin, self.first_step, self.wait = global_batch, None, 0, 0.0

    def start(self, step: int) -> None:
        self.begin, self.first_step, self.wait = time.perf_counter(), step, 0.0

    def summary(self, step: int) -> dict | None:
        if self.begin is None or step <= self.first_step:
            return None
        seconds = time.perf_counter() - self.begin
        out = {"steps": step - self.first_step, "seconds": seconds,
               "samples_per_sec": (step - self.first_step) * self.global_batch / seconds,
               "data_wait_fraction": self.wait / seconds}
        if torch.cuda.is_available():
            out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        return out


@torch.no_grad()
def validate(engine, dataset, run: RunConfig, rank: int, world: int) -> dict[str, float]:
    from data.sampler import ResumableSampler

    engine.eval()
    sampler = ResumableSampler(len(dataset), rank, world, seed=run.train.seed, shuffle=False)
    meter = Meter(engine.device)
    correct = torch.zeros(2, dtype=torch.float64)
    for i, batch in enumerate(loader(dataset, sampler, run, run.train.micro_batch_size)):
        if i >= run.log.valid_batches:
            break
        batch = batch.to(engine.device)
        out = engine(**batch.model_inputs())
        meter.add(out, len(batch))
        has_answer = batch.ans != -100
        if out.question_answering_score is not None:
            correct[0] += (out.question_answering_score.argmax(-1)[has_answer] == batch.ans[has_answer]).sum().item()
        correct[1] += has_answer.sum().item()
    values = {k.replace("loss/", "valid/"): v for k, v in meter.read().items() if k.startswith("loss/")}
    correct = correct.to(engine.device)
    dist.all_reduce(correct)
    values["valid/qa_accuracy"] = (correct[0] / correct[1].clamp(min=1)).item()
    engine.train()
    return values


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = load_config(args.config, args.overrides)  # before any heavy work: a bad config fails fast on every rank
    rank, world = init_distributed()
    run_dir = Path(run.run_dir)
    ckpt_dir = run_dir / "checkpoints"
    resume_tag = ckpt.resolve_resume(ckpt_dir, args.resume)
    store, answers, tokenizer, train_set, valid_set, sampler = build_data(run, rank, world)
    torch.manual_seed(run.train.seed)

    from model import LxmertForPretraining

    config = model_config(run, store, answers, tokenizer)
    if run.model.init_from:
        net = LxmertForPretraining.from_pretrained(run.model.init_from, config, skip_heads=True)
    else:
        net = LxmertForPretraining(config)

    micro = run.train.micro_batch_size
    steps_per_epoch = (len(sampler) // micro) // (run.train.global_batch_size // (micro * world))
    if steps_per_epoch == 0:
        raise ValueError(f"one epoch of {len(sampler)} examples per rank is less than one global batch "
                         f"({run.train.global_batch_size}); lower train.global_batch_size")
    total_steps = run.train.epochs * steps_per_epoch
    if run.train.max_steps:
        total_steps = min(total_steps, run.train.max_steps)
    ds_config = deepspeed_config(run, world, total_steps)
    if resume_tag is not None and resume_tag.endswith(ckpt.UNIVERSAL):
        ds_config["checkpoint"] = {**ds_config.get("checkpoint", {}), "load_universal": True}
    engine = build_engine(net, ds_config, run.train.weight_decay)
    precision = precision_of(ds_config)

    step, epoch = 0, 0
    if resume_tag is not None:
        ckpt.check_uniform_precision(ckpt_dir / resume_tag)
        _, client = engine.load_checkpoint(str(ckpt_dir), tag=resume_tag)
        if client is None:
            raise ValueError(f"{ckpt_dir / resume_tag}: DeepSpeed could not load it (another world size? convert it "
                             f"with `lxmert universal {ckpt_dir} --tag {resume_tag}` and resume from the _universal tag)")
        if client["model_config"] != config.to_dict():
            raise ValueError(f"{ckpt_dir / resume_tag}: checkpoint of another model configuration")
        step, epoch = client["step"], client["epoch"]
        sampler.load_state_dict(client["sampler"])
        ckpt.set_rng_state(client["rng"][rank] if rank < len(client["rng"]) else client["rng"][0])
        if rank == 0:
            print(f"resumed from {ckpt_dir / resume_tag} at step {step}, epoch {epoch}", flush=True)

    writer = None
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        resolved = {**run.to_dict(), "resolved": {"world_size": world, "gradient_accumulation_steps":
                    ds_config["gradient_accumulation_steps"], "total_steps": total_steps, "precision": precision,
                    "model": config.to_dict()}}
        (run_dir / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tensorboard"))

    stopper = Stopper()
    meter = Meter(engine.device)
    throughput = Throughput(run.train.global_batch_size)
    loss_file = open(run_dir / "losses.txt", "a") if rank == 0 else None  # step, loss of rank 0's micro batch
    bar = None
    if rank == 0 and run.log.progress:
        from tqdm import tqdm

        bar = tqdm(total=total_steps, initial=step, unit="step", desc="pre-training", dynamic_ncols=True)

    def client_state() -> dict:
        rngs = [None] * world
        dist.all_gather_object(rngs, ckpt.rng_state())
        return {"step": step, "epoch": epoch, "sampler": sampler.state_dict(), "rng": rngs,
                "model_config": config.to_dict(), "run_config": run.to_dict(), "universal_checkpoint_info": {},
                "tokenizer_vocab": str(Path(run.data.tokenizer).resolve() / "vocab.txt")
                if Path(run.data.tokenizer).is_dir() else str(Path(run.data.tokenizer).resolve())}

    def save() -> None:
        ckpt.save(engine, ckpt_dir, step, client_state(), run.checkpoint.keep)

    def log(values: dict[str, float]) -> None:
        if writer is not None:
            for key, value in values.items():
                writer.add_scalar(key, value, step)

    done = step >= total_steps
    while not done:
        if sampler.epoch != epoch:
            sampler.set_epoch(epoch)
        batches = iter(loader(train_set, sampler, run, micro))
        while True:
            waited = time.perf_counter()
            batch = next(batches, None)
            meter.data_wait += time.perf_counter() - waited
            throughput.wait += time.perf_counter() - waited
            if batch is None:
                break
            batch = batch.to(engine.device, non_blocking=True)
            out = engine(**batch.model_inputs())
            engine.backward(out.loss)
            boundary = engine.is_gradient_accumulation_boundary()
            engine.step()
            sampler.advance(micro)
            meter.add(out, len(batch))
            if not boundary:
                continue
            step += 1
            if loss_file is not None:
                loss_file.write(f"{step} {out.loss.item()!r}\n")
                loss_file.flush()
            if bar is not None:
                bar.update(1)
                if step % run.log.every == 0:
                    bar.set_postfix(loss=f"{out.loss.item():.3f}")
            if step % run.log.every == 0 or step == total_steps:
                values = meter.read()
                values["lr"] = engine.get_lr()[0]
                values["skipped_steps"] = float(engine.skipped_steps)
                grad_norm = engine.get_global_grad_norm()
                if grad_norm is not None:
                    values["grad_norm"] = float(grad_norm)
                scale = getattr(engine.optimizer, "cur_scale", None) or getattr(engine.optimizer, "loss_scale", None)
                if precision == "fp16" and scale is not None:
                    values["loss_scale"] = float(scale)
                log(values)
                meter.reset()
            if run.log.valid_every and step % run.log.valid_every == 0 and valid_set is not None:
                log(validate(engine, valid_set, run, rank, world))
            stop = stopper.any_rank(engine.device)
            if step % run.checkpoint.every == 0 or step == total_steps or stop:
                save()
            if stop:
                if rank == 0:
                    print(f"stopped by signal at step {step}; checkpoint saved", flush=True)
                return 0
            if step == 3:
                throughput.start(step)
            if step >= total_steps:
                done = True
                break
        if not done:  # the epoch's data is exhausted
            epoch += 1
            if valid_set is not None and not run.log.valid_every:
                log(validate(engine, valid_set, run, rank, world))
    if bar is not None:
        bar.close()
    if writer is not None:
        writer.close()
        loss_file.close()
    summary = throughput.summary(step)
    if rank == 0:
        if summary is not None:
            (run_dir / "throughput.json").write_text(json.dumps(summary, indent=2) + "\n")
            print(f"throughput after warm-up: {summary['samples_per_sec']:.1f} samples/s, "
                  f"{summary['data_wait_fraction']:.1%} of the time waiting for data", flush=True)
        print(f"done: {step} steps; checkpoints in {ckpt_dir}, TensorBoard logs in {run_dir / 'tensorboard'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
