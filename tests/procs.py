"""Running the jobs from tests: a timeout that shows where every process was stuck.

A job runs in its own process group. On a timeout each of its processes (launcher, ranks, loader
workers, fork server) is sent SIGUSR2 (our jobs and their loader workers print every thread's
stack on it: ``launcher.processes``), given a moment to print, then killed; the test fails with
the output, stacks included.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 600  # seconds a job may take in a test; below pytest-timeout's per-test limit (pyproject.toml)


def env(**extra: str) -> dict:
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
            "HF_HUB_OFFLINE": "1", **extra}


def start(cmd: list[str], environ: dict | None = None, merge: bool = False) -> subprocess.Popen:
    """A job in the background (``merge``: stderr into stdout)."""
    return subprocess.Popen(cmd, cwd=ROOT, env=environ or env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT if merge else subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group: no process of it escapes a kill


def tree(proc: subprocess.Popen) -> list:
    """``proc`` and every process below it (psutil.Process objects)."""
    import psutil

    try:
        top = psutil.Process(proc.pid)
        return [top, *top.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def ended(processes: list, timeout: float) -> list:
    """Those of ``processes`` still running after ``timeout`` seconds (zombies count as ended)."""
    import psutil

    _, alive = psutil.wait_procs(processes, timeout=timeout)
    running = []
    for p in alive:
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                running.append(p)
        except psutil.NoSuchProcess:  # ended meanwhile
            pass
    return running


def group(pgid: int) -> list[int]:
    """The pids of process group ``pgid`` (orphans whose parent died included)."""
    import psutil

    members = []
    for pid in psutil.pids():
        try:
            if os.getpgid(pid) == pgid:
                members.append(pid)
        except (ProcessLookupError, PermissionError):
            pass
    return members


def dump_and_kill(proc: subprocess.Popen, grace: float = 1.0, each: float = 0.5) -> None:
    """SIGUSR2 to every process of ``proc``'s process group, one at a time (stacks to their stderr:
    written at once into one pipe, two processes' stacks interleave line by line), then SIGKILL."""
    members = group(proc.pid)
    if not members:
        return
    for pid in members:
        try:
            os.kill(pid, signal.SIGUSR2)
        except ProcessLookupError:
            continue
        time.sleep(each)
    time.sleep(grace)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def wait(proc: subprocess.Popen, timeout: float = TIMEOUT) -> tuple[str, str]:
    """(stdout, stderr) of a finished ``proc``; past ``timeout`` the test fails with every process's stack."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        dump_and_kill(proc)
        out, err = proc.communicate(timeout=60)
        raise AssertionError(f"{' '.join(map(str, proc.args))[:300]}\ntimed out after {timeout} s; the stacks of "
                             f"its processes:\n{(out or '')[-6000:]}\n{(err or '')[-20000:]}") from None
    return out, err or ""


def run(cmd: list[str], ok: bool = True, timeout: float = TIMEOUT, environ: dict | None = None
        ) -> subprocess.CompletedProcess:
    """``subprocess.run`` for the tests' jobs: a hang fails with stacks; ``ok``: exit status 0 expected."""
    proc = start([str(c) for c in cmd], environ)
    out, err = wait(proc, timeout)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    if ok:
        assert done.returncode == 0, out[-3000:] + err[-3000:]
    return done
