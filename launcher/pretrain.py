"""LXMERT pre-training with DeepSpeed: the job every launcher starts.

    python launcher/pretrain.py --config run.yaml [key.path=value ...]          # one process
    deepspeed --num_gpus 2 launcher/pretrain.py --config run.yaml ...            # or --hostfile H
    torchrun --nproc_per_node 2 launcher/pretrain.py --config run.yaml ...
    mpirun -np 2 python launcher/pretrain.py --config run.yaml ...               # ranks from mpi4py
    srun python launcher/pretrain.py --config run.yaml ...                       # Slurm
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.distributed as dist

from launcher import checkpoint as ckpt
from launcher.config import RunConfig, load_config, preset_config, require
from launcher.engine import init_distributed
from launcher.loop import Job, Meter, loader, train
from launcher.processes import beat, run_job


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lxmert pretrain", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="run configuration (YAML or JSON)")
    parser.add_argument("--resume", default="auto",
                        help="'auto' (default): the latest complete checkpoint of the run directory, if any; "
                             "'none': start fresh; or a tag such as step1000 (step1000_universal, made by "
                             "`lxmert universal`, resumes at another number of ranks)")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=5e-5 checkpoint.every=500")
    return parser.parse_args(argv)


def build_data(run: RunConfig, rank: int, world: int):
    from data.answers import AnswerTable
    from data.corpus import open_pairs
    from data.pretraining import PretrainingDataset
    from data.sampler import ResumableSampler
    from data.store import FeatureStore
    from data.tokenize import load_tokenizer
    from data.tokenized import is_corpus

    d = run.data
    store = FeatureStore(d.store)
    for path in [*d.train, *d.valid, d.answers]:
        if not Path(path).is_file() and not is_corpus(path):
            raise FileNotFoundError(f"{path}: no such file or corpus directory (data section of the run configuration)")
    answers = AnswerTable.from_file(d.answers, d.answer_dsets)
    tokenizer = load_tokenizer(d.tokenizer)
    train_pairs, report = open_pairs(d.train, tokenizer, answers, store, d.sources, d.missing_images)
    if rank == 0:
        print(f"pre-training corpus: {report}", flush=True)
    train = PretrainingDataset(train_pairs, store, tokenizer, run.objectives, seed=run.train.seed)
    valid = None
    if d.valid:
        valid_pairs, _ = open_pairs(d.valid, tokenizer, answers, store, d.sources, d.missing_images)
        valid = PretrainingDataset(valid_pairs, store, tokenizer, run.objectives, seed=run.train.seed + 1)
    sampler = ResumableSampler(len(train), rank, world, seed=run.train.seed)
    return store, answers, tokenizer, train, valid, sampler


def model_config(run: RunConfig, store, answers, tokenizer):
    """The preset with the data's sizes (vocabulary, feature size, answers) unless set explicitly;
    the object and attribute heads at least as large as the store's detector labels need."""
    sizes = {"vocab_size": len(tokenizer), "visual_feat_dim": store.feature_dim, "num_qa_labels": len(answers)}
    config = preset_config(run.model.preset, run.model.overrides, sizes)
    for name, field in (("objects", "num_object_labels"), ("attributes", "num_attr_labels")):
        need = (store.label_ids or {}).get(name, 0)
        if getattr(config, field) >= need:
            continue
        if field in run.model.overrides:
            raise ValueError(f"model.overrides.{field}={getattr(config, field)}, but the feature store {store.path} "
                             f"holds {name} ids up to {need - 1}: give at least {need}")
        setattr(config, field, need)
    return config


OBJECTIVE_NAMES = ("mlm", "matched", "obj", "attr", "feat", "qa")


def collate_for(run: RunConfig, store):
    """The pre-training collate function: padding to each batch's longest, or to fixed shapes
    (``data.static_shapes``: 20 word pieces, the store's largest region count, ``data.mlm_slots``
    masked-LM positions: given, or a count a batch exceeds with probability under 1e-12)."""
    import functools

    from data.collate import StaticShapes, collate_pretraining
    from data.objectives import mlm_slots_for
    from data.tokenize import MAX_TOKENS

    if not run.data.static_shapes:
        return collate_pretraining
    slots = run.data.mlm_slots or mlm_slots_for(run.train.micro_batch_size, MAX_TOKENS - 2, run.objectives.mlm_probability)
    return functools.partial(collate_pretraining,
                             shapes=StaticShapes(MAX_TOKENS, store.manifest["regions"]["max"], slots))


def valid_loader(dataset, run: RunConfig, rank: int, world: int, collate):
    """The validation batches: the same ones at every pass, from workers started once (persistent).
    It holds exactly the ``log.valid_batches`` batches a pass reads, so that no prefetched batch is
    left over (kept in memory, then drained) between passes. A last, shorter batch is kept: a
    held-out set smaller than one micro batch is still validated (the losses average over batches,
    so such a batch weighs as much as a full one; the accuracies count examples)."""
    from data.sampler import ResumableSampler

    sampler = ResumableSampler(len(dataset), rank, world, seed=run.train.seed, shuffle=False)
    first = list(itertools.islice(sampler, run.log.valid_batches * run.train.micro_batch_size))
    return loader(dataset, first, run, run.train.micro_batch_size, collate, drop_last=False, persistent=True)


@torch.no_grad()
def validate(engine, batches, run: RunConfig) -> dict[str, float]:
    """The first ``log.valid_batches`` batches of each rank: the objectives' losses on the inputs as
    training sees them (masked), and, on the pairs as they are (a second forward pass of
    the batch's ``intact_inputs()``: a caption whose telling word was masked would count against the model),
    the matching accuracy on the held-out pairs (``objectives.mismatch_probability`` of them
    mismatched) beside its prior (the share of matched pairs: the accuracy of always answering
    "matched") and the QA accuracy."""
    engine.eval()
    meter = Meter(engine.device, OBJECTIVE_NAMES)
    # right and counted: answered questions, then (image, sentence) pairs judged matched or not, and
    # how many of those pairs are matched
    counts = torch.zeros(5, dtype=torch.float64)
    for i, batch in enumerate(batches):
        if i >= run.log.valid_batches:
            break
        batch = batch.to(engine.device)
        meter.add(engine(**batch.model_inputs()), batch)
        has_answer = batch.ans != -100
        judged = run.objectives.matching  # then every pair carries a matching label (data.pretraining)
        if judged or has_answer.any():
            out = engine(**batch.intact_inputs())
            if out.question_answering_score is not None:
                counts[0] += (out.question_answering_score.argmax(-1)[has_answer] == batch.ans[has_answer]).sum().item()
            if judged and out.cross_relationship_score is not None:
                counts[2] += (out.cross_relationship_score.argmax(-1) == batch.matched_label).sum().item()
                counts[3] += len(batch)
                counts[4] += batch.matched_label.sum().item()
        counts[1] += has_answer.sum().item()
        beat()
    values = {k.replace("loss/", "valid/"): v for k, v in meter.read().items() if k.startswith("loss/")}
    counts = counts.to(engine.device)
    dist.all_reduce(counts)
    if counts[3] > 0:
        values["valid/matched_accuracy"] = (counts[2] / counts[3]).item()
        values["valid/matched_prior_accuracy"] = (counts[4] / counts[3]).item()
    if counts[1] > 0:  # absent, not 0, when no validation example has an answer (a captions-only corpus)
        values["valid/qa_accuracy"] = (counts[0] / counts[1]).item()
    engine.train()
    return values


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = load_config(args.config, args.overrides)  # before any heavy work: a bad config fails fast on every rank
    require(run, ("data.store", "data.train", "data.answers"))
    rank, world = init_distributed()
    ckpt.resolve_resume(Path(run.run_dir) / "checkpoints", args.resume)  # a bad --resume fails before the data
    store, answers, tokenizer, train_set, valid_set, sampler = build_data(run, rank, world)
    torch.manual_seed(run.train.seed)

    from model import LxmertForPretraining

    collate = collate_for(run, store)
    if run.data.static_shapes and rank == 0:
        shapes = collate.keywords["shapes"]
        print(f"static shapes: every batch padded to {shapes.tokens} word pieces and {shapes.regions} regions, "
              f"{shapes.mlm_slots} masked-LM slots", flush=True)
    config = model_config(run, store, answers, tokenizer)
    if run.model.init_from:
        net = LxmertForPretraining.from_pretrained(ckpt.locate(run.model.init_from), config, skip_heads=True)
    else:
        net = LxmertForPretraining(config)
    valid_batches = None if valid_set is None else valid_loader(valid_set, run, rank, world, collate)
    job = Job(name="pre-training", run=run, rank=rank, world=world, model=net, model_config=config,
              train_set=train_set, sampler=sampler, collate=collate, loss_names=OBJECTIVE_NAMES,
              evaluate=None if valid_set is None else lambda engine: validate(engine, valid_batches, run),
              client={"architecture": "LxmertForPretraining", "answers": answers.answers,
                      "tokenizer_vocab": ckpt.vocab_file(run.data.tokenizer)})
    train(job, args.resume)
    return 0


if __name__ == "__main__":
    sys.exit(run_job(main, "lxmert pretrain"))
