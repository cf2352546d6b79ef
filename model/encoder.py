"""The LXMERT encoder: language (L), object-relationship (R) and cross-modality (X) layers."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .config import LxmertConfig
from .tied import TiedGradient
from .layers import CrossLayer, LanguageEmbeddings, Pooler, TransformerLayer, VisualEmbeddings, additive_mask


@dataclass
class EncoderOutput:
    language_output: Tensor  # (B, T, H)
    vision_output: Tensor  # (B, R, H)
    pooled_output: Tensor  # (B, H)
    #: With ``output_hidden_states``: embeddings excluded, as Hugging Face's port —
    #: language: L + X tensors, vision: R + X tensors.
    language_hidden_states: tuple[Tensor, ...] | None = None
    vision_hidden_states: tuple[Tensor, ...] | None = None
    #: With ``output_attentions``: (B, heads, N, N) maps per language / relation layer,
    #: the language->vision cross-attention map of each cross layer (B, heads, T, R), as Hugging
    #: Face's ``cross_encoder_attentions``, and the vision->language one (B, heads, R, T).
    language_attentions: tuple[Tensor, ...] | None = None
    vision_attentions: tuple[Tensor, ...] | None = None
    cross_attentions: tuple[Tensor, ...] | None = None
    vision_cross_attentions: tuple[Tensor, ...] | None = None


def _check_shape(name: str, tensor: Tensor | None, expected: tuple[int | None, ...]) -> None:
    if tensor is None:
        return
    shape = tuple(tensor.shape)
    if len(shape) != len(expected) or any(e is not None and e != s for e, s in zip(expected, shape)):
        pretty = "(" + ", ".join("*" if e is None else str(e) for e in expected) + ("," if len(expected) == 1 else "") + ")"
        raise ValueError(f"{name}: expected shape {pretty}, got {shape}")


def check_inputs(config: LxmertConfig, input_ids: Tensor, visual_feats: Tensor, visual_pos: Tensor,
                 attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None,
                 visual_attention_mask: Tensor | None = None) -> None:
    """Raise ``ValueError`` with expected vs actual shape for any inconsistent input."""
    _check_shape("input_ids", input_ids, (None, None))
    b, t = input_ids.shape
    if t > config.max_position_embeddings:
        raise ValueError(f"input_ids: {t} tokens exceed max_position_embeddings={config.max_position_embeddings}")
    _check_shape("attention_mask", attention_mask, (b, t))
    _check_shape("token_type_ids", token_type_ids, (b, t))
    _check_shape("visual_feats", visual_feats, (b, None, config.visual_feat_dim))
    r = visual_feats.shape[1]
    _check_shape("visual_pos", visual_pos, (b, r, config.visual_pos_dim))
    _check_shape("visual_attention_mask", visual_attention_mask, (b, r))


class LxmertModel(nn.Module):
    """Embeddings, L language layers, R object-relationship layers, X cross layers, pooler."""

    def __init__(self, config: LxmertConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = LanguageEmbeddings(config)
        self.visual_embeddings = VisualEmbeddings(config)
        self.language_layers = nn.ModuleList(TransformerLayer(config) for _ in range(config.l_layers))
        self.relation_layers = nn.ModuleList(TransformerLayer(config) for _ in range(config.r_layers))
        self.cross_layers = nn.ModuleList(CrossLayer(config) for _ in range(config.x_layers))
        self.pooler = Pooler(config)

    def _run(self, layer: nn.Module, *args):
        if self.config.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(layer, *args, use_reentrant=False)
        return layer(*args)

    def forward(
        self,
        input_ids: Tensor,
        visual_feats: Tensor,
        visual_pos: Tensor,
        attention_mask: Tensor | None = None,
        visual_attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        word_grad_sink: TiedGradient | None = None,
    ) -> EncoderOutput:
        """Masks are 1 = attend, 0 = padding. ``word_grad_sink`` ties the word-embedding
        gradient to a decoder that uses the same sink (see :mod:`model.tied`)."""
        check_inputs(self.config, input_ids, visual_feats, visual_pos, attention_mask, token_type_ids,
                     visual_attention_mask)
        lang = self.embeddings(input_ids, token_type_ids, word_grad_sink)
        dtype = lang.dtype
        visn = self.visual_embeddings(visual_feats.to(dtype), visual_pos.to(dtype))
        lang_mask = additive_mask(attention_mask, dtype)
        visn_mask = additive_mask(visual_attention_mask, dtype)

        lang_states, visn_states = [], []
        lang_maps, visn_maps, cross_maps, back_maps = [], [], [], []
        for layer in self.language_layers:
            lang, probs = self._run(layer, lang, lang_mask, output_attentions)
            lang_states.append(lang)
            lang_maps.append(probs)
        for layer in self.relation_layers:
            visn, probs = self._run(layer, visn, visn_mask, output_attentions)
            visn_states.append(visn)
            visn_maps.append(probs)
        for layer in self.cross_layers:
            lang, visn, to_vision, to_language = self._run(layer, lang, visn, lang_mask, visn_mask, output_attentions)
            lang_states.append(lang)
            visn_states.append(visn)
            cross_maps.append(to_vision)
            back_maps.append(to_language)

        return EncoderOutput(
            language_output=lang,
            vision_output=visn,
            pooled_output=self.pooler(lang),
            language_hidden_states=tuple(lang_states) if output_hidden_states else None,
            vision_hidden_states=tuple(visn_states) if output_hidden_states else None,
            language_attentions=tuple(lang_maps) if output_attentions else None,
            vision_attentions=tuple(visn_maps) if output_attentions else None,
            cross_attentions=tuple(cross_maps) if output_attentions else None,
            vision_cross_attentions=tuple(back_maps) if output_attentions else None,
        )
