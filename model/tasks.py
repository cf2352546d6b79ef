"""Fine-tuning models: question answering (VQA, GQA) and NLVR2."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from . import weights as W
from .config import LxmertConfig
from .encoder import LxmertModel
from .heads import ClassifierHead, answer_head
from .pretrained import LxmertPreTrainedModel


@dataclass
class TaskOutput:
    logits: Tensor  # (B, num_labels)
    loss: Tensor | None = None
    pooled_output: Tensor | None = None


class LxmertForQuestionAnswering(LxmertPreTrainedModel):
    """Encoder plus the answer head over ``num_labels`` answers (``config.num_qa_labels``).

    ``labels``: soft scores (B, num_labels) -> BCE-with-logits x num_labels, as the original
    VQA/GQA fine-tuning; or answer ids (B,) -> cross-entropy, as Hugging Face's.
    """

    head_rules = W.QA_HEAD_RULES
    hf_architecture = "LxmertForQuestionAnswering"

    def __init__(self, config: LxmertConfig) -> None:
        super().__init__(config)
        self.encoder = LxmertModel(config)
        self.answer_head = answer_head(config, config.num_qa_labels)
        self.init_weights()

    def forward(self, input_ids: Tensor, visual_feats: Tensor, visual_pos: Tensor,
                attention_mask: Tensor | None = None, visual_attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None, labels: Tensor | None = None) -> TaskOutput:
        enc = self.encoder(input_ids, visual_feats, visual_pos, attention_mask, visual_attention_mask, token_type_ids)
        logits = self.answer_head(enc.pooled_output)
        loss = None
        if labels is not None:
            if labels.is_floating_point():
                if labels.shape != logits.shape:
                    raise ValueError(f"labels: expected soft scores of shape {tuple(logits.shape)}, got {tuple(labels.shape)}")
                loss = F.binary_cross_entropy_with_logits(logits.float(), labels.float()) * logits.shape[1]
            else:
                loss = F.cross_entropy(logits.float(), labels.reshape(-1))
        return TaskOutput(logits=logits, loss=loss, pooled_output=enc.pooled_output)


class LxmertForNLVR2(LxmertPreTrainedModel):
    """Each example holds one sentence and two images; the two pooled outputs are
    concatenated and classified: Linear(2H, 2H), GELU, LayerNorm, Linear(2H, 2)."""

    head_rules = W.NLVR2_HEAD_RULES
    hf_architecture = None

    def __init__(self, config: LxmertConfig) -> None:
        super().__init__(config)
        h = config.hidden_size
        self.encoder = LxmertModel(config)
        self.classifier = ClassifierHead(2 * h, 2 * h, 2, config.layer_norm_eps)
        self.init_weights()

    def forward(self, input_ids: Tensor, visual_feats: Tensor, visual_pos: Tensor,
                attention_mask: Tensor | None = None, visual_attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None, labels: Tensor | None = None) -> TaskOutput:
        """``visual_feats`` (B, 2, R, F), ``visual_pos`` (B, 2, R, 4), ``visual_attention_mask``
        (B, 2, R); text inputs (B, T) are shared by both images. ``labels`` (B,) in {0, 1}."""
        if visual_feats.dim() != 4 or visual_feats.shape[1] != 2:
            raise ValueError(f"visual_feats: expected shape (B, 2, R, {self.config.visual_feat_dim}), "
                             f"got {tuple(visual_feats.shape)}")
        b = visual_feats.shape[0]
        if visual_pos.shape[:2] != (b, 2):
            raise ValueError(f"visual_pos: expected shape ({b}, 2, R, 4), got {tuple(visual_pos.shape)}")
        twice = lambda x: None if x is None else x.repeat_interleave(2, dim=0)  # noqa: E731
        enc = self.encoder(
            twice(input_ids), visual_feats.flatten(0, 1), visual_pos.flatten(0, 1), twice(attention_mask),
            None if visual_attention_mask is None else visual_attention_mask.flatten(0, 1), twice(token_type_ids),
        )
        pooled = enc.pooled_output.reshape(b, -1)  # (B, 2H): image 0 then image 1
        logits = self.classifier(pooled)
        loss = F.cross_entropy(logits.float(), labels.reshape(-1)) if labels is not None else None
        return TaskOutput(logits=logits, loss=loss, pooled_output=pooled)


@torch.no_grad()
def transfer_answer_rows(model: LxmertForQuestionAnswering, weight: Tensor, bias: Tensor, rows: dict[int, int]) -> None:
    """Fill this model's answer-head last Linear from another's (``weight`` (N, 2H), ``bias`` (N,)):
    ``rows`` maps this model's label id to the source row; a label absent from ``rows`` starts with
    zero weight and bias, as the original release's ``load_lxmert_qa`` does."""
    out = model.answer_head.out
    if weight.shape[1:] != out.weight.shape[1:]:
        raise ValueError(f"answer head rows of size {weight.shape[1]} cannot fill rows of size {out.weight.shape[1]}")
    with torch.no_grad():
        out.weight.zero_()
        out.bias.zero_()
        if rows:
            dst = torch.tensor(list(rows.keys()))
            src = torch.tensor(list(rows.values()))
            out.weight[dst] = weight[src].to(out.weight.dtype)
            out.bias[dst] = bias[src].to(out.bias.dtype)
