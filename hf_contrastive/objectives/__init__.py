"""Objectives: pure-torch losses, one file per paper; ``build_objective(name, ...)`` picks one by name.

The registry maps a name to ``module:Class`` and imports the module on first use, so adding an objective costs
nothing to users of the others.
"""

import importlib
import inspect

from .base import ContrastiveObjective, ObjectiveOutput, split_columns
from .info_nce import InfoNCE

REGISTRY: dict[str, str] = {
    "info_nce": "info_nce:InfoNCE",
    "debcse": "debcse:DebCSE",
    "whitenedcse": "whitenedcse:WhitenedCSE",
    "input_label": "input_label:InputLabelContrast",
    "plackett_luce": "plackett_luce:PlackettLuceObjective",
    # Vision-language and any-modality objectives (MultiModalTrainer).
    "clip": "clip:CLIPLoss",
    "clip_rocket": "clip_rocket:CL2LLoss",
    "barlip": "barlip:BarlowTwinsLoss",
    "siamlip": "siamlip:SiamLIPLoss",
    "byolip": "siamlip:BYOLIPLoss",
    "swalip": "swalip:SwALIPLoss",
    "simclr": "simclr:NTXentLoss",
    "symile": "symile:SymileLoss",
    "pairwise_clip": "symile:PairwiseCLIPLoss",
    # Generic representation objectives (any encoder, MultiModalTrainer).
    "cacr": "cacr:CACRLoss",
    "hydra": "hydra:HydraLoss",
    "supcon_regression": "supcon_regression:SupConRegressionLoss",
    "supremix": "supremix:SupReMixLoss",
    "sepclr": "sepclr:SepCLRLoss",
    "cmim": "cmim:CMIMLoss",
    # Molecules and time series.
    "kcl": "kcl:KCLLoss",
    "autotcl": "autotcl:AutoTCLEncoderLoss",
    "autotcl_augmenter": "autotcl:AutoTCLAugmenterLoss",
    "ts_forecasting_moco": "ts_forecasting:MoCoForecastingLoss",
    # Recommendation (GraphRecTrainer).
    "bpr": "bpr:BPRLoss",
    "xsimgcl": "xsimgcl:XSimGCLLoss",
    "dccf": "dccf:DCCFLoss",
    "cl4srec": "seq_rec:CL4SRecLoss",
    "mclrec": "seq_rec:MCLRecLoss",
    # Instruction-based image editing (TripletEditTrainer).
    "superedit": "superedit:SuperEditTripletLoss",
}


def objective_class(name: str) -> type[ContrastiveObjective]:
    """The class registered under ``name``; a ValueError lists the registered names otherwise."""
    if name not in REGISTRY:
        raise ValueError(f"Unknown objective {name!r}; available: {sorted(REGISTRY)}.")
    module, class_name = REGISTRY[name].split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), class_name)


def build_objective(name: str, defaults: dict | None = None, **options) -> ContrastiveObjective:
    """Instantiate the objective registered under ``name``.

    ``defaults`` (the config's shared fields: temperature, ...) are passed where the constructor accepts them and
    ignored otherwise; ``options`` are the objective's own hyperparameters and must all be accepted.
    """
    cls = objective_class(name)
    accepted = inspect.signature(cls.__init__).parameters
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"Objective {name!r} has no option(s) {unknown}; it accepts {sorted(set(accepted) - {'self'})}."
        )
    shared = {key: value for key, value in (defaults or {}).items() if key in accepted}
    return cls(**{**shared, **options})


__all__ = [
    "REGISTRY",
    "ContrastiveObjective",
    "InfoNCE",
    "ObjectiveOutput",
    "build_objective",
    "objective_class",
    "split_columns",
]
