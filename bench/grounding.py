"""Does pre-training ground words in regions, and does it transfer? The study of issue 12, in one command.

Runs the real jobs (launcher/pretrain.py and launcher/finetune.py, through the deepspeed launcher
for several ranks) on the synthetic world of ``lxmert synth``, with fixed seeds, and prints one
table against the answer prior (each question type's most frequent training answer, no image):

- pre-training with all objectives, and without the visual ones (no feature regression, no object
  or attribute labels: the paper's ablation), on the captions and the questions: held-out matching
  accuracy beside its prior (the share of matched pairs) and held-out QA accuracy;
- pre-training on the captions alone (``--captions-epochs``, 0 to skip), 50% mismatched pairs,
  without the visual objectives (they slow matching down: README): its held-out matching accuracy
  (issue 12's target: at least 90%), and that model's matching by caption kind on intact held-out
  pairs beside the world's ceiling (mismatched captions true of their image by accident);
- VQA fine-tuned at the same budget from each pre-trained model and from scratch at every lr of a
  sweep; the issue's targets: pre-trained at least 30 points above the prior and 15 above the best
  scratch, the ablation below the full pre-training; and, by question type, the best scratch run
  and each pre-trained one.

    python bench/grounding.py                        # small preset, 30 epochs, 2 ranks: ~30 min on 2 cores
    python bench/grounding.py --check                # exit status 1 unless every target is measured and met
    python bench/grounding.py --epochs 15 --scratch-lrs 3e-4,1e-3 --captions-epochs 0 --dir runs/grounding15

A rerun with the same ``--dir`` reuses every run that finished (its consolidated model or its
results.json), resumes an interrupted pre-training from its last checkpoint (every 500 steps; its
minutes then count the resumed part only) and runs the rest. The table is also written to
DIR/grounding.json.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent

from data.files import atomic_write_text  # noqa: E402
from launcher.cli import VALIDATION, by_type_table, format_table, last_scalars  # noqa: E402

#: Pre-training variants on the captions and the questions: name -> overrides of synth_tiny.yaml beside the common ones.
PRETRAININGS = {"all objectives": [], "no visual objectives": ["objectives.visual=false"]}
#: The captions-only pre-training: synth_captions.yaml (make demo's recipe) at ``--captions-epochs``.
CAPTIONS = "captions only, no visual objectives"


def lrs(text: str) -> list[float]:
    """``--scratch-lrs``: comma-separated positive numbers."""
    values = [float(x) for x in text.split(",")]  # a ValueError: argparse names the option
    if not values or min(values) <= 0:
        raise ValueError(text)
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("--dir", type=Path, default=Path("runs/grounding"), help="working folder (reused by a rerun)")
    p.add_argument("--images", type=int, default=600, help="images of the synthetic world (make demo's: 600)")
    p.add_argument("--preset", default="small", help="model preset of every run")
    p.add_argument("--ranks", type=int, default=2, help="processes per job (the deepspeed launcher when more than 1)")
    p.add_argument("--epochs", type=int, default=30, help="pre-training epochs (captions and questions)")
    p.add_argument("--lr", type=float, default=1e-3, help="lr of the pre-trainings on captions and questions")
    p.add_argument("--mismatch", type=float, default=0.2,
                   help="share of mismatched pairs in the pre-trainings on captions and questions (a mismatched "
                        "question has no QA target)")
    p.add_argument("--captions-epochs", type=int, default=90,
                   help="epochs of the captions-only pre-training, launcher/configs/synth_captions.yaml otherwise "
                        "(0: not run, and its target not measured)")
    p.add_argument("--ft-epochs", type=int, default=4, help="VQA fine-tuning epochs (batch 32), the same for every model")
    p.add_argument("--ft-lr", type=float, default=1e-3, help="VQA fine-tuning lr of the pre-trained models")
    p.add_argument("--scratch-lrs", type=lrs, default=lrs("1e-4,3e-4,1e-3,3e-3"),
                   help="the lr sweep of the scratch model (comma-separated)")
    p.add_argument("--valid-every", type=int, default=500, help="pre-training steps between validation passes")
    p.add_argument("--port", type=int, default=29650, help="rendezvous port of the jobs")
    p.add_argument("--check", action="store_true",
                   help="exit with status 1 unless every target is measured and met (for a scheduled job)")
    return p.parse_args(argv)


def job(script: str, args: argparse.Namespace, log: Path, overrides: list[str]) -> float:
    """One job through the real entry point; its output in ``log``; the wall time in seconds."""
    if args.ranks > 1:
        cmd = [str(BIN / "deepspeed"), "--num_gpus", str(args.ranks), "--master_port", str(args.port), script]
    else:
        cmd = [sys.executable, script]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    print(f"grounding: {script} ... (log: {log})", flush=True)
    start = time.perf_counter()
    with open(log, "w") as f:
        done = subprocess.run([*cmd, *overrides], cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-30:]
        raise SystemExit(f"grounding: {script} failed (exit {done.returncode}); the end of {log}:\n" + "\n".join(tail))
    return time.perf_counter() - start


def lxmert(*argv: str) -> None:
    """An ``lxmert`` subcommand; its error output in the message when it fails."""
    done = subprocess.run([str(BIN / "lxmert"), *argv], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"grounding: lxmert {' '.join(argv[:2])} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")


#: The arguments every reused run depends on; a rerun with other values is refused.
SETTINGS = ("images", "preset", "ranks", "epochs", "lr", "mismatch", "ft_epochs", "ft_lr")


def check_settings(args: argparse.Namespace) -> None:
    """Record the study's settings in DIR/settings.json, or refuse a rerun that changes one of them
    (its finished runs would be reported as if made with the new values)."""
    path = args.dir / "settings.json"
    ours = {k: getattr(args, k) for k in SETTINGS}
    if path.is_file():
        theirs = json.loads(path.read_text())
        changed = [f"--{k.replace('_', '-')} {theirs.get(k)} -> {v}" for k, v in ours.items() if theirs.get(k) != v]
        if changed:
            raise SystemExit(f"grounding: {args.dir} holds runs made with other settings ({'; '.join(changed)}): "
                             f"give another --dir, or the same values")
    else:
        atomic_write_text(path, json.dumps(ours, indent=1))


def build_world(args: argparse.Namespace) -> Path:
    """The synthetic world, its feature store and its tokenised corpora (made once per ``--dir``)."""
    w = (args.dir / "world").resolve()
    if (w / "corpus" / "minival" / "manifest.json").is_file():
        return w
    print(f"grounding: writing the synthetic world ({args.images} images) into {w}", flush=True)
    lxmert("synth", "--out", str(w), "--images", str(args.images), "--feat-dim", "2048", "--quiet")
    lxmert("features", "build", "--tsv", str(w / "features/train.tsv"), "--tsv", str(w / "features/val.tsv"), "--out",
           str(w / "store"), "--objects-vocab", str(w / "features/objects_vocab.txt"), "--attributes-vocab",
           str(w / "features/attributes_vocab.txt"), "--quiet")
    for split in ("train", "minival"):
        lxmert("corpus", "build", "--json", str(w / "lxmert" / f"{split}.json"), "--answers", str(w / "lxmert/all_ans.json"),
               "--tokenizer", str(w / "vocab.txt"), "--out", str(w / "corpus" / split), "--quiet")
    return w


def pretrain(name: str, config: str, extra: list[str], epochs: int, w: Path, args: argparse.Namespace) -> dict:
    """One pre-training (``config`` with the world's paths, the preset and ``extra``) and its consolidated
    model (reused when both exist): its held-out matching accuracy, that accuracy's prior, its held-out QA
    accuracy (None when not measured) and minutes."""
    slug = name.replace(",", "").replace(" ", "_")
    run_dir, model = (args.dir / slug).resolve(), (args.dir / f"{slug}_model").resolve()
    record = args.dir / f"{slug}.json"
    if model.is_dir() and record.is_file():
        row = json.loads(record.read_text())
        if row["epochs"] != epochs:  # --captions-epochs changed (the others are in settings.json)
            raise SystemExit(f"grounding: {run_dir} was pre-trained for {row['epochs']} epochs, not {epochs}: give "
                             f"another --dir, or the same value")
        return row
    seconds = job("launcher/pretrain.py", args, args.dir / f"{slug}.log", [
        "--config", config, f"run_dir={run_dir}", f"model.preset={args.preset}",
        f"data.store={w / 'store'}", f"data.train=[{w / 'corpus/train'}]", f"data.valid=[{w / 'corpus/minival'}]",
        f"data.answers={w / 'lxmert/all_ans.json'}", f"data.tokenizer={w / 'vocab.txt'}", f"train.epochs={epochs}",
        f"log.valid_every={args.valid_every}", "checkpoint.every=500", "log.progress=false", *extra])
    lxmert("consolidate", str(run_dir / "checkpoints"), str(model))
    found = {tag: value for tag, (_, value) in last_scalars(run_dir, VALIDATION).items()}
    row = {"name": name, "run_dir": str(run_dir), "model": str(model), "minutes": seconds / 60, "epochs": epochs,
           "matching": found.get("valid/matched_accuracy"), "matching_prior": found.get("valid/matched_prior_accuracy"),
           "qa": found.get("valid/qa_accuracy")}
    atomic_write_text(record, json.dumps(row, indent=1))
    return row


def finetune(name: str, init: str, lr: float, w: Path, args: argparse.Namespace) -> dict:
    """VQA fine-tuned from ``init`` (a consolidated model or "none") at ``lr`` (reused when its
    results.json exists): minival accuracy, the answer prior, steps."""
    run_dir = (args.dir / f"vqa_{name.replace(' ', '_')}_lr{lr:g}").resolve()
    if not (run_dir / "results.json").is_file():
        job("launcher/finetune.py", args, args.dir / f"{run_dir.name}.log", [
            "--config", "launcher/configs/synth_vqa.yaml", f"run_dir={run_dir}", f"model.preset={args.preset}",
            f"model.init_from={init}", f"data.store={w / 'store'}", f"data.train=[{w / 'vqa/train.json'}]",
            f"data.valid=[{w / 'vqa/minival.json'}]", f"data.labels={w / 'vqa/trainval_ans2label.json'}",
            f"data.tokenizer={w / 'vocab.txt'}", f"train.epochs={args.ft_epochs}", f"train.lr={lr}", "log.progress=false"])
    res = json.loads((run_dir / "results.json").read_text())
    return {"name": name, "lr": lr, "run_dir": str(run_dir), "accuracy": res["valid"]["accuracy"],
            "prior": res["prior"]["accuracy"], "steps": res["steps"], "by_type": res.get("valid_by_type")}


def matching_by_kind(model: str, w: Path) -> dict | None:
    """A pre-trained model on the held-out captions, each with its own image and with one other
    held-out image's (fixed seed), intact: the share judged right by caption kind (``(cut)``: over
    the model's word-piece limit), the mismatched ones split by their truth on the image
    (``data.synth.caption_truth``: true by accident, so judged "mismatched" against the facts), and
    the accuracy a model right about every image would get (the world's ceiling). None for a world
    written without scenes.json."""
    import random

    from data.store import FeatureStore
    from data.synth import caption_kind, caption_pairs, caption_truth
    from interpret.queries import matching_probabilities
    from interpret.subject import load_subject, make_example

    if not (w / "scenes.json").is_file():
        return None
    scenes = json.loads((w / "scenes.json").read_text())
    captions = [(r["img_id"], c) for r in json.loads((w / "lxmert/minival.json").read_text()) for c in r["sentf"]["mscoco"]]
    pairs = caption_pairs(captions, random.Random(0))
    subject, store = load_subject(model), FeatureStore(w / "store")
    examples = [make_example(subject, store, img, caption, truncate=True) for img, caption, _ in pairs]
    kinds: dict[str, dict[str, list[int]]] = {}  # kind -> column -> [judged right, pairs]
    for (img, caption, matched), example, p in zip(pairs, examples, matching_probabilities(subject, examples)):
        column = "matched" if matched else "true by accident" if caption_truth(caption, scenes[img]) else "mismatched"
        cell = kinds.setdefault(caption_kind(caption) + (" (cut)" if example.cut else ""), {}).setdefault(column, [0, 0])
        cell[0] += (p > 0.5) == matched
        cell[1] += 1
    cells = [(column, cell) for columns in kinds.values() for column, cell in columns.items()]
    accidental = sum(n for column, (_, n) in cells if column == "true by accident")
    return {"pairs": len(pairs), "accuracy": sum(right for _, (right, _) in cells) / len(pairs),
            "ceiling": 1 - accidental / len(pairs), "kinds": dict(sorted(kinds.items()))}


def pct(x: float | None) -> str:
    """A share as a percentage; "-" when not measured."""
    return "-" if x is None else f"{100 * x:.1f}%"


def verdicts(pre: list[dict], vqa: list[dict], captions: dict | None) -> list[tuple[str, bool | None, str]]:
    """Issue 12's targets, each (what, met, the numbers): met is None when not measured."""
    scratch = [r for r in vqa if r["name"] == "scratch"]
    best_scratch = max(scratch, key=lambda r: r["accuracy"])
    prior = vqa[0]["prior"]
    full = next(r for r in vqa if r["name"] == "all objectives")
    ablation = next(r for r in vqa if r["name"] == "no visual objectives")
    out = [
        ("VQA pre-trained >= prior + 30 points", full["accuracy"] >= prior + 0.30,
         f"{pct(full['accuracy'])} vs prior {pct(prior)}: {100 * (full['accuracy'] - prior):+.1f}"),
        ("VQA pre-trained >= best scratch + 15 points", full["accuracy"] >= best_scratch["accuracy"] + 0.15,
         f"{pct(full['accuracy'])} vs {pct(best_scratch['accuracy'])} (scratch at lr {best_scratch['lr']:g}): "
         f"{100 * (full['accuracy'] - best_scratch['accuracy']):+.1f}"),
        ("without the visual objectives: lower (the paper's direction)", ablation["accuracy"] < full["accuracy"],
         f"{pct(ablation['accuracy'])} vs {pct(full['accuracy'])}"),
    ]
    matching = "held-out matching after captions-only pre-training >= 90%"
    if captions is None:
        out.append((matching, None, "not run (--captions-epochs)"))
    elif captions["matching"] is None:
        out.append((matching, None, "no held-out matching logged"))
    else:
        out.append((matching, captions["matching"] >= 0.90,
                    f"{pct(captions['matching'])} (prior {pct(captions['matching_prior'])}, {captions['epochs']} epochs)"))
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    faulthandler.register(signal.SIGUSR2)  # `kill -USR2 PID`: where this driver waits (each job's stacks go to its log)
    args.dir.mkdir(parents=True, exist_ok=True)
    check_settings(args)
    w = build_world(args)
    common = [f"train.lr={args.lr}", f"objectives.mismatch_probability={args.mismatch}"]
    pre = [pretrain(name, "launcher/configs/synth_tiny.yaml", [*common, *extra], args.epochs, w, args)
           for name, extra in PRETRAININGS.items()]
    captions = None
    if args.captions_epochs:
        captions = pretrain(CAPTIONS, "launcher/configs/synth_captions.yaml", [], args.captions_epochs, w, args)
    vqa = [finetune("scratch", "none", lr, w, args) for lr in args.scratch_lrs]
    vqa += [finetune(r["name"], r["model"], args.ft_lr, w, args) for r in pre]

    print(f"pre-training: preset {args.preset}, {args.ranks} rank(s), lr {args.lr:g}, {args.mismatch:.0%} mismatched pairs, "
          f"world of {args.images} images ({w})")
    print(format_table([["pre-training", "epochs", "held-out matching (prior)", "held-out QA", "minutes"]]
                + [[r["name"], str(r["epochs"]), f"{pct(r['matching'])} ({pct(r['matching_prior'])})", pct(r["qa"]),
                    f"{r['minutes']:.1f}"] for r in pre + ([captions] if captions else [])]))
    prior = vqa[0]["prior"]
    best_scratch = max((r for r in vqa if r["name"] == "scratch"), key=lambda r: r["accuracy"])
    best = best_scratch["accuracy"]
    print(f"\nVQA fine-tuning: {args.ft_epochs} epochs, batch 32, {vqa[0]['steps']} steps each; answer prior {pct(prior)}")
    print(format_table([["initialised from", "lr", "minival accuracy", "vs prior", "vs best scratch"]]
                + [[r["name"], f"{r['lr']:g}", pct(r["accuracy"]), f"{100 * (r['accuracy'] - prior):+.1f}",
                    f"{100 * (r['accuracy'] - best):+.1f}"] for r in vqa]))
    shown = [best_scratch, *(r for r in vqa if r["name"] != "scratch")]
    if all(r["by_type"] for r in shown):
        print("\nby question type (prior: each type's most frequent training answer), the best scratch run and each pre-trained one")
        print(by_type_table({f"{r['name']} (lr {r['lr']:g})": r["by_type"] for r in shown}))
    if captions is not None:
        captions["by_kind"] = by_kind = matching_by_kind(captions["model"], w)
        if by_kind is None:
            print(f"\n(matching by caption kind: {w} was written without scenes.json; a new --dir writes it)")
        else:
            print(f"\nthe captions-only model on {by_kind['pairs']} held-out pairs (half mismatched), intact, by caption "
                  f"kind: {pct(by_kind['accuracy'])} right; a model right about every image: {pct(by_kind['ceiling'])} "
                  f"(a mismatched caption can be true of the image: data.synth.caption_truth)")
            cell = lambda c: "-" if c is None else f"{pct(c[0] / c[1])} of {c[1]}"  # noqa: E731
            columns = ("matched", "mismatched", "true by accident")
            print(format_table([["caption kind", "matched", "mismatched", "mismatched, true of the image"]]
                               + [[k, *(cell(v.get(c)) for c in columns)] for k, v in by_kind["kinds"].items()]))
    checks = verdicts(pre, vqa, captions)
    print("\nissue 12's targets:")
    for what, met, numbers in checks:
        print(f"  {'not measured' if met is None else 'met' if met else 'NOT met':12s}  {what}: {numbers}")
    atomic_write_text(args.dir / "grounding.json", json.dumps(
        {"args": {k: str(v) for k, v in vars(args).items()}, "pretraining": pre, "captions": captions, "vqa": vqa,
         "targets": [{"what": a, "met": b, "numbers": c} for a, b, c in checks]}, indent=1))
    if args.check and not all(met for _, met, _ in checks):
        print("grounding: --check: not every target measured and met", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
