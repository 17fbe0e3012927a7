"""SFT vs CL reranking losses (arXiv:2510.14824), spec section 8 checks 1-5 and 7, in float64."""

import math

import pytest
import torch
import torch.nn.functional as F

from hf_contrastive.objectives.reranking import (
    RerankingObjective,
    cl_signed_weights,
    contrastive_scores,
    full_vocab_sft_loss,
    listwise_contrastive_loss,
    relevance_scores,
    to_groups,
    two_way_sft_loss,
    unified_reranking_loss,
    weight_direction_diagnostics,
)

YES, NO = 3, 5  # answer token ids in a vocabulary of V = 8
V, H = 8, 6


def random_head(seed: int = 0, groups: int = 3, group_size: int = 4):
    """Answer hidden states h [B*G, H] and an LM head (W [V, H], bias [V]), float64, with gradients."""
    generator = torch.Generator().manual_seed(seed)
    h = torch.randn(groups * group_size, H, generator=generator, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(V, H, generator=generator, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(V, generator=generator, dtype=torch.float64, requires_grad=True)
    return h, weight, bias


def grouped_yes_no(h, weight, bias, groups: int, group_size: int):
    logits = h @ weight.T + bias
    return logits, logits[:, [YES, NO]].reshape(groups, group_size, 2)


def group_labels(groups: int, group_size: int) -> torch.Tensor:
    labels = torch.zeros(groups, group_size, dtype=torch.float64)
    labels[:, 0] = 1.0
    return labels


def grads(loss, *tensors):
    return torch.autograd.grad(loss, tensors, retain_graph=True)


# ---------------------------------------------------------------- check 1: two-way SFT == BCE on z_y - z_n


def test_two_way_sft_is_the_yes_no_softmax_nll_and_the_bce_of_the_margin():
    yes_no = torch.randn(7, 2, dtype=torch.float64) * 3
    labels = torch.tensor([1, 0, 0, 1, 0, 1, 0], dtype=torch.float64)
    loss = two_way_sft_loss(yes_no, labels)
    answer = torch.where(labels > 0, 0, 1)  # column of the target answer
    nll = -torch.log_softmax(yes_no, dim=-1)[torch.arange(7), answer].mean()
    bce = F.binary_cross_entropy_with_logits(yes_no[:, 0] - yes_no[:, 1], labels)
    assert abs(loss.item() - nll.item()) < 1e-12
    assert abs(loss.item() - bce.item()) < 1e-6


def test_full_vocab_sft_is_the_next_token_cross_entropy_over_the_vocabulary():
    logits = torch.randn(3, V, dtype=torch.float64)
    targets = torch.tensor([YES, NO, YES])
    by_hand = -sum(logits[i, t] - torch.logsumexp(logits[i], 0) for i, t in enumerate(targets.tolist())) / 3
    assert abs(full_vocab_sft_loss(logits, targets).item() - by_hand.item()) < 1e-12


# ---------------------------------------------------------------- check 2: CL hand case


def test_cl_with_one_negative_is_the_softplus_of_the_score_gap_hand_case():
    loss = listwise_contrastive_loss(torch.tensor([[2.0, 0.0]], dtype=torch.float64))
    assert round(loss.item(), 4) == 0.1269
    assert abs(loss.item() - math.log(1 + math.exp(-2))) < 1e-12
    scores = torch.randn(5, 2, dtype=torch.float64)
    assert torch.allclose(listwise_contrastive_loss(scores), F.softplus(scores[:, 1] - scores[:, 0]).mean())


def test_cl_temperature_divides_the_scores():
    scores = torch.randn(4, 5, dtype=torch.float64)
    assert torch.allclose(listwise_contrastive_loss(scores, temperature=0.5), listwise_contrastive_loss(scores * 2))


def test_padded_group_entries_are_left_out_of_the_cl_softmax():
    scores = torch.tensor([[1.0, 0.5, -1.0], [0.2, 3.0, 7.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    expected = (
        listwise_contrastive_loss(scores[:1]) + listwise_contrastive_loss(scores[1:, :2])
    ) / 2  # the second group has one negative; its padded 7.0 must not count
    assert torch.allclose(listwise_contrastive_loss(scores, group_mask=mask), expected)


# ---------------------------------------------------------------- check 3: gradient decomposition vs autograd


def test_cl_gradient_per_document_is_sign_times_group_weight_times_w_yes():
    groups, size = 3, 4
    h, weight, bias = random_head(1, groups, size)
    _, yes_no = grouped_yes_no(h, weight, bias, groups, size)
    loss = listwise_contrastive_loss(yes_no[..., 0]) * groups  # per-group sum: one group's loss per document
    (grad_h,) = grads(loss, h)
    p = torch.softmax(yes_no[..., 0].detach(), dim=-1).reshape(-1)
    is_positive = group_labels(groups, size).reshape(-1) > 0
    weight_d = torch.where(is_positive, 1 - p, p)  # (1 - p_0) for the positive, p_i for negative i
    sign = torch.where(is_positive, -1.0, 1.0).double()
    expected = (sign * weight_d)[:, None] * weight[YES].detach()
    torch.testing.assert_close(grad_h, expected, rtol=1e-10, atol=1e-12)


def test_sft_gradient_per_document_is_sign_times_pair_weight_times_w_yes_minus_w_no():
    groups, size = 3, 4
    h, weight, bias = random_head(2, groups, size)
    _, yes_no = grouped_yes_no(h, weight, bias, groups, size)
    labels = group_labels(groups, size)
    loss = two_way_sft_loss(yes_no.reshape(-1, 2), labels.reshape(-1), reduction="sum")
    (grad_h,) = grads(loss, h)
    sigma = torch.sigmoid(yes_no[..., 0] - yes_no[..., 1]).detach().reshape(-1)
    is_positive = labels.reshape(-1) > 0
    weight_d = torch.where(is_positive, 1 - sigma, sigma)
    sign = torch.where(is_positive, -1.0, 1.0).double()
    expected = (sign * weight_d)[:, None] * (weight[YES] - weight[NO]).detach()
    torch.testing.assert_close(grad_h, expected, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- check 4: URL reproduces CL and SFT for all params


def test_url_cl_cl_reproduces_the_cl_loss_and_gradient_for_every_parameter():
    groups, size = 3, 4
    h, weight, bias = random_head(3, groups, size)
    mask = torch.ones(groups, size, dtype=torch.bool)
    mask[2, 3] = False  # a padded entry (a group with fewer negatives)
    _, yes_no = grouped_yes_no(h, weight, bias, groups, size)
    cl = listwise_contrastive_loss(yes_no[..., 0], temperature=0.7, group_mask=mask)
    url = unified_reranking_loss(yes_no, "cl", "cl", group_mask=mask, temperature=0.7)
    assert abs(url.item() - cl.item()) < 1e-12
    for url_grad, cl_grad in zip(grads(url, h, weight, bias), grads(cl, h, weight, bias)):
        torch.testing.assert_close(url_grad, cl_grad, rtol=1e-10, atol=1e-12)


def test_url_sft_sft_reproduces_the_sum_and_mean_sft_gradients_including_the_lm_head_rows():
    groups, size = 2, 5
    h, weight, bias = random_head(4, groups, size)
    _, yes_no = grouped_yes_no(h, weight, bias, groups, size)
    labels = group_labels(groups, size).reshape(-1)
    for normalization, reduction in (("sum", "sum"), ("auto", "mean"), ("pairs", "mean")):
        sft = two_way_sft_loss(yes_no.reshape(-1, 2), labels, reduction=reduction)
        url = unified_reranking_loss(yes_no, "sft", "sft", normalization=normalization)
        assert abs(url.item() - sft.item()) < 1e-12
        url_grads, sft_grads = grads(url, h, weight, bias), grads(sft, h, weight, bias)
        for url_grad, sft_grad in zip(url_grads, sft_grads):
            torch.testing.assert_close(url_grad, sft_grad, rtol=1e-10, atol=1e-12)
        assert url_grads[1][[YES, NO]].abs().sum() > 0  # the head rows of yes and no are trained
        assert url_grads[1][[0, 1, 2, 4, 6, 7]].abs().sum() == 0  # and no other row


def test_url_cl_cl_reproduces_cl_on_the_full_vocabulary_yes_logprob():
    groups, size = 2, 3
    h, weight, bias = random_head(5, groups, size)
    logits, yes_no = grouped_yes_no(h, weight, bias, groups, size)
    scores = contrastive_scores(logits, YES, "yes_logprob").reshape(groups, size)
    cl = listwise_contrastive_loss(scores)
    url = unified_reranking_loss(yes_no, "cl", "cl", cl_scores=scores)
    for url_grad, cl_grad in zip(grads(url, h, weight, bias), grads(cl, h, weight, bias)):
        torch.testing.assert_close(url_grad, cl_grad, rtol=1e-10, atol=1e-12)


def test_url_cross_probes_combine_one_schemes_weight_with_the_others_direction():
    groups, size = 2, 4
    h, weight, bias = random_head(6, groups, size)
    _, yes_no = grouped_yes_no(h, weight, bias, groups, size)
    is_positive = group_labels(groups, size).reshape(-1) > 0
    sigma = torch.sigmoid(yes_no[..., 0] - yes_no[..., 1]).detach().reshape(-1)
    p = torch.softmax(yes_no[..., 0].detach(), dim=-1).reshape(-1)
    sft_signed = torch.where(is_positive, sigma - 1, sigma)
    cl_signed = torch.where(is_positive, p - 1, p)
    w_yes, w_no = weight[YES].detach(), weight[NO].detach()

    (grad_h,) = grads(unified_reranking_loss(yes_no, "sft", "cl"), h)  # SFT weight, CL direction, mean over pairs
    torch.testing.assert_close(grad_h, sft_signed[:, None] * w_yes / (groups * size), rtol=1e-10, atol=1e-12)
    (grad_h,) = grads(unified_reranking_loss(yes_no, "cl", "sft"), h)  # CL weight, SFT direction, mean over groups
    torch.testing.assert_close(grad_h, cl_signed[:, None] * (w_yes - w_no) / groups, rtol=1e-10, atol=1e-12)


def test_url_refuses_unknown_schemes():
    yes_no = torch.zeros(1, 2, 2)
    with pytest.raises(ValueError, match="weight_scheme must be one of"):
        unified_reranking_loss(yes_no, "listwise", "cl")
    with pytest.raises(ValueError, match="normalization must be one of"):
        unified_reranking_loss(yes_no, "cl", "cl", normalization="tokens")


# ---------------------------------------------------------------- check 5: invariances; check 7: monotonicity


def test_sft_score_is_invariant_to_a_shift_of_both_answer_logits():
    logits = torch.randn(6, V, dtype=torch.float64)
    shifted = logits.clone()
    shift = torch.randn(6, dtype=torch.float64) * 5
    shifted[:, YES] += shift
    shifted[:, NO] += shift
    torch.testing.assert_close(relevance_scores(shifted, (YES, NO), "sft"), relevance_scores(logits, (YES, NO), "sft"))


def test_cl_loss_is_invariant_to_a_per_group_shift_but_not_to_a_per_pair_shift():
    scores = torch.randn(3, 5, dtype=torch.float64)
    per_group = scores + torch.randn(3, 1, dtype=torch.float64) * 4
    assert abs(listwise_contrastive_loss(per_group).item() - listwise_contrastive_loss(scores).item()) < 1e-12
    per_pair = scores + torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    assert abs(listwise_contrastive_loss(per_pair).item() - listwise_contrastive_loss(scores).item()) > 1e-3


def test_sft_score_ranks_exactly_as_the_yes_minus_no_margin():
    logits = torch.randn(50, V, dtype=torch.float64) * 4
    scores = relevance_scores(logits, (YES, NO), "sft")
    assert torch.equal(torch.argsort(scores), torch.argsort(logits[:, YES] - logits[:, NO]))
    assert torch.equal(relevance_scores(logits, (YES, NO), "yes_logit"), logits[:, YES])


# ---------------------------------------------------------------- diagnostics and the objective module


def test_diagnostics_hand_case():
    # One group: positive z = (yes 1, no 0), negative z = (yes 0, no 0); w_yes = (1, 0), w_no = (0, 1).
    yes_no = torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    labels = torch.tensor([1.0, 0.0], dtype=torch.float64)
    rows = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    logs = weight_direction_diagnostics(yes_no, labels, rows, cl_scores=yes_no[:, 0].reshape(1, 2))
    sigma_pos, p_pos = 1 / (1 + math.exp(-1)), math.e / (math.e + 1)
    assert abs(logs["sft_weight_positive"].item() - (1 - sigma_pos)) < 1e-12
    assert abs(logs["sft_weight_negative"].item() - 0.5) < 1e-12
    assert abs(logs["sft_negative_weight_fraction"].item() - 0.5 / (0.5 + 1 - sigma_pos)) < 1e-12
    assert abs(logs["cl_weight_positive"].item() - (1 - p_pos)) < 1e-12
    assert abs(logs["cl_weight_negative"].item() - (1 - p_pos)) < 1e-12
    assert abs(logs["cl_negative_weight_fraction"].item() - 0.5) < 1e-12
    assert abs(logs["cl_loss"].item() - math.log(1 + math.exp(-1))) < 1e-12
    assert abs(logs["norm_w_yes"].item() - 1) < 1e-12
    assert abs(logs["norm_w_yes_minus_no"].item() - math.sqrt(2)) < 1e-12
    assert abs(logs["cosine_w_yes_w_yes_minus_no"].item() - 1 / math.sqrt(2)) < 1e-12
    assert all(not value.requires_grad for value in logs.values())


def test_cl_weights_of_a_group_sum_to_twice_one_minus_p0():
    scores = torch.randn(4, 6, dtype=torch.float64)
    weights = cl_signed_weights(scores).abs()
    p0 = torch.softmax(scores, dim=-1)[:, 0]
    torch.testing.assert_close(weights.sum(dim=-1), 2 * (1 - p0))


def test_to_groups_lays_flat_pairs_out_row_major_under_the_mask():
    mask = torch.tensor([[True, True, False], [True, True, True]])
    flat = torch.arange(5.0)
    assert to_groups(flat, mask, fill=-1).tolist() == [[0, 1, -1], [2, 3, 4]]


def test_objective_dispatches_each_loss_and_refuses_pairs_for_group_losses():
    logits = torch.randn(6, V, dtype=torch.float64)
    mask = torch.ones(2, 3, dtype=torch.bool)
    labels = torch.tensor([1, 0, 0, 1, 0, 0], dtype=torch.float64)
    batch = {"labels": labels, "group_mask": mask}
    ids = (YES, NO)
    sft = RerankingObjective("sft")(logits, batch, ids).loss
    assert torch.allclose(sft, two_way_sft_loss(logits[:, [YES, NO]], labels))
    full = RerankingObjective("sft_full_vocab")(logits, batch, ids).loss
    assert torch.allclose(full, F.cross_entropy(logits, torch.tensor([YES, NO, NO, YES, NO, NO])))
    cl = RerankingObjective("contrastive", temperature=0.5)(logits, batch, ids).loss
    assert torch.allclose(cl, listwise_contrastive_loss(logits[:, YES].reshape(2, 3) / 0.5))
    url = RerankingObjective("url", weight_scheme="cl", direction_scheme="cl")(logits, batch, ids).loss
    assert torch.allclose(url, listwise_contrastive_loss(logits[:, YES].reshape(2, 3)))
    with pytest.raises(ValueError, match="needs group rows"):
        RerankingObjective("contrastive")(logits, {"labels": labels}, ids)
    with pytest.raises(ValueError, match="loss must be one of"):
        RerankingObjective("listwise")


def test_objective_names_the_inference_score_that_matches_its_training():
    assert RerankingObjective("sft").inference_score == "sft"
    assert RerankingObjective("sft_full_vocab").inference_score == "yes_logprob"
    assert RerankingObjective("contrastive").inference_score == "yes_logit"
    assert RerankingObjective("contrastive", cl_score="yes_logprob").inference_score == "yes_logprob"
    assert RerankingObjective("url", weight_scheme="cl", direction_scheme="sft").inference_score == "sft"
    assert RerankingObjective("url", weight_scheme="sft", direction_scheme="cl").inference_score == "yes_logit"
