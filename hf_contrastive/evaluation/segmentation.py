"""Semantic-segmentation metrics: mIoU, pixel accuracy and per-class IoU from one confusion matrix over a whole set.

The matrix is accumulated over batches (``SegmentationMetrics.update``), so the numbers are those of the whole
validation set, as mmseg reports them, not a mean of per-batch values. ``evaluate``'s ``"mean_iou"`` module needs
the Hub to load, so the library computes the same definition itself:

.. math::

    \\mathrm{IoU}_k = \\frac{TP_k}{TP_k + FP_k + FN_k}, \\qquad
    \\mathrm{mIoU} = \\frac{1}{|\\mathcal{K}|} \\sum_{k \\in \\mathcal{K}} \\mathrm{IoU}_k, \\qquad
    \\mathrm{pixel\\ accuracy} = \\frac{\\sum_k TP_k}{\\sum_k (TP_k + FN_k)}

where ``K`` holds the classes present in the target or the prediction (a class absent from both has a 0/0 IoU and
is left out, mmseg's ``nanmean``). Pixels whose target is ``ignore_index`` (255) count nowhere.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..data.segmentation import IGNORE_INDEX, SegmentationCollator


def confusion_matrix(
    predictions: torch.Tensor, targets: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Counts [K, K] (row: target class, column: predicted class) of label maps ``predictions``, ``targets`` [...].

    Pixels whose target is ``ignore_index`` are dropped; any other target outside ``[0, K)`` is an error.
    """
    if predictions.shape != targets.shape:
        raise ValueError(f"predictions {tuple(predictions.shape)} and targets {tuple(targets.shape)} differ in shape.")
    keep = targets != ignore_index
    targets, predictions = targets[keep].long(), predictions[keep].long()
    if targets.numel() and (targets.min() < 0 or targets.max() >= num_classes):
        raise ValueError(
            f"targets hold values outside [0, {num_classes}) besides ignore_index {ignore_index}: "
            f"min {int(targets.min())}, max {int(targets.max())}."
        )
    if predictions.numel() and (predictions.min() < 0 or predictions.max() >= num_classes):
        raise ValueError(f"predictions hold class ids outside [0, {num_classes}).")
    counts = torch.bincount(targets * num_classes + predictions, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).cpu()


def metrics_from_confusion(confusion: torch.Tensor, class_names: Sequence[str] | None = None) -> dict[str, float]:
    """``mean_iou``, ``pixel_accuracy``, ``mean_accuracy`` and ``iou_<class>`` from a confusion matrix [K, K].

    A class absent from both targets and predictions (union 0) has no IoU and stays out of the mean; a class absent
    from the targets has no accuracy and stays out of ``mean_accuracy``. Per-class IoUs are NaN for such classes.
    """
    confusion = confusion.double()
    true_positives = confusion.diag()
    target_pixels = confusion.sum(dim=1)
    union = target_pixels + confusion.sum(dim=0) - true_positives
    iou = true_positives / union  # 0/0 = NaN marks a class absent from both
    accuracy = true_positives / target_pixels
    names = class_names or [str(k) for k in range(confusion.shape[0])]
    total = target_pixels.sum()
    metrics = {
        "mean_iou": float(iou.nanmean()),
        "pixel_accuracy": float(true_positives.sum() / total) if total > 0 else float("nan"),
        "mean_accuracy": float(accuracy.nanmean()),
    }
    metrics.update({f"iou_{name}": float(value) for name, value in zip(names, iou)})
    return metrics


class SegmentationMetrics:
    """Accumulate a confusion matrix over batches, then ``compute()`` the set's mIoU and accuracies.

    ``update(predictions, targets)`` takes label maps [B, H, W] or logits [B, K, H, W] (argmax over K) and targets
    [B, H, W]; ``ignore_index`` pixels are skipped.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX, class_names: Sequence[str] | None = None):
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"class_names has {len(class_names)} names for num_classes={num_classes}.")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = list(class_names) if class_names is not None else None
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)

    def update(self, predictions: torch.Tensor, targets: torch.Tensor) -> None:
        if predictions.dim() == targets.dim() + 1:
            predictions = predictions.argmax(dim=1)
        self.confusion += confusion_matrix(predictions, targets, self.num_classes, self.ignore_index)

    def compute(self) -> dict[str, float]:
        return metrics_from_confusion(self.confusion, self.class_names)


class SegmentationEvaluator:
    """mIoU of a segmenter on a labelled set: ``evaluator(predict) -> {"<name>_mean_iou": ..., ...}``.

    ``predict(pixel_values [B, 3, H, W]) -> logits [B, K, H, W]`` runs the current model (no grad); rows are
    collated by ``collator`` (a :class:`~hf_contrastive.data.segmentation.SegmentationCollator`), which also checks
    them. Metrics are prefixed with ``name``.
    """

    def __init__(
        self,
        dataset,
        collator: SegmentationCollator,
        batch_size: int = 32,
        name: str = "segmentation",
        class_names: Sequence[str] | None = None,
    ):
        self.dataset = dataset
        self.collator = collator
        self.batch_size = batch_size
        self.name = name
        self.class_names = class_names

    def __call__(self, predict: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, float]:
        metrics = SegmentationMetrics(self.collator.num_classes, self.collator.ignore_index, self.class_names)
        for start in range(0, len(self.dataset), self.batch_size):
            batch = self.collator(
                list(self.dataset.select(range(start, min(start + self.batch_size, len(self.dataset)))))
            )
            with torch.no_grad():
                logits = predict(batch["pixel_values"])
            metrics.update(logits.argmax(dim=1).cpu(), batch["labels"])
        return {f"{self.name}_{key}": value for key, value in metrics.compute().items()}
