"""The paper's recipes ship as configs that name the original release's files and layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.config import load_config, load_finetune_config

ROOT = Path(__file__).resolve().parents[1]

# The original release's files (its README's data/ layout), as a user has them; the stores are
# what `lxmert features build` makes from its TSV files, as each recipe's header says.
ORIGINAL_FILES = [
    "data/lxmert/mscoco_train.json", "data/lxmert/mscoco_nominival.json", "data/lxmert/vgnococo.json",
    "data/lxmert/mscoco_minival.json", "data/lxmert/all_ans.json",
    "data/vqa/train.json", "data/vqa/nominival.json", "data/vqa/minival.json", "data/vqa/test.json",
    "data/vqa/trainval_ans2label.json", "data/vqa/trainval_label2ans.json",
    "data/gqa/train.json", "data/gqa/valid.json", "data/gqa/testdev.json", "data/gqa/submit.json",
    "data/gqa/trainval_ans2label.json", "data/gqa/trainval_label2ans.json",
    "data/nlvr2/train.json", "data/nlvr2/valid.json", "data/nlvr2/test.json",
    "snap/pretrained/model_LXRT.pth",
]
STORES = ["data/stores/lxmert", "data/stores/mscoco", "data/stores/gqa", "data/stores/nlvr2"]


@pytest.fixture
def original_tree(tmp_path, monkeypatch):
    for name in ORIGINAL_FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")  # empty stand-ins: nothing is read, only resolved
    for name in STORES:
        (tmp_path / name).mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_pretraining_recipe_is_the_papers(original_tree):
    run = load_config(ROOT / "launcher" / "configs" / "lxmert_pretrain.yaml")
    assert run.model.preset == "base" and run.data.tokenizer == "bert-base-uncased"
    assert run.data.train == ["data/lxmert/mscoco_train.json", "data/lxmert/mscoco_nominival.json",
                              "data/lxmert/vgnococo.json"]
    assert run.data.valid == ["data/lxmert/mscoco_minival.json"] and run.data.answers == "data/lxmert/all_ans.json"
    t = run.train
    assert (t.global_batch_size, t.epochs, t.lr, t.warmup_ratio, t.weight_decay, t.gradient_clipping) == \
        (256, 20, 1e-4, 0.05, 0.01, 1.0)
    assert run.objectives.qa_start_epoch == 10  # QA in the last 10 of 20 epochs, as the paper
    for path in [*run.data.train, *run.data.valid, run.data.answers]:
        assert Path(path).is_file(), path
    assert Path(run.data.store).is_dir() and (ROOT / run.deepspeed).is_file()


@pytest.mark.parametrize("task, lr, labels", [("vqa", 5e-5, "data/vqa/trainval_ans2label.json"),
                                              ("gqa", 1e-5, "data/gqa/trainval_ans2label.json"),
                                              ("nlvr2", 5e-5, "")])
def test_finetuning_recipes_are_the_original_releases(original_tree, task, lr, labels):
    ft = load_finetune_config(ROOT / "launcher" / "configs" / f"lxmert_{task}.yaml")
    t = ft.train
    assert ft.task == task and ft.model.preset == "base"
    assert (t.global_batch_size, t.lr, t.epochs, t.warmup_ratio, t.gradient_clipping) == (32, lr, 4, 0.1, 5.0)
    assert ft.model.init_from == "snap/pretrained/model_LXRT.pth" and ft.data.labels == labels
    for path in [*ft.data.train, *ft.data.valid, *ft.data.test, ft.model.init_from, *([labels] if labels else []),
                 *([ft.data.pretrain_answers] if task != "nlvr2" else [])]:
        assert Path(path).is_file(), path
    assert Path(ft.data.store).is_dir() and (ROOT / ft.deepspeed).is_file()
