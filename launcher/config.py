"""Run configuration: typed sections, one YAML/JSON file per run, dotted overrides, batch reconciliation."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from data.objectives import ObjectiveConfig


@dataclass
class ModelSection:
    preset: str = "base"  # the paper's configuration; "tiny" (tests, the demo) and "small" for the synthetic world
    #: LxmertConfig fields over the preset, e.g. {"vocab_size": 400, "loss_weights": {"qa": 0.5}}.
    overrides: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None  # a checkpoint to start from (ours, Hugging Face or original)


@dataclass
class DataSection:
    store: str = ""
    # corpus JSON files, or one corpus directory built from them by `lxmert corpus build` (mapped: for large corpora)
    train: list[str] = field(default_factory=list)
    valid: list[str] = field(default_factory=list)
    answers: str = ""  # all_ans.json
    tokenizer: str = "bert-base-uncased"  # a hub name, a vocab.txt or a tokenizer folder
    sources: list[str] | None = None  # sentence sources to use (all by default)
    answer_dsets: list[str] | None = None  # restrict the answer table to these datasets
    missing_images: str = "drop"  # or "error"
    num_workers: int = 2
    #: Pad every batch to 20 word pieces and the store's largest region count, masks always present:
    #: one shape for every step (what a compiled step or a CUDA graph needs); the losses are unchanged.
    static_shapes: bool = False
    #: With static_shapes: the masked-LM positions projected a batch (targets first, the rest ignored).
    #: None: the smallest count that a batch exceeds with probability under 1e-12 at the masking probability.
    mlm_slots: int | None = None

    def __post_init__(self) -> None:
        if self.mlm_slots is not None:
            if not self.static_shapes:
                raise ValueError("data.mlm_slots is for data.static_shapes=true: set both, or leave mlm_slots unset")
            if not isinstance(self.mlm_slots, int) or isinstance(self.mlm_slots, bool) or self.mlm_slots < 1:
                raise ValueError(f"data.mlm_slots must be a positive integer, got {self.mlm_slots!r}")


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
    #: Pre-training only, with data.static_shapes: the model compiled by torch.compile inside the
    #: DeepSpeed engine (one graph, forward and backward); validation runs eager. Off until measured on GPUs.
    compile: bool = False
    #: torch.compile's mode: "default", or "reduce-overhead" (CUDA graphs on GPUs; on the CPU the same as
    #: default), "max-autotune", "max-autotune-no-cudagraphs".
    compile_mode: str = "default"

    def __post_init__(self) -> None:
        modes = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
        if self.compile_mode not in modes:
            raise ValueError(f"train.compile_mode must be one of {', '.join(modes)}, got {self.compile_mode!r}")


@dataclass
class LogSection:
    every: int = 10  # optimizer steps between logged scalars
    valid_every: int = 0  # optimizer steps between validation passes (0: at each epoch end)
    valid_batches: int = 50
    progress: bool = True
    #: Seconds without progress (a step, a validation or prediction batch) after which a rank
    #: prints every thread's stack to stderr, and again after each further period; 0: never.
    hang_dump_seconds: float = 900.0


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


def _read(path: str | Path | None, overrides: list[str]) -> dict:
    values: dict = {}
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text()
            values = (json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)) or {}
        except (OSError, json.JSONDecodeError, yaml.YAMLError) as exc:
            raise ValueError(f"{path}: unreadable run configuration ({exc})") from None
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a mapping of sections, got {type(values).__name__}")
    for item in overrides:
        apply_override(values, item)
    return values


def load_config(path: str | Path | None, overrides: list[str] = ()) -> RunConfig:
    """Read a YAML or JSON run file (or start from the defaults) and apply dotted overrides."""
    config = _build(RunConfig, _read(path, overrides), "")
    validate(config)
    if config.train.compile and not config.data.static_shapes:
        raise ValueError("train.compile needs data.static_shapes=true: one shape for every step, compiled once")
    if config.train.compile and not hasattr(torch.compiler, "set_stance"):
        raise ValueError(f"train.compile needs torch 2.6 or later (torch.compiler.set_stance); this is {torch.__version__}")
    return config


def require(config, fields: tuple[str, ...]) -> None:
    """Settings a job cannot start without: an unset one is named, before any heavy start-up."""
    for dotted in fields:
        value = config
        for part in dotted.split("."):
            value = getattr(value, part)
        if value in (None, "", []):
            raise ValueError(f"{dotted} is not set (give --config FILE or {dotted}=...)")


def validate(config: RunConfig) -> None:
    t = config.train
    for name in ("epochs", "global_batch_size", "micro_batch_size"):
        value = getattr(t, name)
        auto = name == "micro_batch_size" and value == 0 and isinstance(config, FinetuneConfig)
        if not isinstance(value, int) or (value <= 0 and not auto):
            raise ValueError(f"train.{name} must be a positive integer, got {value!r}")
    if t.max_steps is not None and (not isinstance(t.max_steps, int) or t.max_steps <= 0):
        raise ValueError(f"train.max_steps must be a positive integer or null, got {t.max_steps!r}")
    if not 0 <= t.warmup_ratio < 1:
        raise ValueError(f"train.warmup_ratio must be in [0, 1), got {t.warmup_ratio!r}")
    if t.lr <= 0:
        raise ValueError(f"train.lr must be positive, got {t.lr!r}")
    if config.log.hang_dump_seconds < 0:
        raise ValueError(f"log.hang_dump_seconds must be >= 0 (0: off), got {config.log.hang_dump_seconds!r}")
    if config.checkpoint.every <= 0 or config.checkpoint.keep <= 0:
        raise ValueError("checkpoint.every and checkpoint.keep must be positive")
    if getattr(config.data, "missing_images", "drop") not in ("drop", "error"):
        raise ValueError(f"data.missing_images must be 'drop' or 'error', got {config.data.missing_images!r}")


def preset_config(preset: str, overrides: dict, sizes: dict):
    """A model preset with the data's sizes (vocabulary, feature size, answers) and the run's
    overrides; an override that contradicts the data is an error."""
    from model import LxmertConfig

    config = LxmertConfig.from_preset(preset, **{**sizes, **overrides})
    for name, value in sizes.items():
        if getattr(config, name) != value:
            raise ValueError(f"model.overrides.{name}={getattr(config, name)} does not match the data ({value})")
    return config


def reconcile_batch(global_batch: int, micro_batch: int, world_size: int) -> int:
    """Gradient accumulation steps so that global = micro x accumulation x world; else a clear error."""
    per_step = micro_batch * world_size
    if global_batch % per_step:
        raise ValueError(
            f"train.global_batch_size={global_batch} is not a multiple of train.micro_batch_size={micro_batch} x "
            f"world size {world_size} = {per_step}; choose a global batch of {per_step * max(1, global_batch // per_step)} "
            f"or change the micro batch")
    return global_batch // per_step


# ------------------------------------------------------------------ fine-tuning

#: The reference's fine-tuning recipes; any field is overridable (``train.lr=2e-5``).
#: micro_batch_size 0: the global batch divided by the number of ranks (no gradient accumulation).
RECIPE = {"epochs": 4, "global_batch_size": 32, "micro_batch_size": 0, "warmup_ratio": 0.1,
          "gradient_clipping": 5.0, "weight_decay": 0.01}
RECIPE_LR = {"vqa": 5e-5, "gqa": 1e-5, "nlvr2": 5e-5}


@dataclass
class TaskDataSection:
    store: str = ""
    train: list[str] = field(default_factory=list)  # task files in the original format
    valid: list[str] = field(default_factory=list)  # evaluated after each epoch (metrics need labels)
    test: list[str] = field(default_factory=list)  # predicted with the best weights (labels not needed)
    labels: str = ""  # trainval_ans2label.json (VQA, GQA)
    #: The answer table of pre-training (all_ans.json) for the answer-head transfer, when the
    #: checkpoint does not carry its own answers.json (Hugging Face and original checkpoints).
    pretrain_answers: str | None = None
    tokenizer: str | None = None  # default: the checkpoint's vocab.txt, else bert-base-uncased
    num_workers: int = 1


@dataclass
class FinetuneConfig:
    task: str = "vqa"  # vqa | gqa | nlvr2
    run_dir: str = "runs/finetune"
    deepspeed: str = "ds_configs/zero2_bf16.json"
    model: ModelSection = field(default_factory=ModelSection)  # init_from: consolidated, HF, original, or none
    data: TaskDataSection = field(default_factory=TaskDataSection)
    train: TrainSection = field(default_factory=TrainSection)
    log: LogSection = field(default_factory=LogSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_finetune_config(path: str | Path | None, overrides: list[str] = (), task: str | None = None) -> FinetuneConfig:
    """Like :func:`load_config`; ``train`` starts from the task's recipe (``--task`` wins over the file)."""
    values = _read(path, overrides)
    if task is not None:
        values["task"] = task
    name = values.get("task", FinetuneConfig.task)
    if name not in RECIPE_LR:
        raise ValueError(f"task must be one of {', '.join(RECIPE_LR)}, got {name!r}")
    train = values.setdefault("train", {})
    if not isinstance(train, dict):
        raise ValueError(f"train: expected a mapping, got {type(train).__name__}")
    for key, value in {**RECIPE, "lr": RECIPE_LR[name]}.items():
        train.setdefault(key, value)
    values.setdefault("checkpoint", {}).setdefault("every", 10**9)  # by default: at the end and on preemption only
    config = _build(FinetuneConfig, values, "")
    validate(config)
    if config.train.compile:
        raise ValueError("train.compile is for pre-training (with data.static_shapes=true); fine-tuning runs eager")
    if config.task != "nlvr2" and not config.data.labels:
        raise ValueError(f"data.labels: the {config.task} label vocabulary (trainval_ans2label.json) is required")
    if not config.data.train and not config.data.valid and not config.data.test:
        raise ValueError("data.train, data.valid and data.test are all empty: nothing to fine-tune or evaluate")
    return config
