"""BarLIP, SiamLIP / BYOLIP, SwALIP and the composite objective on their limiting cases; the EMA update."""

import math

import pytest
import torch

from hf_contrastive.models.clip_rocket import CLIPRocketModel
from hf_contrastive.objectives.barlip import BarlowTwinsLoss, barlow_twins_loss
from hf_contrastive.objectives.clip_rocket import CL2LLoss
from hf_contrastive.objectives.composite import CompositeObjective, clip_rocket_with
from hf_contrastive.objectives.siamlip import BYOLIPLoss, SiamLIPLoss, negative_cosine
from hf_contrastive.objectives.swalip import SwALIPLoss, sinkhorn_knopp
from hf_contrastive.trainers.ema import EMAUpdate, ema_update
from tests.vision.helpers import tiny_clip, tiny_clip_tokenizer

# Standardised (mean 0, variance 1 over the 4 rows), mutually orthogonal columns.
ORTHOGONAL = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
COLLAPSED = torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0], [1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]])


def _columns(num_augs, head, global_value, local_value):
    names = ["image", "text"] + [f"{m}_view_{k}" for m in ("image", "text") for k in range(1, num_augs + 1)]
    return {f"{n}.{head}": (global_value if "_view_" not in n else local_value).clone() for n in names}


# ------------------------------------------------------------------------------------------------ BarLIP
def test_barlow_identity_correlation_is_zero_and_collapse_costs_off_diagonal_terms():
    assert barlow_twins_loss(ORTHOGONAL, ORTHOGONAL, 5e-3, 0.025).item() == pytest.approx(0.0, abs=1e-12)
    dim = COLLAPSED.shape[1]
    expected = 0.025 * 0.005 * dim * (dim - 1)
    assert barlow_twins_loss(COLLAPSED, COLLAPSED, 5e-3, 0.025).item() == pytest.approx(expected)


def test_barlip_averages_the_global_pair_and_every_local_pair():
    # The global pair has C = I (loss 0); the 4 local pairs are collapsed (3-dim): mean = 4 c / 5.
    embeddings = _columns(2, "barlow", torch.cat([ORTHOGONAL, torch.zeros(4, 1)], 1), COLLAPSED)
    embeddings["image.barlow"] = embeddings["text.barlow"] = torch.tensor(
        [[1.0, 1.0, 1.0], [1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]]
    )
    output = BarlowTwinsLoss(num_augs=2)(embeddings, {})
    assert output.logs["loss_global_pair"].item() == pytest.approx(0.0, abs=1e-12)
    assert output.loss.item() == pytest.approx(4 * 0.025 * 0.005 * 6 / 5)
    assert not BarlowTwinsLoss.supports_gradient_cache
    with pytest.raises(ValueError, match="text_view_2.barlow"):
        BarlowTwinsLoss(num_augs=2)({k: v for k, v in embeddings.items() if k != "text_view_2.barlow"}, {})


# ------------------------------------------------------------------------------------------------ SiamLIP
def test_negative_cosine_limits():
    v = torch.randn(5, 4)
    assert negative_cosine(v, v).item() == pytest.approx(0.0, abs=1e-6)
    assert negative_cosine(-v, v).item() == pytest.approx(4.0, abs=1e-6)


def test_siamlip_counts_2_plus_2a2_directed_pairs():
    v = torch.randn(3, 4)
    embeddings = {**_columns(2, "siam_proj", v, v), **_columns(2, "siam_pred", v, -v)}
    # Global predictions match their targets (0); the 8 local predictions oppose them (4 each).
    assert SiamLIPLoss(num_augs=2)(embeddings, {}).loss.item() == pytest.approx(8 * 4.0 / 10, abs=1e-6)


def test_siamlip_targets_get_no_gradient_as_targets():
    torch.manual_seed(0)
    predictor = torch.nn.Linear(4, 4)
    projections = {name: torch.randn(3, 4, requires_grad=True) for name in ("image", "text")}
    seen = {}
    for name, tensor in projections.items():
        tensor.register_hook(lambda grad, name=name: seen.__setitem__(name, grad.clone()))
    embeddings = {f"{n}.siam_proj": t for n, t in projections.items()}
    embeddings.update({f"{n}.siam_pred": predictor(t) for n, t in projections.items()})
    SiamLIPLoss(num_augs=0)(embeddings, {}).loss.backward()
    # The only path to v_I is through p_I = pred(v_I) predicting sg(v_T): compare with that path alone.
    for name, other in (("image", "text"), ("text", "image")):
        own = torch.randn(3, 4).copy_(projections[name].detach()).requires_grad_(True)
        (negative_cosine(predictor(own), projections[other].detach()) / 2).backward()
        torch.testing.assert_close(seen[name], own.grad)
    # With predictions that do not depend on the projections, the projections get no gradient at all.
    leaves = {name: torch.randn(3, 4, requires_grad=True) for name in ("image", "text")}
    free = {f"{n}.siam_proj": t for n, t in leaves.items()}
    free.update({f"{n}.siam_pred": torch.randn(3, 4, requires_grad=True) for n in leaves})
    SiamLIPLoss(num_augs=0)(free, {}).loss.backward()
    assert all(tensor.grad is None for tensor in leaves.values())


def test_byolip_reads_the_momentum_targets():
    v, p = torch.randn(3, 4), torch.randn(3, 4)
    embeddings = {**_columns(1, "siam_target", v, v), **_columns(1, "siam_pred", p, p)}
    assert "image.siam_target" in BYOLIPLoss(num_augs=1).required_columns
    expected = negative_cosine(p, v).item()
    assert BYOLIPLoss(num_augs=1)(embeddings, {}).loss.item() == pytest.approx(expected, abs=1e-6)


# ------------------------------------------------------------------------------------------------ SwALIP
def test_sinkhorn_rows_sum_to_one_and_a_dominant_diagonal_gives_the_identity():
    torch.manual_seed(0)
    similarities = (
        torch.nn.functional.normalize(torch.randn(6, 4), dim=-1)
        @ torch.nn.functional.normalize(torch.randn(9, 4), dim=-1).T
    )
    torch.testing.assert_close(sinkhorn_knopp(similarities).sum(dim=1), torch.ones(6))
    dominant = torch.full((5, 5), 0.3) + 0.7 * torch.eye(5)
    torch.testing.assert_close(sinkhorn_knopp(dominant), torch.eye(5), atol=1e-4, rtol=0)


def test_swalip_on_aligned_orthonormal_views_is_the_closed_form():
    """h_I^a = h_T^b = e_i: Q = I (up to exp(-1/eps) ~ 2e-9 off the diagonal), so L = log(1 + (N - 1) exp(-s_h))."""
    basis = torch.eye(4)
    embeddings = {f"{m}_view_{k}": basis.clone() for m in ("image", "text") for k in (1, 2)}
    loss = SwALIPLoss(num_augs=2, temperature=0.1)(embeddings, {}).loss
    assert loss.item() == pytest.approx(math.log(1 + 3 * math.exp(-10)), abs=1e-6)
    assert loss.item() > 1e-4  # not trivially 0: the off-diagonal probabilities are exp(-10) each


def test_swalip_targets_come_from_the_other_view_pair():
    """Targets of pair (a, b) are the assignments of ((a + 1) mod A, (b + 1) mod A): a change in view 2 only moves
    the targets of pair (1, 1) and the logits of pairs (2, .) / (., 2)."""
    torch.manual_seed(1)
    views = {f"{m}_view_{k}": torch.randn(5, 3) for m in ("image", "text") for k in (1, 2)}
    objective = SwALIPLoss(num_augs=2)
    image = [torch.nn.functional.normalize(views[f"image_view_{k}"], dim=-1) for k in (1, 2)]
    text = [torch.nn.functional.normalize(views[f"text_view_{k}"], dim=-1) for k in (1, 2)]
    terms = objective._swapped_cross_entropies(image, text, lambda t: t)
    scale = objective.local_log_scale.exp()
    s11, s22 = image[0] @ text[0].T, image[1] @ text[1].T
    expected = -(sinkhorn_knopp(s22) * torch.log_softmax(scale * s11, dim=-1)).sum(-1).mean()
    torch.testing.assert_close(terms[0], expected)
    with pytest.raises(ValueError, match="num_augs >= 2"):
        SwALIPLoss(num_augs=1)


# ------------------------------------------------------------------------------------------------ composite
def test_composite_is_the_weighted_sum_with_prefixed_logs():
    torch.manual_seed(0)
    embeddings = {f"{m}{s}": torch.randn(4, 6) for m in ("image", "text") for s in ("", "_view_1", "_view_2")}
    embeddings.update({f"{name}.barlow": torch.randn(4, 3) for name in list(embeddings)})
    rocket, barlip = CL2LLoss(num_augs=2), BarlowTwinsLoss(num_augs=2)
    composite = CompositeObjective([(rocket, 1.0), (barlip, 0.5)])
    output = composite(embeddings, {})
    expected = rocket(embeddings, {}).loss + 0.5 * barlip(embeddings, {}).loss
    torch.testing.assert_close(output.loss, expected)
    assert {"clip_rocket/loss", "clip_rocket/loss_local", "barlip/loss", "barlip/loss_global_pair"} <= set(output.logs)
    assert set(composite.required_columns) == set(rocket.required_columns) | set(barlip.required_columns)
    assert not composite.supports_gradient_cache and composite.name == "clip_rocket+barlip"
    assert composite.log_scale is rocket.log_scale
    assert composite.get_config_dict()["barlip"]["weight"] == 0.5


def test_clip_rocket_with_swalip_shares_the_local_temperature():
    objective = clip_rocket_with("swalip")
    rocket, swalip = objective.members
    assert swalip.local_log_scale is rocket.local_log_scale and rocket.label_smoothing == 0.0
    assert [name for name, _ in objective.named_parameters()] == ["members.0.log_scale", "members.0.local_log_scale"]
    assert objective.weights == [1.0, 0.2] and objective.supports_gradient_cache
    with pytest.raises(ValueError, match="label_smoothing=0"):
        clip_rocket_with("swalip", label_smoothing=0.1)
    with pytest.raises(ValueError, match="addon must be"):
        clip_rocket_with("moco")
    assert isinstance(clip_rocket_with(None), CL2LLoss)


# ------------------------------------------------------------------------------------------------ EMA
def test_ema_update_moves_targets_by_one_minus_momentum():
    online, target = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = target.weight.detach().clone()
    ema_update(target, online, momentum=0.99)
    torch.testing.assert_close(target.weight, 0.99 * before + 0.01 * online.weight.detach())
    with pytest.raises(ValueError, match="do not match"):
        ema_update(torch.nn.Sequential(target), online, 0.99)


def test_ema_callback_updates_the_model_momentum_encoder():
    model = CLIPRocketModel.from_clip(tiny_clip(tiny_clip_tokenizer()), siam_dim=4, siam_momentum_encoder=True)
    with torch.no_grad():
        model.clip.text_projection.weight.add_(1.0)  # not tracked: projections are outside the momentum encoder
        model.siam_projectors["image"][0].weight.add_(1.0)
    before = model.momentum_encoder["siam_projectors"]["image"][0].weight.detach().clone()
    callback = EMAUpdate(momentum=0.9)
    callback.on_train_begin(None, None, None, model=model)
    callback.on_step_end(None, None, None, model=model)
    online = model.siam_projectors["image"][0].weight.detach()
    torch.testing.assert_close(
        model.momentum_encoder["siam_projectors"]["image"][0].weight, 0.9 * before + 0.1 * online
    )
    with pytest.raises(ValueError, match="momentum_encoder"):
        callback.on_train_begin(None, None, None, model=torch.nn.Linear(2, 2))
