"""Ranking rows (one query, its candidate documents, their graded relevance): validation and the collator.

Row contract (listwise learning to rank, e.g. Neural PG-Rank):

=====================  ==============================  ====================================================
column                 type                            meaning
=====================  ==============================  ====================================================
``query``              str                             the query text
``documents``          list[str] (non-empty)           its candidate documents
``labels``             list[int | float], >= 0         graded relevance of each document (0 = not relevant)
``judged_relevance``   list[float], optional           every judged grade of the query (IDCG over all judged
                                                       documents, also those missing from ``documents``);
                                                       absent or None: the labels are used
=====================  ==============================  ====================================================

A query whose candidates are all non-relevant gives every sampled ranking the utility 0, hence no policy gradient:
it is kept in its batch (every rank keeps the same number of queries) but counted, by
:func:`validate_ranking_dataset` before training and by the objective's ``skipped_no_relevant`` log at every step.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

RANKING_COLUMNS = ("query", "documents", "labels")


@dataclass(frozen=True)
class RankingRow:
    """One validated row, its candidates already capped at ``max_candidates``."""

    query: str
    documents: list[str]
    labels: list[float]
    judged_relevance: list[float]


def _is_list_like(value: Any) -> bool:
    """A list, tuple or array (not a string or a mapping)."""
    return hasattr(value, "__len__") and hasattr(value, "__iter__") and not isinstance(value, str | bytes | Mapping)


def _grades(value: Any, column: str, index: int) -> list[float]:
    """A list of finite numbers >= 0, or a ValueError naming the column, the row and the bad entry."""
    if not _is_list_like(value):
        raise ValueError(f"Column {column!r}, row {index}: expected a list of numbers, got {value!r}.")
    grades = []
    for position, grade in enumerate(value):
        if isinstance(grade, bool) or not isinstance(grade, numbers.Real) or not math.isfinite(grade) or grade < 0:
            raise ValueError(
                f"Column {column!r}, row {index}, entry {position}: expected a finite relevance grade >= 0, got "
                f"{grade!r}."
            )
        grades.append(float(grade))
    return grades


def _documents(value: Any, index: int) -> list[str]:
    if not _is_list_like(value):
        raise ValueError(f"Column 'documents', row {index}: expected a list of strings, got {value!r}.")
    if len(value) == 0:
        raise ValueError(f"Column 'documents', row {index}: the candidate list is empty; every query needs one.")
    for position, text in enumerate(value):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(
                f"Column 'documents', row {index}, entry {position}: expected non-blank text, got {text!r}."
            )
    return list(value)


def select_candidates(labels: Sequence[float], max_candidates: int | None) -> list[int]:
    """Positions of the candidates kept under ``max_candidates``, in list order.

    All relevant candidates are kept (the highest grades first if they alone exceed the cap), then non-relevant
    ones from the top of the list: a list mined by a first-stage retriever keeps its hardest negatives. The choice
    is deterministic, so every process and epoch sees the same candidate set.
    """
    if max_candidates is None or len(labels) <= max_candidates:
        return list(range(len(labels)))
    relevant = sorted((i for i, grade in enumerate(labels) if grade > 0), key=lambda i: -labels[i])
    non_relevant = [i for i, grade in enumerate(labels) if grade <= 0]
    return sorted((relevant + non_relevant)[:max_candidates])


def checked_ranking_row(row: Mapping[str, Any], index: int, max_candidates: int | None = None) -> RankingRow:
    """Validate one ranking row (see the module docstring); ValueErrors name the column and ``index``."""
    missing = [column for column in RANKING_COLUMNS if column not in row]
    if missing:
        raise ValueError(f"Row {index} lacks the ranking column(s) {missing}; it has {sorted(row)}.")
    query = row["query"]
    if not isinstance(query, str) or not query.strip():
        raise ValueError(f"Column 'query', row {index}: expected non-blank text, got {query!r}.")
    documents = _documents(row["documents"], index)
    labels = _grades(row["labels"], "labels", index)
    if len(labels) != len(documents):
        raise ValueError(
            f"Row {index}: 'documents' has {len(documents)} entries but 'labels' has {len(labels)}; they must be "
            "aligned (one relevance grade per document)."
        )
    judged = row.get("judged_relevance")
    judged = labels if judged is None else _grades(judged, "judged_relevance", index)
    _check_judged_covers_labels(labels, judged, index)
    keep = select_candidates(labels, max_candidates)
    return RankingRow(query, [documents[i] for i in keep], [labels[i] for i in keep], judged)


def _check_judged_covers_labels(labels: list[float], judged: list[float], index: int) -> None:
    """The ideal ranking must be at least as good as any ranking of the candidates, else nDCG could exceed 1."""
    candidate_grades = sorted((g for g in labels if g > 0), reverse=True)
    judged_grades = sorted((g for g in judged if g > 0), reverse=True)
    if len(candidate_grades) > len(judged_grades) or any(
        c > j for c, j in zip(candidate_grades, judged_grades, strict=False)
    ):
        raise ValueError(
            f"Row {index}: 'judged_relevance' {judged} does not contain the candidates' grades {candidate_grades}; "
            "it must list every judged grade of the query, those of the candidates included."
        )


@dataclass(frozen=True)
class RankingDatasetReport:
    """Counts over a validated ranking dataset (after capping at ``max_candidates``)."""

    rows: int
    min_candidates: int
    mean_candidates: float
    max_candidates: int
    mean_relevant: float
    queries_without_relevant: int

    @property
    def mean_non_relevant(self) -> float:
        return self.mean_candidates - self.mean_relevant


def _rows(dataset: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    """Rows of a ``datasets.Dataset`` (read in column batches, fast) or of any iterable of dicts."""
    if not hasattr(dataset, "iter"):
        yield from dataset
        return
    for columns in dataset.iter(batch_size=1000):
        names = list(columns)
        for values in zip(*(columns[name] for name in names), strict=True):
            yield dict(zip(names, values, strict=True))


def validate_ranking_dataset(
    dataset: Iterable[Mapping[str, Any]], max_candidates: int | None = None
) -> RankingDatasetReport:
    """Check every row (see :func:`checked_ranking_row`) before training and count candidates and relevant ones.

    Raises ValueError naming the missing column, or the column and row of the first bad value.
    """
    column_names = getattr(dataset, "column_names", None)
    if column_names is not None:
        missing = [column for column in RANKING_COLUMNS if column not in column_names]
        if missing:
            raise ValueError(
                f"Missing ranking column(s) {missing}; the dataset has {column_names}. Expected 'query', "
                "'documents' (list of texts), 'labels' (graded relevance per document), optional 'judged_relevance'."
            )
    counts, relevant = [], []
    for index, row in enumerate(_rows(dataset)):
        checked = checked_ranking_row(row, index, max_candidates)
        counts.append(len(checked.labels))
        relevant.append(sum(grade > 0 for grade in checked.labels))
    if not counts:
        raise ValueError("The ranking dataset has no rows.")
    return RankingDatasetReport(
        rows=len(counts),
        min_candidates=min(counts),
        mean_candidates=sum(counts) / len(counts),
        max_candidates=max(counts),
        mean_relevant=sum(relevant) / len(relevant),
        queries_without_relevant=sum(r == 0 for r in relevant),
    )


def _pad_to(tensor: torch.Tensor, length: int, value: int, side: str) -> torch.Tensor:
    """Pad [n, L] token features to [n, length] on the tokenizer's padding side."""
    extra = length - tensor.shape[1]
    return torch.nn.functional.pad(tensor, (extra, 0) if side == "left" else (0, extra), value=value)


class RankingCollator:
    """Tokenize the queries and all their candidates of a batch into one merged batch (one forward).

    Args:
        tokenizer: a ``transformers`` tokenizer.
        max_length: documents are truncated to this many tokens.
        query_max_length: queries are truncated to this many tokens (default ``max_length``).
        max_candidates: cap on candidates per query (see :func:`select_candidates`); None keeps them all.

    ``__call__(rows)`` returns, for B queries with ``n_b`` candidates each (C = sum n_b, n = max n_b):

    - ``input_ids``, ``attention_mask``: [B + C, L]: the B queries first, then every query's candidates in order,
      padded to a common length;
    - ``num_queries``: B;
    - ``candidate_index`` [B, n] long: row of candidate j of query b among the C candidate embeddings (0 where
      padded); ``candidate_mask`` [B, n] bool: True for real candidates;
    - ``relevance`` [B, n] float: grades (0 where padded). Named ``relevance``, not ``labels``: the
      ``transformers.Trainer`` treats a ``labels`` key as token labels (loss-token counting);
    - ``judged_relevance`` [B, M] float: every judged grade of each query, 0-padded (IDCG).
    """

    def __init__(
        self,
        tokenizer: Any,
        max_length: int = 128,
        query_max_length: int | None = None,
        max_candidates: int | None = None,
    ) -> None:
        if max_candidates is not None and max_candidates < 1:
            raise ValueError(f"max_candidates must be >= 1 or None, got {max_candidates}.")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.query_max_length = query_max_length or max_length
        self.max_candidates = max_candidates

    def _tokenize(self, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
        return self.tokenizer(
            texts,
            padding="longest",
            truncation=True,
            max_length=max_length,
            return_attention_mask=True,
            return_token_type_ids=False,
            return_tensors="pt",
        )

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        checked = [checked_ranking_row(row, index, self.max_candidates) for index, row in enumerate(rows)]
        queries = self._tokenize([row.query for row in checked], self.query_max_length)
        documents = self._tokenize([text for row in checked for text in row.documents], self.max_length)
        length = max(queries["input_ids"].shape[1], documents["input_ids"].shape[1])
        side = getattr(self.tokenizer, "padding_side", "right")
        pad_id = self.tokenizer.pad_token_id or 0
        batch = {
            "input_ids": torch.cat(
                [_pad_to(encoded["input_ids"].long(), length, pad_id, side) for encoded in (queries, documents)]
            ),
            "attention_mask": torch.cat(
                [_pad_to(encoded["attention_mask"].long(), length, 0, side) for encoded in (queries, documents)]
            ),
            "num_queries": len(checked),
        }
        return {**batch, **self._candidate_layout(checked)}

    @staticmethod
    def _candidate_layout(rows: list[RankingRow]) -> dict[str, torch.Tensor]:
        width = max(len(row.labels) for row in rows)
        judged_width = max(len(row.judged_relevance) for row in rows)
        candidate_index = torch.zeros(len(rows), width, dtype=torch.long)
        candidate_mask = torch.zeros(len(rows), width, dtype=torch.bool)
        relevance = torch.zeros(len(rows), width)
        judged = torch.zeros(len(rows), judged_width)
        start = 0
        for query, row in enumerate(rows):
            count = len(row.labels)
            candidate_index[query, :count] = torch.arange(start, start + count)
            candidate_mask[query, :count] = True
            relevance[query, :count] = torch.tensor(row.labels)
            judged[query, : len(row.judged_relevance)] = torch.tensor(row.judged_relevance)
            start += count
        return {
            "candidate_index": candidate_index,
            "candidate_mask": candidate_mask,
            "relevance": relevance,
            "judged_relevance": judged,
        }
