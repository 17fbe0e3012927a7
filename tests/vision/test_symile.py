"""Symile and the pairwise-CLIP baseline: the spec's checks 1-6 on hand-computable cases, and their zero-shot scores."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from hf_contrastive.objectives.clip import CLIPLoss
from hf_contrastive.objectives.symile import (
    PairwiseCLIPLoss,
    SymileLoss,
    mip,
    pairwise_clip_scores,
    shift_products,
    shuffled_product,
    symile_logits,
    symile_scores,
)

from .helpers import tiny_clip_tokenizer
from .multimodal_worker import assert_distributed_matches_single
from .multimodal_worker import run as run_modes

MODALITIES = ("a", "b", "c")


def representations(rows: int = 5, dim: int = 4, modalities=MODALITIES, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {m: torch.randn(rows, dim, generator=generator, dtype=torch.float64) for m in modalities}


def test_mip_of_the_hand_case_is_63():
    x, y, z = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0]), torch.tensor([5.0, 6.0])
    assert mip(x, y, z).item() == 63.0
    batch = mip(torch.stack([x, 2 * x]), torch.stack([y, y]), torch.stack([z, z]))
    assert batch.tolist() == [63.0, 126.0]


@pytest.mark.parametrize("negative_sampling", ["n", "n_squared"])
def test_two_modalities_equal_the_clip_loss(negative_sampling):
    reps = representations(6, 8, ("image", "text"))
    symile = SymileLoss(columns=("image", "text"), negative_sampling=negative_sampling, logit_scale_init=1.3)
    clip = CLIPLoss(temperature=math.exp(-1.3))
    got = symile(reps, {}).loss
    torch.testing.assert_close(got, clip(reps, {}).loss, atol=1e-6, rtol=0)
    # and the formula of the spec's check 1: 1/2 [CE(s x y^T) + CE(s y x^T)] on normalised rows
    x, y = (F.normalize(reps[m], dim=-1) for m in ("image", "text"))
    labels = torch.arange(6)
    expected = (
        F.cross_entropy(math.exp(1.3) * x @ y.T, labels) + F.cross_entropy(math.exp(1.3) * y @ x.T, labels)
    ) / 2
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def test_mip_is_symmetric_and_the_positive_logit_does_not_depend_on_the_anchor():
    reps = representations(4, 3)
    values = [mip(*(reps[m] for m in order)) for order in itertools.permutations(MODALITIES)]
    for value in values[1:]:
        torch.testing.assert_close(value, values[0])
    labels = torch.arange(4)
    generator = torch.Generator().manual_seed(0)
    for negative_sampling in ("n", "n_squared"):
        positives = []
        for anchor in MODALITIES:
            others = [reps[m] for m in MODALITIES if m != anchor]
            logits = symile_logits(reps[anchor], others, others, labels, negative_sampling, generator)
            positives.append(logits[labels, labels])
        for positive in positives:
            torch.testing.assert_close(positive, values[0])


def test_n_squared_layout_for_three_rows_enumerates_every_pair_once():
    # b_j and c_k are powers of distinct primes, so each product names its (j, k) pair
    b = torch.tensor([[2.0], [3.0], [5.0]])
    c = torch.tensor([[7.0], [11.0], [13.0]])
    products = shift_products([b, c]).squeeze(1)
    decode = {(b[j] * c[k]).item(): (j, k) for j in range(3) for k in range(3)}
    pairs = [decode[value.item()] for value in products]
    assert pairs == [(j, (j - k) % 3) for k in range(3) for j in range(3)]
    assert sorted(pairs) == list(itertools.product(range(3), repeat=2))
    # in the logits, row i's column i is the positive MIP(a_i, b_i, c_i)
    a = torch.tensor([[1.0], [10.0], [100.0]])
    labels = torch.arange(3)
    logits = symile_logits(a, [b, c], [b, c], labels, "n_squared")
    assert logits.shape == (3, 9)
    torch.testing.assert_close(logits[labels, labels], mip(a, b, c))


def test_n_squared_for_four_modalities_scores_every_row_combination():
    reps = representations(3, 2, ("a", "b", "c", "d"))
    labels = torch.arange(3)
    others = [reps["b"], reps["c"], reps["d"]]
    logits = symile_logits(reps["a"], others, others, labels, "n_squared")
    assert logits.shape == (3, 27)
    for i in range(3):
        brute = sorted(
            mip(reps["a"][i], reps["b"][j], reps["c"][k], reps["d"][m]).item()
            for j, k, m in itertools.product(range(3), repeat=3)
        )
        assert logits[i].sort().values.tolist() == pytest.approx(brute)
        assert logits[i, i].item() == pytest.approx(mip(reps["a"][i], reps["b"][i], reps["c"][i], reps["d"][i]).item())


def test_n_sampling_shuffles_each_non_anchor_and_keeps_the_positive_on_the_diagonal():
    reps = representations(6, 4)
    labels = torch.arange(6)
    others = [reps["b"], reps["c"]]
    logits = symile_logits(reps["a"], others, others, labels, "n", torch.Generator().manual_seed(3))
    products = shuffled_product(others, torch.Generator().manual_seed(3))
    expected = reps["a"] @ products.T
    off_diagonal = ~torch.eye(6, dtype=torch.bool)
    torch.testing.assert_close(logits[off_diagonal], expected[off_diagonal])
    torch.testing.assert_close(logits.diagonal(), mip(reps["a"], reps["b"], reps["c"]))
    # the two modalities get different permutations: their product is not a shuffle of the positive products
    generator = torch.Generator().manual_seed(3)
    first, second = torch.randperm(6, generator=generator), torch.randperm(6, generator=generator)
    assert not torch.equal(first, second)
    torch.testing.assert_close(products, reps["b"][first] * reps["c"][second])


@pytest.mark.parametrize(("negative_sampling", "columns"), [("n", 4), ("n_squared", 16)])
def test_identical_representations_give_the_chance_level_loss(negative_sampling, columns):
    same = torch.randn(1, 8, dtype=torch.float64).expand(4, 8)
    loss = SymileLoss(negative_sampling=negative_sampling, logit_scale_init=2.0)({m: same for m in MODALITIES}, {})
    assert loss.loss.item() == pytest.approx(math.log(columns))
    assert loss.logs["log_n"].item() == pytest.approx(math.log(4))


def test_identical_representations_of_four_modalities_give_log_n_cubed():
    same = torch.randn(1, 8).expand(3, 8)
    loss = SymileLoss(columns="abcd", negative_sampling="n_squared")({m: same for m in "abcd"}, {})
    assert loss.loss.item() == pytest.approx(math.log(27), rel=1e-5)


@pytest.mark.parametrize("negative_sampling", ["n", "n_squared"])
def test_anchor_gradient_matches_the_formula_of_check_6(negative_sampling):
    reps = representations(5, 4)
    anchor = reps["a"].clone().requires_grad_(True)
    labels = torch.arange(5)
    others = [reps["b"], reps["c"]]
    scale, row = 1.7, 2
    logits = symile_logits(anchor, others, others, labels, negative_sampling, torch.Generator().manual_seed(1))
    F.cross_entropy(scale * logits[row : row + 1], labels[row : row + 1]).backward()

    if negative_sampling == "n":
        products = shuffled_product(others, torch.Generator().manual_seed(1)).clone()
        products[row] = reps["b"][row] * reps["c"][row]  # the overwritten diagonal: the positive
    else:
        products = shift_products(others)
    probabilities = torch.softmax(scale * reps["a"][row] @ products.T, dim=0)
    positive = reps["b"][row] * reps["c"][row]
    negatives = [j for j in range(len(products)) if j != row]
    expected = scale * ((probabilities[row] - 1) * positive + probabilities[negatives] @ products[negatives])
    torch.testing.assert_close(anchor.grad[row], expected)
    assert torch.count_nonzero(anchor.grad[[r for r in range(5) if r != row]]) == 0


def test_raising_the_positive_mip_lowers_the_loss():
    reps = {m: t.float() for m, t in representations(5, 4).items()}
    objective = SymileLoss(negative_sampling="n_squared", normalize=False, logit_scale_init=0.0)
    before = objective(reps, {}).loss
    boosted = {**reps, "a": reps["a"] + 0.1 * reps["b"] * reps["c"]}  # moves each a_i towards its positive product
    assert objective(boosted, {}).loss < before


def test_n_permutations_are_fresh_per_call_and_reproducible_from_the_seed():
    reps = representations(8, 4)
    first, second = SymileLoss(seed=5), SymileLoss(seed=5)
    losses = [first(reps, {}).loss for _ in range(2)]
    assert losses[0] != losses[1]
    torch.testing.assert_close(second(reps, {}).loss, losses[0])


def test_pairwise_clip_is_the_sum_of_the_three_clip_losses():
    reps = representations(6, 4)
    pairwise = PairwiseCLIPLoss(logit_scale_init=1.0)(reps, {}).loss
    clip = CLIPLoss(temperature=math.exp(-1.0))
    expected = sum(
        clip({"image": reps[m], "text": reps[n]}, {}).loss for m, n in itertools.combinations(MODALITIES, 2)
    )
    torch.testing.assert_close(pairwise, expected, atol=1e-6, rtol=0)


def test_zero_shot_scores_match_their_definitions():
    reps = representations(3, 4)
    candidates = torch.randn(5, 4, dtype=torch.float64)
    scores = symile_scores(reps, "b", candidates)
    expected = torch.tensor(
        [[mip(reps["a"][q], candidates[k], reps["c"][q]).item() for k in range(5)] for q in range(3)]
    )
    torch.testing.assert_close(scores, expected.double())
    pairwise = pairwise_clip_scores(reps, "b", candidates)
    torch.testing.assert_close(pairwise, reps["a"] @ candidates.T + reps["c"] @ candidates.T)


def test_learned_scale_is_a_log_parameter_and_the_config_is_reported():
    objective = SymileLoss(columns=("x", "y", "z"), negative_sampling="n_squared", logit_scale_init=-0.3)
    assert objective.log_scale.item() == pytest.approx(-0.3)
    assert objective.scale().item() == pytest.approx(math.exp(-0.3))
    assert objective.get_config_dict()["negative_sampling"] == "n_squared"
    assert objective.effective_negatives(4, 0) == 15
    assert SymileLoss(learnable_logit_scale=False).scale() == pytest.approx(1 / 0.07)
    assert not list(SymileLoss(learnable_logit_scale=False).parameters())


def test_bad_arguments_and_missing_columns_are_refused():
    with pytest.raises(ValueError, match="negative_sampling"):
        SymileLoss(negative_sampling="all")
    with pytest.raises(ValueError, match="at least two distinct"):
        SymileLoss(columns=("a",))
    with pytest.raises(ValueError, match="at least two distinct"):
        PairwiseCLIPLoss(columns=("a", "a"))
    with pytest.raises(ValueError, match="missing \\['c'\\]"):
        SymileLoss()(representations(3, 2, ("a", "b")), {})
    with pytest.raises(ValueError, match="at least 2 rows"):
        SymileLoss()(representations(1, 2), {})
    with pytest.raises(ValueError, match="needs a generator"):
        reps = representations(3, 2)
        symile_logits(reps["a"], [reps["b"], reps["c"]], [reps["b"], reps["c"]], torch.arange(3), "n")


@pytest.mark.parametrize(("negative_sampling", "modes"), [("n", ["plain", "cached"]), ("n_squared", ["plain"])])
def test_two_processes_equal_one_process_with_the_doubled_batch(tmp_path, negative_sampling, modes):
    scenario = {
        "objective": "hf_contrastive.objectives.symile:SymileLoss",
        "options": {"negative_sampling": negative_sampling, "logit_scale_init": 1.0},
        "dataset": "vectors",
        "modes": modes,
    }
    assert_distributed_matches_single(tmp_path, tiny_clip_tokenizer(), scenario)


def test_cached_steps_equal_uncached_steps(tmp_path):
    tokenizer = tiny_clip_tokenizer()
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    scenario = {"objective": "hf_contrastive.objectives.symile:SymileLoss", "dataset": "vectors"}
    results = run_modes(str(tmp_path / "tokenizer"), 8, str(tmp_path / "runs"), scenario)
    assert results["plain"]["losses"] == pytest.approx(results["cached"]["losses"], rel=1e-6)
    for plain, cached in zip(results["plain"]["gradients"], results["cached"]["gradients"], strict=True):
        assert plain.keys() == cached.keys()
        for name in plain:
            torch.testing.assert_close(cached[name], plain[name], atol=1e-6, rtol=1e-5)
