"""Score STS predictions: Spearman and Pearson correlation between predicted similarities and gold scores.

A local `evaluate` module: load it offline with `hf_contrastive.evaluation.load_metric("sts_spearman")` or
`evaluate.load("/path/to/hf_contrastive/evaluation/metrics/sts_spearman")`. `evaluate` copies this file into its
module cache before importing it, so it imports nothing from `hf_contrastive`.
"""

import datasets
import evaluate
from scipy.stats import pearsonr, spearmanr

_DESCRIPTION = """
Rank (Spearman) and linear (Pearson) correlation between the similarity a model assigns to each sentence pair
(`predictions`, usually the cosine of the two embeddings) and the human similarity score (`references`), as reported
for STS-B, SICK-R and the other semantic textual similarity benchmarks. Both lie in [-1, 1]; Spearman is the headline
number because it ignores any monotonic rescaling of the similarities.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `float`): predicted similarity of each pair.
    references (`list` of `float`): gold similarity of each pair (e.g. 0-5 for STS-B).
Returns:
    spearman (`float`): Spearman rank correlation in [-1, 1].
    pearson (`float`): Pearson correlation in [-1, 1].
Examples:
    >>> metric = evaluate.load("path/to/sts_spearman")
    >>> metric.compute(predictions=[0.1, 0.4, 0.9], references=[1.0, 2.0, 5.0])
    {'spearman': 1.0, 'pearson': 0.9...}
"""

_CITATION = """
@inproceedings{cer-etal-2017-semeval,
    title = "{S}em{E}val-2017 Task 1: Semantic Textual Similarity Multilingual and Crosslingual Focused Evaluation",
    author = "Cer, Daniel and Diab, Mona and Agirre, Eneko and Lopez-Gazpio, I{\\~n}igo and Specia, Lucia",
    booktitle = "Proceedings of the 11th International Workshop on Semantic Evaluation (SemEval-2017)",
    year = "2017",
    pages = "1--14",
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class StsSpearman(evaluate.Metric):
    """Spearman and Pearson correlation of predicted pair similarities with gold STS scores."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
        )

    def _compute(self, predictions, references) -> dict[str, float]:
        if len(predictions) < 2:
            raise ValueError(f"Correlation needs at least 2 pairs, got {len(predictions)}.")
        if len(set(references)) < 2:
            raise ValueError("All reference scores are equal: the correlation is undefined.")
        return {
            "spearman": float(spearmanr(predictions, references).statistic),
            "pearson": float(pearsonr(predictions, references).statistic),
        }
