"""Base-to-new evaluation of CLIP prompt learners: top-1 accuracy on base and novel classes and their harmonic mean.

As in CoOp / CoCoOp, each split is classified among its own classes only (base images against the base class
names, novel images against the novel names), and ``HM = 2 B N / (B + N)``. A classifier is any callable
``classify(pixel_values [B, 3, S, S], classnames: list[str]) -> logits [B, C]``: :class:`ZeroShotClassifier`
(frozen CLIP with hand-written prompts, the baseline; build its
class embeddings with :func:`hf_contrastive.models.mocoop.hard_prompt_features`) or a prompt learner such as
``lambda pixels, names: mocoop(pixels, classnames=names).logits``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Classifier = Callable[[torch.Tensor, list[str]], torch.Tensor]


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in percent of ``logits`` [N, C] against ``labels`` [N]."""
    return 100.0 * (logits.argmax(dim=-1) == labels.to(logits.device)).float().mean().item()


def harmonic_mean(base: float, novel: float) -> float:
    """``2 B N / (B + N)``; 0 when both are 0."""
    return 2.0 * base * novel / (base + novel) if base + novel > 0 else 0.0


@dataclass
class ClassSplit:
    """Images of one class split: ``pixel_values`` [N, 3, S, S], ``labels`` [N] indexing ``classnames``."""

    pixel_values: torch.Tensor
    labels: torch.Tensor
    classnames: list[str]

    @classmethod
    def from_labelled(
        cls, pixel_values: torch.Tensor, labels: Sequence[int], class_ids: Sequence[int], names: Sequence[str]
    ) -> ClassSplit:
        """The rows whose label is in ``class_ids`` (dataset labels), relabelled 0..len(class_ids)-1.

        ``names[label]`` is the class name of a dataset label.
        """
        labels = torch.as_tensor(list(labels))
        position = {class_id: index for index, class_id in enumerate(class_ids)}
        keep = torch.tensor([int(label) in position for label in labels], dtype=torch.bool)
        local = torch.tensor([position[int(label)] for label in labels[keep]], dtype=torch.long)
        return cls(pixel_values[keep], local, [names[class_id] for class_id in class_ids])


@torch.no_grad()
def split_accuracy(classify: Classifier, split: ClassSplit, batch_size: int = 256) -> float:
    """Top-1 accuracy (%) of ``classify`` on ``split`` among the split's own classes."""
    logits = torch.cat(
        [
            classify(split.pixel_values[start : start + batch_size], split.classnames).float().cpu()
            for start in range(0, len(split.labels), batch_size)
        ]
    )
    return accuracy(logits, split.labels)


@dataclass
class BaseToNewEvaluator:
    """``evaluator(classify) -> {"base_accuracy", "novel_accuracy", "harmonic_mean"}`` (percent)."""

    base: ClassSplit
    novel: ClassSplit
    batch_size: int = 256

    def __call__(self, classify: Classifier) -> dict[str, float]:
        base = split_accuracy(classify, self.base, self.batch_size)
        novel = split_accuracy(classify, self.novel, self.batch_size)
        return {"base_accuracy": base, "novel_accuracy": novel, "harmonic_mean": harmonic_mean(base, novel)}


class ZeroShotClassifier:
    """Zero-shot CLIP: ``logits = s <normalize(f(x)), W_c>`` with ``W_c`` the class's normalised mean prompt feature.

    Args:
        encode_images: ``pixel_values -> [B, D]`` image features (normalised here).
        class_embeddings: normalised class features [C_all, D], one per name of ``classnames`` (CLIP's prompt
            ensembling: ``normalize(hard_prompt_features(...).mean(0))``).
        classnames: the names the rows of ``class_embeddings`` belong to.
        logit_scale: ``s`` (CLIP's ``exp(logit_scale)``; it does not change the accuracy).
    """

    def __init__(
        self,
        encode_images: Callable[[torch.Tensor], torch.Tensor],
        class_embeddings: torch.Tensor,
        classnames: Sequence[str],
        logit_scale: float = 1.0,
    ) -> None:
        self.encode_images = encode_images
        self.class_embeddings = class_embeddings
        self.index = {name: row for row, name in enumerate(classnames)}
        self.logit_scale = logit_scale

    def __call__(self, pixel_values: torch.Tensor, classnames: list[str]) -> torch.Tensor:
        unknown = [name for name in classnames if name not in self.index]
        if unknown:
            raise ValueError(f"No class embedding for {unknown}; known classes: {list(self.index)}.")
        weights = self.class_embeddings[[self.index[name] for name in classnames]]
        image_features = F.normalize(self.encode_images(pixel_values), dim=-1)
        return self.logit_scale * image_features @ weights.to(image_features).T
