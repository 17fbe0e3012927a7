"""Objectives: pure-torch losses, one file per paper; ``build_objective(name, **kwargs)`` picks one by name."""

import inspect

from .base import ContrastiveObjective, ObjectiveOutput, split_columns
from .info_nce import InfoNCE

OBJECTIVES: dict[str, type[ContrastiveObjective]] = {InfoNCE.name: InfoNCE}


def build_objective(name: str, defaults: dict | None = None, **options) -> ContrastiveObjective:
    """Instantiate the objective registered under ``name``.

    ``defaults`` (the config's shared fields: temperature, ...) are passed where the constructor accepts them and
    ignored otherwise; ``options`` are the objective's own hyperparameters and must all be accepted.
    """
    if name not in OBJECTIVES:
        raise ValueError(f"Unknown objective {name!r}; available: {sorted(OBJECTIVES)}.")
    objective_class = OBJECTIVES[name]
    accepted = inspect.signature(objective_class.__init__).parameters
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"Objective {name!r} has no option(s) {unknown}; it accepts {sorted(set(accepted) - {'self'})}."
        )
    shared = {key: value for key, value in (defaults or {}).items() if key in accepted}
    return objective_class(**{**shared, **options})


__all__ = ["OBJECTIVES", "ContrastiveObjective", "InfoNCE", "ObjectiveOutput", "build_objective", "split_columns"]
