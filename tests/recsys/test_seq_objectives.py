"""CL4SRec / MCLRec contrastive terms: hand cases, brute-force references, gradients, 2 processes == 1."""

import math

import pytest
import torch

from hf_contrastive.objectives.seq_rec import CL4SRecLoss, MCLRecLoss, PairScores
from hf_contrastive.objectives.simclr import NTXentLoss

from ..objectives.distributed_objective import assert_two_processes_match_one


def brute_force_terms(a: torch.Tensor, b: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The spec's L_con and R by explicit loops over the 2B anchors of Z = [a; b]."""
    z = torch.cat([a, b])
    n = z.shape[0]
    half = n // 2
    losses, positive_terms, negative_terms = [], [], []
    for i in range(n):
        partner = (i + half) % n
        positive = z[i] @ z[partner] / tau
        negatives = torch.stack([z[i] @ z[j] / tau for j in range(n) if j not in (i, partner)])
        losses.append(-(positive - torch.logsumexp(torch.cat([positive[None], negatives]), 0)))
        hardest = negatives.max()
        low, high = torch.minimum(positive, hardest), torch.maximum(positive, hardest)
        positive_terms.append((positive - low).clamp(min=0))
        negative_terms.extend((high - negatives).clamp(min=0))
    return torch.stack(losses).mean(), torch.stack(positive_terms).mean() + torch.stack(negative_terms).mean()


def random_views(rows: int = 4, width: int = 5, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    names = ("view_1", "view_2", "model_view_1", "model_view_2")
    return {name: torch.randn(rows, width, generator=generator, dtype=torch.float64) for name in names}


def test_nt_xent_of_identical_orthonormal_views_is_the_spec_value():
    views = torch.eye(2, dtype=torch.float64)
    loss = CL4SRecLoss(weight=1.0)({"view_1": views, "view_2": views}, {}).loss
    assert loss.item() == pytest.approx(-math.log(math.e / (math.e + 2)), abs=1e-12)
    assert loss.item() == pytest.approx(0.5514, abs=1e-4)


def test_nt_xent_and_regulariser_match_the_brute_force_definition_with_gradients():
    views = random_views()
    a = views["view_1"].clone().requires_grad_()
    b = views["view_2"].clone().requires_grad_()
    scores = PairScores.build(a, b, a, b, 0)
    loss = scores.nt_xent(1 / 0.5) + 0.3 * scores.regulariser(1 / 0.5)
    a_ref = views["view_1"].clone().requires_grad_()
    b_ref = views["view_2"].clone().requires_grad_()
    contrast, regulariser = brute_force_terms(a_ref, b_ref, 0.5)
    expected = contrast + 0.3 * regulariser
    torch.testing.assert_close(loss, expected)
    loss.backward()
    expected.backward()
    torch.testing.assert_close(a.grad, a_ref.grad)
    torch.testing.assert_close(b.grad, b_ref.grad)


def test_regulariser_is_zero_for_equal_logits_and_shrinks_with_the_gap():
    ones = torch.ones(3, 4, dtype=torch.float64)
    assert PairScores.build(ones, ones, ones, ones, 0).regulariser(1.0).item() == 0.0
    # Separated views: positives beat every negative, so R = mean(s+ - max s-) + mean(s+ - s-) > 0 ...
    views = torch.eye(3, dtype=torch.float64)
    separated = PairScores.build(3 * views, views, 3 * views, views, 0).regulariser(1.0)
    assert separated.item() > 0
    # ... and a smaller gap (positives 2 instead of 3, negatives 0) gives a smaller R.
    assert PairScores.build(2 * views, views, 2 * views, views, 0).regulariser(1.0) < separated


def test_cosine_cl4srec_equals_simclr_nt_xent():
    views = random_views()
    cl4srec = CL4SRecLoss(temperature=0.2, weight=1.0, similarity="cosine")
    simclr = NTXentLoss(view_columns=("view_1", "view_2"), temperature=0.2)
    pair = {"view_1": views["view_1"], "view_2": views["view_2"]}
    torch.testing.assert_close(cl4srec(pair, {}).loss, simclr(pair, {}).loss)


def test_cl4srec_scales_by_its_weight_and_logs_the_unweighted_term():
    views = random_views()
    pair = {"view_1": views["view_1"], "view_2": views["view_2"]}
    output = CL4SRecLoss(weight=0.1)(pair, {})
    contrast, _ = brute_force_terms(views["view_1"], views["view_2"], 1.0)
    torch.testing.assert_close(output.loss, 0.1 * contrast)
    torch.testing.assert_close(output.logs["cl_loss"], contrast)


def test_mclrec_encoder_and_augmenter_losses_combine_the_spec_terms():
    views = random_views()
    h1, h2, z1, z2 = views.values()
    objective = MCLRecLoss(temperature=0.5, view_weight=0.2, model_view_weight=0.4)
    cl1, _ = brute_force_terms(h1, h2, 0.5)
    pairs = [(h1, z2), (h2, z1), (z1, z2)]
    cl2 = sum(brute_force_terms(a, b, 1.0)[0] for a, b in pairs)  # tau' = 1 for L_cl2
    reg = sum(brute_force_terms(a, b, 0.5)[1] for a, b in pairs)  # tau for R
    torch.testing.assert_close(objective(views, {}).loss, 0.2 * cl1 + 0.4 * (cl2 + 0.1 * reg))
    torch.testing.assert_close(objective.augmenter_loss(views).loss, 0.2 * cl1 + cl2 + 0.1 * reg)
    logs = objective(views, {}).logs
    torch.testing.assert_close(logs["cl2"], cl2)
    torch.testing.assert_close(logs["reg"], reg)


def test_mclrec_with_zero_weights_adds_nothing():
    assert MCLRecLoss(view_weight=0.0, model_view_weight=0.0)(random_views(), {}).loss.item() == 0.0


def test_objectives_validate_columns_and_options():
    with pytest.raises(ValueError, match="missing"):
        MCLRecLoss()({"view_1": torch.zeros(2, 3), "view_2": torch.zeros(2, 3)}, {})
    with pytest.raises(ValueError, match="weight"):
        CL4SRecLoss(weight=-1.0)
    with pytest.raises(ValueError, match="model_view_weight"):
        MCLRecLoss(model_view_weight=-0.1)
    with pytest.raises(ValueError, match="temperature"):
        MCLRecLoss(temperature=0.0)
    with pytest.raises(ValueError, match="model_view_temperature"):
        MCLRecLoss(model_view_temperature=0.0)
    assert CL4SRecLoss().effective_negatives(8, 0) == 14


@pytest.mark.parametrize("make_objective", [CL4SRecLoss, MCLRecLoss], ids=["cl4srec", "mclrec"])
def test_two_processes_match_one(tmp_path, make_objective):
    views = random_views(rows=6, width=4, seed=1)
    if make_objective is CL4SRecLoss:
        views = {"view_1": views["view_1"], "view_2": views["view_2"]}
    assert_two_processes_match_one(tmp_path, make_objective, views, {"labels": torch.zeros(6, dtype=torch.long)})
