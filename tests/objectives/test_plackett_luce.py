"""Neural PG-Rank: Plackett-Luce probabilities, Gumbel-top-k sampling and the policy gradient against exact values."""

import itertools
import math

import pytest
import torch
from scipy.stats import chisquare

from hf_contrastive.evaluation.ranking_metrics import ndcg, utility
from hf_contrastive.objectives import build_objective
from hf_contrastive.objectives.plackett_luce import (
    PlackettLuceObjective,
    leave_one_out_advantages,
    plackett_luce_log_prob,
    query_generator,
    ranked_relevance,
    sample_rankings,
    top_k_rankings,
)


def all_prefixes(n: int, k: int) -> torch.Tensor:
    """Every ranking prefix of length k over n items: [n! / (n-k)!, k]."""
    return torch.tensor(list(itertools.permutations(range(n), k)))


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------- PL probabilities
def test_log_prob_of_a_full_ranking_matches_the_hand_computation():
    # P(0, 1, 2 | u = (2, 1, 0)) = e^2 / (e^2 + e + 1) * e / (e + 1) = 0.6652 * 0.7311 = 0.4863
    log_prob = plackett_luce_log_prob(torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([[[0, 1, 2]]]))
    expected = math.e**2 / (math.e**2 + math.e + 1) * math.e / (math.e + 1)
    assert log_prob.exp().item() == pytest.approx(expected, rel=1e-6)
    assert log_prob.exp().item() == pytest.approx(0.4863, abs=1e-4)


def test_probabilities_of_all_permutations_sum_to_one():
    logits = torch.tensor([[0.3, -1.2, 2.5]], dtype=torch.float64)
    probabilities = plackett_luce_log_prob(logits, all_prefixes(3, 3).unsqueeze(0)).exp()
    assert probabilities.shape == (1, 6)
    assert probabilities.sum().item() == pytest.approx(1.0, abs=1e-12)


def test_prefixes_of_length_one_follow_the_softmax():
    logits = torch.tensor([[0.3, -1.2, 2.5, 0.0]], dtype=torch.float64)
    probabilities = plackett_luce_log_prob(logits, torch.arange(4).view(1, 4, 1)).exp()
    torch.testing.assert_close(probabilities, logits.softmax(dim=-1))


def test_prefix_probabilities_are_the_marginals_of_full_rankings():
    logits = torch.tensor([[0.3, -1.2, 2.5, 0.7]], dtype=torch.float64)
    full = plackett_luce_log_prob(logits, all_prefixes(4, 4).unsqueeze(0)).exp()[0]
    prefixes = all_prefixes(4, 2)
    by_prefix = plackett_luce_log_prob(logits, prefixes.unsqueeze(0)).exp()[0]
    for prefix, probability in zip(prefixes.tolist(), by_prefix):
        total = sum(p for r, p in zip(all_prefixes(4, 4).tolist(), full) if r[:2] == prefix)
        assert probability.item() == pytest.approx(total.item(), abs=1e-12)


def test_masked_candidates_stay_out_of_every_denominator_and_the_gradient_is_finite():
    logits = torch.tensor([[2.0, 1.0, float("-inf"), 0.0]], requires_grad=True)
    mask = torch.tensor([[True, True, False, True]])
    # ranking (0, 1, -1): a list of 3 real candidates asked for K = 3 ... padded step adds 0
    log_prob = plackett_luce_log_prob(logits, torch.tensor([[[0, 1, 3], [3, 0, 1]]]), mask)
    expected = math.log(math.e**2 / (math.e**2 + math.e + 1) * math.e / (math.e + 1))
    assert log_prob[0, 0].item() == pytest.approx(expected, rel=1e-6)
    log_prob.sum().backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[0, 2] == 0


def test_steps_past_a_short_list_add_nothing():
    logits = torch.tensor([[2.0, 1.0, 0.0, 0.0]], requires_grad=True)
    mask = torch.tensor([[True, True, False, False]])
    log_prob = plackett_luce_log_prob(logits, torch.tensor([[[1, 0, -1]]]), mask)
    assert log_prob.item() == pytest.approx(math.log(math.e / (math.e**2 + math.e)), rel=1e-6)
    log_prob.sum().backward()
    assert torch.isfinite(logits.grad).all()


# ---------------------------------------------------------------------------------------------- sampling
def test_gumbel_top_k_samples_follow_the_plackett_luce_distribution():
    logits = torch.tensor([[2.0, 1.0, 0.0]], dtype=torch.float64)
    num_samples = 50_000
    rankings = sample_rankings(logits, num_samples, 3, generator(0))[0]  # [N, 3]
    codes = rankings[:, 0] * 9 + rankings[:, 1] * 3 + rankings[:, 2]
    permutations = all_prefixes(3, 3)
    observed = torch.stack([(codes == p[0] * 9 + p[1] * 3 + p[2]).sum() for p in permutations]).double()
    expected = plackett_luce_log_prob(logits, permutations.unsqueeze(0)).exp()[0] * num_samples
    assert observed.sum() == num_samples
    assert chisquare(observed.numpy(), expected.numpy()).pvalue > 0.001
    assert observed[0] / num_samples == pytest.approx(0.4863, abs=0.01)  # the hand-computed mode


def test_masked_candidates_are_never_sampled_and_short_lists_are_padded():
    logits = torch.tensor([[0.0, 5.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, False, True, True], [True, True, False, False]])
    rankings = sample_rankings(logits, 200, 3, generator(0), mask)
    assert rankings.shape == (2, 200, 3)
    assert not (rankings[0] == 1).any()
    assert set(rankings[1, :, :2].flatten().tolist()) == {0, 1} and (rankings[1, :, 2] == -1).all()
    assert all(len(set(r)) == 3 for r in rankings[0].tolist())  # distinct candidates within a ranking


def test_noise_of_a_query_does_not_depend_on_the_batch_padding_or_the_other_queries():
    logits = torch.tensor([[0.3, 0.1, 0.2, 0.0, 0.0], [0.5, 0.4, 0.1, 0.2, 0.3]])
    mask = torch.tensor([[True, True, True, False, False], [True] * 5])
    together = sample_rankings(logits, 6, 3, [query_generator(7, 2, 0), query_generator(7, 2, 1)], mask)
    alone = sample_rankings(logits[:1, :3], 6, 3, [query_generator(7, 2, 0)])
    second = sample_rankings(logits[1:], 6, 3, [query_generator(7, 2, 1)])
    torch.testing.assert_close(together, torch.cat([alone, second]))
    other_step = sample_rankings(logits[1:], 6, 3, [query_generator(7, 3, 1)])
    assert not torch.equal(other_step, second)


def test_vanishing_temperature_makes_sampling_deterministic():
    scores = torch.tensor([[0.3, 0.1, 0.2, -0.1]], dtype=torch.float64)
    logits = scores / 1e-3
    rankings = sample_rankings(logits, 500, 4, generator(0))
    assert (rankings == torch.tensor([0, 2, 1, 3])).all()
    assert plackett_luce_log_prob(logits, rankings[:, :1]).max().item() > -1e-6
    warm = sample_rankings(scores, 500, 4, generator(0))
    assert not (warm == torch.tensor([0, 2, 1, 3])).all()
    torch.testing.assert_close(top_k_rankings(scores, 2), torch.tensor([[0, 2]]))


# ---------------------------------------------------------------------------------------------- utility, baseline
def test_ndcg_of_a_sampled_ranking_matches_the_hand_case():
    relevance = torch.tensor([[0.0, 1.0, 0.0]])
    ranked = ranked_relevance(relevance, torch.tensor([[[0, 1, 2]]]))
    assert ndcg(ranked, relevance.unsqueeze(1), 3).item() == pytest.approx(1 / math.log2(3), abs=1e-4)  # 0.6309


def test_leave_one_out_advantage_is_the_scaled_mean_baseline():
    utilities = torch.tensor([[0.2, 0.9, 0.4, 0.0, 1.0]])
    advantages = leave_one_out_advantages(utilities)
    n = utilities.shape[1]
    torch.testing.assert_close(advantages, n / (n - 1) * (utilities - utilities.mean(dim=1, keepdim=True)))
    assert advantages[0, 1].item() == pytest.approx(0.9 - (0.2 + 0.4 + 0.0 + 1.0) / 4)
    assert (leave_one_out_advantages(torch.full((3, 4), 0.7)) == 0).all()
    with pytest.raises(ValueError, match="at least 2 samples"):
        leave_one_out_advantages(torch.ones(1, 1))


def reinforce_gradient(logits, relevance, utility_name, k, num_samples, groups, seed=0):
    """Mean over ``groups`` independent LOO estimates of grad E[utility] w.r.t. the free ``logits`` [n]."""
    logits = logits.detach().requires_grad_(True)
    batch = logits.unsqueeze(0).expand(groups, -1)
    rankings = sample_rankings(batch, num_samples, k, generator(seed))
    ideal = relevance.view(1, 1, -1)
    utilities = utility(utility_name, ranked_relevance(relevance.expand(groups, -1), rankings), ideal, k)
    surrogate = (leave_one_out_advantages(utilities) * plackett_luce_log_prob(batch, rankings)).mean()
    (gradient,) = torch.autograd.grad(surrogate, logits)
    return gradient


def test_policy_gradient_is_unbiased_against_the_exact_gradient_over_all_prefixes():
    logits = torch.tensor([0.5, -0.3, 1.0, 0.2], dtype=torch.float64, requires_grad=True)
    relevance = torch.tensor([2.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    prefixes = all_prefixes(4, 2).unsqueeze(0)  # all 12 rankings of length 2
    probabilities = plackett_luce_log_prob(logits.unsqueeze(0), prefixes).exp()
    utilities = ndcg(ranked_relevance(relevance.unsqueeze(0), prefixes), relevance.view(1, 1, -1), 2)
    assert probabilities.sum().item() == pytest.approx(1.0, abs=1e-12)
    (exact,) = torch.autograd.grad((probabilities * utilities).sum(), logits)

    estimate = reinforce_gradient(logits, relevance, "ndcg", k=2, num_samples=4, groups=25_000)  # 1e5 rankings
    assert torch.nn.functional.cosine_similarity(estimate, exact, dim=0).item() > 0.99
    assert estimate.norm().item() == pytest.approx(exact.norm().item(), rel=0.05)


def test_one_gradient_step_raises_the_relevant_score_above_the_others_in_expectation():
    logits = torch.tensor([0.0, 0.5, -0.2, 0.1], dtype=torch.float64)
    relevance = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    gradient = reinforce_gradient(logits, relevance, "ndcg", k=1, num_samples=8, groups=2_000)
    updated = logits + 1.0 * gradient  # ascent on the expected nDCG@1 (= descent on the surrogate loss)
    assert updated[0] - updated[1:].max() > logits[0] - logits[1:].max()
    probability = logits.softmax(dim=0)  # exact gradient of P(r_1 = 0): p0 (1[j = 0] - p_j)
    assert gradient[0] > 0 and (gradient[1:] < 0).all()
    torch.testing.assert_close(gradient[0], probability[0] * (1 - probability[0]), rtol=0.1, atol=0.0)


# ---------------------------------------------------------------------------------------------- the objective
def ranking_batch(relevance, mask=None, **extra):
    relevance = torch.as_tensor(relevance, dtype=torch.float32)
    mask = torch.ones_like(relevance, dtype=torch.bool) if mask is None else torch.as_tensor(mask, dtype=torch.bool)
    counts = mask.sum(dim=1)
    index = torch.zeros_like(relevance, dtype=torch.long)
    starts = torch.cumsum(counts, 0) - counts
    for row, (start, count) in enumerate(zip(starts.tolist(), counts.tolist())):
        index[row, :count] = torch.arange(start, start + count)
    return {
        "candidate_index": index,
        "candidate_mask": mask,
        "relevance": relevance * mask,
        "judged_relevance": relevance * mask,
        **extra,
    }


def test_two_candidates_give_the_hand_computed_surrogate_loss():
    # k = 1, N = 2, dot products u = (2, 0.5): samples agree -> A = 0, loss 0; they differ -> A = (+1, -1) and
    # loss = -(log p_0 - log p_1) / 2 = -(u_0 - u_1) / 2 = -0.75.
    objective = PlackettLuceObjective(utility="ndcg", k=1, num_samples=2, temperature=1.0, similarity="dot")
    query = torch.tensor([[1.0, 0.0]])
    documents = torch.tensor([[2.0, 0.0], [0.5, 1.0]])
    values = set()
    for step in range(40):
        out = objective({"query": query, "documents": documents}, ranking_batch([[1.0, 0.0]], noise_step=step))
        values.add(round(out.loss.item(), 6))
    assert values == {0.0, -0.75}


def test_gradient_reaches_the_query_and_every_candidate_not_only_the_sampled_ones():
    # k = 2, N = 2: at most 4 of the 6 candidates are sampled; the others get gradient from the second-step
    # denominators, which differ between the samples. (The first-step denominator is common to all samples and
    # cancels: the leave-one-out advantages of a query sum to 0.)
    objective = PlackettLuceObjective(k=2, num_samples=2, temperature=0.5)
    torch.manual_seed(0)
    query = torch.randn(1, 8, requires_grad=True)
    documents = torch.randn(6, 8, requires_grad=True)
    batch = ranking_batch([[1.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    for step in range(50):
        batch["noise_step"] = step
        loss = objective({"query": query, "documents": documents}, batch).loss
        if loss.item() != 0:  # rankings of different utility: non-zero advantages
            break
    loss.backward()
    assert query.grad.abs().sum() > 0
    assert (documents.grad.abs().sum(dim=1) > 0).all()


def test_equal_utilities_and_queries_without_relevant_candidates_give_exactly_zero_gradient():
    objective = PlackettLuceObjective(utility="precision", k=2, num_samples=4)
    torch.manual_seed(0)
    query = torch.randn(2, 8, requires_grad=True)
    documents = torch.randn(7, 8, requires_grad=True)
    # query 0: every candidate relevant (precision@2 = 1 for every sample); query 1: none relevant.
    batch = ranking_batch([[1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]], mask=[[1, 1, 1, 0], [1, 1, 1, 1]])
    out = objective({"query": query, "documents": documents}, batch)
    out.loss.backward()
    assert (query.grad == 0).all() and (documents.grad == 0).all()
    assert out.logs["skipped_no_relevant"].item() == 1
    assert out.logs["utility"].item() == pytest.approx(1.0)  # the skipped query is left out of the mean


def test_a_batch_equals_its_queries_scored_separately():
    """Per-query noise (seed, step, global index) and a per-query loss: batch loss = mean of the queries' losses."""
    objective = PlackettLuceObjective(k=2, num_samples=4, temperature=0.2)
    torch.manual_seed(0)
    query = torch.randn(2, 8, dtype=torch.float64, requires_grad=True)
    documents = torch.randn(7, 8, dtype=torch.float64, requires_grad=True)
    relevance = [[1.0, 0.0, 2.0, 0.0], [0.0, 1.0, 0.0, 1.0]]
    batch = ranking_batch(relevance, mask=[[1, 1, 1, 0], [1, 1, 1, 1]], noise_step=5)
    together = objective({"query": query, "documents": documents}, batch).loss
    first = objective(
        {"query": query[:1], "documents": documents[:3]},
        ranking_batch([relevance[0][:3]], noise_step=5, query_index=torch.tensor([0])),
    ).loss
    second = objective(
        {"query": query[1:], "documents": documents[3:]},
        ranking_batch([relevance[1]], noise_step=5, query_index=torch.tensor([1])),
    ).loss
    torch.testing.assert_close(together, (first + second) / 2)
    (gradient,) = torch.autograd.grad(together, documents)
    (separate,) = torch.autograd.grad((first + second) / 2, documents)
    torch.testing.assert_close(gradient, separate)


def test_logs_report_sampled_and_deterministic_utility():
    objective = PlackettLuceObjective(k=2, num_samples=4, temperature=1.0, similarity="dot")
    query = torch.tensor([[1.0, 0.0]])
    documents = torch.tensor([[3.0, 0.0], [0.0, 1.0], [1.0, 0.0]])  # scores 3, 0, 1: ranking (0, 2)
    out = objective({"query": query, "documents": documents}, ranking_batch([[0.0, 0.0, 1.0]], noise_step=0))
    assert out.logs["utility_deterministic"].item() == pytest.approx(1 / math.log2(3), abs=1e-5)
    assert 0.0 <= out.logs["utility"].item() <= 1.0
    assert out.logs["advantage_std"].item() >= 0.0 and out.logs["skipped_no_relevant"].item() == 0


def test_registry_builds_the_objective_and_bad_options_are_refused():
    objective = build_objective("plackett_luce", defaults={"temperature": 0.1, "symmetric": True}, k=5)
    assert isinstance(objective, PlackettLuceObjective) and objective.k == 5 and objective.temperature == 0.1
    assert objective.get_config_dict()["utility"] == "ndcg" and "2310.04407" in objective.citation
    with pytest.raises(ValueError, match="num_samples must be >= 2"):
        PlackettLuceObjective(num_samples=1)
    with pytest.raises(ValueError, match="utility must be one of"):
        PlackettLuceObjective(utility="mrr")
    with pytest.raises(ValueError, match="k must be >= 1"):
        PlackettLuceObjective(k=0)
