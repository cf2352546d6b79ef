"""Benchmark metrics against hand-computed cases, submission files, answer-head transfer, fine-tuning config."""

from __future__ import annotations

import pytest
import torch

from data.answers import map_labels
from data.evaluation import nlvr2_scores, read_submission, scores, submission_name, submission_text


def test_vqa_accuracy_is_the_soft_score_of_the_predicted_answer():
    rows = [{"question_id": 1, "label": {"red": 1.0, "blue": 0.3}},
            {"question_id": 2, "label": {"2": 0.6}},
            {"question_id": 3, "label": {"yes": 1.0}},
            {"question_id": 4, "label": {}}]
    preds = {1: "blue", 2: "2", 3: "no", 4: "cat"}
    assert scores("vqa", preds, rows) == {"accuracy": pytest.approx((0.3 + 0.6 + 0 + 0) / 4)}
    assert scores("vqa", {1: "red", 2: "2", 3: "yes", 4: "x"}, rows)["accuracy"] == pytest.approx(2.6 / 4)


def test_gqa_accuracy_is_exact_match():
    rows = [{"question_id": "a", "label": {"dog": 1.0}}, {"question_id": "b", "label": {"left": 1.0}},
            {"question_id": "c", "label": {"no": 1.0}}]
    assert scores("gqa", {"a": "dog", "b": "right", "c": "no"}, rows) == {"accuracy": pytest.approx(2 / 3)}


def test_nlvr2_accuracy_and_consistency_groups():
    # sentence dev-1-0: 3 pairs, all right; dev-1-1 (same set, another sentence): 1 pair, wrong;
    # dev-2-0: 2 pairs, one wrong; dev-3-1: 1 pair, right
    rows = [{"identifier": f"dev-1-0-{j}", "label": j % 2} for j in range(3)]
    rows += [{"identifier": "dev-1-1-0", "label": 1}, {"identifier": "dev-2-0-0", "label": 1},
             {"identifier": "dev-2-0-1", "label": 0}, {"identifier": "dev-3-1-0", "label": 1}]
    preds = {"dev-1-0-0": 0, "dev-1-0-1": 1, "dev-1-0-2": 0, "dev-1-1-0": 0, "dev-2-0-0": 1, "dev-2-0-1": 1,
             "dev-3-1-0": 1}
    result = nlvr2_scores(preds, rows)
    assert result["accuracy"] == pytest.approx(5 / 7)
    assert result["consistency"] == pytest.approx(2 / 4)  # grouping by set (dev-1) would give 1/3


@pytest.mark.parametrize("task, preds", [
    ("vqa", {1: "red", 22: "2", 3: "yes"}),
    ("gqa", {"20968379": "table", "g2": "no"}),
    ("nlvr2", {"test1-0-1-0": 1, "test1-0-1-1": 0}),
])
def test_submission_files_parse_back(tmp_path, task, preds):
    import json

    path = tmp_path / submission_name(task, "test")
    path.write_text(submission_text(task, preds))
    assert read_submission(task, path) == preds
    if task == "vqa":
        assert json.loads(path.read_text())[0] == {"question_id": 1, "answer": "red"}
    elif task == "gqa":
        assert json.loads(path.read_text())[0] == {"questionId": "20968379", "prediction": "table"}
    else:
        assert path.suffix == ".csv" and path.read_text() == "test1-0-1-0,True\ntest1-0-1-1,False\n"
    (tmp_path / "bad.csv").write_text("x,maybe\n")
    with pytest.raises(ValueError, match="bad.csv:1: expected identifier,True|False"):
        read_submission("nlvr2", tmp_path / "bad.csv")


def test_answer_head_transfer_copies_exactly_the_mapped_rows():
    from model import LxmertConfig, LxmertForQuestionAnswering
    from model.tasks import transfer_answer_rows

    table = ["red", "2", "dog", "gray", "yes", "kite"]  # the pre-training answer table (normalised)
    labels = ["Two", "the dog", "zebra", "grey", "yes.", "Red", "umbrella"]
    rows = map_labels(labels, table)
    assert rows == {0: 1, 1: 2, 3: 3, 4: 4, 5: 0}  # "zebra" and "umbrella" are not in the table

    torch.manual_seed(0)
    config = LxmertConfig.from_preset("tiny", num_qa_labels=len(labels))
    model = LxmertForQuestionAnswering(config)
    before = model.answer_head.out.weight.detach().clone(), model.answer_head.out.bias.detach().clone()
    weight, bias = torch.randn(len(table), 2 * config.hidden_size), torch.randn(len(table))
    transfer_answer_rows(model, weight, bias, rows)
    after = model.answer_head.out.weight.detach(), model.answer_head.out.bias.detach()
    for label in range(len(labels)):
        if label in rows:
            assert torch.equal(after[0][label], weight[rows[label]]) and after[1][label] == bias[rows[label]]
        else:
            assert torch.equal(after[0][label], before[0][label]) and after[1][label] == before[1][label]
    with pytest.raises(ValueError, match="rows of size 5 cannot fill rows of size"):
        transfer_answer_rows(model, torch.zeros(6, 5), torch.zeros(6), rows)


def test_finetune_config_recipes_and_errors(tmp_path):
    from launcher.config import load_finetune_config

    vqa = load_finetune_config(None, ["data.labels=l.json", "data.train=[t.json]"], task="vqa")
    assert (vqa.train.lr, vqa.train.epochs, vqa.train.global_batch_size, vqa.train.warmup_ratio,
            vqa.train.gradient_clipping, vqa.train.micro_batch_size) == (5e-5, 4, 32, 0.1, 5.0, 0)
    assert load_finetune_config(None, ["data.labels=l.json", "data.train=[t]"], task="gqa").train.lr == 1e-5
    nlvr2 = load_finetune_config(None, ["data.train=[t]", "train.lr=2e-5", "train.epochs=1"], task="nlvr2")
    assert (nlvr2.train.lr, nlvr2.train.epochs, nlvr2.task) == (2e-5, 1, "nlvr2")
    with pytest.raises(ValueError, match="task must be one of vqa, gqa, nlvr2, got 'okvqa'"):
        load_finetune_config(None, ["task=okvqa"])
    with pytest.raises(ValueError, match="data.labels: the gqa label vocabulary"):
        load_finetune_config(None, ["data.train=[t]"], task="gqa")
    with pytest.raises(ValueError, match="unknown config field.*data.answers"):
        load_finetune_config(None, ["data.answers=x"], task="nlvr2")
