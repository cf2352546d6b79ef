"""The model on its own: configuration, input checks, gradients, checkpointing, task heads."""

from __future__ import annotations

import ast
import dataclasses
import pathlib

import pytest
import torch
from conftest import make_batch

from model import LxmertConfig, LxmertForPretraining, LxmertForQuestionAnswering
from model.tied import TiedGradient


def tiny(**overrides) -> LxmertForPretraining:
    torch.manual_seed(0)
    return LxmertForPretraining(LxmertConfig.from_preset("tiny", **overrides))


def test_presets():
    base = LxmertConfig.from_preset("base")
    assert (base.hidden_size, base.num_attention_heads, base.intermediate_size) == (768, 12, 3072)
    assert (base.l_layers, base.r_layers, base.x_layers) == (9, 5, 5)
    assert (base.vocab_size, base.visual_feat_dim, base.visual_pos_dim) == (30522, 2048, 4)
    assert (base.num_qa_labels, base.num_object_labels, base.num_attr_labels) == (9500, 1600, 400)
    assert base.visual_loss_normalizer == 1 / 0.15
    assert LxmertForPretraining(base).num_parameters() == 228_051_752  # "about 228.05 M"
    assert tiny().num_parameters() < 1_000_000


@pytest.mark.parametrize("field, value", [
    ("hidden_size", 0), ("num_attention_heads", 5), ("l_layers", -1), ("vocab_size", 1.5),
    ("hidden_dropout_prob", 1.0), ("visual_loss_normalizer", 0.0), ("hidden_act", "relu"),
    ("loss_weights", {"mlm": -1.0}), ("loss_weights", {"nsp": 1.0}),
])
def test_invalid_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        LxmertConfig.from_preset("tiny", **{field: value})


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown model preset 'huge'"):
        LxmertConfig.from_preset("huge")


@pytest.mark.parametrize("name, change, expected", [
    ("visual_feats", lambda b: b["visual_feats"][..., :10], r"visual_feats: expected shape \(3, \*, 2048\), got \(3, 6, 10\)"),
    ("visual_pos", lambda b: b["visual_pos"][:, :4], r"visual_pos: expected shape \(3, 6, 4\), got \(3, 4, 4\)"),
    ("attention_mask", lambda b: b["attention_mask"][:2], r"attention_mask: expected shape \(3, 9\), got \(2, 9\)"),
    ("input_ids", lambda b: b["input_ids"][0], r"input_ids: expected shape \(\*, \*\), got \(9,\)"),
])
def test_shape_mismatch_raises_with_expected_and_actual(name, change, expected):
    net = tiny().eval()
    batch = make_batch(net.config, targets=False)
    batch[name] = change(batch)
    with pytest.raises(ValueError, match=expected):
        net(**batch)


def test_too_many_tokens():
    net = tiny().eval()
    batch = make_batch(net.config, tokens=65, targets=False)
    with pytest.raises(ValueError, match="65 tokens exceed max_position_embeddings=64"):
        net(**batch)


def test_target_shape_mismatch():
    net = tiny().eval()
    batch = make_batch(net.config)
    ids, weights = batch["obj_labels"]["obj"]
    batch["obj_labels"]["obj"] = (ids[:, :3], weights)
    with pytest.raises(ValueError, match=r"obj_labels\['obj'\]: expected shape \(3, 6\), got \(3, 3\)"):
        net(**batch)


def test_every_parameter_gets_a_gradient():
    net = tiny().train()
    out = net(**make_batch(net.config))
    assert set(out.losses) == {"mlm", "matched", "obj", "attr", "feat", "qa"}
    out.loss.backward()
    unused = [n for n, p in net.named_parameters() if p.grad is None]
    assert unused == []
    zero = [n for n, p in net.named_parameters() if not p.grad.abs().sum() > 0]
    # As in the original code, row 0 of the token-type table is a padding row (no gradient), and
    # LXMERT only uses type 0; every other tensor moves.
    assert zero == ["encoder.embeddings.token_type.weight"]
    assert net.encoder.embeddings.position.weight.grad[0].abs().sum() == 0  # padding row too
    assert net.encoder.embeddings.position.weight.grad[1].abs().sum() > 0


def test_tied_gradient_equals_plain_autograd():
    """The one-buffer word-embedding gradient equals autograd's sum of the two uses."""
    net = tiny(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).train()
    batch = make_batch(net.config)
    net(**batch).loss.backward()
    fused = net.encoder.embeddings.word.weight.grad.clone()
    net.zero_grad()
    word = net.encoder.embeddings.word
    sink = TiedGradient()
    lang = net.encoder(batch["input_ids"], batch["visual_feats"], batch["visual_pos"], batch["attention_mask"]).language_output
    plain = torch.nn.functional.linear(net.mlm_head.transform(lang), word.weight, net.mlm_head.bias)
    torch.nn.functional.cross_entropy(plain.reshape(-1, plain.shape[-1]), batch["labels"].reshape(-1)).backward()
    reference = word.weight.grad.clone()
    net.zero_grad()
    lang = net.encoder(batch["input_ids"], batch["visual_feats"], batch["visual_pos"], batch["attention_mask"],
                       word_grad_sink=sink).language_output
    tied = net.mlm_head(lang, word, sink)
    torch.nn.functional.cross_entropy(tied.reshape(-1, tied.shape[-1]), batch["labels"].reshape(-1)).backward()
    assert (word.weight.grad - reference).abs().max() < 1e-6
    assert sink.grad is None  # consumed by the embedding's backward
    assert fused.abs().sum() > 0


def test_sparse_and_full_mlm_projection_agree():
    net = tiny(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).train()
    batch = make_batch(net.config)
    sparse = net(**batch)
    full = net(**batch, full_mlm_logits=True)
    assert sparse.prediction_logits is None and full.prediction_logits.shape == (3, 9, 512)
    assert torch.allclose(sparse.losses["mlm"], full.losses["mlm"], atol=1e-6)
    rows = (batch["labels"] != -100).reshape(-1)
    assert torch.allclose(full.prediction_logits.reshape(-1, 512)[rows], sparse.mlm_target_logits, atol=1e-6)


def test_no_targets_gives_zero_not_nan():
    net = tiny().train()
    batch = make_batch(net.config)
    batch["labels"] = torch.full_like(batch["labels"], -100)
    batch["ans"] = torch.full_like(batch["ans"], -1)
    out = net(**batch)
    assert out.losses["mlm"].item() == 0.0 and out.losses["qa"].item() == 0.0
    assert torch.isfinite(out.loss)


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = tiny(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).train()
    ckpt = tiny(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, gradient_checkpointing=True).train()
    ckpt.load_state_dict(plain.state_dict())
    batch = make_batch(plain.config)
    plain(**batch).loss.backward()
    ckpt(**batch).loss.backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), ckpt.named_parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6), name


def test_cross_attention_maps_are_both_directions_of_the_shared_projection():
    """Each cross layer's maps, computed here from its inputs and its one query/key projection:
    language queries over region keys, and region queries over word keys (padding masked)."""
    net = tiny().eval()
    batch = make_batch(net.config, targets=False)
    with torch.no_grad():
        out = net(**batch, output_attentions=True, output_hidden_states=True)
    cfg = net.config
    heads, d = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
    lang = out.language_hidden_states[cfg.l_layers - 1]  # the inputs of the first cross layer
    visn = out.vision_hidden_states[cfg.r_layers - 1]
    for x, layer in enumerate(net.encoder.cross_layers):
        w, b = layer.cross_attention.qkv.weight, layer.cross_attention.qkv.bias
        split = lambda t, part: (t @ w[part * cfg.hidden_size:(part + 1) * cfg.hidden_size].T  # noqa: E731
                                 + b[part * cfg.hidden_size:(part + 1) * cfg.hidden_size]).unflatten(-1, (heads, d)).transpose(1, 2)
        keep = batch["attention_mask"][:, None, None, :].bool()
        with torch.no_grad():
            to_vision = (split(lang, 0) @ split(visn, 1).transpose(-1, -2) / d ** 0.5).softmax(-1)
            to_language = (split(visn, 0) @ split(lang, 1).transpose(-1, -2) / d ** 0.5).masked_fill(~keep, -1e9).softmax(-1)
        assert torch.allclose(out.cross_attentions[x], to_vision, atol=1e-5), x
        assert torch.allclose(out.vision_cross_attentions[x], to_language, atol=1e-5), x
        lang, visn = out.language_hidden_states[cfg.l_layers + x], out.vision_hidden_states[cfg.r_layers + x]


def test_attention_maps_are_probabilities():
    net = tiny().eval()
    batch = make_batch(net.config, targets=False)
    with torch.no_grad():
        out = net(**batch, output_attentions=True)
        plain = net(**batch)
    assert len(out.language_attentions) == 2 and len(out.vision_attentions) == 1 and len(out.cross_attentions) == 2
    assert out.language_attentions[0].shape == (3, 4, 9, 9) and out.cross_attentions[0].shape == (3, 4, 9, 6)
    assert len(out.vision_cross_attentions) == 2 and out.vision_cross_attentions[0].shape == (3, 4, 6, 9)
    assert torch.allclose(out.vision_cross_attentions[1].sum(-1), torch.ones(3, 4, 6), atol=1e-5)
    assert out.vision_cross_attentions[1][1, :, :, -3:].abs().max() == 0  # each region attends to real words only
    assert torch.allclose(out.language_attentions[0].sum(-1), torch.ones(3, 4, 9), atol=1e-5)
    assert out.language_attentions[0][1, :, :, -3:].abs().max() == 0  # padded keys get no attention
    assert torch.allclose(out.prediction_logits, plain.prediction_logits, atol=1e-5)  # explicit path == SDPA path


def test_visual_attention_mask_hides_regions():
    net = tiny().eval()
    batch = make_batch(net.config, targets=False)
    mask = torch.ones(3, 6, dtype=torch.long)
    mask[:, 4:] = 0
    changed = batch["visual_feats"].clone()
    changed[:, 4:] = 100.0
    with torch.no_grad():
        a = net(**batch, visual_attention_mask=mask).prediction_logits
        b = net(**dict(batch, visual_feats=changed), visual_attention_mask=mask).prediction_logits
    assert torch.allclose(a, b, atol=1e-5)


def test_question_answering_losses():
    torch.manual_seed(0)
    net = LxmertForQuestionAnswering(LxmertConfig.from_preset("tiny", num_qa_labels=5)).eval()
    batch = make_batch(net.config, targets=False)
    scores = torch.zeros(3, 5)
    scores[0, 1], scores[1, 2], scores[2, 4] = 1.0, 0.3, 0.6
    out = net(**batch, labels=scores)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, scores) * 5
    assert torch.allclose(out.loss, expected)
    ids = net(**batch, labels=torch.tensor([1, 2, 4]))
    assert torch.allclose(ids.loss, torch.nn.functional.cross_entropy(out.logits, torch.tensor([1, 2, 4])))
    with pytest.raises(ValueError, match=r"labels: expected soft scores of shape \(3, 5\)"):
        net(**batch, labels=torch.zeros(3, 4))


def test_model_package_is_pure_pytorch():
    """model/ never imports deepspeed (nor the launcher)."""
    for path in pathlib.Path(__file__).resolve().parents[1].joinpath("model").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[0] in ("deepspeed", "launcher") for n in names), path


def test_cpu_dropout_statistics_and_reproducibility():
    from model.layers import Dropout

    drop = Dropout(0.1).train()
    x = torch.ones(400, 1000)
    torch.manual_seed(3)
    y = drop(x)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 0.1) < 0.003  # 400k draws: 5 standard deviations
    assert abs(y.mean().item() - 1.0) < 0.005  # kept values rescaled: expectation preserved
    values = torch.unique(y).tolist()
    assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(65536 / (65536 - 6554))
    torch.manual_seed(3)
    assert torch.equal(drop(x), y)  # the default generator drives it
    rows = (y[:, :4] == 0).float().mean(0)  # the four 16-bit lanes of each draw are all used
    assert ((rows > 0.05) & (rows < 0.15)).all()
    assert torch.equal(drop.eval()(x), x)


@pytest.mark.parametrize("name, value, expected", [
    ("labels", torch.full((3, 7), -100), r"labels: expected shape \(3, 9\), got \(3, 7\)"),
    ("matched_label", torch.ones(2, dtype=torch.long), r"matched_label: expected shape \(3,\), got \(2,\)"),
    ("ans", torch.zeros(3, 1, dtype=torch.long), r"ans: expected shape \(3,\), got \(3, 1\)"),
])
def test_target_shapes_are_checked(name, value, expected):
    net = tiny().train()
    batch = make_batch(net.config)
    batch[name] = value
    with pytest.raises(ValueError, match=expected):
        net(**batch)


def test_original_minus_one_object_and_attribute_ids_are_ignored():
    net = tiny().eval()
    batch = make_batch(net.config)
    ids, weights = batch["obj_labels"]["obj"]
    ids = ids.clone()
    ids[:, :2] = -1
    with torch.no_grad():
        a = net(**dict(batch, obj_labels={**batch["obj_labels"], "obj": (ids, weights)})).losses["obj"]
        b = net(**dict(batch, obj_labels={**batch["obj_labels"], "obj": (ids.masked_fill(ids == -1, -100), weights)})).losses["obj"]
        zero_w = weights.clone()
        zero_w[:, :2] = 0
        c = net(**dict(batch, obj_labels={**batch["obj_labels"], "obj": (ids.clamp(min=0), zero_w)})).losses["obj"]
    assert torch.equal(a, b) and torch.allclose(a, c)


def _tied_reference_grad(net, batch, steps):
    """Word-table gradient with plain autograd over ``steps`` accumulated forwards."""
    word = net.encoder.embeddings.word
    for _ in range(steps):
        lang = net.encoder(batch["input_ids"], batch["visual_feats"], batch["visual_pos"], batch["attention_mask"]).language_output
        logits = torch.nn.functional.linear(net.mlm_head.transform(lang), word.weight, net.mlm_head.bias)
        torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), batch["labels"].reshape(-1)).backward()
    grad = word.weight.grad.clone()
    net.zero_grad()
    return grad


def test_tied_gradient_under_accumulation_retain_graph_and_bf16():
    for dtype in (torch.float32, torch.bfloat16):
        net = tiny(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).train().to(dtype)
        batch = {k: v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v for k, v in make_batch(net.config).items()}
        only_mlm = {k: batch[k] for k in ("input_ids", "visual_feats", "visual_pos", "attention_mask", "labels")}
        reference = _tied_reference_grad(net, batch, steps=2)
        for _ in range(2):  # gradient accumulation: two forwards and backwards before reading .grad
            net(**only_mlm).loss.backward()
        tol = 1e-6 if dtype == torch.float32 else 2e-2 * reference.abs().max().item()
        assert (net.encoder.embeddings.word.weight.grad.float() - reference.float()).abs().max() <= tol, dtype
        net.zero_grad()
        loss = net(**only_mlm).loss
        loss.backward(retain_graph=True)
        loss.backward()  # the same graph twice
        assert (net.encoder.embeddings.word.weight.grad.float() - reference.float()).abs().max() <= tol, dtype


def test_training_step_under_autocast():
    net = tiny().train()
    batch = make_batch(net.config)
    with torch.autocast("cpu", torch.bfloat16):
        out = net(**batch)
    out.loss.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in net.parameters())
    assert torch.isfinite(net.encoder.embeddings.word.weight.grad).all()


def test_fp16_gradients_stay_finite_for_zeroed_regions():
    """A masked region's features are zeros; with a zero feature bias (BERT's init, or a checkpoint's)
    its projection has no variance, and with eps=1e-12 LayerNorm's 1/sqrt(var + eps) = 1e6 overflows
    fp16 unless normalised in fp32. Our init draws that bias at random: the gradients stay small."""
    for zero_bias, init in ((True, 0.02), (False, None)):
        net = tiny(**({"initializer_range": init} if init else {})).half().train()
        if zero_bias:
            net.encoder.visual_embeddings.feat_proj.bias.data.zero_()
        else:
            assert net.encoder.visual_embeddings.feat_proj.bias.float().std() > 0.5 * net.config.initializer_range
        batch = make_batch(net.config)
        batch = {k: v.half() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in batch.items()}
        batch["visual_feats"][:, :2] = 0
        out = net(**batch)
        out.loss.backward()
        assert out.feat_prediction.dtype == torch.float16
        assert [n for n, p in net.named_parameters() if not torch.isfinite(p.grad).all()] == []
        if not zero_bias:
            assert max(p.grad.float().abs().max() for p in net.parameters()) < 100


def test_static_shapes_pad_every_batch_to_one_shape_with_the_same_losses():
    """data.static_shapes: batches of different sentence lengths and region counts all come out
    (B, 20) and (B, R) with both masks, and every loss equals the one of the batch padded to its longest."""
    from data.collate import StaticShapes, collate_pretraining

    torch.manual_seed(0)
    cfg = LxmertConfig.from_preset("tiny", visual_feat_dim=8, num_object_labels=5, num_attr_labels=4, vocab_size=30,
                                   num_qa_labels=6)
    net = LxmertForPretraining(cfg).eval()
    g = torch.Generator().manual_seed(4)

    def example(t: int, n: int, matched: int) -> dict:
        feats = torch.randn(n, 8, generator=g)
        ids = torch.randint(5, 30, (t,), generator=g)
        labels = torch.where(torch.rand(t, generator=g) < 0.3, ids, torch.tensor(-100))
        return {"input_ids": ids, "labels": labels, "visual_feats": feats, "visual_pos": torch.rand(n, 4, generator=g),
                "obj_ids": torch.randint(0, 5, (n,), generator=g), "obj_weights": torch.rand(n, generator=g),
                "attr_ids": torch.randint(0, 4, (n,), generator=g), "attr_weights": torch.rand(n, generator=g),
                "feat_targets": feats + 0.5, "feat_mask": (torch.rand(n, generator=g) < 0.5).float(),
                "matched_label": matched, "ans": 2 if matched else -100}

    shapes = StaticShapes(tokens=20, regions=12)
    for sizes in (((7, 6, 1), (5, 4, 0), (9, 5, 1)), ((12, 12, 0), (20, 10, 1), (3, 12, 1))):
        examples = [example(*size) for size in sizes]
        tight, fixed = collate_pretraining(examples), collate_pretraining(examples, shapes=shapes)
        assert fixed.input_ids.shape == fixed.attention_mask.shape == fixed.labels.shape == (3, 20)
        assert fixed.visual_feats.shape == (3, 12, 8) and fixed.visual_attention_mask.shape == (3, 12)
        assert fixed.feat_mask.shape == fixed.obj_ids.shape == (3, 12)
        with torch.no_grad():
            a, b = (net(**batch.model_inputs()).losses for batch in (tight, fixed))
        assert set(a) == set(b) == {"mlm", "matched", "obj", "attr", "feat", "qa"}
        for name in a:
            torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6)


def test_mlm_slots_give_one_shape_and_the_same_loss_and_gradients():
    """Static shapes' masked-LM slots: in training, batches with 2 to 11 targets all project exactly
    ``mlm_slots`` positions (targets first, in order), with the loss and every gradient of the
    projection at the targets only; more targets than slots fails on the device and in the collator."""
    from data.collate import StaticShapes, collate_pretraining

    torch.manual_seed(0)
    cfg = LxmertConfig.from_preset("tiny", visual_feat_dim=8, num_object_labels=5, num_attr_labels=4, vocab_size=30,
                                   num_qa_labels=6, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    net = LxmertForPretraining(cfg).train()
    g = torch.Generator().manual_seed(5)

    def example(t: int, targets: int) -> dict:
        n = 6
        feats = torch.randn(n, 8, generator=g)
        ids = torch.randint(5, 30, (t,), generator=g)
        labels = torch.full((t,), -100)
        at = torch.randperm(t - 2, generator=g)[:targets] + 1
        labels[at] = ids[at]
        return {"input_ids": ids, "labels": labels, "visual_feats": feats, "visual_pos": torch.rand(n, 4, generator=g),
                "obj_ids": torch.randint(0, 5, (n,), generator=g), "obj_weights": torch.rand(n, generator=g),
                "attr_ids": torch.randint(0, 4, (n,), generator=g), "attr_weights": torch.rand(n, generator=g),
                "feat_targets": feats + 0.5, "feat_mask": (torch.rand(n, generator=g) < 0.5).float(),
                "matched_label": 1, "ans": 2}

    def run(batch) -> tuple:
        net.zero_grad()
        out = net(**batch.model_inputs())
        out.loss.backward()
        return out, {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}

    shapes = StaticShapes(tokens=20, regions=6, mlm_slots=12)
    for counts in (((9, 1), (7, 1)), ((12, 4), (20, 7)), ((5, 0), (6, 0))):
        examples = [example(*c) for c in counts]
        targets = sum(c[1] for c in counts)
        tight, fixed = collate_pretraining(examples), collate_pretraining(examples, shapes=shapes)
        assert fixed.mlm_slots == 12 and "mlm_slots" not in tight.model_inputs()
        (a, grads_a), (b, grads_b) = run(tight), run(fixed)
        assert a.mlm_target_logits.shape == (targets, 30) and b.mlm_target_logits.shape == (12, 30)
        torch.testing.assert_close(b.mlm_target_logits[:targets], a.mlm_target_logits, rtol=1e-5, atol=1e-6)
        for name in a.losses:
            torch.testing.assert_close(a.losses[name], b.losses[name], rtol=1e-5, atol=1e-6)
        assert grads_a.keys() == grads_b.keys()
        for name in grads_a:
            torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-4, atol=1e-6, msg=name)
    examples = [example(20, 9), example(20, 8)]
    with pytest.raises(ValueError, match="17 masked-LM targets, more than data.mlm_slots=12"):
        collate_pretraining(examples, shapes=shapes)
    batch = collate_pretraining(examples, shapes=StaticShapes(20, 6))
    with pytest.raises(RuntimeError, match="more masked-LM targets than mlm_slots"):
        net(**batch.model_inputs(), mlm_slots=16)


def test_mlm_slots_for_is_the_binomial_upper_tail():
    """The default slot count: the smallest k with P(targets > k) <= tail, checked against exact fractions."""
    from fractions import Fraction
    from math import comb

    from data.objectives import mlm_slots_for

    for examples, maskable, p, tail in ((2, 18, 0.15, 1e-6), (4, 9, 0.3, 1e-9), (1, 18, 0.15, 1e-3)):
        n, q = examples * maskable, Fraction(p)

        def above(k: int) -> Fraction:
            return sum(comb(n, j) * q**j * (1 - q) ** (n - j) for j in range(k + 1, n + 1))

        k = mlm_slots_for(examples, maskable, p, tail)
        assert above(k) <= tail < above(k - 1), (examples, maskable, p, k)
    assert mlm_slots_for(8, 18, 1.0) == 144 and 21.6 < mlm_slots_for(8, 18, 0.15) < 144


def test_visual_losses_average_over_real_regions():
    """Images of 6, 4 and 5 regions: the same examples padded to 6 (the batch's largest) or to 11
    give the same feature, object and attribute losses; with every image at R regions the loss is
    the original's mean over B x R."""
    from data.collate import collate_pretraining

    torch.manual_seed(0)
    cfg = LxmertConfig.from_preset("tiny", visual_feat_dim=8, num_object_labels=5, num_attr_labels=4, vocab_size=30)
    net = LxmertForPretraining(cfg).eval()
    g = torch.Generator().manual_seed(3)

    def example(n: int) -> dict:
        feats = torch.randn(n, 8, generator=g)
        return {"input_ids": torch.randint(1, 30, (7,), generator=g), "labels": torch.full((7,), -100),
                "visual_feats": feats, "visual_pos": torch.rand(n, 4, generator=g),
                "obj_ids": torch.randint(0, 5, (n,), generator=g), "obj_weights": torch.rand(n, generator=g),
                "attr_ids": torch.randint(0, 4, (n,), generator=g), "attr_weights": torch.rand(n, generator=g),
                "feat_targets": feats + 0.5, "feat_mask": (torch.rand(n, generator=g) < 0.5).float(),
                "matched_label": 1, "ans": -100}

    examples = [example(n) for n in (6, 4, 5)]
    tight = collate_pretraining(examples)
    assert tight.visual_feats.shape[1] == 6 and tight.visual_attention_mask is not None
    # the same batch padded to 11 regions (as beside an image of 11): padded regions carry no target or weight
    pad = {"visual_feats": 0, "visual_pos": 0, "visual_attention_mask": 0, "obj_ids": -100, "obj_weights": 0,
           "attr_ids": -100, "attr_weights": 0, "feat_targets": 0, "feat_mask": 0}
    loose = dataclasses.replace(tight, **{k: torch.cat([getattr(tight, k), torch.full(
        (3, 5, *getattr(tight, k).shape[2:]), v, dtype=getattr(tight, k).dtype)], 1) for k, v in pad.items()})
    with torch.no_grad():
        a, b = (net(**batch.model_inputs()).losses for batch in (tight, loose))
    for name in ("feat", "obj", "attr"):
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6)
        assert a[name] > 0

    same = collate_pretraining([example(6) for _ in range(3)])
    assert same.visual_attention_mask is None
    with torch.no_grad():
        out = net(**same.model_inputs())
        per_region = torch.nn.functional.smooth_l1_loss(out.feat_prediction, same.feat_targets, reduction="none").mean(-1)
        original = (per_region * same.feat_mask).mean() * cfg.visual_loss_normalizer  # mean over B x R
    torch.testing.assert_close(out.losses["feat"], original)


def test_small_presets_keep_the_base_projection_gain():
    """tiny and small scale BERT's initializer_range with the width so that a projection's gain,
    initializer_range x sqrt(width), is the base model's (0.02 x sqrt(768)); small is tiny at twice the width."""
    from model import PRESETS

    base = LxmertConfig.from_preset("base")
    gain = base.initializer_range * base.hidden_size ** 0.5
    for name in ("tiny", "small"):
        cfg = LxmertConfig.from_preset(name)
        assert abs(cfg.initializer_range * cfg.hidden_size ** 0.5 - gain) < 0.005 * gain, name
    assert set(PRESETS) == {"base", "tiny", "small"}
    assert LxmertConfig.from_preset("small") == LxmertConfig.from_preset("tiny", hidden_size=128, intermediate_size=256,
                                                                         initializer_range=0.049)
