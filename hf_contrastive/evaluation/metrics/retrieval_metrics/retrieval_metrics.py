"""Score ranked retrieval results: nDCG@10, MRR@10, Recall@100 and MAP@100 against relevance judgments.

A local `evaluate` module: load it offline with `hf_contrastive.evaluation.load_metric("retrieval_metrics")` or
`evaluate.load("/path/to/hf_contrastive/evaluation/metrics/retrieval_metrics")`. It only adapts the inputs: the
numbers come from `hf_contrastive.evaluation.retrieval.compute_retrieval_metrics` (so hf_contrastive must be
installed), which documents the conventions.
"""

import datasets
import evaluate

from hf_contrastive.evaluation.retrieval import DEFAULT_METRICS, compute_retrieval_metrics

_DESCRIPTION = """
Ranking metrics of a retrieval system, one example per query, averaged over the queries as BEIR and pytrec_eval do:
nDCG@10 (graded, exponential gain by default), MRR@10, Recall@100 and MAP@100. A query whose judgments hold no
relevant document (grade > 0) is skipped (a warning counts them); negative grades count as not relevant.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `str`): the ranked document ids of each query, best first.
    references (`list` of `dict` or `list`): the judgments of each query, either {document id: grade} or the list
        of its relevant document ids (grade 1).
    metrics (`list` of `str`, optional): names "<metric>@<k>" with metric in ndcg, mrr, recall, map, precision;
        default ["ndcg@10", "mrr@10", "recall@100", "map@100"].
    ndcg_gain (`str`, optional): "exponential" (2^rel - 1, default) or "linear" (rel, as trec_eval).
Returns:
    one `float` per metric name, e.g. ndcg@10, mrr@10, recall@100, map@100.
Examples:
    >>> metric = evaluate.load("path/to/retrieval_metrics")
    >>> metric.compute(predictions=[["d2", "d1"]], references=[{"d1": 1}], metrics=["mrr@10"])
    {'mrr@10': 0.5}
"""

_CITATION = """
@inproceedings{thakur2021beir,
    title = {{BEIR}: A Heterogeneous Benchmark for Zero-shot Evaluation of Information Retrieval Models},
    author = {Nandan Thakur and Nils Reimers and Andreas R{\\"u}ckl{\\'e} and Abhishek Srivastava and Iryna Gurevych},
    booktitle = {Thirty-fifth Conference on Neural Information Processing Systems Datasets and Benchmarks Track},
    year = {2021},
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RetrievalMetrics(evaluate.Metric):
    """nDCG, MRR, recall and MAP of ranked document ids against per-query relevance judgments."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            # Json: the judgments of a query are a dict with arbitrary document-id keys (or a list of ids)
            features=datasets.Features(
                {"predictions": datasets.List(datasets.Value("string")), "references": datasets.Json()}
            ),
        )

    def _compute(
        self, predictions, references, metrics=DEFAULT_METRICS, ndcg_gain: str = "exponential"
    ) -> dict[str, float]:
        run = {str(i): ranked for i, ranked in enumerate(predictions)}
        qrels = {str(i): _grades(i, judged) for i, judged in enumerate(references)}
        return compute_retrieval_metrics(run, qrels, metrics, ndcg_gain)


def _grades(index: int, judged) -> dict[str, float]:
    if isinstance(judged, dict):
        return judged
    if isinstance(judged, list):
        return dict.fromkeys(judged, 1)
    raise ValueError(f"references[{index}]: expected {{document id: grade}} or a list of ids, got {judged!r}.")
