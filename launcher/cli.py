"""The ``lxmert`` command line: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _model_class(name: str):
    import model

    return {"pretraining": model.LxmertForPretraining, "qa": model.LxmertForQuestionAnswering,
            "nlvr2": model.LxmertForNLVR2}[name]


def _job(name: str, argv: list[str]) -> int:
    import importlib

    from launcher.processes import run_job

    module = importlib.import_module(f"launcher.{name}")
    return run_job(lambda: module.main(argv), f"lxmert {name}")


def cmd_convert(args: argparse.Namespace) -> int:
    """Convert a checkpoint between our layout, Hugging Face's and the original release's."""
    from model import LxmertConfig

    config = LxmertConfig.load(args.config) if args.config is not None else None
    net, info = _model_class(args.model).from_pretrained(args.src, config, preset=args.preset, skip_heads=args.skip_heads,
                                                         output_loading_info=True)
    if args.to == "original":
        out = net.save_original(args.out)
    else:
        out = net.save_pretrained(args.out, hf=args.to == "hf")
    skipped = f", {len(info['skipped'])} head tensors skipped" if info["skipped"] else ""
    print(f"wrote {out} ({args.to} layout, {net.num_parameters():,} parameters{skipped})")
    return 0


def cmd_forward(args: argparse.Namespace) -> int:
    """Forward (and optionally backward) passes of a preset on random inputs, with timing."""
    import torch

    from model import LxmertConfig, LxmertForPretraining

    torch.manual_seed(args.seed)
    config = LxmertConfig.from_preset(args.preset)
    net = LxmertForPretraining(config)
    print(f"LXMERT {args.preset}: {net.num_parameters():,} parameters "
          f"(L={config.l_layers}, R={config.r_layers}, X={config.x_layers}, hidden {config.hidden_size})")
    b, t, r = args.batch, args.tokens, args.regions
    batch = dict(
        input_ids=torch.randint(1, config.vocab_size, (b, t)), attention_mask=torch.ones(b, t, dtype=torch.long),
        visual_feats=torch.rand(b, r, config.visual_feat_dim), visual_pos=torch.rand(b, r, config.visual_pos_dim),
    )
    net.eval()
    with torch.inference_mode():
        net(**batch)  # warm-up
        start = time.perf_counter()
        for _ in range(args.steps):
            out = net(**batch)
        elapsed = (time.perf_counter() - start) / args.steps
    print(f"forward, batch {b} x {t} tokens x {r} regions: {elapsed * 1000:.1f} ms/step, "
          f"{b / elapsed:.1f} samples/s ({torch.get_num_threads()} threads)")
    print(f"prediction_logits {tuple(out.prediction_logits.shape)}, "
          f"cross_relationship_score {tuple(out.cross_relationship_score.shape)}, "
          f"question_answering_score {tuple(out.question_answering_score.shape)}")
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    """Build, verify or describe a region-feature store."""
    from data import store

    if args.action == "build":
        manifest = store.build_store(args.out, args.tsv, args.npz_dir, dtype=args.dtype, skip_bad=args.skip_bad,
                                     overwrite=args.overwrite, progress=not args.quiet,
                                     label_files={"objects": args.objects_vocab, "attributes": args.attributes_vocab})
        print(f"wrote {args.out}: {manifest['count']} images, {manifest['regions']['min']}-{manifest['regions']['max']} "
              f"regions x {manifest['feature_dim']} ({manifest['dtype']}) in {manifest['seconds']} s")
        if manifest["skipped"]:
            print(f"skipped {manifest['skipped']} bad records, e.g.:", *manifest["skipped_examples"][:5], sep="\n  ")
    elif args.action == "verify":
        manifest = store.verify_store(args.store, progress=not args.quiet)
        print(f"{args.store}: OK, {manifest['count']} records decoded, checksum {manifest['checksum']}")
    else:
        info = store.store_info(args.store)
        print(f"{args.store}: {info['count']} images, {info['regions']['min']}-{info['regions']['max']} regions x "
              f"{info['feature_dim']} {info['dtype']}, {info['size_bytes'] / 2**20:.1f} MiB on disk")
    return 0


def cmd_corpus(args: argparse.Namespace) -> int:
    """Build, verify or describe a tokenised, memory-mapped pre-training corpus."""
    from data import tokenized

    if args.action == "build":
        from data.tokenize import load_tokenizer

        kinds = [k for k in ("json", "qa", "nlvr2") if getattr(args, k)]
        if len(kinds) != 1:
            raise ValueError("give the inputs of one kind: --json (pre-training corpus), --qa (VQA/GQA) or --nlvr2")
        kind, paths = {"json": "pretraining", "qa": "qa", "nlvr2": "nlvr2"}[kinds[0]], getattr(args, kinds[0])
        table, table_path = None, None
        if kind == "pretraining":
            from data.answers import AnswerTable

            if args.answers is None:
                raise ValueError("--json needs --answers (the answer table, all_ans.json)")
            table, table_path = AnswerTable.from_file(args.answers, args.answer_dsets), args.answers
        elif kind == "qa":
            from data.tasks import load_label_vocab

            if args.labels is None:
                raise ValueError("--qa needs --labels (the label vocabulary, trainval_ans2label.json)")
            table, table_path = load_label_vocab(args.labels), args.labels
        m = tokenized.build_corpus(args.out, paths, table, load_tokenizer(args.tokenizer), answers_path=table_path,
                                   tokenizer_name=args.tokenizer, overwrite=args.overwrite, progress=not args.quiet,
                                   kind=kind)
        print(f"wrote {args.out}: {m['pairs']} {'pairs' if kind == 'pretraining' else 'examples'} on {m['images']} "
              f"images, {m['tokens']} word pieces, {m['answers']} answers"
              + (f" ({', '.join(f'{k} {v}' for k, v in m['pairs_per_source'].items())})" if kind == "pretraining" else "")
              + f" in {m['seconds']} s")
        if m["answers_outside_table"]:
            print(f"{m['answers_outside_table']} answers outside the {'answer table' if kind == 'pretraining' else 'label vocabulary'}"
                  f" ignored, e.g. {'; '.join(m['outside_examples'][:3])}")
    elif args.action == "verify":
        m = tokenized.verify_corpus(args.corpus)
        print(f"{args.corpus}: OK, {len(m['files'])} files match the manifest's checksums, {m['pairs']} pairs")
    else:
        m = tokenized.read_manifest(args.corpus)
        size = sum(f.stat().st_size for f in Path(args.corpus).iterdir() if f.is_file())
        table = m["answer_table"]
        kind = m.get("kind", "pretraining")
        sources = {"pretraining": f"; sources {', '.join(f'{k} {v}' for k, v in m['pairs_per_source'].items())}",
                   "qa": f"; {len(m['sources'])} question types", "nlvr2": ""}[kind]
        print(f"{args.corpus}: {kind}, {m['pairs']} pairs on {m['images']} images, {m['tokens']} "
              f"word pieces, {m['answers']} answers{sources}; "
              f"tokenizer {m['tokenizer']['name']} ({m['tokenizer']['checksum'][:16]})"
              + (f", answer table {table['rows']} rows ({table['checksum'][:16]})" if table else "")
              + f"; {size / 2**20:.1f} MiB on disk")
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    """Write the synthetic world in the original file formats."""
    from data.synth import write_world

    world = write_world(args.out, images=args.images, seed=args.seed, regions=args.regions, feat_dim=args.feat_dim,
                        progress=not args.quiet)
    print(f"wrote {args.out}: {world['images']} images ({world['train_images']} train, {world['val_images']} val), "
          f"{world['regions']} regions x {world['feature_dim']}, {world['num_answers']} answers, "
          f"vocabulary of {world['vocab_size']}")
    return 0


def cmd_consolidate(args: argparse.Namespace) -> int:
    """One fp32 model from a ZeRO checkpoint directory."""
    from launcher.checkpoint import consolidate

    out = consolidate(args.ckpt_dir, args.out_dir, tag=args.tag, hf=args.hf)
    print(f"wrote {out} ({'Hugging Face' if args.hf else 'native'} layout)")
    return 0


def last_scalars(run_dir: Path, tags: tuple[str, ...]) -> dict[str, tuple[int, float]]:
    """(step, value) of the last event of each tag in ``RUN_DIR/tensorboard`` (tags not logged left out)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(Path(run_dir) / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    have = set(acc.Tags()["scalars"])
    last = {t: acc.Scalars(t)[-1] for t in tags if t in have}
    return {t: (e.step, e.value) for t, e in last.items()}


def format_table(rows: list[list[str]]) -> str:
    """Left-aligned columns, two spaces apart (rows may be of different lengths)."""
    width = [max(len(r[i]) for r in rows if len(r) > i) for i in range(max(map(len, rows)))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, width)).rstrip() for row in rows)


#: What a pre-training run's validation logs for ``lxmert results``: matching accuracy, its prior, QA accuracy.
VALIDATION = ("valid/matched_accuracy", "valid/matched_prior_accuracy", "valid/qa_accuracy")


def _pretraining_row(run_dir: Path) -> list[str]:
    """A pre-training run's row: its last held-out matching accuracy beside the share of matched
    pairs (the accuracy of always answering "matched"), and its QA accuracy, from its TensorBoard log."""
    last = last_scalars(run_dir, VALIDATION)
    if not last:
        raise ValueError(f"{run_dir}: a pre-training run without validation in its TensorBoard log (set data.valid)")
    cells = []
    if "valid/matched_accuracy" in last:
        prior = last.get("valid/matched_prior_accuracy")
        cells.append(f"matching {last['valid/matched_accuracy'][1]:.1%}" + (f" (prior {prior[1]:.1%})" if prior else ""))
    if "valid/qa_accuracy" in last:
        cells.append(f"QA {last['valid/qa_accuracy'][1]:.1%}")
    return [str(run_dir), "pretraining", "-", str(max(step for step, _ in last.values())), *cells]


def cmd_results(args: argparse.Namespace) -> int:
    """A table of fine-tuning results (each run directory's results.json), each score beside the
    answer prior's (each question type's most frequent training answer; NLVR2: the majority label);
    a pre-training run directory gives its last held-out matching accuracy beside the share of
    matched pairs, and its QA accuracy."""
    import json

    import yaml

    rows, by_type = [], {}
    for run_dir in args.run_dirs:
        path = run_dir / "results.json"
        config = run_dir / "config.yaml"  # the resolved configuration: fine-tuning's names its task
        if config.is_file() and "task" not in (yaml.safe_load(config.read_text()) or {}):
            rows.append(_pretraining_row(run_dir))
            continue
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no results (the fine-tuning run has not finished)")
        res = json.loads(path.read_text())
        init = res.get("init_from", res.get("model", "?"))
        prior = res.get("prior", {})
        rows.append([str(run_dir), res["task"], "scratch" if init in ("None", None) else init, str(res.get("steps", "-")),
                     *(f"{k} {v:.1%}" + (f" (prior {prior[k]:.1%})" if k in prior else "")
                       for k, v in res.get("valid", {}).items())])
        if res.get("valid_by_type"):
            by_type[str(run_dir)] = res["valid_by_type"]
    rows.insert(0, ["run", "task", "initialised from", "steps", "validation (prior: answering without the image)"])
    print(format_table(rows))
    if args.by_type and by_type:
        print("\naccuracy by question type (prior: each type's most frequent training answer)")
        print(by_type_table(by_type))
    elif args.by_type:
        print("\nno accuracy by question type: no VQA or GQA run here has valid_by_type in its results.json")
    return 0


def by_type_table(runs: dict[str, dict[str, dict]]) -> str:
    """One row per question type, one column per run: accuracy (prior), from results.json's valid_by_type."""
    kinds = sorted({k for found in runs.values() for k in found})
    rows = [["question type", "questions", *runs]]
    for kind in kinds:
        cells = [found.get(kind) for found in runs.values()]
        count = next(c["questions"] for c in cells if c)
        rows.append([kind, str(count), *("-" if c is None else f"{c['accuracy']:.1%}"
                                         + (f" ({c['prior']:.1%})" if "prior" in c else "") for c in cells)])
    return format_table(rows)


def _subject(args: argparse.Namespace):
    """The model of an inspection command and the feature store it reads."""
    from data.store import FeatureStore
    from interpret.subject import load_subject

    subject = load_subject(args.model, tokenizer=args.tokenizer, answers=getattr(args, "answers", None),
                           preset=args.preset, max_tokens=args.max_tokens)
    return subject, FeatureStore(args.store)


def _cut_notes(rows: list[dict]) -> None:
    for row in rows:
        if row.get("cut"):
            print(f"note: cut by the token limit: {row['cut']!r}", file=sys.stderr)


def cmd_ask(args: argparse.Namespace) -> int:
    """The top answers to a question about one image."""
    import json

    from interpret.queries import ask

    subject, store = _subject(args)
    result = ask(subject, store, args.image, args.question, topk=args.topk, truncate=args.truncate)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    _cut_notes([result])
    print(f"{args.question!r} about image {args.image} ({result['kind']} model, {result['scoring']}):")
    for row in result["answers"]:
        print(f"  {row['probability']:7.2%}  {row['answer']}")
    return 0


def cmd_match(args: argparse.Namespace) -> int:
    """The matching probability of each (image, sentence) pair, ranked."""
    import json

    from interpret.queries import match

    subject, store = _subject(args)
    result = match(subject, store, args.image, args.sentence, truncate=args.truncate)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    _cut_notes(result["pairs"])
    print(f"P(matched) of {len(result['pairs'])} image-sentence pairs, highest first:")
    for rank, row in enumerate(result["pairs"], 1):
        print(f"  {rank:3d}. {row['probability']:7.2%}  {row['image']}  {row['sentence']!r}")
    return 0


def cmd_attention(args: argparse.Namespace) -> int:
    """Attention figures, their numbers and one HTML page for one image and sentence."""
    from interpret.report import write_report

    subject, store = _subject(args)
    made = write_report(subject, store, args.image, args.sentence, args.out, head=args.head,
                        photo_file=args.image_file, truncate=args.truncate)
    _cut_notes([{"cut": made["example"].cut}])
    maps = made["maps"]
    print(f"attention of {len(maps.tokens)} word pieces and {len(maps.boxes)} boxes "
          f"({'mean over heads' if args.head is None else f'head {args.head}'}):")
    print(f"  page:     {made['page']}")
    for path in made["figures"]:
        print(f"  figure:   {path}")
    print(f"  per word: {len(made['words'])} figures in {args.out / 'words'}")
    print(f"  numbers:  {made['numbers']} ({made['info'].name} says what each array holds)")
    return 0


def cmd_universal(args: argparse.Namespace) -> int:
    """Convert a ZeRO checkpoint to DeepSpeed's universal format (resume at another world size)."""
    from launcher.checkpoint import to_universal

    tag = to_universal(args.ckpt_dir, args.tag)
    print(f"wrote {args.ckpt_dir / tag}; resume with --resume {tag} at any number of ranks")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lxmert", description="LXMERT pre-training and fine-tuning with DeepSpeed.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("convert", help="convert a checkpoint between layouts (ours, Hugging Face, original)",
                       description="Read SRC (a Hugging Face LXMERT directory, an original *_LXRT.pth file, or a "
                                   "directory of ours) and write it to OUT in another layout.")
    p.add_argument("src", type=Path, help="checkpoint directory or file")
    p.add_argument("out", type=Path, help="output directory (a .pth file for --to original)")
    p.add_argument("--to", choices=("native", "hf", "original"), default="native",
                   help="native: this project's safetensors + config.json; hf: loadable by "
                        "transformers.LxmertForPreTraining.from_pretrained; original: a *_LXRT.pth state dict")
    p.add_argument("--model", choices=("pretraining", "qa", "nlvr2"), default="pretraining",
                   help="which model the checkpoint holds (default: pretraining)")
    p.add_argument("--preset", default="base",
                   help="for a file without config.json: the preset whose settings complete the sizes read off "
                        "the weights (default: base)")
    p.add_argument("--config", type=Path,
                   help="a config.json (ours or Hugging Face's) to use instead of the source's own or the preset")
    p.add_argument("--skip-heads", action="store_true",
                   help="tolerate absent or extra head weights (absent heads are freshly initialised)")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("features", help="build, verify or describe an LMDB region-feature store",
                       description="Region-feature stores (LMDB) built from bottom-up-attention TSV files or "
                                   "folders of per-image .npz files.")
    fsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    b = fsub.add_parser("build", help="convert TSV files and/or npz folders into a store",
                        description="Convert region features into a store. TSV: the bottom-up-attention layout "
                                    "(img_id, img_h, img_w, objects_id, objects_conf, attrs_id, attrs_conf, num_boxes, "
                                    "boxes, features; base64 raw buffers). npz: one file per image, img_id = file name; "
                                    "arrays features|x|feat, boxes|bbox, image_h|img_h, image_w|img_w, "
                                    "objects_id|objects, objects_conf, attrs_id|attrs, attrs_conf (or these in an "
                                    "'info' dict). The store is written to OUT.partial and renamed when complete.")
    b.add_argument("--tsv", type=Path, action="append", default=[], help="a TSV file (repeat for several)")
    b.add_argument("--npz-dir", type=Path, action="append", default=[], help="a folder of .npz files (repeatable)")
    b.add_argument("--out", type=Path, required=True, help="the store directory to create")
    b.add_argument("--dtype", choices=("float16", "float32"), default="float16",
                   help="feature precision in the store (default float16; float32 keeps full precision)")
    b.add_argument("--objects-vocab", type=Path,
                   help="the detector's object names, line i naming id i (bottom-up-attention's objects_vocab.txt): "
                        "kept in the store, so `lxmert attention` labels boxes by name")
    b.add_argument("--attributes-vocab", type=Path, help="the detector's attribute names (attributes_vocab.txt), as above")
    b.add_argument("--skip-bad", action="store_true", help="skip and count bad records instead of stopping")
    b.add_argument("--overwrite", action="store_true", help="replace an existing store")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    v = fsub.add_parser("verify", help="decode every record and check the manifest's count and checksum")
    v.add_argument("store", type=Path)
    v.add_argument("--quiet", action="store_true", help="no progress bar")
    i = fsub.add_parser("info", help="print count, dims, dtype and size on disk")
    i.add_argument("store", type=Path)
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("corpus", help="build, verify or describe a tokenised, memory-mapped corpus",
                       description="A corpus tokenised once into flat arrays that every rank and loader worker maps "
                                   "read-only: give its directory as data.train / data.valid / data.test instead of the "
                                   "JSON files. Start-up and memory do not grow with the corpus.")
    csub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    b = csub.add_parser("build", help="tokenise JSON files into a corpus directory",
                        description="Tokenise every sentence of the inputs and write OUT (built under OUT.partial, "
                                    "renamed when complete). Inputs of one kind: --json, the pre-training corpus "
                                    "([{img_id, sentf: {source: [sentence]}, labelf: {source: [{answer: score}]}}], "
                                    "with --answers); --qa, VQA/GQA files ([{question_id, img_id, sent, label}], with "
                                    "--labels); --nlvr2, NLVR2 files ([{identifier, img0, img1, sent, label}]). A run "
                                    "must use the same tokenizer and answer table or label vocabulary: the manifest's "
                                    "checksums are compared before training.")
    b.add_argument("--json", type=Path, action="append", help="a pre-training corpus JSON file (repeat for several)")
    b.add_argument("--qa", type=Path, action="append", help="a VQA or GQA JSON file (repeatable)")
    b.add_argument("--nlvr2", type=Path, action="append", help="an NLVR2 JSON file (repeatable)")
    b.add_argument("--answers", type=Path, help="with --json: the answer table (all_ans.json; as data.answers)")
    b.add_argument("--answer-dsets", nargs="+", default=None, metavar="DSET",
                   help="with --json: restrict the answer table to these datasets (as data.answer_dsets)")
    b.add_argument("--labels", type=Path, help="with --qa: the label vocabulary (trainval_ans2label.json; as data.labels)")
    b.add_argument("--tokenizer", default="bert-base-uncased",
                   help="a hub name, a vocab.txt or a tokenizer folder (as data.tokenizer; default bert-base-uncased)")
    b.add_argument("--out", type=Path, required=True, help="the corpus directory to create")
    b.add_argument("--overwrite", action="store_true", help="replace an existing corpus")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    v = csub.add_parser("verify", help="check every file against the manifest's checksums and counts")
    v.add_argument("corpus", type=Path)
    i = csub.add_parser("info", help="print counts, sources, checksums and size on disk")
    i.add_argument("corpus", type=Path)
    p.set_defaults(func=cmd_corpus)

    # the jobs parse their own arguments (main() hands them over before this parser runs): listed for --help
    for name, help_text in (("pretrain", "pre-train in this process (launchers: see launcher/pretrain.py --help)"),
                            ("finetune", "fine-tune VQA, GQA or NLVR2 in this process (launchers: see "
                                         "launcher/finetune.py --help)"),
                            ("evaluate", "finetune --eval-only: score a fine-tuned model on data.valid and predict "
                                         "data.test in the benchmark's submission format")):
        p = sub.add_parser(name, help=help_text, add_help=False)
        p.add_argument("args", nargs=argparse.REMAINDER)

    p = sub.add_parser("consolidate", help="turn a ZeRO checkpoint into one fp32 model",
                       description="Consolidate a ZeRO 1/2/3 checkpoint directory (the run's checkpoints/ folder) "
                                   "into model.safetensors + config.json (+ vocab.txt, answers.json), via DeepSpeed's "
                                   "zero_to_fp32.")
    p.add_argument("ckpt_dir", type=Path)
    p.add_argument("out_dir", type=Path)
    p.add_argument("--tag", help="checkpoint tag (default: the latest complete one)")
    p.add_argument("--hf", action="store_true", help="write the Hugging Face layout (transformers loads it)")
    p.set_defaults(func=cmd_consolidate)

    p = sub.add_parser("results", help="print a table of fine-tuning (and pre-training) results",
                       description="Read RUN_DIR/results.json of each fine-tuning run and print one row per run, each "
                                   "score beside its prior (the answer prior: each question type's most frequent "
                                   "training answer). A pre-training RUN_DIR gives its last held-out matching accuracy "
                                   "beside the share of matched pairs, and its QA accuracy (its TensorBoard log).")
    p.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR")
    p.add_argument("--by-type", action="store_true",
                   help="also a table of VQA/GQA accuracy by question type (VQA's perQuestionType), each beside its prior")
    p.set_defaults(func=cmd_results)

    p = sub.add_parser("universal", help="convert a ZeRO checkpoint so that another number of ranks can resume it",
                       description="Convert RUN_DIR/checkpoints/<tag> with DeepSpeed's ds_to_universal into "
                                   "<tag>_universal; then `launcher/pretrain.py ... --resume <tag>_universal` at any "
                                   "data-parallel size.")
    p.add_argument("ckpt_dir", type=Path)
    p.add_argument("--tag", help="checkpoint tag (default: the latest complete one)")
    p.set_defaults(func=cmd_universal)

    p = sub.add_parser("synth", help="write a small synthetic world in the original file formats",
                       description="Write feature TSVs, the pre-training corpus, the answer table, VQA/GQA/NLVR2 task "
                                   "files and a WordPiece vocabulary for a synthetic world whose captions and "
                                   "questions can only be answered by looking at its regions.")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--images", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--regions", type=int, default=16, help="regions per image (10 to 100)")
    p.add_argument("--feat-dim", type=int, default=2048, help="region feature size (default 2048, as real features)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_synth)

    def inspection(name: str, help_text: str, description: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=description)
        p.add_argument("model", type=Path, metavar="MODEL",
                       help="a model directory (ours: pre-trained, consolidated or a fine-tuning run's best/; or "
                            "Hugging Face's) or an original *_LXRT.pth file")
        p.add_argument("--store", type=Path, required=True, help="the feature store holding the image(s)")
        p.add_argument("--tokenizer", help="a vocab.txt, tokenizer folder or hub name (default: the model "
                                           "directory's own vocab.txt or tokenizer files, else bert-base-uncased)")
        p.add_argument("--preset", default="base", help="for a bare original file: the preset completing its sizes")
        p.add_argument("--max-tokens", type=int, default=20,
                       help="word pieces the model reads, [CLS] and [SEP] included (default 20, as in training)")
        p.add_argument("--truncate", action="store_true",
                       help="cut a sentence over --max-tokens (and say what was cut) instead of refusing it")
        return p

    p = inspection("ask", "the top answers to a question about one image",
                   "Answer QUESTION about image IMG_ID with a pre-trained model's QA head (softmax over its answer "
                   "table) or a fine-tuned VQA/GQA model (sigmoid of each label's score).")
    p.add_argument("--image", required=True, metavar="IMG_ID", help="the image's id in the store")
    p.add_argument("--question", required=True)
    p.add_argument("--topk", type=int, default=5, help="answers to show (default 5)")
    p.add_argument("--answers", type=Path,
                   help="the answer table of the model's answer head (default: the model directory's answers.json): "
                        "all_ans.json, trainval_label2ans.json or trainval_ans2label.json")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_ask)

    p = inspection("match", "cross-modality matching probabilities of image-sentence pairs, ranked",
                   "Score every pair of the given images and sentences with a pre-trained model's matching head "
                   "(P(matched) = softmax of its two logits); several of either give a small retrieval view.")
    p.add_argument("--image", required=True, action="append", metavar="IMG_ID", help="an image id (repeatable)")
    p.add_argument("--sentence", required=True, action="append", help="a sentence (repeatable)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_match)

    p = inspection("attention", "draw the attention figures of one image and sentence, with an HTML page",
                   "Write into OUT: language.png (word x word per language layer), relations_layer<i>.png "
                   "(the strongest box-to-box edges of each object-relationship layer), words_layer<i>.png and "
                   "words/ (each word's boxes shaded by cross-attention), boxes_layer<i>.png (each box's words), "
                   "attention.html (self-contained: point at a word or a box), and attention.npz + attention.json "
                   "(the numbers behind every figure).")
    p.add_argument("--image", required=True, metavar="IMG_ID", help="the image's id in the store")
    p.add_argument("--sentence", required=True)
    p.add_argument("--out", type=Path, required=True,
                   help="the folder to write (a previous run's folder is replaced; any other non-empty folder is refused)")
    p.add_argument("--image-file", type=Path,
                   help="the photo (any format Pillow reads), stretched to the stored width and height under the "
                        "boxes (default: a plain canvas of that size)")
    p.add_argument("--head", type=int, help="draw one attention head (default: the mean over heads)")
    p.set_defaults(func=cmd_attention)

    p = sub.add_parser("forward", help="time forward passes of a model preset on random inputs",
                       description="Build a preset with random weights and time forward passes on random inputs.")
    p.add_argument("--preset", default="base", help="model preset: base (the paper), small or tiny")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--tokens", type=int, default=20)
    p.add_argument("--regions", type=int, default=36)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_forward)
    return parser


JOBS = {"pretrain": ("pretrain", []), "finetune": ("finetune", []), "evaluate": ("finetune", ["--eval-only"])}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in JOBS:  # the job parses its own arguments (argparse's REMAINDER drops leading options)
        name, extra = JOBS[argv[0]]
        return _job(name, [*extra, *argv[1:]])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError, KeyError) as exc:
        print(f"lxmert {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
