"""Evaluate recommenders by full ranking over all items: Recall@K / NDCG@K (graph CF) and leave-one-out HR@K / NDCG@K.

evaluator = FullRankingEvaluator.from_data(data, split="test")      # data: hf_contrastive.data.recsys.InteractionData
evaluator(lambda users: model.full_sort_scores(users))               # [B] user indices -> [B, I] scores
# {"test_recall@10": ..., "test_ndcg@10": ..., "test_recall@20": ..., "test_ndcg@20": ..., ...}

Definitions (XSimGCL / DCCF specs, SELFRec ``util/evaluation.py``, DCCF ``batch_test.py``), per user u with test
items T_u (|T_u| >= 1) and the top-K list of all items with u's training items masked out:

- ``Recall@K = |top-K ∩ T_u| / |T_u|``; ``Precision@K = |top-K ∩ T_u| / K``;
- ``NDCG@K = DCG / IDCG`` with binary relevance, ``DCG = sum_{r<=K} rel_r / log2(r + 1)`` and
  ``IDCG = sum_{r<=min(K, |T_u|)} 1 / log2(r + 1)``;
- each averaged over the users with at least one test item; ``HitRatio@K`` (SELFRec's "Hit Ratio") is the total
  hits over the total test interactions. Ties in the top-K are broken by ``torch.topk`` (arbitrary).

Leave-one-out (MCLRec spec, RecBole full sort): one target t per sequence, ``rank = 1 + #{j : s_j > s_t} +
#{j != t : s_j == s_t}`` over the non-excluded items (ties count against the model, so a collapsed scorer does not
score well); ``HR@K = [rank <= K]``, ``NDCG@K = [rank <= K] / log2(rank + 1)``, ``MRR@K = [rank <= K] / rank``.
RecBole (MCLRec's code) excludes only the padding id 0; S3-Rec-style code also excludes the history items, which
``exclude_history=True`` reproduces (a target that is also a history item stays rankable).

All metrics are computed in user batches on the device of the scores; only the final sums leave it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..data.recsys import pairs_to_csr
from . import ranking_metrics

DEFAULT_KS = (10, 20)

UserScoreFn = Callable[[torch.Tensor], torch.Tensor]  # [B] user indices -> [B, num_items] scores
SequenceScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # ([B, L], [B]) -> [B, num_items + 1]


def full_ranking_metrics(
    scores: torch.Tensor, train_mask: torch.Tensor | None, targets: torch.Tensor, ks: Sequence[int] = DEFAULT_KS
) -> dict[str, torch.Tensor]:
    """Per-user Recall@K, NDCG@K, Precision@K and hit counts of full rankings: ``[B, I]`` inputs -> ``[B]`` each.

    Args:
        scores: ``[B, I]`` float scores of every item for each user.
        train_mask: ``[B, I]`` bool, True for the items to exclude (the user's training items), or ``None``.
            A target item is never excluded.
        targets: ``[B, I]`` bool, True for the user's test items; every row needs at least one.
        ks: the cutoffs (each <= I).

    Returns ``{"recall@K", "ndcg@K", "precision@K", "hits@K"}`` for each K, ``[B]`` tensors on ``scores.device``.
    """
    _check_scores(scores, targets.shape, "targets")
    num_targets = targets.sum(dim=1)
    if bool((num_targets == 0).any()):
        raise ValueError("Every user needs at least one target item; drop users without test items first.")
    ranked_relevance = _top_k_relevance(_masked(scores, train_mask, targets), targets, ks)
    ideal = (torch.arange(ranked_relevance.shape[1], device=scores.device) < num_targets[:, None]).float()
    metrics = {}
    for k in ks:
        metrics[f"recall@{k}"] = ranking_metrics.recall(ranked_relevance, num_targets, k)
        metrics[f"ndcg@{k}"] = ranking_metrics.ndcg(ranked_relevance, ideal, k)
        metrics[f"precision@{k}"] = ranking_metrics.precision(ranked_relevance, k)
        metrics[f"hits@{k}"] = ranked_relevance[:, :k].sum(dim=1)
    return metrics


def leave_one_out_metrics(
    scores: torch.Tensor,
    history_mask: torch.Tensor | None,
    targets: torch.Tensor,
    ks: Sequence[int] = DEFAULT_KS,
) -> dict[str, torch.Tensor]:
    """Per-sequence HR@K, NDCG@K and MRR@K of one target item each: ``scores [B, C]``, ``targets [B]`` -> ``[B]``.

    ``history_mask`` ``[B, C]`` bool marks the columns to exclude (padding, history items) or is ``None``; the
    target column is never excluded. The rank is pessimistic in ties (see the module docstring).
    """
    if scores.dim() != 2 or targets.dim() != 1 or targets.shape[0] != scores.shape[0]:
        raise ValueError(f"Need scores [B, C] and targets [B]; got {tuple(scores.shape)} and {tuple(targets.shape)}.")
    if bool(((targets < 0) | (targets >= scores.shape[1])).any()):
        raise ValueError(f"targets must be column indices in [0, {scores.shape[1]}), got {targets.tolist()}.")
    target_mask = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, targets[:, None], True)
    masked = _masked(scores, history_mask, target_mask)
    target_scores = masked.gather(1, targets[:, None])
    ahead = (masked > target_scores) | ((masked == target_scores) & ~target_mask)
    rank = 1 + ahead.sum(dim=1)
    metrics = {}
    for k in ks:
        _check_k(k, scores.shape[1])
        hit = rank <= k
        metrics[f"hr@{k}"] = hit.float()
        metrics[f"ndcg@{k}"] = torch.where(hit, 1.0 / torch.log2(rank.float() + 1.0), 0.0)
        metrics[f"mrr@{k}"] = torch.where(hit, 1.0 / rank.float(), 0.0)
    return metrics


def ranked_list_metrics(
    ranked_items: Sequence[Sequence[Any]], relevant_items: Sequence[Sequence[Any]], ks: Sequence[int] = DEFAULT_KS
) -> dict[str, float]:
    """Mean Recall@K / NDCG@K / Precision@K of given ranked id lists (already without training items).

    With one relevant item per user, Recall@K is HR@K and NDCG@K the leave-one-out NDCG. A list shorter than K
    counts its missing ranks as misses. Every user needs at least one relevant item.
    """
    if len(ranked_items) != len(relevant_items):
        raise ValueError(f"{len(ranked_items)} ranked lists but {len(relevant_items)} lists of relevant items.")
    width = max([max(ks)] + [len(ranked) for ranked in ranked_items])
    relevance = torch.zeros(len(ranked_items), width, dtype=torch.float64)
    num_relevant = torch.tensor([len(set(relevant)) for relevant in relevant_items])
    if bool((num_relevant == 0).any()):
        raise ValueError("Every user needs at least one relevant item.")
    for row, (ranked, relevant) in enumerate(zip(ranked_items, relevant_items)):
        wanted = set(relevant)
        relevance[row, : len(ranked)] = torch.tensor([float(item in wanted) for item in ranked])
    ideal = (torch.arange(width) < num_relevant[:, None]).float()
    metrics = {}
    for k in ks:
        metrics[f"recall@{k}"] = ranking_metrics.recall(relevance, num_relevant, k).mean().item()
        metrics[f"ndcg@{k}"] = ranking_metrics.ndcg(relevance, ideal, k).mean().item()
        metrics[f"precision@{k}"] = ranking_metrics.precision(relevance, k).mean().item()
    return metrics


class FullRankingEvaluator:
    """Full-ranking Recall@K / NDCG@K of a graph recommender: call it with ``score_users([B] indices) -> [B, I]``.

    Users with at least one evaluation item are scored in batches of ``batch_size``; their training items are
    masked. Returns ``{f"{name}_recall@K", f"{name}_ndcg@K", f"{name}_precision@K", f"{name}_hit_ratio@K"}``.

    Args:
        train_pairs: ``[N, 2]`` (user, item) indices to exclude (the training interactions).
        eval_pairs: ``[M, 2]`` (user, item) indices of the evaluation split.
        num_users, num_items: the index ranges.
        ks: the cutoffs; batch_size: users per ``score_users`` call; name: the metric key prefix.
    """

    def __init__(
        self,
        train_pairs: torch.Tensor,
        eval_pairs: torch.Tensor,
        num_users: int,
        num_items: int,
        ks: Sequence[int] = DEFAULT_KS,
        batch_size: int = 1024,
        name: str = "test",
    ) -> None:
        for label, pairs in (("train_pairs", train_pairs), ("eval_pairs", eval_pairs)):
            _check_pairs(label, pairs, num_users, num_items)
        if len(eval_pairs) == 0:
            raise ValueError("eval_pairs is empty: nothing to evaluate.")
        for k in ks:
            _check_k(k, num_items)
        self.train_csr = pairs_to_csr(train_pairs, num_users)
        self.eval_csr = pairs_to_csr(eval_pairs, num_users)
        self.users = torch.nonzero(self.eval_csr[0][1:] > self.eval_csr[0][:-1]).flatten()
        self.num_items, self.ks, self.batch_size, self.name = num_items, tuple(ks), batch_size, name

    @classmethod
    def from_data(cls, data: Any, split: str = "test", **kwargs: Any) -> FullRankingEvaluator:
        """From an ``InteractionData``: its training pairs are masked and ``split`` is evaluated."""
        return cls(data.train, data.split(split), data.num_users, data.num_items, **kwargs)

    @torch.no_grad()
    def __call__(self, score_users: UserScoreFn) -> dict[str, float]:
        totals: dict[str, torch.Tensor] = {}
        total_targets = 0
        for start in range(0, len(self.users), self.batch_size):
            users = self.users[start : start + self.batch_size]
            scores = score_users(users)
            train_mask = _rows_to_mask(self.train_csr, users, self.num_items, scores.device)
            targets = _rows_to_mask(self.eval_csr, users, self.num_items, scores.device)
            total_targets += int(targets.sum())
            for key, values in full_ranking_metrics(scores, train_mask, targets, self.ks).items():
                totals[key] = totals.get(key, 0) + values.double().sum()
        results = {}
        for k in self.ks:
            for metric in ("recall", "ndcg", "precision"):
                results[f"{self.name}_{metric}@{k}"] = (totals[f"{metric}@{k}"] / len(self.users)).item()
            results[f"{self.name}_hit_ratio@{k}"] = (totals[f"hits@{k}"] / total_targets).item()
        return results


class LeaveOneOutEvaluator:
    """Leave-one-out HR@K / NDCG@K / MRR@K of a sequential recommender over all items.

    Call it with ``score_sequences(item_seq [B, L], item_seq_len [B]) -> [B, num_items + 1]``: histories are cut to
    their last ``max_len`` items and right-padded with 0 (RecBole's layout); column 0 of the scores is the padding
    id and is always excluded. Returns ``{f"{name}_hr@K", f"{name}_ndcg@K", f"{name}_mrr@K"}``.

    Args:
        histories: per user, the item ids (1..num_items) before the target; none may be empty.
        targets: per user, the target item id.
        num_items: the number of real items; exclude_history: also exclude each user's history items (S3-Rec).
    """

    def __init__(
        self,
        histories: Sequence[Sequence[int]],
        targets: Sequence[int],
        num_items: int,
        ks: Sequence[int] = DEFAULT_KS,
        batch_size: int = 256,
        max_len: int = 50,
        exclude_history: bool = False,
        name: str = "test",
    ) -> None:
        if len(histories) != len(targets) or not histories:
            raise ValueError(f"Need one target per history and at least one: {len(histories)} vs {len(targets)}.")
        empty = [user for user, history in enumerate(histories) if len(history) == 0]
        if empty:
            raise ValueError(f"{len(empty)} histories are empty (first at position {empty[0]}); need >= 1 item each.")
        items = torch.tensor([item for history in histories for item in history] + list(targets))
        if bool(((items < 1) | (items > num_items)).any()):
            raise ValueError(
                f"Item ids must be in 1..{num_items} (0 is padding); got {int(items.min())}..{int(items.max())}."
            )
        for k in ks:
            _check_k(k, num_items)
        self.histories = [list(history) for history in histories]
        self.targets = torch.tensor(list(targets), dtype=torch.long)
        self.num_items, self.ks, self.batch_size, self.max_len = num_items, tuple(ks), batch_size, max_len
        self.exclude_history, self.name = exclude_history, name

    @classmethod
    def from_data(cls, data: Any, split: str = "test", **kwargs: Any) -> LeaveOneOutEvaluator:
        """From a ``SequenceData``: its leave-one-out ``split`` ("valid" or "test")."""
        histories, targets = data.evaluation_split(split)
        return cls(histories, targets, data.num_items, **kwargs)

    @torch.no_grad()
    def __call__(self, score_sequences: SequenceScoreFn) -> dict[str, float]:
        totals: dict[str, torch.Tensor] = {}
        for start in range(0, len(self.histories), self.batch_size):
            item_seq, item_seq_len = pad_sequences(self.histories[start : start + self.batch_size], self.max_len)
            scores = score_sequences(item_seq, item_seq_len)
            _check_scores(scores, (len(item_seq), self.num_items + 1), "num_items + 1 columns (0 = padding)")
            exclude = self._exclusions(start, scores)
            targets = self.targets[start : start + len(item_seq)].to(scores.device)
            for key, values in leave_one_out_metrics(scores, exclude, targets, self.ks).items():
                totals[key] = totals.get(key, 0) + values.double().sum()
        return {f"{self.name}_{key}": (value / len(self.histories)).item() for key, value in totals.items()}

    def _exclusions(self, start: int, scores: torch.Tensor) -> torch.Tensor:
        exclude = torch.zeros_like(scores, dtype=torch.bool)
        exclude[:, 0] = True
        if self.exclude_history:
            for row, history in enumerate(self.histories[start : start + len(scores)]):
                exclude[row, torch.tensor(history, device=scores.device)] = True
        return exclude


def pad_sequences(histories: Sequence[Sequence[int]], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep each history's last ``max_len`` items and right-pad with 0: ``([B, L] item_seq, [B] item_seq_len)``."""
    cut = [list(history)[-max_len:] for history in histories]
    lengths = torch.tensor([len(history) for history in cut], dtype=torch.long)
    item_seq = torch.zeros(len(cut), int(lengths.max()) if len(cut) else 0, dtype=torch.long)
    for row, history in enumerate(cut):
        item_seq[row, : len(history)] = torch.tensor(history, dtype=torch.long)
    return item_seq, lengths


def _masked(scores: torch.Tensor, exclude: torch.Tensor | None, targets: torch.Tensor) -> torch.Tensor:
    """Excluded (non-target) items get -inf, so they rank below every other item."""
    if exclude is None:
        return scores
    _check_scores(scores, exclude.shape, "the exclusion mask")
    return scores.masked_fill(exclude & ~targets, float("-inf"))


def _top_k_relevance(scores: torch.Tensor, targets: torch.Tensor, ks: Sequence[int]) -> torch.Tensor:
    """``[B, max K]`` 0/1 relevance of each user's top items; -inf (excluded) entries never count as hits."""
    for k in ks:
        _check_k(k, scores.shape[1])
    top_scores, top_items = torch.topk(scores, max(ks), dim=1)
    return (targets.gather(1, top_items) & (top_scores > float("-inf"))).float()


def _rows_to_mask(
    csr: tuple[torch.Tensor, torch.Tensor], rows: torch.Tensor, width: int, device: torch.device
) -> torch.Tensor:
    """Dense ``[len(rows), width]`` bool mask of the CSR entries of ``rows`` (built on ``device``)."""
    indptr, columns = csr
    starts, counts = indptr[rows], indptr[rows + 1] - indptr[rows]
    row_of_entry = torch.repeat_interleave(torch.arange(len(rows)), counts)
    # position of each entry inside its row's slice, then its index into ``columns``
    within_row = torch.arange(len(row_of_entry)) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    mask = torch.zeros(len(rows), width, dtype=torch.bool, device=device)
    mask[row_of_entry.to(device), columns[starts[row_of_entry] + within_row].to(device)] = True
    return mask


def _check_scores(scores: torch.Tensor, shape: Sequence[int], what: str) -> None:
    if scores.dim() != 2 or tuple(scores.shape) != tuple(shape):
        raise ValueError(f"scores must be [B, C] matching {what} {tuple(shape)}, got {tuple(scores.shape)}.")


def _check_k(k: int, num_items: int) -> None:
    if not 1 <= k <= num_items:
        raise ValueError(f"Cutoff K={k} must be in 1..{num_items} (the number of items).")


def _check_pairs(label: str, pairs: torch.Tensor, num_users: int, num_items: int) -> None:
    if pairs.dim() != 2 or pairs.shape[1] != 2:
        raise ValueError(f"{label} must be [N, 2] (user, item) indices, got {tuple(pairs.shape)}.")
    if len(pairs) and (int(pairs[:, 0].max()) >= num_users or int(pairs[:, 1].max()) >= num_items or pairs.min() < 0):
        raise ValueError(f"{label} holds ids outside users 0..{num_users - 1} / items 0..{num_items - 1}.")
