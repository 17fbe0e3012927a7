"""Score top-K recommendation lists by full ranking: Recall@K, NDCG@K and Precision@K against each user's test items.

A local `evaluate` module: load it offline with `hf_contrastive.evaluation.load_metric("full_ranking")`. It only
adapts the inputs: the numbers come from `hf_contrastive.evaluation.recsys.ranked_list_metrics`, the same
definitions as `FullRankingEvaluator` (XSimGCL / DCCF specs).
"""

import datasets
import evaluate

from hf_contrastive.evaluation.recsys import DEFAULT_KS, ranked_list_metrics

_DESCRIPTION = """
Full-ranking metrics of a recommender, one example per user, averaged over users: Recall@K = hits / |test items|,
NDCG@K with binary relevance and IDCG over min(K, |test items|) ranks, Precision@K = hits / K. The ranked lists must
already exclude the user's training items (rank all items, mask the training ones, keep the top K).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `str`): each user's recommended item ids, best first (at least max K long for
        exact Precision; shorter lists count the missing ranks as misses).
    references (`list` of `list` of `str`): each user's test item ids (at least one per user).
    ks (`list` of `int`, optional): cutoffs, default [10, 20].
Returns:
    recall@K, ndcg@K and precision@K (`float`) for each K.
Examples:
    >>> metric = evaluate.load("path/to/full_ranking")
    >>> metric.compute(predictions=[["i2", "i1"]], references=[["i1"]], ks=[1, 2])["recall@2"]
    1.0
"""

_CITATION = """
@article{yu2023xsimgcl,
    title = {{XSimGCL}: Towards Extremely Simple Graph Contrastive Learning for Recommendation},
    author = {Junliang Yu and Xin Xia and Tong Chen and Lizhen Cui and Nguyen Quoc Viet Hung and Hongzhi Yin},
    journal = {IEEE Transactions on Knowledge and Data Engineering},
    year = {2023},
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class FullRanking(evaluate.Metric):
    """Recall@K, NDCG@K and Precision@K of ranked recommendation lists against per-user test items."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.List(datasets.Value("string")),
                    "references": datasets.List(datasets.Value("string")),
                }
            ),
        )

    def _compute(self, predictions, references, ks=DEFAULT_KS) -> dict[str, float]:
        return ranked_list_metrics(predictions, references, ks)
