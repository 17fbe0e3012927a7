"""SupConRegressionLoss: hand-computed SupCon cases, distance weights, a loop reference, gradients and bad input."""

import math

import pytest
import torch
import torch.nn.functional as F

from hf_contrastive.objectives.supcon_regression import CandidateGroup, SupConRegressionLoss, multi_positive_loss

from .distributed_objective import assert_two_processes_match_one

E = math.e
ORTHONORMAL = {"x_view_1": torch.eye(2), "x_view_2": torch.eye(2)}


def supcon_reference(view_1, view_2, labels, tau, weight=lambda d: 1.0):
    """SupCon L_out (Khosla et al.) over 2B views, one anchor at a time, with weights on the denominator terms."""
    features = F.normalize(torch.cat([view_1, view_2]), dim=1)
    targets = torch.cat([labels, labels]).tolist()
    losses = []
    for a in range(len(features)):
        others = [c for c in range(len(features)) if c != a]
        logit = {c: float(features[a] @ features[c]) / tau for c in others}
        partition = sum(weight(abs(targets[a] - targets[c])) * math.exp(logit[c]) for c in others)
        positives = [c for c in others if targets[c] == targets[a]]
        losses.append(-sum(logit[p] - math.log(partition) for p in positives) / len(positives))
    return sum(losses) / len(losses)


def test_orthonormal_views_with_distinct_labels_match_hand_computation():
    # Anchor e1: candidates e2, e1 (other view, positive), e2 with logits 0, 1, 0 at tau = 1.
    loss = SupConRegressionLoss(temperature=1.0)(ORTHONORMAL, {"labels": torch.tensor([1.0, 2.0])}).loss
    assert loss.item() == pytest.approx(math.log(2 + E) - 1, rel=1e-6)


def test_equal_labels_make_every_other_view_a_positive():
    out = SupConRegressionLoss(temperature=1.0)(ORTHONORMAL, {"labels": torch.tensor([1.0, 1.0])})
    assert out.loss.item() == pytest.approx(math.log(2 + E) - 1 / 3, rel=1e-6)
    assert out.logs["positives_per_anchor"].item() == 3


def test_l1_inv_weights_magnify_distant_negatives():
    # Label distance 2: both e2 candidates weigh 3, the positive 1: Z = 3 + e + 3.
    objective = SupConRegressionLoss(temperature=1.0, distance="L1_inv")
    loss = objective(ORTHONORMAL, {"labels": torch.tensor([1.0, 3.0])}).loss
    assert loss.item() == pytest.approx(math.log(6 + E) - 1, rel=1e-6)


@pytest.mark.parametrize(
    "distance, weight",
    [
        (None, lambda d: 1.0),
        ("L1_inv", lambda d: d + 1),
        ("L2_inv", lambda d: d * d + 1),
        ("L1", lambda d: 1 / (d + 1)),
        ("L2", lambda d: 1 / (d * d + 1)),
    ],
)
def test_matches_loop_reference_on_random_batch(distance, weight):
    torch.manual_seed(0)
    view_1, view_2 = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    labels = torch.tensor([1.0, 2.5, 2.5, 4.0, 1.0, 7.0], dtype=torch.float64)
    objective = SupConRegressionLoss(temperature=0.3, distance=distance)
    loss = objective({"x_view_1": view_1, "x_view_2": view_2}, {"labels": labels}).loss
    assert loss.item() == pytest.approx(supcon_reference(view_1, view_2, labels, 0.3, weight), rel=1e-10)


def test_weights_change_nothing_when_all_labels_are_equal():
    torch.manual_seed(1)
    embeddings = {"x_view_1": torch.randn(4, 3), "x_view_2": torch.randn(4, 3)}
    batch = {"labels": torch.full((4,), 5.0)}
    weighted = SupConRegressionLoss(distance="L1_inv")(embeddings, batch).loss
    plain = SupConRegressionLoss(distance=None)(embeddings, batch).loss
    assert weighted.item() == pytest.approx(plain.item(), rel=1e-6)


def test_invalid_columns_contribute_nothing_whatever_their_logits():
    valid = torch.tensor([[True, True, False]])
    positive = torch.tensor([[True, False, False]])
    losses = [
        multi_positive_loss(
            [CandidateGroup(torch.tensor([[1.0, 0.5, garbage]]), torch.zeros(1, 3), valid, positive)], None
        )
        for garbage in (2.0, 50.0, float("nan"))
    ]
    expected = math.log(math.exp(1.0) + math.exp(0.5)) - 1.0
    assert [loss.item() for loss in losses] == pytest.approx([expected] * 3, rel=1e-6)


def test_gradient_matches_finite_differences():
    torch.manual_seed(2)
    views = [torch.randn(4, 3, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    labels = torch.tensor([0.0, 1.0, 1.0, 3.0], dtype=torch.float64)
    objective = SupConRegressionLoss(temperature=0.5, distance="L1_inv")

    def loss(first, second):
        return objective({"x_view_1": first, "x_view_2": second}, {"labels": labels}).loss

    assert torch.autograd.gradcheck(loss, views, eps=1e-6, atol=1e-7)


def test_learned_temperature_gets_a_gradient():
    objective = SupConRegressionLoss(learnable_temperature=True)
    torch.manual_seed(3)
    objective(
        {"x_view_1": torch.randn(3, 4), "x_view_2": torch.randn(3, 4)}, {"labels": torch.arange(3.0)}
    ).loss.backward()
    assert objective.log_scale.grad is not None and objective.log_scale.grad.abs() > 0


def test_missing_labels_are_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"batch\['labels'\].*label_column"):
        SupConRegressionLoss()(ORTHONORMAL, {})


def test_labels_of_the_wrong_shape_or_nan_are_refused():
    with pytest.raises(ValueError, match=r"2 finite numbers.*shape \(3,\)"):
        SupConRegressionLoss()(ORTHONORMAL, {"labels": torch.tensor([1.0, 2.0, 3.0])})
    with pytest.raises(ValueError, match="NaN"):
        SupConRegressionLoss()(ORTHONORMAL, {"labels": torch.tensor([1.0, float("nan")])})


def test_missing_view_column_is_named():
    with pytest.raises(ValueError, match="missing \\['x_view_2'\\]"):
        SupConRegressionLoss()({"x_view_1": torch.eye(2)}, {"labels": torch.tensor([1.0, 2.0])})


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="distance must be one of"):
        SupConRegressionLoss(distance="cosine")
    with pytest.raises(ValueError, match="exactly two view columns"):
        SupConRegressionLoss(view_columns=("a",))


def test_two_processes_match_one(tmp_path):
    torch.manual_seed(9)
    embeddings = {
        "x_view_1": torch.randn(8, 4, dtype=torch.float64),
        "x_view_2": torch.randn(8, 4, dtype=torch.float64),
    }
    batch = {"labels": torch.tensor([1.0, 2.0, 2.0, 3.0, 1.0, 5.0, 3.0, 4.0], dtype=torch.float64)}
    assert_two_processes_match_one(tmp_path, lambda: SupConRegressionLoss(distance="L1_inv"), embeddings, batch)
