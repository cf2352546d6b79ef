"""Our model equals Hugging Face's LxmertForPreTraining, output by output and loss by loss."""

from __future__ import annotations

import pytest
import torch
from conftest import BASE_WIDTH_HF, TINY_HF, hf_model, make_batch, ours_from_hf

from model import LxmertConfig, LxmertForPretraining
from model import weights as W

TOL = 1e-5


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


def hf_objective_losses(hf, batch: dict) -> dict[str, torch.Tensor]:
    """Each objective's loss from HF, by giving it one kind of target at a time."""
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids", "visual_feats", "visual_pos")}
    losses = {
        "mlm": hf(**inputs, labels=batch["labels"]).loss,
        "matched": hf(**inputs, matched_label=batch["matched_label"]).loss,
        "qa": hf(**inputs, ans=batch["ans"]).loss,
    }
    all_visual = hf.visual_losses
    try:
        for key in ("obj", "attr", "feat"):
            hf.visual_losses = {key: all_visual[key]}
            losses[key] = hf(**inputs, obj_labels=batch["obj_labels"]).loss
    finally:
        hf.visual_losses = all_visual
    return losses


@pytest.mark.parametrize("config", [TINY_HF, BASE_WIDTH_HF], ids=["tiny", "base-width"])
def test_outputs_and_losses_equal_hf(config):
    hf = hf_model(**config)
    ours = ours_from_hf(hf)
    batch = make_batch(ours.config)
    with torch.no_grad():
        h = hf(**batch, output_attentions=True, output_hidden_states=True)
        o = ours(**batch, output_attentions=True, output_hidden_states=True)
        h_objects = hf.obj_predict_head(h.vision_hidden_states[-1])
        h_losses = hf_objective_losses(hf, batch)

    for name in ("prediction_logits", "cross_relationship_score", "question_answering_score"):
        assert max_diff(getattr(h, name), getattr(o, name)) < TOL, name
    assert max_diff(h_objects["obj"], o.obj_logits) < TOL
    assert max_diff(h_objects["attr"], o.attr_logits) < TOL
    assert max_diff(h_objects["feat"], o.feat_prediction) < TOL
    for theirs, mine in (("language_hidden_states", "language_hidden_states"), ("vision_hidden_states", "vision_hidden_states"),
                         ("language_attentions", "language_attentions"), ("vision_attentions", "vision_attentions"),
                         ("cross_encoder_attentions", "cross_attentions")):
        a, b = getattr(h, theirs), getattr(o, mine)
        assert len(a) == len(b) > 0, theirs
        assert max(max_diff(x, y) for x, y in zip(a, b)) < TOL, theirs

    assert set(o.losses) == {"mlm", "matched", "obj", "attr", "feat", "qa"}
    for name, value in h_losses.items():
        assert abs(value.item() - o.losses[name].item()) < TOL * max(1.0, abs(value.item())), name
    assert abs(h.loss.item() - o.loss.item()) < TOL * h.loss.item()


def test_base_preset_equals_hf():
    """The paper's configuration, whole: same parameter count and outputs as HF's default LXMERT."""
    import transformers

    torch.manual_seed(0)
    hf = transformers.LxmertForPreTraining(transformers.LxmertConfig()).eval()
    ours = ours_from_hf(hf)
    assert ours.num_parameters() == hf.num_parameters() == LxmertForPretraining(LxmertConfig.from_preset("base")).num_parameters()
    batch = make_batch(ours.config, batch=2, tokens=20, regions=36)
    with torch.no_grad():
        h, o = hf(**batch), ours(**batch)
    for name in ("prediction_logits", "cross_relationship_score", "question_answering_score"):
        assert max_diff(getattr(h, name), getattr(o, name)) < TOL, name
    assert abs(h.loss.item() - o.loss.item()) < TOL * h.loss.item()


def test_original_ignore_value_minus_one_is_ignored(tiny_pair):
    hf, ours = tiny_pair
    batch = make_batch(ours.config)
    original = dict(batch, labels=batch["labels"].masked_fill(batch["labels"] == -100, -1),
                    ans=batch["ans"].masked_fill(batch["ans"] == -100, -1))
    with torch.no_grad():
        a, b = ours(**batch), ours(**original)
    for name in a.losses:
        assert torch.equal(a.losses[name], b.losses[name]), name


def test_training_gradients_equal_hf():
    """Train mode without dropout: our sparse MLM projection, fused QKV and tied-gradient path
    give HF's loss and the same gradient for every parameter."""
    config = dict(TINY_HF, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    hf = hf_model(**config).train()
    ours = ours_from_hf(hf).train()
    batch = make_batch(ours.config)
    h, o = hf(**batch), ours(**batch)
    assert o.prediction_logits is None and o.mlm_target_logits.shape == (int((batch["labels"] != -100).sum()), 99)
    assert abs(h.loss.item() - o.loss.item()) < TOL * h.loss.item()
    h.loss.backward()
    o.loss.backward()
    hf_grads = {k: p.grad for k, p in hf.named_parameters()}
    mine, _ = W.to_native(hf_grads, W.HF)
    for name, p in ours.named_parameters():
        assert max_diff(mine[name], p.grad) < 1e-5, name


def test_loss_weights_and_switches():
    hf = hf_model(**TINY_HF)
    ours = ours_from_hf(hf)
    batch = make_batch(ours.config)
    with torch.no_grad():
        base = ours(**batch)
    weighted = LxmertForPretraining(LxmertConfig.from_dict({**ours.config.to_dict(), "loss_weights": {"mlm": 2.0, "qa": 0.0}})).eval()
    weighted.load_state_dict(ours.state_dict())
    with torch.no_grad():
        out = weighted(**batch)
    expected = sum(v for k, v in base.losses.items() if k not in ("mlm", "qa")) + 2 * base.losses["mlm"]
    assert abs(out.loss.item() - expected.item()) < 1e-5
    off = LxmertForPretraining(LxmertConfig.from_dict({**ours.config.to_dict(), "task_matched": False, "visual_attr_loss": False}))
    off.eval()
    with torch.no_grad():
        out = off(**{k: v for k, v in batch.items() if k != "obj_labels"},
                  obj_labels={k: v for k, v in batch["obj_labels"].items() if k != "attr"})
    assert set(out.losses) == {"mlm", "obj", "feat", "qa"}
    assert out.attr_logits is None
