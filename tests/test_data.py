"""Corpus, answers, tokenisation, the objectives, collation and the resumable sampler."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from data.answers import AnswerTable, normalize_answer
from data.collate import collate_pretraining
from data.corpus import load_corpus
from data.objectives import ObjectiveConfig, mask_regions, mask_tokens, sample_answer
from data.pretraining import PretrainingDataset
from data.sampler import ResumableSampler
from data.store import FeatureStore, build_store
from data.synth import NLVR2_PAIRS, write_world
from data.tokenize import load_tokenizer
from launcher.processes import worker_context


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    info = write_world(root, images=60, feat_dim=32, regions=12, progress=False)
    build_store(root / "store", [root / "features" / "train.tsv", root / "features" / "val.tsv"], progress=False)
    return root, info


def test_synthetic_world_names_its_detector_labels(world, tmp_path):
    """The world's label files name every id its regions use, and a store built with them keeps them."""
    from data.synth import CLASSES, COLOURS

    root, _ = world
    f = root / "features"
    store = build_store(tmp_path / "named", [f / "train.tsv"], progress=False,
                        label_files={"objects": f / "objects_vocab.txt", "attributes": f / "attributes_vocab.txt"})
    names = FeatureStore(tmp_path / "named").label_names()
    assert names["objects"][:len(CLASSES)] == CLASSES and names["attributes"][:len(COLOURS)] == COLOURS
    assert len(names["objects"]) == store["label_ids"]["objects"] and len(names["attributes"]) == store["label_ids"]["attributes"]
    rec = FeatureStore(tmp_path / "named")[next(FeatureStore(tmp_path / "named").ids())]
    assert all(names["objects"][i] == (CLASSES[i] if i < len(CLASSES) else "__background__") for i in rec.objects_id)


def make_dataset(world, objectives=None, seed=0, **corpus_kw):
    root, _ = world
    answers = AnswerTable.from_file(root / "lxmert" / "all_ans.json")
    store = FeatureStore(root / "store")
    items, _ = load_corpus([root / "lxmert" / "train.json"], answers=answers, images=store, **corpus_kw)
    return PretrainingDataset(items, store, load_tokenizer(root / "vocab.txt"), objectives, seed=seed)


def test_answer_normalisation_and_table(tmp_path):
    assert normalize_answer("The Grey.") == "gray"
    assert normalize_answer("an apple") == "apple" and normalize_answer("two") == "2" and normalize_answer("Ten.") == "10"
    (tmp_path / "all_ans.json").write_text(json.dumps([
        {"ans": "Two", "dsets": ["vqa"]}, {"ans": "a dog", "dsets": ["gqa"]}, {"ans": "grey", "dsets": ["vqa", "gqa"]}]))
    table = AnswerTable.from_file(tmp_path / "all_ans.json")
    assert table.answers == ["2", "dog", "gray"] and table.id("the dog.") == 1 and table.id("cat") is None
    assert AnswerTable.from_file(tmp_path / "all_ans.json", dsets=["vqa"]).answers == ["2", "gray"]


def test_corpus_sources_and_missing_images(world, tmp_path):
    root, info = world
    answers = AnswerTable.from_file(root / "lxmert" / "all_ans.json")
    items, report = load_corpus([root / "lxmert" / "train.json"], answers=answers)
    assert {it.source for it in items} == {"mscoco", "vqa", "gqa"}
    assert all(it.answers for it in items if it.source != "mscoco")
    assert all(not it.answers for it in items if it.source == "mscoco")
    only, _ = load_corpus([root / "lxmert" / "train.json"], sources=["vqa"], answers=answers)
    assert {it.source for it in only} == {"vqa"} and 0 < len(only) < len(items)
    half = {it.img_id for it in items[: len(items) // 2]}
    kept, report = load_corpus([root / "lxmert" / "train.json"], answers=answers, images=half)
    assert {it.img_id for it in kept} == half
    assert report.missing_images == info["train_images"] - len(half) and report.dropped_items == len(items) - len(kept)
    assert "not in the feature store" in str(report) and report.missing_examples
    with pytest.raises(ValueError, match="corpus images are not in the feature store"):
        load_corpus([root / "lxmert" / "train.json"], images=half, missing="error")


def test_tokenizer_wraps_and_truncates(world):
    root, _ = world
    tok = load_tokenizer(root / "vocab.txt")
    ids = tok("a red dog .")["input_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert tok.convert_ids_to_tokens(ids[1:-1]) == ["a", "red", "dog", "."]
    from data.tokenize import encode
    long = encode(tok, " ".join(["dog"] * 50))
    assert len(long) == 20 and long[-1] == tok.sep_token_id


def test_token_masking_statistics():
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 1000, (200_000,))
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[::10] = True
    inputs, labels = mask_tokens(ids, special, 1000, 4, gen)
    chosen = labels != -100
    assert not chosen[special].any()
    rate = chosen.float().sum() / (~special).sum()
    assert abs(rate - 0.15) < 0.005
    assert torch.equal(labels[chosen], ids[chosen])
    masked = (inputs[chosen] == 4).float().mean()
    kept = (inputs[chosen] == ids[chosen]).float().mean()
    assert abs(masked - 0.8) < 0.01 and abs(kept - (0.1 + 0.1 / 990)) < 0.01  # random ids rarely hit the original
    assert torch.equal(inputs[~chosen], ids[~chosen])


def test_region_masking_statistics():
    gen = torch.Generator().manual_seed(0)
    feats = torch.rand(100_000, 3) + 1.0
    replacement = -torch.ones(100_000, 3)
    out, mask = mask_regions(feats, lambda rows: replacement[rows], gen)
    chosen = mask.bool()
    assert abs(chosen.float().mean() - 0.15) < 0.005
    zero = (out[chosen] == 0).all(1).float().mean()
    swapped = (out[chosen] == -1).all(1).float().mean()
    kept = (out[chosen] == feats[chosen]).all(1).float().mean()
    assert abs(zero - 0.8) < 0.01 and abs(swapped - 0.1) < 0.01 and abs(kept - 0.1) < 0.01
    assert torch.equal(out[~chosen], feats[~chosen])


def test_answer_sampling_follows_scores():
    gen = torch.Generator().manual_seed(0)
    draws = torch.tensor([sample_answer(((3, 0.9), (7, 0.3)), gen) for _ in range(4000)])
    assert abs((draws == 3).float().mean() - 0.75) < 0.03 and set(draws.tolist()) == {3, 7}
    assert sample_answer((), gen) == -100


def test_examples_matching_and_qa(world):
    ds = make_dataset(world)
    n = len(ds)
    matched = kept_own_sentence = qa_on_mismatch = qa_on_caption = 0
    tok = ds.tokenizer
    images_of: dict[str, set] = {}  # a caption ("there are two cubes") can describe several images
    for item in ds.pairs.items:
        images_of.setdefault(item.sent, set()).add(item.img_id)
    for i in range(n):
        ex = ds[(0, i)]
        item = ds.pairs.items[i]
        matched += ex["matched_label"]
        if not ex["matched_label"]:
            original = tok(item.sent, truncation=True, max_length=20)["input_ids"]
            labels = ex["labels"]
            restored = torch.where(labels != -100, labels, ex["input_ids"]).tolist()
            # a mismatched pair must carry another image's sentence
            kept_own_sentence += restored == original and images_of[item.sent] == {item.img_id}
            qa_on_mismatch += ex["ans"] != -100
        if item.source == "mscoco":
            qa_on_caption += ex["ans"] != -100
    assert abs(matched / n - 0.5) < 0.06
    assert kept_own_sentence == 0 and qa_on_mismatch == 0 and qa_on_caption == 0
    qa_items = [i for i in range(n) if ds.pairs.items[i].answers]
    with_answer = [ds[(0, i)] for i in qa_items]
    got = [ex["ans"] for ex in with_answer if ex["matched_label"]]
    assert got and all(a != -100 for a in got)


def test_objectives_switched_off_leave_no_target(world):
    """Matching off: every pair keeps its sentence and carries no matching target (not a label 1 that
    would still train the head); visual off: no region weighs in the label or feature losses; the
    batch says which objectives it holds a target of."""
    ds = make_dataset(world, ObjectiveConfig(matching=False, visual=False))
    examples = [ds[(0, i)] for i in range(16)]
    assert all(ex["matched_label"] == -100 for ex in examples)
    assert all(not ex["obj_weights"].any() and not ex["feat_mask"].any() for ex in examples)
    has = {k: bool(v) for k, v in collate_pretraining(examples).has_examples().items()}
    assert has == {"mlm": True, "matched": False, "obj": False, "attr": False, "feat": False, "qa": has["qa"]}
    on = {k: bool(v) for k, v in collate_pretraining([make_dataset(world)[(0, i)] for i in range(16)]).has_examples().items()}
    assert on["matched"] and on["obj"] and on["feat"] and on["mlm"]


def test_mismatched_sentences_come_from_other_images(world):
    ds = make_dataset(world)
    gen = torch.Generator().manual_seed(1)
    for i in range(0, len(ds), 3):
        image = ds.pairs.image(i)
        other = ds._other_pair(image, gen)
        assert ds.pairs.image(other) != image and ds.pairs.items[other].img_id != ds.pairs.items[i].img_id


def test_swapped_regions_are_stored_regions(world):
    """A region swapped in for a masked one (10% of the masked) is a stored region of a randomly
    drawn image (as in the original, the draw may hit the example's own image); ``_rows_of`` gives
    region ``pick[i]`` of that image for each swapped row ``i``."""
    ds = make_dataset(world)
    store = ds.store
    owner: dict[bytes, set[str]] = {}
    for img_id in store.ids():
        for row in store[img_id].tensor(None):
            owner.setdefault(row.numpy().tobytes(), set()).add(img_id)
    swapped = 0
    for i in range(len(ds)):
        ex = ds[(0, i)]
        for row, target, chosen in zip(ex["visual_feats"], ex["feat_targets"], ex["feat_mask"]):
            if chosen and row.any() and not torch.equal(row, target):
                swapped += 1
                assert row.numpy().tobytes() in owner, i
            elif not chosen:
                assert torch.equal(row, target)
    assert swapped >= 10  # about 1.5% of the regions
    other = store[ds.images[3]]
    pick = torch.tensor([5, 0, 11, 5])
    rows = torch.tensor([True, False, True, True])
    assert torch.equal(ds._rows_of(other, pick)(rows), other.tensor(None)[[5, 11, 5]])


def test_label_weights_options_and_qa_start_epoch(world):
    conf = make_dataset(world)[(0, 5)]
    root, _ = world
    rec = FeatureStore(root / "store")[make_dataset(world).pairs.items[5].img_id]
    assert torch.equal(conf["obj_weights"], torch.from_numpy(rec.objects_conf.copy()))
    mask_ds = make_dataset(world, ObjectiveConfig(label_weights="mask"))
    ex = mask_ds[(0, 5)]
    assert torch.equal(ex["obj_weights"], ex["feat_mask"]) and torch.equal(ex["attr_weights"], ex["feat_mask"])
    late = make_dataset(world, ObjectiveConfig(qa_start_epoch=2))
    assert all(late[(1, i)]["ans"] == -100 for i in range(len(late)))
    assert any(late[(2, i)]["ans"] != -100 for i in range(len(late)))


def test_examples_are_deterministic_per_epoch_and_index(world):
    ds = make_dataset(world)
    a, b, c = ds[(3, 7)], ds[(3, 7)], ds[(4, 7)]
    assert all(torch.equal(torch.as_tensor(a[k]), torch.as_tensor(b[k])) for k in a)
    assert not all(torch.equal(torch.as_tensor(a[k]), torch.as_tensor(c[k])) for k in a)


def test_collated_batch_feeds_the_model(world):
    from model import LxmertConfig, LxmertForPretraining

    root, info = world
    ds = make_dataset(world)
    batch = collate_pretraining([ds[(0, i)] for i in range(8)])
    assert batch.input_ids.shape[0] == 8 and batch.visual_feats.shape == (8, 12, 32) and batch.visual_attention_mask is None
    config = LxmertConfig.from_preset("tiny", vocab_size=info["vocab_size"], visual_feat_dim=32,
                                      num_object_labels=info["num_object_labels"], num_attr_labels=info["num_attr_labels"],
                                      num_qa_labels=info["num_answers"])
    out = LxmertForPretraining(config).train()(**batch.model_inputs())
    assert set(out.losses) == {"mlm", "matched", "obj", "attr", "feat", "qa"}
    assert all(torch.isfinite(v) for v in out.losses.values())
    out.loss.backward()


def test_collate_pads_variable_regions():
    ex = lambda n: {"input_ids": torch.tensor([2, 5, 3]), "labels": torch.tensor([-100, 5, -100]),  # noqa: E731
                    "visual_feats": torch.ones(n, 4), "visual_pos": torch.ones(n, 4), "obj_ids": torch.zeros(n, dtype=torch.long),
                    "obj_weights": torch.ones(n), "attr_ids": torch.zeros(n, dtype=torch.long), "attr_weights": torch.ones(n),
                    "feat_targets": torch.ones(n, 4), "feat_mask": torch.ones(n), "matched_label": 1, "ans": -100}
    batch = collate_pretraining([ex(10), ex(12)])
    assert batch.visual_attention_mask.tolist() == [[1] * 10 + [0, 0], [1] * 12]
    assert batch.obj_weights[0, 10:].sum() == 0 and (batch.obj_ids[0, 10:] == -100).all()


@pytest.mark.parametrize("world_size", [1, 2])
def test_sampler_shards_and_resume(world_size):
    full = [ResumableSampler(103, r, world_size, seed=5) for r in range(world_size)]
    shards = [list(s) for s in full]
    flat = [i for shard in shards for _, i in shard]
    assert len(flat) == len(set(flat)) == 103 - 103 % world_size  # disjoint, equal shards
    assert [list(ResumableSampler(103, r, world_size, seed=5)) for r in range(world_size)] == shards
    for r, s in enumerate(full):
        s.set_epoch(1)
        assert list(s) != shards[r]
    for r in range(world_size):  # stop after 17 examples, save, resume in a new sampler
        first = ResumableSampler(103, r, world_size, seed=5)
        seen = list(first)[:17]
        first.advance(17)
        resumed = ResumableSampler(103, r, world_size, seed=5)
        resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
        assert seen + list(resumed) == shards[r]


@pytest.mark.parametrize("world_size", [1, 2])
def test_loader_resume_with_workers_gives_the_same_batches(world, world_size):
    ds = make_dataset(world)

    def loader(sampler):
        return torch.utils.data.DataLoader(ds, batch_size=4, sampler=sampler, num_workers=2, collate_fn=collate_pretraining,
                                           multiprocessing_context=worker_context())

    for rank in range(world_size):
        straight = [b for b in loader(ResumableSampler(len(ds), rank, world_size, seed=1))]
        first = ResumableSampler(len(ds), rank, world_size, seed=1)
        it = iter(loader(first))
        for _ in range(3):
            next(it)
            first.advance(4)
        state = first.state_dict()
        del it
        resumed = ResumableSampler(len(ds), rank, world_size, seed=1)
        resumed.load_state_dict(state)
        rest = list(loader(resumed))
        assert len(rest) == len(straight) - 3
        for a, b in zip(rest, straight[3:]):
            assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.labels, b.labels)
            assert torch.equal(a.visual_feats, b.visual_feats) and torch.equal(a.ans, b.ans)


def test_worker_batches_cross_as_one_buffer_per_dtype_and_equal_in_process_batches(world):
    from dataclasses import fields

    ds = make_dataset(world)
    sampler = ResumableSampler(len(ds), 0, 1, seed=1)
    in_process = list(torch.utils.data.DataLoader(ds, batch_size=4, sampler=sampler, collate_fn=collate_pretraining))
    from_worker = list(torch.utils.data.DataLoader(ds, batch_size=4, sampler=sampler, num_workers=1,
                                                   collate_fn=collate_pretraining, multiprocessing_context=worker_context()))
    assert len(in_process) == len(from_worker) > 0
    for a, b in zip(in_process, from_worker):
        tensors = {f.name: getattr(b, f.name) for f in fields(b) if isinstance(getattr(b, f.name), torch.Tensor)}
        for name, t in tensors.items():
            assert torch.equal(getattr(a, name), t) and getattr(a, name).dtype == t.dtype, name
        storages = {t.untyped_storage().data_ptr() for t in tensors.values()}
        assert len(storages) == len({t.dtype for t in tensors.values()}) < len(tensors)
        assert b.visual_feats.dtype == torch.float16  # the store's precision: the model converts on its device


class _RaggedPairs(torch.utils.data.Dataset):
    """NLVR2-shaped examples whose images have different numbers of regions."""

    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int) -> dict:
        n = [(3, 5), (4, 4), (2, 6), (5, 1), (3, 3), (6, 2)][i]
        return {"identifier": f"ex{i}-0", "input_ids": torch.arange(2 + i),
                "visual_feats": [torch.full((k, 3), float(10 * i + j + 1), dtype=torch.float16) for j, k in enumerate(n)],
                "visual_pos": [torch.arange(4.0 * k).view(k, 4) + i for k in n], "label": i % 2}


def test_padded_batches_built_in_a_worker_equal_in_process_ones():
    """Padding (tokens, regions of pairs) written straight into the worker's shared buffers gives
    the same batch as in the training process, with the padding values and masks in place."""
    from dataclasses import fields

    from data.tasks import collate_nlvr2

    ds = _RaggedPairs()
    in_process = list(torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=collate_nlvr2))
    from_worker = list(torch.utils.data.DataLoader(ds, batch_size=3, num_workers=1, collate_fn=collate_nlvr2,
                                                   multiprocessing_context=worker_context()))
    for a, b in zip(in_process, from_worker, strict=True):
        for name in ("input_ids", "attention_mask", "visual_feats", "visual_pos", "visual_attention_mask", "labels"):
            assert torch.equal(getattr(a, name), getattr(b, name)) and getattr(a, name).dtype == getattr(b, name).dtype, name
        assert a.ids == b.ids
        tensors = [getattr(b, f.name) for f in fields(b) if isinstance(getattr(b, f.name), torch.Tensor)]
        assert all(t.is_shared() for t in tensors)  # written into shared memory by the worker
        assert len({t.untyped_storage().data_ptr() for t in tensors}) == len({t.dtype for t in tensors}) < len(tensors)
    first = in_process[0]
    assert first.visual_feats.shape == (3, 2, 6, 3) and first.visual_attention_mask.shape == (3, 2, 6)
    assert first.visual_attention_mask[0, 1].tolist() == [1, 1, 1, 1, 1, 0]
    assert (first.visual_feats[0, 0, :3] == 1).all() and (first.visual_feats[0, 0, 3:] == 0).all()
    assert (first.visual_feats[2, 1] == 22).all()
    assert first.input_ids[0].tolist() == [0, 1, 0, 0] and first.attention_mask[0].tolist() == [1, 1, 0, 0]


def test_pinning_keeps_one_buffer_per_dtype(monkeypatch):
    """torch's pinning thread calls the batch's pin_memory (a dataclass would otherwise pass
    unpinned); each shared buffer is pinned once and the tensors keep their views into it. (No
    CUDA here: the storage's pinning is replaced by a copy.)"""
    from dataclasses import fields

    from torch.utils.data._utils.pin_memory import pin_memory
    from data.tasks import collate_nlvr2

    batch = next(iter(torch.utils.data.DataLoader(_RaggedPairs(), batch_size=3, num_workers=1,
                                                  collate_fn=collate_nlvr2, multiprocessing_context=worker_context())))
    copies = []
    monkeypatch.setattr(torch.UntypedStorage, "pin_memory", lambda self, *a, **k: copies.append(self) or self.clone())
    pinned = pin_memory(batch, device="cuda")
    assert type(pinned) is type(batch) and pinned.ids == batch.ids
    before = {f.name: getattr(batch, f.name) for f in fields(batch) if isinstance(getattr(batch, f.name), torch.Tensor)}
    after = {name: getattr(pinned, name) for name in before}
    assert len(copies) == len({t.untyped_storage().data_ptr() for t in before.values()}) == len({t.dtype for t in before.values()})
    for name, t in before.items():
        assert torch.equal(after[name], t) and after[name].dtype == t.dtype and after[name].stride() == t.stride(), name
        assert after[name].untyped_storage().data_ptr() != t.untyped_storage().data_ptr(), name
    assert len({t.untyped_storage().data_ptr() for t in after.values()}) == len(copies)


def test_task_datasets_feed_the_task_models(world, tmp_path):
    from data.tasks import NLVR2Dataset, QADataset, collate_nlvr2, collate_qa, load_label_vocab
    from model import LxmertConfig, LxmertForNLVR2, LxmertForQuestionAnswering

    root, info = world
    store, tok = FeatureStore(root / "store"), load_tokenizer(root / "vocab.txt")
    for task, split in (("vqa", "train"), ("gqa", "testdev")):
        vocab = load_label_vocab(root / task / "trainval_ans2label.json")
        ds = QADataset([root / task / f"{split}.json"], store, tok, vocab)
        batch = collate_qa([ds[i] for i in range(6)])
        row = ds.rows[0]
        for ans, score in row["label"].items():
            assert batch.labels[0, vocab[ans]] == score
        assert batch.labels[0].sum() == sum(row["label"].values()) and batch.ids[0] == row["question_id"]
        net = LxmertForQuestionAnswering(LxmertConfig.from_preset("tiny", vocab_size=info["vocab_size"], visual_feat_dim=32,
                                                                  num_qa_labels=len(vocab)))
        assert torch.isfinite(net(**batch.model_inputs()).loss)
    nlvr2 = NLVR2Dataset([root / "nlvr2" / "valid.json"], store, tok)
    batch = collate_nlvr2([nlvr2[i] for i in range(4)])
    assert batch.visual_feats.shape == (4, 2, 12, 32)
    first = nlvr2.rows[0]
    assert torch.equal(batch.visual_feats[0, 1], store[first["img1"]].tensor())
    net = LxmertForNLVR2(LxmertConfig.from_preset("tiny", vocab_size=info["vocab_size"], visual_feat_dim=32))
    assert net(**batch.model_inputs()).logits.shape == (4, 2)


def test_task_files_bad_input(world, tmp_path):
    from data.tasks import NLVR2Dataset, QADataset, load_label_vocab

    root, _ = world
    store, tok = FeatureStore(root / "store"), load_tokenizer(root / "vocab.txt")
    vocab = load_label_vocab(root / "vqa" / "trainval_ans2label.json")
    (tmp_path / "bad.json").write_text(json.dumps([{"question_id": 1, "sent": "what ?"}]))
    with pytest.raises(ValueError, match=r"bad.json: example 0 lacks 'img_id'"):
        QADataset([tmp_path / "bad.json"], store, tok, vocab)
    (tmp_path / "unknown.json").write_text(json.dumps([{"question_id": 7, "img_id": "synth000001", "sent": "what ?",
                                                        "label": {"zebra": 1.0}}]))
    assert QADataset([tmp_path / "unknown.json"], store, tok, vocab).unknown_answers == 1
    with pytest.raises(ValueError, match="question 7: answer 'zebra' is not in the label vocabulary"):
        QADataset([tmp_path / "unknown.json"], store, tok, vocab, strict=True)
    (tmp_path / "noimg.json").write_text(json.dumps([{"identifier": "x", "img0": "synth000001", "img1": "nope",
                                                      "sent": "s", "label": 1}]))
    with pytest.raises(ValueError, match="not in the feature store .* e.g. nope"):
        NLVR2Dataset([tmp_path / "noimg.json"], store, tok)


def test_synthetic_world_is_the_same_on_every_run(tmp_path):
    """Same seed, same files, byte for byte (the vocabulary included), so demo and test numbers reproduce."""
    from data.synth import write_world

    for name in ("a", "b"):
        write_world(tmp_path / name, images=30, feat_dim=16, regions=10, progress=False)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) > 10 and Path("vocab.txt") in files
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


def test_synthetic_world_needs_the_image(tmp_path):
    """Questions on attributes, counts, existence and relations, balanced within each question type
    (no answer of a type more frequent than chance among its answers, so the prior is chance);
    captions that name objects, attributes and relations; NLVR2 statements over two images of its
    own, named by NLVR2's convention, each sentence with NLVR2_PAIRS image pairs, labels balanced."""
    from collections import Counter, defaultdict

    from data.evaluation import prior_predictions, question_type, scores
    from data.synth import COLOURS

    info = write_world(tmp_path, images=300, feat_dim=8, regions=16, progress=False)
    for split in ("train", "minival"):
        rows = json.loads((tmp_path / "vqa" / f"{split}.json").read_text())
        by_type: dict[str, Counter] = defaultdict(Counter)
        for r in rows:
            by_type[question_type(r)][max(r["label"], key=r["label"].get)] += 1
        assert set(by_type) == {"what color", "how many", "is there", "what is", "is the"}, sorted(by_type)
        for kind, answers in by_type.items():
            assert len(answers) >= 2 and max(answers.values()) * len(answers) == sum(answers.values()), (kind, answers)
        assert set(by_type["what color"]) <= set(COLOURS) and set(by_type["how many"]) <= set("01234")
        assert set(by_type["is there"]) == set(by_type["is the"]) == {"yes", "no"}
    train = json.loads((tmp_path / "vqa" / "train.json").read_text())
    valid = json.loads((tmp_path / "vqa" / "minival.json").read_text())
    labels = json.loads((tmp_path / "vqa" / "trainval_ans2label.json").read_text())
    prior = scores("vqa", prior_predictions("vqa", train, valid, labels), valid)["accuracy"]
    assert prior < 0.45, prior  # a balanced world's prior: 1/2 for yes/no, 1/5 counts, 1/8 colours, 1/12 classes

    corpus = json.loads((tmp_path / "lxmert" / "train.json").read_text())
    captions = [c for e in corpus for c in e["sentf"]["mscoco"]]
    assert any(" is left of the " in c or " is right of the " in c for c in captions)
    assert any(c.startswith("there are two ") for c in captions) and any(" small " in c for c in captions)
    assert sum(len(e["sentf"].get("vqa", [])) for e in corpus) > 0 and len(corpus) == info["train_images"]

    store = build_store(tmp_path / "store", [tmp_path / "features" / "train.tsv", tmp_path / "features" / "val.tsv"],
                        progress=False)
    assert store["count"] == info["images"] + info["nlvr2_images"]
    pretraining_images = {e["img_id"] for e in corpus}
    for split, prefix in (("train", "train"), ("valid", "dev")):
        rows = json.loads((tmp_path / "nlvr2" / f"{split}.json").read_text())
        sentences = defaultdict(set)
        for r in rows:
            fields = r["identifier"].split("-")
            assert fields[0] == prefix and len(fields) == 4, r["identifier"]
            assert (r["img0"], r["img1"]) == (f"{'-'.join(fields[:3])}-img0", f"{'-'.join(fields[:3])}-img1")
            assert r["img0"] not in pretraining_images
            sentences["-".join(fields[:2] + fields[3:])].add(r["sent"])
        assert all(len(s) == 1 for s in sentences.values()) and len(rows) == NLVR2_PAIRS * len(sentences)
        assert 0.35 < sum(r["label"] for r in rows) / len(rows) < 0.65


def test_synthetic_captions_are_true_of_their_image(tmp_path):
    """scenes.json holds each image's objects; data.synth.caption_truth judges any caption against
    them: every caption is true of its own image, each kind is false of a scene it misdescribes,
    and a few captions of other images are true by accident (what caps matching accuracy)."""
    import random

    from data.synth import CAPTION_KINDS, caption_kind, caption_pairs, caption_truth

    write_world(tmp_path, images=200, feat_dim=8, regions=16, progress=False)
    scenes = json.loads((tmp_path / "scenes.json").read_text())
    captions = [(r["img_id"], c) for split in ("train", "minival")
                for r in json.loads((tmp_path / "lxmert" / f"{split}.json").read_text()) for c in r["sentf"]["mscoco"]]
    assert {caption_kind(c) for _, c in captions} == set(CAPTION_KINDS)
    assert all(caption_truth(c, scenes[img]) for img, c in captions)
    pairs = caption_pairs(captions, random.Random(0))
    assert [p[:2] for p in pairs[::2]] == captions and all(p[2] for p in pairs[::2])
    mismatched = pairs[1::2]
    assert all(img == own for (img, _, matched), (own, _) in zip(mismatched, captions)) and not any(m for *_, m in mismatched)
    small = [("a", "x ."), ("a", "y ."), ("b", "z .")]  # never the image's own captions: only b's for a
    assert [c for _, c, m in caption_pairs(small, random.Random(1)) if not m][:2] == ["z .", "z ."]
    with pytest.raises(ValueError, match="at least two images"):  # no other image's caption to draw: no endless loop
        caption_pairs(small[:2], random.Random(1))
    accidental = sum(caption_truth(c, scenes[img]) for img, c, _ in mismatched)
    assert 0 < accidental < 0.1 * len(captions)

    dog = {"cls": 0, "col": 0, "size": 0, "slot": 1}  # a small red dog, left of a large blue cat
    cat = {"cls": 1, "col": 1, "size": 1, "slot": 4}
    scene = [dog, cat]
    for caption, truth in [("a picture of a small red dog and a large blue cat .", True),
                           ("a picture of a small red dog .", False), ("a picture of a large red dog and a large blue cat .", False),
                           ("there is one dog .", True), ("there are two dogs .", False), ("there are no cars .", True),
                           ("there is a red dog .", True), ("there is a blue dog .", False),
                           ("the dog is left of the cat .", True), ("the cat is left of the dog .", False),
                           ("the dog is right of the cat .", False), ("the dog is left of the car .", False),
                           ("the dog is red .", True), ("the dog is large .", False), ("the cat is large .", True)]:
        assert caption_truth(caption, scene) == truth, caption
    assert not caption_truth("the dog is red .", [dog, {**dog, "slot": 3}])  # "the dog" names no one dog of two


def test_tokenizer_errors_name_the_value():
    with pytest.raises(FileNotFoundError, match="^/nonexistent/vocab.txt: no such tokenizer file or directory$"):
        load_tokenizer("/nonexistent/vocab.txt")
    with pytest.raises(FileNotFoundError, match="^no-such-org/no-such-tokenizer: not a local tokenizer, and the "
                                                "Hugging Face hub did not provide it"):
        load_tokenizer("no-such-org/no-such-tokenizer")  # the tests run offline
