"""bench/grounding.py, the study of issue 12 in one command, on a world and budget small enough
for CI: the numbers it prints are those of the runs it made, its verdicts follow from them, and a
rerun reuses the finished runs. (What the numbers are at the study's own budget: README.)"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import procs
import pytest

ROOT = Path(__file__).resolve().parents[1]


def study(out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "bench" / "grounding.py"), "--dir", str(out), "--images", "40", "--preset", "tiny",
            "--ranks", "1", "--epochs", "1", "--captions-epochs", "1", "--ft-epochs", "1", "--scratch-lrs", "1e-3,3e-3",
            "--valid-every", "5", *extra]


def run_study(out: Path, *extra: str) -> str:
    cmd = study(out, *extra)
    try:
        return procs.run(cmd, timeout=900).stdout
    except AssertionError as e:  # a job's own stacks (on a timeout) and errors are in its log
        logs = sorted(out.glob("*.log"), key=lambda p: p.stat().st_mtime)[-1:]
        raise AssertionError(f"{e}\n" + "\n".join(f"{p}:\n{p.read_text(errors='replace')[-6000:]}" for p in logs)) from None


def tb_last(run_dir: Path, tag: str) -> float:
    from launcher.cli import last_scalars

    return last_scalars(run_dir, (tag,))[tag][1]


def test_the_grounding_study_reports_its_runs_and_judges_the_targets_from_them(tmp_path):
    out = tmp_path / "study"
    shown = run_study(out)
    report = json.loads((out / "grounding.json").read_text())

    # pre-training rows: the last held-out values of each run's TensorBoard log, on the console too
    pre = {r["name"]: r for r in report["pretraining"]}
    assert set(pre) == {"all objectives", "no visual objectives"}
    assert report["captions"]["name"] == "captions only, no visual objectives"
    for row in [*pre.values(), report["captions"]]:
        run_dir = Path(row["run_dir"])
        assert run_dir.parent == out.resolve()
        assert row["matching"] == pytest.approx(tb_last(run_dir, "valid/matched_accuracy"))
        assert row["matching_prior"] == pytest.approx(tb_last(run_dir, "valid/matched_prior_accuracy"))
        assert (Path(row["model"]) / "config.json").is_file()  # consolidated
        line = next(x for x in shown.splitlines() if x.startswith(row["name"]))
        assert f"{100 * row['matching']:.1f}% ({100 * row['matching_prior']:.1f}%)" in line
    assert report["captions"]["qa"] is None and pre["all objectives"]["qa"] is not None  # no questions, no QA accuracy
    # 20% of the pairs mismatched in the study's pre-training, 50% in the captions-only one: their priors
    assert pre["all objectives"]["matching_prior"] > report["captions"]["matching_prior"]

    # VQA rows: each run's results.json (scratch at each lr of the sweep, each pre-trained model)
    vqa = report["vqa"]
    assert [(r["name"], r["lr"]) for r in vqa] == [("scratch", 1e-3), ("scratch", 3e-3), ("all objectives", 1e-3),
                                                  ("no visual objectives", 1e-3)]
    for r in vqa:
        res = json.loads((Path(r["run_dir"]) / "results.json").read_text())
        assert r["accuracy"] == res["valid"]["accuracy"] and r["prior"] == res["prior"]["accuracy"]
        assert r["by_type"] == res["valid_by_type"] and {"what color", "how many", "is there"} <= set(r["by_type"])
        expected_init = "None" if r["name"] == "scratch" else pre[r["name"]]["model"]
        assert str(res["init_from"]) == expected_init

    # by question type: the best scratch run and each pre-trained one, each type's accuracy beside its prior
    best_scratch = max(vqa[:2], key=lambda r: r["accuracy"])
    for kind in best_scratch["by_type"]:
        line = next(x for x in shown.splitlines() if x.startswith(kind + "  "))
        cells = [r["by_type"][kind] for r in (best_scratch, vqa[2], vqa[3])]
        assert line.split()[-6:] == " ".join(f"{c['accuracy']:.1%} ({c['prior']:.1%})" for c in cells).split()

    # the captions-only model on every held-out caption, with its image and with another one, by caption kind
    from data.synth import CAPTION_KINDS

    by_kind = report["captions"]["by_kind"]
    held_out = [c for r in json.loads((out / "world" / "lxmert" / "minival.json").read_text()) for c in r["sentf"]["mscoco"]]
    cells = [(kind, column, cell) for kind, columns in by_kind["kinds"].items() for column, cell in columns.items()]
    assert by_kind["pairs"] == 2 * len(held_out) == sum(c[1] for _, _, c in cells)
    assert sum(c[1] for _, column, c in cells if column == "matched") == len(held_out)
    assert by_kind["accuracy"] == pytest.approx(sum(c[0] for _, _, c in cells) / by_kind["pairs"])
    accidental = sum(c[1] for _, column, c in cells if column == "true by accident")
    assert by_kind["ceiling"] == pytest.approx(1 - accidental / by_kind["pairs"])
    assert {kind.removesuffix(" (cut)") for kind in by_kind["kinds"]} == set(CAPTION_KINDS)
    for kind, columns in by_kind["kinds"].items():
        line = next(x for x in shown.splitlines() if x.startswith(kind + "  "))
        assert f"{100 * columns['matched'][0] / columns['matched'][1]:.1f}% of {columns['matched'][1]}" in line

    # the verdicts follow from those numbers
    prior, best = vqa[0]["prior"], max(r["accuracy"] for r in vqa[:2])
    full, ablation = vqa[2]["accuracy"], vqa[3]["accuracy"]
    met = [t["met"] for t in report["targets"]]
    assert met == [full >= prior + 0.30, full >= best + 0.15, ablation < full, report["captions"]["matching"] >= 0.90]
    for t in report["targets"]:
        assert re.search(rf"{'met' if t['met'] else 'NOT met'} +{re.escape(t['what'])}", shown), t

    # a rerun reuses every finished run: no job starts, the same report
    logs = {p: p.stat().st_mtime_ns for p in out.glob("*.log")}
    again = run_study(out)
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.log")} == logs
    assert json.loads((out / "grounding.json").read_text())["vqa"] == vqa and again.splitlines()[-4:] == shown.splitlines()[-4:]
    # --check: the exit status says whether every target was met (at this budget, not all are)
    checked = procs.run(study(out, "--check"), ok=False)
    assert checked.returncode == (0 if all(met) else 1), checked.stderr[-2000:]
    assert all(met) or "not every target measured and met" in checked.stderr
    # ... but not with other settings, which its finished runs were not made with
    refused = procs.run([sys.executable, str(ROOT / "bench" / "grounding.py"), "--dir", str(out), "--images", "40",
                         "--preset", "tiny", "--ranks", "1", "--epochs", "2"], ok=False)
    assert refused.returncode != 0 and "--epochs 1 -> 2" in refused.stderr and "give another --dir" in refused.stderr
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.log")} == logs


def test_captions_alone_teach_matching_held_out_pairs(tmp_path):
    """Issue 12's first target through the real job, as `make demo` runs it: the small preset
    pre-trained on the captions alone of a 600-image world (launcher/configs/synth_captions.yaml: half
    the pairs mismatched, 28 epochs, 2 ranks through the deepspeed launcher, fixed seeds) judges at
    least 90% of the held-out pairs right (intact pairs; its prior, always "matched", about 50%),
    having started at chance (the first validation). 155-165 s on 2 cores (its bf16 run
    reached 93.8%, README: the margin over the target is some 3 standard errors)."""
    from data.store import build_store
    from data.synth import write_world

    w = tmp_path / "world"
    write_world(w, images=600, feat_dim=2048, regions=16, progress=False)
    build_store(w / "store", [w / "features" / "train.tsv", w / "features" / "val.tsv"], progress=False)
    bin_dir = Path(sys.executable).parent
    for split in ("train", "minival"):
        procs.run([str(bin_dir / "lxmert"), "corpus", "build", "--json", str(w / "lxmert" / f"{split}.json"), "--answers",
                   str(w / "lxmert" / "all_ans.json"), "--tokenizer", str(w / "vocab.txt"), "--out", str(w / "corpus" / split),
                   "--quiet"])
    run_dir = tmp_path / "captions"
    out = procs.run([str(bin_dir / "deepspeed"), "--num_gpus", "2", "--master_port", str(30500 + os.getpid() % 1000),
                     str(ROOT / "launcher" / "pretrain.py"), "--config", str(ROOT / "launcher" / "configs" / "synth_captions.yaml"),
                     f"run_dir={run_dir}", f"deepspeed={ROOT / 'ds_configs' / 'zero2_bf16.json'}", f"data.store={w / 'store'}",
                     f"data.train=[{w / 'corpus' / 'train'}]", f"data.valid=[{w / 'corpus' / 'minival'}]",
                     f"data.answers={w / 'lxmert' / 'all_ans.json'}", f"data.tokenizer={w / 'vocab.txt'}", "log.progress=false"],
                    timeout=900)
    shown = re.findall(r"step (\d+): .*valid/matched_accuracy ([0-9.]+), valid/matched_prior_accuracy ([0-9.]+)", out.stdout)
    steps = [int(step) for step, _, _ in shown]
    assert steps[0] == 250 and steps[-1] == 1008, steps  # 28 epochs of 2,313 captions at 64 a step, validated every 250
    first, last, prior = float(shown[0][1]), float(shown[-1][1]), float(shown[-1][2])
    assert 0.4 < prior < 0.6 and first < 0.6, shown
    assert last >= 0.90 and last == pytest.approx(tb_last(run_dir, "valid/matched_accuracy"), abs=1e-4), shown
