"""Ranking metrics on relevance in rank order: one implementation for training utilities and for evaluation.

Every function takes ``ranked_relevance`` [..., K]: the graded relevance (>= 0; 0 = not relevant) of the document
at each of the first K ranks, in rank order (rank 1 first), with any leading batch shape. Padding past the end of a
short list is relevance 0. The PL policy gradient gathers labels with its sampled rankings into this form; the
retrieval evaluators look up the qrels of their top-K lists.

Definitions (cutoffs, IDCG over all judged documents and averaging as in pytrec_eval / BEIR; the gain is the PG-Rank
spec's exponential one, where trec_eval uses ``rel`` itself: the two agree on binary labels, and
``evaluation.retrieval`` offers ``ndcg_gain="linear"`` for graded qrels):

- ``DCG@k = sum_{i<=k} (2^rel_i - 1) / log2(i + 1)``; ``nDCG@k = DCG@k / IDCG@k`` where IDCG@k is the DCG of
  ``ideal_relevance`` (every judged grade of the query, so relevant documents missing from the list still count)
  sorted descending; 0 when the query has no relevant document.
- ``RR@k = 1 / rank`` of the first relevant document within k, else 0.
- ``P@k = (#relevant in top k) / k``; ``Recall@k = (#relevant in top k) / num_relevant``.
- ``AP@k = sum_{i<=k, rel_i>0} P@i / num_relevant`` (MAP is its mean over queries).

"relevant" means ``rel > 0``. Queries with ``num_relevant == 0`` score 0 on every metric.
"""

from __future__ import annotations

import torch


def _cut(ranked_relevance: torch.Tensor, k: int | None) -> torch.Tensor:
    if k is not None and k < 1:
        raise ValueError(f"k must be >= 1, got {k}.")
    return ranked_relevance[..., :k].to(torch.float64 if ranked_relevance.dtype == torch.float64 else torch.float32)


def _discounts(length: int, like: torch.Tensor) -> torch.Tensor:
    """``1 / log2(i + 1)`` for ranks i = 1..length."""
    ranks = torch.arange(1, length + 1, device=like.device, dtype=like.dtype)
    return 1.0 / torch.log2(ranks + 1.0)


def dcg(ranked_relevance: torch.Tensor, k: int | None = None) -> torch.Tensor:
    """DCG@k with exponential gain ``2^rel - 1``: [..., K] -> [...]."""
    relevance = _cut(ranked_relevance, k)
    return ((torch.pow(2.0, relevance) - 1.0) * _discounts(relevance.shape[-1], relevance)).sum(dim=-1)


def ndcg(ranked_relevance: torch.Tensor, ideal_relevance: torch.Tensor, k: int | None = None) -> torch.Tensor:
    """nDCG@k: [..., K] ranked relevance and [..., M] judged grades (any order, 0-padded) -> [...] in [0, 1]."""
    ideal = torch.sort(ideal_relevance.to(_cut(ranked_relevance, k).dtype), dim=-1, descending=True).values
    ideal_dcg = dcg(ideal, k)
    safe = torch.where(ideal_dcg > 0, ideal_dcg, torch.ones_like(ideal_dcg))
    return torch.where(ideal_dcg > 0, dcg(ranked_relevance, k) / safe, torch.zeros_like(ideal_dcg))


def reciprocal_rank(ranked_relevance: torch.Tensor, k: int | None = None) -> torch.Tensor:
    """RR@k: 1 / rank of the first relevant document in the top k, 0 if none: [..., K] -> [...]."""
    relevant = _cut(ranked_relevance, k) > 0
    ranks = torch.arange(1, relevant.shape[-1] + 1, device=relevant.device)
    first = torch.where(relevant, ranks, relevant.shape[-1] + 1).min(dim=-1).values
    return torch.where(first <= relevant.shape[-1], 1.0 / first.double(), 0.0).to(_cut(ranked_relevance, k).dtype)


def precision(ranked_relevance: torch.Tensor, k: int) -> torch.Tensor:
    """P@k: relevant documents in the top k divided by k (a short list counts its missing ranks as misses)."""
    return (_cut(ranked_relevance, k) > 0).sum(dim=-1) / float(k)


def recall(ranked_relevance: torch.Tensor, num_relevant: torch.Tensor, k: int | None = None) -> torch.Tensor:
    """Recall@k: relevant documents in the top k over all ``num_relevant`` [...] of the query (0 if none)."""
    found = (_cut(ranked_relevance, k) > 0).sum(dim=-1).to(torch.float64)
    total = num_relevant.to(torch.float64)
    return torch.where(total > 0, found / total.clamp(min=1), 0.0).to(_cut(ranked_relevance, k).dtype)


def average_precision(
    ranked_relevance: torch.Tensor, num_relevant: torch.Tensor, k: int | None = None
) -> torch.Tensor:
    """AP@k: mean over the query's ``num_relevant`` documents of the precision at each one's rank (0 if unseen)."""
    relevant = (_cut(ranked_relevance, k) > 0).to(torch.float64)
    ranks = torch.arange(1, relevant.shape[-1] + 1, device=relevant.device, dtype=torch.float64)
    precision_at_hits = relevant.cumsum(dim=-1) / ranks * relevant
    total = num_relevant.to(torch.float64)
    ap = torch.where(total > 0, precision_at_hits.sum(dim=-1) / total.clamp(min=1), 0.0)
    return ap.to(_cut(ranked_relevance, k).dtype)


def utility(
    name: str, ranked_relevance: torch.Tensor, ideal_relevance: torch.Tensor, k: int | None = None
) -> torch.Tensor:
    """A ranking utility by name, for training objectives: ``"ndcg"``, ``"dcg"``, ``"precision"``,
    ``"reciprocal_rank"``, ``"recall"`` or ``"average_precision"``; ``ideal_relevance`` [..., M] holds the query's
    judged grades (its count of positive entries is ``num_relevant``)."""
    num_relevant = (ideal_relevance > 0).sum(dim=-1)
    if name == "ndcg":
        return ndcg(ranked_relevance, ideal_relevance, k)
    if name == "dcg":
        return dcg(ranked_relevance, k)
    if name == "precision":
        return precision(ranked_relevance, k or ranked_relevance.shape[-1])
    if name == "reciprocal_rank":
        return reciprocal_rank(ranked_relevance, k)
    if name == "recall":
        return recall(ranked_relevance, num_relevant, k)
    if name == "average_precision":
        return average_precision(ranked_relevance, num_relevant, k)
    raise ValueError(f"Unknown utility {name!r}; expected one of {list(UTILITIES)}.")


UTILITIES = ("ndcg", "dcg", "precision", "reciprocal_rank", "recall", "average_precision")
