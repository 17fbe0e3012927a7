"""Evaluate embeddings as a classifier: each text takes the label whose description embedding is nearest (cosine).

evaluator = LabelAccuracyEvaluator(texts, labels, {"pos": "a positive review", "neg": "a negative review"})
evaluator(lambda texts: model.encode(texts, tokenizer))
# {"classification_accuracy": 0.83..., "classification_macro_f1": 0.82...}

This is the zero-shot classifier of input-label contrast (the primer's §2.8): no trained head, so the same call
scores an untrained encoder (zero-shot baseline) and one trained with ``InputLabelContrast`` (few-shot).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

from .sts import EncodeFn, as_float64, encode_texts


def nearest_label(text_embeddings, label_embeddings) -> np.ndarray:
    """Index of the most cosine-similar label for every text: ``argmax_l cos(t_i, g_l)``, ties to the first label.

    text_embeddings: [N, D]; label_embeddings: [L, D] (torch tensors or arrays). Returns int64 [N].
    """
    texts, labels = _unit_rows(text_embeddings), _unit_rows(label_embeddings)
    if texts.shape[1] != labels.shape[1]:
        raise ValueError(f"Text embeddings have {texts.shape[1]} dimensions, label embeddings {labels.shape[1]}.")
    return (texts @ labels.T).argmax(axis=1)


def compute_classification_metrics(predicted: Sequence[int], gold: Sequence[int]) -> dict[str, float]:
    """Accuracy and macro-F1 (sklearn) of ``predicted`` against ``gold`` label ids.

    Macro-F1 averages the F1 of every class present in ``gold`` or ``predicted`` (sklearn's default), with 0 for
    a class that is never predicted correctly (``zero_division=0``).
    """
    return {
        "accuracy": float(accuracy_score(gold, predicted)),
        "macro_f1": float(f1_score(gold, predicted, average="macro", zero_division=0)),
    }


class LabelAccuracyEvaluator:
    """Classify texts by their nearest label description: call it with ``encode_fn(list[str]) -> [N, D]``.

    Returns ``{f"{name}_accuracy": float, f"{name}_macro_f1": float}``; ``ContrastiveTrainer(evaluator=...)`` runs
    it at each evaluation. Texts and descriptions are encoded in batches of ``batch_size``.

    Args:
        texts: the N texts to classify.
        labels: their gold labels (N values, each a key of ``label_descriptions``).
        label_descriptions: label -> description text; every described label is a candidate, including labels no
            text carries (that is how unseen labels are scored zero-shot).
        name: prefix of the metric keys.
        batch_size: how many texts go to one ``encode_fn`` call.
    """

    def __init__(
        self,
        texts: Sequence[str],
        labels: Sequence[Hashable],
        label_descriptions: Mapping[Hashable, str],
        name: str = "classification",
        batch_size: int = 64,
    ):
        if len(texts) != len(labels):
            raise ValueError(f"Got {len(texts)} texts but {len(labels)} labels.")
        if not texts:
            raise ValueError("LabelAccuracyEvaluator needs at least one text.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.label_names = list(label_descriptions)
        index = {label: i for i, label in enumerate(self.label_names)}
        unknown = sorted({repr(label) for label in labels if label not in index})
        if unknown:
            raise ValueError(f"Labels {unknown} have no description; described labels: {self.label_names}.")
        self.texts = list(texts)
        self.gold = np.array([index[label] for label in labels], dtype=np.int64)
        self.descriptions = [label_descriptions[label] for label in self.label_names]
        self.name = name
        self.batch_size = batch_size

    def predict(self, encode_fn: EncodeFn) -> list[Hashable]:
        """The predicted label of every text."""
        return [self.label_names[i] for i in self._predict_ids(encode_fn)]

    def __call__(self, encode_fn: EncodeFn) -> dict[str, float]:
        """Encode texts and descriptions with ``encode_fn``; return the prefixed accuracy and macro-F1."""
        metrics = compute_classification_metrics(self._predict_ids(encode_fn), self.gold)
        return {f"{self.name}_{key}": value for key, value in metrics.items()}

    def _predict_ids(self, encode_fn: EncodeFn) -> np.ndarray:
        return nearest_label(
            encode_texts(self.texts, encode_fn, self.batch_size),
            encode_texts(self.descriptions, encode_fn, self.batch_size),
        )


def _unit_rows(embeddings) -> np.ndarray:
    """Rows scaled to unit length (rows of norm below 1e-8 are divided by 1e-8, as in the STS cosine)."""
    matrix = as_float64(embeddings)
    if matrix.ndim != 2:
        raise ValueError(f"Expected an [N, D] embedding matrix, got shape {matrix.shape}.")
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-8)
