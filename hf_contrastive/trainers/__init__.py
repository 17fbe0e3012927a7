"""Trainers: Trainer subclasses and their config dataclasses."""

from .contrastive import ContrastiveConfig, ContrastiveTrainer

__all__ = ["ContrastiveConfig", "ContrastiveTrainer"]
