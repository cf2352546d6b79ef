"""`lxmert ask`, `lxmert match` and `lxmert attention`: answers, scores and attention figures of
one example, checked against the model's own outputs computed here, independently of the package."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from launcher.cli import main
from model import LxmertConfig, LxmertForNLVR2, LxmertForPretraining, LxmertForQuestionAnswering

OBJECTS = ["ball", "cup", "dog", "__background__"]
ATTRIBUTES = ["red", "blue", "__no_attribute__"]
ANSWERS = ["red", "blue", "ball", "cup", "dog", "yes", "no", "1", "2"]
SENTENCE = "the red ball is left of the blue cup ."
W, H, FEAT = 320, 240, 16
# Ten boxes that never overlap, clear of the figures' bottom-line text: a pixel at a box's centre is its own.
BOXES = np.array([[10 + 62 * i, y, 60 + 62 * i, y + 80] for y in (10, 110) for i in range(5)], dtype=np.float32)


def _image(rng: np.random.Generator) -> dict:
    n = len(BOXES)
    return {"features": rng.random((n, FEAT), dtype=np.float32) * 2, "boxes": BOXES, "image_h": H, "image_w": W,
            "objects_id": rng.integers(0, len(OBJECTS), n), "objects_conf": rng.uniform(0.5, 1, n).astype(np.float32),
            "attrs_id": rng.integers(0, len(ATTRIBUTES), n), "attrs_conf": rng.uniform(0.3, 1, n).astype(np.float32)}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A float32 store of three images (with label names), a vocabulary, and a random tiny
    pre-training model of ours saved as `lxmert consolidate` writes one (vocab.txt, answers.json)."""
    from data.store import build_store
    from data.synth import _write_vocab

    root = tmp_path_factory.mktemp("interpret")
    rng = np.random.default_rng(0)
    (root / "npz").mkdir()
    for name in ("img0", "img1", "img2"):
        np.savez(root / "npz" / f"{name}.npz", **_image(rng))
    (root / "objects.txt").write_text("\n".join(OBJECTS) + "\n")
    (root / "attributes.txt").write_text("\n".join(ATTRIBUTES) + "\n")
    build_store(root / "store", npz_dirs=[root / "npz"], dtype="float32", progress=False,
                label_files={"objects": root / "objects.txt", "attributes": root / "attributes.txt"})
    _write_vocab([SENTENCE, "what colour is the ball ?", "a dog and two cups"] + ANSWERS, root / "vocab.txt")
    vocab = len((root / "vocab.txt").read_text().splitlines())
    torch.manual_seed(0)
    config = LxmertConfig.from_preset("tiny", vocab_size=vocab, visual_feat_dim=FEAT, num_qa_labels=len(ANSWERS))
    net = LxmertForPretraining(config)
    net.init_weights()
    _sharpen(net)
    net.save_pretrained(root / "model")
    shutil.copyfile(root / "vocab.txt", root / "model" / "vocab.txt")
    (root / "model" / "answers.json").write_text(json.dumps(ANSWERS))
    return root


def _sharpen(net: LxmertForPretraining, scale: float = 3.0, shared: int = 3) -> None:
    """Peaked, distinct cross-attention in a random model: heads 0..shared-1 of every cross layer get
    head 0's query and key weights times ``scale`` (a random model's heads disagree, and their mean is
    flat); the last head keeps its own."""
    h = net.config.hidden_size
    d = h // net.config.num_attention_heads
    with torch.no_grad():
        for layer in net.encoder.cross_layers:
            w = layer.cross_attention.qkv.weight
            for part in (0, h):  # query rows, then key rows
                rows = w[part:part + d].clone() * scale
                for k in range(shared):
                    w[part + k * d:part + (k + 1) * d] = rows


def _inputs(root: Path, img: str, sentence: str) -> tuple[dict, list[str]]:
    """The model's inputs for one pair, made here from the npz file and the vocabulary."""
    from transformers import BertTokenizerFast

    tok = BertTokenizerFast(str(root / "vocab.txt"), do_lower_case=True)
    ids = tok(sentence)["input_ids"]
    with np.load(root / "npz" / f"{img}.npz") as f:
        feats, boxes = f["features"], f["boxes"]
    pos = boxes / np.array([W, H, W, H], dtype=np.float32)
    return ({"input_ids": torch.tensor([ids]), "visual_feats": torch.from_numpy(feats)[None],
             "visual_pos": torch.from_numpy(pos)[None]}, tok.convert_ids_to_tokens(ids))


def _run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _attention_run(world: Path, out: Path, capsys, *extra) -> Path:
    rc, stdout, err = _run(capsys, "attention", world / "model", "--store", world / "store", "--image", "img1",
                           "--sentence", SENTENCE, "--out", out, *extra)
    assert rc == 0, err
    assert str(out / "attention.html") in stdout
    return out


@pytest.fixture(scope="module")
def drawn(world, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("drawn") / "att"
    assert main(["attention", str(world / "model"), "--store", str(world / "store"), "--image", "img1",
                 "--sentence", SENTENCE, "--out", str(out)]) == 0
    return out


def _model_maps(world: Path) -> tuple[LxmertForPretraining, object, list[str]]:
    net = LxmertForPretraining.from_pretrained(world / "model").eval()
    inputs, tokens = _inputs(world, "img1", SENTENCE)
    with torch.no_grad():
        return net, net(**inputs, output_attentions=True), tokens


# ------------------------------------------------------------------ numbers
def test_saved_numbers_are_the_models_attention_maps(world, drawn):
    _, out, tokens = _model_maps(world)
    saved = np.load(drawn / "attention.npz")
    info = json.loads((drawn / "attention.json").read_text())
    for name, maps in (("language", out.language_attentions), ("relations", out.vision_attentions),
                       ("to_vision", out.cross_attentions), ("to_language", out.vision_cross_attentions)):
        expected = torch.stack([m[0] for m in maps]).numpy()
        assert saved[name].shape == expected.shape, name
        np.testing.assert_allclose(saved[name], expected, rtol=1e-4, atol=1e-5, err_msg=name)
        assert info["arrays"][name]["shape"] == list(expected.shape)
    np.testing.assert_array_equal(saved["boxes"], BOXES)
    assert info["tokens"] == tokens and info["tokens"][0] == "[CLS]" and info["tokens"][-1] == "[SEP]"
    assert (info["width"], info["height"], info["image"], info["sentence"]) == (W, H, "img1", SENTENCE)
    with np.load(world / "npz" / "img1.npz") as f:  # labels by name: "k: attribute object"
        obj, attr, conf = f["objects_id"], f["attrs_id"], f["attrs_conf"]
    for k, label in enumerate(info["labels"]):
        words = [ATTRIBUTES[attr[k]]] * bool(conf[k] >= 0.2) + [OBJECTS[obj[k]]]
        assert label == " ".join([f"{k}:", *[w for w in words if not w.startswith("__")]]).rstrip(":"), label


def test_maps_differ_between_heads_and_words(world, drawn):
    """The example is informative: the figures below would pass trivially on uniform maps."""
    to_vision = np.load(drawn / "attention.npz")["to_vision"][-1].mean(0)
    assert len({int(a) for a in to_vision.argmax(-1)}) >= 3
    assert to_vision.max() > 3 / len(BOXES)


# ------------------------------------------------------------------ figures
def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path}: not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")  # IHDR width, height


def test_figures_are_pngs_and_overlays_have_the_images_size(world, drawn):
    from matplotlib.image import imread

    cfg = LxmertConfig.load(world / "model" / "config.json")
    names = {p.name for p in drawn.glob("*.png")}
    assert names == {"language.png", *(f"relations_layer{i + 1}.png" for i in range(cfg.r_layers)),
                     *(f"words_layer{i + 1}.png" for i in range(cfg.x_layers)),
                     *(f"boxes_layer{i + 1}.png" for i in range(cfg.x_layers))}
    tokens = json.loads((drawn / "attention.json").read_text())["tokens"]
    words = sorted((drawn / "words").glob("*.png"))
    assert len(words) == cfg.x_layers * len(tokens)
    for path in [*drawn.glob("*.png"), *words]:
        w, h = _png_size(path)
        assert imread(path).shape[:2] == (h, w) and w > 100 and h > 100, path  # decodes whole
    for path in [*drawn.glob("relations_layer*.png"), *words]:  # drawn over the image: its stored size
        assert _png_size(path) == (W, H), path


def _redness(png: Path) -> np.ndarray:
    """How strongly each box is shaded: 1 - the green channel around its centre (the highlight is red)."""
    from matplotlib.image import imread

    img = imread(png)[..., :3]
    centres = ((BOXES[:, :2] + BOXES[:, 2:]) / 2).astype(int)
    return np.array([1 - img[y - 5:y + 5, x - 5:x + 5, 1].mean() for x, y in centres])


def test_the_box_made_most_attended_is_drawn_strongest(tmp_path):
    from interpret import figures
    from interpret.attention import AttentionMaps

    n = len(BOXES)
    for strongest in (4, 1):
        weights = np.full(n, 0.05)
        weights[strongest] = 0.6
        weights[(strongest + 2) % n] = 0.2
        to_vision = np.zeros((1, 1, 2, n))
        to_vision[0, 0, 1] = weights / weights.sum()
        maps = AttentionMaps(image="x", width=W, height=H, sentence="a b", tokens=["[CLS]", "word"], boxes=BOXES,
                             labels=[str(k) for k in range(n)], language=np.zeros((0, 1, 2, 2)),
                             relations=np.zeros((0, 1, n, n)), to_vision=to_vision, to_language=np.zeros((1, 1, n, 2)))
        red = _redness(figures.save(figures.word_boxes_figure(maps, 0, None, 1), tmp_path / f"w{strongest}.png"))
        assert red.argmax() == strongest, red
        assert red[strongest] > red[(strongest + 2) % n] > red[(strongest + 1) % n] + 0.05, red


def _hand_maps(boxes: np.ndarray, weights: np.ndarray):
    from interpret.attention import AttentionMaps

    n = len(boxes)
    to_vision = np.zeros((1, 1, 2, n))
    to_vision[0, 0, 1] = weights
    return AttentionMaps(image="x", width=W, height=H, sentence="a b", tokens=["[CLS]", "word"], boxes=boxes,
                         labels=[str(k) for k in range(n)], language=np.zeros((0, 1, 2, 2)),
                         relations=np.zeros((0, 1, n, n)), to_vision=to_vision, to_language=np.zeros((1, 1, n, 2)))


# A small box of weight 0.5 inside a large one of 0.1; two boxes of 0.1 and 0.15 overlapping on the right;
# the rest of the weight on a box far away.
NESTED = np.array([[20, 20, 200, 200], [80, 80, 120, 120], [220, 20, 290, 120], [250, 60, 310, 160],
                   [10, 210, 40, 235]], dtype=np.float32)
NESTED_WEIGHTS = np.array([0.1, 0.5, 0.1, 0.15, 0.15])


def test_overlapping_boxes_show_the_strongest_not_the_sum(tmp_path):
    from matplotlib.image import imread

    from interpret import figures

    maps = _hand_maps(NESTED, NESTED_WEIGHTS)
    img = imread(figures.save(figures.word_boxes_figure(maps, 0, None, 1), tmp_path / "nested.png"))[..., :3]
    green = lambda x, y: float(img[y - 3:y + 3, x - 3:x + 3, 1].mean())  # noqa: E731  (less green: more shaded)
    alpha = lambda x, y: (figures.CANVAS[1] - green(x, y)) / (figures.CANVAS[1] - figures.HIGHLIGHT[1])  # noqa: E731
    assert alpha(100, 100) == pytest.approx(np.sqrt(0.5), abs=0.02)  # the small box: its own weight
    assert alpha(50, 150) == pytest.approx(np.sqrt(0.1), abs=0.02)  # the large box around it
    assert alpha(270, 90) == pytest.approx(np.sqrt(0.15), abs=0.02)  # two boxes overlap: the stronger, not the sum
    np.testing.assert_allclose(figures.shade(maps, NESTED_WEIGHTS)[[100, 150, 90], [100, 50, 270]],
                               np.sqrt([0.5, 0.1, 0.15]), atol=1e-6)


def test_figures_draw_the_models_numbers(world):
    """What each figure draws, read back from its matplotlib artists, against the model's maps
    computed here: no transposed matrix, no reversed arrow, no family drawn for another."""
    from matplotlib.text import Annotation

    from interpret import figures
    from interpret.attention import attention_maps
    from interpret.subject import load_subject, make_example
    from data.store import FeatureStore

    _, out, _ = _model_maps(world)
    subject = load_subject(world / "model")
    maps = attention_maps(subject, make_example(subject, FeatureStore(world / "store"), "img1", SENTENCE),
                          FeatureStore(world / "store"))
    fig = figures.language_figure(maps, None)
    drawn = [ax.images[0].get_array() for ax in fig.axes if ax.images]
    for layer, a in enumerate(out.language_attentions):
        np.testing.assert_allclose(drawn[layer], a[0].mean(0).numpy(), atol=1e-5)
    for layer, a in enumerate(out.vision_cross_attentions):
        fig = figures.box_words_figure(maps, layer, 1)
        np.testing.assert_allclose(fig.axes[0].images[0].get_array(), a[0, 1].numpy(), atol=1e-5)
    rel = out.vision_attentions[0][0].mean(0).numpy().copy()
    np.fill_diagonal(rel, 0)
    strongest = {tuple(int(i) for i in np.unravel_index(f, rel.shape)) for f in np.argsort(rel, axis=None)[-5:]}
    fig = figures.relation_figure(maps, 0, None, edges=5)
    centres = (BOXES[:, :2] + BOXES[:, 2:]) / 2
    arrows = {(int(np.argmin(np.abs(centres - a.xyann).sum(1))), int(np.argmin(np.abs(centres - a.xy).sum(1))))
              for a in fig.axes[0].texts if isinstance(a, Annotation)}
    assert arrows == strongest  # from the attending box to the attended one


def test_each_words_figure_shades_its_most_attended_box_strongest(world, drawn):
    _, out, tokens = _model_maps(world)
    last = len(out.cross_attentions)
    weights = out.cross_attentions[-1][0].mean(0).numpy()  # (words, boxes), computed here
    for k, token in enumerate(tokens):
        (png,) = (drawn / "words").glob(f"layer{last}_{k:02d}_*.png")
        red = _redness(png)
        assert red.argmax() == weights[k].argmax(), (token, red, weights[k])
        assert np.corrcoef(red, np.sqrt(weights[k]))[0, 1] > 0.95, (token, red, weights[k])  # opacity sqrt(weight)


def test_one_head_is_drawn_on_request(world, tmp_path, capsys):
    _, out, tokens = _model_maps(world)
    _attention_run(world, tmp_path / "h3", capsys, "--head", "3")
    weights = out.cross_attentions[-1][0, 3].numpy()  # the head _sharpen left as it was
    mean = out.cross_attentions[-1][0].mean(0).numpy()
    k = next(k for k in range(len(tokens)) if weights[k].argmax() != mean[k].argmax())
    (png,) = (tmp_path / "h3" / "words").glob(f"layer{len(out.cross_attentions)}_{k:02d}_*.png")
    assert _redness(png).argmax() == weights[k].argmax()
    rc, _, err = _run(capsys, "attention", world / "model", "--store", world / "store", "--image", "img1",
                      "--sentence", SENTENCE, "--out", tmp_path / "h9", "--head", "9")
    assert rc == 2 and "--head 9: the model has heads 0..3" in err
    assert not (tmp_path / "h9").exists() and not (tmp_path / "h9.partial").exists()


def test_figures_over_a_photo(world, tmp_path, capsys):
    from matplotlib.image import imsave

    photo = np.zeros((H // 2, W // 2, 3))
    photo[..., 2] = 1.0  # a blue photo at half the stored size: stretched onto the stored size
    imsave(tmp_path / "photo.png", photo)
    out = _attention_run(world, tmp_path / "p", capsys, "--image-file", tmp_path / "photo.png")
    from matplotlib.image import imread

    img = imread(next((out / "words").glob("*.png")))
    assert img.shape[:2] == (H, W)
    assert img[H - 60, 5, 2] > 0.9 and img[H - 60, 5, 0] < 0.1  # outside every box: the photo shows
    page = (out / "attention.html").read_text()
    assert page.count("data:image/png;base64,") == 1 + len(list(out.glob("*.png")))  # photo + every figure


# ------------------------------------------------------------------ ask and match
def test_ask_gives_the_qa_heads_top_answers(world, capsys):
    net = LxmertForPretraining.from_pretrained(world / "model").eval()
    inputs, _ = _inputs(world, "img0", "what colour is the ball ?")
    with torch.no_grad():
        probs = net(**inputs).question_answering_score[0].softmax(-1)
    rc, out, err = _run(capsys, "ask", world / "model", "--store", world / "store", "--image", "img0",
                        "--question", "what colour is the ball ?", "--topk", "3", "--json")
    assert rc == 0, err
    got = json.loads(out)
    top = probs.topk(3)
    assert [a["answer"] for a in got["answers"]] == [ANSWERS[i] for i in top.indices]
    np.testing.assert_allclose([a["probability"] for a in got["answers"]], top.values.numpy(), atol=1e-5)
    rc, text, _ = _run(capsys, "ask", world / "model", "--store", world / "store", "--image", "img0",
                       "--question", "what colour is the ball ?")
    assert rc == 0 and f"{ANSWERS[top.indices[0]]}" in text.splitlines()[1]


def test_ask_a_vqa_model_scores_labels_by_sigmoid_and_reads_other_layouts(world, tmp_path, capsys):
    torch.manual_seed(1)
    cfg = LxmertConfig.load(world / "model" / "config.json")
    qa = LxmertForQuestionAnswering(LxmertConfig.from_dict({**cfg.to_dict(), "num_qa_labels": 4}))
    qa.init_weights()
    labels = ["red", "blue", "yes", "no"]
    qa.save_pretrained(tmp_path / "vqa", hf=True)  # Hugging Face's layout: no vocab or table beside it
    (tmp_path / "label2ans.json").write_text(json.dumps(labels))
    inputs, _ = _inputs(world, "img2", "what colour is the ball ?")
    with torch.no_grad():
        probs = qa.eval()(**inputs).logits[0].sigmoid()
    args = ["ask", tmp_path / "vqa", "--store", world / "store", "--image", "img2", "--question",
            "what colour is the ball ?", "--tokenizer", world / "vocab.txt", "--topk", "4", "--json"]
    rc, out, err = _run(capsys, *args, "--answers", tmp_path / "label2ans.json")
    assert rc == 0, err
    got = json.loads(out)
    assert got["kind"] == "qa" and "sigmoid" in got["scoring"]
    assert {a["answer"]: a["probability"] for a in got["answers"]} == pytest.approx(
        dict(zip(labels, probs.tolist())), abs=1e-5)
    rc, _, err = _run(capsys, *args)
    assert rc == 2 and "no answer table" in err and "--answers" in err
    rc, _, err = _run(capsys, *args, "--answers", world / "model" / "answers.json")
    assert rc == 2 and "9 answers, but the model's answer head has 4 rows" in err
    # the original release's layout: a bare .pth file, sizes read off the weights, the rest from the preset
    LxmertForPretraining.from_pretrained(world / "model").save_original(tmp_path / "orig_LXRT.pth")
    rc, out, err = _run(capsys, "ask", tmp_path / "orig_LXRT.pth", "--preset", "tiny", "--store", world / "store",
                        "--image", "img0", "--question", "what colour is the ball ?", "--tokenizer",
                        world / "vocab.txt", "--answers", world / "model" / "answers.json", "--json", "--topk", "3")
    assert rc == 0, err
    rc2, ours, _ = _run(capsys, "ask", world / "model", "--store", world / "store", "--image", "img0", "--question",
                        "what colour is the ball ?", "--json", "--topk", "3")
    assert json.loads(out)["answers"] == json.loads(ours)["answers"]


def test_match_ranks_every_pair_by_the_matching_head(world, capsys):
    net = LxmertForPretraining.from_pretrained(world / "model").eval()
    sentences = [SENTENCE, "a dog and two cups", "what colour is the ball ?"]
    expected = {}
    for img in ("img0", "img2"):
        for s in sentences:  # one pair at a time, unpadded
            inputs, _ = _inputs(world, img, s)
            with torch.no_grad():
                expected[img, s] = float(net(**inputs).cross_relationship_score[0].softmax(-1)[1])
    argv = ["match", world / "model", "--store", world / "store", "--image", "img0", "--image", "img2"]
    for s in sentences:
        argv += ["--sentence", s]
    rc, out, err = _run(capsys, *argv, "--json")
    assert rc == 0, err
    pairs = json.loads(out)["pairs"]
    assert len(pairs) == 6
    assert {(p["image"], p["sentence"]): p["probability"] for p in pairs} == pytest.approx(expected, abs=1e-5)
    assert [(p["image"], p["sentence"]) for p in pairs] == sorted(expected, key=expected.get, reverse=True)
    rc, text, _ = _run(capsys, *argv)
    best = max(expected, key=expected.get)
    assert rc == 0 and best[0] in text.splitlines()[1] and best[1] in text.splitlines()[1]


# ------------------------------------------------------------------ errors
def test_errors_are_one_line_and_a_nonzero_exit(world, tmp_path, capsys):
    base = ["--store", world / "store", "--image"]
    rc, _, err = _run(capsys, "ask", world / "model", *base, "img7", "--question", "what ?")
    assert rc == 2 and "image 'img7' is not in the feature store" in err and "img0" in err and err.count("\n") == 1
    long = SENTENCE + " " + " ".join(["the red ball"] * 5)
    rc, _, err = _run(capsys, "match", world / "model", *base, "img0", "--sentence", long)
    assert rc == 2 and "over the limit of 20" in err and "'ball the red ball the red ball' would be cut" in err
    rc, out, err = _run(capsys, "match", world / "model", *base, "img0", "--sentence", long, "--truncate")
    assert rc == 0 and "cut by the token limit: 'ball the red ball the red ball'" in err
    torch.manual_seed(0)
    cfg = LxmertConfig.load(world / "model" / "config.json")
    LxmertForNLVR2(cfg).save_pretrained(tmp_path / "nlvr2")
    shutil.copyfile(world / "vocab.txt", tmp_path / "nlvr2" / "vocab.txt")
    rc, _, err = _run(capsys, "ask", tmp_path / "nlvr2", *base, "img0", "--question", "what ?")
    assert rc == 2 and "an NLVR2 model has no answer head" in err
    rc, _, err = _run(capsys, "match", tmp_path / "nlvr2", *base, "img0", "--sentence", "a dog")
    assert rc == 2 and "no cross-modality matching head" in err
    rc, _, err = _run(capsys, "attention", tmp_path / "nlvr2", *base, "img0", "--sentence", "a dog",
                      "--out", tmp_path / "n")
    assert rc == 0, err  # every model has attention to draw
    rc, _, err = _run(capsys, "attention", world / "model", *base, "img0", "--sentence", "a dog", "--out",
                      tmp_path / "x", "--image-file", tmp_path / "missing.jpg")
    assert rc == 2 and "missing.jpg" in err


def test_the_real_command_exits_nonzero(world):
    from procs import run

    done = run([Path(sys.executable).parent / "lxmert", "ask", world / "model", "--store", world / "store", "--image",
                "nope", "--question", "what ?"], ok=False, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("lxmert ask: error: image 'nope' is not in the feature store")


# ------------------------------------------------------------------ the store's label names
def test_store_keeps_label_names_and_refuses_a_short_vocabulary(world, tmp_path):
    from data.store import FeatureStore, build_store

    assert FeatureStore(world / "store").label_names() == {"objects": OBJECTS, "attributes": ATTRIBUTES}
    (tmp_path / "short.txt").write_text("ball\ncup\n")
    with pytest.raises(ValueError, match=r"short.txt: 2 objects labels, but .*img\d.npz: img_id 'img\d' uses id 3"):
        build_store(tmp_path / "s", npz_dirs=[world / "npz"], progress=False,
                    label_files={"objects": tmp_path / "short.txt"})
    assert not (tmp_path / "s").exists() and not (tmp_path / "s.partial").exists()
    build_store(tmp_path / "plain", npz_dirs=[world / "npz"], progress=False)
    assert FeatureStore(tmp_path / "plain").label_names() == {}


# ------------------------------------------------------------------ the page, in a real browser
def _browser():
    """A headless Chromium through its driver, or the reason there is none."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        return None, "selenium is not installed (pip install -e '.[dev]')"
    binary = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    driver = shutil.which("chromedriver")
    if not binary or not driver:
        return None, "no chromium and chromedriver (Debian: apt-get install chromium chromium-driver; .ci/run does)"
    return (webdriver, Service, binary, driver), ""


@pytest.mark.timeout(300)
def test_page_in_a_real_browser(world, drawn, tmp_path):
    found, reason = _browser()
    if found is None:
        print(f"skipping the browser test: {reason}")
        pytest.skip(reason)
    webdriver, Service, binary, driver = found
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    opts = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(flag)
    opts.binary_location = binary
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    saved = np.load(drawn / "attention.npz")
    to_vision, to_language = saved["to_vision"], saved["to_language"]
    browser = webdriver.Chrome(service=Service(driver), options=opts)
    try:
        browser.set_page_load_timeout(60)
        browser.get((drawn / "attention.html").as_uri())
        words = browser.find_elements(By.CSS_SELECTOR, ".word")
        boxes = browser.find_elements(By.CSS_SELECTOR, ".box")
        assert len(words) == to_vision.shape[2] and len(boxes) == to_vision.shape[3]
        by_index = sorted(boxes, key=lambda b: int(b.get_attribute("data-index")))
        centres = ((BOXES[:, :2] + BOXES[:, 2:]) / 2).astype(int)
        pixel = "return document.getElementById('shade-canvas').getContext('2d').getImageData(arguments[0], arguments[1], 1, 1).data[3];"
        shown = lambda: np.array([browser.execute_script(pixel, int(x), int(y)) / 255 for x, y in centres])  # noqa: E731
        mean = to_vision[-1].mean(0)  # the page opens on the last cross layer, mean over heads
        a, b = next((i, j) for i in range(len(words)) for j in range(len(words))
                    if mean[i].argmax() != mean[j].argmax())
        for k in (a, b, a):
            ActionChains(browser).move_to_element(words[k]).perform()
            np.testing.assert_allclose(shown(), np.sqrt(mean[k]), atol=3e-3)  # opacity = sqrt(weight), in 1/255 steps
            np.testing.assert_allclose([float(b.get_attribute("data-weight")) for b in by_index], mean[k], atol=1e-4)
            assert shown().argmax() == mean[k].argmax()
        Select(browser.find_element(By.ID, "head")).select_by_visible_text("head 3")
        np.testing.assert_allclose(shown(), np.sqrt(to_vision[-1, 3, a]), atol=3e-3)
        Select(browser.find_element(By.ID, "layer")).select_by_visible_text("cross layer 1")
        np.testing.assert_allclose(shown(), np.sqrt(to_vision[0, 3, a]), atol=3e-3)
        ActionChains(browser).move_to_element(by_index[3]).perform()  # a box: its words
        row = to_language[0, 3, 3]
        alphas = []
        for w in words:
            colour = w.value_of_css_property("background-color")
            alphas.append(float(colour.rstrip(")").split(",")[3]) if colour.startswith("rgba(217") else
                          (1.0 if colour.startswith("rgb(217") else 0.0))
        np.testing.assert_allclose(alphas, np.sqrt(row), atol=4e-3)  # CSS keeps alpha in steps of 1/255
        assert "box 3" in browser.find_element(By.ID, "status").text
        assert shown().max() == 0  # pointing at a box: no box shaded
        errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
        assert errors == [], errors
        # boxes inside others can be pointed at, and overlaps show the strongest box, as in the figures
        from interpret.page import write_page

        write_page(_hand_maps(NESTED, NESTED_WEIGHTS), tmp_path / "nested.html")
        browser.get((tmp_path / "nested.html").as_uri())
        ActionChains(browser).move_to_element(browser.find_elements(By.CSS_SELECTOR, ".word")[1]).perform()
        spots = [(100, 100), (50, 150), (270, 90)]
        got = [browser.execute_script(pixel, x, y) / 255 for x, y in spots]
        np.testing.assert_allclose(got, np.sqrt([0.5, 0.1, 0.15]), atol=3e-3)
        inner = browser.find_element(By.CSS_SELECTOR, '.box[data-index="1"]')
        ActionChains(browser).move_to_element(inner).perform()
        assert browser.find_element(By.ID, "status").text.startswith("box 1 ")
        errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
        assert errors == [], errors
    finally:
        browser.quit()


# ------------------------------------------------------------------ the folder, photos, other checkpoints
def test_a_rerun_replaces_the_folder_and_other_folders_are_refused(world, tmp_path, capsys):
    from interpret.attention import load

    out = _attention_run(world, tmp_path / "att", capsys)
    first = len(list((out / "words").glob("*.png")))
    rc, _, err = _run(capsys, "attention", world / "model", "--store", world / "store", "--image", "img2",
                      "--sentence", "a dog", "--out", out)
    assert rc == 0, err
    x = LxmertConfig.load(world / "model" / "config.json").x_layers
    assert first == x * len(_inputs(world, "img1", SENTENCE)[1])
    assert {p.name for p in (out / "words").glob("*.png")} == {  # nothing of the first sentence stays
        f"layer{i + 1}_{k:02d}_{w}.png" for i in range(x) for k, w in enumerate(["cls", "a", "dog", "sep"])}
    maps = load(out)  # the numbers read back: what a figure is redrawn from
    assert maps.image == "img2" and maps.tokens == ["[CLS]", "a", "dog", "[SEP]"]
    np.testing.assert_array_equal(maps.to_vision, np.load(out / "attention.npz")["to_vision"])
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    rc, _, err = _run(capsys, "attention", world / "model", "--store", world / "store", "--image", "img2",
                      "--sentence", "a dog", "--out", tmp_path / "mine")
    assert rc == 2 and "holds other files" in err and (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_a_greyscale_jpeg_photo_is_drawn_in_grey(world, tmp_path, capsys):
    from PIL import Image

    Image.fromarray(np.full((H, W), 90, dtype=np.uint8), mode="L").save(tmp_path / "grey.jpg")
    out = _attention_run(world, tmp_path / "g", capsys, "--image-file", tmp_path / "grey.jpg")
    from matplotlib.image import imread

    img = imread(out / "relations_layer1.png")[..., :3]
    corner = img[H - 40, 3]  # outside every box and below the boxes' labels
    assert abs(corner[0] - corner[1]) < 0.02 and abs(corner[1] - corner[2]) < 0.02 and 0.3 < corner[0] < 0.42


def test_an_encoder_alone_draws_attention_but_answers_nothing(world, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    (tmp_path / "enc").mkdir()
    state = load_file(world / "model" / "model.safetensors")
    save_file({k: v for k, v in state.items() if k.startswith("encoder.")}, tmp_path / "enc" / "model.safetensors")
    shutil.copyfile(world / "model" / "config.json", tmp_path / "enc" / "config.json")
    shutil.copyfile(world / "vocab.txt", tmp_path / "enc" / "vocab.txt")
    out = _attention_run(world, tmp_path / "e", capsys)
    rc, _, err = _run(capsys, "attention", tmp_path / "enc", "--store", world / "store", "--image", "img1",
                      "--sentence", SENTENCE, "--out", tmp_path / "e2")
    assert rc == 0, err
    np.testing.assert_array_equal(np.load(out / "attention.npz")["to_vision"],
                                  np.load(tmp_path / "e2" / "attention.npz")["to_vision"])  # the same encoder
    rc, _, err = _run(capsys, "ask", tmp_path / "enc", "--store", world / "store", "--image", "img1",
                      "--question", "what ?")
    assert rc == 2 and "encoder alone" in err and "no answer head" in err


def test_match_refuses_a_model_pretrained_without_matching(world, tmp_path, capsys):
    cfg = json.loads((world / "model" / "config.json").read_text())
    shutil.copytree(world / "model", tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text(json.dumps({**cfg, "task_matched": False}))
    rc, _, err = _run(capsys, "match", tmp_path / "m", "--store", world / "store", "--image", "img1",
                      "--sentence", "a dog")
    assert rc == 2 and "task_matched false" in err
    rc, _, err = _run(capsys, "ask", world / "model", "--store", world / "store", "--image", "img1",
                      "--question", "what ?", "--max-tokens", "2")
    assert rc == 2 and "--max-tokens 2: at least 3" in err


def test_a_model_without_relation_or_cross_layers(world, tmp_path, capsys):
    cfg = LxmertConfig.load(world / "model" / "config.json")
    net = LxmertForPretraining(LxmertConfig.from_dict({**cfg.to_dict(), "r_layers": 0, "x_layers": 0}))
    net.init_weights()
    net.save_pretrained(tmp_path / "flat")
    shutil.copyfile(world / "vocab.txt", tmp_path / "flat" / "vocab.txt")
    rc, _, err = _run(capsys, "attention", tmp_path / "flat", "--store", world / "store", "--image", "img1",
                      "--sentence", SENTENCE, "--out", tmp_path / "f", "--head", "1")
    assert rc == 0, err
    saved = np.load(tmp_path / "f" / "attention.npz")
    assert saved["relations"].shape == (0, 4, 10, 10) and saved["to_vision"].shape == (0, 4, 12, 10)
    assert {p.name for p in (tmp_path / "f").glob("*.png")} == {"language.png"}
    page = (tmp_path / "f" / "attention.html").read_text()
    assert "no cross-modality layers" in page and "<script" not in page
