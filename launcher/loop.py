"""The training loop shared by pre-training and fine-tuning: engine, resume, steps, logging,
validation, checkpoints (periodic, on preemption, and the best by a validation metric).

A job (``launcher/pretrain.py``, ``launcher/finetune.py``) builds its data, model and
evaluation and hands them over as a :class:`Job`; everything else happens here once.
"""

from __future__ import annotations

import json
import signal
import time
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml

from launcher import checkpoint as ckpt
from launcher.config import reconcile_batch
from launcher.engine import CompileWatch, build_engine, deepspeed_config, precision_of
from launcher.processes import beat, close_loader, data_loader, watch
from model.pretrained import atomic_write


class Stopper:
    """Turns SIGTERM / SIGUSR1 (preemption) into "checkpoint within two steps, then exit" on every rank.

    :meth:`poll` runs once a step without waiting for the device or for the other ranks: each
    step starts an all-reduce of the local flag on the CPU (over gloo) and reads the previous
    step's, so every rank learns of a signal at the same step, one step after it arrived."""

    def __init__(self) -> None:
        self.requested = False
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._handle)
        # a CPU group: the default one when it is gloo, else a gloo group beside NCCL
        self._group = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
        self._flag, self._work = np.zeros(1), None  # read as numpy: never a tensor sync

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def poll(self) -> bool:
        stop = False
        if self._work is not None:
            self._work.wait()
            stop = bool(self._flag[0] > 0)
        self._flag = np.array([1.0 if self.requested else 0.0])
        self._work = dist.all_reduce(torch.from_numpy(self._flag), group=self._group, async_op=True)
        return stop

    def close(self) -> None:
        """At the end of training (not on an error: a rank that failed never joins the last poll)."""
        if self._work is not None:
            self._work.wait()
            self._work = None


class LossFile:
    """``losses.txt`` (rank 0): each optimizer step's loss (of its last micro batch), kept on the
    device and written at log points, before checkpoints and at the end: one host sync per log
    point instead of one per step."""

    def __init__(self, path: Path) -> None:
        self.file = open(path, "a")
        self.pending: list[tuple[int, torch.Tensor]] = []

    def add(self, step: int, loss: torch.Tensor) -> None:
        # a copy on the device: a CUDA graph's replay overwrites its outputs (compile_mode=reduce-overhead)
        self.pending.append((step, loss.detach().clone()))
        if len(self.pending) >= 1000:  # bounded, whatever log.every is
            self.flush()

    def flush(self) -> float | None:
        """Write the pending steps; the last one's loss (None if nothing was pending)."""
        if not self.pending:
            return None
        values = torch.stack([loss.float() for _, loss in self.pending]).tolist()
        self.file.write("".join(f"{step} {value!r}\n" for (step, _), value in zip(self.pending, values)))
        self.file.flush()
        self.pending = []
        return values[-1]

    def close(self, exc_type=None, exc=None, tb=None) -> None:
        """An exit callback: the pending losses are written only when training did not fail (after
        an error, reading the device could raise again and hide the first error)."""
        try:
            if exc_type is None:
                self.flush()
        finally:
            self.file.close()


def loader(dataset, sampler, run, batch_size: int, collate: Callable, drop_last: bool = True,
           persistent: bool = False):
    """``persistent``: the workers live across epochs (each ``iter()`` reads the sampler afresh).
    Workers come from the fork server (``launcher.processes``): a rank never forks."""
    workers = run.data.num_workers
    # The loader draws its workers' base seed from its own generator, not the global one, so that
    # starting a loader (as a resumed run does mid-epoch) leaves the dropout random stream untouched.
    # (Examples are seeded by (seed, epoch, index) anyway.)
    return data_loader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                       generator=torch.Generator().manual_seed(run.train.seed),
                       collate_fn=collate, pin_memory=torch.cuda.is_available(),
                       persistent_workers=persistent and workers > 0,
                       prefetch_factor=4 if workers else None, drop_last=drop_last)


class Meter:
    """Sums of the named losses (and the total) between log points, averaged across ranks when read;
    each loss over the steps that computed it on at least one example (``batch.has_examples()``),
    and absent, not 0, when none did (its objective off, or no example for it).
    ``apart`` gives the seconds spent aside so far (validation, checkpoints: ``Throughput.apart_total``),
    which samples/s and the data-wait share leave out."""

    def __init__(self, device, names: tuple[str, ...] = (), apart: Callable[[], float] = lambda: 0.0) -> None:
        self.device, self.names, self.apart = device, names, apart
        self.reset()

    def reset(self) -> None:
        # named losses, the steps that computed each, total, count: summed on the device, so that a
        # step never waits for the GPU
        self.sums = torch.zeros(2 * len(self.names) + 2, dtype=torch.float64, device=self.device)
        self.samples = 0
        self.data_wait = 0.0  # seconds spent waiting for the next batch
        self.start, self.apart_at_start = time.perf_counter(), self.apart()

    def add(self, out, batch) -> None:
        zero, one = torch.zeros((), device=self.device), torch.ones((), device=self.device)
        losses = getattr(out, "losses", None) or {}
        has = batch.has_examples()
        # computed by the model, and on at least one example of the batch
        present = [(has[name].double() if name in has else one) if name in losses else zero for name in self.names]
        values = [losses[name].detach().double() * p if name in losses else zero for name, p in zip(self.names, present)]
        self.sums += torch.stack([*values, *present, out.loss.detach().double(), one]).double()
        self.samples += len(batch)

    def read(self) -> dict[str, float]:
        sums = self.sums.clone()
        dist.all_reduce(sums)
        n, k = sums[-1].item(), len(self.names)
        values = {f"loss/{name}": sums[i].item() / sums[k + i].item() for i, name in enumerate(self.names) if sums[k + i] > 0}
        if n > 0:  # no batch (log.valid_batches=0): no total either
            values["loss/total"] = sums[-2].item() / n
        samples = torch.tensor([float(self.samples)], device=self.device)
        dist.all_reduce(samples)
        elapsed = max(time.perf_counter() - self.start - (self.apart() - self.apart_at_start), 1e-9)
        values["samples_per_sec"] = samples.item() / elapsed
        values["data_wait_fraction"] = self.data_wait / elapsed
        return values


class Throughput:
    """Training samples/s after the first steps (warm-up), and the share of that time spent
    waiting for data. The clock runs only while the job trains: validation passes and checkpoint
    writes after the warm-up are timed apart (``aside``) and reported as ``eval_seconds`` and
    ``checkpoint_seconds``; ``apart_total`` counts them from the job's start (for :class:`Meter`).
    On a GPU the queued work is waited for whenever this clock is read, so that a step's GPU work
    is not counted in the validation or checkpoint after it. (The data wait is host time: the
    time ``next()`` on the loader took.)"""

    def __init__(self, global_batch: int, clock: Callable[[], float] = time.perf_counter) -> None:
        self.global_batch, self.clock = global_batch, clock
        self.begin, self.first_step, self.wait = None, 0, 0.0
        self.apart = {"eval": 0.0, "checkpoint": 0.0}
        self.apart_total = 0.0
        self.depth = 0  # nested ``aside`` blocks: only the outermost is timed

    def _now(self) -> float:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return self.clock()

    def start(self, step: int) -> None:
        self.begin, self.first_step, self.wait = self._now(), step, 0.0
        self.apart = dict.fromkeys(self.apart, 0.0)

    @contextmanager
    def aside(self, kind: str):
        """Time the enclosed work as ``kind`` ("eval" or "checkpoint"), not as training."""
        outermost = self.depth == 0
        began = self._now() if outermost else 0.0
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            if outermost:
                spent = self._now() - began
                self.apart_total += spent
                if self.begin is not None:  # after the warm-up
                    self.apart[kind] += spent

    def summary(self, step: int) -> dict | None:
        if self.begin is None or step <= self.first_step:
            return None
        seconds = self._now() - self.begin - sum(self.apart.values())
        out = {"steps": step - self.first_step, "seconds": seconds,
               "samples_per_sec": (step - self.first_step) * self.global_batch / seconds,
               "data_wait_fraction": self.wait / seconds,
               **{f"{kind}_seconds": value for kind, value in self.apart.items()}}
        if torch.cuda.is_available():
            out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        return out


@dataclass
class Job:
    """What a training run is made of; pre-training and fine-tuning differ only here."""

    name: str  # the progress bar's label
    run: Any  # RunConfig or FinetuneConfig: run_dir, deepspeed, data, train, log, checkpoint sections
    rank: int
    world: int
    model: torch.nn.Module
    model_config: Any  # LxmertConfig: a resumed checkpoint must hold the same
    train_set: Any
    sampler: Any  # ResumableSampler
    collate: Callable
    loss_names: tuple[str, ...] = ()  # entries of ``out.losses`` logged besides the total
    evaluate: Callable[[Any], dict[str, float]] | None = None  # engine -> scalars, after each epoch / valid_every
    best_metric: str | None = None  # a key of evaluate's result: keep the checkpoint "best" where it is highest
    client: dict = field(default_factory=dict)  # extra client state saved with every checkpoint
    resolved: dict = field(default_factory=dict)  # extra entries of config.yaml's "resolved" section


@dataclass
class Outcome:
    step: int
    stopped: bool  # by a preemption signal (a checkpoint was saved)
    best: float | None
    ckpt_dir: Path


def steps_per_epoch(job: Job) -> int:
    run, micro = job.run, job.run.train.micro_batch_size
    steps = (len(job.sampler) // micro) // (run.train.global_batch_size // (micro * job.world))
    if steps == 0:
        raise ValueError(f"one epoch of {len(job.sampler)} examples per rank is less than one global batch "
                         f"({run.train.global_batch_size}); lower train.global_batch_size")
    return steps


def train(job: Job, resume: str | None = "auto") -> Outcome:
    """Build the DeepSpeed engine, resume if asked, and train to the end of the schedule."""
    run, rank, world = job.run, job.rank, job.world
    run_dir = Path(run.run_dir)
    ckpt_dir = run_dir / "checkpoints"
    resume_tag = ckpt.resolve_resume(ckpt_dir, resume)
    if resume_tag is None and resume in (None, "none") and (ckpt.complete_tags(ckpt_dir) or ckpt.best_tag(ckpt_dir)):
        raise ValueError(f"{ckpt_dir} holds checkpoints of an earlier run: resume it (--resume auto), or start "
                         f"afresh in another run_dir")
    micro = run.train.micro_batch_size
    reconcile_batch(run.train.global_batch_size, micro, world)  # an inconsistent batch stops here, with its numbers
    total_steps = run.train.epochs * steps_per_epoch(job)
    if run.train.max_steps:
        total_steps = min(total_steps, run.train.max_steps)
    ds_config = deepspeed_config(run, world, total_steps)
    if resume_tag is not None and resume_tag.endswith(ckpt.UNIVERSAL):
        ds_config["checkpoint"] = {**ds_config.get("checkpoint", {}), "load_universal": True}
    engine = build_engine(job.model, ds_config, run.train.weight_decay,
                          compile=run.train.compile_mode if run.train.compile else None)

    step, epoch, best = 0, 0, None
    if resume_tag is not None:
        ckpt.check_uniform_precision(ckpt_dir / resume_tag)
        _, client = engine.load_checkpoint(str(ckpt_dir), tag=resume_tag)
        if client is None:
            raise ValueError(f"{ckpt_dir / resume_tag}: DeepSpeed could not load it (another world size? convert it "
                             f"with `lxmert universal {ckpt_dir} --tag {resume_tag}` and resume from the _universal tag)")
        if client["model_config"] != job.model_config.to_dict():
            raise ValueError(f"{ckpt_dir / resume_tag}: checkpoint of another model configuration")
        step, epoch, best = client["step"], client["epoch"], client.get("best")
        job.sampler.load_state_dict(client["sampler"])
        ckpt.set_rng_state(client["rng"][rank] if rank < len(client["rng"]) else client["rng"][0])
        if rank == 0:
            print(f"resumed from {ckpt_dir / resume_tag} at step {step}, epoch {epoch}", flush=True)

    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        resolved = {**run.to_dict(), "resolved": {"world_size": world, "gradient_accumulation_steps":
                    ds_config["gradient_accumulation_steps"], "total_steps": total_steps, "precision": precision_of(ds_config),
                    "model": job.model_config.to_dict(), **job.resolved}}
        text = yaml.safe_dump(resolved, sort_keys=False)
        atomic_write(run_dir / "config.yaml", lambda path: Path(path).write_text(text))
    with ExitStack() as resources:  # closed on every way out: the end, a signal, an error
        return _train(job, engine, ds_config, total_steps, step, epoch, best, resources)


def _train(job: Job, engine, ds_config: dict, total_steps: int, step: int, epoch: int, best: float | None,
           resources: ExitStack) -> Outcome:
    """The steps, validations and checkpoints from ``step`` to the end of the schedule (or a stop
    signal); what it opens (writer, loss file, progress bar, loader workers) goes on ``resources``."""
    run, rank, world, sampler = job.run, job.rank, job.world, job.sampler
    run_dir = Path(run.run_dir)
    ckpt_dir = run_dir / "checkpoints"
    precision = precision_of(ds_config)
    micro = run.train.micro_batch_size
    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        writer = resources.enter_context(SummaryWriter(str(run_dir / "tensorboard")))
    stopper = Stopper()
    compiled = None
    if run.train.compile:  # compiled at the first step; validation runs eager (no second graph)
        compiled = CompileWatch()
        resources.callback(compiled.close)
    throughput = Throughput(run.train.global_batch_size)
    meter = Meter(engine.device, job.loss_names, apart=lambda: throughput.apart_total)
    loss_file = LossFile(run_dir / "losses.txt") if rank == 0 else None  # step, loss of rank 0's micro batch
    if loss_file is not None:
        resources.push(loss_file.close)
    bar = None
    if rank == 0 and run.log.progress:
        from tqdm import tqdm

        bar = resources.enter_context(tqdm(total=total_steps, initial=step, unit="step", desc=job.name,
                                           dynamic_ncols=True))

    def client_state() -> dict:
        rngs = [None] * world
        dist.all_gather_object(rngs, ckpt.rng_state())
        return {"step": step, "epoch": epoch, "best": best, "sampler": sampler.state_dict(), "rng": rngs,
                "model_config": job.model_config.to_dict(), "run_config": run.to_dict(),
                "universal_checkpoint_info": {}, **job.client}

    def log(values: dict[str, float]) -> None:
        if writer is not None:
            for key, value in values.items():
                writer.add_scalar(key, value, step)

    def evaluate() -> None:
        nonlocal best
        with throughput.aside("eval"), (torch.compiler.set_stance("force_eager") if compiled else nullcontext()):
            values = job.evaluate(engine)
        engine.train()
        log(values)
        if rank == 0:  # the metrics; losses are in TensorBoard
            shown = ", ".join(f"{k} {v:.4f}" for k, v in values.items()
                              if k.split("/")[-1] not in (*job.loss_names, "total"))
            (bar.write if bar is not None else print)(f"step {step}: {shown}")
        if job.best_metric is not None and (best is None or values[job.best_metric] > best):
            best = values[job.best_metric]
            with throughput.aside("checkpoint"):
                ckpt.save(engine, ckpt_dir, step, client_state(), run.checkpoint.keep, tag=ckpt.BEST)

    accumulation = ds_config["gradient_accumulation_steps"]
    warm_up_end = step + 3  # throughput is measured from here
    done = step >= total_steps
    stopped = False
    train_loader = loader(job.train_set, sampler, run, micro, job.collate, persistent=True)  # no worker start-up per epoch
    resources.callback(close_loader, train_loader)
    watch(run.log.hang_dump_seconds)  # from here on, a rank that stops making progress prints its stacks
    while not done:
        if sampler.epoch != epoch:
            sampler.set_epoch(epoch)
        batches = iter(train_loader)
        left = len(sampler) // micro  # micro batches this epoch still holds
        while True:
            waited = time.perf_counter()
            batch = next(batches, None)
            meter.data_wait += time.perf_counter() - waited
            throughput.wait += time.perf_counter() - waited
            if batch is None:
                break
            left -= 1
            batch = batch.to(engine.device, non_blocking=True)
            out = engine(**batch.model_inputs())
            engine.backward(out.loss)
            boundary = engine.is_gradient_accumulation_boundary()
            engine.step()
            sampler.advance(micro)
            meter.add(out, batch)
            beat()
            if not boundary:
                continue
            step += 1
            epoch_end = left < accumulation  # no further optimizer step in this epoch
            if loss_file is not None:
                loss_file.add(step, out.loss)
            if bar is not None:
                bar.update(1)
            if step % run.log.every == 0 or step == total_steps:
                last = loss_file.flush() if loss_file is not None else None
                if bar is not None and last is not None:
                    bar.set_postfix(loss=f"{last:.3f}")
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
            # evaluate before this step's checkpoint, so that a checkpoint always holds the best
            # metric up to its step and a resumed run never evaluates the same weights twice
            due = step % run.log.valid_every == 0 if run.log.valid_every else epoch_end
            if job.evaluate is not None and (due or step == total_steps):
                evaluate()
            stop = stopper.poll()
            if step % run.checkpoint.every == 0 or step == total_steps or stop:
                if loss_file is not None:  # the losses up to a checkpoint are on disk with it
                    loss_file.flush()
                with throughput.aside("checkpoint"):
                    ckpt.save(engine, ckpt_dir, step, client_state(), run.checkpoint.keep)
            if stop:
                if rank == 0:
                    print(f"stopped by signal at step {step}; checkpoint saved", flush=True)
                done = stopped = True
                break
            if step == warm_up_end:
                throughput.start(step)
            if step >= total_steps:
                done = True
                break
        if not done:  # the epoch's data is exhausted
            epoch += 1
    stopper.close()
    summary = throughput.summary(step)
    if bar is not None:
        bar.close()
    if rank == 0 and not stopped:
        if summary is not None:
            atomic_write(run_dir / "throughput.json", lambda path: Path(path).write_text(json.dumps(summary, indent=2) + "\n"))
            print(f"throughput after warm-up: {summary['samples_per_sec']:.1f} samples/s, "
                  f"{summary['data_wait_fraction']:.1%} of the training time waiting for data (apart from it: "
                  f"validation {summary['eval_seconds']:.1f} s, checkpoints {summary['checkpoint_seconds']:.1f} s)",
                  flush=True)
        if compiled is not None:
            report = compiled.summary()
            atomic_write(run_dir / "compile.json", lambda path: Path(path).write_text(json.dumps(report, indent=2) + "\n"))
            recompiled = report["recompilations"] if report["recompilations"] is not None else "? (TORCH_LOGS without recompiles)"
            print(f"torch.compile: {report['graphs']} graph(s), {report['graph_breaks']} graph break(s), "
                  f"{recompiled} recompilation(s) (reasons in {run_dir / 'compile.json'})", flush=True)
        print(f"done: {step} steps; checkpoints in {ckpt_dir}, TensorBoard logs in {run_dir / 'tensorboard'}", flush=True)
    return Outcome(step=step, stopped=stopped, best=best, ckpt_dir=ckpt_dir)
