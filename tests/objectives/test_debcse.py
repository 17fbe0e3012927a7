"""DebCSE: surface features, IPW weights and the loss by hand; gradients; cached and 2-process equivalence."""

import math
from pathlib import Path

import pytest
import torch

from hf_contrastive.cache import GradientCache, select_rows
from hf_contrastive.data import ContrastiveCollator
from hf_contrastive.objectives import InfoNCE, build_objective, split_columns
from hf_contrastive.objectives.debcse import (
    DebCSE,
    debcse_loss,
    ipw_weights,
    length_difference,
    normalize_rows,
    pair_bins,
    sample_rows,
    surface_similarity,
    token_sets,
)
from hf_contrastive.scripts.train_embeddings import parse_args

from ..conftest import SENTENCES, make_tiny_encoder
from ..trainers.distributed_check import assert_distributed_matches_single

# ----------------------------------------------------------------------------------------------- hand-made batch
# Token ids with [CLS] = 1, [SEP] = 2, padding 0: sets {10, 11, 12}, {10, 11, 13}, {20, 21} once 1 and 2 (present in
# every text) are dropped. Jaccard(s0, s1) = 2/4; lengths 3, 3, 2.
IDS = torch.tensor([[1, 10, 11, 12, 2], [1, 10, 11, 13, 2], [1, 20, 21, 2, 0]])
# Unit vectors: cos(e0, e1) = 0.8, cos(e0, e2) = 0, cos(e1, e2) = 0.6 * 0.28 = 0.168.
VECTORS = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.0, 0.28, 0.96]], dtype=torch.float64)


def single_column_batch(ids: torch.Tensor, hashes: list[int] | None = None) -> dict:
    """The collator's layout for a ``text`` column: the same texts as ``anchor`` and ``positive`` rows."""
    hashes = torch.tensor(hashes if hashes is not None else list(range(len(ids))))
    return {
        "input_ids": ids.repeat(2, 1),
        "attention_mask": (ids > 0).long().repeat(2, 1),
        "column_names": ("anchor", "positive"),
        "input_hashes": hashes.repeat(2, 1),
    }


def hand_objective(**overrides) -> DebCSE:
    options = dict(
        temperature=1.0,
        num_neighbors=1,
        positive_threshold=0.7,
        negative_threshold=0.5,
        surface_bins=2,
        length_bins=2,
        semantic_source="model",
    )
    return DebCSE(**{**options, **overrides})


# ----------------------------------------------------------------------------------------------- surface features
def test_token_sets_drop_padding_and_tokens_common_to_every_text():
    sets, lengths = token_sets(IDS, IDS > 0, exclude_common=True)
    assert sets.sum(dim=0).tolist() == [0, 0, 2, 2, 1, 1, 1, 1]  # distinct ids 1, 2, 10, 11, 12, 13, 20, 21
    assert lengths.tolist() == [3, 3, 2]
    _, with_special = token_sets(IDS, IDS > 0, exclude_common=False)
    assert with_special.tolist() == [5, 5, 4]


def test_jaccard_overlap_and_length_difference_by_hand():
    ids = torch.tensor([[5, 6, 7, 7], [6, 7, 8, 0], [9, 0, 0, 0]])
    sets, lengths = token_sets(ids, ids > 0, exclude_common=False)
    jaccard = surface_similarity(sets, sets, "jaccard")
    overlap = surface_similarity(sets, sets, "overlap")
    # {5,6,7} vs {6,7,8}: |&| = 2, |U| = 4, min = 3; {9} shares nothing.
    torch.testing.assert_close(jaccard, torch.tensor([[1.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    assert overlap[0, 1].item() == pytest.approx(2 / 3)
    assert lengths.tolist() == [4, 3, 1]  # repeated tokens count toward the length
    torch.testing.assert_close(length_difference(lengths, lengths)[0], torch.tensor([0.0, 0.25, 0.75]))


def test_two_empty_texts_are_identical_not_nan():
    empty = torch.zeros(2, 3)
    assert surface_similarity(empty, empty).tolist() == [[1.0, 1.0], [1.0, 1.0]]
    assert length_difference(torch.zeros(2), torch.zeros(2)).tolist() == [[0.0, 0.0], [0.0, 0.0]]


def test_bins_put_edges_in_the_upper_bin_and_one_in_the_last():
    surface = torch.tensor([[0.0, 0.0999, 0.7, 1.0]])
    length = torch.tensor([[0.0, 0.2, 0.39, 1.0]])
    assert pair_bins(surface, length, surface_bins=10, length_bins=5).tolist() == [[0, 0 * 5 + 1, 7 * 5 + 1, 49]]


# ----------------------------------------------------------------------------------------------- IPW weights
def test_ipw_balances_bins_spec_hand_case():
    """papers/debcse.md 8.1: three candidates in bin H (e = 0.75), one in L (e = 0.25), equal gates."""
    pool = torch.ones(1, 4, dtype=torch.bool)
    bins = torch.tensor([[1, 1, 1, 0]])
    weights = ipw_weights(pool, bins, torch.ones(1, 4), num_bins=2, epsilon=1e-3)
    torch.testing.assert_close(weights, torch.tensor([[4 / 3, 4 / 3, 4 / 3, 4.0]]))
    normalised = normalize_rows(weights)
    torch.testing.assert_close(normalised, torch.tensor([[1 / 6, 1 / 6, 1 / 6, 0.5]]))
    assert normalised[0, :3].sum().item() == pytest.approx(normalised[0, 3].item())


def test_propensity_floor_bounds_the_weight_of_a_rare_bin():
    pool = torch.ones(1, 4000, dtype=torch.bool)
    bins = torch.zeros(1, 4000, dtype=torch.long)
    bins[0, 0] = 1  # e = 1 / 4000 < eps
    weights = ipw_weights(pool, bins, torch.ones(1, 4000), num_bins=2, epsilon=1e-3)
    assert weights[0, 0].item() == pytest.approx(1000.0)
    assert torch.isfinite(weights).all()


def test_weights_outside_the_pool_and_all_zero_rows_stay_zero():
    pool = torch.tensor([[True, False], [False, False]])
    weights = ipw_weights(pool, torch.zeros(2, 2, dtype=torch.long), torch.ones(2, 2), num_bins=1, epsilon=1e-3)
    assert normalize_rows(weights).tolist() == [[1.0, 0.0], [0.0, 0.0]]


def test_ipw_removes_the_surface_shortcut_but_keeps_the_semantic_signal():
    """papers/debcse.md 8.2: surface similarity predicts the label in the pools (r > 0.8), not after IPW (|r| < 0.1)."""
    generator = torch.Generator().manual_seed(0)
    bins = torch.arange(10)
    counts_pos = torch.tensor([1, 1, 1, 2, 5, 20, 60, 150, 300, 500])  # positives: mostly high surface similarity
    counts_neg = counts_pos.flip(0)
    u_pos = (bins.repeat_interleave(counts_pos) + torch.rand(counts_pos.sum(), generator=generator)) / 10
    u_neg = (bins.repeat_interleave(counts_neg) + torch.rand(counts_neg.sum(), generator=generator)) / 10
    v_pos = 0.8 + 0.1 * torch.rand(len(u_pos), generator=generator)
    v_neg = 0.2 * torch.rand(len(u_neg), generator=generator)
    surface, semantic = torch.cat([u_pos, u_neg]), torch.cat([v_pos, v_neg])
    label = torch.cat([torch.ones(len(u_pos)), torch.zeros(len(u_neg))])

    def selected(u, pool_bins):
        weights = ipw_weights(
            torch.ones(1, len(u), dtype=torch.bool), pool_bins[None], torch.ones(1, len(u)), 10, 1e-3
        )
        return normalize_rows(weights)[0]

    ipw = torch.cat([selected(u_pos, (u_pos * 10).long()), selected(u_neg, (u_neg * 10).long())])
    uniform = torch.cat([torch.full_like(u_pos, 1 / len(u_pos)), torch.full_like(u_neg, 1 / len(u_neg))])
    assert weighted_correlation(surface, label, uniform) > 0.8
    assert abs(weighted_correlation(surface, label, ipw)) < 0.1
    assert weighted_correlation(semantic, label, ipw) > 0.8


def weighted_correlation(x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor) -> float:
    weights = weights / weights.sum()
    dx, dy = x - (weights * x).sum(), y - (weights * y).sum()
    return ((weights * dx * dy).sum() / ((weights * dx**2).sum() * (weights * dy**2).sum()).sqrt()).item()


def test_pair_weights_of_a_hand_made_batch():
    """Pools, bins (2 x 2), propensities and gates computed by hand for three sentences (tau = 1)."""
    objective = hand_objective()
    batch = single_column_batch(IDS)
    surface, bins = objective.pair_features(batch, ["positive"])
    torch.testing.assert_close(surface, torch.tensor([[1.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    assert bins.tolist() == [[2, 2, 0], [2, 2, 0], [0, 0, 2]]  # l(s0, s2) = 1/3 -> length bin 0
    semantic = VECTORS @ VECTORS.T
    excluded = torch.zeros(3, 3, dtype=torch.bool)
    positive, negative = objective.pair_weights(semantic, surface.double(), bins, excluded)
    # C+ = own + top-1 by v: {0, 1}, {1, 0}, {2, 1}; e+(bin 2) = 5/6; gates 0.3 (own), 0.1 (v = 0.8), 0 (v = 0.168).
    expected_positive = [[0.75, 0.25, 0.0], [0.25, 0.75, 0.0], [0.0, 0.0, 1.0]]
    torch.testing.assert_close(positive, torch.tensor(expected_positive, dtype=torch.float64))
    # C- = all others; e-(bin 0) = 4/6; gates 0.5 - v: 0 for v = 0.8, 0.5 for v = 0, 0.332 for v = 0.168.
    anchor_2 = [0.5 / (0.5 + 0.332), 0.332 / (0.5 + 0.332), 0.0]
    expected_negative = [[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], anchor_2]
    torch.testing.assert_close(negative, torch.tensor(expected_negative, dtype=torch.float64))


def test_gates_remove_false_negatives_and_weak_positives_from_every_draw():
    """papers/debcse.md 8.3: v >= theta- is never a hard negative, v <= theta+ never a positive (own fallback)."""
    objective = hand_objective(num_neighbors=2, positive_threshold=0.9)
    surface, bins = objective.pair_features(single_column_batch(IDS), ["positive"])
    semantic = VECTORS @ VECTORS.T
    positive, negative = objective.pair_weights(semantic, surface.double(), bins, torch.zeros(3, 3, dtype=torch.bool))
    generator = torch.Generator().manual_seed(0)
    draws = sample_rows(negative.repeat(1000, 1), generator)
    assert draws[0::3, 1].sum() == 0 and draws[1::3, 0].sum() == 0  # v = 0.8 >= 0.5
    assert (positive == torch.eye(3, dtype=torch.float64)).all()  # only the own positives pass v > 0.9


def test_duplicated_texts_are_in_no_pool_and_no_denominator():
    ids = torch.tensor([[1, 10, 2], [1, 10, 2], [1, 20, 2]])
    batch = single_column_batch(ids, hashes=[7, 7, 9])  # rows 0 and 1 repeat one text
    objective = hand_objective(num_neighbors=0, positive_threshold=-1.0, negative_threshold=2.0)
    excluded = objective.excluded_pairs(batch, ["positive"], torch.arange(3))
    assert excluded.tolist() == [[False, True, False], [True, False, False], [False, False, False]]
    surface, bins = objective.pair_features(batch, ["positive"])
    positive, negative = objective.pair_weights(VECTORS @ VECTORS.T, surface.double(), bins, excluded)
    assert (positive[excluded] == 0).all() and (negative[excluded] == 0).all()
    assert negative[2, :2].gt(0).all()  # the distinct text still gets both as hard negatives
    out = objective({"anchor": VECTORS, "positive": VECTORS}, batch)
    s = (VECTORS @ VECTORS.T)[0]
    z = math.exp(s[0]) + math.exp(s[2])  # s[1] is the duplicate: not in the denominator
    expected_row_0 = -s[0].item() + math.log(z + math.exp(s[2]))  # own positive only; hard negative s2
    rows = debcse_loss(VECTORS @ VECTORS.T, positive, negative, excluded)
    assert rows[0].item() == pytest.approx(expected_row_0)
    assert out.loss.item() == pytest.approx(rows.mean().item())


# ----------------------------------------------------------------------------------------------- loss
def test_loss_by_hand_with_a_mined_positive_and_a_hard_negative():
    scores = torch.tensor([[2.0, 1.0, 0.5, -1.0]])
    positive = torch.tensor([[0.75, 0.25, 0.0, 0.0]])
    negative = torch.tensor([[0.0, 0.0, 0.4, 0.6]])
    excluded = torch.tensor([[False, False, False, True]])  # excluded from Z, still a weighted hard negative here
    z = math.exp(2.0) + math.exp(1.0) + math.exp(0.5)
    expected = -(0.75 * 2.0 + 0.25 * 1.0) + 0.4 * math.log(z + math.exp(0.5)) + 0.6 * math.log(z + math.exp(-1.0))
    assert debcse_loss(scores, positive, negative, excluded).item() == pytest.approx(expected, rel=1e-6)
    no_negative = debcse_loss(scores, positive, torch.zeros_like(negative), excluded)
    assert no_negative.item() == pytest.approx(-(0.75 * 2.0 + 0.25 * 1.0) + math.log(z), rel=1e-6)


def test_forward_of_the_hand_made_batch():
    objective = hand_objective()
    out = objective({"anchor": VECTORS, "positive": VECTORS}, single_column_batch(IDS))
    s = (VECTORS @ VECTORS.T).tolist()
    w2 = [0.5 / 0.832, 0.332 / 0.832]
    rows = []
    for i, (positive, negative) in enumerate(
        [([0.75, 0.25, 0], [0, 0, 1]), ([0.25, 0.75, 0], [0, 0, 1]), ([0, 0, 1], [*w2, 0])]
    ):
        z = sum(math.exp(x) for x in s[i])
        positive_term = sum(p * x for p, x in zip(positive, s[i]))
        negative_term = sum(n * math.log(z + math.exp(x)) for n, x in zip(negative, s[i]))
        rows.append(negative_term - positive_term)
    assert out.loss.item() == pytest.approx(sum(rows) / 3, rel=1e-9)
    assert out.logs["mined_positive_share"].item() == pytest.approx(1 / 6)
    assert out.logs["hard_negative_rate"].item() == 1.0
    assert out.logs["positive_surface"].item() == pytest.approx((0.875 + 0.875 + 1.0) / 3)


def test_unsupervised_simcse_limit_spec_hand_case():
    """papers/debcse.md 8.4: N = 2 orthonormal identical views, tau = 1 -> log(1 + e^-1) = 0.3133 per row."""
    objective = DebCSE(temperature=1.0, num_neighbors=0, hard_negatives=False, semantic_source="model")
    views = torch.eye(2)
    out = objective({"anchor": views, "positive": views}, single_column_batch(torch.tensor([[1, 3, 2], [1, 4, 2]])))
    assert out.loss.item() == pytest.approx(math.log1p(math.exp(-1.0)), abs=1e-6)
    assert out.loss.item() == pytest.approx(0.3133, abs=1e-4)


def test_without_mined_pairs_it_equals_info_nce():
    torch.manual_seed(0)
    anchors, positives = torch.randn(5, 8), torch.randn(5, 8)
    ids = torch.randint(3, 50, (5, 6))
    batch = single_column_batch(ids, hashes=[1, 2, 3, 2, 5])  # one duplicated text: masked in both
    debcse = DebCSE(temperature=0.1, num_neighbors=0, hard_negatives=False, semantic_source="model")
    info_nce = InfoNCE(temperature=0.1)
    expected = info_nce({"anchor": anchors, "positive": positives}, batch).loss
    assert debcse({"anchor": anchors, "positive": positives}, batch).loss.item() == pytest.approx(expected.item())


def test_simcse_weight_adds_the_plain_in_batch_term():
    torch.manual_seed(1)
    columns = {"anchor": torch.randn(4, 8), "positive": torch.randn(4, 8)}
    batch = single_column_batch(torch.randint(3, 50, (4, 6)))
    options = dict(
        temperature=0.2, num_neighbors=2, positive_threshold=-1.0, negative_threshold=1.0, semantic_source="model"
    )
    plain = DebCSE(**options)(columns, batch).loss
    mixed = DebCSE(**options, simcse_weight=0.5)(columns, batch).loss
    simcse = InfoNCE(temperature=0.2)(columns, batch).loss
    assert mixed.item() == pytest.approx(plain.item() + 0.5 * simcse.item(), rel=1e-6)


def test_weighted_mode_is_the_expectation_of_sampling():
    """papers/debcse.md 8.5: the mean loss over 10k sampled (positive, hard negative) pairs equals weighted mode."""
    torch.manual_seed(2)
    scores = torch.randn(3, 5, dtype=torch.float64) * 2
    excluded = torch.zeros(3, 5, dtype=torch.bool)
    positive = normalize_rows(torch.rand(3, 5, dtype=torch.float64) * (torch.rand(3, 5) > 0.3))
    positive[positive.sum(1) == 0, 0] = 1.0
    negative = normalize_rows(torch.rand(3, 5, dtype=torch.float64) * (torch.rand(3, 5) > 0.4))
    draws = 10_000
    generator = torch.Generator().manual_seed(3)
    sampled_pos = sample_rows(positive.repeat(draws, 1), generator)
    sampled_neg = sample_rows(negative.repeat(draws, 1), generator)
    sampled = debcse_loss(scores.repeat(draws, 1), sampled_pos, sampled_neg, excluded.repeat(draws, 1))
    weighted = debcse_loss(scores, positive, negative, excluded)
    standard_error = sampled.view(draws, 3).std(dim=0) / math.sqrt(draws)
    assert (sampled.view(draws, 3).mean(dim=0) - weighted).abs().max() < 4 * standard_error.max()


def test_sample_mode_draws_one_pair_per_anchor_and_changes_every_call():
    torch.manual_seed(4)
    columns = {"anchor": torch.randn(6, 8), "positive": torch.randn(6, 8)}
    batch = single_column_batch(torch.randint(3, 50, (6, 6)))
    options = dict(
        num_neighbors=5, positive_threshold=-1.0, negative_threshold=1.0, mode="sample", semantic_source="model"
    )
    first, second = DebCSE(**options), DebCSE(**options)
    losses = [first(columns, batch).loss.item() for _ in range(4)]
    assert losses == [second(columns, batch).loss.item() for _ in range(4)]  # same seed, same draws
    assert len(set(losses)) > 1


# ----------------------------------------------------------------------------------------------- gradients
def fixed_weight_loss(objective: DebCSE, anchors, positives, batch):
    """The forward with its weights frozen at their current values: what the analytic gradient differentiates."""
    with torch.no_grad():
        a = torch.nn.functional.normalize(anchors, dim=-1)
        p = torch.nn.functional.normalize(positives, dim=-1)
        surface, bins = objective.pair_features(batch, ["positive"])
        excluded = objective.excluded_pairs(batch, ["positive"], torch.arange(len(a)))
        weights = objective.pair_weights(a @ p.T, surface.double(), bins, excluded)

    def loss(anchors, positives):
        a = torch.nn.functional.normalize(anchors, dim=-1)
        p = torch.nn.functional.normalize(positives, dim=-1)
        scores = a @ p.T / objective.temperature
        per_anchor = debcse_loss(scores, *weights, excluded)
        return (per_anchor + objective.simcse_weight * (scores.logsumexp(1) - scores.diagonal())).mean()

    return loss


@pytest.mark.parametrize("simcse_weight", [0.0, 0.7])
def test_gradients_match_finite_differences_with_weights_held_constant(simcse_weight):
    torch.manual_seed(5)
    anchors = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    positives = (anchors.detach() + 0.3 * torch.randn(5, 4, dtype=torch.float64)).requires_grad_(True)
    batch = single_column_batch(torch.randint(3, 30, (5, 6)))
    objective = DebCSE(
        temperature=0.5,
        num_neighbors=2,
        positive_threshold=0.0,
        negative_threshold=0.9,
        simcse_weight=simcse_weight,
        semantic_source="model",
    )
    out = objective({"anchor": anchors, "positive": positives}, batch)
    assert out.logs["mined_positive_share"] > 0 and out.logs["hard_negative_rate"] > 0
    grads = torch.autograd.grad(out.loss, (anchors, positives))

    frozen = fixed_weight_loss(objective, anchors, positives, batch)
    assert torch.autograd.gradcheck(frozen, (anchors, positives))
    expected = torch.autograd.grad(frozen(anchors, positives), (anchors, positives))
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want)


def test_loss_gradcheck_in_float64():
    torch.manual_seed(6)
    scores = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    positive = normalize_rows(torch.rand(3, 4, dtype=torch.float64))
    negative = normalize_rows(torch.rand(3, 4, dtype=torch.float64))
    negative[1] = 0.0  # an anchor without a hard negative
    excluded = torch.tensor([[False, False, True, False]] * 3)
    assert torch.autograd.gradcheck(lambda s: debcse_loss(s, positive, negative, excluded), (scores,))


# ----------------------------------------------------------------------------------------------- trainer modes
def collated(tokenizer, size: int = 8) -> tuple[dict, dict]:
    rows = [
        {"text": f"{SENTENCES[i % len(SENTENCES)]} {SENTENCES[(3 * i) % len(SENTENCES)][:9]}"} for i in range(size)
    ]
    batch = ContrastiveCollator(tokenizer, ["text"], max_length=32)(rows)
    features = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    return features, batch


def uncached_gradients(model, objective, features, batch, cache):
    """One graph over the cache's mini-batches (same order, same dropout masks): the reference of test_cache.py."""
    plan = cache.plan(features["attention_mask"])
    chunks = [model(**select_rows(features, mb)).embeddings for mb in plan]
    rows = torch.cat([mb.rows for mb in plan])
    embeddings = torch.empty(len(rows), chunks[0].shape[1]).index_put((rows,), torch.cat(chunks))
    out = objective(split_columns(embeddings, batch["column_names"]), batch)
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("mode", ["weighted", "sample"])
def test_cached_gradients_equal_uncached_with_dropout(tiny_tokenizer, mode):
    features, batch = collated(tiny_tokenizer)
    options = dict(
        temperature=0.1,
        num_neighbors=3,
        positive_threshold=0.9,
        negative_threshold=0.95,
        mode=mode,
        semantic_source="model",
    )
    cache = GradientCache(token_budget=40)
    model = make_tiny_encoder(len(tiny_tokenizer)).train()
    torch.manual_seed(11)
    reference, ref_grads = uncached_gradients(model, DebCSE(**options), features, batch, cache)
    assert reference.logs["mined_positive_share"] > 0 and reference.logs["hard_negative_rate"] > 0
    model.zero_grad()
    torch.manual_seed(11)
    objective = DebCSE(**options)
    loss, _ = cache.step(
        lambda f: model(**f).embeddings,
        features,
        lambda e: (objective(split_columns(e, batch["column_names"]), batch).loss, {}),
    )
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert len(cache.plan(features["attention_mask"])) > 1
    assert loss.item() == pytest.approx(reference.loss.item(), abs=1e-6)
    for name in ref_grads:
        torch.testing.assert_close(grads[name], ref_grads[name], atol=1e-5, rtol=1e-5, msg=name)


# ----------------------------------------------------------------------------------------------- registry, options
def test_built_by_name_with_options_and_reported_in_the_card():
    objective = build_objective("debcse", defaults={"temperature": 0.05, "similarity": "cosine"}, num_neighbors=7)
    assert isinstance(objective, DebCSE)
    config = objective.get_config_dict()
    assert config["num_neighbors"] == 7 and config["temperature"] == 0.05 and config["mode"] == "weighted"
    assert objective.paper == "2309.07396" and "miao2023debcse" in objective.citation


def test_recipe_config_matches_simcse_unsup_budget_and_spec_defaults():
    configs = Path(__file__).parents[2] / "recipes" / "configs"
    script_args, args = parse_args([str(configs / "debcse.yaml")])
    simcse_script_args, simcse = parse_args([str(configs / "simcse-unsup.yaml")])
    budget = ("learning_rate", "per_device_train_batch_size", "max_length", "num_train_epochs", "seed", "temperature")
    assert [getattr(args, f) for f in budget] == [getattr(simcse, f) for f in budget]
    assert (script_args.model_name_or_path, script_args.dataset, script_args.sts_eval) == (
        simcse_script_args.model_name_or_path,
        simcse_script_args.dataset,
        simcse_script_args.sts_eval,
    )
    assert args.output_dir == "outputs/debcse-minilm"
    objective = build_objective(args.objective, defaults=args.objective_kwargs(), **args.objective_options)
    defaults = DebCSE().get_config_dict()
    assert objective.get_config_dict() == defaults  # the YAML spells out the spec's defaults
    assert (defaults["num_neighbors"], defaults["surface_bins"], defaults["length_bins"]) == (20, 10, 5)
    assert (defaults["positive_threshold"], defaults["negative_threshold"], defaults["epsilon"]) == (0.7, 0.5, 1e-3)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"surface": "bm25"}, "surface"),
        ({"mode": "greedy"}, "mode"),
        ({"negative_pool": "random"}, "negative_pool"),
        ({"epsilon": 0.0}, "epsilon"),
        ({"surface_bins": 0}, "surface_bins"),
        ({"num_neighbors": -1}, "num_neighbors"),
        ({"temperature": 0.0}, "temperature"),
    ],
)
def test_invalid_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        DebCSE(**options)


def test_lexical_negative_pool_keeps_the_most_similar_texts():
    objective = hand_objective(negative_pool="lexical", negative_threshold=2.0)
    surface, bins = objective.pair_features(single_column_batch(IDS), ["positive"])
    _, negative = objective.pair_weights(
        VECTORS @ VECTORS.T, surface.double(), bins, torch.zeros(3, 3, dtype=torch.bool)
    )
    assert negative[0].tolist() == [0.0, 1.0, 0.0]  # s1 shares half of s0's words; s2 none


# ----------------------------------------------------------------------------------------------- distributed
@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "dataset"),
    [("weighted", "text"), ("sample", "triplets")],
)
def test_two_processes_equal_one_process_with_twice_the_batch(tmp_path, tiny_tokenizer, mode, dataset):
    options = {"num_neighbors": 3, "positive_threshold": 0.9, "negative_threshold": 0.97, "mode": mode}
    scenario = {"objective": "debcse", "options": options, "dataset": dataset, "modes": ["plain", "cached"]}
    assert_distributed_matches_single(tmp_path, tiny_tokenizer, scenario)
