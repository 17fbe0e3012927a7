"""SuperEdit's triplet objective: the spec's hand cases, masks, the start-step gate, gradients and targets."""

import pytest
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from hf_contrastive.objectives.superedit import (
    SuperEditTripletLoss,
    conditioning_dropout,
    denoising_target,
    per_sample_distance,
    triplet_mask,
    triplet_term,
)

SHAPE = (2, 4, 3, 3)


def call(objective, positive, negative, target, mask=None, step=10**6):
    mask = torch.ones(positive.shape[0]) if mask is None else mask
    return objective(
        {"positive": positive, "negative": negative}, {"target": target, "triplet_mask": mask, "step": step}
    )


@pytest.mark.parametrize(("margin", "expected_triplet"), [(0.02, 0.0), (0.05, 0.02)])
def test_hand_case_of_the_spec(margin, expected_triplet):
    target, positive, negative = torch.zeros(SHAPE), torch.full(SHAPE, 0.1), torch.full(SHAPE, 0.2)
    output = call(SuperEditTripletLoss(margin=margin, start_step=0), positive, negative, target)
    # d_pos = 0.01, d_neg = 0.04: relu(0.01 - 0.04 + m)
    assert output.logs["d_pos"].item() == pytest.approx(0.01)
    assert output.logs["d_neg"].item() == pytest.approx(0.04)
    assert output.logs["triplet_loss"].item() == pytest.approx(expected_triplet, abs=1e-7)
    assert output.loss.item() == pytest.approx(0.01 + expected_triplet, abs=1e-7)
    assert output.logs["frac_active"].item() == (1.0 if expected_triplet else 0.0)


def test_identical_instructions_give_the_margin_with_zero_gradient():
    torch.manual_seed(0)
    target = torch.randn(SHAPE)
    prediction = torch.randn(SHAPE, requires_grad=True)
    d = per_sample_distance(prediction, target)
    triplet, per_sample = triplet_term(d, per_sample_distance(prediction, target), torch.ones(2), margin=5e-4)
    assert torch.equal(per_sample, torch.full((2,), 5e-4))
    assert triplet.item() == pytest.approx(5e-4, rel=1e-6)
    (gradient,) = torch.autograd.grad(triplet, prediction)
    assert torch.count_nonzero(gradient) == 0


def test_masked_mean_and_threshold():
    d_pos, d_neg = torch.tensor([0.3, 0.1, 0.2]), torch.tensor([0.1, 0.1, 0.25])
    # t = relu(d_pos - d_neg + 0.1) = [0.3, 0.1, 0.05]
    triplet, per_sample = triplet_term(d_pos, d_neg, torch.tensor([1.0, 0.0, 1.0]), margin=0.1)
    assert torch.allclose(per_sample, torch.tensor([0.3, 0.1, 0.05]))
    assert triplet.item() == pytest.approx(0.35 / 2, rel=1e-6)
    thresholded, _ = triplet_term(d_pos, d_neg, torch.ones(3), margin=0.1, threshold=0.08)
    assert thresholded.item() == pytest.approx(0.4 / 3, rel=1e-6)
    empty, _ = triplet_term(d_pos, d_neg, torch.zeros(3), margin=0.1)
    assert empty.item() == 0.0


def test_conditioning_dropout_and_mask_modes_of_the_spec():
    dropout = conditioning_dropout(torch.tensor([0.01, 0.07, 0.12, 0.5]), probability=0.05)
    assert dropout.text_dropped.tolist() == [True, True, False, False]
    assert dropout.image_dropped.tolist() == [False, True, True, False]
    assert triplet_mask(dropout, "official").tolist() == [0.0, 1.0, 1.0, 1.0]
    assert triplet_mask(dropout, "both_available").tolist() == [0.0, 0.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="triplet_mask_mode"):
        triplet_mask(dropout, "strict")


def test_start_step_gates_the_term_and_reduces_to_the_plain_mse():
    objective = SuperEditTripletLoss(margin=0.5, weight=2.0, start_step=100)
    assert [objective.weight_at(step) for step in (0, 99, 100, 5000)] == [0.0, 0.0, 2.0, 2.0]
    torch.manual_seed(0)
    positive, negative, target = torch.randn(SHAPE), torch.randn(SHAPE), torch.randn(SHAPE)
    plain = F.mse_loss(positive, target)
    for output in (call(objective, positive, negative, target, step=99), call(objective, positive, None, target)):
        assert torch.equal(output.loss, plain)
        assert set(output.logs) == {"mse_loss"}
    on = call(objective, positive, negative, target, step=100)
    assert torch.allclose(on.loss, plain + 2.0 * on.logs["triplet_loss"])


def test_sgd_step_on_the_triplet_term_pushes_the_negative_away_only():
    torch.manual_seed(0)
    target = torch.randn(SHAPE)
    positive = torch.nn.Parameter(target + 0.1 * torch.randn(SHAPE))
    negative = torch.nn.Parameter(target + 0.1 * torch.randn(SHAPE))
    objective = SuperEditTripletLoss(margin=1.0, start_step=0, stop_pos_grad=True)
    before = [per_sample_distance(p, target).detach() for p in (positive, negative)]
    output = call(objective, positive, negative, target)
    triplet = output.loss - F.mse_loss(positive, target)  # the triplet term alone
    triplet.backward()
    assert torch.count_nonzero(positive.grad) == 0
    with torch.no_grad():
        negative -= 0.1 * negative.grad
    after = [per_sample_distance(p, target).detach() for p in (positive, negative)]
    assert torch.equal(after[0], before[0])
    assert (after[1] > before[1]).all()


def test_without_stop_pos_grad_the_triplet_term_also_pulls_the_positive():
    torch.manual_seed(0)
    target, positive = torch.randn(SHAPE), torch.randn(SHAPE, requires_grad=True)
    negative = torch.randn(SHAPE)
    output = call(SuperEditTripletLoss(margin=10.0, start_step=0), positive, negative, target)
    (gradient,) = torch.autograd.grad(output.loss - F.mse_loss(positive, target), positive)
    d_pos = per_sample_distance(positive, target)
    (expected,) = torch.autograd.grad(d_pos.mean(), positive)  # every sample active, mask all ones
    assert torch.allclose(gradient, expected, atol=1e-7)


def test_targets_for_epsilon_and_v_prediction():
    scheduler = DDPMScheduler()
    torch.manual_seed(0)
    latents, noise, timesteps = torch.randn(SHAPE), torch.randn(SHAPE), torch.tensor([10, 900])
    assert denoising_target(scheduler, latents, noise, timesteps, "epsilon") is noise
    alpha_bar = scheduler.alphas_cumprod[timesteps].view(-1, 1, 1, 1)
    velocity = alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * latents
    assert torch.allclose(denoising_target(scheduler, latents, noise, timesteps, "v_prediction"), velocity, atol=1e-6)
    with pytest.raises(ValueError, match="prediction_type"):
        denoising_target(scheduler, latents, noise, timesteps, "sample")


def test_bad_options_are_refused_and_the_config_feeds_the_card():
    with pytest.raises(ValueError, match="margin"):
        SuperEditTripletLoss(margin=-1.0)
    assert SuperEditTripletLoss().get_config_dict() == {
        "margin": 5e-4,
        "weight": 1.0,
        "start_step": 2000,
        "threshold": 0.0,
        "stop_pos_grad": False,
    }
