"""Full-ranking Recall/NDCG and leave-one-out HR/NDCG against hand-computed rankings, evaluators and `evaluate`."""

import math

import pytest
import torch

from hf_contrastive.evaluation import load_metric
from hf_contrastive.evaluation.recsys import (
    FullRankingEvaluator,
    LeaveOneOutEvaluator,
    full_ranking_metrics,
    leave_one_out_metrics,
    pad_sequences,
)

INV_LOG3 = 1 / math.log2(3)  # the discount of rank 2


def test_full_ranking_masks_training_items_before_cutting_the_top_k():
    # item 0 scores highest but is a training item; masked ranking is 1, 2, 3, 4 and the targets are 1 and 3
    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0]])
    train_mask = torch.tensor([[True, False, False, False, False]])
    targets = torch.tensor([[False, True, False, True, False]])
    metrics = full_ranking_metrics(scores, train_mask, targets, ks=(1, 2, 3))
    idcg_2 = 1 + INV_LOG3
    assert metrics["recall@1"].item() == 0.5 and metrics["ndcg@1"].item() == pytest.approx(1.0)
    assert metrics["recall@2"].item() == 0.5 and metrics["ndcg@2"].item() == pytest.approx(1 / idcg_2)
    assert metrics["precision@2"].item() == 0.5
    assert metrics["recall@3"].item() == 1.0 and metrics["ndcg@3"].item() == pytest.approx((1 + 0.5) / idcg_2)
    unmasked = full_ranking_metrics(scores, None, targets, ks=(2,))
    assert unmasked["recall@2"].item() == 0.5 and unmasked["ndcg@2"].item() == pytest.approx(INV_LOG3 / idcg_2)


def test_a_target_is_never_masked_and_masked_items_never_hit():
    scores = torch.tensor([[1.0, 2.0, 3.0]])
    everything_masked = torch.ones(1, 3, dtype=torch.bool)
    targets = torch.tensor([[True, False, False]])
    metrics = full_ranking_metrics(scores, everything_masked, targets, ks=(1, 3))
    assert metrics["recall@1"].item() == 1.0 and metrics["hits@3"].item() == 1.0


def test_full_ranking_refuses_a_user_without_targets():
    with pytest.raises(ValueError, match="at least one target"):
        full_ranking_metrics(torch.zeros(2, 3), None, torch.tensor([[True, False, False], [False] * 3]), ks=(1,))
    with pytest.raises(ValueError, match="Cutoff K=4"):
        full_ranking_metrics(torch.zeros(1, 3), None, torch.tensor([[True, False, False]]), ks=(4,))


def brute_force_recall_ndcg(scores, train, test, k):
    """Sort every user's unmasked items in Python: mean Recall@k and NDCG@k over users with test items."""
    recalls, ndcgs = [], []
    for user, row in enumerate(scores.tolist()):
        wanted = test.get(user, set())
        if not wanted:
            continue
        ranked = sorted(
            (item for item in range(len(row)) if item not in train.get(user, set())), key=lambda i: -row[i]
        )
        hits = [item in wanted for item in ranked[:k]]
        recalls.append(sum(hits) / len(wanted))
        idcg = sum(1 / math.log2(r + 2) for r in range(min(k, len(wanted))))
        ndcgs.append(sum(hit / math.log2(r + 2) for r, hit in enumerate(hits)) / idcg)
    return sum(recalls) / len(recalls), sum(ndcgs) / len(ndcgs)


def test_full_ranking_evaluator_matches_a_brute_force_ranking_in_any_batch_size():
    generator = torch.Generator().manual_seed(0)
    num_users, num_items = 9, 30
    user_embeddings, item_embeddings = torch.randn(num_users, 4, generator=generator), torch.randn(num_items, 4)
    pairs = torch.stack([torch.randint(num_users, (60,), generator=generator), torch.randperm(60) % num_items], 1)
    pairs = torch.unique(pairs, dim=0)
    is_test = torch.rand(len(pairs), generator=generator) < 0.3
    train, test = pairs[~is_test], pairs[is_test]
    as_sets = lambda split: {u: {i for v, i in split.tolist() if v == u} for u in range(num_users)}  # noqa: E731
    scores = user_embeddings @ item_embeddings.T
    recall, ndcg = brute_force_recall_ndcg(scores, as_sets(train), as_sets(test), k=10)
    for batch_size in (1, 4, 100):
        evaluator = FullRankingEvaluator(train, test, num_users, num_items, ks=(10,), batch_size=batch_size)
        results = evaluator(lambda users: user_embeddings[users] @ item_embeddings.T)
        assert results["test_recall@10"] == pytest.approx(recall)
        assert results["test_ndcg@10"] == pytest.approx(ndcg)


def test_full_ranking_evaluator_reports_the_micro_hit_ratio_and_skips_users_without_test_items():
    train = torch.tensor([[0, 0], [1, 1], [2, 2]])
    test = torch.tensor([[0, 1], [0, 2], [1, 0]])  # user 2 has no test item
    item_scores = torch.tensor([0.0, 2.0, 1.0])
    evaluator = FullRankingEvaluator(train, test, num_users=3, num_items=3, ks=(1,), name="valid")
    results = evaluator(lambda users: item_scores.expand(len(users), -1))
    # user 0: masked ranking 1, 2 -> hit at rank 1 (recall 1/2); user 1: ranking 2, 0 -> miss
    assert results["valid_recall@1"] == pytest.approx(0.25) and results["valid_hit_ratio@1"] == pytest.approx(1 / 3)
    assert results["valid_ndcg@1"] == pytest.approx(0.5)


def test_evaluator_refuses_ids_outside_the_vocabulary():
    with pytest.raises(ValueError, match="eval_pairs holds ids outside"):
        FullRankingEvaluator(torch.tensor([[0, 0]]), torch.tensor([[0, 5]]), num_users=1, num_items=2, ks=(1,))


def test_leave_one_out_rank_on_a_hand_case():
    scores = torch.tensor([[9.0, 3.0, 5.0, 1.0, 4.0]])  # column 0 = padding
    padding = torch.tensor([[True, False, False, False, False]])
    metrics = leave_one_out_metrics(scores, padding, torch.tensor([4]), ks=(1, 2))
    assert metrics["hr@1"].item() == 0.0 and metrics["hr@2"].item() == 1.0  # rank 2 behind item 2
    assert metrics["ndcg@2"].item() == pytest.approx(INV_LOG3) and metrics["mrr@2"].item() == 0.5
    with_history = padding.clone()
    with_history[0, 2] = True
    assert leave_one_out_metrics(scores, with_history, torch.tensor([4]), ks=(1,))["ndcg@1"].item() == 1.0


def test_leave_one_out_ties_count_against_the_model():
    constant = torch.zeros(1, 4)
    padding = torch.tensor([[True, False, False, False]])
    metrics = leave_one_out_metrics(constant, padding, torch.tensor([1]), ks=(2, 3))
    assert metrics["hr@2"].item() == 0.0 and metrics["hr@3"].item() == 1.0  # rank 3 of 3 real items


def test_leave_one_out_evaluator_pads_right_excludes_padding_and_checks_inputs():
    seen = []

    def score_sequences(item_seq, item_seq_len):
        seen.append((item_seq.clone(), item_seq_len.clone()))
        scores = torch.zeros(len(item_seq), 5)
        scores[:, 0] = 100.0  # a padding score must not count
        scores[:, 3] = 1.0
        return scores

    evaluator = LeaveOneOutEvaluator([[1, 2, 4], [2]], [3, 4], num_items=4, ks=(1,), max_len=2, batch_size=8)
    results = evaluator(score_sequences)
    assert seen[0][0].tolist() == [[2, 4], [2, 0]] and seen[0][1].tolist() == [2, 1]
    assert results["test_hr@1"] == 0.5 and results["test_ndcg@1"] == 0.5
    with pytest.raises(ValueError, match="histories are empty"):
        LeaveOneOutEvaluator([[1], []], [2, 3], num_items=4)
    with pytest.raises(ValueError, match=r"Item ids must be in 1\.\.4"):
        LeaveOneOutEvaluator([[1]], [7], num_items=4)
    with pytest.raises(ValueError, match="num_items \\+ 1 columns"):
        LeaveOneOutEvaluator([[1]], [2], num_items=4, ks=(1,))(lambda seq, length: torch.zeros(1, 4))


def test_pad_sequences_keeps_the_last_items():
    item_seq, lengths = pad_sequences([[1, 2, 3], [4]], max_len=2)
    assert item_seq.tolist() == [[2, 3], [4, 0]] and lengths.tolist() == [2, 1]


def test_evaluate_modules_agree_with_the_tensor_metrics():
    full = load_metric("full_ranking").compute(predictions=[["1", "2", "3"]], references=[["1", "3"]], ks=[2, 3])
    tensor = full_ranking_metrics(
        torch.tensor([[3.0, 2.0, 1.0]]), None, torch.tensor([[True, False, True]]), ks=(2, 3)
    )
    assert full["recall@2"] == pytest.approx(tensor["recall@2"].item())
    assert full["ndcg@3"] == pytest.approx(tensor["ndcg@3"].item())
    loo = load_metric("leave_one_out").compute(predictions=[["b", "a"], ["a", "b"]], references=["a", "a"], ks=[1, 2])
    assert loo == pytest.approx({"hr@1": 0.5, "ndcg@1": 0.5, "hr@2": 1.0, "ndcg@2": (INV_LOG3 + 1) / 2})
