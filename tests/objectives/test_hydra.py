"""Hydra / SimLAP: the spec's limits (InfoNCE, SupCon-out), masks by hand, gate invariances, gradients, momentum."""

import pytest
import torch
import torch.nn.functional as F

from hf_contrastive.objectives.hydra import (
    HydraLoss,
    PairGate,
    gated_cosine,
    multi_positive_loss_sum,
    pair_masks,
)
from hf_contrastive.objectives.info_nce import InfoNCE

VIEWS = ("x_view_1", "x_view_2")


def views(rows=6, dim=5, seed=0, dtype=torch.float64, key_suffix=None):
    generator = torch.Generator().manual_seed(seed)
    out = {c: torch.randn(rows, dim, generator=generator, dtype=dtype) for c in VIEWS}
    if key_suffix:
        out.update({f"{c}.{key_suffix}": torch.randn(rows, dim, generator=generator, dtype=dtype) for c in VIEWS})
    return out


def hydra(**options):
    defaults = {"num_classes": 3, "embedding_dim": 5, "label_embedding_dim": 4, "gate_hidden_dim": 6}
    return HydraLoss(**{**defaults, **options}).double()


def supcon_out_reference(q, k, labels, temperature):
    """Per positive (same class, cross-view key), -log of its softmax against itself plus other-class keys only."""
    logits = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).T / temperature
    terms = []
    for i in range(len(labels)):
        negatives = logits[i][labels != labels[i]]
        for j in torch.nonzero(labels == labels[i]).flatten():
            terms.append(-logits[i, j] + torch.logsumexp(torch.cat([logits[i, j : j + 1], negatives]), 0))
    return torch.stack(terms).mean()


def test_unique_labels_identical_pairs_and_open_gate_give_symmetric_info_nce():
    # Spec check 1: every row its own class, p = y, g = 1, keys = the other view.
    z = views()
    labels = torch.arange(6)
    loss = hydra(num_classes=6, pair_mode="identical", gate="open", temperature=0.1)(z, {"labels": labels}).loss
    reference = InfoNCE(temperature=0.1, symmetric=True, mask_false_negatives=False)(
        {"anchor": z["x_view_1"], "positive": z["x_view_2"]}, {"column_names": ["anchor", "positive"]}
    ).loss
    torch.testing.assert_close(loss, reference, atol=1e-6, rtol=1e-6)


def test_identical_pairs_with_open_gate_give_supcon_without_other_positives_in_denominators():
    # Spec check 2: the positives are the same-class keys, each contrasted with the other-class keys only.
    z = views()
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    loss = hydra(pair_mode="identical", gate="open", temperature=0.2)(z, {"labels": labels}).loss
    reference = (
        supcon_out_reference(z["x_view_1"], z["x_view_2"], labels, 0.2)
        + supcon_out_reference(z["x_view_2"], z["x_view_1"], labels, 0.2)
    ) / 2
    torch.testing.assert_close(loss, reference)


def test_loss_is_invariant_to_adding_a_constant_to_a_row():
    # Spec check 3 (the reference code's row centring is numerical only).
    logits = torch.randn(4, 6, dtype=torch.float64)
    positives, excluded = pair_masks(
        torch.tensor([0, 0, 1, 2]), torch.tensor([1, 2, 0, 0]), torch.tensor([0, 0, 1, 2, 1, 2])
    )
    shifted = logits + torch.tensor([[3.0], [-7.0], [100.0], [0.5]], dtype=torch.float64)
    torch.testing.assert_close(
        multi_positive_loss_sum(logits, positives, excluded)[0],
        multi_positive_loss_sum(shifted, positives, excluded)[0],
    )


def test_gated_cosine_equals_the_explicit_gated_keys_and_ignores_the_gate_scale():
    # Spec check 4: normalise(q * g_i) . normalise(k_j * g_i) via the [B, N, D] tensor, and c * g gives the same.
    generator = torch.Generator().manual_seed(1)
    q, k = torch.randn(3, 5, generator=generator), torch.randn(4, 5, generator=generator)
    g = torch.rand(3, 5, generator=generator)
    explicit = torch.einsum("bd,bnd->bn", F.normalize(q * g, dim=-1), F.normalize(k[None] * g[:, None], dim=-1))
    torch.testing.assert_close(gated_cosine(q, k, g), explicit)
    torch.testing.assert_close(gated_cosine(q, k, 3.0 * g), explicit)


def test_one_hot_gate_scores_the_signs_of_one_dimension():
    q = torch.tensor([[0.5, -2.0, 1.0]])
    k = torch.tensor([[3.0, 1.0, 0.0], [-0.1, -4.0, 2.0]])
    g = torch.tensor([[0.0, 1.0, 0.0]])
    assert gated_cosine(q, k, g).tolist() == [[-1.0, 1.0]]  # sign(q_1) * sign(k_j1)


def test_masks_match_the_spec_hand_case():
    # Spec check 5: y = [0, 0, 1, 2], p = [1, 2, 0, 0], keys = the same 4 items.
    y = torch.tensor([0, 0, 1, 2])
    positives, excluded = pair_masks(y, torch.tensor([1, 2, 0, 0]), y)
    assert positives[0].tolist() == [False, False, True, False]
    assert excluded[0].tolist() == [True, True, True, False]  # one positive (key 2), one negative (key 3)
    assert positives[2].tolist() == [True, True, False, False]
    assert excluded[2].tolist() == [True, True, True, False]  # two positives, negative = key 3


def test_multi_positive_loss_by_hand():
    # Row 0: logits [1, 2, 3], positive key 1, negative key 2, key 0 excluded: log(e^2 + e^3) - 2.
    logits = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
    total, count = multi_positive_loss_sum(
        logits, torch.tensor([[False, True, False]]), torch.tensor([[True, True, False]])
    )
    assert count.item() == 1
    assert total.item() == pytest.approx(torch.log(torch.tensor(2.0).exp() + torch.tensor(3.0).exp()).item() - 2)


def test_a_row_without_positives_contributes_nothing():
    # Spec check 6: no key of the partner class -> 0 (and no division by zero when no row has one).
    logits = torch.randn(2, 3, dtype=torch.float64)
    positives = torch.tensor([[False, False, False], [False, True, False]])
    excluded = positives | torch.tensor([[True, False, False], [True, False, False]])
    total, count = multi_positive_loss_sum(logits, positives, excluded)
    only_row_1 = multi_positive_loss_sum(logits[1:], positives[1:], excluded[1:])[0]
    torch.testing.assert_close(total, only_row_1)
    loss = hydra(num_classes=4, pair_mode="distinct", gate="open")
    z = views(rows=2)
    # Labels 0 and 1 only; partners are drawn from {other classes}: rows whose partner is 2 or 3 have no positive.
    output = loss(z, {"labels": torch.tensor([0, 0])})  # every partner is 1, 2 or 3: no key has it
    assert output.loss.item() == 0.0


def test_partner_modes():
    labels = torch.tensor([0, 1, 1, 2, 2, 2])
    assert torch.equal(hydra(pair_mode="identical").sample_partners(labels), labels)
    arbitrary = hydra(pair_mode="arbitrary").sample_partners(labels)
    assert sorted(arbitrary.tolist()) == sorted(labels.tolist())  # a permutation of the batch's classes
    for _ in range(5):
        distinct = hydra(pair_mode="distinct").sample_partners(labels)
        assert (distinct != labels).all() and (distinct < 3).all()


def test_gate_receives_gradient_and_queries_are_detached_during_filter_warmup():
    # Spec check 8.
    z = {name: value.requires_grad_(True) for name, value in views().items()}
    loss = hydra(filter_warmup_steps=1)
    output = loss(z, {"labels": torch.tensor([0, 0, 1, 1, 2, 2])})
    output.loss.backward()
    # No momentum: the keys are the other view, so both views are detached in the pair term during the warm-up.
    assert z["x_view_1"].grad is None and z["x_view_2"].grad is None
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in loss.gate.parameters() if p.requires_grad)
    assert loss.gate.mlp[-1].weight.grad.abs().sum() > 0
    z2 = {name: value.detach().requires_grad_(True) for name, value in views().items()}
    loss(z2, {"labels": torch.tensor([0, 0, 1, 1, 2, 2])}).loss.backward()  # step 2: warm-up over
    assert torch.count_nonzero(z2["x_view_1"].grad) > 0


def test_gate_gradient_opens_dimensions_where_query_and_positive_agree():
    # Spec check 7: dimension 0 agrees in sign between each query and its positive key, dimension 1 disagrees;
    # a descent step on the gate's input raises g_0 and lowers g_1.
    q = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    k = torch.tensor([[1.0, -1.0], [1.0, 1.0]], dtype=torch.float64)
    gates = torch.full((2, 2), 0.5, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 1])
    positives, excluded = pair_masks(labels, labels, labels)
    total, _ = multi_positive_loss_sum(10 * gated_cosine(q, k, gates), positives, excluded)
    (grad,) = torch.autograd.grad(total, gates)
    assert (grad[:, 0] < 0).all() and (grad[:, 1] > 0).all()


@pytest.mark.parametrize("gate", ["open", "basic"])
@pytest.mark.parametrize("pair_mode", ["arbitrary", "distinct"])
def test_gradient_matches_finite_differences(gate, pair_mode):
    loss = hydra(gate=gate, pair_mode=pair_mode, fuse=pair_mode == "arbitrary")
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    inputs = tuple(v.requires_grad_(True) for v in views(rows=6, dim=5).values())

    def value(*tensors):
        loss.generator.manual_seed(0)  # the same partners at every evaluation
        return loss(dict(zip(VIEWS, tensors)), {"labels": labels}).loss

    assert torch.autograd.gradcheck(value, inputs)


def test_momentum_keys_get_no_gradient_and_terms_are_weighted():
    z = {name: value.requires_grad_(True) for name, value in views(key_suffix="key").items()}
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    loss = hydra(momentum_keys=True, alpha=0.5, beta=1.0, instance_temperature=0.3)
    output = loss(z, {"labels": labels})
    expected_instance = (
        F.cross_entropy(
            F.normalize(z["x_view_1"], dim=-1) @ F.normalize(z["x_view_2.key"], dim=-1).T / 0.3, torch.arange(6)
        )
        + F.cross_entropy(
            F.normalize(z["x_view_2"], dim=-1) @ F.normalize(z["x_view_1.key"], dim=-1).T / 0.3, torch.arange(6)
        )
    ) / 2
    torch.testing.assert_close(output.logs["instance_loss"], expected_instance.detach())
    expected = (expected_instance + output.logs["pair_loss"] + 0.5 * output.logs["class_loss"]) / 2.5
    torch.testing.assert_close(output.loss.detach(), expected.detach())
    output.loss.backward()
    assert z["x_view_1.key"].grad is None and z["x_view_2.key"].grad is None
    assert torch.count_nonzero(z["x_view_1"].grad) > 0


def test_gate_statistics_lie_between_closed_and_open():
    gate = PairGate(num_classes=3, embedding_dim=5, label_embedding_dim=4, hidden_dim=6)
    activation, entropy = gate.statistics()
    assert 0 < activation.item() < 5 and 0 < entropy.item() <= torch.log(torch.tensor(2.0)).item()
    assert hydra(gate="open").gate_statistics() == {"gate_activation": 5.0, "gate_entropy": 0.0}


def test_bad_input_is_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="needs class labels: set label_column"):
        hydra()(views(), {})
    with pytest.raises(ValueError, match="num_classes=3"):
        hydra()(views(), {"labels": torch.tensor([0, 1, 2, 3, 0, 1])})
    with pytest.raises(ValueError, match="class ids"):
        hydra()(views(), {"labels": torch.rand(6)})
    with pytest.raises(ValueError, match="missing \\['x_view_1.key', 'x_view_2.key'\\]"):
        hydra(momentum_keys=True)(views(), {"labels": torch.zeros(6, dtype=torch.long)})
    with pytest.raises(ValueError, match="needs momentum_keys=True"):
        hydra(instance_weight=1.0)
    with pytest.raises(ValueError, match="pair_mode must be one of"):
        hydra(pair_mode="random")


def labelled_vectors(rows=16, dim=6):
    from datasets import Dataset

    generator = torch.Generator().manual_seed(0)
    return Dataset.from_dict(
        {"x": torch.randn(rows, dim, generator=generator).tolist(), "label": [i % 3 for i in range(rows)]}
    )


def train_hydra(tmp_path, mode: str, momentum: bool = False):
    """3 steps of Hydra on a ViewEncoder through the MultiModalTrainer; the per-step gradients."""
    from hf_contrastive.data.multimodal import MultiModalCollator, stack_vectors
    from hf_contrastive.data.tabular import GaussianNoise
    from hf_contrastive.models.view_encoder import ViewEncoder, ViewEncoderConfig
    from hf_contrastive.trainers.ema import EMAUpdate
    from hf_contrastive.trainers.multimodal import MultiModalTrainer
    from tests.vision.multimodal_worker import MODES, CaptureGradients, config

    torch.manual_seed(0)
    model = ViewEncoder(
        ViewEncoderConfig(input_dim=6, hidden_dims=[8], projection_dim=8, embedding_dim=4, momentum_encoder=momentum)
    )
    views = {f"x_view_{k}": ("x", GaussianNoise(0.1, seed=k)) for k in (1, 2)}
    collator = MultiModalCollator({"x": stack_vectors}, views=views, label_column="label")
    objective = HydraLoss(
        num_classes=3, embedding_dim=4, label_embedding_dim=4, gate_hidden_dim=6, momentum_keys=momentum
    )
    args = config(str(tmp_path / mode), per_device_train_batch_size=8, label_column="label", **MODES[mode])
    trainer = MultiModalTrainer(
        model, args, train_dataset=labelled_vectors(), objective=objective, data_collator=collator
    )
    capture = CaptureGradients(model, trainer.objective)
    trainer.add_callback(capture)
    if momentum:
        trainer.add_callback(EMAUpdate(0.9))
    trainer.train()
    return model, capture.steps


def test_cached_steps_equal_uncached_steps_under_the_multimodal_trainer(tmp_path):
    _, plain = train_hydra(tmp_path, "plain")
    _, cached = train_hydra(tmp_path, "cached")
    assert len(plain) == len(cached) == 3
    for step_plain, step_cached in zip(plain, cached):
        assert step_plain.keys() == step_cached.keys()
        assert any(name.startswith("objective.gate") for name in step_plain)  # the gate trains with the objective
        for name in step_plain:
            torch.testing.assert_close(step_cached[name], step_plain[name], atol=1e-6, rtol=1e-5)


def test_momentum_keys_from_an_ema_encoder_train_under_the_trainer(tmp_path):
    model, steps = train_hydra(tmp_path, "plain", momentum=True)
    assert not any(name.startswith("momentum_encoder") for name in steps[0])  # keys get no gradient
    from hf_contrastive.models.view_encoder import ViewEncoder

    torch.manual_seed(0)
    initial = ViewEncoder(model.config).online_encoder().state_dict()  # the same seed: the weights before training
    online, momentum = model.online_encoder().state_dict(), model.momentum_encoder.state_dict()
    for name in ("backbone.0.weight", "head.2.weight"):
        # EMA: the momentum copy moved from the initial weights toward, but not onto, the trained ones.
        assert not torch.equal(momentum[name], initial[name]) and not torch.equal(momentum[name], online[name])


def test_two_processes_equal_one_process_with_the_doubled_batch(tmp_path):
    from tests.vision.helpers import tiny_clip_tokenizer
    from tests.vision.multimodal_worker import assert_distributed_matches_single

    # Columns a and b of the worker's labelled vectors serve as the two views; 3 classes, partners drawn globally.
    scenario = {
        "objective": "hydra",
        "options": {
            "num_classes": 3,
            "embedding_dim": 8,
            "view_columns": ["a", "b"],
            "label_embedding_dim": 4,
            "gate_hidden_dim": 6,
        },
        "dataset": "labelled_vectors",
        "config": {"label_column": "label"},
        "modes": ["plain"],
    }
    assert_distributed_matches_single(tmp_path, tiny_clip_tokenizer(), scenario)
