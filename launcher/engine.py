"""Processes and DeepSpeed: distributed start-up, the DeepSpeed config of a run, the engine."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .config import RunConfig, reconcile_batch


def init_distributed() -> tuple[int, int]:
    """Join the process group, whichever launcher started us (deepspeed, torchrun, Slurm, mpirun
    through mpi4py, or a plain process). Returns (rank, world size)."""
    import deepspeed

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if "RANK" not in os.environ and "SLURM_PROCID" in os.environ and "SLURM_NTASKS" in os.environ:
        os.environ.setdefault("RANK", os.environ["SLURM_PROCID"])
        os.environ.setdefault("WORLD_SIZE", os.environ["SLURM_NTASKS"])
        os.environ.setdefault("LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0"))
    single = not any(k in os.environ for k in ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK"))
    if single:  # a plain process: a one-rank group on a free local port
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    # mpirun: DeepSpeed's MPI discovery sets MASTER_PORT to its argument, 29500 unless told: the
    # user's MASTER_PORT (`mpirun -x MASTER_PORT=...`) is that argument, so two jobs can share a node
    port = int(os.environ.get("MASTER_PORT", 29500))
    _say_if_op_build_is_locked()
    keep_freed_memory()
    deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=not single, distributed_port=port, verbose=False)
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    _unlink_shm_workspace(rank, world)
    share_cpu_threads(rank, world)
    return rank, world


def share_cpu_threads(rank: int, world: int) -> int | None:
    """Give this rank its share of the node's CPUs as torch's intra-op threads, unless the user
    chose (``OMP_NUM_THREADS``). torch starts every process with one thread per core, so N ranks on
    one node run N times as many threads as there are cores, spinning against each other: torchrun
    sets 1 for that reason, DeepSpeed's launcher (without ``--bind_cores_to_rank``), mpirun and
    Slurm nothing. Measured (2 cores, 2 ranks, the small preset's pre-training): 450 samples/s
    with a thread a rank against 365 with two. Returns the threads set (None: left as they were)."""
    if world < 2 or "OMP_NUM_THREADS" in os.environ:
        return None
    import socket

    here = socket.gethostname()
    mine = frozenset(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else frozenset(range(os.cpu_count() or 1))
    ranks: list = [None] * world
    torch.distributed.all_gather_object(ranks, (here, mine))
    # the ranks of this node whose CPUs overlap ours (mpirun may have bound each rank to its own cores)
    sharing = sum(host == here and bool(cpus & mine) for host, cpus in ranks)
    if sharing < 2:
        return None
    threads = max(1, len(mine) // sharing)
    torch.set_num_threads(threads)
    if rank == 0:
        print(f"CPU threads: {torch.get_num_threads()} a rank ({sharing} ranks share {len(mine)} CPUs; "
              f"OMP_NUM_THREADS chooses)", flush=True)
    return threads


def keep_freed_memory() -> bool:
    """On the CPU: glibc's malloc keeps large freed blocks for reuse instead of returning them to
    the system (no mmap for blocks under 2 GiB, no trimming). A ZeRO step allocates and frees
    gradient-sized buffers (the flat fp32 gradient, the norm's fp32 copies: 0.9 GiB each for the
    base model); returned to the system, each is page-faulted in again at every step, which cost
    the base model's bf16 ZeRO-2 step half its time (bench/pretrain_throughput.py). The process's
    resident memory stays at its peak, as torch's GPU caching allocator does. True if applied."""
    if torch.cuda.is_available():
        return False
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    no_mmap = mallopt(m_mmap_threshold, ctypes.c_int(2**31 - 1))
    no_trim = mallopt(m_trim_threshold, ctypes.c_int(2**31 - 1))
    return bool(no_mmap and no_trim)


#: The op DeepSpeed JIT-builds at the first CPU ``init_distributed``, under torch's extension lock.
SHM_OP = "deepspeed_shm_comm"


def op_build_lock_message(build_dir: Path) -> str | None:
    """The one-line advice when torch's build lock of DeepSpeed's CPU op is held (None when free).
    torch waits for that file without end: a build killed midway (Ctrl-C, a job timeout) leaves it
    behind, and every later job then waits for ever without a word."""
    lock = Path(build_dir) / "lock"
    if not lock.exists():
        return None
    import time

    age = time.time() - lock.stat().st_mtime
    return (f"{lock} is held (for {age:.0f} s): another job is building DeepSpeed's {SHM_OP} op, or a killed build "
            f"left the lock behind; if no other job is building it, remove that file, or this job waits for ever")


def _say_if_op_build_is_locked() -> None:
    """On the CPU, before DeepSpeed builds or loads its op: the advice of :func:`op_build_lock_message`
    on stderr if the lock is held (checked once, no thread: start-up forks nothing while threads run)."""
    if torch.cuda.is_available():
        return
    import sys

    try:
        from torch.utils.cpp_extension import _get_build_directory

        message = op_build_lock_message(Path(_get_build_directory(SHM_OP, verbose=False)))
    except Exception:  # torch's private helper moved: no advice, no harm
        return
    if message:
        print(f"rank {os.environ.get('RANK', '0')}: {message}", file=sys.stderr, flush=True)


def _unlink_shm_workspace(rank: int, world: int) -> None:
    """DeepSpeed's CPU all-reduce (all ranks on one machine) gives each rank a 66 MB shared-memory
    segment that its peers open by name, and never unlinks it: every job left its ranks' segments in
    /dev/shm (RAM) for good. Once every rank has opened its peers' (after init, hence the barrier),
    each unlinks its own name; the mappings live on until the process ends, however it ends."""
    if world < 2 or os.environ.get("LOCAL_SIZE") != str(world):  # DeepSpeed only sets one up then
        return
    name = (f"/dev/shm/deepspeed_allreduce_buffer_{os.getuid()}_{os.environ.get('MASTER_ADDR', '')}_"
            f"{os.environ.get('MASTER_PORT', '')}_{rank}")
    torch.distributed.barrier()
    try:
        os.unlink(name)
    except FileNotFoundError:
        pass


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def precision_of(ds_config: dict) -> str:
    if ds_config.get("fp16", {}).get("enabled"):
        return "fp16"
    if ds_config.get("bf16", {}).get("enabled"):
        return "bf16"
    return "fp32"


def deepspeed_config(run: RunConfig, world_size: int, total_steps: int) -> dict:
    """The run's DeepSpeed config: its JSON file with batch sizes, optimizer (AdamW, no hand-written
    code), the paper's schedule (linear warmup then linear decay) and clipping filled in."""
    path = Path(run.deepspeed)
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable DeepSpeed config ({exc})") from None
    t = run.train
    accumulation = reconcile_batch(t.global_batch_size, t.micro_batch_size, world_size)
    config.update(
        train_batch_size=t.global_batch_size, train_micro_batch_size_per_gpu=t.micro_batch_size,
        gradient_accumulation_steps=accumulation, gradient_clipping=t.gradient_clipping,
        steps_per_print=config.get("steps_per_print", 10**9),
    )
    # torch's AdamW, fused (one kernel over all tensors) where torch has it: 1.36x the whole step
    # of the base model on CPU against the default implementation (bench/pretrain_throughput.py)
    fused = torch.cuda.is_available() or tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 4)
    config["optimizer"] = {"type": "AdamW", "params": {"lr": t.lr, "betas": [0.9, 0.999], "eps": 1e-6,
                                                      "weight_decay": t.weight_decay, "torch_adam": True, "fused": fused}}
    config["scheduler"] = {"type": "WarmupDecayLR", "params": {
        "total_num_steps": max(1, total_steps), "warmup_min_lr": 0.0, "warmup_max_lr": t.lr,
        "warmup_num_steps": max(1, int(t.warmup_ratio * total_steps)), "warmup_type": "linear"}}
    return config


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only: not on biases and LayerNorm weights (the original recipe)."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_engine(model: torch.nn.Module, config: dict, weight_decay: float, compile: str | None = None):
    """The DeepSpeed engine; with ``compile`` (torch.compile's mode), its module compiled in place by
    DeepSpeed's ``engine.compile`` (``nn.Module.compile``: the state dict's names and the ZeRO hooks
    are unchanged, so checkpoints are the eager run's) with inductor."""
    import deepspeed

    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=parameter_groups(model, weight_decay),
                                           config=config)
    if compile:
        engine.compile(backend="inductor", compile_kwargs={} if compile == "default" else {"mode": compile})
    return engine


class CompileWatch:
    """What ``torch.compile`` did in this process: graphs captured, graph breaks and recompilations,
    each with its reason (recompilations are also logged by torch as they happen)."""

    LOGGER = "torch._dynamo.guards.__recompiles"  # torch's "recompiles" log artifact

    def __init__(self) -> None:
        import logging

        from torch._logging._internal import log_state

        if not os.environ.get("TORCH_LOGS"):  # set_logs would do nothing then (and would reset the user's settings)
            torch._logging.set_logs(recompiles=True)
        #: whether torch logs recompilations (TORCH_LOGS set without "recompiles": they are not counted)
        self.counting = log_state.is_artifact_enabled("recompiles")
        self.recompiles: list[str] = []
        watch = self

        class _Count(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                watch.recompiles.append(record.getMessage())

        self._handler = _Count()
        logging.getLogger(self.LOGGER).addHandler(self._handler)

    def summary(self) -> dict:
        from torch._dynamo.utils import counters

        breaks = counters["graph_break"]
        return {"graphs": counters["stats"]["unique_graphs"], "graph_breaks": sum(breaks.values()),
                "graph_break_reasons": [reason.split("\n")[0] for reason in breaks],
                "recompilations": len(self.recompiles) if self.counting else None,
                "recompilation_reasons": list(self.recompiles)}

    def close(self) -> None:
        import logging

        logging.getLogger(self.LOGGER).removeHandler(self._handler)
