"""Probe frozen embeddings: linear and k-NN probes (scikit-learn), alignment, uniformity and effective rank.

evaluator = ProbeEvaluator(train_vectors, train_labels, test_vectors, test_labels, column="x")
evaluator(lambda column, values: model.embed_values(column, values))
# {"probe_linear_accuracy": 0.95, "probe_knn_accuracy": 0.96, "probe_uniformity": -3.1, "probe_effective_rank": 41.2}

These are the representation-quality measures of the issue-7 objectives (CACR, Hydra, SupReMix, SepCLR, cMIM): a
probe trains only a small head on embeddings of a frozen encoder, so it scores the representation, not a fine-tune.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import mean_absolute_error, r2_score
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .classification import compute_classification_metrics
from .sts import as_float64

EmbedFn = Callable[[str, list], Any]  # embed(column, values) -> torch.Tensor or array [n, D]

TASKS = ("classification", "regression")


def linear_probe(
    train_X,
    train_y,
    test_X,
    test_y,
    task: str = "classification",
    regularization: float = 1.0,
    max_iter: int = 2000,
) -> dict[str, float]:
    """Fit a linear head on standardised train embeddings and score it on the test embeddings.

    ``task="classification"``: multinomial logistic regression with inverse L2 strength ``C = regularization``;
    returns ``{"accuracy", "macro_f1"}``. ``task="regression"``: Ridge with ``alpha = regularization`` on continuous
    targets; returns ``{"r2", "mae"}``. Features are standardised with the train mean and standard deviation (a
    scale-free probe: embeddings of different objectives differ in scale).

    train_X: [N, D]; train_y: [N]; test_X: [M, D]; test_y: [M] (tensors, arrays or lists).
    """
    train_X, test_X, train_y, test_y = _checked(train_X, train_y, test_X, test_y, task)
    if task == "classification":
        head = LogisticRegression(C=regularization, max_iter=max_iter)
    else:
        head = Ridge(alpha=regularization)
    model = make_pipeline(StandardScaler(), head).fit(train_X, train_y)
    return _scores(task, model.predict(test_X), test_y)


def knn_probe(train_X, train_y, test_X, test_y, k: int = 10, task: str = "classification") -> dict[str, float]:
    """Predict each test row from its ``k`` most cosine-similar train rows (majority vote, or mean for regression).

    Returns ``{"accuracy", "macro_f1"}`` for ``task="classification"`` (vote ties go to the smallest label, as in
    scikit-learn) and ``{"r2", "mae"}`` for ``task="regression"``. ``k`` is capped at the number of train rows.

    train_X: [N, D]; train_y: [N]; test_X: [M, D]; test_y: [M].
    """
    train_X, test_X, train_y, test_y = _checked(train_X, train_y, test_X, test_y, task)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}.")
    neighbours = KNeighborsClassifier if task == "classification" else KNeighborsRegressor
    model = neighbours(n_neighbors=min(k, len(train_X)), metric="cosine").fit(train_X, train_y)
    return _scores(task, model.predict(test_X), test_y)


def alignment(x, y, alpha: float = 2.0) -> float:
    """Mean distance of positive pairs on the unit sphere (Wang & Isola 2020); lower is better aligned.

    .. math:: \\mathcal{L}_{align} = \\frac{1}{N} \\sum_i \\lVert \\hat x_i - \\hat y_i \\rVert_2^{\\alpha},
        \\qquad \\hat x = x / \\lVert x \\rVert

    x, y: [N, D] embeddings of the two sides of N positive pairs (normalised here). Range [0, 2^alpha].
    """
    x_unit, y_unit = _unit_tensor(x), _unit_tensor(y)
    if x_unit.shape != y_unit.shape:
        raise ValueError(
            f"alignment needs two [N, D] matrices of the same shape, got {x_unit.shape} and {y_unit.shape}."
        )
    return float((x_unit - y_unit).norm(dim=1).pow(alpha).mean())


def uniformity(x, t: float = 2.0) -> float:
    """Log of the mean Gaussian potential between distinct rows on the unit sphere (Wang & Isola 2020); lower is
    more uniform.

    .. math:: \\mathcal{L}_{uniform} = \\log \\frac{2}{N(N-1)} \\sum_{i<j} \\exp(-t \\lVert \\hat x_i - \\hat x_j
        \\rVert_2^2)

    x: [N, D], N >= 2 (normalised here). Range [-4t, 0]: 0 when every row is the same point (collapse).
    """
    x_unit = _unit_tensor(x)
    if len(x_unit) < 2:
        raise ValueError(f"uniformity needs at least 2 rows, got {len(x_unit)}.")
    return float(torch.pdist(x_unit).pow(2).mul(-t).exp().mean().log())


def effective_rank(X, center: bool = False) -> float:
    """Effective rank of an embedding matrix (Roy & Vetterli 2007): exp of the entropy of its normalised spectrum.

    .. math:: p_k = \\sigma_k / \\sum_l \\sigma_l, \\qquad \\operatorname{erank}(X) = \\exp(-\\sum_k p_k \\log p_k)

    with sigma_k the singular values of X [N, D]. It lies in [1, min(N, D)]: 1 for a rank-1 matrix, min(N, D) when
    all singular values are equal; a low value relative to D signals dimensional collapse. ``center=True`` subtracts
    the column means first (the spectrum of the embedding covariance, as in the Hydra paper); the default scores X as
    given (Roy & Vetterli, RankMe).
    """
    matrix = torch.as_tensor(as_float64(X))
    if matrix.ndim != 2:
        raise ValueError(f"effective_rank needs an [N, D] matrix, got shape {tuple(matrix.shape)}.")
    if center:
        matrix = matrix - matrix.mean(dim=0, keepdim=True)
    singular_values = torch.linalg.svdvals(matrix)
    if singular_values.sum() == 0:
        raise ValueError("effective_rank is undefined for an all-zero matrix.")
    p = singular_values / singular_values.sum()
    p = p[p > 0]  # 0 * log 0 = 0
    return float(torch.exp(-(p * p.log()).sum()))


class ProbeEvaluator:
    """Score a frozen encoder on one column: call it with ``embed(column, values) -> [n, D]``.

    Embeds the train and test values (in batches of ``batch_size``), fits the linear and k-NN probes on the train
    embeddings and scores them on the test embeddings; also reports the uniformity and effective rank of the test
    embeddings, and the alignment of test values with ``test_positive_values`` (e.g. another augmentation of each
    test value) when given. Follows the trainer evaluator contract (``evaluator(embed) -> dict[str, float]``).

    Returns ``{f"{name}_linear_accuracy", f"{name}_linear_macro_f1", f"{name}_knn_accuracy", f"{name}_knn_macro_f1",
    f"{name}_uniformity", f"{name}_effective_rank"}`` (``_r2`` / ``_mae`` instead of ``_accuracy`` / ``_macro_f1``
    for ``task="regression"``), plus ``f"{name}_alignment"`` with positives.

    Args:
        train_values, train_labels: values of ``column`` (vectors, images, ...) and their labels, for fitting probes.
        test_values, test_labels: held-out values and labels, for scoring them.
        column: the dataset column (modality) whose encoder embeds the values.
        task: ``"classification"`` (labels are classes) or ``"regression"`` (continuous targets).
        k: neighbours of the k-NN probe.
        regularization: logistic ``C`` or Ridge ``alpha`` (see :func:`linear_probe`).
        test_positive_values: optional positive of each test value, for :func:`alignment`.
        name: prefix of the metric keys.
        batch_size: how many values go to one ``embed`` call.
    """

    def __init__(
        self,
        train_values: Sequence,
        train_labels: Sequence,
        test_values: Sequence,
        test_labels: Sequence,
        column: str,
        task: str = "classification",
        k: int = 10,
        regularization: float = 1.0,
        test_positive_values: Sequence | None = None,
        name: str = "probe",
        batch_size: int = 256,
    ):
        _check_task(task)
        for values, labels, split in ((train_values, train_labels, "train"), (test_values, test_labels, "test")):
            if len(values) != len(labels) or len(values) == 0:
                raise ValueError(
                    f"{split}_values and {split}_labels must be non-empty and of the same length, got "
                    f"{len(values)} and {len(labels)}."
                )
        if test_positive_values is not None and len(test_positive_values) != len(test_values):
            raise ValueError(
                f"test_positive_values must hold one positive per test value: got {len(test_positive_values)} for "
                f"{len(test_values)} test values."
            )
        if batch_size < 1 or k < 1:
            raise ValueError(f"batch_size and k must be >= 1, got {batch_size} and {k}.")
        self.train_values, self.test_values = list(train_values), list(test_values)
        self.train_labels, self.test_labels = np.asarray(train_labels), np.asarray(test_labels)
        self.test_positive_values = None if test_positive_values is None else list(test_positive_values)
        self.column, self.task, self.k, self.regularization = column, task, k, regularization
        self.name, self.batch_size = name, batch_size

    def __call__(self, embed: EmbedFn) -> dict[str, float]:
        """Embed the values with ``embed`` and return the prefixed probe and geometry metrics."""
        train, test = self.embed_all(embed, self.train_values), self.embed_all(embed, self.test_values)
        metrics = {}
        probes = {
            "linear": linear_probe(train, self.train_labels, test, self.test_labels, self.task, self.regularization),
            "knn": knn_probe(train, self.train_labels, test, self.test_labels, self.k, self.task),
        }
        for probe, scores in probes.items():
            metrics.update({f"{probe}_{key}": value for key, value in scores.items()})
        metrics["uniformity"] = uniformity(test)
        metrics["effective_rank"] = effective_rank(test)
        if self.test_positive_values is not None:
            metrics["alignment"] = alignment(test, self.embed_all(embed, self.test_positive_values))
        return {f"{self.name}_{key}": value for key, value in metrics.items()}

    def embed_all(self, embed: EmbedFn, values: list) -> np.ndarray:
        """[N, D] float64 embeddings of ``values`` in their order, ``batch_size`` values per ``embed`` call."""
        chunks = []
        for start in range(0, len(values), self.batch_size):
            batch = values[start : start + self.batch_size]
            chunk = as_float64(embed(self.column, batch))
            if chunk.ndim != 2 or len(chunk) != len(batch):
                raise ValueError(f"embed returned shape {chunk.shape} for {len(batch)} values; expected [n, D].")
            chunks.append(chunk)
        return np.concatenate(chunks)


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}.")


def _checked(train_X, train_y, test_X, test_y, task: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validate shapes and task; return float64 features and label arrays (float for regression)."""
    _check_task(task)
    train_X, test_X = as_float64(train_X), as_float64(test_X)
    train_y, test_y = np.asarray(as_labels(train_y)), np.asarray(as_labels(test_y))
    if train_X.ndim != 2 or test_X.ndim != 2 or train_X.shape[1] != test_X.shape[1]:
        raise ValueError(f"Expected [N, D] train and [M, D] test embeddings, got {train_X.shape} and {test_X.shape}.")
    if len(train_X) != len(train_y) or len(test_X) != len(test_y):
        raise ValueError(
            f"Got {len(train_X)} train rows for {len(train_y)} labels and {len(test_X)} test rows for "
            f"{len(test_y)} labels."
        )
    if task == "regression":
        return train_X, test_X, train_y.astype(np.float64), test_y.astype(np.float64)
    return train_X, test_X, train_y, test_y


def as_labels(labels) -> np.ndarray:
    """Labels (tensor, array or list) as a 1-D numpy array."""
    if hasattr(labels, "detach"):
        labels = labels.detach().cpu().numpy()
    return np.asarray(labels).reshape(-1)


def _scores(task: str, predicted: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    if task == "classification":
        return compute_classification_metrics(predicted, gold)
    return {"r2": float(r2_score(gold, predicted)), "mae": float(mean_absolute_error(gold, predicted))}


def _unit_tensor(x) -> torch.Tensor:
    """[N, D] float64 tensor with rows scaled to unit length."""
    matrix = torch.as_tensor(as_float64(x))
    if matrix.ndim != 2:
        raise ValueError(f"Expected an [N, D] embedding matrix, got shape {tuple(matrix.shape)}.")
    return F.normalize(matrix, dim=1)
