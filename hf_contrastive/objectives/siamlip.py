"""SiamLIP / BYOLIP: cross-modal SimSiam / BYOL prediction losses with stop-gradient targets (Fini et al. 2023).

SSL add-ons of "Improved Baselines for Vision-Language Pre-training", trained next to the CLIP / CLIP-rocket loss
(compose with :class:`hf_contrastive.objectives.composite.CompositeObjective`). Each image feature predicts the
paired text's projection and vice versa: with ``v = proj(f)`` (Lin-BN-ReLU-Lin-BN, the model's ``siam_proj``),
``p = pred(v)`` (``siam_pred``) and ``sg`` the stop-gradient,

.. math::

    D(p, v) = 2 - \\frac{2}{B} \\sum_b \\cos(p_b, \\mathrm{sg}(v_b))

    L = \\mathrm{mean}\\Big(\\{D(p_I^g, v_T^g), D(p_T^g, v_I^g)\\}
        \\cup \\{D(p_I^a, v_T^b)\\}_{a,b} \\cup \\{D(p_T^a, v_I^b)\\}_{a,b}\\Big)    \\quad (2 + 2A^2 \\text{ terms})

A target ``v`` gets no gradient as a target; ``v`` is trained only through its own prediction ``p = pred(v)``.
**BYOLIP** (:class:`BYOLIPLoss`) takes the targets from an EMA ("momentum", tau = 0.99) copy of the encoders and
projectors (the model's ``siam_target`` output; :class:`hf_contrastive.trainers.ema.EMAUpdate` updates it).

The loss is per row (no negatives), so no gather is needed: each rank's mean, averaged by DDP, is the global mean.
Not under the gradient cache (``supports_gradient_cache = False``): the projector's BatchNorms normalise over
whatever rows one forward sees.

Columns: ``{column}.siam_pred`` and ``{column}.siam_proj`` (``.siam_target`` for BYOLIP) for ``image``, ``text``
and their ``_view_k`` columns, each ``[B, D]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import ContrastiveObjective, ObjectiveOutput
from .clip_rocket import CLIP_ROCKET_CITATION, view_columns


def negative_cosine(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``2 - 2 * mean_b cos(prediction_b, sg(target_b))``; prediction, target: [B, D]."""
    prediction = F.normalize(prediction, dim=-1)
    target = F.normalize(target.detach(), dim=-1)
    return 2 - 2 * (prediction * target).sum(dim=-1).mean()


class SiamLIPLoss(ContrastiveObjective):
    """SiamLIP: image predicts text and text predicts image (global pair and all A x A local pairs), stop-gradient.

    Args:
        num_augs: local views per modality ``A`` (2); 0 uses the global pair only.
        image_column / text_column: global column names; views are ``{column}_view_{k}``.
    """

    name = "siamlip"
    paper = "2305.08675"
    citation = CLIP_ROCKET_CITATION
    supports_gradient_cache = False
    target_output = "siam_proj"

    def __init__(self, num_augs: int = 2, image_column: str = "image", text_column: str = "text") -> None:
        super().__init__()
        self.num_augs = num_augs
        images = view_columns(image_column, num_augs)
        texts = view_columns(text_column, num_augs)
        # (predicting column, target column): the two global directions, then every local a-b pair both ways.
        self.pairs = [(image_column, text_column), (text_column, image_column)]
        self.pairs += [(image, text) for image in images for text in texts]
        self.pairs += [(text, image) for text in texts for image in images]
        names = [f"{column}.siam_pred" for column in (image_column, text_column, *images, *texts)]
        names += [f"{column}.{self.target_output}" for column in (image_column, text_column, *images, *texts)]
        self.required_columns = tuple(names)

    def forward(self, embeddings: dict[str, torch.Tensor], batch: dict) -> ObjectiveOutput:
        """Mean of ``D(p_source, v_target)`` over the ``2 + 2 A^2`` directed pairs."""
        self.check_columns(tuple(embeddings))
        losses = [
            negative_cosine(embeddings[f"{source}.siam_pred"], embeddings[f"{target}.{self.target_output}"])
            for source, target in self.pairs
        ]
        return ObjectiveOutput(
            loss=torch.stack(losses).mean(), logs={"loss_global": (losses[0] + losses[1]).detach() / 2}
        )

    def get_config_dict(self) -> dict:
        return {"num_augs": self.num_augs, "targets": self.target_output}


class BYOLIPLoss(SiamLIPLoss):
    """BYOLIP: SiamLIP with targets from the momentum (EMA) encoder's projections, the model's ``siam_target``.

    Build the model with ``siam_momentum_encoder=True`` and train with
    :class:`hf_contrastive.trainers.ema.EMAUpdate` (tau = 0.99) in the callbacks.
    """

    name = "byolip"
    target_output = "siam_target"
