"""CACR: the spec's hand cases and limits, the paper code's loops as reference, InfoNCE limit, gradients."""

import math

import pytest
import torch
import torch.nn.functional as F

from hf_contrastive.objectives.cacr import CACRLoss
from hf_contrastive.objectives.info_nce import InfoNCE

VIEWS = ("x_view_1", "x_view_2", "x_view_3")


def random_views(num_views=3, rows=5, dim=4, seed=0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    return {VIEWS[k]: torch.randn(rows, dim, generator=generator, dtype=dtype) for k in range(num_views)}


def paper_reference(views, alpha=1.0, beta=1.0, tau_pos=1.0, tau_neg=0.9, detach=False, tau_plus=0.0):
    """The small-scale code (our_loss1 + our_loss2 + forward_negative_loss) transcribed with loops."""
    z = [F.normalize(v, dim=-1) for v in views]
    weights = (lambda x: x.detach().softmax(1)) if detach else (lambda x: x.softmax(1))
    attraction = 0.0
    for x in range(len(z)):
        others = torch.stack([z[k] for k in range(len(z)) if k != x])
        cost = (z[x] - others).norm(p=2, dim=-1).pow(2).transpose(1, 0).mul(alpha)
        attraction += (cost * weights(cost.mul(tau_pos / alpha))).sum(1).mean()
    attraction /= len(z)
    repulsion, count = 0.0, 0
    for x in range(len(z)):
        for y in range(x + 1, len(z)):
            cost = torch.norm(z[x][:, None] - z[y], dim=-1).pow(2).mul(-beta)
            n = cost.shape[0]
            cost = cost.masked_select(~torch.eye(n, dtype=torch.bool)).view(n, n - 1)
            reweighted = (cost * weights(cost.mul(tau_neg / beta))).sum(1)
            if tau_plus:
                positive = (z[x] - z[y]).norm(p=2, dim=-1).pow(2)
                reweighted = (-tau_plus * positive + reweighted) / (1 - tau_plus)
            repulsion += reweighted.mean()
            count += 1
    return attraction + repulsion / count


def test_two_views_attraction_is_alpha_times_the_squared_distance():
    # Spec check 3: K = 2 gives w+ = 1, and z1 = e1, z2 = e2 costs 2 alpha.
    loss = CACRLoss(alpha=0.5)
    views = [torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 3.0]])]  # the second is normalised to e2
    assert loss.attraction([F.normalize(v, dim=-1) for v in views]).item() == pytest.approx(2 * 0.5)


def test_repulsion_matches_the_spec_hand_case():
    # Spec check 4: row 0 of view 1 at squared distances r = [0.5, 2.0] from rows 1, 2 of view 2, t- = 1:
    # w = softmax([-0.5, -2]) = [0.818, 0.182], contribution -beta (0.818 * 0.5 + 0.182 * 2) = -0.7736 beta.
    c = 0.75  # r = 2 - 2 cos: cos = 0.75 -> r = 0.5; cos = 0 -> r = 2
    view_1 = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    view_2 = torch.tensor([[0.0, 0.0, 1.0], [c, math.sqrt(1 - c * c), 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    beta = 2.0
    loss = CACRLoss(beta=beta, tau_neg=1.0)
    expected_rows = []
    for i in range(3):
        r = torch.stack([(view_1[i] - view_2[j]).pow(2).sum() for j in range(3) if j != i])
        expected_rows.append(-beta * (r.neg().softmax(0) * r).sum())
    assert expected_rows[0].item() == pytest.approx(-0.7736 * beta, abs=1e-4)  # the spec rounds to -0.773
    assert loss.repulsion([view_1, view_2]).item() == pytest.approx(torch.stack(expected_rows).mean().item())


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"tau_pos": 0.3, "tau_neg": 2.0, "alpha": 0.7, "beta": 1.5},
        {"detach_weights": True},
        {"debias_prior": 0.1},
    ],
)
def test_multi_view_loss_equals_the_paper_code(options):
    views = random_views(num_views=3)
    loss = CACRLoss(view_columns=VIEWS, **options)(views, {}).loss
    reference = paper_reference(
        list(views.values()),
        alpha=options.get("alpha", 1.0),
        beta=options.get("beta", 1.0),
        tau_pos=options.get("tau_pos", 1.0),
        tau_neg=options.get("tau_neg", 0.9),
        tau_plus=options.get("debias_prior", 0.0),
    )
    torch.testing.assert_close(loss, reference)


def test_uniform_weights_give_the_alignment_and_spread_closed_forms():
    # Spec check 1: t+ = t- = 0 (the paper's choice="none").
    views = random_views(num_views=3)
    z = [F.normalize(v, dim=-1) for v in views.values()]
    loss = CACRLoss(view_columns=VIEWS, alpha=2.0, beta=0.5, tau_pos=0.0, tau_neg=0.0)
    alignment = torch.stack([(z[k] - z[m]).pow(2).sum(-1).mean() for k in range(3) for m in range(3) if k != m])
    assert loss.attraction(z).item() == pytest.approx(2.0 * alignment.mean().item())
    pair_means = []
    for k, m in ((0, 1), (0, 2), (1, 2)):
        r = torch.cdist(z[k], z[m]).pow(2)
        pair_means.append(r[~torch.eye(5, dtype=torch.bool)].mean())
    assert loss.repulsion(z).item() == pytest.approx(-0.5 * torch.stack(pair_means).mean().item())


def test_large_temperatures_select_the_farthest_positive_and_the_closest_negative():
    # Spec check 2: t+ -> inf weights the farthest view only, t- -> inf the hardest negative only.
    views = random_views(num_views=3)
    z = [F.normalize(v, dim=-1) for v in views.values()]
    loss = CACRLoss(view_columns=VIEWS, tau_pos=1e4, tau_neg=1e4)
    farthest = [
        torch.stack([(z[k] - z[m]).pow(2).sum(-1) for m in range(3) if m != k]).max(0).values.mean() for k in range(3)
    ]
    assert loss.attraction(z).item() == pytest.approx(torch.stack(farthest).mean().item(), rel=1e-6)
    closest = []
    for k, m in ((0, 1), (0, 2), (1, 2)):
        r = torch.cdist(z[k], z[m]).pow(2).masked_fill(torch.eye(5, dtype=torch.bool), float("inf"))
        closest.append(-r.min(1).values.mean())
    assert loss.repulsion(z).item() == pytest.approx(torch.stack(closest).mean().item(), rel=1e-6)


def test_attraction_is_non_negative_and_repulsion_non_positive():
    # Spec check 6.
    for seed in range(5):
        output = CACRLoss(view_columns=VIEWS)(random_views(seed=seed), {})
        assert output.logs["attraction"] >= 0 and output.logs["repulsion"] <= 0


def test_cosine_form_with_two_views_is_2t_times_symmetric_info_nce():
    # Spec check 7 / the limit: one positive view (p = 1) leaves 2T x InfoNCE.
    views = random_views(num_views=2)
    temperature = 0.3
    cacr = CACRLoss(cost="cosine", temperature=temperature)(views, {}).loss
    info_nce = InfoNCE(temperature=temperature, symmetric=True, mask_false_negatives=False)
    reference = info_nce(
        {"anchor": views["x_view_1"], "positive": views["x_view_2"]}, {"column_names": ["anchor", "positive"]}
    ).loss
    torch.testing.assert_close(cacr, 2 * temperature * reference)


def test_cosine_form_weights_the_distant_query_view_more():
    # Key view 1; query views 2 (close to the key) and 3 (far): p puts more weight on view 3's cross-entropy.
    key = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    close = torch.tensor([[1.0, 0.1], [0.1, 1.0]], dtype=torch.float64)
    far = torch.tensor([[1.0, 0.9], [0.9, 1.0]], dtype=torch.float64)
    loss = CACRLoss(view_columns=VIEWS, cost="cosine", temperature=1.0)
    z = [F.normalize(v, dim=-1) for v in (key, close, far)]
    distances = torch.stack([(z[1] - z[0]).pow(2).sum(-1), (z[2] - z[0]).pow(2).sum(-1)], dim=-1)
    p = distances.softmax(-1)
    assert (p[:, 1] > p[:, 0]).all()
    ce = [F.cross_entropy(q @ z[0].T, torch.arange(2), reduction="none") for q in (z[1], z[2])]
    expected_u0 = 2 * (p[:, 0] * ce[0] + p[:, 1] * ce[1]).mean()
    per_key = []
    for u in range(3):
        queries = [z[v] for v in range(3) if v != u]
        d = torch.stack([(q - z[u]).pow(2).sum(-1) for q in queries], dim=-1).softmax(-1)
        c = torch.stack([F.cross_entropy(q @ z[u].T, torch.arange(2), reduction="none") for q in queries], dim=-1)
        per_key.append(2 * (d * c).sum(-1).mean())
    torch.testing.assert_close(per_key[0], expected_u0)
    torch.testing.assert_close(loss.cosine_loss(z), torch.stack(per_key).mean())


@pytest.mark.parametrize("cost", ["euclidean", "cosine"])
@pytest.mark.parametrize("detach_weights", [False, True])
def test_gradient_matches_finite_differences(cost, detach_weights):
    views = random_views(num_views=3, rows=4, dim=3)
    loss = CACRLoss(view_columns=VIEWS, cost=cost, detach_weights=detach_weights, temperature=0.5)
    inputs = tuple(v.clone().requires_grad_(True) for v in views.values())

    def value(*tensors):
        return loss(dict(zip(VIEWS, tensors)), {}).loss

    if detach_weights:
        # Finite differences see the weights move; the detached gradient treats them as constants. Compare
        # with autograd of the paper code under no_grad weights instead, and check the full gradient differs.
        grads = torch.autograd.grad(value(*inputs), inputs)
        if cost == "euclidean":
            reference = torch.autograd.grad(paper_reference(list(inputs), detach=True), inputs)
            for got, want in zip(grads, reference):
                torch.testing.assert_close(got, want)
        full = CACRLoss(view_columns=VIEWS, cost=cost, temperature=0.5)
        full_grads = torch.autograd.grad(full(dict(zip(VIEWS, inputs)), {}).loss, inputs)
        assert not all(torch.allclose(a, b) for a, b in zip(grads, full_grads))
    else:
        assert torch.autograd.gradcheck(value, inputs)


def test_detached_repulsion_pushes_anchors_away_from_close_negatives():
    # Spec check 5: with detached weights, dL_CR/dz_i = -2 beta sum_j w_ij (z_i - z_j') (unit-sphere tangent part).
    views = random_views(num_views=2, rows=4, dim=3)
    z = [F.normalize(v, dim=-1).requires_grad_(True) for v in views.values()]
    loss = CACRLoss(beta=1.0, tau_neg=0.9, detach_weights=True)
    (grad,) = torch.autograd.grad(loss.repulsion(z), z[0])
    r = torch.cdist(z[0], z[1]).pow(2).detach()
    expected = torch.zeros_like(z[0])
    for i in range(4):
        others = [j for j in range(4) if j != i]
        w = (-0.9 * r[i, others]).softmax(0)
        expected[i] = -2 * sum(w[n] * (z[0][i] - z[1][j]) for n, j in enumerate(others)) / 4
    torch.testing.assert_close(grad, expected.detach())


def test_bad_input_is_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="missing \\['x_view_2'\\]"):
        CACRLoss()({"x_view_1": torch.randn(3, 2)}, {})
    with pytest.raises(ValueError, match="at least 2 view columns"):
        CACRLoss(view_columns=("x",))
    with pytest.raises(ValueError, match="cost must be one of"):
        CACRLoss(cost="rbf")
    with pytest.raises(ValueError, match="at least 2 rows"):
        CACRLoss()({"x_view_1": torch.randn(1, 2), "x_view_2": torch.randn(1, 2)}, {})
    with pytest.raises(ValueError, match="euclidean cost only"):
        CACRLoss(cost="cosine", debias_prior=0.1)


@pytest.mark.parametrize("cost", ["euclidean", "cosine"])
def test_two_processes_equal_one_process_with_the_doubled_batch(tmp_path, cost):
    from tests.vision.helpers import tiny_clip_tokenizer
    from tests.vision.multimodal_worker import assert_distributed_matches_single

    # The worker's "vectors" rows have three vector columns; CACR reads them as three views (math, not semantics).
    scenario = {
        "objective": "hf_contrastive.objectives.cacr:CACRLoss",
        "options": {"view_columns": ["a", "b", "c"], "cost": cost, "temperature": 0.5},
        "dataset": "vectors",
    }
    assert_distributed_matches_single(tmp_path, tiny_clip_tokenizer(), scenario)
