"""mIoU and pixel accuracy from an accumulated confusion matrix, against hand-counted cases."""

import math

import numpy as np
import pytest
import torch
from datasets import Dataset

from hf_contrastive.data.segmentation import IGNORE_INDEX, SEGMENTATION_FEATURES, SegmentationCollator
from hf_contrastive.evaluation.segmentation import (
    SegmentationEvaluator,
    SegmentationMetrics,
    confusion_matrix,
    metrics_from_confusion,
)

# 4 classes; class 3 appears in neither target nor prediction; class 2 is predicted but never the target.
TARGET = torch.tensor([[0, 0, 1, 1], [0, 1, 1, IGNORE_INDEX]])
PREDICTION = torch.tensor([[0, 1, 1, 1], [2, 1, 0, 3]])  # the 3 sits on an ignored pixel: counts nowhere


def test_confusion_matrix_counts_target_rows_and_prediction_columns_skipping_ignored_pixels():
    expected = torch.tensor([[1, 1, 1, 0], [1, 3, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    assert torch.equal(confusion_matrix(PREDICTION, TARGET, num_classes=4), expected)


def test_miou_by_hand_leaves_out_classes_absent_from_target_and_prediction():
    metrics = metrics_from_confusion(confusion_matrix(PREDICTION, TARGET, 4), ["bg", "a", "b", "c"])
    # class 0: TP 1, FP 1, FN 2 -> 1/4; class 1: TP 3, FP 1, FN 1 -> 3/5; class 2: TP 0, FP 1 -> 0; class 3: 0/0
    assert metrics["iou_bg"] == pytest.approx(0.25)
    assert metrics["iou_a"] == pytest.approx(0.6)
    assert metrics["iou_b"] == 0.0
    assert math.isnan(metrics["iou_c"])
    assert metrics["mean_iou"] == pytest.approx((0.25 + 0.6 + 0.0) / 3)
    assert metrics["pixel_accuracy"] == pytest.approx(4 / 7)
    assert metrics["mean_accuracy"] == pytest.approx((1 / 3 + 3 / 4) / 2)  # classes with target pixels only


def test_metrics_accumulated_over_batches_equal_one_pass_over_the_set():
    generator = torch.Generator().manual_seed(0)
    targets = torch.randint(0, 5, (6, 8, 8), generator=generator)
    targets[targets == 4] = IGNORE_INDEX
    logits = torch.randn(6, 4, 8, 8, generator=generator)
    accumulated = SegmentationMetrics(4)
    for start, stop in ((0, 2), (2, 5), (5, 6)):
        accumulated.update(logits[start:stop], targets[start:stop])  # logits: argmax over the class axis
    whole = metrics_from_confusion(confusion_matrix(logits.argmax(1), targets, 4))
    assert accumulated.compute() == pytest.approx(whole, nan_ok=True)


def test_perfect_prediction_scores_one():
    metrics = SegmentationMetrics(4)
    metrics.update(TARGET.clamp(max=3), TARGET)
    assert metrics.compute()["mean_iou"] == 1.0 and metrics.compute()["pixel_accuracy"] == 1.0


def test_out_of_range_targets_and_shape_mismatch_are_refused():
    with pytest.raises(ValueError, match=r"outside \[0, 4\)"):
        confusion_matrix(PREDICTION, TARGET.masked_fill(TARGET == 1, 7), 4)
    with pytest.raises(ValueError, match="differ in shape"):
        confusion_matrix(PREDICTION[:1], TARGET, 4)
    with pytest.raises(ValueError, match="class_names has 2 names"):
        SegmentationMetrics(4, class_names=["a", "b"])


def test_evaluator_collates_rows_and_prefixes_metrics():
    masks = [np.array([[0, 1], [2, 2]], dtype=np.uint8), np.array([[1, 1], [0, IGNORE_INDEX]], dtype=np.uint8)]
    images = [np.full((2, 2), 9, dtype=np.uint8)] * 2
    rows = Dataset.from_dict({"image": images, "label": masks}, features=SEGMENTATION_FEATURES)
    evaluator = SegmentationEvaluator(rows, SegmentationCollator(num_classes=3), batch_size=1, name="toy")
    calls = []

    def predict(pixel_values):  # always class 1: IoU(0) = 0, IoU(1) = 3/7, IoU(2) = 0
        calls.append(pixel_values.shape)
        return torch.tensor([0.0, 1.0, 0.0]).view(1, 3, 1, 1).expand(pixel_values.shape[0], 3, 2, 2)

    metrics = evaluator(predict)
    assert calls == [(1, 3, 2, 2)] * 2
    assert metrics["toy_mean_iou"] == pytest.approx((3 / 7) / 3)
    assert metrics["toy_pixel_accuracy"] == pytest.approx(3 / 7)
