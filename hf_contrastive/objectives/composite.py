"""Weighted sums of objectives: how an SSL add-on (SimCLR, BarLIP, SiamLIP, BYOLIP, SwALIP) joins the CLIP-rocket loss.

``CompositeObjective([(objective_1, w_1), ..., (objective_n, w_n)])`` computes ``L = sum_k w_k L_k`` on the same
embeddings. Its logs are every member's logs and loss prefixed with the member's name (``clip_rocket/loss_local``,
``barlip/loss``); ``required_columns`` is the union of the members'; it supports the gradient cache only if every
member does; its parameters (temperatures) are the members'. A parameter shared by two members (SwALIP with
CL2L's ``local_log_scale``) is one parameter of the composite.

:func:`clip_rocket_with` builds the paper's combinations: ``L_clip_rocket + L_barlip``, ``+ L_siamlip``,
``+ L_byolip`` and ``+ 0.2 L_swalip`` (which needs label smoothing 0 and shares the local temperature).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .barlip import BarlowTwinsLoss
from .base import ContrastiveObjective, ObjectiveOutput
from .clip_rocket import CL2LLoss
from .siamlip import BYOLIPLoss, SiamLIPLoss
from .simclr import NTXentLoss
from .swalip import SwALIPLoss


class CompositeObjective(ContrastiveObjective):
    """``L = sum_k weight_k * L_k`` over objectives that read the same embeddings; logs prefixed by member name.

    Args:
        terms: ``[(objective, weight), ...]``; the first member's ``log_scale`` (if any) is the one a trainer
            initialises from a CLIP model's ``logit_scale`` (exposed as the composite's ``log_scale``).
    """

    def __init__(self, terms: Sequence[tuple[ContrastiveObjective, float]]) -> None:
        super().__init__()
        if not terms:
            raise ValueError("CompositeObjective needs at least one (objective, weight) term.")
        self.members = nn.ModuleList(objective for objective, _ in terms)
        self.weights = [float(weight) for _, weight in terms]
        self.prefixes = self._unique_prefixes([objective.name for objective in self.members])
        self.name = "+".join(objective.name for objective in self.members)
        self.paper = self.members[0].paper
        self.citation = "\n\n".join(dict.fromkeys(o.citation for o in self.members if o.citation)) or None
        self.required_columns = tuple(dict.fromkeys(c for o in self.members for c in o.required_columns))
        self.supports_gradient_cache = all(getattr(o, "supports_gradient_cache", True) for o in self.members)
        self.needs_teacher_embeddings = any(o.needs_teacher_embeddings for o in self.members)

    @staticmethod
    def _unique_prefixes(names: list[str]) -> list[str]:
        """Member names as log prefixes, numbered when a name repeats (``info_nce_1``, ``info_nce_2``)."""
        return [
            f"{name}_{names[:i].count(name) + 1}" if names.count(name) > 1 else name for i, name in enumerate(names)
        ]

    @property
    def log_scale(self) -> nn.Parameter:
        """The first member's ``log_scale`` (the CLIP temperature a trainer syncs with the model's ``logit_scale``)."""
        return self.members[0].log_scale

    def forward(self, embeddings: dict[str, torch.Tensor], batch: dict) -> ObjectiveOutput:
        """Weighted sum of the members' losses; ``{prefix}/loss`` and ``{prefix}/{log}`` for every member."""
        loss = 0.0
        logs: dict[str, torch.Tensor] = {}
        for prefix, weight, objective in zip(self.prefixes, self.weights, self.members):
            output = objective(embeddings, batch)
            loss = loss + weight * output.loss
            logs[f"{prefix}/loss"] = output.loss.detach()
            logs.update({f"{prefix}/{key}": value for key, value in output.logs.items()})
        return ObjectiveOutput(loss=loss, logs=logs)

    def effective_negatives(self, gathered_rows: int, negatives_per_row: int) -> int:
        return self.members[0].effective_negatives(gathered_rows, negatives_per_row)

    def get_config_dict(self) -> dict:
        return {
            prefix: {"weight": weight, **objective.get_config_dict()}
            for prefix, weight, objective in zip(self.prefixes, self.weights, self.members)
        }


ADDON_WEIGHTS = {"simclr": 1.0, "barlip": 1.0, "siamlip": 1.0, "byolip": 1.0, "swalip": 0.2}


def clip_rocket_with(
    addon: str | None = None, num_augs: int = 2, weight: float | None = None, **clip_rocket_options
) -> ContrastiveObjective:
    """CLIP-rocket alone (``addon=None``) or plus an SSL add-on with the paper's weight (SwALIP 0.2, others 1).

    ``addon``: ``"simclr"`` (NT-Xent between the first two image views, SLIP-style), ``"barlip"``, ``"siamlip"``,
    ``"byolip"`` or ``"swalip"``. SwALIP shares CL2L's local temperature
    and requires ``label_smoothing=0`` (set by default here; a non-zero value is refused).
    ``clip_rocket_options`` go to :class:`CL2LLoss`.
    """
    if addon is not None and addon not in ADDON_WEIGHTS:
        raise ValueError(f"addon must be None or one of {sorted(ADDON_WEIGHTS)}, got {addon!r}.")
    if addon == "swalip":
        if clip_rocket_options.setdefault("label_smoothing", 0.0) != 0.0:
            raise ValueError("SwALIP requires label_smoothing=0 on the CLIP-rocket terms (as in the paper).")
    rocket = CL2LLoss(num_augs=num_augs, **clip_rocket_options)
    if addon is None:
        return rocket
    if addon == "swalip":
        shared = "local_log_scale" if rocket.separate_temperature else "log_scale"
        scale, temperature = getattr(rocket, shared, None), 1.0 / float(torch.as_tensor(rocket.local_scale()).detach())
        extra = SwALIPLoss(num_augs, temperature=temperature, learnable_temperature=False, local_log_scale=scale)
    elif addon == "simclr":
        if num_augs < 2:
            raise ValueError("The SimCLR add-on contrasts two image views: num_augs must be >= 2.")
        extra = NTXentLoss(("image_view_1", "image_view_2"))
    else:
        extra = {"barlip": BarlowTwinsLoss, "siamlip": SiamLIPLoss, "byolip": BYOLIPLoss}[addon](num_augs)
    return CompositeObjective([(rocket, 1.0), (extra, ADDON_WEIGHTS[addon] if weight is None else weight)])
