"""NT-Xent (the SimCLR-style add-on): hand-computed values, limiting cases, gradients, composition, 2 processes."""

import math

import pytest
import torch
import torch.nn.functional as F

from hf_contrastive.objectives.clip import CLIPLoss
from hf_contrastive.objectives.composite import CompositeObjective
from hf_contrastive.objectives.simclr import NTXentLoss

from ..objectives.distributed_objective import assert_two_processes_match_one


def nt_xent_reference(u: torch.Tensor, v: torch.Tensor, tau: float) -> torch.Tensor:
    """SimCLR's loop: 2B anchors, each against the other 2B - 1 rows, positive = its other view."""
    z = F.normalize(torch.cat([u, v]), dim=-1)
    n = u.shape[0]
    losses = []
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        others = [j for j in range(2 * n) if j != i]
        logits = torch.stack([z[i] @ z[j] / tau for j in others])
        losses.append(-(z[i] @ z[positive] / tau - torch.logsumexp(logits, dim=0)))
    return torch.stack(losses).mean()


def test_two_orthogonal_pairs_match_the_hand_computation():
    # u_1 = v_1 = e1, u_2 = v_2 = e2: each anchor sees its positive (cos 1) and two negatives (cos 0).
    u = torch.eye(2)
    tau = 0.5
    expected = -math.log(math.exp(2.0) / (math.exp(2.0) + 2.0))
    loss = NTXentLoss(("a", "b"), temperature=tau)({"a": u, "b": u.clone()}, {}).loss
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_random_views_match_the_simclr_loop():
    torch.manual_seed(0)
    u, v = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    loss = NTXentLoss(("a", "b"), temperature=0.2)({"a": u, "b": v}, {}).loss
    torch.testing.assert_close(loss, nt_xent_reference(u, v, 0.2))


def test_identical_rows_give_chance_level():
    rows = torch.ones(4, 3)
    loss = NTXentLoss(("a", "b"))({"a": rows, "b": rows.clone()}, {}).loss
    assert loss.item() == pytest.approx(math.log(2 * 4 - 1), rel=1e-6)  # 7 equal candidates


def test_gradient_matches_finite_differences():
    torch.manual_seed(1)
    u = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    v = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    objective = NTXentLoss(("a", "b"), temperature=0.3)
    assert torch.autograd.gradcheck(lambda a, b: objective({"a": a, "b": b}, {}).loss, (u, v))


def test_composes_with_the_clip_loss_as_a_weighted_sum():
    torch.manual_seed(2)
    embeddings = {name: torch.randn(4, 8) for name in ("image", "text", "image_view_1", "image_view_2")}
    clip, simclr = CLIPLoss(), NTXentLoss()
    composite = CompositeObjective([(clip, 1.0), (simclr, 0.5)])
    expected = clip(embeddings, {}).loss + 0.5 * simclr(embeddings, {}).loss
    torch.testing.assert_close(composite(embeddings, {}).loss, expected)
    assert NTXentLoss().effective_negatives(8, 0) == 14


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="exactly two view columns"):
        NTXentLoss(("a",))
    with pytest.raises(ValueError, match="missing"):
        NTXentLoss()({"image_view_1": torch.randn(2, 3)}, {})
    with pytest.raises(ValueError, match="at least 2 rows"):
        NTXentLoss(("a", "b"))({"a": torch.randn(1, 3), "b": torch.randn(1, 3)}, {})


def test_two_processes_match_one(tmp_path):
    torch.manual_seed(3)
    embeddings = {"a": torch.randn(8, 6, dtype=torch.float64), "b": torch.randn(8, 6, dtype=torch.float64)}
    batch = {"labels": torch.zeros(8)}  # the helper splits rows by the batch's labels
    assert_two_processes_match_one(tmp_path, lambda: NTXentLoss(("a", "b"), temperature=0.2), embeddings, batch)


def test_clip_rocket_with_the_simclr_addon_adds_nt_xent_on_the_image_views():
    from hf_contrastive.objectives.composite import clip_rocket_with

    torch.manual_seed(4)
    names = ("image", "text", "image_view_1", "image_view_2", "text_view_1", "text_view_2")
    embeddings = {name: torch.randn(4, 8) for name in names}
    objective = clip_rocket_with("simclr")
    rocket, simclr = objective.members
    assert simclr.view_columns == ("image_view_1", "image_view_2")
    expected = rocket(embeddings, {}).loss + simclr(embeddings, {}).loss
    torch.testing.assert_close(objective(embeddings, {}).loss, expected)
    with pytest.raises(ValueError, match="num_augs must be >= 2"):
        clip_rocket_with("simclr", num_augs=1)
