"""Evaluate retrieval: rank a corpus for every judged query (first stage) or re-rank given candidate lists.

evaluator = RetrievalEvaluator(data.queries, data.corpus, data.qrels, name="scifact_dev")
evaluator(lambda texts: model.encode(texts, tokenizer))
# {"scifact_dev_ndcg@10": 0.64..., "scifact_dev_mrr@10": 0.60..., "scifact_dev_recall@100": 0.91..., ...}

Metric names are ``"<metric>@<k>"`` with metric one of ``ndcg``, ``mrr``, ``recall``, ``map``, ``precision``; all
of them come from :mod:`hf_contrastive.evaluation.ranking_metrics`. Averaging follows pytrec_eval / BEIR: the mean
is over the queries of the qrels; a query whose qrels hold no relevant document (grade > 0) has no defined
nDCG/recall/AP, so it is skipped and the count is logged (warning); a judged query that is missing from a run
scores 0 (trec_eval ``-c``). Negative grades (e.g. "judged not relevant" -1) count as 0.

Under ``torch.distributed`` the evaluators run on every rank (``runs_on_all_ranks = True``): each rank encodes and
scores a contiguous shard of the texts (and queries), the shards are all-gathered, and every rank computes the
same metrics from the same gathered numbers.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from numbers import Real

import torch
import torch.nn.functional as F

from .. import distributed
from . import ranking_metrics
from .sts import EncodeFn, as_float64, encode_texts

logger = logging.getLogger(__name__)

DEFAULT_METRICS = ("ndcg@10", "mrr@10", "recall@100", "map@100")
SIMILARITIES = ("cosine", "dot")
NDCG_GAINS = ("exponential", "linear")

Run = Mapping[str, Sequence[str]] | Mapping[str, Mapping[str, float]]
Qrels = Mapping[str, Mapping[str, float]]
PairScorer = Callable[[list[str], list[str]], Sequence[float]]

_METRIC_NAME = re.compile(r"(ndcg|mrr|recall|map|precision)@([1-9][0-9]*)")


# ----------------------------------------------------------------------------------------------- metrics
def compute_retrieval_metrics(
    run: Run, qrels: Qrels, metrics: Sequence[str] = DEFAULT_METRICS, ndcg_gain: str = "exponential"
) -> dict[str, float]:
    """Mean ranking metrics of a ``run`` against ``qrels``: ``{"ndcg@10": ..., "mrr@10": ..., ...}``.

    Args:
        run: query id -> ranked document ids (best first), or query id -> {document id: score}; a score dict is
            ranked by descending score, ties keeping the dict's order (pytrec_eval breaks them by document id).
            Queries absent from ``qrels`` are ignored; judged queries absent from the run score 0 (logged).
        qrels: query id -> {document id: graded relevance}; unlisted documents have grade 0.
        metrics: names ``"<metric>@<k>"``, see the module docstring.
        ndcg_gain: ``"exponential"`` (``2^rel - 1``, the Burges form the PG-Rank utility uses) or ``"linear"``
            (gain ``rel``, what trec_eval's ``ndcg_cut`` does). They agree on binary qrels.

    The grades of the first ``K = max k`` ranked documents fill ``ranked_relevance`` [Q, K] and every judged
    grade of the query fills ``ideal_relevance`` [Q, M] (0-padded); the metrics are averaged over the Q judged
    queries that have a relevant document (the others are skipped, logged).
    """
    parsed = _parse_metrics(metrics)
    _check_choice("ndcg_gain", ndcg_gain, NDCG_GAINS)
    query_ids = _relevant_queries(qrels, what="qrels")
    missing = [qid for qid in query_ids if qid not in run]
    if missing:
        logger.warning(
            "%d of %d judged queries are missing from the run and score 0: %s",
            len(missing),
            len(query_ids),
            _first(missing),
        )
    depth = max(k for _, k in parsed)
    ranked = [[qrels[qid].get(doc, 0) for doc in _ranked_ids(run.get(qid, ()), qid)[:depth]] for qid in query_ids]
    judged = [list(qrels[qid].values()) for qid in query_ids]
    return _mean_metrics(_padded(ranked), _padded(judged), parsed, ndcg_gain)


def _parse_metrics(metrics: Sequence[str]) -> list[tuple[str, int]]:
    """``["ndcg@10", "map@100"]`` -> ``[("ndcg", 10), ("map", 100)]``; a clear error for anything else."""
    if isinstance(metrics, str) or not metrics:
        raise ValueError(f"metrics must be a non-empty list of names like 'ndcg@10', got {metrics!r}.")
    parsed = []
    for name in metrics:
        match = _METRIC_NAME.fullmatch(name) if isinstance(name, str) else None
        if match is None:
            raise ValueError(
                f"Unknown metric {name!r}; expected '<metric>@<k>' with metric in ndcg, mrr, recall, map, precision "
                "and k >= 1 (e.g. 'ndcg@10')."
            )
        parsed.append((match.group(1), int(match.group(2))))
    return parsed


def _relevant_queries(qrels: Qrels, what: str) -> list[str]:
    """The query ids of ``qrels`` that judge at least one document relevant (grade > 0), in qrels order.

    The others are skipped by every metric (their nDCG, recall and AP are undefined); their number is logged as
    a warning naming ``what`` they came from. Raises when no query is left.
    """
    kept, skipped = [], []
    for qid, grades in qrels.items():
        (kept if any(grade > 0 for grade in grades.values()) else skipped).append(qid)
    if skipped:
        logger.warning(
            "%d of %d queries in %s have no relevant document (grade > 0) and are skipped: %s",
            len(skipped),
            len(qrels),
            what,
            _first(skipped),
        )
    if not kept:
        raise ValueError(f"No query in {what} has a relevant document (grade > 0); nothing to evaluate.")
    return kept


def _ranked_ids(ranking: Sequence[str] | Mapping[str, float], qid: str) -> list[str]:
    if isinstance(ranking, Mapping):
        return sorted(ranking, key=ranking.__getitem__, reverse=True)  # stable: ties keep the dict's order
    if isinstance(ranking, str) or not isinstance(ranking, Sequence):
        raise TypeError(f"Run of query {qid!r}: expected a list of document ids or a dict of scores, got {ranking!r}.")
    if len(set(ranking)) != len(ranking):
        raise ValueError(f"Run of query {qid!r} lists a document more than once.")
    return list(ranking)


def _padded(rows: Sequence[Sequence[float]]) -> torch.Tensor:
    """Ragged grades -> [R, max length] float64, 0-padded, negative grades set to 0."""
    width = max(1, max(len(row) for row in rows))
    table = torch.zeros(len(rows), width, dtype=torch.float64)
    for i, row in enumerate(rows):
        table[i, : len(row)] = torch.tensor(row, dtype=torch.float64)
    return table.clamp(min=0)


def _mean_metrics(
    ranked_relevance: torch.Tensor, ideal_relevance: torch.Tensor, metrics: list[tuple[str, int]], ndcg_gain: str
) -> dict[str, float]:
    """Average each ``(metric, k)`` over the rows of ranked_relevance [Q, K] and ideal_relevance [Q, M]."""
    num_relevant = (ideal_relevance > 0).sum(dim=-1)
    results = {}
    for metric, k in metrics:
        if metric == "ndcg":
            values = ranking_metrics.ndcg(
                _gain_level(ranked_relevance, ndcg_gain), _gain_level(ideal_relevance, ndcg_gain), k
            )
        elif metric == "mrr":
            values = ranking_metrics.reciprocal_rank(ranked_relevance, k)
        elif metric == "recall":
            values = ranking_metrics.recall(ranked_relevance, num_relevant, k)
        elif metric == "map":
            values = ranking_metrics.average_precision(ranked_relevance, num_relevant, k)
        else:
            values = ranking_metrics.precision(ranked_relevance, k)
        results[f"{metric}@{k}"] = float(values.mean())
    return results


def _gain_level(relevance: torch.Tensor, ndcg_gain: str) -> torch.Tensor:
    """Grades as ``ranking_metrics.ndcg`` takes them: its gain ``2^g - 1`` equals ``rel`` for ``g = log2(1 + rel)``."""
    return torch.log2(1 + relevance) if ndcg_gain == "linear" else relevance


# ----------------------------------------------------------------------------------------------- sharded work
def _local_rows(total: int, shard: bool = True) -> range:
    """The rows of ``total`` this rank works on: a contiguous shard under ``torch.distributed``, else all of them.

    Shard sizes differ by at most one (lower ranks take the extra row). With fewer rows than ranks some shard
    would be empty (of unknown width), so then every rank does all rows.
    """
    if not _sharding(total, shard):
        return range(total)
    size, extra = divmod(total, distributed.world_size())
    rank = distributed.rank()
    start = rank * size + min(rank, extra)
    return range(start, start + size + (rank < extra))


def _gather_rows(local: torch.Tensor, total: int, shard: bool = True) -> torch.Tensor:
    """Every rank's ``_local_rows`` result [n_r, ...] -> all ``total`` rows [total, ...] in order, on the CPU.

    Shards are padded to the longest one because all-gather needs equal sizes, then the padding is dropped.
    """
    if not _sharding(total, shard):
        return local
    world = distributed.world_size()
    longest = -(-total // world)
    padded = local.new_zeros((longest, *local.shape[1:]))
    padded[: len(local)] = local
    gathered = distributed.gather_no_grad(padded.to(distributed.collective_device())).cpu()
    size, extra = divmod(total, world)
    return torch.cat([gathered[r * longest : r * longest + size + (r < extra)] for r in range(world)])


def _sharding(total: int, shard: bool) -> bool:
    return shard and distributed.is_distributed() and total >= distributed.world_size()


def encode_corpus(encode_fn: EncodeFn, texts: Sequence[str], batch_size: int = 64, shard: bool = True) -> torch.Tensor:
    """Embed ``texts`` into a float32 [N, D] CPU tensor (rows in text order), without gradient.

    Under ``torch.distributed`` (and ``shard=True``) each rank encodes a contiguous shard of the texts and the
    shards are all-gathered, so every rank returns the full matrix at 1/W of the encoding cost; with fewer
    texts than ranks every rank encodes all. ``encode_fn(list[str]) -> [n, D]`` gets batches of ``batch_size``
    texts, longest first (little padding).
    """
    if not texts:
        raise ValueError("encode_corpus got no texts to encode.")
    _check_positive(batch_size=batch_size)
    texts = list(texts)
    rows = _local_rows(len(texts), shard)
    with torch.no_grad():
        local = torch.from_numpy(encode_texts(texts[rows.start : rows.stop], encode_fn, batch_size)).float()
    return _gather_rows(local, len(texts), shard)


def retrieve(
    query_embeddings: torch.Tensor,
    corpus_embeddings: torch.Tensor,
    top_k: int,
    similarity: str = "cosine",
    chunk_size: int = 16384,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k corpus rows for every query: returns (indices [Q, k] int64, scores [Q, k]), best first.

    ``score(q, d) = <q, d>`` (``"dot"``) or ``<q, d> / (|q| |d|)`` (``"cosine"``) for query_embeddings [Q, D] and
    corpus_embeddings [N, D]; ``k = min(top_k, N)``. The corpus is scored ``chunk_size`` rows at a time and merged
    into the running top-k, so peak memory is O(Q * (chunk_size + k)) instead of O(Q * N). Ties go to the lower
    corpus index, exactly like a stable descending sort of the full score matrix.
    """
    _check_choice("similarity", similarity, SIMILARITIES)
    if query_embeddings.ndim != 2 or corpus_embeddings.ndim != 2:
        raise ValueError(
            f"Expected [Q, D] query and [N, D] corpus embeddings, got {tuple(query_embeddings.shape)} and "
            f"{tuple(corpus_embeddings.shape)}."
        )
    if query_embeddings.shape[1] != corpus_embeddings.shape[1]:
        raise ValueError(
            f"Query embeddings have {query_embeddings.shape[1]} dimensions, corpus {corpus_embeddings.shape[1]}."
        )
    if len(corpus_embeddings) == 0:
        raise ValueError("The corpus is empty: nothing to retrieve.")
    _check_positive(top_k=top_k, chunk_size=chunk_size)
    queries, corpus = query_embeddings, corpus_embeddings.to(query_embeddings.dtype)
    if similarity == "cosine":
        queries, corpus = F.normalize(queries, dim=-1), F.normalize(corpus, dim=-1)
    k = min(top_k, len(corpus))
    best_scores = queries.new_empty(len(queries), 0)
    best_indices = torch.empty(len(queries), 0, dtype=torch.long, device=queries.device)
    for start in range(0, len(corpus), chunk_size):
        chunk = corpus[start : start + chunk_size]
        indices = torch.arange(start, start + len(chunk), device=queries.device).expand(len(queries), -1)
        # the running best come first and hold lower indices, so a stable sort keeps ties in index order
        scores = torch.cat([best_scores, queries @ chunk.T], dim=1)
        indices = torch.cat([best_indices, indices], dim=1)
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
        best_scores, best_indices = scores.gather(1, order), indices.gather(1, order)
    return best_indices, best_scores


# ----------------------------------------------------------------------------------------------- evaluators
def document_text(document: str | Mapping[str, str]) -> str:
    """The text to embed for a corpus entry: a string as is, or ``"{title} {text}"`` of a BEIR-style dict."""
    if isinstance(document, str):
        return document
    if isinstance(document, Mapping) and isinstance(document.get("text"), str):
        title = document.get("title") or ""
        if not isinstance(title, str):
            raise ValueError(f"Document title must be a string, got {title!r}.")
        return f"{title} {document['text']}".strip()
    raise ValueError(f"Expected a document text or a dict with 'text' (and optional 'title'), got {document!r}.")


class RetrievalEvaluator:
    """Rank the whole corpus for every judged query and score the rankings: call it with ``encode_fn``.

    ``encode_fn(list[str]) -> [n, D]`` embeds queries and documents (``document_text`` of each corpus entry); the
    top ``top_k`` documents of each query by ``similarity`` form the run (``retrieve``), scored with
    ``compute_retrieval_metrics``. Returns ``{"ndcg@10": ..., "mrr@10": ..., "recall@100": ..., "map@100": ...}``,
    keys prefixed with ``f"{name}_"`` when ``name`` is given. Only queries of ``qrels`` with a relevant document
    are encoded and scored (the others are logged once, here); ``queries`` may hold more.

    In a distributed run (``runs_on_all_ranks``) corpus and queries are encoded in shards and each rank ranks
    the corpus for its share of the queries; the gathered run, hence the metrics, is the same on every rank and
    equal to the single-process one. Costs: N + Q encodings, Q * N similarity scores (in corpus chunks of
    ``chunk_size`` rows), O(N * D) memory for the corpus embeddings on every rank.

    Args:
        queries: query id -> query text.
        corpus: document id -> text, or a dict with ``text`` and optional ``title``.
        qrels: query id -> {document id: grade}; every id must exist in ``queries`` / ``corpus``.
        top_k: length of each ranked list; must reach the largest k of ``metrics``.
        metrics, ndcg_gain: see ``compute_retrieval_metrics``.
        batch_size: texts per ``encode_fn`` call.
        similarity: ``"cosine"`` or ``"dot"``.
        chunk_size: corpus rows scored at once.
        name: prefix of the metric keys.
    """

    runs_on_all_ranks = True

    def __init__(
        self,
        queries: Mapping[str, str],
        corpus: Mapping[str, str | Mapping[str, str]],
        qrels: Qrels,
        top_k: int = 100,
        metrics: Sequence[str] = DEFAULT_METRICS,
        batch_size: int = 64,
        similarity: str = "cosine",
        chunk_size: int = 16384,
        name: str | None = None,
        ndcg_gain: str = "exponential",
    ):
        if not corpus:
            raise ValueError("The corpus is empty: nothing to retrieve.")
        _check_ids("qrels", "query", qrels, queries, "queries")
        _check_ids("qrels", "document", [doc for grades in qrels.values() for doc in grades], corpus, "the corpus")
        parsed = _parse_metrics(metrics)
        deepest = max(k for _, k in parsed)
        if top_k < deepest:
            raise ValueError(f"top_k={top_k} is below the deepest metric cutoff {deepest}; raise top_k.")
        _check_choice("similarity", similarity, SIMILARITIES)
        _check_choice("ndcg_gain", ndcg_gain, NDCG_GAINS)
        _check_positive(batch_size=batch_size, chunk_size=chunk_size)
        self.query_ids = _relevant_queries(qrels, what=f"the qrels of {name or 'RetrievalEvaluator'}")
        self.query_texts = [_text(queries[qid], f"query {qid!r}") for qid in self.query_ids]
        self.qrels = {qid: dict(qrels[qid]) for qid in self.query_ids}
        self.corpus_ids = list(corpus)
        self.corpus_texts = [_text(corpus[doc], f"document {doc!r}", document_text) for doc in self.corpus_ids]
        self.top_k, self.metrics, self.ndcg_gain = top_k, list(metrics), ndcg_gain
        self.batch_size, self.similarity, self.chunk_size, self.name = batch_size, similarity, chunk_size, name

    def __call__(self, encode_fn: EncodeFn) -> dict[str, float]:
        """Rank the corpus for every judged query with ``encode_fn`` and return the (prefixed) mean metrics."""
        metrics = compute_retrieval_metrics(self.run(encode_fn), self.qrels, self.metrics, self.ndcg_gain)
        return _prefixed(metrics, self.name)

    def run(self, encode_fn: EncodeFn) -> dict[str, dict[str, float]]:
        """The ranked lists: query id -> {document id: score} for the top ``top_k`` documents, best first."""
        corpus_embeddings = encode_corpus(encode_fn, self.corpus_texts, self.batch_size)
        query_embeddings = encode_corpus(encode_fn, self.query_texts, self.batch_size)
        total = len(query_embeddings)
        rows = _local_rows(total)
        indices, scores = retrieve(
            query_embeddings[rows.start : rows.stop], corpus_embeddings, self.top_k, self.similarity, self.chunk_size
        )
        indices, scores = _gather_rows(indices, total), _gather_rows(scores, total)
        return {
            qid: {self.corpus_ids[i]: score for i, score in zip(row_indices, row_scores)}
            for qid, row_indices, row_scores in zip(self.query_ids, indices.tolist(), scores.tolist())
        }


class RerankingEvaluator:
    """Re-rank each query's candidate list and score the rankings: call it with ``encode_fn`` (bi-encoder) or use
    ``score_pairs(pair_scorer)`` (cross-scorer).

    Rows are PG-Rank ranking rows ``{"query": str, "documents": list[str], "labels": list[float]}`` with graded
    labels >= 0 aligned with the documents and optional ``"judged_relevance"`` (every judged grade of the query,
    so IDCG, recall and AP also count relevant documents missing from the list; default: the labels). Each list is
    sorted by descending score (ties keep the list order) and the metrics of ``compute_retrieval_metrics`` are
    averaged over the rows with a relevant document (the others are skipped and logged once, here). Same metric
    names as ``RetrievalEvaluator``, prefixed with ``f"{name}_"`` when ``name`` is given.

    Distributed runs shard the texts to encode (or the pairs to score) across ranks; every rank returns the same
    metrics.

    Args:
        rows: the ranking rows (a list of dicts or a ``datasets.Dataset``).
        metrics, ndcg_gain: see ``compute_retrieval_metrics``.
        batch_size: texts per ``encode_fn`` call, or (query, document) pairs per ``pair_scorer`` call.
        similarity: ``"cosine"`` or ``"dot"`` between query and document embeddings.
        name: prefix of the metric keys.
    """

    runs_on_all_ranks = True

    def __init__(
        self,
        rows: Iterable[Mapping],
        metrics: Sequence[str] = DEFAULT_METRICS,
        batch_size: int = 64,
        similarity: str = "cosine",
        name: str | None = None,
        ndcg_gain: str = "exponential",
    ):
        rows = [_check_ranking_row(i, row) for i, row in enumerate(rows)]
        if not rows:
            raise ValueError("RerankingEvaluator got no rows.")
        self.metrics = _parse_metrics(metrics)
        _check_choice("similarity", similarity, SIMILARITIES)
        _check_choice("ndcg_gain", ndcg_gain, NDCG_GAINS)
        _check_positive(batch_size=batch_size)
        judged = {i: dict(enumerate(row.get("judged_relevance") or row["labels"])) for i, row in enumerate(rows)}
        kept = _relevant_queries(judged, what=f"the rows of {name or 'RerankingEvaluator'}")
        self.rows = [rows[i] for i in kept]
        self.batch_size, self.similarity, self.name, self.ndcg_gain = batch_size, similarity, name, ndcg_gain

    def __call__(self, encode_fn: EncodeFn) -> dict[str, float]:
        """Score each candidate by the similarity of its embedding to the query's; return the mean metrics."""
        texts = list(dict.fromkeys(text for row in self.rows for text in (row["query"], *row["documents"])))
        embeddings = encode_corpus(encode_fn, texts, self.batch_size)
        if self.similarity == "cosine":
            embeddings = F.normalize(embeddings, dim=-1)
        position = {text: i for i, text in enumerate(texts)}
        scores = [
            embeddings[[position[doc] for doc in row["documents"]]] @ embeddings[position[row["query"]]]
            for row in self.rows
        ]
        return self._metrics(scores)

    def score_pairs(self, pair_scorer: PairScorer) -> dict[str, float]:
        """Score each (query, document) candidate with ``pair_scorer(queries, documents) -> scores`` (higher is
        more relevant), called on batches of ``batch_size`` pairs; return the mean metrics."""
        pairs = [(row["query"], doc) for row in self.rows for doc in row["documents"]]
        rows = _local_rows(len(pairs))
        local = torch.cat(
            [
                _pair_scores(pair_scorer, pairs[start : min(start + self.batch_size, rows.stop)])
                for start in range(rows.start, rows.stop, self.batch_size)
            ]
        )
        flat = _gather_rows(local, len(pairs))
        return self._metrics(list(flat.split([len(row["documents"]) for row in self.rows])))

    def _metrics(self, scores: list[torch.Tensor]) -> dict[str, float]:
        depth = max(k for _, k in self.metrics)
        ranked = [
            [row["labels"][i] for i in torch.sort(row_scores, descending=True, stable=True).indices[:depth].tolist()]
            for row, row_scores in zip(self.rows, scores)
        ]
        judged = [row.get("judged_relevance") or row["labels"] for row in self.rows]
        return _prefixed(_mean_metrics(_padded(ranked), _padded(judged), self.metrics, self.ndcg_gain), self.name)


def _pair_scores(pair_scorer: PairScorer, pairs: list[tuple[str, str]]) -> torch.Tensor:
    queries, documents = (list(side) for side in zip(*pairs))
    scores = torch.as_tensor(as_float64(pair_scorer(queries, documents))).reshape(-1)
    if len(scores) != len(pairs):
        raise ValueError(f"pair_scorer returned {len(scores)} scores for {len(pairs)} (query, document) pairs.")
    return scores


# ----------------------------------------------------------------------------------------------- checks
def _check_ranking_row(index: int, row: Mapping) -> Mapping:
    documents, labels = row.get("documents"), row.get("labels")
    if not isinstance(row.get("query"), str):
        raise ValueError(f"Row {index}: 'query' must be a string, got {row.get('query')!r}.")
    if not isinstance(documents, Sequence) or isinstance(documents, str) or not documents:
        raise ValueError(f"Row {index}: 'documents' must be a non-empty list of texts, got {documents!r}.")
    if not all(isinstance(doc, str) for doc in documents):
        raise ValueError(f"Row {index}: every entry of 'documents' must be a string.")
    if not isinstance(labels, Sequence) or len(labels) != len(documents):
        raise ValueError(f"Row {index}: 'labels' must hold one grade per document ({len(documents)}), got {labels!r}.")
    for column in ("labels", "judged_relevance"):
        grades = row.get(column) or []
        if any(not isinstance(g, Real) or g < 0 for g in grades):
            raise ValueError(f"Row {index}: {column!r} must hold numbers >= 0, got {grades!r}.")
    # the ideal ranking must beat any ranking of the candidates, else nDCG could exceed 1
    candidate_grades = sorted((g for g in labels if g > 0), reverse=True)
    judged_grades = sorted((g for g in row.get("judged_relevance") or labels if g > 0), reverse=True)
    if len(candidate_grades) > len(judged_grades) or any(c > j for c, j in zip(candidate_grades, judged_grades)):
        raise ValueError(
            f"Row {index}: 'judged_relevance' does not contain the grades {candidate_grades} of 'labels'."
        )
    return row


def _check_ids(source: str, kind: str, ids: Iterable[str], known: Mapping, target: str) -> None:
    missing = list(dict.fromkeys(i for i in ids if i not in known))
    if missing:
        raise ValueError(f"{source} name {len(missing)} {kind} id(s) missing from {target}: {_first(missing)}.")


def _check_choice(argument: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{argument} must be one of {list(choices)}, got {value!r}.")


def _check_positive(**values: int) -> None:
    for argument, value in values.items():
        if value < 1:
            raise ValueError(f"{argument} must be >= 1, got {value}.")


def _text(value, what: str, convert: Callable = lambda text: text) -> str:
    try:
        text = convert(value)
    except ValueError as error:
        raise ValueError(f"{what}: {error}") from None
    if not isinstance(text, str):
        raise ValueError(f"{what}: expected a string, got {value!r}.")
    return text


def _prefixed(metrics: dict[str, float], name: str | None) -> dict[str, float]:
    return {f"{name}_{key}" if name else key: value for key, value in metrics.items()}


def _first(ids: Sequence, count: int = 5) -> str:
    shown = ", ".join(repr(i) for i in ids[:count])
    return f"{shown}, ..." if len(ids) > count else shown
