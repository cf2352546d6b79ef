"""The ``lxmert`` command line, run as a user runs it (a subprocess)."""

from __future__ import annotations

import subprocess
import sys

import procs
import torch
from conftest import TINY_HF, hf_model

from model import LxmertForPretraining


def lxmert(*args: str) -> subprocess.CompletedProcess:
    return procs.run([sys.executable, "-m", "launcher.cli", *args], ok=False, timeout=300)


def test_help_lists_subcommands():
    out = lxmert("--help")
    assert out.returncode == 0
    assert "convert" in out.stdout and "forward" in out.stdout
    sub = lxmert("convert", "--help")
    assert sub.returncode == 0 and "--to {native,hf,original}" in sub.stdout


def test_convert_hf_to_native_to_hf_and_original(tmp_path):
    import transformers

    hf = hf_model(**TINY_HF)
    hf.save_pretrained(tmp_path / "hf")
    out = lxmert("convert", tmp_path / "hf", tmp_path / "native")
    assert out.returncode == 0, out.stderr
    assert "native layout" in out.stdout and (tmp_path / "native" / "model.safetensors").exists()
    out = lxmert("convert", tmp_path / "native", tmp_path / "back", "--to", "hf")
    assert out.returncode == 0, out.stderr
    again = transformers.LxmertForPreTraining.from_pretrained(tmp_path / "back")
    for key, value in hf.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
    out = lxmert("convert", tmp_path / "back", tmp_path / "orig" / "model_LXRT.pth", "--to", "original")
    assert out.returncode == 0, out.stderr
    state = torch.load(tmp_path / "orig" / "model_LXRT.pth", weights_only=True)
    assert "bert.encoder.x_layers.1.visual_attention.att.query.weight" in state
    native = LxmertForPretraining.from_pretrained(tmp_path / "native")
    config_file = tmp_path / "native" / "config.json"
    out = lxmert("convert", tmp_path / "orig" / "model_LXRT.pth", tmp_path / "native2", "--config", config_file)
    assert out.returncode == 0, out.stderr
    reread = LxmertForPretraining.from_pretrained(tmp_path / "native2")
    assert all(torch.equal(a, b) for a, b in zip(native.state_dict().values(), reread.state_dict().values()))


def test_convert_errors_are_one_line_and_nonzero(tmp_path):
    out = lxmert("convert", tmp_path / "missing", tmp_path / "out")
    assert out.returncode != 0
    assert out.stderr.strip().count("\n") == 0 and "missing: no such checkpoint" in out.stderr
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    out = lxmert("convert", tmp_path / "junk.pth", tmp_path / "out")
    assert out.returncode != 0 and "junk.pth: not a readable PyTorch checkpoint" in out.stderr
    assert not (tmp_path / "out").exists()


def test_forward_smoke():
    out = lxmert("forward", "--preset", "tiny", "--steps", "1")
    assert out.returncode == 0, out.stderr
    assert "parameters" in out.stdout and "samples/s" in out.stdout
