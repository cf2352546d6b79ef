"""Building blocks of the LXMERT encoder: embeddings, attention, feed-forward, layers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import LxmertConfig
from .tied import TiedEmbedding, TiedGradient


class LayerNorm(nn.LayerNorm):
    """LayerNorm that normalises fp16 inputs in fp32 (the output keeps the input's dtype).

    With the paper's eps of 1e-12, a row with no variance - the feature projection of a masked
    (zeroed) region while its bias is still zero - has 1/sqrt(var + eps) = 1e6, beyond fp16's
    range: in fp16 every gradient overflows and the loss scaler skips every step. fp32 and bf16
    (fp32's exponent range) run unchanged.
    """

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype == torch.float16:
            return F.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(),
                                self.eps).to(x.dtype)
        return super().forward(x)


class Dropout(nn.Module):
    """Dropout whose CPU path draws four 16-bit random numbers per 64-bit draw of the
    default generator: about 3x faster than ``torch.nn.Dropout`` on CPU, where dropout
    is otherwise some 15% of a training step. The drop probability is ``p`` rounded to
    a multiple of 1/65536; kept values are scaled by 1 / (1 - that probability).
    On other devices, and under ``torch.compile`` (which fuses it), it is ``F.dropout``."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or torch.compiler.is_compiling():
        return F.dropout(x, p, True)
    dropped = round(p * 65536)
    n = x.numel()
    bits = torch.randint(-2**63, 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64).view(torch.int16)
    keep = bits[:n].view(x.shape) >= dropped - 32768
    return x * (keep.to(x.dtype) * (65536 / (65536 - dropped)))


def additive_mask(mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """(B, N) 1/0 key mask -> (B, 1, 1, N) additive mask: 0 where kept, dtype's minimum where masked."""
    if mask is None:
        return None
    return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


class LanguageEmbeddings(nn.Module):
    """Word + position + token-type embeddings, LayerNorm, dropout.

    As in the original code (and Hugging Face's port), all three tables use
    ``padding_idx=0``: row 0 of each receives no gradient.
    """

    def __init__(self, config: LxmertConfig) -> None:
        super().__init__()
        self.word = TiedEmbedding(config.vocab_size, config.hidden_size, padding_idx=0)
        self.position = nn.Embedding(config.max_position_embeddings, config.hidden_size, padding_idx=0)
        self.token_type = nn.Embedding(config.type_vocab_size, config.hidden_size, padding_idx=0)
        self.norm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None, sink: TiedGradient | None = None) -> Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.word(input_ids, sink) + self.position(positions) + self.token_type(token_type_ids)
        return self.dropout(self.norm(x))


class VisualEmbeddings(nn.Module):
    """(LayerNorm(Linear(feature)) + LayerNorm(Linear(box))) / 2, dropout."""

    def __init__(self, config: LxmertConfig) -> None:
        super().__init__()
        self.feat_proj = nn.Linear(config.visual_feat_dim, config.hidden_size)
        self.feat_norm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.box_proj = nn.Linear(config.visual_pos_dim, config.hidden_size)
        self.box_norm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, feats: Tensor, boxes: Tensor) -> Tensor:
        x = self.feat_norm(self.feat_proj(feats)) + self.box_norm(self.box_proj(boxes))
        return self.dropout(x / 2)


class Attention(nn.Module):
    """Multi-head attention with one fused query/key/value projection, then
    output projection, dropout, residual and LayerNorm (BERT's attention block).

    Used as self-attention, and as LXMERT's cross-attention, where ONE module serves
    both directions (language queries over regions, region queries over language).
    """

    def __init__(self, config: LxmertConfig) -> None:
        super().__init__()
        h = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.qkv = nn.Linear(h, 3 * h)
        self.out = nn.Linear(h, h)
        self.norm = LayerNorm(h, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.attn_dropout = config.attention_probs_dropout_prob

    def _heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, N, 3H) -> three (B, heads, N, H/heads) tensors."""
        b, n, _ = x.shape
        return x.view(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, need_weights: bool
                ) -> tuple[Tensor, Tensor | None]:
        p = self.attn_dropout if self.training else 0.0
        if not need_weights and (p == 0.0 or q.device.type != "cpu"):
            ctx, probs = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p), None
        else:  # explicit softmax: returns the maps for inspection, and uses the fast CPU dropout
            scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
            if mask is not None:
                scores = scores + mask
            probs = scores.softmax(-1)
            ctx = dropout(probs, p, True) @ v
        b, _, n, _ = ctx.shape
        return ctx.transpose(1, 2).reshape(b, n, -1), probs

    def _finish(self, ctx: Tensor, residual: Tensor) -> Tensor:
        return self.norm(self.dropout(self.out(ctx)) + residual)

    def forward(self, x: Tensor, mask: Tensor | None, need_weights: bool = False
                ) -> tuple[Tensor, Tensor | None]:
        """Self-attention; ``mask`` is additive, (B, 1, 1, N)."""
        q, k, v = self._heads(self.qkv(x))
        ctx, probs = self._attend(q, k, v, mask, need_weights)
        return self._finish(ctx, x), probs

    def cross(self, lang: Tensor, visn: Tensor, lang_mask: Tensor | None, visn_mask: Tensor | None,
              need_weights: bool = False) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """Both directions with the same weights, computed as one projection over
        the concatenated tokens. Returns (language out, vision out, language->vision maps,
        vision->language maps); the maps are None unless ``need_weights``."""
        t = lang.shape[1]
        both = torch.cat([lang, visn], dim=1)
        q, k, v = self._heads(self.qkv(both))
        lang_ctx, to_vision = self._attend(q[:, :, :t], k[:, :, t:], v[:, :, t:], visn_mask, need_weights)
        visn_ctx, to_language = self._attend(q[:, :, t:], k[:, :, :t], v[:, :, :t], lang_mask, need_weights)
        out = self._finish(torch.cat([lang_ctx, visn_ctx], dim=1), both)
        return out[:, :t], out[:, t:], to_vision, to_language


class FeedForward(nn.Module):
    """Linear up, GELU, Linear down, dropout, residual, LayerNorm."""

    def __init__(self, config: LxmertConfig) -> None:
        super().__init__()
        self.up = nn.Linear(config.hidden_size, config.intermediate_size)
        self.down = nn.Linear(config.intermediate_size, config.hidden_size)
        self.norm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.dropout(self.down(F.gelu(self.up(x)))) + x)


class TransformerLayer(nn.Module):
    """A BERT layer: self-attention then feed-forward. Used for the language (L)
    and object-relationship (R) encoders."""

    def __init__(self, config: LxmertConfig) -> None:
        super().__init__()
        self.attention = Attention(config)
        self.ffn = FeedForward(config)

    def forward(self, x: Tensor, mask: Tensor | None, need_weights: bool = False
                ) -> tuple[Tensor, Tensor | None]:
        x, probs = self.attention(x, mask, need_weights)
        return self.ffn(x), probs


class CrossLayer(nn.Module):
    """A cross-modality (X) layer: shared cross-attention in both directions, then
    a language and a vision self-attention, then a language and a vision feed-forward."""

    def __init__(self, config: LxmertConfig) -> None:
        super().__init__()
        self.cross_attention = Attention(config)
        self.language_attention = Attention(config)
        self.visual_attention = Attention(config)
        self.language_ffn = FeedForward(config)
        self.visual_ffn = FeedForward(config)

    def forward(self, lang: Tensor, visn: Tensor, lang_mask: Tensor | None, visn_mask: Tensor | None,
                need_weights: bool = False) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """Returns (language, vision, language->vision maps, vision->language maps)."""
        lang, visn, to_vision, to_language = self.cross_attention.cross(lang, visn, lang_mask, visn_mask, need_weights)
        lang, _ = self.language_attention(lang, lang_mask)
        visn, _ = self.visual_attention(visn, visn_mask)
        return self.language_ffn(lang), self.visual_ffn(visn), to_vision, to_language


class Pooler(nn.Module):
    """tanh(Linear) of the language [CLS] output."""

    def __init__(self, config: LxmertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, lang: Tensor) -> Tensor:
        return torch.tanh(self.dense(lang[:, 0]))
