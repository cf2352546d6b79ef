"""Fine-tune LXMERT on VQA, GQA or NLVR2 with DeepSpeed, evaluate, and write submission files.

    python launcher/finetune.py --task vqa --config vqa.yaml [key.path=value ...]        # one process
    deepspeed --num_gpus 2 launcher/finetune.py --task vqa --config vqa.yaml ...           # or --hostfile H
    torchrun / mpirun -np N python / srun python launcher/finetune.py ...                  # as pre-training
    python launcher/finetune.py --task vqa --config vqa.yaml --eval-only model.init_from=runs/vqa/best

model.init_from: a consolidated checkpoint of ours, a Hugging Face LXMERT directory, an original
*_LXRT.pth, or nothing (from scratch). VQA and GQA copy the answer-head rows of labels found in the
pre-training answer table; NLVR2 takes the encoder only. After each epoch the validation split is
scored with the benchmark's metric and the best weights are kept; at the end they are consolidated
into RUN_DIR/best and the valid and test splits predicted into RUN_DIR/predictions/ in the
benchmark's submission format, with the scores in RUN_DIR/results.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.distributed as dist

from launcher import checkpoint as ckpt
from launcher.config import FinetuneConfig, load_finetune_config, preset_config, require
from launcher.engine import init_distributed
from launcher.loop import Job, loader, train
from launcher.processes import beat, run_job


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lxmert finetune", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="run configuration (YAML or JSON)")
    parser.add_argument("--task", choices=("vqa", "gqa", "nlvr2"),
                        help="the benchmark (overrides the file's `task`); its recipe sets the train defaults")
    parser.add_argument("--resume", default="auto",
                        help="'auto' (default): the latest complete checkpoint of the run directory, if any; "
                             "'none': start fresh; or a tag such as step1000")
    parser.add_argument("--eval-only", action="store_true",
                        help="no training: score data.valid and predict data.test with the fine-tuned model.init_from")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=1e-5 model.init_from=none")
    return parser.parse_args(argv)


@dataclass
class TaskData:
    store: object
    tokenizer: object
    labels: list[str] | None  # answer of each label id (VQA, GQA); None for NLVR2
    train: object | None
    splits: dict  # "valid" / "test" -> dataset (absent when not configured)
    collate: object
    loaders: dict = field(default_factory=dict)  # split -> its prediction loader, made once (persistent workers)


def init_path(ft: FinetuneConfig) -> Path | None:
    value = ft.model.init_from
    return None if value in (None, "", "none") else Path(value)


def build_data(ft: FinetuneConfig, eval_only: bool) -> TaskData:
    """The task's datasets; every file, label and image is checked here, before any heavy work."""
    from data.store import FeatureStore
    from data.tasks import NLVR2Dataset, QADataset, collate_nlvr2, collate_qa, load_label_vocab
    from data.tokenize import load_tokenizer

    d = ft.data
    from data.tokenized import is_corpus

    for path in [*d.train, *d.valid, *d.test, *([d.labels] if d.labels else [])]:
        if not Path(path).is_file() and not (path != d.labels and is_corpus(path)):
            raise FileNotFoundError(f"{path}: no such file or corpus directory (data section of the fine-tuning "
                                    f"configuration)")
    store = FeatureStore(d.store)
    source = init_path(ft)
    tokenizer_name = d.tokenizer
    if tokenizer_name is None:
        found = source is not None and source.is_dir() and (source / "vocab.txt").is_file()
        tokenizer_name = str(source / "vocab.txt") if found else "bert-base-uncased"
    tokenizer = load_tokenizer(tokenizer_name)
    d.tokenizer = tokenizer_name  # recorded in the resolved configuration
    files = {"train": [] if eval_only else d.train, "valid": d.valid, "test": d.test}
    if ft.task == "nlvr2":
        make = lambda paths, split: NLVR2Dataset(paths, store, tokenizer, require_label=split != "test")  # noqa: E731
        labels, collate = None, collate_nlvr2
    else:
        ans2label = load_label_vocab(d.labels)
        labels = sorted(ans2label, key=ans2label.get)
        # training targets must be in the label vocabulary; validation answers outside it just score 0
        make = lambda paths, split: QADataset(paths, store, tokenizer, ans2label, strict=split == "train")  # noqa: E731
        collate = collate_qa
    sets = {split: make(paths, split) for split, paths in files.items() if paths}
    return TaskData(store=store, tokenizer=tokenizer, labels=labels, train=sets.pop("train", None), splits=sets,
                    collate=collate)


def build_model(ft: FinetuneConfig, data: TaskData, eval_only: bool):
    """(model, config, report): from scratch, or the encoder (and mapped answer rows) of a checkpoint;
    with ``eval_only`` the whole fine-tuned model, heads included."""
    from model import LxmertConfig, LxmertForNLVR2, LxmertForQuestionAnswering
    from model.pretrained import bare_file_config, read_native_state

    cls = LxmertForNLVR2 if ft.task == "nlvr2" else LxmertForQuestionAnswering
    sizes = {"vocab_size": len(data.tokenizer), "visual_feat_dim": data.store.feature_dim}
    if data.labels is not None:
        sizes["num_qa_labels"] = len(data.labels)
    overrides = ft.model.overrides
    source = init_path(ft)
    if source is None:
        if eval_only:
            raise ValueError("--eval-only needs model.init_from: the fine-tuned model to evaluate")
        config = preset_config(ft.model.preset, overrides, sizes)
        return cls(config), config, f"{ft.task}: from scratch ({ft.model.preset} preset)"

    state, file_config, unknown = read_native_state(source)
    # a bare file (the original *_LXRT.pth): the paper's configuration with its sizes, not model.preset
    base = file_config or bare_file_config(state, str(source), "base", overrides)
    where = {"vocab_size": "the tokenizer", "visual_feat_dim": "the feature store"}
    for name, what in where.items():
        if getattr(base, name) != sizes[name]:
            raise ValueError(f"{source}: the checkpoint's {name} is {getattr(base, name)} but {what} gives "
                             f"{sizes[name]} (data.tokenizer / data.store of another model?)")
    for name, value in overrides.items():
        if name in ("hidden_size", "num_attention_heads", "intermediate_size", "l_layers", "r_layers", "x_layers") \
                and getattr(base, name) != value:
            raise ValueError(f"model.overrides.{name}={value} does not match the checkpoint {source} "
                             f"({name} {getattr(base, name)})")
    config = LxmertConfig.from_dict({**base.to_dict(), **overrides, **sizes})
    net = cls(config)
    # the answer head's last layer is only ever filled row by row, through the answer table
    weight, bias = state.pop("answer_head.out.weight", None), state.pop("answer_head.out.bias", None)
    if eval_only and weight is not None:
        state.update({"answer_head.out.weight": weight, "answer_head.out.bias": bias})
    info = net.load_native_state(state, skip_heads=not eval_only, source=str(source), unknown=unknown)
    report = f"{ft.task}: encoder from {source} ({len(info['loaded'])} tensors)"
    if eval_only:
        answers_file = source / ckpt.ANSWERS_FILE if source.is_dir() else None
        if data.labels is not None and answers_file is not None and answers_file.is_file() \
                and json.loads(answers_file.read_text()) != data.labels:
            raise ValueError(f"{answers_file}: the model's answers differ from the label vocabulary {ft.data.labels}")
        return net, config, report + "; heads loaded"
    if data.labels is None:
        return net, config, report + "; fresh classifier"
    return net, config, report + "; " + transfer_answer_head(net, weight, bias, source, ft, data.labels)


def transfer_answer_head(net, weight, bias, source: Path, ft: FinetuneConfig, labels: list[str]) -> str:
    """Copy the answer-head rows of labels found in the checkpoint's answer table; say how many."""
    from data.answers import AnswerTable, map_labels
    from model.tasks import transfer_answer_rows

    if weight is None:
        return "the checkpoint has no answer head: it starts fresh"
    answers_file = source / ckpt.ANSWERS_FILE if source.is_dir() else None
    if answers_file is not None and answers_file.is_file():
        table, table_name = json.loads(answers_file.read_text()), str(answers_file)
    elif ft.data.pretrain_answers:
        table, table_name = AnswerTable.from_file(ft.data.pretrain_answers).answers, ft.data.pretrain_answers
    else:
        return (f"answer head starts fresh: set data.pretrain_answers to the answer table of its {weight.shape[0]} "
                f"rows (all_ans.json) to transfer them")
    if len(table) != weight.shape[0]:
        raise ValueError(f"{table_name}: {len(table)} answers, but the checkpoint's answer head has {weight.shape[0]} "
                         f"rows (the answer table of another pre-training?)")
    rows = map_labels(labels, table)
    transfer_answer_rows(net, weight, bias, rows)
    return f"answer head: {len(rows)} of {len(labels)} labels mapped from {table_name}"


def split_loader(data: TaskData, split: str, ft: FinetuneConfig, rank: int, world: int):
    """A split's prediction batches: each rank takes every world-th example; shards are padded to
    equal length (ZeRO-3 ranks must run the same number of forwards). Made once per split, its
    workers persistent: every validation pass reuses them."""
    if split not in data.loaders:
        n = len(data.splits[split])
        indices = [(rank + world * i) % n for i in range(-(-n // world))]
        data.loaders[split] = loader(data.splits[split], indices, ft, ft.train.micro_batch_size, data.collate,
                                     drop_last=False, persistent=True)
    return data.loaders[split]


@torch.no_grad()
def predict(model, data: TaskData, ft: FinetuneConfig, rank: int, world: int, device, split: str = "valid") -> dict:
    """{question_id: answer} or {identifier: 0|1} over the whole split, gathered on every rank
    (the padding's duplicates dropped)."""
    was_training = model.training
    model.eval()
    out: list[tuple] = []
    from tqdm import tqdm

    for batch in tqdm(split_loader(data, split, ft, rank, world), desc=f"predicting {split}", unit="batch",
                      leave=False, disable=rank != 0 or not ft.log.progress):
        batch = batch.to(device)
        inputs = {k: v for k, v in batch.model_inputs().items() if k != "labels"}
        best = model(**inputs).logits.argmax(-1).tolist()
        out += [(i, p if data.labels is None else data.labels[p]) for i, p in zip(batch.ids, best)]
        beat()
    parts: list = [None] * world
    dist.all_gather_object(parts, out)
    model.train(was_training)
    return dict(pair for part in parts for pair in part)


def split_scores(task: str, predictions: dict, dataset) -> dict[str, float]:
    from data.evaluation import scores

    return scores(task, predictions, dataset.rows)


def valid_prior(task: str, data: TaskData) -> dict | None:
    """The answer prior's predictions on the valid split (:func:`data.evaluation.prior_predictions`:
    each question type's most frequent training answer; NLVR2's more frequent label), the baseline
    a model must beat to have used the image. None without a training or a valid split, or without
    a training answer."""
    from data.evaluation import prior_predictions

    valid = data.splits.get("valid")
    if data.train is None or valid is None:
        return None
    return prior_predictions(task, data.train.label_rows(), valid.rows, set(data.labels or ())) or None


def finish(model, data: TaskData, ft: FinetuneConfig, rank: int, world: int, device, extra: dict,
           prior: dict | None = None) -> dict:
    """Score the valid split (VQA and GQA: also by question type, beside the ``prior``'s predictions
    when given), predict valid and test into submission files, write results.json."""
    from data.evaluation import scores, scores_by_type, submission_name, submission_text
    from model.pretrained import atomic_write

    run_dir = Path(ft.run_dir)
    results = {"task": ft.task, **extra, "predictions": {}}
    for split, dataset in data.splits.items():
        predictions = predict(model, data, ft, rank, world, device, split)
        if split == "valid":
            results["valid"] = split_scores(ft.task, predictions, dataset)
            if prior is not None:
                results["prior"] = scores(ft.task, prior, dataset.rows)
            if ft.task != "nlvr2":
                results["valid_by_type"] = scores_by_type(ft.task, predictions, dataset.rows, prior)
        if rank == 0:
            path = run_dir / "predictions" / submission_name(ft.task, split)
            path.parent.mkdir(parents=True, exist_ok=True)
            text = submission_text(ft.task, predictions)
            atomic_write(path, lambda p: Path(p).write_text(text))
            results["predictions"][split] = str(path)
    if rank == 0:
        text = json.dumps(results, indent=2) + "\n"
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(run_dir / "results.json", lambda p: Path(p).write_text(text))
        shown = ", ".join(f"{k} {v:.4f}" for k, v in results.get("valid", {}).items())
        print(f"{ft.task}: {shown or 'no valid split'}; predictions in {run_dir / 'predictions'}, "
              f"results in {run_dir / 'results.json'}", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ft = load_finetune_config(args.config, args.overrides, args.task)  # a bad config fails fast on every rank
    require(ft, ("data.store",))
    if args.eval_only and not ft.data.valid and not ft.data.test:
        raise ValueError("--eval-only: data.valid and data.test are empty: nothing to evaluate")
    if not args.eval_only and not ft.data.train:
        raise ValueError("data.train is empty: give task files to fine-tune on (or --eval-only)")
    if init_path(ft) is not None:  # a local path, or a hub id fetched once here
        ft.model.init_from = str(ckpt.locate(ft.model.init_from))
    rank, world = init_distributed()
    if ft.train.micro_batch_size == 0:  # the recipe's batch split over the ranks
        ft.train.micro_batch_size = max(1, ft.train.global_batch_size // world)
    run_dir = Path(ft.run_dir)
    ckpt_dir = run_dir / "checkpoints"
    if not args.eval_only:
        ckpt.resolve_resume(ckpt_dir, args.resume)  # a bad --resume fails before the data
    data = build_data(ft, args.eval_only)
    torch.manual_seed(ft.train.seed)
    net, config, report = build_model(ft, data, args.eval_only)
    if rank == 0:
        print(report, flush=True)
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    if args.eval_only:
        finish(net.to(device), data, ft, rank, world, device, {"model": str(init_path(ft))})
        return 0

    from data.evaluation import scores
    from data.sampler import ResumableSampler

    valid = data.splits.get("valid")
    prior_predictions = valid_prior(ft.task, data) if rank == 0 else None  # only rank 0 logs and writes results
    prior = scores(ft.task, prior_predictions, valid.rows) if prior_predictions is not None else None
    if prior is not None:
        what = "the more frequent training label" if ft.task == "nlvr2" else "each question type's most frequent training answer"
        shown = ", ".join(f"{k} {v:.4f}" for k, v in prior.items())
        print(f"answer prior on the valid split ({what}, never looking at the image): {shown}", flush=True)
    evaluate = None
    if valid is not None:
        evaluate = lambda engine: {  # noqa: E731
            **{f"valid/{k}": v for k, v in split_scores(ft.task, predict(engine, data, ft, rank, world, engine.device),
                                                         valid).items()},
            **{f"valid/prior_{k}": v for k, v in (prior or {}).items()}}
    job = Job(name=f"fine-tuning {ft.task}", run=ft, rank=rank, world=world, model=net, model_config=config,
              train_set=data.train, sampler=ResumableSampler(len(data.train), rank, world, seed=ft.train.seed),
              collate=data.collate, evaluate=evaluate, best_metric="valid/accuracy" if valid is not None else None,
              client={"architecture": type(net).__name__, "answers": data.labels,
                      "tokenizer_vocab": ckpt.vocab_file(ft.data.tokenizer)},
              resolved={"init": report})
    outcome = train(job, args.resume)
    if outcome.stopped:
        return 0
    tag = ckpt.best_tag(ckpt_dir) or ckpt.complete_tags(ckpt_dir)[-1]  # no valid split: the last weights
    best_dir = run_dir / "best"
    failure = [None]
    beat()  # the watch (log.hang_dump_seconds) times the consolidation from here
    if rank == 0:  # into best.partial, then renamed: RUN_DIR/best never mixes two models' files
        partial = run_dir / "best.partial"
        try:
            shutil.rmtree(partial, ignore_errors=True)
            ckpt.consolidate(ckpt_dir, partial, tag=tag)
            shutil.rmtree(best_dir, ignore_errors=True)
            partial.rename(best_dir)
        except (OSError, ValueError) as exc:
            failure = [f"{ckpt_dir / tag}: consolidation failed: {exc}"]
    dist.broadcast_object_list(failure, src=0)  # every rank stops with the error, none waits for ever
    beat()
    if failure[0] is not None:
        raise ValueError(failure[0])
    best = type(net).from_pretrained(best_dir).to(device)
    finish(best, data, ft, rank, world, device, {"model": str(best_dir), "checkpoint": tag,
                                                 "init_from": str(init_path(ft)), "steps": outcome.step},
           prior_predictions)
    return 0


if __name__ == "__main__":
    sys.exit(run_job(main, "lxmert finetune"))
