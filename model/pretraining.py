"""LXMERT with its pre-training heads and the losses of the five objectives."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import weights as W
from .config import OBJECTIVES, LxmertConfig
from .encoder import LxmertModel, _check_shape
from .heads import MaskedLMHead, ObjectHead, answer_head
from .pretrained import LxmertPreTrainedModel
from .tied import TiedGradient

IGNORE_INDEX = -100  # Hugging Face's; the original release used -1 (converted on input)


@dataclass
class LxmertPretrainingOutput:
    """Outputs of :class:`LxmertForPretraining`; the first four as in Hugging Face's port."""

    loss: Tensor | None = None
    #: (B, T, vocab). None when training with ``labels``: then only the positions that
    #: carry a target are projected, and their logits are in ``mlm_target_logits``.
    prediction_logits: Tensor | None = None
    cross_relationship_score: Tensor | None = None  # (B, 2)
    question_answering_score: Tensor | None = None  # (B, num_qa_labels)
    #: Per-objective losses (mlm, matched, obj, attr, feat, qa) that were computed, unweighted.
    losses: dict[str, Tensor] = field(default_factory=dict)
    mlm_target_logits: Tensor | None = None  # (number of targets, or mlm_slots, vocab)
    #: Object head: (B, R, num_object_labels), (B, R, num_attr_labels), (B, R, visual_feat_dim).
    obj_logits: Tensor | None = None
    attr_logits: Tensor | None = None
    feat_prediction: Tensor | None = None
    language_output: Tensor | None = None
    vision_output: Tensor | None = None
    pooled_output: Tensor | None = None
    language_hidden_states: tuple[Tensor, ...] | None = None
    vision_hidden_states: tuple[Tensor, ...] | None = None
    language_attentions: tuple[Tensor, ...] | None = None
    vision_attentions: tuple[Tensor, ...] | None = None
    cross_attentions: tuple[Tensor, ...] | None = None
    vision_cross_attentions: tuple[Tensor, ...] | None = None


def _ignore_minus_one(labels: Tensor) -> Tensor:
    return labels.masked_fill(labels == -1, IGNORE_INDEX)


def _mean_ce(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy averaged over non-ignored targets; 0 (not NaN) when there are none."""
    labels = _ignore_minus_one(labels.reshape(-1))
    total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels, reduction="sum")
    return total / (labels != IGNORE_INDEX).sum().clamp(min=1)


def target_slots(is_target: Tensor, slots: int) -> Tensor:
    """``slots`` flat positions (all of them if fewer): every target, in order, then non-targets.
    A shape that depends on ``slots`` only; the device asserts that no target is left out."""
    slots = min(slots, is_target.numel())
    torch._assert_async(is_target.sum() <= slots, "more masked-LM targets than mlm_slots: raise data.mlm_slots")
    return torch.argsort((~is_target).to(torch.uint8), stable=True)[:slots]


class LxmertForPretraining(LxmertPreTrainedModel):
    """Encoder plus MLM (tied), matching, object (obj/attr/feat) and answer heads.

    ``forward`` takes Hugging Face's keyword names, inputs and targets alike, so one
    batch dict feeds either model.
    """

    head_rules = W.PRETRAINING_HEAD_RULES
    hf_architecture = "LxmertForPreTraining"

    def __init__(self, config: LxmertConfig) -> None:
        super().__init__(config)
        self.encoder = LxmertModel(config)
        self.mlm_head = MaskedLMHead(config)
        self.matching_head = nn.Linear(config.hidden_size, 2)
        self.object_head = ObjectHead(config) if config.task_obj_predict else None
        self.answer_head = answer_head(config, config.num_qa_labels) if config.task_qa else None
        self.init_weights()

    def forward(
        self,
        input_ids: Tensor,
        visual_feats: Tensor,
        visual_pos: Tensor,
        attention_mask: Tensor | None = None,
        visual_attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        labels: Tensor | None = None,
        obj_labels: dict[str, tuple[Tensor, Tensor]] | None = None,
        matched_label: Tensor | None = None,
        ans: Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        full_mlm_logits: bool | None = None,
        mlm_slots: int | None = None,
    ) -> LxmertPretrainingOutput:
        """Targets (all optional): ``labels`` (B, T) masked-LM ids, -100 or -1 = none;
        ``obj_labels`` {"obj": (ids (B, R), weights (B, R)), "attr": (...), "feat": (features
        (B, R, F), weights (B, R))}; ``matched_label`` (B,) 1 = matching pair; ``ans`` (B,)
        answer id, -100 or -1 = none. ``full_mlm_logits`` forces (or skips) the (B, T, vocab)
        projection; by default it is skipped in training (where only the positions carrying
        a ``labels`` target are projected). ``mlm_slots``: project a fixed number of positions instead,
        the targets first and non-target positions (ignored by the loss) after them, so that the step's
        shapes do not depend on how many pieces were masked (static shapes; the loss is unchanged).
        A batch with more targets than slots fails (checked on the device, without waiting for it).
        """
        cfg = self.config
        sink = TiedGradient()
        enc = self.encoder(input_ids, visual_feats, visual_pos, attention_mask, visual_attention_mask,
                           token_type_ids, output_attentions, output_hidden_states, sink)
        b, t = input_ids.shape
        _check_shape("labels", labels, (b, t))
        _check_shape("matched_label", matched_label, (b,))
        _check_shape("ans", ans, (b,))
        lang, visn, pooled = enc.language_output, enc.vision_output, enc.pooled_output
        word = self.encoder.embeddings.word
        out = LxmertPretrainingOutput(
            cross_relationship_score=self.matching_head(pooled),
            question_answering_score=self.answer_head(pooled) if self.answer_head is not None else None,
            language_output=lang, vision_output=visn, pooled_output=pooled,
            language_hidden_states=enc.language_hidden_states, vision_hidden_states=enc.vision_hidden_states,
            language_attentions=enc.language_attentions, vision_attentions=enc.vision_attentions,
            cross_attentions=enc.cross_attentions, vision_cross_attentions=enc.vision_cross_attentions,
        )
        if full_mlm_logits is None:  # in training, project only where there are targets (or nowhere)
            full_mlm_logits = not self.training
        if full_mlm_logits:
            out.prediction_logits = self.mlm_head(lang, word, sink)

        losses: dict[str, Tensor] = {}
        if labels is not None and cfg.task_mask_lm:
            if out.prediction_logits is not None:
                losses["mlm"] = _mean_ce(out.prediction_logits, labels)
            else:  # project only the positions that carry a target: same loss, less work
                flat = _ignore_minus_one(labels.reshape(-1))
                is_target = flat != IGNORE_INDEX
                where = is_target.nonzero().squeeze(1) if mlm_slots is None else target_slots(is_target, mlm_slots)
                out.mlm_target_logits = self.mlm_head(lang.reshape(-1, lang.shape[-1])[where], word, sink)
                losses["mlm"] = _mean_ce(out.mlm_target_logits, flat[where])
        if matched_label is not None and cfg.task_matched:
            losses["matched"] = _mean_ce(out.cross_relationship_score, matched_label)

        if self.object_head is not None:
            preds = self.object_head(visn)
            out.obj_logits, out.attr_logits, out.feat_prediction = preds.get("obj"), preds.get("attr"), preds.get("feat")
            if obj_labels is not None:
                losses.update(self._visual_losses(preds, obj_labels, visual_attention_mask))
        if ans is not None and self.answer_head is not None:
            losses["qa"] = _mean_ce(out.question_answering_score, ans)

        if losses:
            out.losses = losses
            out.loss = sum(cfg.loss_weights[k] * v for k, v in losses.items())
        return out

    def _visual_losses(self, preds: dict[str, Tensor], obj_labels: dict[str, tuple[Tensor, Tensor]],
                       region_mask: Tensor | None = None) -> dict[str, Tensor]:
        """The original's semantics: per-region loss x weight (detector confidence or mask), averaged
        over the batch's real regions, times the visual loss normaliser (1/0.15). With every image at
        R regions (``region_mask`` None) that is the original's mean over B x R; padded regions count
        in neither the sum nor the count, so a batch's losses do not shrink with its largest image."""
        regions = region_mask.sum().clamp(min=1) if region_mask is not None else None
        losses = {}
        for name, pred in preds.items():
            if name not in obj_labels:
                continue
            target, weight = obj_labels[name]
            if name == "feat":
                if target.shape != pred.shape:
                    raise ValueError(f"obj_labels['feat']: expected shape {tuple(pred.shape)}, got {tuple(target.shape)}")
                per_region = F.smooth_l1_loss(pred.float(), target.float(), reduction="none").mean(-1)
            else:
                if target.shape != pred.shape[:-1]:
                    raise ValueError(f"obj_labels[{name!r}]: expected shape {tuple(pred.shape[:-1])}, got {tuple(target.shape)}")
                per_region = F.cross_entropy(pred.reshape(-1, pred.shape[-1]).float(),
                                             _ignore_minus_one(target.reshape(-1)), reduction="none")
            weighted = per_region.reshape(-1) * weight.reshape(-1).to(per_region.dtype)
            mean = weighted.mean() if regions is None else weighted.sum() / regions
            losses[name] = mean * self.config.visual_loss_normalizer
        return losses


__all__ = ["LxmertForPretraining", "LxmertPretrainingOutput", "IGNORE_INDEX", "OBJECTIVES"]
