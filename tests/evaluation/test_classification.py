"""LabelAccuracyEvaluator: nearest label description by cosine, accuracy and macro-F1 on hand-made embeddings."""

import numpy as np
import pytest
import torch

from hf_contrastive.evaluation.classification import (
    LabelAccuracyEvaluator,
    compute_classification_metrics,
    nearest_label,
)

DESCRIPTIONS = {"a": "label a", "b": "label b", "c": "label c"}
VECTORS = {
    "label a": [3.0, 0.0, 0.0],  # a long label vector: cosine, not dot, decides
    "label b": [0.0, 1.0, 0.0],
    "label c": [0.0, 0.0, 1.0],
    "t0": [10.0, 1.0, 0.0],  # -> a
    "t1": [0.2, 0.9, 0.1],  # -> b
    "t2": [0.4, 0.9, 0.0],  # -> b (the dot product would pick a: 1.2 > 0.9)
    "t3": [0.0, 0.1, 0.3],  # -> c
}


def encode(texts):
    return torch.tensor([VECTORS[t] for t in texts])


def test_accuracy_and_macro_f1_match_hand_computation():
    # gold a, a, b, c; predicted a, b, b, c. F1: a = 2/3 (P 1, R 1/2), b = 2/3 (P 1/2, R 1), c = 1.
    evaluator = LabelAccuracyEvaluator(["t0", "t1", "t2", "t3"], ["a", "a", "b", "c"], DESCRIPTIONS, name="topics")
    metrics = evaluator(encode)
    assert metrics == pytest.approx({"topics_accuracy": 0.75, "topics_macro_f1": (2 / 3 + 2 / 3 + 1) / 3})
    assert evaluator.predict(encode) == ["a", "b", "b", "c"]


def test_batching_does_not_change_the_result():
    texts, labels = ["t0", "t1", "t2", "t3"], ["a", "a", "b", "c"]
    calls = []

    def counting_encode(batch):
        calls.append(len(batch))
        return encode(batch).numpy()  # arrays work as well as tensors

    one_by_one = LabelAccuracyEvaluator(texts, labels, DESCRIPTIONS, batch_size=1)(counting_encode)
    assert calls == [1] * 7  # 4 texts + 3 descriptions
    assert one_by_one == LabelAccuracyEvaluator(texts, labels, DESCRIPTIONS)(encode)


def test_a_label_no_text_carries_is_still_a_candidate():
    # t3 is gold "b" but nearest to "label c": an unseen label can win (zero-shot candidates).
    metrics = LabelAccuracyEvaluator(["t3"], ["b"], DESCRIPTIONS)(encode)
    assert metrics["classification_accuracy"] == 0.0


def test_nearest_label_breaks_ties_toward_the_first_label():
    texts = np.array([[1.0, 1.0], [0.0, 2.0]])
    labels = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert nearest_label(texts, labels).tolist() == [0, 1]


def test_metrics_agree_with_a_perfect_and_a_constant_classifier():
    gold = [0, 1, 2, 2]
    assert compute_classification_metrics(gold, gold) == {"accuracy": 1.0, "macro_f1": 1.0}
    constant = compute_classification_metrics([2, 2, 2, 2], gold)
    assert constant["accuracy"] == 0.5
    assert constant["macro_f1"] == pytest.approx((0 + 0 + 2 / 3) / 3)


@pytest.mark.parametrize(
    ("texts", "labels", "message"),
    [(["t0"], ["z"], "no description"), (["t0", "t1"], ["a"], "2 texts but 1 labels"), ([], [], "at least one")],
)
def test_bad_inputs_are_refused(texts, labels, message):
    with pytest.raises(ValueError, match=message):
        LabelAccuracyEvaluator(texts, labels, DESCRIPTIONS)


def test_wrong_encode_output_shape_is_reported():
    evaluator = LabelAccuracyEvaluator(["t0", "t1"], ["a", "b"], DESCRIPTIONS)
    with pytest.raises(ValueError, match="expected \\[N, D\\]"):
        evaluator(lambda texts: torch.zeros(1, 3))
