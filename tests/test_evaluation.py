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


def test_nlvr2_consistency_groups_a_sentence_across_its_image_pairs():
    """The official grouping (nlvr2/eval/metrics.py): identifiers are split-set-pair-sentence, and the
    examples of one sentence are those equal but for the pair field. By hand:
    sentence dev-850-?-0: pairs 0, 1, 2, all right        -> consistent
    sentence dev-850-?-1: pair 0, wrong                   -> not
    sentence dev-851-?-0: pair 0 right, pair 1 wrong      -> not
    sentence dev-852-?-2: pair 3, right                   -> consistent
    accuracy 5/7, consistency 2/4 (grouping by the first three fields instead would give 4/6)."""
    labels = {"dev-850-0-0": 1, "dev-850-1-0": 0, "dev-850-2-0": 1, "dev-850-0-1": 0, "dev-851-0-0": 1,
              "dev-851-1-0": 1, "dev-852-3-2": 0}
    preds = {"dev-850-0-0": 1, "dev-850-1-0": 0, "dev-850-2-0": 1, "dev-850-0-1": 1, "dev-851-0-0": 1,
             "dev-851-1-0": 0, "dev-852-3-2": 0}
    rows = [{"identifier": k, "label": v} for k, v in labels.items()]
    result = nlvr2_scores(preds, rows)
    assert result["accuracy"] == pytest.approx(5 / 7)
    assert result["consistency"] == pytest.approx(2 / 4)
    with pytest.raises(ValueError, match="'dev-850-0': expected split-set-pair-sentence"):
        nlvr2_scores({"dev-850-0": 1}, [{"identifier": "dev-850-0", "label": 1}])


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


def test_answer_head_transfer_copies_the_mapped_rows_and_zeroes_the_rest():
    from model import LxmertConfig, LxmertForQuestionAnswering
    from model.tasks import transfer_answer_rows

    table = ["red", "2", "dog", "gray", "yes", "kite"]  # the pre-training answer table (normalised)
    labels = ["Two", "the dog", "zebra", "grey", "yes.", "Red", "umbrella"]
    rows = map_labels(labels, table)
    assert rows == {0: 1, 1: 2, 3: 3, 4: 4, 5: 0}  # "zebra" and "umbrella" are not in the table

    torch.manual_seed(0)
    config = LxmertConfig.from_preset("tiny", num_qa_labels=len(labels))
    model = LxmertForQuestionAnswering(config)
    assert model.answer_head.out.weight.abs().sum() > 0  # freshly initialised: not zero before
    weight, bias = torch.randn(len(table), 2 * config.hidden_size), torch.randn(len(table))
    transfer_answer_rows(model, weight, bias, rows)
    after = model.answer_head.out.weight.detach(), model.answer_head.out.bias.detach()
    for label in range(len(labels)):
        if label in rows:
            assert torch.equal(after[0][label], weight[rows[label]]) and after[1][label] == bias[rows[label]]
        else:  # a label the pre-training table lacks: zero weight and bias (the original's load_lxmert_qa)
            assert not after[0][label].any() and after[1][label] == 0
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
    with pytest.raises(ValueError, match="train.compile is for pre-training"):
        load_finetune_config(None, ["data.train=[t]", "train.compile=true"], task="nlvr2")


def test_synthetic_nlvr2_shows_each_sentence_with_several_image_pairs(tmp_path):
    """The synthetic world follows NLVR2's identifiers, so that its consistency means something:
    each sentence with NLVR2_PAIRS image pairs (one text, distinct pairs), labelled pair by pair."""
    import json
    from collections import defaultdict

    from data.evaluation import sentence_of
    from data.synth import NLVR2_PAIRS, write_world

    write_world(tmp_path / "w", images=40, feat_dim=8, regions=10, progress=False)
    for split in ("train", "valid"):
        rows = json.loads((tmp_path / "w" / "nlvr2" / f"{split}.json").read_text())
        groups = defaultdict(list)
        for row in rows:
            groups[sentence_of(row["identifier"])].append(row)
        assert NLVR2_PAIRS >= 2 and all(len(g) == NLVR2_PAIRS for g in groups.values())
        assert len(groups) == len(rows) // NLVR2_PAIRS
        for group in groups.values():
            assert len({r["sent"] for r in group}) == 1 and len({(r["img0"], r["img1"]) for r in group}) == NLVR2_PAIRS
        mixed = sum(len({r["label"] for r in g}) == 2 for g in groups.values())
        assert 0 < mixed < len(groups), mixed  # consistency differs from accuracy


def test_answer_prior_is_each_question_types_most_frequent_training_answer():
    from data.evaluation import prior_predictions, question_type

    train = [
        {"question_id": 1, "sent": "What color is the cup?", "question_type": "what color", "label": {"red": 1.0}},
        {"question_id": 2, "sent": "What color is the hat?", "question_type": "what color", "label": {"red": 0.3, "blue": 0.9}},
        {"question_id": 3, "sent": "What color is the car?", "question_type": "what color", "label": {"blue": 1.0}},
        {"question_id": 4, "sent": "What color is it?", "question_type": "what color", "label": {"blue": 1.0, "sky": 1.0}},
        {"question_id": 5, "sent": "How many dogs?", "label": {"2": 1.0}},  # no question_type: first two words
        {"question_id": 6, "sent": "How many cats?", "label": {"2": 0.6, "3": 0.3}},
        {"question_id": 7, "sent": "Is there a cat?", "label": {"outside": 1.0}},  # not a label: ignored
    ]
    assert question_type(train[4]) == "how many" and question_type(train[0]) == "what color"
    valid = [{"question_id": 10, "sent": "What color is the sky?", "question_type": "what color", "label": {"blue": 1.0}},
             {"question_id": 11, "sent": "how many birds ?", "label": {"2": 1.0}},
             {"question_id": 12, "sent": "Where is it?", "label": {"2": 0.3}},  # unseen type: the most frequent overall
             {"question_id": 13, "sent": "Is there a cat?", "label": {"no": 1.0}}]
    labels = {"red", "blue", "2", "3", "no"}  # "sky" and "outside" are not labels
    predictions = prior_predictions("vqa", train, valid, labels)
    # what color: blue 3 (questions 2, 3, 4) vs red 1; how many: 2; overall: blue (3) over 2 (2)
    assert predictions == {10: "blue", 11: "2", 12: "blue", 13: "blue"}
    assert scores("vqa", predictions, valid)["accuracy"] == (1.0 + 1.0 + 0 + 0) / 4

    nlvr2_train = [{"identifier": f"train-{k}-0-0", "label": k % 3 != 0} for k in range(9)]  # 6 True, 3 False
    nlvr2_valid = [{"identifier": "dev-1-0-0", "label": 1}, {"identifier": "dev-1-1-0", "label": 0}]
    assert prior_predictions("nlvr2", nlvr2_train, nlvr2_valid) == {"dev-1-0-0": 1, "dev-1-1-0": 1}
    assert prior_predictions("gqa", train[6:], valid, labels) == {}  # no training answer among the labels: no prior
    assert prior_predictions("nlvr2", [], nlvr2_valid) == {}
