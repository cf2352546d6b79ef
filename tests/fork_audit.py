"""Run a job (``pretrain`` or ``finetune``, then its arguments) recording every ``os.fork()`` of the
rank's process and the parent of every loader worker - FOR TESTS ONLY.

Into $FORK_AUDIT_DIR: ``fork-<pid>.txt`` (one line per fork of a rank: its OS threads then and
its Python threads' names), ``rank-<pid>.txt`` (a rank that ran to its end), ``worker-<pid>.txt``
(a loader worker: its parent's pid). It is never used by the shipped code path.
"""

import os
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from launcher import processes  # noqa: E402

AUDIT = Path(os.environ.get("FORK_AUDIT_DIR", "."))


def _before_fork() -> None:
    threads = len(os.listdir("/proc/self/task"))
    names = [t.name for t in threading.enumerate()]
    with open(AUDIT / f"fork-{os.getpid()}.txt", "a") as f:
        f.write(f"{threads} {names}\n")


def _worker_started(worker_id: int, rank_pid: int) -> None:
    (AUDIT / f"worker-{os.getpid()}.txt").write_text(f"{os.getppid()}\n")
    _shipped_worker_started(worker_id, rank_pid)


_shipped_worker_started = processes._worker_started

if __name__ == "__main__":  # not in the fork server, which imports this file as __mp_main__
    os.register_at_fork(before=_before_fork)
    processes._worker_started = _worker_started
    job = next(a for a in sys.argv[1:] if a in ("pretrain", "finetune"))  # after deepspeed's --local_rank=N
    sys.argv.remove(job)
    if job == "pretrain":
        from launcher.pretrain import main
    else:
        from launcher.finetune import main
    status = processes.run_job(main, f"lxmert {job}")
    (AUDIT / f"rank-{os.getpid()}.txt").write_text(f"{status}\n")
    sys.exit(status)
