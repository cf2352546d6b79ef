"""Model configuration: one typed dataclass, presets, and the Hugging Face config mapping."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The pre-training objectives whose losses the model reports, in a fixed order.
OBJECTIVES: tuple[str, ...] = ("mlm", "matched", "obj", "attr", "feat", "qa")

#: Marker written into our own ``config.json`` so that a directory of ours is never
#: mistaken for a Hugging Face one (whose config carries ``model_type: lxmert``).
NATIVE_FORMAT = "lxmert-deepspeed"
_METADATA = {"format", "architecture"}  # keys of our config.json that are not fields


@dataclass
class LxmertConfig:
    """Architecture, pre-training heads and loss settings of LXMERT.

    Field names follow Hugging Face's ``LxmertConfig`` wherever the concept is the same,
    so that a Hugging Face ``config.json`` maps onto this class field by field.
    """

    vocab_size: int = 30522
    hidden_size: int = 768
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    l_layers: int = 9  # language layers
    r_layers: int = 5  # object-relationship layers
    x_layers: int = 5  # cross-modality layers
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    visual_feat_dim: int = 2048
    visual_pos_dim: int = 4
    num_qa_labels: int = 9500
    num_object_labels: int = 1600
    num_attr_labels: int = 400
    # Pre-training heads and objectives (Hugging Face's switches).
    task_mask_lm: bool = True
    task_matched: bool = True
    task_obj_predict: bool = True
    task_qa: bool = True
    visual_obj_loss: bool = True
    visual_attr_loss: bool = True
    visual_feat_loss: bool = True
    #: The original multiplies every visual loss by exactly 1/0.15; Hugging Face's
    #: configs carry 6.67. A loaded checkpoint keeps the value its config carries.
    visual_loss_normalizer: float = 1 / 0.15
    #: Weight of each objective in the total loss (the paper: all 1).
    loss_weights: dict[str, float] = field(default_factory=lambda: {k: 1.0 for k in OBJECTIVES})
    #: Recompute each layer's activations in the backward pass (saves memory).
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        self.loss_weights = {**{k: 1.0 for k in OBJECTIVES}, **dict(self.loss_weights)}
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid field."""
        positive = (
            "vocab_size", "hidden_size", "num_attention_heads", "intermediate_size",
            "max_position_embeddings", "type_vocab_size", "visual_feat_dim", "visual_pos_dim",
            "num_qa_labels", "num_object_labels", "num_attr_labels",
        )
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"LxmertConfig.{name} must be a positive integer, got {value!r}")
        for name in ("l_layers", "r_layers", "x_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"LxmertConfig.{name} must be a non-negative integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"LxmertConfig.hidden_size ({self.hidden_size}) must be a multiple of "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        if self.hidden_act not in ("gelu",):
            raise ValueError(f"LxmertConfig.hidden_act must be 'gelu', got {self.hidden_act!r}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ValueError(f"LxmertConfig.{name} must be in [0, 1), got {value!r}")
        for name in ("initializer_range", "layer_norm_eps", "visual_loss_normalizer"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"LxmertConfig.{name} must be a positive number, got {value!r}")
        unknown = set(self.loss_weights) - set(OBJECTIVES)
        if unknown:
            raise ValueError(
                f"LxmertConfig.loss_weights has unknown objectives {sorted(unknown)}; "
                f"known: {list(OBJECTIVES)}"
            )
        for name, value in self.loss_weights.items():
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"LxmertConfig.loss_weights.{name} must be a number >= 0, got {value!r}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def objective_enabled(self, name: str) -> bool:
        """Whether an objective's loss is computed when its targets are given."""
        return {
            "mlm": self.task_mask_lm,
            "matched": self.task_matched,
            "obj": self.task_obj_predict and self.visual_obj_loss,
            "attr": self.task_obj_predict and self.visual_attr_loss,
            "feat": self.task_obj_predict and self.visual_feat_loss,
            "qa": self.task_qa,
        }[name]

    # ----------------------------------------------------------------- presets
    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "LxmertConfig":
        """``base`` (the paper), ``small`` (the synthetic world's studies) or ``tiny`` (tests), with field overrides."""
        if name not in PRESETS:
            raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    # --------------------------------------------------------------- (de)serialise
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "LxmertConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known - _METADATA)
        if unknown:
            raise ValueError(f"LxmertConfig has no fields {unknown}")
        return cls(**{k: v for k, v in values.items() if k in known})

    @classmethod
    def load(cls, path: str | Path) -> "LxmertConfig":
        """Read a ``config.json`` of ours or of a Hugging Face LXMERT directory."""
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: unreadable config ({exc})") from exc
        if raw.get("format") == NATIVE_FORMAT:
            return cls.from_dict(raw)
        if raw.get("model_type") == "lxmert":
            return cls.from_hf_dict(raw)
        raise ValueError(f"{path}: neither a Hugging Face LXMERT config nor one of ours")

    @classmethod
    def from_hf_dict(cls, values: dict[str, Any]) -> "LxmertConfig":
        """Read a Hugging Face LXMERT ``config.json`` (keeping its loss normaliser)."""
        known = {f.name for f in dataclasses.fields(cls)} - {"loss_weights", "gradient_checkpointing"}
        return cls(**{k: values[k] for k in known if k in values})

    def to_hf_dict(self, architecture: str = "LxmertForPreTraining") -> dict[str, Any]:
        """A ``config.json`` that ``transformers.LxmertConfig`` reads."""
        if self.layer_norm_eps != 1e-12:
            raise ValueError(f"LxmertConfig.layer_norm_eps={self.layer_norm_eps}: Hugging Face's LXMERT fixes 1e-12")
        values = {k: v for k, v in self.to_dict().items() if k not in ("loss_weights", "gradient_checkpointing", "layer_norm_eps")}
        return {"model_type": "lxmert", "architectures": [architecture], "tie_word_embeddings": True, **values}


PRESETS: dict[str, dict[str, Any]] = {
    # The paper's configuration: about 228.05 M parameters with all pre-training heads.
    "base": {},
    # A few hundred thousand parameters; region features keep their real width. BERT's
    # initializer_range of 0.02 is set for width 768, where a projection's gain (0.02 x sqrt(768))
    # is 0.55; at width 64 it is 0.16 and the image reaches the words through two of them (value,
    # output) at 3% of the residual: masked words never learn to look, and matching stays at chance
    # (README, "Does pre-training ground words in regions?"). The same gain at width 64: 0.02 x sqrt(768 / 64).
    "tiny": dict(
        vocab_size=512, hidden_size=64, num_attention_heads=4, intermediate_size=128,
        l_layers=2, r_layers=1, x_layers=2, max_position_embeddings=64,
        num_qa_labels=32, num_object_labels=40, num_attr_labels=16, initializer_range=0.069,
    ),
    # Twice tiny's width (the same gain: 0.02 x sqrt(768 / 128)): on the synthetic world it learns
    # which attribute belongs to which object from far fewer questions than tiny does when
    # pre-trained with them (README, "Does pre-training ground words in regions?").
    "small": dict(
        vocab_size=512, hidden_size=128, num_attention_heads=4, intermediate_size=256,
        l_layers=2, r_layers=1, x_layers=2, max_position_embeddings=64,
        num_qa_labels=32, num_object_labels=40, num_attr_labels=16, initializer_range=0.049,
    ),
}
