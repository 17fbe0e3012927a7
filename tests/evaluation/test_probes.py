"""Probes on frozen embeddings: linear / k-NN on separable data, alignment, uniformity and effective rank by hand."""

import math

import numpy as np
import pytest
import torch

from hf_contrastive.evaluation.probes import (
    ProbeEvaluator,
    alignment,
    effective_rank,
    knn_probe,
    linear_probe,
    uniformity,
)


def separable_clusters(seed: int, per_class: int = 20):
    """Three tight clusters around orthogonal directions (scaled differently), labels 0..2."""
    rng = np.random.default_rng(seed)
    scales = [1.0, 5.0, 0.2]
    X = np.concatenate([scales[c] * (np.eye(3)[c] + 0.01 * rng.standard_normal((per_class, 3))) for c in range(3)])
    return X, np.repeat(np.arange(3), per_class)


def test_linear_and_knn_probes_are_perfect_on_separable_clusters():
    train_X, train_y = separable_clusters(0)
    test_X, test_y = separable_clusters(1)
    assert linear_probe(train_X, train_y, test_X, test_y) == {"accuracy": 1.0, "macro_f1": 1.0}
    assert knn_probe(torch.tensor(train_X), torch.tensor(train_y), test_X, test_y, k=5)["accuracy"] == 1.0


def test_knn_probe_uses_cosine_not_euclidean_distance():
    # The test point is Euclidean-close to the class-0 point but has the direction of the (long) class-1 point.
    train_X, train_y = np.array([[1.0, 0.0], [10.0, 10.0]]), np.array([0, 1])
    test_X, test_y = np.array([[0.5, 0.5]]), np.array([1])
    assert knn_probe(train_X, train_y, test_X, test_y, k=1)["accuracy"] == 1.0


def test_knn_vote_matches_hand_count():
    # Neighbours of [1, 0.1] by cosine: [1, 0] (label 0), [1, 0.3] (label 1), [1, 0.5] (label 1) -> 1 with k=3,
    # 0 with k=1.
    train_X = np.array([[1.0, 0.0], [1.0, 0.3], [1.0, 0.5], [0.0, 1.0]])
    train_y = np.array([0, 1, 1, 0])
    test_X = np.array([[1.0, 0.1]])
    assert knn_probe(train_X, train_y, test_X, [1], k=3)["accuracy"] == 1.0
    assert knn_probe(train_X, train_y, test_X, [1], k=1)["accuracy"] == 0.0


def test_linear_regression_probe_recovers_a_linear_target():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((80, 4))
    y = X @ np.array([1.0, -2.0, 0.5, 0.0]) + 3.0
    scores = linear_probe(X[:60], y[:60], X[60:], y[60:], task="regression", regularization=1e-6)
    assert scores["r2"] == pytest.approx(1.0, abs=1e-9)
    assert scores["mae"] == pytest.approx(0.0, abs=1e-6)


def test_knn_regression_averages_the_neighbours_targets():
    train_X = np.array([[1.0, 0.0], [1.0, 0.2], [0.0, 1.0]])
    train_y = np.array([2.0, 4.0, 10.0])
    scores = knn_probe(
        train_X, train_y, np.array([[1.0, 0.1], [0.1, 1.0]]), np.array([3.0, 8.0]), k=2, task="regression"
    )
    # predictions: mean(2, 4) = 3 and mean(10, 4) = 7 ([1, 0.2] is nearer to [0.1, 1] than [1, 0]); MAE = (0 + 1) / 2
    assert scores["mae"] == pytest.approx(0.5)


def test_alignment_matches_hand_values():
    x = torch.tensor([[2.0, 0.0], [0.0, 3.0]])  # normalised to e1, e2
    y = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    # distances: |e1 - e2| = sqrt(2), |e2 - e2| = 0
    assert alignment(x, y) == pytest.approx((2.0 + 0.0) / 2)
    assert alignment(x, y, alpha=1) == pytest.approx(math.sqrt(2) / 2)


def test_uniformity_matches_hand_values():
    # Three points: e1, -e1, e2. Squared distances: 4, 2, 2.
    x = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 5.0]])
    expected = math.log((math.exp(-8) + 2 * math.exp(-4)) / 3)
    assert uniformity(x) == pytest.approx(expected)
    assert uniformity(np.ones((4, 3))) == pytest.approx(0.0)  # collapse: the maximum


def test_effective_rank_of_identity_is_its_dimension_and_of_rank_one_is_one():
    assert effective_rank(torch.eye(7)) == pytest.approx(7.0)
    assert effective_rank(3.0 * torch.eye(5)[:, :4]) == pytest.approx(4.0)
    u, v = np.arange(1.0, 9.0), np.array([1.0, -2.0, 0.5])
    assert effective_rank(np.outer(u, v)) == pytest.approx(1.0, abs=1e-9)


def test_effective_rank_matches_the_entropy_of_a_hand_spectrum():
    X = np.diag([3.0, 1.0])  # p = [3/4, 1/4]
    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert effective_rank(X) == pytest.approx(math.exp(entropy))


def test_effective_rank_center_removes_the_mean_direction():
    # Rows = a shared offset + +-e2: rank 2 as given, rank 1 once centred.
    X = np.array([[5.0, 1.0], [5.0, -1.0]])
    assert effective_rank(X) > 1.5
    assert effective_rank(X, center=True) == pytest.approx(1.0)


def test_probe_evaluator_embeds_in_batches_and_prefixes_metrics():
    train_X, train_y = separable_clusters(0)
    test_X, test_y = separable_clusters(1)
    calls = []

    def embed(column, values):
        calls.append((column, len(values)))
        return torch.tensor(np.stack(values), dtype=torch.float32)

    evaluator = ProbeEvaluator(
        list(train_X), train_y, list(test_X), test_y, column="x", test_positive_values=list(test_X), batch_size=25
    )
    metrics = evaluator(embed)
    assert {column for column, _ in calls} == {"x"}
    assert max(size for _, size in calls) == 25
    assert metrics["probe_linear_accuracy"] == 1.0 and metrics["probe_knn_accuracy"] == 1.0
    assert metrics["probe_alignment"] == pytest.approx(0.0, abs=1e-12)
    assert metrics["probe_uniformity"] == pytest.approx(uniformity(test_X), abs=1e-6)
    assert metrics["probe_effective_rank"] == pytest.approx(effective_rank(test_X), abs=1e-4)
    assert set(metrics) == {
        "probe_linear_accuracy",
        "probe_linear_macro_f1",
        "probe_knn_accuracy",
        "probe_knn_macro_f1",
        "probe_uniformity",
        "probe_effective_rank",
        "probe_alignment",
    }


def test_probe_evaluator_regression_reports_r2_and_mae():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 3))
    y = X[:, 0] * 2.0
    evaluator = ProbeEvaluator(list(X[:40]), y[:40], list(X[40:]), y[40:], column="x", task="regression", name="p")
    metrics = evaluator(lambda column, values: np.stack(values))
    assert {"p_linear_r2", "p_linear_mae", "p_knn_r2", "p_knn_mae"} <= set(metrics)
    assert metrics["p_linear_r2"] > 0.99


def test_bad_input_is_refused_with_a_clear_error():
    X, y = separable_clusters(0)
    with pytest.raises(ValueError, match="task must be one of"):
        linear_probe(X, y, X, y, task="ranking")
    with pytest.raises(ValueError, match="train rows"):
        knn_probe(X, y[:-1], X, y)
    with pytest.raises(ValueError, match="same shape"):
        alignment(X, X[:-1])
    with pytest.raises(ValueError, match="test_values and test_labels"):
        ProbeEvaluator(list(X), y, list(X), y[:3], column="x")
    with pytest.raises(ValueError, match="expected \\[n, D\\]"):
        ProbeEvaluator(list(X), y, list(X), y, column="x")(lambda column, values: np.zeros(len(values)))
