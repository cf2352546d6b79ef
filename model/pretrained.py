"""Shared base of the LXMERT models: weight init, ``from_pretrained`` and ``save_pretrained``."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor, nn

from . import weights as W
from .config import NATIVE_FORMAT, LxmertConfig
from .heads import MaskedLMHead
from .layers import VisualEmbeddings

M = TypeVar("M", bound="LxmertPreTrainedModel")
#: Top-level module names that hold heads in any of the models (the rest is the encoder).
HEAD_MODULES = ("mlm_head", "matching_head", "object_head", "answer_head", "classifier")


class LxmertPreTrainedModel(nn.Module):
    """Base class: subclasses define their heads and the key rules that name them."""

    head_rules: ClassVar[list[W.Rule]] = []
    #: Class name in ``transformers`` that loads this model's HF layout (None: no HF equivalent).
    hf_architecture: ClassVar[str | None] = None

    def __init__(self, config: LxmertConfig) -> None:
        super().__init__()
        self.config = config

    # -------------------------------------------------------------- init
    def init_weights(self) -> None:
        """BERT's initialisation: N(0, initializer_range) weights, zero biases (but the region projection's), unit norms."""
        std = self.config.initializer_range
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, 0.0, std)
                if module.padding_idx is not None:
                    module.weight.data[module.padding_idx].zero_()
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, MaskedLMHead):
                nn.init.zeros_(module.bias)
        for module in self.modules():
            # A masked region's features are zeros, so its projection is the bias alone: with BERT's zero
            # bias LayerNorm divides by sqrt(eps) = 1e-6, and the bias's gradient overflows fp16 (and
            # dwarfs every other in fp32) until the bias moves. A random bias gives the row a spread.
            if isinstance(module, VisualEmbeddings):
                nn.init.normal_(module.feat_proj.bias, 0.0, std)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(
        cls: type[M],
        path: str | os.PathLike,
        config: LxmertConfig | None = None,
        *,
        preset: str = "base",
        skip_heads: bool = False,
        output_loading_info: bool = False,
        **config_overrides: Any,
    ) -> M | tuple[M, dict[str, list[str]]]:
        """Load from a Hugging Face directory, an original ``*_LXRT.pth`` file, or a
        directory/file of ours.

        The configuration comes from ``config`` if given, else from the directory's
        ``config.json``, else (a bare file) from :func:`bare_file_config`.
        Missing or unexpected keys raise ``ValueError`` listing them; with ``skip_heads``
        head weights that are absent, unknown or of another shape are left freshly
        initialised or ignored (reported in the loading info) — the encoder is always strict.
        """
        state, file_config, unknown = read_native_state(path)
        if config is None:
            config = file_config or bare_file_config(state, str(path), preset, config_overrides)
        if config_overrides:
            config = LxmertConfig.from_dict({**config.to_dict(), **config_overrides})
        model = cls(config)
        model.init_weights()
        info = model.load_native_state(state, skip_heads=skip_heads, source=str(path), unknown=unknown)
        return (model, info) if output_loading_info else model

    @staticmethod
    def _is_head(key: str) -> bool:
        return key.split(".", 1)[0] in HEAD_MODULES

    def load_native_state(self, state: dict[str, Tensor], *, skip_heads: bool = False, source: str = "state dict",
                          unknown: list[str] = ()) -> dict[str, list[str]]:
        """Copy a native-keyed state dict in; strict on the encoder, and on heads unless ``skip_heads``."""
        own = self.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = list(unknown) + [k for k in state if k not in own]
        mismatched = [k for k in state if k in own and state[k].shape != own[k].shape]
        skipped: list[str] = []
        if skip_heads:
            skipped = [k for k in missing + unexpected + mismatched if self._is_head(k)]
            missing = [k for k in missing if k not in skipped]
            unexpected = [k for k in unexpected if k not in skipped]
            mismatched = [k for k in mismatched if k not in skipped]
        problems = []
        if missing:
            problems.append(f"missing keys: {missing}")
        if unexpected:
            problems.append(f"unexpected keys: {unexpected}")
        if mismatched:
            problems.append("shape mismatches: " + ", ".join(
                f"{k} checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in mismatched))
        if problems:
            hint = "" if skip_heads else " (pass skip_heads=True to leave heads freshly initialised)"
            raise ValueError(f"{source}: " + "; ".join(problems) + hint)
        loadable = {k: v for k, v in state.items() if k in own and k not in skipped}
        self.load_state_dict(loadable, strict=False)
        return {"loaded": sorted(loadable), "skipped": sorted(skipped)}

    # -------------------------------------------------------------- saving
    def export_state(self, layout: str = W.NATIVE) -> dict[str, Tensor]:
        """The state dict in the native, Hugging Face or original layout."""
        state = {k: v.detach() for k, v in self.state_dict().items()}
        if layout == W.NATIVE:
            return state
        if layout == W.HF and self.hf_architecture is None:
            raise ValueError(f"{type(self).__name__} has no Hugging Face equivalent; save it natively")
        return W.from_native(state, layout, self.head_rules)

    def save_pretrained(self, out_dir: str | os.PathLike, hf: bool = False) -> Path:
        """Write ``model.safetensors`` and ``config.json`` into ``out_dir``: our layout, or with
        ``hf=True`` one that ``transformers.<hf_architecture>.from_pretrained`` loads.
        Files are written under temporary names and renamed when complete."""
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.contiguous() for k, v in self.export_state(W.HF if hf else W.NATIVE).items()}
        if hf:
            config_text = json.dumps(self.config.to_hf_dict(self.hf_architecture), indent=2) + "\n"
        else:
            config_text = json.dumps({"format": NATIVE_FORMAT, "architecture": type(self).__name__,
                                      **self.config.to_dict()}, indent=2) + "\n"
        atomic_write(out / "model.safetensors", lambda p: save_file(state, str(p), metadata={"format": "pt"}))
        atomic_write(out / "config.json", lambda p: Path(p).write_text(config_text))
        return out

    def save_original(self, path: str | os.PathLike) -> Path:
        """Write a whole-model state dict in the original release's layout (``bert.*`` keys)."""
        state = {k: v.clone() for k, v in self.export_state(W.ORIGINAL).items()}
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda p: torch.save(state, p))
        return path


def read_native_state(path: str | os.PathLike) -> tuple[dict[str, Tensor], LxmertConfig | None, list[str]]:
    """Weights of a Hugging Face directory, an original ``*_LXRT.pth`` or a checkpoint of ours in
    our key layout; the directory's config (None for a bare file); keys no rule knows."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint file or directory")
    file_config: LxmertConfig | None = None
    if path.is_dir():
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path}: no config.json (expected a Hugging Face or lxmert directory)")
        file_config = LxmertConfig.load(path / "config.json")
        state = W.read_weights_dir(path)
    else:
        state = W.read_tensor_file(path)
    state = W.strip_prefix(state)
    state, unknown = W.to_native(state, W.detect_layout(state))
    return state, file_config, unknown


def bare_file_config(state: dict[str, Tensor], source: str, preset: str = "base", given: dict | None = None
                     ) -> LxmertConfig:
    """The configuration of a weights file without ``config.json`` (an original ``*_LXRT.pth``):
    the sizes read off its weights, the rest from ``preset`` (the paper's by default) and ``given``.
    The number of attention heads cannot be read off the weights (no shape depends on it): it is
    the preset's only when the widths agree, else it must be given; else the file is refused."""
    given = dict(given or {})
    dims = W.infer_dims(state)
    preset_width = LxmertConfig.from_preset(preset).hidden_size
    if "num_attention_heads" not in given and dims.get("hidden_size", preset_width) != preset_width:
        raise ValueError(f"{source}: no config.json, and its width {dims['hidden_size']} is not the {preset} preset's "
                         f"{preset_width}, so its number of attention heads is unknown (no weight's shape depends on "
                         f"it): give it (model.overrides.num_attention_heads=N), or a config.json")
    return LxmertConfig.from_preset(preset, **{**given, **dims})


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, flush it to disk, give it the
    usual permissions (umask), then rename it into place."""
    if path.is_dir():
        raise ValueError(f"{path} is a directory; expected a file path")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

