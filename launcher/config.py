"""Run configuration: typed sections, one YAML/JSON file per run, dotted overrides, batch reconciliation."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from data.objectives import ObjectiveConfig


@dataclass
class ModelSection:
    preset: str = "tiny"
    #: LxmertConfig fields over the preset, e.g. {"vocab_size": 400, "loss_weights": {"qa": 0.5}}.
    overrides: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None  # a checkpoint to start from (ours, Hugging Face or original)


@dataclass
class DataSection:
    store: str = ""
    train: list[str] = field(default_factory=list)  # corpus JSON files
    valid: list[str] = field(default_factory=list)
    answers: str = ""  # all_ans.json
    tokenizer: str = "bert-base-uncased"  # a hub name, a vocab.txt or a tokenizer folder
    sources: list[str] | None = None  # sentence sources to use (all by default)
    answer_dsets: list[str] | None = None  # restrict the answer table to these datasets
    missing_images: str = "drop"  # or "error"
    num_workers: int = 2


@dataclass
class TrainSection:
    epochs: int = 20
    max_steps: int | None = None  # stop earlier (optimizer steps)
    global_batch_size: int = 256
    micro_batch_size: int = 32
    lr: float = 1e-4
    warmup_ratio: float = 0.05
    weight_decay: float = 0.01
    gradient_clipping: float = 1.0
    seed: int = 0


@dataclass
class LogSection:
    every: int = 10  # optimizer steps between logged scalars
    valid_every: int = 0  # optimizer steps between validation passes (0: at each epoch end)
    valid_batches: int = 50
    progress: bool = True


@dataclass
class CheckpointSection:
    every: int = 1000  # optimizer steps
    keep: int = 3


@dataclass
class RunConfig:
    run_dir: str = "runs/pretrain"
    deepspeed: str = "ds_configs/zero2_bf16.json"
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    objectives: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainSection = field(default_factory=TrainSection)
    log: LogSection = field(default_factory=LogSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _build(cls, values: dict, prefix: str):
    if not isinstance(values, dict):
        raise ValueError(f"{prefix or 'config'}: expected a mapping, got {type(values).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"unknown config field(s) {', '.join(prefix + k for k in unknown)}; "
                         f"{prefix.rstrip('.') or 'top level'} has {', '.join(known)}")
    kwargs = {}
    for name, value in values.items():
        sub = known[name].default_factory if known[name].default_factory is not dataclasses.MISSING else None
        if sub is not None and dataclasses.is_dataclass(sub):
            kwargs[name] = _build(sub, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, str(known[name].type), prefix + name)
    try:
        return cls(**kwargs)
    except ValueError:
        raise
    except TypeError as exc:
        raise ValueError(f"{prefix or 'config'}: {exc}") from None


def _coerce(value: Any, annotation: str, name: str) -> Any:
    """Numbers written as strings (YAML reads ``3e-5`` as text) become the field's type."""
    if isinstance(value, str) and value.strip().lower() not in ("none", "null"):
        for kind in (int, float):
            if annotation.split(" ")[0] == kind.__name__:
                try:
                    return kind(value)
                except ValueError:
                    raise ValueError(f"{name} must be {'an integer' if kind is int else 'a number'}, got {value!r}") from None
    if isinstance(value, int) and not isinstance(value, bool) and annotation.startswith("float"):
        return float(value)
    return value


def apply_override(values: dict, dotted: str) -> None:
    """``train.lr=5e-5`` -> values["train"]["lr"] = 5e-5 (the value parsed as YAML)."""
    if "=" not in dotted:
        raise ValueError(f"override {dotted!r}: expected key.path=value")
    key, raw = dotted.split("=", 1)
    parts = key.strip().split(".")
    node = values
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {dotted!r}: {part} is not a section")
    node[parts[-1]] = yaml.safe_load(raw)


def load_config(path: str | Path | None, overrides: list[str] = ()) -> RunConfig:
    """Read a YAML or JSON run file (or start from the defaults) and apply dotted overrides."""
    values: dict = {}
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text()
            values = (json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)) or {}
        except (OSError, json.JSONDecodeError, yaml.YAMLError) as exc:
            raise ValueError(f"{path}: unreadable run configuration ({exc})") from None
    for item in overrides:
        apply_override(values, item)
    config = _build(RunConfig, values, "")
    validate(config)
    return config


def validate(config: RunConfig) -> None:
    t = config.train
    for name in ("epochs", "global_batch_size", "micro_batch_size"):
        value = getattr(t, name)
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"train.{name} must be a positive integer, got {value!r}")
    if t.max_steps is not None and (not isinstance(t.max_steps, int) or t.max_steps <= 0):
        raise ValueError(f"train.max_steps must be a positive integer or null, got {t.max_steps!r}")
    if not 0 <= t.warmup_ratio < 1:
        raise ValueError(f"train.warmup_ratio must be in [0, 1), got {t.warmup_ratio!r}")
    if t.lr <= 0:
        raise ValueError(f"train.lr must be positive, got {t.lr!r}")
    if config.checkpoint.every <= 0 or config.checkpoint.keep <= 0:
        raise ValueError("checkpoint.every and checkpoint.keep must be positive")
    if config.data.missing_images not in ("drop", "error"):
        raise ValueError(f"data.missing_images must be 'drop' or 'error', got {config.data.missing_images!r}")


def reconcile_batch(global_batch: int, micro_batch: int, world_size: int) -> int:
    """Gradient accumulation steps so that global = micro x accumulation x world; else a clear error."""
    per_step = micro_batch * world_size
    if global_batch % per_step:
        raise ValueError(
            f"train.global_batch_size={global_batch} is not a multiple of train.micro_batch_size={micro_batch} x "
            f"world size {world_size} = {per_step}; choose a global batch of {per_step * max(1, global_batch // per_step)} "
            f"or change the micro batch")
    return global_batch // per_step
