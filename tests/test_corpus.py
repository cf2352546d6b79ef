"""The tokenised, memory-mapped pre-training corpus (`lxmert corpus build`): the same examples as the
JSON path, bad input refused, mismatched tokenizer or answer table refused, nothing growing with the corpus."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from data.answers import AnswerTable
from data.corpus import open_pairs
from data.objectives import ObjectiveConfig
from data.pretraining import PretrainingDataset
from data.store import FeatureStore, build_store
from data.synth import write_world
from data.tokenize import load_tokenizer
from data.tokenized import TokenizedCorpus, build_corpus, verify_corpus

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The synthetic world plus a second corpus file that exercises what the world's own does not:
    soft scores (0.3 ... 1.0), answers outside the table, sentences longer than 20 pieces, a
    source without labels, an image repeated across files, an entry with no sentences."""
    root = tmp_path_factory.mktemp("corpus_world")
    write_world(root, images=40, feat_dim=16, regions=10, progress=False)
    build_store(root / "store", [root / "features" / "train.tsv"], progress=False)
    rows = json.loads((root / "lxmert" / "train.json").read_text())
    answers = [r["ans"] for r in json.loads((root / "lxmert" / "all_ans.json").read_text())]
    words = [w for w in (root / "vocab.txt").read_text().split() if w.isalpha()]
    extra = []
    for n, row in enumerate(rows[:12]):
        long = " ".join(words[(n + k) % len(words)] for k in range(25 + n))
        qs = [f"is the {words[n % len(words)]} here ?", long, "what is it ?"]
        extra.append({"img_id": row["img_id"], "sentf": {"vg": qs, "captions_only": [long, "a picture ."]},
                      "labelf": {"vg": [{answers[n % len(answers)]: 0.3, answers[(n + 1) % len(answers)]: 0.9},
                                        {"not an answer of the table": 1.0, answers[n % len(answers)]: 0.6},
                                        {answers[(n + 2) % len(answers)]: 1}]}})
    extra.append({"img_id": rows[0]["img_id"], "sentf": {}, "labelf": {}})
    (root / "lxmert" / "extra.json").write_text(json.dumps(extra))
    return root


def corpus_files(root: Path) -> list[Path]:
    return [root / "lxmert" / "train.json", root / "lxmert" / "extra.json"]


@pytest.fixture(scope="module")
def built(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("built") / "corpus"
    tok, answers = load_tokenizer(world / "vocab.txt"), AnswerTable.from_file(world / "lxmert" / "all_ans.json")
    manifest = build_corpus(out, corpus_files(world), answers, tok, world / "lxmert" / "all_ans.json", "vocab.txt",
                            progress=False)
    return out, manifest


def _same_example(x: dict, y: dict, where) -> None:
    assert x.keys() == y.keys()
    for k in x:
        if isinstance(x[k], torch.Tensor):
            assert x[k].dtype == y[k].dtype and torch.equal(x[k], y[k]), (k, where)
        else:
            assert x[k] == y[k], (k, where)


@pytest.mark.parametrize("case", ["all", "sources", "missing_images"])
def test_examples_are_bitwise_the_json_paths(world, built, tmp_path, case):
    """For the same seed, every example of two epochs (masks, mismatched sentences, swapped regions,
    sampled answers) is the same from the built corpus as from the JSON files; so is the report."""
    out, _ = built
    tok, answers = load_tokenizer(world / "vocab.txt"), AnswerTable.from_file(world / "lxmert" / "all_ans.json")
    store = FeatureStore(world / "store")
    sources, images = None, store
    if case == "sources":
        sources = ["vg", "mscoco"]
    if case == "missing_images":  # a store holding every other image: pairs of the others are dropped
        ids = sorted(store.ids())
        images = set(ids[::2])
    a, report_a = open_pairs(corpus_files(world), tok, answers, images, sources)
    b, report_b = open_pairs([out], tok, answers, images, sources)
    if case == "all":
        assert str(report_a) == str(report_b) and vars(report_a) == vars(report_b)
    else:  # answers outside the table: counted over every pair at the build, over the kept ones from JSON
        assert {**vars(report_a), "answers_outside_table": 0} == {**vars(report_b), "answers_outside_table": 0}
    if case == "missing_images":
        assert report_b.dropped_items > 0 and b.selection is not None and b.used is not None
    if case == "all":
        assert b.selection is None and b.used is None  # nothing to select: no per-pair array in memory
    assert list(a.image_ids) == list(b.image_ids)
    objectives = ObjectiveConfig(qa_start_epoch=0)
    da, db = (PretrainingDataset(p, store, tok, objectives, seed=5) for p in (a, b))
    assert len(da) == len(db) > 0
    truncated = 0
    for epoch in range(2):
        for i in range(len(da)):
            x, y = da[(epoch, i)], db[(epoch, i)]
            _same_example(x, y, (epoch, i))
            truncated += len(x["input_ids"]) == 20
    assert truncated > 0  # the long sentences were cut to 20 pieces the same way
    for i in range(len(a)):
        assert a.answers(i) == b.answers(i), i  # soft scores exactly (0.3 is not a float32)


def test_manifest_counts_sources_and_scores(world, built):
    out, m = built
    tok, answers = load_tokenizer(world / "vocab.txt"), AnswerTable.from_file(world / "lxmert" / "all_ans.json")
    pairs, _ = open_pairs(corpus_files(world), tok, answers)
    assert m["pairs"] == len(pairs) and m["sources"] == ["mscoco", "vqa", "gqa", "vg", "captions_only"]
    assert m["answers_outside_table"] == 12 and sorted(m["score_values"]) == [0.3, 0.6, 0.9, 1.0]
    assert m["images"] == len(pairs.image_ids) and m["tokens"] > 20 * 12
    assert verify_corpus(out) == m
    assert not out.with_name(out.name + ".partial").exists()


def test_verify_finds_a_changed_file(built, tmp_path):
    copy = tmp_path / "corpus"
    shutil.copytree(built[0], copy)
    tokens = (copy / "tokens.npy").read_bytes()
    (copy / "tokens.npy").write_bytes(tokens[:-1] + bytes([tokens[-1] ^ 1]))
    with pytest.raises(ValueError, match=r"tokens\.npy: checksum .* differs from the manifest"):
        verify_corpus(copy)


def test_a_run_with_another_tokenizer_or_answer_table_is_refused(world, built, tmp_path):
    out, m = built
    tok, answers = load_tokenizer(world / "vocab.txt"), AnswerTable.from_file(world / "lxmert" / "all_ans.json")
    vocab = (world / "vocab.txt").read_text().splitlines()
    (tmp_path / "vocab.txt").write_text("\n".join(vocab[:-1] + ["zzzextra"]) + "\n")
    other_tok = load_tokenizer(tmp_path / "vocab.txt")
    with pytest.raises(ValueError) as err:
        open_pairs([out], other_tok, answers)
    assert m["tokenizer"]["checksum"][:16] in str(err.value) and "tokenizer" in str(err.value)
    other = TokenizedCorpus(out)
    other.check(tok, answers.answers)  # the build's own pass
    fewer = AnswerTable(answers.answers[:-1])
    with pytest.raises(ValueError) as err:
        open_pairs([out], tok, fewer)
    assert m["answer_table"]["checksum"][:16] in str(err.value) and "answer table" in str(err.value)
    from data.tokenized import answers_checksum
    assert answers_checksum(fewer)[:16] in str(err.value)


@pytest.mark.parametrize("bad, message", [
    ([{"sentf": {"a": ["x"]}}], r"entry 1 lacks img_id"),
    ([{"img_id": "i", "sentf": {"vqa": ["x", "y"]}, "labelf": {"vqa": [{"a": 1}]}}], r"entry 1 \(i\): 2 vqa sentences but 1 labels"),
    ([{"img_id": "i", "sentf": {"vqa": ["x"]}, "labelf": {"vqa": [{"a": "high"}]}}], r"entry 1 \(i\): answer 'a' has score 'high'"),
    ([{"img_id": "i", "sentf": {"vqa": "x"}}], r"entry 1 \(i\): sentf\['vqa'\] must be a list"),
    ("not json", r"unreadable corpus file"),
])
def test_bad_input_names_file_and_entry_and_leaves_nothing(world, tmp_path, bad, message):
    good = json.loads((world / "lxmert" / "train.json").read_text())[:1]
    path = tmp_path / "bad.json"
    path.write_text(bad if isinstance(bad, str) else json.dumps(good + bad))
    out = tmp_path / "corpus"
    proc = subprocess.run([str(BIN / "lxmert"), "corpus", "build", "--json", str(path), "--answers",
                           str(world / "lxmert" / "all_ans.json"), "--tokenizer", str(world / "vocab.txt"),
                           "--out", str(out), "--quiet"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0], proc.stderr
    assert __import__("re").search(message, lines[0]), lines[0]
    assert list(tmp_path.iterdir()) == [path]  # neither OUT nor OUT.partial


def test_start_up_does_not_grow_with_the_corpus(world, tmp_path):
    """What crosses to each loader worker (the pickled dataset) is the same size for a corpus 8x as
    large (a path and a manifest); from JSON it grows with the corpus."""
    tok, answers = load_tokenizer(world / "vocab.txt"), AnswerTable.from_file(world / "lxmert" / "all_ans.json")
    rows = json.loads((world / "lxmert" / "train.json").read_text())
    store = FeatureStore(world / "store")
    sizes = {}
    for times in (1, 8):
        path = tmp_path / f"x{times}.json"
        path.write_text(json.dumps(rows * times))
        build_corpus(tmp_path / f"c{times}", [path], answers, tok, progress=False)
        for kind, paths in (("mapped", [tmp_path / f"c{times}"]), ("json", [path])):
            pairs, _ = open_pairs(paths, tok, answers, store)
            dataset = PretrainingDataset(pairs, store, tok)
            dataset[0]  # maps the arrays in this process: they must not travel
            sizes[kind, times] = len(pickle.dumps(dataset))
    assert abs(sizes["mapped", 8] - sizes["mapped", 1]) < 64, sizes  # the manifest's counts have more digits
    assert sizes["json", 8] > 4 * sizes["json", 1], sizes



@pytest.mark.parametrize("task", ["vqa", "gqa", "nlvr2"])
def test_fine_tuning_examples_are_bitwise_the_json_paths(world, tmp_path, task):
    """VQA, GQA and NLVR2 from a corpus built of their files (`lxmert corpus build --qa/--nlvr2`):
    every example the same as from the JSON (question ids of either type, soft targets, both
    images), and the benchmark's scores of one set of predictions the same from either's rows."""
    from data.evaluation import scores
    from data.tasks import NLVR2Dataset, QADataset, load_label_vocab

    tok, store = load_tokenizer(world / "vocab.txt"), FeatureStore(world / "store")
    train = world / task / "train.json"
    rows = json.loads(train.read_text())
    if task != "nlvr2":  # soft scores and an answer outside the vocabulary, as VQA's files have
        rows[0]["label"] = {**rows[0]["label"], "not a label": 0.3}
        for k, row in enumerate(rows[1:40]):
            row["label"] = {ans: [0.3, 0.6, 0.9][k % 3] for ans in row["label"]}
    rows = [r for r in rows if r.get("img0", r.get("img_id")) in store and r.get("img1", r.get("img_id")) in store]
    (tmp_path / "in.json").write_text(json.dumps(rows))
    out = tmp_path / "corpus"
    if task == "nlvr2":
        build_corpus(out, [tmp_path / "in.json"], None, tok, kind="nlvr2", progress=False)
        a, b = (NLVR2Dataset([p], store, tok, require_label=True) for p in (tmp_path / "in.json", out))
    else:
        ans2label = load_label_vocab(world / task / "trainval_ans2label.json")
        build_corpus(out, [tmp_path / "in.json"], ans2label, tok, kind="qa", progress=False)
        a, b = (QADataset([p], store, tok, ans2label) for p in (tmp_path / "in.json", out))
        assert a.unknown_answers == b.unknown_answers == 1
        with pytest.raises(ValueError, match=r"1 answers outside the table, e\.g\. .*example 0 .*'not a label'"):
            QADataset([out], store, tok, ans2label, strict=True)
    assert len(a) == len(b) == len(rows) > 0
    for i in range(len(a)):
        x, y = a[(0, i)], b[(0, i)]
        assert x.keys() == y.keys()
        for k in x:
            if k == "visual_feats" or k == "visual_pos":
                xs, ys = (v if isinstance(v, list) else [v] for v in (x[k], y[k]))
                assert all(torch.equal(p, q) for p, q in zip(xs, ys)) and len(xs) == len(ys), (k, i)
            elif isinstance(x[k], torch.Tensor):
                assert x[k].dtype == y[k].dtype and torch.equal(x[k], y[k]), (k, i)
            else:
                assert x[k] == y[k] and type(x[k]) is type(y[k]), (k, i)
    g = torch.Generator().manual_seed(0)
    if task == "nlvr2":
        predictions = {r["identifier"]: int(torch.randint(2, (1,), generator=g)) for r in rows}
    else:
        answers = sorted({ans for r in rows for ans in r["label"] if ans in ans2label})
        predictions = {r["question_id"]: answers[int(torch.randint(len(answers), (1,), generator=g))] for r in rows}
    assert scores(task, predictions, a.rows) == scores(task, predictions, b.rows)
    assert 0 < next(iter(scores(task, predictions, b.rows).values())) < 1
    # the answer prior from either: the corpus keeps each question's type (VQA's field, GQA's first two words)
    from data.evaluation import prior_predictions

    labels = set(ans2label) if task != "nlvr2" else ()
    prior = prior_predictions(task, a.label_rows(), a.rows, labels)
    assert prior == prior_predictions(task, b.label_rows(), b.rows, labels)
    if task != "nlvr2":
        assert len(set(prior.values())) > 1  # several question types, several answers


def test_a_corpus_of_another_kind_or_label_vocabulary_is_refused(world, built, tmp_path):
    from data.tasks import QADataset, load_label_vocab

    tok, store = load_tokenizer(world / "vocab.txt"), FeatureStore(world / "store")
    ans2label = load_label_vocab(world / "vqa" / "trainval_ans2label.json")
    with pytest.raises(ValueError, match=r"a pretraining corpus, where qa data is expected .*--qa"):
        QADataset([built[0]], store, tok, ans2label)
    build_corpus(tmp_path / "qa", [world / "vqa" / "train.json"], ans2label, tok, kind="qa", progress=False)
    fewer = dict(list(ans2label.items())[:-1])
    with pytest.raises(ValueError, match=r"label vocabulary .* checksum .* this run's label vocabulary"):
        QADataset([tmp_path / "qa"], store, tok, fewer)


def test_cli_builds_each_kind_verifies_and_describes(world, tmp_path):
    lxmert = str(BIN / "lxmert")

    def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([lxmert, "corpus", *args], capture_output=True, text=True, timeout=120)
        assert (proc.returncode == 0) == ok, proc.stderr
        return proc

    tok = ["--tokenizer", str(world / "vocab.txt"), "--quiet"]
    run("build", "--qa", str(world / "vqa" / "train.json"), "--labels", str(world / "vqa" / "trainval_ans2label.json"),
        "--out", str(tmp_path / "qa"), *tok)
    run("build", "--nlvr2", str(world / "nlvr2" / "train.json"), "--out", str(tmp_path / "nlvr2"), *tok)
    assert "qa, " in run("info", str(tmp_path / "qa")).stdout and "question types" in run("info", str(tmp_path / "qa")).stdout
    assert "nlvr2, " in run("info", str(tmp_path / "nlvr2")).stdout
    assert "OK" in run("verify", str(tmp_path / "nlvr2")).stdout
    err = run("build", "--qa", str(world / "vqa" / "train.json"), "--out", str(tmp_path / "x"), *tok, ok=False).stderr
    assert "--qa needs --labels" in err and not (tmp_path / "x").exists()
    err = run("build", "--qa", str(world / "vqa" / "train.json"), "--nlvr2", str(world / "nlvr2" / "train.json"),
              "--out", str(tmp_path / "x"), *tok, ok=False).stderr
    assert "inputs of one kind" in err


def test_an_unfinished_build_is_not_a_corpus(built, tmp_path):
    """A build killed while writing leaves OUT.partial only: reading OUT says so; the next build replaces it."""
    partial = tmp_path / "corpus.partial"
    shutil.copytree(built[0], partial)
    (partial / "manifest.json").unlink()  # killed before the manifest, written last
    with pytest.raises(FileNotFoundError, match=r"no such corpus \(.*corpus\.partial is an unfinished build\)"):
        TokenizedCorpus(tmp_path / "corpus")
    world = Path(built[1]["inputs"][0]["path"]).parents[1]
    build_corpus(tmp_path / "corpus", corpus_files(world), AnswerTable.from_file(world / "lxmert" / "all_ans.json"),
                 load_tokenizer(world / "vocab.txt"), progress=False)
    assert not partial.exists() and len(TokenizedCorpus(tmp_path / "corpus")) == built[1]["pairs"]
