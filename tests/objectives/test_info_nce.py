"""InfoNCE against hand-computed values, finite differences and its false-negative mask."""

import math

import pytest
import torch

from hf_contrastive.objectives import InfoNCE, build_objective
from hf_contrastive.objectives.info_nce import false_negative_mask


def batch_for(columns, hashes=None, batch_size=2):
    if hashes is None:
        hashes = torch.arange(len(columns) * batch_size).view(len(columns), batch_size)
    return {"column_names": tuple(columns), "input_hashes": torch.as_tensor(hashes)}


def softplus(x):
    return math.log1p(math.exp(x))


ANCHORS = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
POSITIVES = torch.tensor([[1.0, 0.0], [0.6, 0.8]])  # cosine matrix [[1, 0.6], [0, 0.8]]


def test_in_batch_loss_matches_hand_computation():
    # tau = 0.5: logits [[2, 1.2], [0, 1.6]]; l0 = log(1 + e^(1.2-2)), l1 = log(1 + e^(0-1.6)).
    objective = InfoNCE(temperature=0.5, mask_false_negatives=False)
    out = objective({"anchor": ANCHORS, "positive": POSITIVES}, batch_for(["anchor", "positive"]))
    expected = (softplus(-0.8) + softplus(-1.6)) / 2
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    assert out.logs["accuracy"].item() == 1.0
    assert out.logs["effective_negatives"].item() == 1.0


def test_hard_negatives_join_the_denominator():
    negatives = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # cos(a0, n) = [0, 1]; cos(a1, n) = [1, 0]
    objective = InfoNCE(temperature=0.5, mask_false_negatives=False)
    out = objective(
        {"anchor": ANCHORS, "positive": POSITIVES, "negative_1": negatives},
        batch_for(["anchor", "positive", "negative_1"]),
    )
    # anchor 0 logits [2, 1.2, 0, 2]; anchor 1 logits [0, 1.6, 2, 0]
    l0 = -2 + math.log(math.exp(2) + math.exp(1.2) + math.exp(0) + math.exp(2))
    l1 = -1.6 + math.log(math.exp(0) + math.exp(1.6) + math.exp(2) + math.exp(0))
    assert out.loss.item() == pytest.approx((l0 + l1) / 2, rel=1e-6)
    assert out.logs["effective_negatives"].item() == 3.0


def test_symmetric_averages_both_directions():
    objective = InfoNCE(temperature=0.5, symmetric=True, mask_false_negatives=False)
    out = objective({"anchor": ANCHORS, "positive": POSITIVES}, batch_for(["anchor", "positive"]))
    forward = (softplus(-0.8) + softplus(-1.6)) / 2
    # positives -> anchors: logits = cos(p_i, a_j)/tau = [[2, 0], [1.2, 1.6]]
    backward = (softplus(-2.0) + softplus(1.2 - 1.6)) / 2
    assert out.loss.item() == pytest.approx((forward + backward) / 2, rel=1e-6)


def test_dot_similarity_uses_raw_vectors():
    objective = InfoNCE(temperature=1.0, similarity="dot", mask_false_negatives=False)
    anchors, positives = 2 * ANCHORS, POSITIVES
    out = objective({"anchor": anchors, "positive": positives}, batch_for(["anchor", "positive"]))
    # logits [[2, 1.2], [0, 1.6]] at tau = 1
    assert out.loss.item() == pytest.approx((softplus(-0.8) + softplus(-1.6)) / 2, rel=1e-6)


def test_duplicate_text_is_masked_not_used_as_negative():
    # positive 1 has the same input as positive 0: for anchor 0 it is a false negative, and vice versa.
    hashes = [[10, 11], [20, 20]]
    objective = InfoNCE(temperature=0.5)
    out = objective({"anchor": ANCHORS, "positive": POSITIVES}, batch_for(["anchor", "positive"], hashes))
    assert out.loss.item() == pytest.approx(0.0, abs=1e-6)  # no negative left: log(e^x / e^x)
    assert out.logs["effective_negatives"].item() == 0.0


def test_false_negative_mask_keeps_the_label_and_matches_anchor_text():
    anchor_hashes = torch.tensor([1, 2, 3])
    positive_hashes = torch.tensor([4, 5, 6])
    candidates = torch.tensor([4, 5, 6, 1, 4])  # candidate 3 repeats anchor 0's text, candidate 4 its positive
    mask = false_negative_mask(anchor_hashes, positive_hashes, candidates, torch.arange(3))
    expected = torch.zeros(3, 5, dtype=torch.bool)
    expected[0, 3] = expected[0, 4] = True
    assert torch.equal(mask, expected)


def test_gradient_matches_finite_differences():
    torch.manual_seed(0)
    objective = InfoNCE(temperature=0.3, symmetric=True).double()
    columns = ["anchor", "positive", "negative_1"]
    batch = batch_for(columns, batch_size=3)

    def loss_of(anchor, positive, negative):
        return objective({"anchor": anchor, "positive": positive, "negative_1": negative}, batch).loss

    inputs = tuple(torch.randn(3, 4, dtype=torch.double, requires_grad=True) for _ in columns)
    assert torch.autograd.gradcheck(loss_of, inputs, eps=1e-6, atol=1e-6)


def test_learnable_temperature_gradient_matches_finite_difference():
    torch.manual_seed(0)
    objective = InfoNCE(temperature=0.2, learnable_temperature=True).double()
    embeddings = {"anchor": torch.randn(4, 3).double(), "positive": torch.randn(4, 3).double()}
    batch = batch_for(["anchor", "positive"], batch_size=4)
    objective(embeddings, batch).loss.backward()
    analytic = objective.log_scale.grad.item()
    eps = 1e-6
    with torch.no_grad():
        objective.log_scale += eps
        plus = objective(embeddings, batch).loss.item()
        objective.log_scale -= 2 * eps
        minus = objective(embeddings, batch).loss.item()
    assert analytic == pytest.approx((plus - minus) / (2 * eps), rel=1e-5)
    assert objective.get_config_dict()["learnable_temperature"] is True


def test_single_anchor_without_negatives_is_refused():
    objective = InfoNCE()
    one = torch.ones(1, 2)
    with pytest.raises(ValueError, match="at least one negative"):
        objective({"anchor": one, "positive": one}, batch_for(["anchor", "positive"], batch_size=1))


def test_missing_column_names_the_role():
    with pytest.raises(ValueError, match="missing \\['positive'\\]"):
        InfoNCE()({"anchor": ANCHORS}, batch_for(["anchor"]))


def test_build_objective_rejects_unknown_names_and_options():
    objective = build_objective("info_nce", defaults={"temperature": 0.1, "num_groups": 4}, symmetric=True)
    assert isinstance(objective, InfoNCE) and objective.temperature == 0.1 and objective.symmetric
    with pytest.raises(ValueError, match="Unknown objective"):
        build_objective("nope")
    with pytest.raises(ValueError, match="no option\\(s\\) \\['num_grups'\\]"):
        build_objective("info_nce", num_grups=4)
