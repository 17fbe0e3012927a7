"""Score next-item recommendation lists leave-one-out: HR@K and NDCG@K of each sequence's single held-out item.

A local `evaluate` module: load it offline with `hf_contrastive.evaluation.load_metric("leave_one_out")`. The
numbers come from `hf_contrastive.evaluation.recsys.ranked_list_metrics` with one relevant item per user, where
Recall@K is HR@K; the conventions are those of `LeaveOneOutEvaluator` (MCLRec spec, RecBole full sort).
"""

import datasets
import evaluate

from hf_contrastive.evaluation.recsys import DEFAULT_KS, ranked_list_metrics

_DESCRIPTION = """
Leave-one-out metrics of a sequential recommender, one example per user, averaged over users: HR@K = 1 if the
held-out item is among the top K, NDCG@K = 1 / log2(rank + 1) if it is (else 0). Rank all items (RecBole excludes
only padding; S3-Rec-style code also excludes the history) and pass the top K ids.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `str`): each user's recommended item ids, best first.
    references (`list` of `str`): each user's held-out item id.
    ks (`list` of `int`, optional): cutoffs, default [10, 20].
Returns:
    hr@K and ndcg@K (`float`) for each K.
Examples:
    >>> metric = evaluate.load("path/to/leave_one_out")
    >>> metric.compute(predictions=[["i2", "i1"]], references=["i1"], ks=[1, 2])["hr@2"]
    1.0
"""

_CITATION = """
@inproceedings{qin2023mclrec,
    title = {Meta-optimized Contrastive Learning for Sequential Recommendation},
    author = {Xiuyuan Qin and Huanhuan Yuan and Pengpeng Zhao and Junhua Fang and Fuzhen Zhuang and Guanfeng Liu
        and Yanchi Liu and Victor Sheng},
    booktitle = {Proceedings of the 46th International ACM SIGIR Conference on Research and Development in
        Information Retrieval},
    pages = {89--98},
    year = {2023},
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class LeaveOneOut(evaluate.Metric):
    """HR@K and NDCG@K of ranked next-item lists against one held-out item per user."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.List(datasets.Value("string")), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, ks=DEFAULT_KS) -> dict[str, float]:
        metrics = ranked_list_metrics(predictions, [[target] for target in references], ks)
        return {name.replace("recall", "hr"): value for name, value in metrics.items() if "precision" not in name}
