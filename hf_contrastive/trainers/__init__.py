"""Trainers: Trainer subclasses and their config dataclasses."""

from .contrastive import ContrastiveConfig, ContrastiveTrainer
from .multimodal import MultiModalConfig, MultiModalTrainer
from .plackett_luce import PlackettLuceConfig, PlackettLuceTrainer
from .reranker import RerankerConfig, RerankerTrainer
from .simctg import SimCTGConfig, SimCTGTrainer

__all__ = [
    "ContrastiveConfig",
    "ContrastiveTrainer",
    "MultiModalConfig",
    "MultiModalTrainer",
    "PlackettLuceConfig",
    "PlackettLuceTrainer",
    "RerankerConfig",
    "RerankerTrainer",
    "SimCTGConfig",
    "SimCTGTrainer",
]
