"""The pre-training dataset: (image, sentence) items turned into the five objectives' inputs and targets."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.utils.data import Dataset

from .corpus import ItemPairs
from .objectives import IGNORE, ObjectiveConfig, mask_regions, mask_tokens, sample_answer
from .tokenize import MAX_TOKENS


def example_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The generator of one example: a function of (seed, epoch, index) only."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + epoch) * 1_000_000_007 + index) % (2**63 - 1))


class PretrainingDataset(Dataset):
    """Indexed by ``(epoch, index)`` (as :class:`data.sampler.ResumableSampler` yields) or by
    ``index`` (epoch 0). Every random choice comes from the example's own generator."""

    def __init__(self, pairs, store, tokenizer, objectives: ObjectiveConfig | None = None,
                 seed: int = 0, max_tokens: int = MAX_TOKENS) -> None:
        """``pairs``: :class:`data.corpus.CorpusPairs` (a built corpus, mapped), :class:`data.corpus.ItemPairs`,
        or a list of :class:`data.corpus.Item` (wrapped in ItemPairs)."""
        if isinstance(pairs, list):
            pairs = ItemPairs(pairs, tokenizer)
        if not len(pairs):
            raise ValueError("the pre-training corpus is empty")
        self.pairs, self.store, self.tokenizer = pairs, store, tokenizer
        self.objectives = objectives or ObjectiveConfig()
        self.seed, self.max_tokens = seed, max_tokens
        self.images = pairs.image_ids  # sorted
        self.special_ids = torch.tensor(sorted({tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id}))
        self.mask_id, self.vocab_size = tokenizer.mask_token_id, len(tokenizer)
        if len(self.images) < 2 and self.objectives.matching:
            raise ValueError("matching needs sentences from at least two images")

    def __len__(self) -> int:
        return len(self.pairs)

    def _other_pair(self, image: int, gen: torch.Generator) -> int:
        """A random pair of a different image (resampled until the image differs)."""
        while True:
            other = int(torch.randint(len(self.pairs), (1,), generator=gen))
            if self.pairs.image(other) != image:
                return other

    @staticmethod
    def _rows_of(other, pick: Tensor) -> Callable[[Tensor], Tensor]:
        """The swapped regions' features: region ``pick[i]`` of the other image for each swapped
        row ``i``. Only those rows are read (a region is swapped 1.5% of the time)."""
        return lambda rows: torch.from_numpy(other.features[pick[rows].numpy()])

    def __getitem__(self, key) -> dict:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        obj = self.objectives
        gen = example_generator(self.seed, epoch, index)
        pairs = self.pairs
        image = pairs.image(index)

        matched, sentence = 1, index
        if obj.matching and float(torch.rand((), generator=gen)) < obj.mismatch_probability:
            sentence, matched = self._other_pair(image, gen), 0
        ids = torch.tensor(pairs.tokens(sentence, self.max_tokens))
        if obj.mlm:
            special = torch.isin(ids, self.special_ids)
            inputs, labels = mask_tokens(ids, special, self.vocab_size, self.mask_id, gen, obj.mlm_probability)
        else:
            inputs, labels = ids, torch.full_like(ids, IGNORE)

        rec = self.store[self.images[image]]
        feats = rec.tensor(None)
        boxes = torch.from_numpy(rec.normalized_boxes())
        n = feats.shape[0]
        mask = torch.zeros(n)
        masked_feats = feats
        if obj.visual:
            other = self.store[self.images[int(torch.randint(len(self.images), (1,), generator=gen))]]
            pick = torch.randint(other.num_boxes, (n,), generator=gen)
            masked_feats, mask = mask_regions(feats, self._rows_of(other, pick), gen, obj.obj_mask_probability)
        obj_conf = torch.from_numpy(rec.objects_conf.copy())
        attr_conf = torch.from_numpy(rec.attrs_conf.copy())
        if obj.label_weights == "mask":
            obj_conf, attr_conf = mask.clone(), mask.clone()
        if not obj.visual:
            obj_conf, attr_conf = torch.zeros(n), torch.zeros(n)

        ans = IGNORE
        if obj.qa and matched and epoch >= obj.qa_start_epoch:
            ans = sample_answer(pairs.answers(index), gen)
        return {
            "input_ids": inputs, "labels": labels, "visual_feats": masked_feats, "visual_pos": boxes,
            "obj_ids": torch.from_numpy(rec.objects_id.astype("int64")), "obj_weights": obj_conf,
            "attr_ids": torch.from_numpy(rec.attrs_id.astype("int64")), "attr_weights": attr_conf,
            "feat_targets": feats, "feat_mask": mask, "ans": ans,
            # matching off: no target (a label 1 on every pair would still train the head and the pooler)
            "matched_label": matched if obj.matching else IGNORE,
        }
