"""What a job's processes start and how they end: loader workers from a fork server, stack dumps
when a rank stops making progress, and the release of workers and the process group at exit.

Fork safety: a rank runs other threads from its start (gloo's and DeepSpeed's, TensorBoard's writer,
the loaders' queue feeders, OpenMP's and OpenBLAS's pools). A lock that one of them holds at the
instant of a ``fork()`` stays locked for ever in the child (CPython gh-112275 is one such lock,
inside ``os.fork()`` itself on Python < 3.12). So a rank never forks: every DataLoader takes its
workers from multiprocessing's fork server, a fresh interpreter started once (by fork + exec, which
runs no Python in the child) that has no threads of ours and forks the workers on request.
"""

from __future__ import annotations

import faulthandler
import functools
import multiprocessing
import os
import select
import signal
import sys
import threading
import time
import weakref
from collections.abc import Callable

import torch

# Imported once by the fork server, so that a worker starts in milliseconds: it is forked with
# torch and the datasets' modules already loaded and unpickles only the dataset it is given.
PRELOAD = ["__main__", "torch", "data.collate", "data.pretraining", "data.tasks"]
DUMP_SIGNAL = signal.SIGUSR2  # `kill -USR2 PID` prints every thread's stack (ranks and loader workers)

_loaders: weakref.WeakSet = weakref.WeakSet()  # every DataLoader made here, shut down by ``release``


def worker_context() -> multiprocessing.context.BaseContext:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)  # no effect once the server runs: one server per process
    return ctx


def _worker_started(worker_id: int, rank_pid: int) -> None:
    faulthandler.register(DUMP_SIGNAL, all_threads=True, chain=False)
    threading.Thread(target=_exit_with, args=(rank_pid,), name="exit-with-rank", daemon=True).start()


def _exit_with(pid: int) -> None:
    """End this worker when process ``pid`` (its rank) ends. torch's workers watch their parent,
    which here is the fork server; and the fork server lives while any worker does: after a rank
    is killed, both would outlive it for ever."""
    try:
        select.select([os.pidfd_open(pid)], [], [])  # readable once the process has ended
    except (AttributeError, OSError):  # no pidfd (kernel < 5.3), or the rank is gone already
        while os.path.exists(f"/proc/{pid}"):
            time.sleep(1.0)
    os._exit(1)


def data_loader(dataset, **kwargs) -> torch.utils.data.DataLoader:
    """``torch.utils.data.DataLoader(dataset, **kwargs)`` whose workers (if any) come from the
    fork server; ``release`` shuts their workers down."""
    if kwargs.get("num_workers", 0) > 0:
        kwargs.update(multiprocessing_context=worker_context(),
                      worker_init_fn=functools.partial(_worker_started, rank_pid=os.getpid()))
    made = torch.utils.data.DataLoader(dataset, **kwargs)
    _loaders.add(made)
    return made


def close_loader(made: torch.utils.data.DataLoader) -> None:
    """Stop a loader's workers now (persistent ones otherwise live until the process exits)."""
    iterator = getattr(made, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()
    made._iterator = None


_watch_seconds = 0.0


def watch(seconds: float) -> None:
    """From now on, print every thread's stack to stderr when no :func:`beat` came for ``seconds``
    (and again after each further ``seconds``), so that a rank stuck in a collective or waiting on
    a loader shows its line. It only prints: the launcher, or the collective's own timeout, decides
    what happens next. 0 turns it off."""
    global _watch_seconds
    _watch_seconds = seconds
    if seconds > 0:
        beat()
    else:
        faulthandler.cancel_dump_traceback_later()


def beat() -> None:
    """Progress (a step, a validation or prediction batch): the watch's clock starts again."""
    if _watch_seconds > 0:
        faulthandler.dump_traceback_later(_watch_seconds, repeat=True, file=sys.stderr)


def release(clean: bool = True) -> None:
    """Shut down what a job started, in order: loader workers, the watchdog, the process group.
    A C++ thread (gloo's) still running while the interpreter tears down aborts the process
    ("terminate called without an active exception") after the job's work is done. After an
    error (``clean`` false) an NCCL group is left alone: destroying it waits for the other ranks,
    which may be waiting in a collective for this one, and the launcher must see this rank end."""
    for made in list(_loaders):
        close_loader(made)
    watch(0)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and (clean or dist.get_backend() == "gloo"):
        dist.destroy_process_group()


def run_job(main: Callable[[], int], prog: str) -> int:
    """Run a job's ``main`` and release what it started, whatever the outcome. A user error (bad
    configuration, file, checkpoint) is one line on stderr and exit status 2, not a traceback."""
    faulthandler.enable()  # a crash (SIGSEGV, SIGABRT) prints the Python stacks first
    faulthandler.register(DUMP_SIGNAL, all_threads=True, chain=False)
    clean = False
    try:
        status = main()
        clean = True
    except (ValueError, FileNotFoundError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr, flush=True)
        status = 2
    finally:
        release(clean)
    return status
