"""Loaders started while other threads run - FOR TESTS ONLY (tests/test_processes.py).

    python tests/loader_stress.py passes N [LIB]   # N validation passes, each a fresh loader
    python tests/loader_stress.py stuck MARKER     # a job whose loader worker never returns a batch

``passes``: a lock held by another thread at the instant of a ``fork()`` stays held for ever in
the child. Here a thread holds a lock that the dataset takes, nearly all the time, while a
persistent training loader and a TensorBoard writer are alive, as in a training job: a worker
forked from this process waits on that lock for ever and the pass never ends. With LIB (built
from tests/enter_python.c) two C threads also enter Python over and over, as a C++ library's
threads do: a fork then hangs now and then inside ``os.fork()`` itself, on CPython's own
HEAD_LOCK (gh-112275, Python < 3.12). Workers that come from the fork server start clean.
"""

import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from launcher.loop import loader  # noqa: E402
from launcher.processes import run_job  # noqa: E402

HELD = threading.Lock()
RUN = SimpleNamespace(data=SimpleNamespace(num_workers=1), train=SimpleNamespace(seed=0))


class Locked(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 32

    def __getitem__(self, i: int) -> torch.Tensor:
        with HELD:
            return torch.tensor([i])


class Stuck(Locked):
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __getitem__(self, i: int) -> torch.Tensor:
        Path(self.marker).touch()  # the test's cue: a worker is in here from now on
        time.sleep(3600)


def hold() -> None:
    while True:
        with HELD:
            time.sleep(0.05)


def passes(n: int, lib: str | None) -> int:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(tempfile.mkdtemp())  # its writer thread runs from here on
    training = loader(Locked(), list(range(32)), RUN, 4, torch.utils.data.default_collate, persistent=True)
    next(iter(training))  # the training loader's workers and queue threads are alive
    threading.Thread(target=hold, daemon=True).start()
    if lib is not None:
        import ctypes

        assert ctypes.PyDLL(lib).start_threads(2) == 0
    for p in range(n):
        writer.add_scalar("pass", p, p)
        batches = loader(Locked(), list(range(32)), RUN, 8, torch.utils.data.default_collate)  # a fresh loader
        assert torch.cat(list(batches)).flatten().tolist() == list(range(32))
        print(f"pass {p + 1} of {n}", flush=True)
    writer.close()
    return 0


def stuck(marker: str) -> int:
    print("started", flush=True)
    next(iter(loader(Stuck(marker), list(range(32)), RUN, 4, torch.utils.data.default_collate)))
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "passes":
        job = lambda: passes(int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None)  # noqa: E731
    else:
        job = lambda: stuck(sys.argv[2])  # noqa: E731
    sys.exit(run_job(job, "loader_stress"))
