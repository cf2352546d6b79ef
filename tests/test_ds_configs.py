"""Every DeepSpeed config in ds_configs/ parses with DeepSpeed's own parser and says what its name says."""

from __future__ import annotations

import json
import pathlib
import re

import pytest

CONFIGS = sorted(pathlib.Path(__file__).resolve().parents[1].joinpath("ds_configs").glob("*.json"))


def test_there_are_configs_for_each_stage_and_precision():
    names = {p.stem for p in CONFIGS}
    assert {f"zero{s}_{p}" for s in (1, 2, 3) for p in ("fp16", "bf16")} <= names
    assert "zero2_offload_bf16" in names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_parses(path):
    from deepspeed.runtime.config import DeepSpeedConfig

    parsed = DeepSpeedConfig(json.loads(path.read_text()))
    stage, precision = re.match(r"zero(\d)_(?:offload_)?(fp16|bf16|fp32)", path.stem).groups()
    assert parsed.zero_optimization_stage == int(stage)
    assert parsed.float16_config.enabled == (precision == "fp16")
    assert parsed.bfloat16_config.enabled == (precision == "bf16")
    assert parsed.gradient_clipping == 1.0  # the paper's recipe
    offload = parsed.zero_config.offload_optimizer
    assert (offload is not None and offload.device == "cpu") == ("offload" in path.stem)
