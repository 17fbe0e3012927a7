"""SepCLRLoss and SepCLRModel: the spec's value checks, a hand-computed batch, the s' gradient rules, limits,
finite differences, 2 processes vs 1, bad input, and the model's save / reload."""

import math

import pytest
import torch
import torch.nn.functional as F

from hf_contrastive.models.sepclr import SepCLRConfig, SepCLRModel
from hf_contrastive.objectives.sepclr import SepCLRLoss, joint_entropy_rows, uniformity

from .distributed_objective import assert_two_processes_match_one

UNIT = {"salient_weight": 1.0, "infoless_weight": 1.0, "jem_weight": 1.0}


def codes(c1, c2, s1, s2):
    return {"x_view_1": c1, "x_view_2": c2, "x_view_1.salient": s1, "x_view_2.salient": s2}


def random_codes(rows=6, dtype=torch.float64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return codes(*(torch.randn(rows, 3, generator=generator, dtype=dtype) for _ in range(4)))


def jem(c, s, tau=0.5):
    return joint_entropy_rows(c, s, c, s, tau).mean()


def test_uniformity_of_identical_and_antipodal_points():
    assert uniformity(torch.ones(4, 3), 0.5).item() == pytest.approx(0.0, abs=1e-12)
    assert uniformity(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]), 0.5).item() == pytest.approx(-4.0)


def test_jem_is_zero_for_identical_codes_and_near_minus_log_n_when_all_separate():
    assert jem(torch.ones(5, 2), torch.ones(5, 2)).item() == pytest.approx(0.0, abs=1e-12)
    far = torch.arange(5.0)[:, None] * 100
    assert jem(far, torch.zeros(5, 1)).item() == pytest.approx(-math.log(5), rel=1e-6)


def test_jem_is_lower_for_independent_codes_than_for_a_copy():
    generator = torch.Generator().manual_seed(1)
    c = F.normalize(torch.randn(200, 4, generator=generator), dim=1)
    independent = torch.randn(200, 4, generator=generator)
    assert jem(c, independent) < jem(c, c)


def test_hand_computed_batch():
    # Row 0 target, row 1 background; tau = 0.5 so every kernel is exp(-squared distance).
    c = torch.eye(2)
    s1, s2 = torch.tensor([[1.0], [3.0]]), torch.tensor([[2.0], [3.0]])
    out = SepCLRLoss(**UNIT)(codes(c, c.clone(), s1, s2), {"labels": torch.tensor([1, 0])})
    common = 0 + (-2 - 2)  # aligned views; unif of two orthogonal unit vectors: -||e1 - e2||^2 = -2
    salient = 1 + (-1 - 4)  # target alignment (1 - 2)^2; unif of s~ = [1, 0] and [2, 0]
    infoless = (9 + 9) / 2  # background salient codes 3 pulled to 0
    jem_loss = (math.log((1 + math.exp(-3)) / 2) + math.log((1 + math.exp(-6)) / 2)) / 2
    assert out.loss.item() == pytest.approx(common + salient + infoless + jem_loss, rel=1e-6)
    assert out.logs["infoless_loss"].item() == pytest.approx(infoless)
    assert out.logs["jem_loss"].item() == pytest.approx(jem_loss, rel=1e-6)


def test_background_salient_rows_move_only_through_the_infoless_term():
    embeddings = {k: v.requires_grad_() for k, v in random_codes().items()}
    target = torch.tensor([1, 0, 1, 0, 0, 1])
    no_infoless = SepCLRLoss(infoless_weight=0.0)(embeddings, {"labels": target}).loss
    grads = torch.autograd.grad(no_infoless, [embeddings["x_view_1.salient"], embeddings["x_view_2.salient"]])
    for grad in grads:
        assert (grad[target == 0] == 0).all() and (grad[target == 1] != 0).any()
    only_infoless = SepCLRLoss(salient_weight=0.0, jem_weight=0.0)(embeddings, {"labels": target}).loss
    s1 = embeddings["x_view_1.salient"]
    grad = torch.autograd.grad(only_infoless, s1)[0]
    # d/ds of 1000 * 1/2 * mean_bg ||s||^2 / (2 tau): a positive multiple of s (gradient descent pulls it to 0).
    torch.testing.assert_close(grad[target == 0], 1000.0 * s1[target == 0].detach() / 3)


def test_common_codes_are_normalised_and_salient_codes_are_not():
    embeddings, batch = random_codes(), {"labels": torch.tensor([1, 0, 1, 0, 0, 1])}
    loss = SepCLRLoss()(embeddings, batch).loss
    scaled_common = {**embeddings, "x_view_1": 3 * embeddings["x_view_1"]}
    scaled_salient = {**embeddings, "x_view_1.salient": 3 * embeddings["x_view_1.salient"]}
    assert SepCLRLoss()(scaled_common, batch).loss.item() == pytest.approx(loss.item(), rel=1e-10)
    assert SepCLRLoss()(scaled_salient, batch).loss.item() != pytest.approx(loss.item(), rel=1e-3)


def test_zero_salient_weights_give_alignment_and_uniformity_on_the_common_branch():
    embeddings = {k: v.requires_grad_() for k, v in random_codes().items()}
    objective = SepCLRLoss(salient_weight=0.0, infoless_weight=0.0, jem_weight=0.0)
    loss = objective(embeddings, {"labels": torch.tensor([1, 0, 1, 0, 0, 1])}).loss
    c1, c2 = F.normalize(embeddings["x_view_1"], dim=1), F.normalize(embeddings["x_view_2"], dim=1)
    expected = (c1 - c2).square().sum(dim=1).mean() + torch.pdist(c1).square().neg().exp().mean().log()
    expected = expected + torch.pdist(c2).square().neg().exp().mean().log()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-10)
    loss.backward()
    assert embeddings["x_view_1.salient"].grad is None or (embeddings["x_view_1.salient"].grad == 0).all()


def test_batch_without_background_rows_has_no_infoless_term_and_stays_finite():
    out = SepCLRLoss()(random_codes(), {"labels": torch.ones(6, dtype=torch.long)})
    assert torch.isfinite(out.loss) and out.logs["infoless_loss"].item() == 0.0


def test_gradient_matches_finite_differences():
    inputs = [v.requires_grad_() for v in random_codes(rows=5).values()]
    target = torch.tensor([1, 0, 1, 1, 0])
    objective = SepCLRLoss(**UNIT)

    def loss(c1, c2, s1, s2):
        return objective(codes(c1, c2, s1, s2), {"labels": target}).loss

    assert torch.autograd.gradcheck(loss, inputs, eps=1e-6, atol=1e-6)


def test_two_processes_match_one(tmp_path):
    batch = {"labels": torch.tensor([1, 0, 0, 1, 1, 1, 0, 1])}  # 2 / 3 targets per rank: unequal counts
    assert_two_processes_match_one(tmp_path, lambda: SepCLRLoss(**UNIT), random_codes(rows=8, seed=3), batch)


def test_batch_without_target_rows_is_refused():
    with pytest.raises(ValueError, match=r"needs target rows.*only background rows"):
        SepCLRLoss()(random_codes(), {"labels": torch.zeros(6, dtype=torch.long)})


def test_missing_or_non_binary_labels_are_refused():
    with pytest.raises(ValueError, match="label_column to the dataset's is_target column"):
        SepCLRLoss()(random_codes(), {})
    with pytest.raises(ValueError, match=r"values in \{0 \(background\), 1 \(target\)\}"):
        SepCLRLoss()(random_codes(), {"labels": torch.tensor([0, 1, 2, 0, 1, 0])})


def test_missing_salient_column_is_named():
    embeddings = random_codes()
    del embeddings["x_view_2.salient"]
    with pytest.raises(ValueError, match=r"missing \['x_view_2.salient'\]"):
        SepCLRLoss()(embeddings, {"labels": torch.ones(6)})


def test_negative_weights_are_refused():
    with pytest.raises(ValueError, match="jem_weight"):
        SepCLRLoss(jem_weight=-1.0)


# ------------------------------------------------------------------------------------------------------ model
@pytest.mark.parametrize(
    "config, features",
    [
        (SepCLRConfig(input_dim=7, hidden_dim=16, common_dim=4, salient_dim=3), {"values": torch.randn(5, 7)}),
        (
            SepCLRConfig(encoder="conv", num_channels=1, common_dim=4, salient_dim=3, projector_norm="layer"),
            {"pixel_values": torch.randn(5, 1, 12, 12)},
        ),
    ],
)
def test_model_embeds_common_and_salient_and_reloads(tmp_path, config, features):
    torch.manual_seed(0)
    model = SepCLRModel(config).eval()
    out = model.embed_column("x_view_1", features)
    assert out["embedding"].shape == (5, 4) and out["salient"].shape == (5, 3)
    common, salient = model.representations(model.inputs_of(features))
    assert common.shape == (5, 4) and salient.shape == (5, 3)
    model.save_pretrained(tmp_path)
    reloaded = SepCLRModel.from_pretrained(tmp_path).eval()
    for key, value in reloaded.embed_column("x_view_1", features).items():
        torch.testing.assert_close(value, out[key])


def test_model_config_errors_name_the_option():
    with pytest.raises(ValueError, match="input_dim"):
        SepCLRConfig(encoder="mlp")
    with pytest.raises(ValueError, match="projector_norm"):
        SepCLRConfig(input_dim=3, projector_norm="group")
    with pytest.raises(ValueError, match="'pixel_values' or 'values'"):
        SepCLRModel(SepCLRConfig(input_dim=3)).embed_column("x", {"input_ids": torch.ones(2, 3)})
