"""Zero-shot image classification and image-text retrieval for CLIP-style models (the evaluator contract).

Both evaluators are called with ``embed(column, values) -> Tensor[n, D]`` (``MultiModalTrainer.embed_values``, or
any function embedding raw images / texts) and return ``{metric: float}``. Scores are cosine similarities.

- Zero-shot classification (CLIP): the class embedding is the mean of the class's L2-normalised prompt embeddings,
  renormalised; an image is assigned the classes of highest cosine. ``top{k}_accuracy`` = fraction of images whose
  label is among the k best classes.
- Retrieval: image ``i`` and text ``i`` are a pair; ``image_to_text_recall@k`` = fraction of images whose text is
  in the top k of all texts (and the reverse).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .ranking_metrics import recall

Embed = Callable[[str, list], torch.Tensor]


def zero_shot_classifier(embed: Embed, class_prompts: Sequence[Sequence[str]], column: str = "text") -> torch.Tensor:
    """Class embeddings [C, D]: ``normalize(mean_p normalize(embed(prompt_p)))`` for each class's prompts."""
    counts = [len(prompts) for prompts in class_prompts]
    if not counts or min(counts) == 0:
        raise ValueError("class_prompts needs at least one class, and every class at least one prompt.")
    prompts = [prompt for class_prompt_list in class_prompts for prompt in class_prompt_list]
    embeddings = F.normalize(embed(column, prompts).float(), dim=-1)
    means = torch.stack([chunk.mean(dim=0) for chunk in embeddings.split(counts)])
    return F.normalize(means, dim=-1)


def hits_at(scores: torch.Tensor, targets: torch.Tensor, ks: Sequence[int]) -> dict[int, float]:
    """Fraction of rows of ``scores`` [n, m] whose ``targets`` [n] column is among the k highest, for each k <= m."""
    depth = min(max(ks), scores.shape[1])
    ranked_relevance = (scores.topk(depth, dim=1).indices == targets[:, None]).float()
    ones = torch.ones(len(targets))
    return {k: float(recall(ranked_relevance, ones, k).mean()) for k in ks if k <= scores.shape[1]}


class ZeroShotClassificationEvaluator:
    """Top-k zero-shot accuracy of images against prompt-averaged class embeddings.

    Args:
        images: raw images (anything the image column's processor takes).
        labels: class index of every image (index into ``class_prompts``).
        class_prompts: for each class, its prompts (e.g. ``images.class_prompts(range(10))``).
        top_k: the accuracies reported (a k above the class count is left out).
        per_class: also report ``class_{c}_accuracy`` (top-1 within class c).
        image_column / text_column: the columns ``embed`` is called with.
        name: prefix of the metric names.
    """

    def __init__(
        self,
        images: Sequence[Any],
        labels: Sequence[int],
        class_prompts: Sequence[Sequence[str]],
        top_k: Sequence[int] = (1, 5),
        per_class: bool = False,
        image_column: str = "image",
        text_column: str = "text",
        name: str = "zero_shot",
    ) -> None:
        if len(images) != len(labels):
            raise ValueError(f"images and labels differ in length: {len(images)} vs {len(labels)}.")
        if labels and not 0 <= min(labels) <= max(labels) < len(class_prompts):
            raise ValueError(f"labels must index class_prompts (0..{len(class_prompts) - 1}).")
        self.images, self.labels, self.class_prompts = list(images), torch.as_tensor(list(labels)), class_prompts
        self.top_k, self.per_class = tuple(top_k), per_class
        self.image_column, self.text_column, self.name = image_column, text_column, name

    def __call__(self, embed: Embed) -> dict[str, float]:
        classifier = zero_shot_classifier(embed, self.class_prompts, self.text_column)
        images = F.normalize(embed(self.image_column, self.images).float(), dim=-1)
        scores = images @ classifier.T
        metrics = {f"{self.name}_top{k}_accuracy": v for k, v in hits_at(scores, self.labels, self.top_k).items()}
        if self.per_class:
            correct = scores.argmax(dim=1) == self.labels
            for label in self.labels.unique().tolist():
                metrics[f"{self.name}_class_{label}_accuracy"] = float(correct[self.labels == label].float().mean())
        return metrics


class ImageTextRetrievalEvaluator:
    """Image-to-text and text-to-image Recall@k of paired images and texts (row i with row i)."""

    def __init__(
        self,
        images: Sequence[Any],
        texts: Sequence[str],
        ks: Sequence[int] = (1, 5, 10),
        image_column: str = "image",
        text_column: str = "text",
        name: str = "retrieval",
    ) -> None:
        if len(images) != len(texts):
            raise ValueError(f"images and texts must be pairs: {len(images)} images vs {len(texts)} texts.")
        self.images, self.texts, self.ks = list(images), list(texts), tuple(ks)
        self.image_column, self.text_column, self.name = image_column, text_column, name

    def __call__(self, embed: Embed) -> dict[str, float]:
        images = F.normalize(embed(self.image_column, self.images).float(), dim=-1)
        texts = F.normalize(embed(self.text_column, self.texts).float(), dim=-1)
        scores = images @ texts.T
        targets = torch.arange(len(self.texts))
        metrics = {}
        for direction, direction_scores in (("image_to_text", scores), ("text_to_image", scores.T)):
            for k, value in hits_at(direction_scores, targets, self.ks).items():
                metrics[f"{self.name}_{direction}_recall@{k}"] = value
        return metrics
