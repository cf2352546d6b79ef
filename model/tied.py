"""The word-embedding table shared by the input embedding and the masked-LM decoder.

Plain autograd gives the table two dense (vocab x hidden) gradients per step, one from
the decoder and one from the embedding lookup (a zero-filled table with a few rows set),
and then adds them: two vocab-sized allocations, a fill and an add, about 15% of a CPU
training step of the base model. Here the decoder's weight gradient is handed to the
embedding's backward (which always runs later: every decoder input depends on the
embedding output), which adds its few rows into it in place.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class TiedGradient:
    """Per-forward carrier of the decoder's weight gradient to the embedding's backward."""

    __slots__ = ("grad",)

    def __init__(self) -> None:
        self.grad: Tensor | None = None


class _Decoder(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, bias: Tensor | None, sink: TiedGradient) -> Tensor:
        ctx.save_for_backward(hidden, weight)
        ctx.sink, ctx.has_bias, ctx.weight_dtype = sink, bias is not None, weight.dtype
        return F.linear(hidden, weight, bias)

    @staticmethod
    def backward(ctx, grad: Tensor):
        hidden, weight = ctx.saved_tensors
        # under autocast the forward ran in the autocast dtype: differentiate in the gradient's
        hidden, weight = hidden.to(grad.dtype), weight.to(grad.dtype)
        g2 = grad.reshape(-1, grad.shape[-1])
        grad_hidden = grad @ weight if ctx.needs_input_grad[0] else None
        if ctx.needs_input_grad[1]:
            grad_weight = (g2.t() @ hidden.reshape(-1, hidden.shape[-1])).to(ctx.weight_dtype)
            ctx.sink.grad = grad_weight if ctx.sink.grad is None else ctx.sink.grad.add_(grad_weight)
        grad_bias = g2.sum(0).to(ctx.weight_dtype) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_hidden, None, grad_bias, None


class _Lookup(torch.autograd.Function):
    @staticmethod
    def forward(ctx, ids: Tensor, weight: Tensor, padding_idx: int | None, sink: TiedGradient) -> Tensor:
        ctx.save_for_backward(ids)
        ctx.sink, ctx.padding_idx, ctx.shape = sink, padding_idx, weight.shape
        return F.embedding(ids, weight, padding_idx)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (ids,) = ctx.saved_tensors
        table, ctx.sink.grad = ctx.sink.grad, None
        if table is None:  # the decoder was not part of this backward pass
            table = grad.new_zeros(ctx.shape)
        rows, grad = ids.reshape(-1), grad.reshape(-1, grad.shape[-1])
        if ctx.padding_idx is not None:
            grad = grad.masked_fill((rows == ctx.padding_idx).unsqueeze(1), 0)
        return None, table.index_add_(0, rows, grad.to(table.dtype)), None, None


class TiedEmbedding(nn.Embedding):
    """``nn.Embedding`` whose table is also the masked-LM decoder weight.

    ``self(ids, sink)`` looks up; ``self(hidden, sink, decode_bias=bias)`` decodes. Both go
    through the module call, so wrappers that manage parameters with module hooks (ZeRO-3)
    see both uses. With the same :class:`TiedGradient` the two produce one dense gradient
    for the table; with ``sink=None``, and under ``torch.compile`` (whose compiled backward
    fuses the two gradients' sum itself), they are plain ``F.embedding`` / ``F.linear``.
    """

    def forward(self, x: Tensor, sink: TiedGradient | None = None, decode_bias: Tensor | None = None) -> Tensor:
        tied = (sink is not None and torch.is_grad_enabled() and self.weight.requires_grad
                and not torch.compiler.is_compiling())
        if decode_bias is not None:
            return _Decoder.apply(x, self.weight, decode_bias, sink) if tied else F.linear(x, self.weight, decode_bias)
        return _Lookup.apply(x, self.weight, self.padding_idx, sink) if tied else F.embedding(x, self.weight, self.padding_idx)
