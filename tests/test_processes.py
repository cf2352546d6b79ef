"""Processes that never hang and always end: no rank forks, a hang prints where every process
was, and finished jobs exit 0 through the real launchers, every time."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import procs
import pytest
from conftest import run_args

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_loader_workers_start_clean_while_other_threads_hold_locks(tmp_path):
    """20 validation passes, each with a fresh loader, while a training loader, a TensorBoard
    writer, a thread holding a lock the dataset needs and two C threads entering Python (CPython's
    HEAD_LOCK, gh-112275) are alive. A worker forked from that process inherits a lock held and
    waits for ever: with the previous loaders the first pass hung on the dataset's lock; and in a
    plain fork loop beside those C threads, 19 forks of 200 hung inside os.fork() on HEAD_LOCK
    (Python 3.11.7). Workers from the fork server start clean."""
    import sysconfig

    lib = tmp_path / "enter_python.so"
    procs.run(["gcc", "-O2", "-shared", "-fPIC", f"-I{sysconfig.get_paths()['include']}", ROOT / "tests" / "enter_python.c",
               "-o", lib, "-lpthread"], timeout=120)
    out = procs.run([sys.executable, ROOT / "tests" / "loader_stress.py", "passes", "20", lib], timeout=180)
    assert "pass 20 of 20" in out.stdout


def test_a_timeout_prints_the_stack_of_every_process(tmp_path):
    """The tests' own timeout: the job and its loader worker print where they are, then die. (The
    timeout fires once the worker is stuck: a fresh clone's first fork server takes a while.)"""
    import time

    marker = tmp_path / "stuck"
    proc = procs.start([sys.executable, str(ROOT / "tests" / "loader_stress.py"), "stuck", str(marker)])
    deadline = time.time() + 300
    while not marker.exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)
    job = procs.tree(proc)  # the job, its fork server, its worker
    assert len(job) >= 3, job
    with pytest.raises(AssertionError) as failure:
        procs.wait(proc, timeout=1)
    message = str(failure.value)
    assert "timed out after 1 s" in message
    assert 'loader_stress.py", line' in message and "in stuck" in message  # the job's main thread
    assert "in __getitem__" in message and "_worker_loop" in message  # its loader worker
    assert procs.ended(job, timeout=10) == []  # and then they are gone


@pytest.fixture(scope="module")
def world(launch_world):
    return launch_world


def pretrain_args(world: Path, run_dir: Path, *extra: str) -> list[str]:
    return ["pretrain", *run_args(world, run_dir, "zero2_bf16.json", *extra)]


def nlvr2_args(world: Path, run_dir: Path) -> list[str]:
    w = world / "world"
    return ["finetune", "--config", str(ROOT / "launcher/configs/synth_nlvr2.yaml"), f"run_dir={run_dir}",
            "model.init_from=none", f"data.store={w / 'store'}", f"data.train=[{w / 'nlvr2/train.json'}]",
            f"data.valid=[{w / 'nlvr2/valid.json'}]", f"data.tokenizer={w / 'vocab.txt'}", "log.progress=false",
            "train.epochs=2"]


def audited(launcher: str, args: list[str], audit: Path, port: int, ok: bool = True):
    """A job through a real launcher with ``tests/fork_audit.py`` recording forks and workers."""
    audit.mkdir()
    script = str(ROOT / "tests" / "fork_audit.py")
    cmd = {"deepspeed": [BIN / "deepspeed", "--num_gpus", "2", "--master_port", str(port), script],
           "torchrun": [BIN / "torchrun", "--nproc_per_node", "2", "--master_port", str(port), script],
           "python": [sys.executable, script]}[launcher]
    return procs.run([*cmd, *args], ok=ok, environ=procs.env(FORK_AUDIT_DIR=str(audit)))


def check_audit(audit: Path, ranks: int, workers: bool = True) -> None:
    rank_pids = {int(p.stem.split("-")[1]) for p in audit.glob("rank-*.txt")}
    assert len(rank_pids) == ranks, sorted(audit.iterdir())
    forks = {p.name: p.read_text() for p in audit.glob("fork-*.txt")}
    assert not forks, f"a rank forked (OS threads then, Python threads): {forks}"
    parents = {int(p.read_text()) for p in audit.glob("worker-*.txt")}
    if workers:  # the check above is not vacuous: loader workers ran, none of them a rank's own fork
        assert parents and not parents & rank_pids, (parents, rank_pids)


def test_no_rank_forks_and_jobs_exit_cleanly_every_time(world, tmp_path):
    """Pre-training (validation every 2 steps: 6 passes) and NLVR2 fine-tuning (validation each
    epoch, then predictions with the best model), 2 ranks each through deepspeed and torchrun,
    three times each: no rank ever forks (their loader workers come from the fork server), every
    run exits 0, and no process aborts at exit ("terminate called without an active exception":
    the demo's NLVR2 step was seen to die so after writing its results)."""
    runs = [("deepspeed", pretrain_args(world, tmp_path / "p0", "train.max_steps=12", "log.valid_every=2")),
            ("deepspeed", nlvr2_args(world, tmp_path / "n0")),
            ("torchrun", pretrain_args(world, tmp_path / "p1", "train.max_steps=4")),
            ("torchrun", nlvr2_args(world, tmp_path / "n1")),
            ("deepspeed", pretrain_args(world, tmp_path / "p2", "train.max_steps=4")),
            ("deepspeed", nlvr2_args(world, tmp_path / "n2"))]
    for i, (launcher, args) in enumerate(runs):
        out = audited(launcher, args, tmp_path / f"audit{i}", 30500 + (os.getpid() + 17 * i) % 1000)
        assert "terminate called" not in out.stdout + out.stderr, (launcher, args[0], out.stderr[-3000:])
        check_audit(tmp_path / f"audit{i}", ranks=2)
    assert len((tmp_path / "p0" / "losses.txt").read_text().splitlines()) == 12
    assert (tmp_path / "n2" / "results.json").is_file() and (tmp_path / "n2" / "predictions").is_dir()


def test_user_error_exits_with_its_status(world, tmp_path):
    """A user error found after the process group is up (here: --resume none over an earlier run)
    ends the job with one line and no abort: exit status 2 from each rank that the launcher did
    not stop first."""
    first = audited("deepspeed", pretrain_args(world, tmp_path / "run", "train.max_steps=2"), tmp_path / "a0",
                    30500 + os.getpid() % 1000)
    assert "terminate called" not in first.stderr
    again = audited("deepspeed", [*pretrain_args(world, tmp_path / "run", "train.max_steps=2"), "--resume", "none"],
                    tmp_path / "a1", 30500 + (os.getpid() + 7) % 1000, ok=False)
    assert again.returncode != 0 and "holds checkpoints of an earlier run" in again.stderr
    assert "Traceback" not in again.stderr and "terminate called" not in again.stderr + again.stdout
    statuses = [p.read_text() for p in (tmp_path / "a1").glob("rank-*.txt")]
    assert statuses and set(statuses) == {"2\n"}, statuses


def test_a_rank_without_progress_prints_its_stack(world, tmp_path):
    """log.hang_dump_seconds: a checkpoint write that takes 3 s (slowed by tests/slow_checkpoint.py)
    with a 1 s watch prints the rank's stack, stuck line included, and the job still ends with 0."""
    args = pretrain_args(world, tmp_path / "run", "train.max_steps=2", "log.hang_dump_seconds=1")[1:]
    out = procs.run([sys.executable, ROOT / "tests" / "slow_checkpoint.py", *args],
                    environ=procs.env(SLOW_SAVE_SECONDS="3"))
    assert "Timeout (0:00:01)!" in out.stderr and "in _slow_save" in out.stderr, out.stderr[-3000:]
    assert "done: 2 steps" in out.stdout
    quiet = procs.run([sys.executable, ROOT / "tests" / "slow_checkpoint.py",
                       *pretrain_args(world, tmp_path / "quiet", "train.max_steps=2")[1:]],
                      environ=procs.env(SLOW_SAVE_SECONDS="3"))
    assert "Timeout (" not in quiet.stderr  # the default (900 s) stays silent on a healthy run


def test_a_stale_op_build_lock_is_named_and_removing_it_lets_the_job_go_on(world, tmp_path):
    """torch waits for ever on the build lock of DeepSpeed's CPU op that a killed build leaves behind:
    the job says which file and what to do, and goes on once the file is removed."""
    import shutil
    import subprocess
    import time

    from torch.utils.cpp_extension import _get_build_directory

    from launcher.engine import SHM_OP

    built = Path(_get_build_directory(SHM_OP, verbose=False))
    extensions = tmp_path / "extensions"
    ours = extensions / SHM_OP  # with TORCH_EXTENSIONS_DIR set, torch builds right under it
    if (built / f"{SHM_OP}.so").is_file():  # the op as built (no rebuild); else it is built once the lock is gone
        shutil.copytree(built, ours, ignore=shutil.ignore_patterns("lock"))
    ours.mkdir(parents=True, exist_ok=True)
    (ours / "lock").touch()
    err_file = tmp_path / "stderr.txt"
    with open(err_file, "w") as err:
        proc = subprocess.Popen([sys.executable, str(ROOT / "launcher" / "pretrain.py"),
                                 *run_args(world, tmp_path / "run", "zero2_fp32.json", "train.max_steps=1")],
                                cwd=ROOT, env=procs.env(TORCH_EXTENSIONS_DIR=str(extensions)), stdout=subprocess.DEVNULL,
                                stderr=err, text=True, start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while f"{ours / 'lock'} is held" not in err_file.read_text() and time.monotonic() < deadline:
                assert proc.poll() is None, err_file.read_text()[-3000:]
                time.sleep(0.5)
            assert "remove that file, or this job waits for ever" in err_file.read_text(), err_file.read_text()[-3000:]
            time.sleep(2)
            assert proc.poll() is None  # still waiting on the lock
            (ours / "lock").unlink()
            assert proc.wait(timeout=300) == 0, err_file.read_text()[-3000:]
        finally:
            if proc.poll() is None:
                procs.dump_and_kill(proc)
                proc.wait(timeout=60)
                print(err_file.read_text()[-20000:])
    assert (tmp_path / "run" / "losses.txt").is_file()
