"""Evaluate embeddings during and after training: STS correlation, human-similarity approximation, retrieval and
re-ranking, and local `evaluate` metrics (offline)."""

from pathlib import Path
from typing import TYPE_CHECKING

from .classification import LabelAccuracyEvaluator, compute_classification_metrics, nearest_label
from .human_similarity import HumanSimilarityEvaluator, ReliabilityEstimate
from .retrieval import (
    RerankingEvaluator,
    RetrievalEvaluator,
    compute_retrieval_metrics,
    document_text,
    encode_corpus,
    retrieve,
)
from .sts import STSEvaluator, compute_sts_metrics

if TYPE_CHECKING:
    import evaluate

METRICS_DIR = Path(__file__).parent / "metrics"


def load_metric(name: str, **kwargs) -> "evaluate.EvaluationModule":
    """Load a metric shipped with hf_contrastive by name, offline: `load_metric("sts_spearman").compute(...)`.

    Resolves `hf_contrastive/evaluation/metrics/<name>/<name>.py` and hands that folder to `evaluate.load`
    (extra kwargs go along); Hub metric names are not looked up.
    """
    import evaluate

    path = METRICS_DIR / name
    if not (path / f"{name}.py").is_file():
        available = sorted(p.name for p in METRICS_DIR.iterdir() if (p / f"{p.name}.py").is_file())
        raise ValueError(f"No metric {name!r} in hf_contrastive; available: {available}.")
    return evaluate.load(str(path), **kwargs)


__all__ = [
    "METRICS_DIR",
    "HumanSimilarityEvaluator",
    "LabelAccuracyEvaluator",
    "ReliabilityEstimate",
    "RerankingEvaluator",
    "RetrievalEvaluator",
    "STSEvaluator",
    "compute_classification_metrics",
    "compute_retrieval_metrics",
    "compute_sts_metrics",
    "document_text",
    "encode_corpus",
    "load_metric",
    "nearest_label",
    "retrieve",
]
