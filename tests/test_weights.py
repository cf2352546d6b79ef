"""Loading and saving: Hugging Face directories, original *_LXRT.pth files, our own format."""

from __future__ import annotations

import json
import os

import pytest
import torch
from conftest import TINY_HF, hf_model, make_batch, ours_from_hf

from model import LxmertConfig, LxmertForNLVR2, LxmertForPretraining, LxmertForQuestionAnswering


def outputs(model, batch):
    with torch.no_grad():
        out = model(**batch)
    return out


def assert_same_outputs(a, b, batch):
    oa, ob = outputs(a, batch), outputs(b, batch)
    for name in ("prediction_logits", "cross_relationship_score", "question_answering_score", "loss"):
        x, y = getattr(oa, name), getattr(ob, name)
        assert (x - y).abs().max().item() < 1e-5, name


def original_state_dict(hf) -> dict[str, torch.Tensor]:
    """The original release's layout, made from HF keys: module.bert.*, decoder weight stored."""
    state = {("module.bert." + k[len("lxmert."):] if k.startswith("lxmert.") else "module." + k): v.clone()
             for k, v in hf.state_dict().items()}
    state["module.cls.predictions.decoder.weight"] = hf.state_dict()["lxmert.embeddings.word_embeddings.weight"].clone()
    return state


def test_hf_directory_loads_with_its_config(tmp_path):
    hf = hf_model(**TINY_HF)
    hf.save_pretrained(tmp_path / "hf")
    ours = LxmertForPretraining.from_pretrained(tmp_path / "hf").eval()
    assert ours.config.hidden_size == 32 and ours.config.visual_feat_dim == 24
    assert ours.config.visual_loss_normalizer == pytest.approx(6.67)  # HF's value, kept
    batch = make_batch(ours.config)
    h, o = outputs(hf, batch), outputs(ours, batch)
    assert (h.prediction_logits - o.prediction_logits).abs().max() < 1e-5
    assert abs(h.loss.item() - o.loss.item()) < 1e-5 * h.loss.item()


def test_hf_round_trip_is_exact(tmp_path):
    """HF -> ours -> HF: transformers loads our export with no missing or unexpected keys,
    and every tensor equals the original."""
    import transformers

    hf = hf_model(**TINY_HF)
    hf.save_pretrained(tmp_path / "hf")
    LxmertForPretraining.from_pretrained(tmp_path / "hf").save_pretrained(tmp_path / "back", hf=True)
    again, info = transformers.LxmertForPreTraining.from_pretrained(tmp_path / "back", output_loading_info=True)
    assert info["missing_keys"] == [] or info["missing_keys"] == set()
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    before, after = hf.state_dict(), again.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key
    assert again.config.visual_loss_normalizer == pytest.approx(6.67)


def test_native_round_trip(tmp_path):
    hf = hf_model(**TINY_HF)
    ours = ours_from_hf(hf)
    ours.save_pretrained(tmp_path / "native")
    assert json.loads((tmp_path / "native" / "config.json").read_text())["format"] == "lxmert-deepspeed"
    umask = os.umask(0)
    os.umask(umask)
    for name in ("config.json", "model.safetensors"):  # readable as any file the user writes
        assert (tmp_path / "native" / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    assert sorted(p.name for p in (tmp_path / "native").iterdir()) == ["config.json", "model.safetensors"]
    back = LxmertForPretraining.from_pretrained(tmp_path / "native")
    for (k, v), (k2, v2) in zip(ours.state_dict().items(), back.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k
    assert back.config == ours.config


def test_original_layout_loads_and_gives_same_outputs(tmp_path):
    hf = hf_model(**TINY_HF)
    path = tmp_path / "Epoch20_LXRT.pth"
    torch.save(original_state_dict(hf), path)
    config = LxmertConfig.from_hf_dict(hf.config.to_dict())
    ours = LxmertForPretraining.from_pretrained(path, config).eval()
    assert_same_outputs(ours_from_hf(hf), ours, make_batch(config))
    # and back out to the original layout: the same keys and values
    ours.save_original(tmp_path / "out_LXRT.pth")
    written = torch.load(tmp_path / "out_LXRT.pth", weights_only=True)
    expected = {k[len("module."):]: v for k, v in original_state_dict(hf).items()}
    assert written.keys() == expected.keys()
    assert all(torch.equal(written[k], expected[k]) for k in expected)


def test_original_layout_without_config_reads_sizes_from_weights(tmp_path):
    hf = hf_model(**{**TINY_HF, "num_attention_heads": 12, "hidden_size": 48})
    path = tmp_path / "model_LXRT.pth"
    torch.save({k[len("module."):]: v for k, v in original_state_dict(hf).items()}, path)  # no module. prefix
    with pytest.raises(ValueError, match="width 48 is not the base preset's 768.*num_attention_heads"):
        LxmertForPretraining.from_pretrained(path)  # no shape tells the heads, and this is not the paper's width
    ours = LxmertForPretraining.from_pretrained(path, num_attention_heads=12)  # base preset + sizes from the tensors
    assert (ours.config.hidden_size, ours.config.l_layers, ours.config.x_layers, ours.config.num_qa_labels) == (48, 2, 2, 11)
    assert ours.config.visual_loss_normalizer == pytest.approx(1 / 0.15)  # the paper preset's, not HF's 6.67
    twin = ours_from_hf(hf)
    batch = make_batch(ours.config)
    a, b = outputs(twin, batch), outputs(ours.eval(), batch)
    assert (a.prediction_logits - b.prediction_logits).abs().max() < 1e-5
    for name in a.losses:  # visual losses scale with the normaliser, the others are equal
        scale = (1 / 0.15) / 6.67 if name in ("obj", "attr", "feat") else 1.0
        assert b.losses[name].item() == pytest.approx(a.losses[name].item() * scale, rel=1e-5), name


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    hf = hf_model(**TINY_HF)
    state = original_state_dict(hf)
    del state["module.bert.pooler.dense.bias"]
    del state["module.cls.seq_relationship.weight"]
    state["module.bert.extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pth")
    config = LxmertConfig.from_hf_dict(hf.config.to_dict())
    with pytest.raises(ValueError) as err:
        LxmertForPretraining.from_pretrained(tmp_path / "bad.pth", config)
    message = str(err.value)
    assert "encoder.pooler.dense.bias" in message and "matching_head.weight" in message
    assert "bert.extra.weight" in message and "bad.pth" in message
    # skipping heads forgives the head but never the encoder
    with pytest.raises(ValueError, match="encoder.pooler.dense.bias"):
        LxmertForPretraining.from_pretrained(tmp_path / "bad.pth", config, skip_heads=True)


def test_shape_mismatch_is_an_error(tmp_path):
    hf = hf_model(**TINY_HF)
    hf.save_pretrained(tmp_path / "hf")
    config = LxmertConfig.from_hf_dict({**hf.config.to_dict(), "intermediate_size": 64})
    with pytest.raises(ValueError, match=r"checkpoint \(48, 32\) vs model \(64, 32\)"):
        LxmertForPretraining.from_pretrained(tmp_path / "hf", config)


def test_question_answering_model(tmp_path):
    """From HF's LxmertForQuestionAnswering (head loaded), and from a pre-training
    checkpoint (pre-training heads skipped, answer head kept where shapes agree)."""
    import transformers

    hf_qa = hf_model("LxmertForQuestionAnswering", **TINY_HF)
    hf_qa.save_pretrained(tmp_path / "qa")
    ours = LxmertForQuestionAnswering.from_pretrained(tmp_path / "qa").eval()
    batch = make_batch(ours.config, targets=False)
    with torch.no_grad():
        assert (hf_qa(**batch).question_answering_score - ours(**batch).logits).abs().max() < 1e-5
    ours.save_pretrained(tmp_path / "qa_back", hf=True)
    _, info = transformers.LxmertForQuestionAnswering.from_pretrained(tmp_path / "qa_back", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]

    pre = hf_model(**TINY_HF)
    pre.save_pretrained(tmp_path / "pre")
    with pytest.raises(ValueError, match="unexpected keys"):
        LxmertForQuestionAnswering.from_pretrained(tmp_path / "pre")
    qa, info = LxmertForQuestionAnswering.from_pretrained(tmp_path / "pre", skip_heads=True, output_loading_info=True)
    assert "answer_head.out.weight" in info["loaded"] and "mlm_head.bias" in info["skipped"]
    assert torch.equal(qa.answer_head.out.weight, pre.answer_head.logit_fc[3].weight)
    other, info = LxmertForQuestionAnswering.from_pretrained(tmp_path / "pre", skip_heads=True, output_loading_info=True,
                                                             num_qa_labels=5)
    assert "answer_head.out.weight" in info["skipped"] and other.answer_head.out.weight.shape == (5, 64)


def test_nlvr2_model(tmp_path):
    pre = hf_model(**TINY_HF)
    pre.save_pretrained(tmp_path / "pre")
    nlvr2 = LxmertForNLVR2.from_pretrained(tmp_path / "pre", skip_heads=True).eval()
    encoder = ours_from_hf(pre).encoder
    for key, value in encoder.state_dict().items():
        assert torch.equal(nlvr2.encoder.state_dict()[key], value), key
    b = make_batch(nlvr2.config, batch=4, targets=False)
    feats = torch.randn(2, 2, 5, 24)
    pos = torch.rand(2, 2, 5, 4)
    out = nlvr2(b["input_ids"][:2], feats, pos, b["attention_mask"][:2], labels=torch.tensor([0, 1]))
    assert out.logits.shape == (2, 2) and out.pooled_output.shape == (2, 64)
    assert out.loss.item() == pytest.approx(torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 1])).item())
    # the pair's pooled outputs are each image's own pooled output, image 0 first
    with torch.no_grad():
        single = nlvr2.encoder(b["input_ids"][:1], feats[0, 1:2], pos[0, 1:2], b["attention_mask"][:1]).pooled_output
    assert (out.pooled_output[0, 32:] - single[0]).abs().max() < 1e-5
    nlvr2.save_pretrained(tmp_path / "nlvr2")
    again = LxmertForNLVR2.from_pretrained(tmp_path / "nlvr2")
    assert torch.equal(again.classifier.out.weight, nlvr2.classifier.out.weight)
    with pytest.raises(ValueError, match="no Hugging Face equivalent"):
        nlvr2.save_pretrained(tmp_path / "nlvr2_hf", hf=True)
