"""Ranking metrics against hand-computed cases and scikit-learn's nDCG."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import ndcg_score

from hf_contrastive.evaluation import ranking_metrics as rm


def test_ndcg_hand_case_from_the_spec():
    # rel = [0, 1, 0] ranked (0, 1, 2): DCG = 1 / log2(3), IDCG = 1.
    ranked = torch.tensor([0.0, 1.0, 0.0])
    assert rm.dcg(ranked, 3).item() == pytest.approx(1 / math.log2(3))
    assert rm.ndcg(ranked, torch.tensor([1.0]), 3).item() == pytest.approx(0.6309, abs=1e-4)


def test_graded_ndcg_uses_exponential_gain_and_all_judged_documents():
    ranked = torch.tensor([2.0, 0.0, 1.0])
    judged = torch.tensor([1.0, 2.0, 3.0])  # a grade-3 document is missing from the list
    expected_dcg = 3 / math.log2(2) + 0 + 1 / math.log2(4)
    ideal = 7 / math.log2(2) + 3 / math.log2(3) + 1 / math.log2(4)
    assert rm.ndcg(ranked, judged, 3).item() == pytest.approx(expected_dcg / ideal)


def test_binary_ndcg_matches_scikit_learn():
    generator = np.random.default_rng(0)
    for _ in range(20):
        labels = (generator.random(12) < 0.3).astype(float)
        labels[0] = 1.0
        scores = generator.random(12)
        order = np.argsort(-scores)
        got = rm.ndcg(torch.tensor(labels[order]), torch.tensor(labels), 5).item()
        assert got == pytest.approx(ndcg_score([labels], [scores], k=5), abs=1e-12)


def test_rr_precision_recall_ap_hand_cases():
    ranked = torch.tensor([[0.0, 1.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0]])
    num_relevant = torch.tensor([3, 0])
    assert rm.reciprocal_rank(ranked, 10).tolist() == pytest.approx([0.5, 0.0])
    assert rm.reciprocal_rank(ranked, 1).tolist() == pytest.approx([0.0, 0.0])
    assert rm.precision(ranked, 4).tolist() == pytest.approx([0.5, 0.0])
    assert rm.precision(ranked, 10).tolist() == pytest.approx([0.2, 0.0])  # missing ranks count as misses
    assert rm.recall(ranked, num_relevant, 4).tolist() == pytest.approx([2 / 3, 0.0])
    # AP = (1/2 + 2/4) / 3
    assert rm.average_precision(ranked, num_relevant).tolist() == pytest.approx([(0.5 + 0.5) / 3, 0.0])


def test_query_without_relevant_documents_scores_zero():
    assert rm.ndcg(torch.tensor([0.0, 0.0]), torch.tensor([0.0]), 2).item() == 0.0


def test_utility_dispatch_and_bad_names():
    ranked = torch.tensor([1.0, 0.0])
    assert rm.utility("ndcg", ranked, torch.tensor([1.0]), 2).item() == 1.0
    assert rm.utility("recall", ranked, torch.tensor([1.0, 1.0]), 2).item() == 0.5
    with pytest.raises(ValueError, match="Unknown utility 'map'"):
        rm.utility("map", ranked, torch.tensor([1.0]))
    with pytest.raises(ValueError, match="k must be >= 1"):
        rm.dcg(ranked, 0)
