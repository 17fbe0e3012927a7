"""EMAUpdate: move a momentum (target) encoder toward the online one after every optimizer step (BYOL, BYOLIP).

``target <- tau * target + (1 - tau) * online`` for every parameter (tau = 0.99 in CLIP-rocket's BYOLIP). A callback
rather than an update inside ``forward``: ``forward`` runs twice per step under the gradient cache, several times
under gradient accumulation, and also at evaluation, while ``on_step_end`` runs once per optimizer step on every rank
(the online weights are identical across DDP ranks, so the targets stay identical too).

The model names its pair of modules: ``model.online_encoder()`` and ``model.momentum_encoder`` (as
:class:`hf_contrastive.models.CLIPRocketModel` does); parameters are matched by name and must have the same shapes.
The Trainer passes its unwrapped model to callbacks, so DDP wrappers need no special case.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import TrainerCallback


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """``target <- momentum * target + (1 - momentum) * online`` parameter-wise.

    Buffers (BatchNorm running statistics) are left alone: the target's forward passes keep its own.

    Raises a ValueError when the two modules' parameter names differ (they must be copies of each other).
    """
    target_parameters = dict(target.named_parameters())
    online_parameters = dict(online.named_parameters())
    if target_parameters.keys() != online_parameters.keys():
        missing = sorted(set(online_parameters) ^ set(target_parameters))[:5]
        raise ValueError(f"The momentum encoder's parameters do not match the online encoder's (e.g. {missing}).")
    names = list(online_parameters)
    torch._foreach_lerp_(
        [target_parameters[name].data for name in names],
        [online_parameters[name].data for name in names],
        1 - momentum,
    )


class EMAUpdate(TrainerCallback):
    """After each optimizer step, EMA-update ``model.momentum_encoder`` from ``model.online_encoder()``.

    Args:
        momentum: ``tau`` (0.99 in CLIP-rocket's BYOLIP; BYOL schedules it towards 1, not done here).
    """

    def __init__(self, momentum: float = 0.99) -> None:
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}.")
        self.momentum = momentum

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if not (hasattr(model, "momentum_encoder") and hasattr(model, "online_encoder")):
            raise ValueError(
                "EMAUpdate needs a model with a `momentum_encoder` module and an `online_encoder()` method, e.g. "
                "CLIPRocketModel built with siam_momentum_encoder=True."
            )

    def on_step_end(self, args, state, control, model=None, **kwargs):
        ema_update(model.momentum_encoder, model.online_encoder(), self.momentum)
