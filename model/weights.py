"""State-dict layouts: ours (native), Hugging Face's and the original release's.

Native keys follow the paper's names (``encoder.language_layers.3.attention.qkv.weight``);
Hugging Face keys are ``lxmert.*`` plus heads, the original release's are the same with
``bert.*`` (often behind a DataParallel ``module.`` prefix). Query, key and value are one
fused projection here and three in the other layouts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import Tensor

NATIVE, HF, ORIGINAL = "native", "hf", "original"
LAYOUTS = (NATIVE, HF, ORIGINAL)
_ENCODER_PREFIX = {NATIVE: "encoder.", HF: "lxmert.", ORIGINAL: "bert."}
TIED_DECODER = "cls.predictions.decoder.weight"  # tied to the word embeddings in every layout
_IGNORED = {"lxmert.embeddings.position_ids", "bert.embeddings.position_ids"}
Rule = tuple[str, str]  # (native pattern, HF/original pattern) with {i} layer and {p} weight|bias


def _attention(native: str, hf: str, inner: str) -> list[Rule]:
    return [
        *[(f"{native}.{s}.{{p}}", f"{hf}.{inner}.{name}.{{p}}") for s, name in zip("qkv", ("query", "key", "value"))],
        (f"{native}.out.{{p}}", f"{hf}.output.dense.{{p}}"),
        (f"{native}.norm.{{p}}", f"{hf}.output.LayerNorm.{{p}}"),
    ]


def _ffn(native: str, hf_inter: str, hf_out: str) -> list[Rule]:
    return [
        (f"{native}.up.{{p}}", f"{hf_inter}.dense.{{p}}"),
        (f"{native}.down.{{p}}", f"{hf_out}.dense.{{p}}"),
        (f"{native}.norm.{{p}}", f"{hf_out}.LayerNorm.{{p}}"),
    ]


def _classifier(native: str, hf: str) -> list[Rule]:
    return [(f"{native}.{a}.{{p}}", f"{hf}.{b}.{{p}}") for a, b in (("fc", 0), ("norm", 2), ("out", 3))]


ENCODER_RULES: list[Rule] = [
    ("embeddings.word.weight", "embeddings.word_embeddings.weight"),
    ("embeddings.position.weight", "embeddings.position_embeddings.weight"),
    ("embeddings.token_type.weight", "embeddings.token_type_embeddings.weight"),
    ("embeddings.norm.{p}", "embeddings.LayerNorm.{p}"),
    ("visual_embeddings.feat_proj.{p}", "encoder.visn_fc.visn_fc.{p}"),
    ("visual_embeddings.feat_norm.{p}", "encoder.visn_fc.visn_layer_norm.{p}"),
    ("visual_embeddings.box_proj.{p}", "encoder.visn_fc.box_fc.{p}"),
    ("visual_embeddings.box_norm.{p}", "encoder.visn_fc.box_layer_norm.{p}"),
    ("pooler.dense.{p}", "pooler.dense.{p}"),
]
for _native, _hf in (("language_layers", "encoder.layer"), ("relation_layers", "encoder.r_layers")):
    ENCODER_RULES += _attention(f"{_native}.{{i}}.attention", f"{_hf}.{{i}}.attention", "self")
    ENCODER_RULES += _ffn(f"{_native}.{{i}}.ffn", f"{_hf}.{{i}}.intermediate", f"{_hf}.{{i}}.output")
_X = "encoder.x_layers.{i}"
ENCODER_RULES += _attention("cross_layers.{i}.cross_attention", f"{_X}.visual_attention", "att")
ENCODER_RULES += _attention("cross_layers.{i}.language_attention", f"{_X}.lang_self_att", "self")
ENCODER_RULES += _attention("cross_layers.{i}.visual_attention", f"{_X}.visn_self_att", "self")
ENCODER_RULES += _ffn("cross_layers.{i}.language_ffn", f"{_X}.lang_inter", f"{_X}.lang_output")
ENCODER_RULES += _ffn("cross_layers.{i}.visual_ffn", f"{_X}.visn_inter", f"{_X}.visn_output")

PRETRAINING_HEAD_RULES: list[Rule] = [
    ("mlm_head.transform.dense.{p}", "cls.predictions.transform.dense.{p}"),
    ("mlm_head.transform.norm.{p}", "cls.predictions.transform.LayerNorm.{p}"),
    ("mlm_head.bias", "cls.predictions.bias"),
    ("matching_head.{p}", "cls.seq_relationship.{p}"),
    ("object_head.transform.dense.{p}", "obj_predict_head.transform.dense.{p}"),
    ("object_head.transform.norm.{p}", "obj_predict_head.transform.LayerNorm.{p}"),
    *[(f"object_head.{k}.{{p}}", f"obj_predict_head.decoder_dict.{k}.{{p}}") for k in ("obj", "attr", "feat")],
    *_classifier("answer_head", "answer_head.logit_fc"),
]
QA_HEAD_RULES: list[Rule] = _classifier("answer_head", "answer_head.logit_fc")
NLVR2_HEAD_RULES: list[Rule] = _classifier("classifier", "logit_fc")  # the original NLVR2 model's names
ALL_HEAD_RULES: list[Rule] = PRETRAINING_HEAD_RULES + NLVR2_HEAD_RULES


def _compile(pattern: str) -> re.Pattern[str]:
    body = re.escape(pattern).replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{p\}", r"(?P<p>weight|bias)")
    return re.compile(body + "$")


class KeyMap:
    """Renames keys between the native layout and the HF/original one, both directions."""

    def __init__(self, layout: str, head_rules: list[Rule]) -> None:
        if layout not in (HF, ORIGINAL):
            raise ValueError(f"layout must be one of {(HF, ORIGINAL)}, got {layout!r}")
        prefix = _ENCODER_PREFIX[layout]
        rules = [("encoder." + n, prefix + o) for n, o in ENCODER_RULES] + list(head_rules)
        self._to_native = [(_compile(o), n) for n, o in rules]
        self._from_native = [(_compile(n), o) for n, o in rules]

    @staticmethod
    def _apply(table: list[tuple[re.Pattern[str], str]], key: str) -> str | None:
        for pattern, template in table:
            if m := pattern.match(key):
                return template.format(**m.groupdict())
        return None

    def to_native(self, key: str) -> str | None:
        return self._apply(self._to_native, key)

    def from_native(self, key: str) -> str | None:
        return self._apply(self._from_native, key)


def detect_layout(keys: Iterable[str]) -> str:
    keys = list(keys)
    for layout in (HF, ORIGINAL, NATIVE):
        if any(k.startswith(_ENCODER_PREFIX[layout]) for k in keys):
            return layout
    raise ValueError(
        "cannot tell the checkpoint's layout: expected keys starting with 'lxmert.' (Hugging Face), "
        f"'bert.' (original release) or 'encoder.' (this project); first keys: {keys[:5]}"
    )


def strip_prefix(state: dict[str, Tensor], prefix: str = "module.") -> dict[str, Tensor]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def to_native(state: dict[str, Tensor], layout: str, head_rules: list[Rule] = ALL_HEAD_RULES
              ) -> tuple[dict[str, Tensor], list[str]]:
    """Convert a state dict to native keys. Returns (state, keys no rule knows)."""
    if layout == NATIVE:
        return dict(state), []
    keymap = KeyMap(layout, head_rules)
    out: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key, value in state.items():
        if key in _IGNORED:
            continue
        if key == TIED_DECODER:
            word = state.get(_ENCODER_PREFIX[layout] + "embeddings.word_embeddings.weight")
            if word is not None and not torch.equal(word, value):
                raise ValueError(f"{TIED_DECODER} differs from the word embeddings; LXMERT ties them")
            continue
        native = keymap.to_native(key)
        if native is None:
            unknown.append(key)
        else:
            out[native] = value
    return fuse_qkv(out), unknown


def from_native(state: dict[str, Tensor], layout: str, head_rules: list[Rule]) -> dict[str, Tensor]:
    """Convert native keys to the HF or original layout (the original also stores the tied decoder)."""
    keymap = KeyMap(layout, head_rules)
    out: dict[str, Tensor] = {}
    for key, value in split_qkv(state).items():
        target = keymap.from_native(key)
        assert target is not None, f"no {layout} name for native key {key}"
        out[target] = value
    if layout == ORIGINAL and "mlm_head.bias" in state:
        out[TIED_DECODER] = state["encoder.embeddings.word.weight"]
    return out


_QKV = re.compile(r"(?P<base>.*)\.(?P<s>[qkv])\.(?P<p>weight|bias)$")


def fuse_qkv(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Join ``X.q.p``, ``X.k.p``, ``X.v.p`` into ``X.qkv.p``; incomplete triples stay as they are
    (and so are reported as unexpected keys by the loader)."""
    out: dict[str, Tensor] = {}
    groups: dict[tuple[str, str], dict[str, Tensor]] = {}
    for key, value in state.items():
        if m := _QKV.match(key):
            groups.setdefault((m["base"], m["p"]), {})[m["s"]] = value
        else:
            out[key] = value
    for (base, p), parts in groups.items():
        if set(parts) == set("qkv"):
            out[f"{base}.qkv.{p}"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
        else:
            out.update({f"{base}.{s}.{p}": v for s, v in parts.items()})
    return out


def split_qkv(state: dict[str, Tensor]) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.endswith((".qkv.weight", ".qkv.bias")):
            base, p = key.rsplit(".qkv.", 1)
            for s, part in zip("qkv", value.chunk(3, dim=0)):
                out[f"{base}.{s}.{p}"] = part.contiguous()
        else:
            out[key] = value
    return out


# ------------------------------------------------------------------------ files
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def read_tensor_file(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # SafetensorError, truncated headers
            raise ValueError(f"{path}: not a readable safetensors file ({exc})") from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({exc})") from exc
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a state dict of tensors")
    return obj


def read_weights_dir(directory: Path) -> dict[str, Tensor]:
    """Weights of a directory: single file or sharded index, safetensors preferred."""
    for name in WEIGHT_FILES:
        path = directory / name
        if not path.exists():
            continue
        if name.endswith(".index.json"):
            shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
            state: dict[str, Tensor] = {}
            for shard in shards:
                state.update(read_tensor_file(directory / shard))
            return state
        return read_tensor_file(path)
    raise FileNotFoundError(f"{directory}: no weights file (looked for {', '.join(WEIGHT_FILES)})")


def infer_dims(state: dict[str, Tensor]) -> dict[str, Any]:
    """Structural config fields readable from a native state dict's shapes."""
    dims: dict[str, Any] = {}
    shape = lambda k: tuple(state[k].shape) if k in state else None  # noqa: E731
    if (s := shape("encoder.embeddings.word.weight")) is not None:
        dims["vocab_size"], dims["hidden_size"] = s
    if (s := shape("encoder.embeddings.position.weight")) is not None:
        dims["max_position_embeddings"] = s[0]
    if (s := shape("encoder.embeddings.token_type.weight")) is not None:
        dims["type_vocab_size"] = s[0]
    if (s := shape("encoder.visual_embeddings.feat_proj.weight")) is not None:
        dims["visual_feat_dim"] = s[1]
    if (s := shape("encoder.visual_embeddings.box_proj.weight")) is not None:
        dims["visual_pos_dim"] = s[1]
    if (s := shape("encoder.language_layers.0.ffn.up.weight")) is not None:
        dims["intermediate_size"] = s[0]
    for field, name in (("l_layers", "language_layers"), ("r_layers", "relation_layers"), ("x_layers", "cross_layers")):
        idx = [int(k.split(".")[2]) for k in state if k.startswith(f"encoder.{name}.")]
        dims[field] = max(idx) + 1 if idx else 0
    for field, key in (("num_qa_labels", "answer_head.out.weight"), ("num_object_labels", "object_head.obj.weight"),
                       ("num_attr_labels", "object_head.attr.weight")):
        if (s := shape(key)) is not None:
            dims[field] = s[0]
    return dims
