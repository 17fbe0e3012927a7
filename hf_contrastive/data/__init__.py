"""Column contracts, the merged-forward collator, the global no-duplicates sampler, loaders and synthetic data."""

from .collator import ContrastiveCollator, infer_text_columns, text_hash
from .label_contrast import label_contrast_dataset, sample_few_shot
from .loading import load_contrastive_dataset, validate_contrastive_columns
from .sampler import NoDuplicatesBatchSampler
from .synthetic import make_corpus, make_pair_dataset, make_sts_dataset

__all__ = [
    "ContrastiveCollator",
    "NoDuplicatesBatchSampler",
    "infer_text_columns",
    "label_contrast_dataset",
    "load_contrastive_dataset",
    "make_corpus",
    "make_pair_dataset",
    "make_sts_dataset",
    "sample_few_shot",
    "text_hash",
    "validate_contrastive_columns",
]
