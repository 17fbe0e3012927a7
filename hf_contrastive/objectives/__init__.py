"""Objectives: pure-torch losses, one file per paper; ``build_objective(name, **kwargs)`` picks one by name."""

from .base import ContrastiveObjective, ObjectiveOutput, split_columns
from .info_nce import InfoNCE

OBJECTIVES: dict[str, type[ContrastiveObjective]] = {InfoNCE.name: InfoNCE}


def build_objective(name: str, **kwargs) -> ContrastiveObjective:
    """Instantiate the objective registered under ``name`` with its keyword hyperparameters."""
    if name not in OBJECTIVES:
        raise ValueError(f"Unknown objective {name!r}; available: {sorted(OBJECTIVES)}.")
    return OBJECTIVES[name](**kwargs)


__all__ = ["OBJECTIVES", "ContrastiveObjective", "InfoNCE", "ObjectiveOutput", "build_objective", "split_columns"]
