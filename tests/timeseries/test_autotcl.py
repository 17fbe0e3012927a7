"""AutoTCL: mask sampler, augmentation outputs, both losses (hand cases, gradients), alternating steps, reload."""

import math

import numpy as np
import pytest
import torch
from datasets import Dataset

from hf_contrastive.data.timeseries import StandardScaler
from hf_contrastive.models.autotcl import AutoTCLConfig, AutoTCLModel, hard_concrete_mask
from hf_contrastive.objectives.autotcl import (
    gaussian_mmd,
    global_infonce,
    local_infonce,
    local_segment_masks,
    mask_sparsity,
)
from hf_contrastive.trainers.autotcl import AutoTCLTrainer, AutoTCLTrainingConfig


def tiny_model(seed: int = 0, **overrides) -> AutoTCLModel:
    torch.manual_seed(seed)
    sizes = dict(input_dims=2, repr_dims=8, hidden_dims=8, depth=2, kernels=[1, 2, 4], aug_hidden_dims=8, aug_dim=4)
    return AutoTCLModel(AutoTCLConfig(**{**sizes, **overrides}))


def test_deterministic_hard_mask_thresholds_the_probability_at_the_spec_value():
    probabilities = torch.tensor([0.05, 0.09, 0.10, 0.5, 0.99])
    mask = hard_concrete_mask(probabilities, gumbel_bias=0.05, gamma_zeta=0.05, hard=True, noisy=False)
    keep = (0.5 + 0.05) / 1.05  # the stretched mask passes 0.5 when sigmoid(w) > 0.55 / 1.05
    threshold = math.log(keep / (1 - keep))  # logit = 0.0953 (spec check 1)
    torch.testing.assert_close(mask, (probabilities > threshold).float())
    # u = 1/2 cancels the noise: the noisy branch equals the deterministic one
    fixed = hard_concrete_mask(
        probabilities, 0.05, 0.05, True, noisy=True, uniform=torch.full_like(probabilities, 0.5)
    )
    torch.testing.assert_close(fixed, mask)


def test_noisy_hard_mask_is_binary_and_passes_a_straight_through_gradient():
    logits = torch.rand(64, 10, 3, requires_grad=True)
    mask = hard_concrete_mask(logits, gumbel_bias=0.05, gamma_zeta=0.05, hard=True)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    mask.sum().backward()
    assert logits.grad.abs().sum() > 0


def test_augmentation_shapes_and_mask_statistics():
    model = tiny_model()
    x = torch.randn(5, 32, 2)
    augmented = model.augment(x)
    for tensor in (augmented.repr_v, augmented.mask, augmented.mask_probability, augmented.scale):
        assert tensor.shape == (5, 32, 2)
    assert ((augmented.scale > 0) & (augmented.scale < 1)).all()  # invertible: g != 0
    torch.testing.assert_close(augmented.repr_v, augmented.scale * augmented.mask * x)
    # w_h in (0, 1) used as a logit biases the mask toward 1: P(keep) = P(sigmoid(w + noise) > 0.55/1.05) > 1/2
    large = model.augment(torch.randn(64, 64, 2))
    assert 0.5 < large.mask.mean().item() < 0.8


def test_global_infonce_with_orthonormal_identical_views_matches_the_closed_form():
    batch = 4
    pooled = torch.eye(batch, 6).unsqueeze(1).repeat(1, 3, 1)  # [B, T, D]; max over T = the unit rows
    loss = global_infonce(pooled, pooled, temperature=1.0)
    torch.testing.assert_close(loss, torch.tensor(-math.log(math.e / (math.e + batch - 1))))


def test_local_masks_have_one_positive_and_k_minus_3_negatives_per_row():
    positives, negatives = local_segment_masks(16)
    assert positives.sum(dim=1).tolist() == [1] * 16 and negatives.sum(dim=1).tolist() == [13] * 16
    assert positives[0, 1] and positives[15, 14] and not negatives[0, 2] and not negatives[15, 13]
    assert local_infonce(torch.randn(2, 15, 4), segments=16) == 0  # T < k


def test_local_infonce_matches_a_hand_computation():
    original = torch.randn(2, 8, 3)
    loss = local_infonce(original, segments=4, start=0)  # segments of 2 steps
    pooled = torch.nn.functional.normalize(original[0], dim=-1).reshape(4, 2, 3).max(dim=1).values
    similarity = pooled @ pooled.T
    positive = {0: 1, 1: 2, 2: 3, 3: 2}
    negative = {0: [3], 1: [3], 2: [0], 3: [0]}  # k=4: all but i-1, i, i+1 and the boundary exclusions
    expected = np.mean(
        [
            -torch.log_softmax(torch.stack([similarity[i, positive[i]], *similarity[i, negative[i]]]), 0)[0].item()
            for i in range(4)
        ]
    )
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_mmd_is_symmetric_zero_on_identical_batches_and_grows_with_a_shift():
    x, y = torch.randn(8, 5), torch.randn(8, 5)
    assert gaussian_mmd(x, x).abs() < 1e-6
    torch.testing.assert_close(gaussian_mmd(x, y), gaussian_mmd(y, x))
    assert gaussian_mmd(x, x + 0.5) < gaussian_mmd(x, x + 3.0)


def test_mask_sparsity_is_zero_below_threshold_and_pushes_the_mask_down_above():
    assert mask_sparsity(torch.full((2, 5, 2), 0.1), threshold=0.4) == 0  # sum_c = 0.2
    probabilities = torch.full((2, 5, 2), 0.5, requires_grad=True)
    mask_sparsity(probabilities, 0.4).backward()
    assert (probabilities.grad > 0).all()


def test_global_infonce_gradient_matches_finite_differences():
    original = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    view = torch.randn(3, 4, 5, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a: global_infonce(a, view, 0.5), (original,))


def test_mmd_gradient_matches_finite_differences_with_the_bandwidth_held_fixed():
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(4, 3, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a: gaussian_mmd(a, y, bandwidth=0.7), (x,))
    # the data-dependent bandwidth carries no gradient: same gradient as with its value passed as a constant
    total = torch.cat([x, y]).detach()
    bandwidth = (torch.cdist(total, total).pow(2).sum() / (8 * 7) / 4).item()
    (automatic,) = torch.autograd.grad(gaussian_mmd(x, y), x)
    (fixed,) = torch.autograd.grad(gaussian_mmd(x, y, bandwidth=bandwidth), x)
    torch.testing.assert_close(automatic, fixed)


def test_equal_weight_average_of_the_encoder_iterates():
    model = tiny_model()
    first = model.encoder.input_fc.weight.detach().clone()
    iterates = [first]
    for step in range(3):
        with torch.no_grad():
            model.encoder.input_fc.weight.add_(float(step + 1))
        iterates.append(model.encoder.input_fc.weight.detach().clone())
        model.update_average()
    torch.testing.assert_close(model.averaged_encoder.input_fc.weight, torch.stack(iterates).mean(0))
    assert int(model.n_averaged) == 4


def chunk_dataset(rows: int = 8, steps: int = 32) -> Dataset:
    values = np.random.default_rng(0).standard_normal((rows, steps, 2)).astype(np.float32)
    return Dataset.from_dict({"past_values": values.tolist()}).with_format("torch")


def parameters_of(module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def changed(before, module) -> bool:
    return any(not torch.equal(a, b) for a, b in zip(before, module.parameters()))


def make_trainer(tmp_path, model, **kwargs) -> AutoTCLTrainer:
    args = AutoTCLTrainingConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        logging_steps=1,
        **kwargs,
    )
    return AutoTCLTrainer(model, args, train_dataset=chunk_dataset())


def test_augmenter_step_changes_only_the_augmenter(tmp_path):
    model = tiny_model()
    trainer = make_trainer(tmp_path, model, max_steps=1)
    encoder, augmenter = parameters_of(model.encoder), parameters_of(model.augmenter)
    trainer.augmenter_step(model, torch.randn(4, 32, 2))
    assert changed(augmenter, model.augmenter) and not changed(encoder, model.encoder)
    assert all(p.grad is None for p in model.parameters())


def test_training_alternates_by_ratio_step(tmp_path):
    model = tiny_model(ratio_step=2)
    trainer = make_trainer(tmp_path, model, max_steps=2)
    steps = []
    original = trainer.augmenter_step
    trainer.augmenter_step = lambda m, x: steps.append(trainer.state.global_step) or original(m, x)
    encoder, averaged = parameters_of(model.encoder), parameters_of(model.averaged_encoder)
    trainer.train()
    assert steps == [0]  # steps 0 and 1: the augmenter updates at step 0 only
    assert changed(encoder, model.encoder) and changed(averaged, model.averaged_encoder)
    assert int(model.n_averaged) == 3
    logged = {k for entry in trainer.state.log_history for k in entry}
    assert {"loss_global", "loss_local", "aug_loss_mmd"} <= logged


def test_gradient_accumulation_is_refused(tmp_path):
    with pytest.raises(ValueError, match="gradient_accumulation_steps=1"):
        make_trainer(tmp_path, tiny_model(), max_steps=1, gradient_accumulation_steps=2)


def test_save_reload_identity_with_the_scaler(tmp_path):
    scaler = StandardScaler.fit(np.array([[0.0, 1.0], [2.0, 5.0]]))
    model = tiny_model(scaler=scaler.to_dict())
    model.update_average()
    model.save_pretrained(tmp_path)
    reloaded = AutoTCLModel.from_pretrained(tmp_path)
    x = torch.randn(2, 20, 2)
    torch.testing.assert_close(reloaded.encode(x), model.encode(x))
    torch.testing.assert_close(reloaded.encode(x, averaged=False), model.encode(x, averaged=False))
    np.testing.assert_array_equal(reloaded.scaler.mean, scaler.mean)
    assert int(reloaded.n_averaged) == 2


def test_bad_input_is_refused():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"past_values \[B, T, 2\]"):
        model(torch.randn(2, 10, 3))
    nan = torch.randn(2, 10, 2)
    nan[0, 3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        model(nan)
    with pytest.raises(ValueError, match="config.scaler has 1 channels"):
        AutoTCLConfig(input_dims=2, scaler={"mean": [0.0], "scale": [1.0]})


def test_fixed_augmentation_baseline_has_no_augmenter_step(tmp_path):
    model = tiny_model(augmentation="fixed", fixed_keep_probability=0.7)
    augmented = model.augment(torch.randn(32, 64, 2))
    assert abs(augmented.mask.mean().item() - 0.7) < 0.03 and ((augmented.scale >= 0.5) & (augmented.scale < 1)).all()
    trainer = make_trainer(tmp_path, model, max_steps=1)
    augmenter, encoder = parameters_of(model.augmenter), parameters_of(model.encoder)
    trainer.train()
    assert not changed(augmenter, model.augmenter) and changed(encoder, model.encoder)
