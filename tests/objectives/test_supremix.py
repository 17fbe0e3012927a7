"""SupReMixLoss: a hand-computed Mix-pos case, the spec's checks, a reference that materialises the mixtures,
stop-gradient, finite differences and the baseline limits."""

import math

import pytest
import torch
import torch.nn.functional as F

from hf_contrastive.objectives.supcon_regression import RegressionViews, SupConRegressionLoss, multi_positive_loss
from hf_contrastive.objectives.supremix import SupReMixLoss, mix_pos_weights

from .distributed_objective import assert_two_processes_match_one

SQRT_HALF = math.sqrt(0.5)


def batch_of(view_1, view_2, labels):
    return {"x_view_1": view_1, "x_view_2": view_2}, {"labels": torch.as_tensor(labels, dtype=view_1.dtype)}


def supremix_reference(view_1, view_2, labels, objective, mix_neg_lam, legacy=False):
    """The spec's formulas literally: the (2B, (2B)^2, d) mixture tensor from detached embeddings, one anchor at a time."""
    f = F.normalize(torch.cat([view_1, view_2]), dim=1)
    t = torch.cat([labels, labels]).tolist()
    tau, n, weight = objective.temperature, objective.window, (lambda d: d + 1)
    losses = []
    for i in range(len(f)):
        real = [(f[i] @ f[c] / tau, abs(t[i] - t[c]), t[c] == t[i]) for c in range(len(f)) if c != i]
        mixtures = []
        for j in range(len(f)):
            for k in range(len(f)):
                if j == i and k != i and t[j] != t[k]:
                    lam = float(mix_neg_lam[i, k])
                    m, label, positive = (
                        lam * f[i].detach() + (1 - lam) * f[k].detach(),
                        lam * t[i] + (1 - lam) * t[k],
                        False,
                    )
                elif t[j] < t[i] < t[k] and t[i] - t[j] < n and t[k] - t[i] < n:
                    lam = min(max((t[k] - t[i]) / max(t[k] - t[j], 1e-9), 0.0), 1.0)
                    m, label, positive = lam * f[j].detach() + (1 - lam) * f[k].detach(), t[i], True
                else:
                    continue
                mixtures.append((f[i] @ m / tau, abs(t[i] - label), positive))
        if legacy and mixtures:  # separate detached shifts: max over all real logits incl. self, over the mixtures
            real_max = max(float(f[i].detach() @ f[c].detach() / tau) for c in range(len(f)))
            mixture_max = max(float(u.detach()) for u, _, _ in mixtures)
            mixtures = [(u - mixture_max + real_max, d, p) for u, d, p in mixtures]
        entries = real + mixtures
        log_partition = torch.logsumexp(torch.stack([u + math.log(weight(d)) for u, d, _ in entries]), dim=0)
        positives = [u - log_partition for u, _, p in entries if p]
        losses.append(-torch.stack(positives).mean())
    return torch.stack(losses).mean()


def test_mix_pos_hand_computed_case():
    # Labels 0, 1, 2 with identical views: anchor 1's four Mix-pos (views of 0 x views of 2) are all
    # 0.5 (e1 + e2) with logit 1/sqrt(2) against f1 = (e1 + e2) / sqrt(2); anchors 0 and 2 have no mixture.
    f = torch.tensor([[1.0, 0.0], [SQRT_HALF, SQRT_HALF], [0.0, 1.0]])
    objective = SupReMixLoss(temperature=1.0, distance=None, mix_neg=False, window=10.0)
    loss = objective(*batch_of(f, f.clone(), [0.0, 1.0, 2.0])).loss
    edge = math.log(2 * math.exp(SQRT_HALF) + 2 + math.e) - 1
    middle = math.log(8 * math.exp(SQRT_HALF) + math.e) - (1 + 4 * SQRT_HALF) / 5
    assert loss.item() == pytest.approx((4 * edge + 2 * middle) / 6, rel=1e-6)


def test_mix_pos_label_identity():
    assert mix_pos_weights(torch.tensor([22.0]), torch.tensor([20.0, 24.0]))[0, 0, 1].item() == 0.5
    torch.manual_seed(0)
    labels = torch.randint(0, 30, (40,)).double()
    lam = mix_pos_weights(labels, labels)
    bracket = (labels[None, :, None] < labels[:, None, None]) & (labels[:, None, None] < labels[None, None, :])
    mixed = lam * labels[None, :, None] + (1 - lam) * labels[None, None, :]
    assert bracket.any() and ((lam >= 0) & (lam <= 1)).all()
    torch.testing.assert_close(mixed[bracket], labels[:, None, None].expand_as(mixed)[bracket], atol=1e-6, rtol=0)


@pytest.mark.parametrize("legacy", [False, True])
def test_matches_reference_with_materialised_mixtures(legacy):
    torch.manual_seed(1)
    view_1, view_2 = (torch.randn(5, 4, dtype=torch.float64, requires_grad=True) for _ in range(2))
    labels = torch.tensor([20.0, 22.0, 24.0, 22.0, 30.0], dtype=torch.float64)
    objective = SupReMixLoss(window=5.0, legacy_separate_shift=legacy)
    mix_neg_lam = objective.mix_neg_weights(10)  # the draws of the first call
    loss = objective(*batch_of(view_1, view_2, labels)).loss
    expected = supremix_reference(view_1, view_2, labels, objective, mix_neg_lam, legacy)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-10)
    got = torch.autograd.grad(loss, [view_1, view_2])
    want = torch.autograd.grad(expected, [view_1, view_2])
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def test_legacy_shift_changes_the_loss_when_the_maxima_differ():
    torch.manual_seed(2)
    embeddings, batch = batch_of(torch.randn(5, 4), torch.randn(5, 4), [20.0, 22.0, 24.0, 22.0, 30.0])
    clean = SupReMixLoss()(embeddings, batch).loss
    legacy = SupReMixLoss(legacy_separate_shift=True)(embeddings, batch).loss
    assert abs(clean.item() - legacy.item()) > 1e-3


def test_equal_labels_leave_no_mixture_and_give_weighted_supcon():
    torch.manual_seed(3)
    embeddings, batch = batch_of(torch.randn(4, 3), torch.randn(4, 3), [7.0] * 4)
    out = SupReMixLoss()(embeddings, batch)
    baseline = SupConRegressionLoss(distance="L1_inv")(embeddings, batch)
    assert out.loss.item() == pytest.approx(baseline.loss.item(), rel=1e-6)
    assert out.logs["positives_per_anchor"].item() == 7  # only the real ones: every other view


def test_without_mixtures_it_is_the_baseline():
    torch.manual_seed(4)
    embeddings, batch = batch_of(torch.randn(6, 3), torch.randn(6, 3), [1.0, 2.0, 3.0, 1.0, 5.0, 2.5])
    off = SupReMixLoss(mix_neg=False, mix_pos=False, distance=None)(embeddings, batch).loss
    assert off.item() == pytest.approx(SupConRegressionLoss(distance=None)(embeddings, batch).loss.item(), rel=1e-6)


def test_zero_window_has_no_mix_pos_and_infinite_window_uses_every_bracket():
    torch.manual_seed(5)
    embeddings, batch = batch_of(torch.randn(6, 3), torch.randn(6, 3), [1.0, 2.0, 3.0, 1.0, 5.0, 20.0])
    zero = SupReMixLoss(window=0.0, mix_neg=False)(embeddings, batch)
    assert zero.loss.item() == pytest.approx(SupConRegressionLoss(distance="L1_inv")(embeddings, batch).loss.item())
    wide = SupReMixLoss(window=float("inf"), mix_neg=False)(embeddings, batch)
    # Bracketing row pairs (x 4 view pairs, x 2 anchor views): 2 <- {1, 1} x {3, 5, 20}; 3 <- {1, 1, 2} x {5, 20};
    # 5 <- {1, 1, 2, 3} x {20}; nothing brackets 1 or 20.
    expected_mix_pos = 2 * 4 * (6 + 6 + 4) / 12
    real = zero.logs["positives_per_anchor"].item()
    assert wide.logs["positives_per_anchor"].item() == pytest.approx(real + expected_mix_pos)


def test_mixture_logits_send_gradient_to_the_anchors_only():
    # Candidates as their own leaf (the rows mixtures are built from): the mixture columns give them no gradient.
    torch.manual_seed(6)
    anchors = F.normalize(torch.randn(4, 3), dim=1).requires_grad_()
    candidates = F.normalize(torch.randn(4, 3), dim=1).requires_grad_()
    labels = torch.tensor([1.0, 2.0, 3.0, 4.0])
    views = RegressionViews(anchors, candidates, labels, labels, torch.arange(4))
    mixtures = SupReMixLoss(window=10.0)._candidate_groups(views)[1:]
    sum(group.logits[group.valid].sum() for group in mixtures).backward()
    assert candidates.grad is None
    assert anchors.grad.abs().sum() > 0


def test_mix_neg_is_closer_to_the_anchor_and_lambda_has_mean_one_fifth():
    lam = SupReMixLoss().mix_neg_weights(300)
    assert lam.mean().item() == pytest.approx(0.2, abs=0.005)
    torch.manual_seed(7)
    anchor, partner = F.normalize(torch.randn(2, 8), dim=1)
    mixture = 0.2 * anchor + 0.8 * partner
    assert F.cosine_similarity(anchor, mixture, dim=0) > F.cosine_similarity(anchor, partner, dim=0)


def test_mix_neg_draws_repeat_per_call_and_differ_between_calls():
    objective = SupReMixLoss(sampling_seed=3)
    first = objective.mix_neg_weights(4)
    torch.testing.assert_close(first, SupReMixLoss(sampling_seed=3).mix_neg_weights(4))
    objective.calls += 1
    assert not torch.equal(first, objective.mix_neg_weights(4))


def test_gradient_matches_finite_differences():
    # Finite differences see the mixtures move with their source rows, which the stop-gradient ignores on purpose:
    # check the anchors' gradient with the candidates (the mixtures' source) held fixed. The candidates' own
    # gradient comes from the real part only, checked in test_supcon_regression.py.
    torch.manual_seed(8)
    anchors = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    candidates = F.normalize(torch.randn(6, 3, dtype=torch.float64), dim=1)
    labels = torch.tensor([0.0, 1.0, 2.5, 0.0, 1.0, 2.5], dtype=torch.float64)  # two "views" per target
    objective = SupReMixLoss(temperature=0.5, window=3.0)

    def loss(anchor_rows):
        objective.calls = 0  # the same Mix-neg draws at every evaluation
        views = RegressionViews(F.normalize(anchor_rows, dim=1), candidates, labels, labels, torch.arange(6))
        return multi_positive_loss(objective._candidate_groups(views), objective.distance).mean()

    assert torch.autograd.gradcheck(loss, [anchors], eps=1e-6, atol=1e-7)


def test_missing_labels_are_refused():
    with pytest.raises(ValueError, match=r"SupReMixLoss needs a continuous target"):
        SupReMixLoss()({"x_view_1": torch.eye(2), "x_view_2": torch.eye(2)}, {})


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="window must be >= 0"):
        SupReMixLoss(window=-1.0)
    with pytest.raises(ValueError, match="beta_params"):
        SupReMixLoss(beta_params=(0.0, 8.0))


def test_two_processes_match_one(tmp_path):
    torch.manual_seed(9)
    embeddings = {
        "x_view_1": torch.randn(8, 4, dtype=torch.float64),
        "x_view_2": torch.randn(8, 4, dtype=torch.float64),
    }
    batch = {"labels": torch.tensor([1.0, 2.0, 2.0, 3.0, 1.0, 5.0, 3.0, 4.0], dtype=torch.float64)}
    assert_two_processes_match_one(tmp_path, lambda: SupReMixLoss(window=3.0), embeddings, batch)
