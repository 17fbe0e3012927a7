"""Column contracts, the merged-forward collator, the global no-duplicates sampler, loaders and synthetic data."""

from .collator import ContrastiveCollator, infer_text_columns, text_hash
from .label_contrast import label_contrast_dataset, sample_few_shot
from .loading import load_contrastive_dataset, validate_contrastive_columns
from .retrieval import RetrievalData, build_candidate_sets, load_beir, load_cranfield, split_queries, training_pairs
from .sampler import NoDuplicatesBatchSampler
from .synthetic import make_corpus, make_pair_dataset, make_sts_dataset

__all__ = [
    "ContrastiveCollator",
    "NoDuplicatesBatchSampler",
    "RetrievalData",
    "build_candidate_sets",
    "infer_text_columns",
    "label_contrast_dataset",
    "load_beir",
    "load_contrastive_dataset",
    "load_cranfield",
    "make_corpus",
    "make_pair_dataset",
    "make_sts_dataset",
    "sample_few_shot",
    "split_queries",
    "text_hash",
    "training_pairs",
    "validate_contrastive_columns",
]
