"""hf_contrastive: contrastive training objectives for the Hugging Face ecosystem.

Importing the package registers its model classes with ``AutoConfig`` / ``AutoModel`` so that
``AutoModel.from_pretrained(path)`` loads them without ``trust_remote_code``. Trainers, data and evaluation
helpers are imported lazily (``from transformers import Trainer`` alone costs seconds).
"""

import importlib
from typing import Any

from .models import ContrastiveEncoder, ContrastiveEncoderConfig

__version__ = "0.1.0"

_LAZY = {
    "ContrastiveTrainer": "hf_contrastive.trainers",
    "ContrastiveConfig": "hf_contrastive.trainers",
    "PlackettLuceTrainer": "hf_contrastive.trainers",
    "PlackettLuceConfig": "hf_contrastive.trainers",
    "RerankerTrainer": "hf_contrastive.trainers",
    "RerankerConfig": "hf_contrastive.trainers",
    "AnswerTokenReranker": "hf_contrastive.models.reranker",
    "MultiModalTrainer": "hf_contrastive.trainers",
    "MultiModalConfig": "hf_contrastive.trainers",
    "SimCTGTrainer": "hf_contrastive.trainers",
    "SimCTGConfig": "hf_contrastive.trainers",
    # Task-specific trainers, imported from their own modules (the diffusers one costs seconds to import).
    "PromptLearningTrainer": "hf_contrastive.trainers.prompt_learning",
    "PromptLearningConfig": "hf_contrastive.trainers.prompt_learning",
    "DenseCLIPTrainer": "hf_contrastive.trainers.dense",
    "DenseCLIPTrainingConfig": "hf_contrastive.trainers.dense",
    "GraphRecTrainer": "hf_contrastive.trainers.graph_rec",
    "GraphRecConfig": "hf_contrastive.trainers.graph_rec",
    "SeqRecTrainer": "hf_contrastive.trainers.seq_rec",
    "MCLRecTrainer": "hf_contrastive.trainers.seq_rec",
    "SeqRecConfig": "hf_contrastive.trainers.seq_rec",
    "AutoTCLTrainer": "hf_contrastive.trainers.autotcl",
    "AutoTCLTrainingConfig": "hf_contrastive.trainers.autotcl",
    "TSForecastingTrainer": "hf_contrastive.trainers.ts_forecasting",
    "TSForecastingConfig": "hf_contrastive.trainers.ts_forecasting",
    "TripletEditTrainer": "hf_contrastive.trainers.triplet_edit",
    "TripletEditConfig": "hf_contrastive.trainers.triplet_edit",
    "contrastive_search": "hf_contrastive.generation",
    "RetrievalEvaluator": "hf_contrastive.evaluation",
    "RerankingEvaluator": "hf_contrastive.evaluation",
    "InfoNCE": "hf_contrastive.objectives",
    "GradientCache": "hf_contrastive.cache",
    "ContrastiveCollator": "hf_contrastive.data",
    "NoDuplicatesBatchSampler": "hf_contrastive.data",
    "STSEvaluator": "hf_contrastive.evaluation",
}

__all__ = ["ContrastiveEncoder", "ContrastiveEncoderConfig", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hf_contrastive' has no attribute {name!r}")
