import itertools
import math
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import sparse
from scipy.stats import pearsonr, spearmanr

from hf_contrastive.evaluation.human_similarity import (
    HumanSimilarityEvaluator,
    ReliabilityEstimate,
    estimate_reliability_from_repeats,
    fit_alpha,
    item_groups,
    item_wise_folds,
    pair_features,
    pair_similarity,
    pearson,
    pooled_error_variance,
    repeated_pair_groups,
    ridge_out_of_fold,
    spearman_brown,
    split_half_reliability,
    stack,
    stacked_similarity,
    tfidf_embeddings,
)
from tests.conftest import make_tiny_encoder

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
SICK_TRAIN = DATA / "sick" / "SICK_train.txt"
SICK_TRIAL = DATA / "sick" / "SICK_trial.txt"
needs_data = pytest.mark.skipif(not SICK_TRAIN.exists(), reason="../shared/data not present")


# ----------------------------------------------------------------------------------------------- correlation
def test_pearson_matches_hand_computed_value():
    # deviations x: -1, 0, 1; y: -7/3, -1/3, 8/3 -> cov sum 5, sum dx^2 = 2, sum dy^2 = 114/9
    assert pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(5 / math.sqrt(2 * 114 / 9))
    assert math.isnan(pearson([1, 1, 1], [2, 4, 7]))


def test_pair_similarity_cosine_dot_and_negative_euclidean():
    a = np.array([[3.0, 4.0], [1.0, 0.0]])
    b = np.array([[6.0, 8.0], [0.0, 2.0]])
    assert pair_similarity(a, b) == pytest.approx([1.0, 0.0])
    assert pair_similarity(a, b, metric="dot") == pytest.approx([50.0, 0.0])
    assert pair_similarity(a, b, metric="neg_euclidean") == pytest.approx([-5.0, -math.sqrt(5)])
    with pytest.raises(ValueError, match="metric"):
        pair_similarity(a, b, metric="manhattan")


# ----------------------------------------------------------------------------------------------- reliability
def test_spearman_brown_hand_values():
    assert spearman_brown(0.6) == pytest.approx(0.75)  # 1.2 / 1.6
    assert spearman_brown(0.5, factor=3) == pytest.approx(0.75)  # 1.5 / 2.0


def test_split_half_is_one_for_agreeing_raters():
    assert split_half_reliability([[1, 1], [2, 2], [4, 4], [3, 3]], n_splits=5) == pytest.approx(1.0)


def test_split_half_averages_the_corrected_correlation_over_all_splits():
    # two judgments per pair: a split picks which judgment goes to half A, 2^3 equally likely assignments
    ratings = [[1.0, 2.0], [3.0, 5.0], [6.0, 6.0]]
    corrected = []
    for flips in itertools.product([False, True], repeat=3):
        halves = [pair[::-1] if flip else pair for pair, flip in zip(ratings, flips)]
        corrected.append(spearman_brown(pearsonr([h[0] for h in halves], [h[1] for h in halves])[0]))
    assert split_half_reliability(ratings, n_splits=4000) == pytest.approx(np.mean(corrected), abs=0.01)


def test_split_half_matches_analytic_reliability_of_noisy_raters():
    # 6 raters per pair, rating = true + N(0, 1): reliability of the 6-rater mean = 1 / (1 + 1/6) = 6/7
    rng = np.random.default_rng(0)
    true = rng.normal(size=3000)
    ratings = true[:, None] + rng.normal(size=(3000, 6))
    assert split_half_reliability(ratings, n_splits=100) == pytest.approx(6 / 7, abs=0.02)


def test_split_half_rejects_pairs_with_one_judgment():
    with pytest.raises(ValueError, match=">= 2 judgments"):
        split_half_reliability([[1.0, 2.0], [3.0], [2.0, 2.0]])


def test_repeated_pair_groups_ignore_order_and_pooled_error_variance_matches_hand_value():
    s1 = ["a", "b", "c", "e", "f", "e", "x"]
    s2 = ["b", "a", "d", "f", "e", "f", "y"]
    scores = [2.0, 3.0, 0.0, 1.0, 1.0, 4.0, 5.0]
    groups = sorted(repeated_pair_groups(s1, s2, scores), key=len)
    assert [list(group) for group in groups] == [[2.0, 3.0], [1.0, 1.0, 4.0]]
    # within sums of squares 0.5 + 6 = 6.5 over 1 + 2 degrees of freedom
    assert pooled_error_variance(groups) == pytest.approx(6.5 / 3)


def test_repeat_estimate_recovers_the_split_half_reliability_of_simulated_ratings():
    # 4 raters, noise sd 1 -> error variance of a mean 1/4; true sd 1 -> reliability 1 / 1.25 = 0.8
    rng = np.random.default_rng(1)
    true = rng.normal(size=4000)
    ratings = true[:, None] + rng.normal(size=(4000, 4))
    means = ratings.mean(axis=1)
    rerated = true[:600] + rng.normal(size=(600, 4)).mean(axis=1)  # an independent second annotation
    groups = [np.array(pair) for pair in zip(means[:600], rerated)]
    estimate = estimate_reliability_from_repeats(groups, means, n_bootstrap=200)
    assert estimate.method == "repeated_pairs" and estimate.n_groups == 600 and estimate.n_identical_groups == 0
    assert estimate.value == pytest.approx(0.8, abs=0.03)
    assert estimate.value == pytest.approx(split_half_reliability(ratings, n_splits=20), abs=0.03)
    assert estimate.ci_low < estimate.value < estimate.ci_high
    assert estimate.max_pearson == pytest.approx(math.sqrt(estimate.value))


def test_identical_repeats_are_counted_and_give_a_perfect_ceiling():
    groups = [np.array([2.0, 2.0]), np.array([4.0, 4.0, 4.0])]
    estimate = estimate_reliability_from_repeats(groups, [0.0, 1.0, 5.0], n_bootstrap=10)
    assert estimate.value == 1.0 and estimate.n_identical_groups == 2 and estimate.value_without_identical is None
    with_a_difference = estimate_reliability_from_repeats([*groups, np.array([1.0, 2.0])], [0.0, 1.0, 5.0])
    # e = 0.5 / 4 over all groups (1 + 2 + 1 degrees of freedom), 0.5 / 1 over the differing one; Var = 7
    assert with_a_difference.value == pytest.approx(1 - 0.5 / 4 / 7)
    assert with_a_difference.value_without_identical == pytest.approx(1 - 0.5 / 7)


# ----------------------------------------------------------------------------------------------- stacking
def test_tfidf_identical_texts_have_cosine_one_and_disjoint_texts_zero():
    rows = tfidf_embeddings(["red apple pie", "red apple pie", "blue ocean waves"])
    cosine = (rows @ rows.T).toarray()
    assert cosine[0, 1] == pytest.approx(1.0) and cosine[0, 2] == pytest.approx(0.0)


def test_cosine_of_stacked_rows_equals_stacked_similarity_dense_and_sparse():
    rng = np.random.default_rng(0)
    language_a, language_b = rng.normal(size=(2, 6, 4)) * 3.0
    other_a, other_b = rng.normal(size=(2, 6, 5))
    other_sims = [pair_similarity(other_a, other_b)]
    for alpha in (0.3, 2.0):
        expected = stacked_similarity(pair_similarity(language_a, language_b), other_sims, alpha)
        dense = pair_similarity(stack(language_a, [other_a], alpha), stack(language_b, [other_b], alpha))
        stacked_a = stack(language_a, [sparse.csr_matrix(other_a)], alpha)
        stacked_b = stack(language_b, [sparse.csr_matrix(other_b)], alpha)
        assert sparse.issparse(stacked_a) and stacked_a.shape == (6, 9)
        assert dense == pytest.approx(expected)
        assert pair_similarity(stacked_a.toarray(), stacked_b.toarray()) == pytest.approx(expected)


def test_stacked_similarity_limits_reproduce_each_block():
    language, other = np.array([0.9, -0.2, 0.4]), np.array([0.1, 0.5, 0.3])
    assert stacked_similarity(language, [other], 1e-6) == pytest.approx(other)
    assert stacked_similarity(language, [other], 1e6) == pytest.approx(language)
    assert stacked_similarity(language, [other, other], 1.0) == pytest.approx((language + 2 * other) / 3)


def test_fit_alpha_recovers_the_scale_of_a_known_mixture():
    # human = 0.8 c_L + 0.2 c_O  <=>  alpha^2 / (alpha^2 + 1) = 0.8  <=>  alpha = 2
    rng = np.random.default_rng(0)
    language, other = rng.uniform(-1, 1, size=(2, 200))
    human = 0.8 * language + 0.2 * other
    alpha, r = fit_alpha(language, [other], human, grid=[0.5, 1.0, 2.0, 4.0])
    assert alpha == 2.0 and r == pytest.approx(1.0)
    alpha, r = fit_alpha(language, [other], human)  # default logspace(-2, 2, 41): 10^0.3 is nearest to 2
    assert alpha == pytest.approx(10**0.3) and r > 0.9999


# ----------------------------------------------------------------------------------------------- ridge extension
def test_item_groups_link_pairs_that_share_a_sentence():
    groups = item_groups(["a", "c", "b", "e", "x"], ["b", "d", "c", "f", "f"])
    assert groups.tolist() == [0, 0, 0, 1, 1]


def test_item_wise_folds_never_put_a_sentence_in_train_and_test():
    rng = np.random.default_rng(0)
    vocabulary = [f"s{i}" for i in range(300)]
    s1 = [vocabulary[i] for i in rng.integers(0, 300, size=400)]
    s2 = [vocabulary[i] for i in rng.integers(0, 300, size=400)]
    s1, s2 = s1 + [f"u{i}" for i in range(200)], s2 + [f"v{i}" for i in range(200)]  # plus unlinked pairs
    folds = item_wise_folds(s1, s2, n_splits=5)
    tested = np.concatenate([test for _, test in folds])
    assert sorted(tested.tolist()) == list(range(600))  # every pair is tested exactly once
    for train, test in folds:
        train_items = {s1[i] for i in train} | {s2[i] for i in train}
        test_items = {s1[i] for i in test} | {s2[i] for i in test}
        assert not train_items & test_items


def test_item_wise_folds_refuse_too_few_groups():
    with pytest.raises(ValueError, match="groups"):
        item_wise_folds(["a", "b", "c"], ["b", "c", "a"], n_splits=2)


def test_ridge_out_of_fold_fits_a_diagonal_transform_and_never_sees_test_labels():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 600, 8))
    features = pair_features(a, b)
    weights = rng.uniform(0.5, 2.0, size=8)
    human = (features[:, :8] * weights).sum(axis=1) + 0.01 * rng.normal(size=600)
    s1, s2 = [f"a{i}" for i in range(600)], [f"b{i}" for i in range(600)]
    folds = item_wise_folds(s1, s2, n_splits=5)
    predictions = ridge_out_of_fold(features, human, folds)
    assert pearson(predictions, human) > 0.99
    train, test = folds[0]
    corrupted = human.copy()
    corrupted[test] = rng.normal(size=len(test)) * 100
    assert ridge_out_of_fold(features, corrupted, folds[:1])[test] == pytest.approx(predictions[test])


# ----------------------------------------------------------------------------------------------- evaluator
VECTORS = {
    "a": [1.0, 0.0, 0.0],
    "b": [0.8, 0.6, 0.0],
    "c": [0.0, 1.0, 0.0],
    "d": [0.0, 0.6, 0.8],
    "e": [-1.0, 0.2, 0.1],
    "f": [0.5, 0.5, 0.5],
}


def toy_encode(calls, texts):
    calls.append(list(texts))
    return torch.tensor([VECTORS[t.split()[0]] for t in texts])


def toy_pairs():
    s1 = ["a cat", "a dog", "b cat", "c sun", "d sun", "e hat", "f cat", "b moon"]
    s2 = ["b cat", "c dog", "c sun", "d sun", "e rain", "f hat", "a cat", "f moon"]
    return s1, s2, [4.5, 1.0, 2.5, 4.0, 0.5, 1.5, 3.0, 2.0]


def test_evaluator_reports_zero_parameter_ceiling_stacked_and_ridge_metrics():
    s1, s2, scores = toy_pairs()
    calibration = (s1[::-1], s2[::-1], [4.0, 3.5, 1.0, 3.0, 4.5, 2.0, 1.0, 4.0])
    calls = []
    evaluator = HumanSimilarityEvaluator(
        s1, s2, scores, name="toy", calibration=calibration, reliability=0.81, ridge=True, ridge_folds=2, batch_size=4
    )
    metrics = evaluator(partial(toy_encode, calls))

    encoded = [text for call in calls for text in call]
    assert sorted(encoded) == sorted(set(s1 + s2)) and max(len(call) for call in calls) <= 4
    cosine = pair_similarity(np.array([VECTORS[t[0]] for t in s1]), np.array([VECTORS[t[0]] for t in s2]))
    r = pearsonr(cosine, scores)[0]
    assert metrics["toy_pearson_cosine"] == pytest.approx(r)
    assert metrics["toy_spearman_cosine"] == pytest.approx(spearmanr(cosine, scores)[0])
    assert metrics["toy_reliability"] == 0.81 and metrics["toy_max_pearson"] == pytest.approx(0.9)
    assert metrics["toy_pearson_over_reliability"] == pytest.approx(r / 0.81)

    tfidf = tfidf_embeddings(s1 + s2, fit_texts=list(dict.fromkeys(s1 + s2)))
    other = np.asarray(tfidf[: len(s1)].multiply(tfidf[len(s1) :]).sum(axis=1)).ravel()
    assert metrics["toy_other_pearson_cosine"] == pytest.approx(pearsonr(other, scores)[0])
    calibration_cosine = cosine[::-1]  # the calibration pairs are the evaluated pairs reversed
    alpha, _ = fit_alpha(calibration_cosine, [other[::-1]], calibration[2])
    assert metrics["toy_stacked_alpha"] == pytest.approx(alpha)
    stacked = stacked_similarity(cosine, [other], alpha)
    assert metrics["toy_stacked_pearson_cosine"] == pytest.approx(pearsonr(stacked, scores)[0])
    assert -1.0 <= metrics["toy_ridge_cv_pearson"] <= 1.0


def test_evaluator_metric_names_follow_the_similarity_and_optional_parts_are_omitted():
    s1, s2, scores = toy_pairs()
    metrics = HumanSimilarityEvaluator(s1, s2, scores, name="toy", other=None, metric="dot")(partial(toy_encode, []))
    assert set(metrics) == {"toy_pearson_dot", "toy_spearman_dot"}
    estimate = ReliabilityEstimate(0.64, "repeated_pairs", n_groups=3)
    with_ceiling = HumanSimilarityEvaluator(s1, s2, scores, name="toy", reliability=estimate)(partial(toy_encode, []))
    assert with_ceiling["toy_reliability"] == 0.64 and "toy_stacked_alpha" not in with_ceiling


def test_evaluator_runs_a_contrastive_encoder_like_the_trainer_does(tiny_tokenizer):
    model = make_tiny_encoder(len(tiny_tokenizer))
    s1 = ["the cat sat on the mat", "a dog runs in the park", "rain falls on the quiet town", "the band played"]
    s2 = ["the cat sat", "a dog runs", "the chef cooks pasta with garlic", "stocks rose after the bank report"]
    evaluator = HumanSimilarityEvaluator(
        s1, s2, [5.0, 4.0, 1.0, 0.0], name="tiny", other=lambda t: torch.ones(len(t), 2)
    )
    metrics = evaluator(partial(model.encode, tokenizer=tiny_tokenizer, batch_size=2))
    assert math.isfinite(metrics["tiny_pearson_cosine"]) and math.isnan(metrics["tiny_other_pearson_cosine"])


@needs_data
def test_from_sts_benchmark_pools_sick_repeats_for_the_ceiling():
    trial_only = HumanSimilarityEvaluator.from_sts_benchmark(SICK_TRIAL, max_pairs=100)
    assert trial_only.reliability is None  # SICK trial has no re-rated pair
    evaluator = HumanSimilarityEvaluator.from_sts_benchmark(
        SICK_TRIAL, calibration_path=SICK_TRAIN, max_pairs=100, max_calibration_pairs=300, name="sick"
    )
    assert len(evaluator.pairs[0]) == 100 and len(evaluator.calibration[0]) == 300
    assert 0.0 < evaluator.reliability < 1.0
    assert evaluator.pairs[0][0] in open(SICK_TRIAL, encoding="utf-8").read()
